//! The wire envelope: one frame = one postcard-encoded envelope (DESIGN.md, "transport").
//!
//! ```text
//! frame = version: u16 (postcard varint) ‖ kind: u8 ‖ body (postcard of the protocol's Message)
//! ```
//!
//! The frame's length is checked against the caller's limit **before** anything is decoded;
//! the header is read next, so a frame of an unknown version or kind is refused without
//! touching its body; the body must then decode exactly, with no bytes left over. Every
//! failure is a [`DecodeError`] value, counted and dropped by the caller: a peer cannot make
//! decoding panic (a proptest feeds it random bytes) or allocate more than the frame's size.
//!
//! The sender is not in the frame: it is the peer the transport authenticated (a QUIC
//! connection bound to the peer's key), which a frame could only repeat or contradict.
//! PROTOCOLS.md §0.2 lists a sender field; hearsay leaves it out to save 32 bytes a datagram.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version this build speaks; a frame with any other version is refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// The datagram budget: a datagram frame never exceeds this many bytes (PROTOCOLS.md §6.2;
/// QUIC's 1200-byte minimum MTU). Larger messages go on a stream.
pub const DATAGRAM_BUDGET: usize = 1200;

/// Default frame limit for stream frames (a 1 MiB anti-entropy delta plus headers).
pub const DEFAULT_FRAME_LIMIT: usize = 2 << 20;

/// The protocols, one per machine that has wire messages: the kind byte of a frame (the
/// numbers are wire values and never change), the Engine's per-protocol counters and the
/// `protocol` label of metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// Anti-entropy exchanges (PROTOCOLS.md §1).
    AntiEntropy = 1,
    /// Rumor mongering (§2).
    Rumor = 2,
    /// Bimodal multicast: data, digests, solicitations (§4).
    Pbcast = 3,
    /// Gossip aggregation (§5).
    Aggregation = 4,
    /// SWIM membership and failure detection (§6).
    Membership = 5,
    /// Chord ring maintenance and lookups (§7).
    Ring = 6,
    /// Scribe topic trees (§8).
    Tree = 7,
    /// Flooding with a TTL and blind counter rumor mongering (§3; simulator experiments only).
    Flood = 8,
}

impl Protocol {
    /// The kind with this wire value.
    pub fn from_wire(value: u8) -> Option<Self> {
        Some(match value {
            1 => Protocol::AntiEntropy,
            2 => Protocol::Rumor,
            3 => Protocol::Pbcast,
            4 => Protocol::Aggregation,
            5 => Protocol::Membership,
            6 => Protocol::Ring,
            7 => Protocol::Tree,
            8 => Protocol::Flood,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn to_wire(self) -> u8 {
        self as u8
    }

    /// The `protocol` label of metrics and reports (snake case).
    pub fn label(self) -> &'static str {
        match self {
            Protocol::AntiEntropy => "anti_entropy",
            Protocol::Rumor => "rumor",
            Protocol::Pbcast => "pbcast",
            Protocol::Aggregation => "aggregation",
            Protocol::Membership => "membership",
            Protocol::Ring => "ring",
            Protocol::Tree => "tree",
            Protocol::Flood => "flood",
        }
    }

    /// A dense index in `0..COUNT`, for per-protocol counter arrays.
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// How many protocols there are.
    pub const COUNT: usize = 8;

    /// The protocols a node (the daemon's Engine) speaks, in the order metrics list them.
    /// Flooding is a simulator-only protocol.
    pub const NODE: [Protocol; 7] = [
        Protocol::Membership,
        Protocol::Ring,
        Protocol::Tree,
        Protocol::Pbcast,
        Protocol::Rumor,
        Protocol::AntiEntropy,
        Protocol::Aggregation,
    ];
}

/// A protocol's message type, tied to its [`Protocol`].
pub trait WireMessage: Serialize + DeserializeOwned {
    /// The kind written in the envelope of every message of this type.
    const KIND: Protocol;
}

/// Why a frame could not be decoded. Each is counted and the frame dropped; none changes
/// any machine's state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than the limit; nothing was decoded.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes received.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The frame ends inside its header.
    #[error("frame too short for its header")]
    Truncated,
    /// The peer speaks another protocol version.
    #[error("protocol version {got} is not supported (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version in the frame.
        got: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// The kind byte names no protocol this build knows.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The body was decoded as a message of another kind.
    #[error("frame of kind {got:?} read as {expected:?}")]
    KindMismatch {
        /// The kind the caller expected.
        expected: Protocol,
        /// The kind in the frame.
        got: Protocol,
    },
    /// The body is not a valid message of its kind.
    #[error("malformed body: {0}")]
    Malformed(postcard::Error),
    /// The body decoded but bytes were left after it.
    #[error("{0} bytes after the end of the body")]
    TrailingBytes(usize),
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the limit.
    #[error("encoded frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The serializer failed (a message type that postcard cannot represent).
    #[error("cannot encode: {0}")]
    Serialize(postcard::Error),
}

/// Encode `msg` as one frame, refusing frames over `limit` bytes.
pub fn encode<M: WireMessage>(msg: &M, limit: usize) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    write_header(&mut out, PROTOCOL_VERSION, M::KIND.to_wire());
    let out = postcard::to_extend(msg, out).map_err(EncodeError::Serialize)?;
    if out.len() > limit {
        return Err(EncodeError::TooLarge { len: out.len(), limit });
    }
    Ok(out)
}

