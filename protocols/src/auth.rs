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

/// Signs with this node's key, verifies other nodes' signatures.
pub trait Authenticator: fmt::Debug + Send + Sync {
    /// This node's id: the key it signs with.
    fn id(&self) -> NodeId;
    /// This node's signature over `msg`.
    fn sign(&self, msg: &[u8]) -> Signature;
    /// True if `sig` is `key`'s signature over `msg`.
    fn verify(&self, key: &NodeId, msg: &[u8], sig: &Signature) -> bool;
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
