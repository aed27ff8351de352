//! Identifiers: nodes, topics, streams and sequence numbers (PROTOCOLS.md §0.2).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A node's identity: its public key bytes, totally ordered bytewise.
///
/// The transport authenticates it; machines only compare, order and copy it. Comparison
/// works on four big-endian words, which is the same order as bytewise and several times
/// cheaper than a `memcmp` call (binary searches over 10^5 ids are a simulator hot path).
#[derive(Clone, Copy, Eq, Serialize, Deserialize)]
pub struct NodeId([u8; 32]);

impl NodeId {
    #[inline]
    fn words(&self) -> [u64; 4] {
        let w = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.0[8 * i..8 * i + 8]);
            u64::from_be_bytes(b)
        };
        [w(0), w(1), w(2), w(3)]
    }
}

impl PartialEq for NodeId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.words() == other.words()
    }
}

impl std::hash::Hash for NodeId {
    /// The 32 bytes, no length prefix (consistent with `Eq`: equal words are equal bytes).
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl Ord for NodeId {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.words().cmp(&other.words())
    }
}

impl PartialOrd for NodeId {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl NodeId {
    /// The identity with these key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        NodeId(bytes)
    }

    /// The key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A synthetic identity whose order is the order of `n` (big-endian in the first 8
    /// bytes, zeros after): for hand-stepped tests, where readable ids help.
    pub fn from_u64(n: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        NodeId(bytes)
    }

    /// The first 8 bytes as a big-endian integer: well spread for random keys, so a cheap
    /// hash-map key (never an order: use `Ord` for that).
    #[inline]
    pub fn prefix_u64(&self) -> u64 {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(head)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NodeId {
    /// The first 8 bytes in hex: enough to tell nodes apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A topic's identifier: the first 8 bytes, big-endian, of SHA-256("hearsay/topic/" ‖ name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicId(pub u64);

impl TopicId {
    /// The id of the topic with this name.
    pub fn of(name: &str) -> Self {
        let digest = Sha256::new().chain_update(b"hearsay/topic/").chain_update(name.as_bytes()).finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        TopicId(u64::from_be_bytes(head))
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A sequence number within one stream: the first message is 1, +1 per publish; 0 means
/// "none".
pub type Seq = u64;

/// One origin's stream of entries on one topic: `(TopicId, origin)`, ordered by topic first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamId {
    /// The topic the entries belong to.
    pub topic: TopicId,
    /// The node that wrote them.
    pub origin: NodeId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_ids_keep_numeric_order() {
        assert!(NodeId::from_u64(2) < NodeId::from_u64(10));
        assert_eq!(NodeId::from_u64(7).prefix_u64(), 7);
        assert_eq!(NodeId::from_u64(0xab).to_string(), "00000000000000ab");
    }

    #[test]
    fn order_is_bytewise() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut ids = Vec::new();
        for _ in 0..200 {
            let mut b = [0u8; 32];
            for byte in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = (x % 4) as u8; // many shared prefixes
            }
            ids.push(NodeId::from_bytes(b));
        }
        for a in &ids {
            for b in &ids {
                assert_eq!(a.cmp(b), a.as_bytes().cmp(b.as_bytes()));
                assert_eq!(a == b, a.as_bytes() == b.as_bytes());
            }
        }
    }

    #[test]
    fn topic_ids_are_stable_hashes() {
        // SHA-256("hearsay/topic/news"), first 8 bytes: pinned so the wire never drifts.
        assert_eq!(TopicId::of("news"), TopicId::of("news"));
        assert_ne!(TopicId::of("news"), TopicId::of("sport"));
        let expected = {
            let d = Sha256::digest(b"hearsay/topic/news");
            u64::from_be_bytes(d[..8].try_into().unwrap())
        };
        assert_eq!(TopicId::of("news").0, expected);
    }
}