/// The encoded length of `msg`'s frame, without keeping the bytes (for accounting).
pub fn encoded_len<M: WireMessage>(msg: &M) -> usize {
    let header = varint_len(PROTOCOL_VERSION) + 1;
    header + postcard::experimental::serialized_size(msg).unwrap_or(0)
}

/// A frame whose size and header have been checked; its body is still bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The protocol version (always [`PROTOCOL_VERSION`] once opened).
    pub version: u16,
    /// Which protocol the body is for.
    pub kind: Protocol,
    body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Check `bytes` against `limit`, then read the header. Does not look at the body.
    pub fn open(bytes: &'a [u8], limit: usize) -> Result<Self, DecodeError> {
        if bytes.len() > limit {
            return Err(DecodeError::TooLarge { len: bytes.len(), limit });
        }
        let (version, rest) = read_varint_u16(bytes)?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION });
        }
        let (&kind, body) = rest.split_first().ok_or(DecodeError::Truncated)?;
        let kind = Protocol::from_wire(kind).ok_or(DecodeError::UnknownKind(kind))?;
        Ok(Frame { version, kind, body })
    }

    /// Decode the body as `M`, which must be the frame's kind and consume every byte.
    pub fn decode<M: WireMessage>(&self) -> Result<M, DecodeError> {
        if self.kind != M::KIND {
            return Err(DecodeError::KindMismatch { expected: M::KIND, got: self.kind });
        }
        let (msg, rest) = postcard::take_from_bytes::<M>(self.body).map_err(DecodeError::Malformed)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        Ok(msg)
    }

    /// The body bytes.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// Open and decode in one step, for callers that know the kind to expect.
pub fn decode<M: WireMessage>(bytes: &[u8], limit: usize) -> Result<M, DecodeError> {
    Frame::open(bytes, limit)?.decode()
}

fn write_header(out: &mut Vec<u8>, version: u16, kind: u8) {
    let mut v = version;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out.push(kind);
}

fn varint_len(v: u16) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        _ => 3,
    }
}

/// postcard's varint for u16: little-endian base-128, at most 3 bytes.
fn read_varint_u16(bytes: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(3) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let v = u16::try_from(value)
                .map_err(|_| DecodeError::Malformed(postcard::Error::DeserializeBadVarint))?;
            return Ok((v, &bytes[i + 1..]));
        }
    }
    if bytes.len() < 3 {
        Err(DecodeError::Truncated)
    } else {
        Err(DecodeError::Malformed(postcard::Error::DeserializeBadVarint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Probe {
        seq: u32,
        note: String,
    }
    impl WireMessage for Probe {
        const KIND: Protocol = Protocol::Membership;
    }

    #[test]
    fn header_is_the_postcard_encoding_of_version_and_kind() {
        let bytes = encode(&Probe { seq: 5, note: "x".into() }, 100).unwrap();
        let expected = postcard::to_allocvec(&(PROTOCOL_VERSION, 5u8, 5u32, "x")).unwrap();
        assert_eq!(bytes, expected);
        assert_eq!(encoded_len(&Probe { seq: 5, note: "x".into() }), bytes.len());
    }

    #[test]
    fn every_refusal_is_a_typed_error() {
        let good = encode(&Probe { seq: 300, note: "hello".into() }, 100).unwrap();
        assert_eq!(decode::<Probe>(&good, 100).unwrap(), Probe { seq: 300, note: "hello".into() });
        assert_eq!(decode::<Probe>(&good, 3), Err(DecodeError::TooLarge { len: good.len(), limit: 3 }));
        assert_eq!(decode::<Probe>(&[], 100), Err(DecodeError::Truncated));
        assert_eq!(decode::<Probe>(&[1], 100), Err(DecodeError::Truncated));
        assert_eq!(
            decode::<Probe>(&[2, 5], 100),
            Err(DecodeError::UnsupportedVersion { got: 2, supported: PROTOCOL_VERSION })
        );
        assert_eq!(decode::<Probe>(&[1, 99, 0], 100), Err(DecodeError::UnknownKind(99)));
        assert_eq!(
            decode::<Probe>(&[1, 1, 0], 100),
            Err(DecodeError::KindMismatch { expected: Protocol::Membership, got: Protocol::AntiEntropy })
        );
        assert!(matches!(decode::<Probe>(&good[..good.len() - 1], 100), Err(DecodeError::Malformed(_))));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode::<Probe>(&long, 100), Err(DecodeError::TrailingBytes(1)));
        assert!(matches!(decode::<Probe>(&[0xff, 0xff, 0xff, 5], 100), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn encode_refuses_oversized_frames() {
        let big = Probe { seq: 1, note: "y".repeat(2000) };
        assert!(matches!(encode(&big, DATAGRAM_BUDGET), Err(EncodeError::TooLarge { .. })));
        assert!(encode(&big, DEFAULT_FRAME_LIMIT).is_ok());
    }

    #[test]
    fn kinds_round_trip_through_their_wire_values() {
        for v in 0..=255u8 {
            if let Some(k) = Protocol::from_wire(v) {
                assert_eq!(k.to_wire(), v);
            }
        }
        assert_eq!(Protocol::from_wire(0), None);
    }
}
