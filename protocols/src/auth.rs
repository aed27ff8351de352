//! Who said it: signatures by a node's own key over what only that node may say (its
//! liveness record, the messages of its streams), checked by every receiver.
//!
//! Members hold the cluster secret, so they are trusted to be members, not to tell the truth
//! about others (DESIGN.md, "Transport and security"). A node's [`NodeId`] is its Ed25519
//! public key; what it signs, anyone can check with nothing but the NodeId.
//!
//! The machines stay free of cryptography: they sign and verify through an [`Authenticator`]
//! the host hands them (the daemon's uses the node key, Ed25519 through `ring`). The simulator,
//! which has no adversary unless an experiment plants one, uses [`Unchecked`], a keyed hash
//! that costs almost nothing and that anyone can forge.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::id::NodeId;

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// A signature of all zeros: verifies under nothing.
    pub const ZERO: Signature = Signature([0; 64]);
}

impl Default for Signature {
    fn default() -> Self {
        Signature::ZERO
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let a: [u8; 64] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(a))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// The author's signature over a message of one of its streams, and what a receiver needs to
/// find the author's key: a stream origin is the first 24 bytes of the author's NodeId and an
/// 8-byte epoch (see the Engine's "Stream origins"), so the key is the origin's first 24 bytes
/// followed by `key_tail`. Nobody can sign for an origin whose prefix is not their own key's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Seal {
    /// The last 8 bytes of the author's NodeId.
    pub key_tail: [u8; 8],
    /// The author's signature over [`message_bytes`].
    pub sig: Signature,
}

/// What a [`Seal`]'s signature covers: a domain tag, the origin, topic, seq, publish time and
/// the SHA-256 of the payload (so a proof that a message exists can travel without it).
pub fn message_bytes(
    origin: &NodeId,
    topic: u64,
    seq: u64,
    published_at: u64,
    digest: &[u8; 32],
) -> [u8; 101] {
    let mut b = [0u8; 101];
    b[..13].copy_from_slice(b"hearsay/msg/1");
    b[13..45].copy_from_slice(origin.as_bytes());
    b[45..53].copy_from_slice(&topic.to_be_bytes());
    b[53..61].copy_from_slice(&seq.to_be_bytes());
    b[61..69].copy_from_slice(&published_at.to_be_bytes());
    b[69..].copy_from_slice(digest);
    b
}

/// SHA-256 of a payload, as a [`Seal`] covers it.
pub fn payload_digest(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// The key that signs for `origin` given the seal's `key_tail`.
pub fn origin_key(origin: &NodeId, key_tail: &[u8; 8]) -> NodeId {
    let mut k = *origin.as_bytes();
    k[24..].copy_from_slice(key_tail);
    NodeId::from_bytes(k)
}

/// Seal a message of `auth`'s own stream `origin` (whose first 24 bytes are `auth`'s id's).
pub fn seal(
    auth: &dyn Authenticator,
    origin: &NodeId,
    topic: u64,
    seq: u64,
    published_at: u64,
    payload: &[u8],
) -> Seal {
    seal_digest(auth, origin, topic, seq, published_at, &payload_digest(payload))
}

/// [`seal`], given the payload's [`payload_digest`].
pub fn seal_digest(
    auth: &dyn Authenticator,
    origin: &NodeId,
    topic: u64,
    seq: u64,
    published_at: u64,
    digest: &[u8; 32],
) -> Seal {
    let mut key_tail = [0u8; 8];
    key_tail.copy_from_slice(&auth.id().as_bytes()[24..]);
    Seal { key_tail, sig: auth.sign(&message_bytes(origin, topic, seq, published_at, digest)) }
}

/// True if `seal` is the origin's author's signature over the message with this payload
/// digest.
pub fn verify_seal(
    auth: &dyn Authenticator,
    origin: &NodeId,
    topic: u64,
    seq: u64,
    published_at: u64,
    digest: &[u8; 32],
    seal: &Seal,
) -> bool {
    let key = origin_key(origin, &seal.key_tail);
    auth.verify(&key, &message_bytes(origin, topic, seq, published_at, digest), &seal.sig)
}

/// Proof that a message exists, without its payload: what its seal covers. A heads reply
/// carries one per stream, so a peer cannot make a new subscriber start a stream past messages
/// that do not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The stream's origin.
    pub origin: NodeId,
    /// The stream's topic.
    pub topic: u64,
    /// The message's seq.
    pub seq: u64,
    /// Its publish time (µs, the origin's clock).
    pub published_at: u64,
    /// SHA-256 of its payload.
    pub digest: [u8; 32],
    /// The origin's seal.
    pub seal: Seal,
}

