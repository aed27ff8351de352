//! Frames in and out of the Engine: decoding an envelope to the machine it is for, encoding a
//! machine's message, and counting both per protocol.
//!
//! Rumor mongering runs twice in a node (query announcements among all members, and
//! `gossip`-mode topics among their members), so the Rumor kind's body carries a one-byte
//! channel before the rumor message.

use bytes::Bytes;
use hearsay_overlay::chord::ChordMessage;
use hearsay_overlay::scribe::ScribeMessage;
use hearsay_overlay::swim::SwimMessage;
use hearsay_protocols::aggregate::AggMessage;
use hearsay_protocols::anti_entropy::AeMessage;
use hearsay_protocols::pbcast::PbMessage;
use hearsay_protocols::rumor::RumorMessage;
use hearsay_protocols::wire::{self, DecodeError, EncodeError, Frame, MessageKind, WireMessage};
use serde::{Deserialize, Serialize};

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
    const KIND: MessageKind = MessageKind::Rumor;
}

/// A decoded frame, routed by kind.
#[derive(Debug)]
pub(crate) enum Inbound {
    Swim(SwimMessage),
    Ring(ChordMessage),
    Pbcast(PbMessage),
    AntiEntropy(AeMessage),
    Rumor(ChannelRumor),
    Aggregation(AggMessage),
    Tree(ScribeMessage),
}

/// The protocols, as metrics label them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// SWIM membership.
    Membership,
    /// Chord ring.
    Ring,
    /// Scribe trees.
    Tree,
    /// Bimodal multicast.
    Pbcast,
    /// Rumor mongering (both channels).
    Rumor,
    /// Anti-entropy.
    AntiEntropy,
    /// Aggregation.
    Aggregation,
}

impl Protocol {
    /// Every protocol, in label order.
    pub const ALL: [Protocol; 7] = [
        Protocol::Membership,
        Protocol::Ring,
        Protocol::Tree,
        Protocol::Pbcast,
        Protocol::Rumor,
        Protocol::AntiEntropy,
        Protocol::Aggregation,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Membership => "membership",
            Protocol::Ring => "ring",
            Protocol::Tree => "tree",
            Protocol::Pbcast => "pbcast",
            Protocol::Rumor => "rumor",
            Protocol::AntiEntropy => "anti_entropy",
            Protocol::Aggregation => "aggregation",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Messages and bytes per protocol, both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames sent, per [`Protocol`] (index = `Protocol as usize`).
    pub sent: [u64; 7],
    /// Frame bytes sent.
    pub bytes_sent: [u64; 7],
    /// Frames received and decoded.
    pub received: [u64; 7],
    /// Frame bytes received.
    pub bytes_received: [u64; 7],
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
    let result = match opened.kind {
        MessageKind::Membership => opened.decode().map(|m| (Protocol::Membership, Inbound::Swim(m))),
        MessageKind::Ring => opened.decode().map(|m| (Protocol::Ring, Inbound::Ring(m))),
        MessageKind::Tree => opened.decode().map(|m| (Protocol::Tree, Inbound::Tree(m))),
        MessageKind::Pbcast => opened.decode().map(|m| (Protocol::Pbcast, Inbound::Pbcast(m))),
        MessageKind::AntiEntropy => opened.decode().map(|m| (Protocol::AntiEntropy, Inbound::AntiEntropy(m))),
        MessageKind::Rumor => opened.decode().map(|m| (Protocol::Rumor, Inbound::Rumor(m))),
        MessageKind::Aggregation => opened.decode().map(|m| (Protocol::Aggregation, Inbound::Aggregation(m))),
        // Flooding is a simulator-only protocol: a daemon never speaks it.
        other => Err(DecodeError::UnknownKind(other.to_wire())),
    };
    match result {
        Ok((p, m)) => {
            traffic.count_received(p, frame.len());
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
