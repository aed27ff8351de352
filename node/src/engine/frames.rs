//! Frames in and out of the Engine: decoding an envelope to the machine it is for, encoding a
//! machine's message, and counting both per [`Protocol`].
//!
//! Rumor mongering runs twice in a node (query announcements among all members, and
//! `gossip`-mode topics among their members), so the Rumor kind's body carries a one-byte
//! channel before the rumor message.

use bytes::Bytes;
use hearsay_overlay::swim::SwimMessage;
use hearsay_protocols::aggregate::AggMessage;
use hearsay_protocols::anti_entropy::AeMessage;
use hearsay_protocols::rumor::RumorMessage;
use hearsay_protocols::wire::{self, DecodeError, EncodeError, Frame, Protocol, WireMessage};
use serde::{Deserialize, Serialize};

use super::multicast::MulticastMessage;

/// Which rumor-mongering instance a rumor frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RumorChannel {
    /// Query announcements, among all members.
    Queries,
    /// `gossip`-mode topics, among their members.
    Topics,
}

/// A rumor message with its channel: the body of every Rumor-kind frame the Engine sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelRumor {
    /// The instance it is for.
    pub channel: RumorChannel,
    /// The message.
    pub msg: RumorMessage,
}

impl WireMessage for ChannelRumor {
    const KIND: Protocol = Protocol::Rumor;
}

/// A decoded frame, routed to the part it is for.
#[derive(Debug)]
pub(crate) enum Inbound {
    Swim(SwimMessage),
    Multicast(MulticastMessage),
    AntiEntropy(AeMessage),
    Rumor(ChannelRumor),
    Aggregation(AggMessage),
}

/// Messages and bytes per protocol, both directions, indexed by [`Protocol::index`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames sent.
    pub sent: [u64; Protocol::COUNT],
    /// Frame bytes sent.
    pub bytes_sent: [u64; Protocol::COUNT],
    /// Frames received and decoded.
    pub received: [u64; Protocol::COUNT],
    /// Frame bytes received.
    pub bytes_received: [u64; Protocol::COUNT],
}

impl Traffic {
    pub(crate) fn count_sent(&mut self, p: Protocol, bytes: usize) {
        self.sent[p.index()] += 1;
        self.bytes_sent[p.index()] += bytes as u64;
    }

    pub(crate) fn count_received(&mut self, p: Protocol, bytes: usize) {
        self.received[p.index()] += 1;
        self.bytes_received[p.index()] += bytes as u64;
    }

    /// Frames sent by one protocol.
    pub fn sent_by(&self, p: Protocol) -> u64 {
        self.sent[p.index()]
    }

    /// Total frames sent.
    pub fn total_sent(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Total frame bytes sent.
    pub fn total_bytes_sent(&self) -> u64 {
        self.bytes_sent.iter().sum()
    }
}

/// Decode errors by kind (the typed [`DecodeError`] variants).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeErrors {
    /// Frame over the limit.
    pub too_large: u64,
    /// Frame shorter than its header.
    pub truncated: u64,
    /// Another protocol version.
    pub unsupported_version: u64,
    /// Unknown kind byte.
    pub unknown_kind: u64,
    /// Body not a valid message of its kind.
    pub malformed: u64,
    /// Bytes after the body.
    pub trailing_bytes: u64,
}

impl DecodeErrors {
    fn count(&mut self, e: &DecodeError) {
        match e {
            DecodeError::TooLarge { .. } => self.too_large += 1,
            DecodeError::Truncated => self.truncated += 1,
            DecodeError::UnsupportedVersion { .. } => self.unsupported_version += 1,
            DecodeError::UnknownKind(_) => self.unknown_kind += 1,
            DecodeError::TrailingBytes(_) => self.trailing_bytes += 1,
            _ => self.malformed += 1,
        }
    }

    /// All decode errors.
    pub fn total(&self) -> u64 {
        self.too_large
            + self.truncated
            + self.unsupported_version
            + self.unknown_kind
            + self.malformed
            + self.trailing_bytes
    }
}

/// Decode a frame and say which protocol it is for; errors are counted, not returned.
pub(crate) fn decode(
    frame: &[u8],
    limit: usize,
    errors: &mut DecodeErrors,
    traffic: &mut Traffic,
) -> Option<Inbound> {
    let opened = match Frame::open(frame, limit) {
        Ok(f) => f,
        Err(e) => {
            errors.count(&e);
            return None;
        }
    };
    let kind = opened.kind;
    let result = match kind {
        Protocol::Membership => opened.decode().map(Inbound::Swim),
        Protocol::Ring => opened.decode().map(|m| Inbound::Multicast(MulticastMessage::Ring(m))),
        Protocol::Tree => opened.decode().map(|m| Inbound::Multicast(MulticastMessage::Tree(m))),
        Protocol::Pbcast => opened.decode().map(|m| Inbound::Multicast(MulticastMessage::Pbcast(m))),
        Protocol::AntiEntropy => opened.decode().map(Inbound::AntiEntropy),
        Protocol::Rumor => opened.decode().map(Inbound::Rumor),
        Protocol::Aggregation => opened.decode().map(Inbound::Aggregation),
        // Flooding is a simulator-only protocol: a daemon never speaks it.
        other => Err(DecodeError::UnknownKind(other.to_wire())),
    };
    match result {
        Ok(m) => {
            traffic.count_received(kind, frame.len());
            Some(m)
        }
        Err(e) => {
            errors.count(&e);
            None
        }
    }
}

/// Encode one message; a message that cannot be encoded within the limit is a bug of ours
/// (machines bound their messages), so it is counted and dropped.
pub(crate) fn encode<M: WireMessage>(msg: &M, limit: usize) -> Result<Bytes, EncodeError> {
    wire::encode(msg, limit).map(Bytes::from)
}