impl Proof {
    /// True if the seal is the origin's author's signature over this message.
    pub fn verify(&self, auth: &dyn Authenticator) -> bool {
        verify_seal(auth, &self.origin, self.topic, self.seq, self.published_at, &self.digest, &self.seal)
    }
}

/// Signs with this node's key, verifies other nodes' signatures.
pub trait Authenticator: fmt::Debug + Send + Sync {
    /// This node's id: the key it signs with.
    fn id(&self) -> NodeId;
    /// This node's signature over `msg`.
    fn sign(&self, msg: &[u8]) -> Signature;
    /// True if `sig` is `key`'s signature over `msg`.
    fn verify(&self, key: &NodeId, msg: &[u8], sig: &Signature) -> bool;
}

/// Authenticity off: signs nothing, accepts everything. Only for measuring what signatures
/// cost (`hearsay bench --no-auth`); never in a cluster that faces anyone.
#[derive(Clone, Copy, Debug)]
pub struct NoAuth(pub NodeId);

impl Authenticator for NoAuth {
    fn id(&self) -> NodeId {
        self.0
    }

    /// A fixed signature that is not [`Signature::ZERO`]: a zero one reads as "unsigned",
    /// which SWIM refuses for an `Alive` that changes the table, and the cluster would not form.
    fn sign(&self, _msg: &[u8]) -> Signature {
        Signature([0xa5; 64])
    }

    fn verify(&self, _key: &NodeId, _msg: &[u8], _sig: &Signature) -> bool {
        true
    }
}

/// For simulations without an adversary: a "signature" is SHA-256 of the signer's id and the
/// message, twice over. Deterministic and cheap, checked like a real one (a message altered in
/// flight, or signed as another node by a careless caller, fails), but anyone can forge it.
#[derive(Clone, Copy, Debug)]
pub struct Unchecked(pub NodeId);

impl Unchecked {
    fn tag(key: &NodeId, msg: &[u8]) -> Signature {
        let a =
            Sha256::new().chain_update(b"hearsay/unchecked/").chain_update(key.as_bytes()).chain_update(msg);
        let a = a.finalize();
        let b = Sha256::digest(a);
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    }
}

impl Authenticator for Unchecked {
    fn id(&self) -> NodeId {
        self.0
    }

    fn sign(&self, msg: &[u8]) -> Signature {
        Self::tag(&self.0, msg)
    }

    fn verify(&self, key: &NodeId, msg: &[u8], sig: &Signature) -> bool {
        Self::tag(key, msg) == *sig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_verifies_for_its_origin_and_message_only() {
        let me = Unchecked(NodeId::from_u64(7));
        let mut origin = *me.id().as_bytes();
        origin[24..].copy_from_slice(&42u64.to_be_bytes()); // an epoch
        let origin = NodeId::from_bytes(origin);
        let s = seal(&me, &origin, 3, 9, 1_000, b"payload");
        let d = payload_digest(b"payload");
        assert!(verify_seal(&me, &origin, 3, 9, 1_000, &d, &s));
        assert!(!verify_seal(&me, &origin, 3, 10, 1_000, &d, &s), "another seq");
        assert!(!verify_seal(&me, &origin, 3, 9, 1_000, &payload_digest(b"other"), &s), "another payload");
        // Another node's origin with this node's key tail: the key does not match.
        let mut other = *NodeId::from_u64(8).as_bytes();
        other[24..].copy_from_slice(&42u64.to_be_bytes());
        assert!(!verify_seal(&me, &NodeId::from_bytes(other), 3, 9, 1_000, &d, &s));
    }

    #[test]
    fn unchecked_signatures_verify_under_the_signer_only() {
        let a = Unchecked(NodeId::from_u64(1));
        let b = Unchecked(NodeId::from_u64(2));
        let s = a.sign(b"hello");
        assert!(b.verify(&a.id(), b"hello", &s));
        assert!(!b.verify(&b.id(), b"hello", &s));
        assert!(!b.verify(&a.id(), b"hellO", &s));
        assert!(!b.verify(&a.id(), b"hello", &Signature::ZERO));
    }

    #[test]
    fn signatures_round_trip_through_postcard_and_refuse_other_lengths() {
        let s = Unchecked(NodeId::from_u64(1)).sign(b"x");
        let bytes = postcard::to_allocvec(&s).unwrap();
        assert_eq!(bytes.len(), 65, "a length byte and 64 bytes");
        assert_eq!(postcard::from_bytes::<Signature>(&bytes).unwrap(), s);
        let short = postcard::to_allocvec(&serde_bytes_like(&[1u8; 63])).unwrap();
        assert!(postcard::from_bytes::<Signature>(&short).is_err());
    }

    fn serde_bytes_like(b: &[u8]) -> impl Serialize + '_ {
        struct B<'a>(&'a [u8]);
        impl Serialize for B<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        B(b)
    }
}
