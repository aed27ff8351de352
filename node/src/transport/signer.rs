//! The daemon's [`Authenticator`]: signs with the node's Ed25519 key and checks other nodes'
//! signatures, both with `ed25519-dalek`.
//!
//! # Why not `ring`, which the TLS stack already uses
//!
//! Every node checks one seal per message it delivers (pbcast checks after its duplicate
//! check, so a copy it already holds costs nothing), so a check's cost is paid N − 1 times per
//! message: it was most of what authenticity cost in `hearsay bench` (issue 12). `ring`'s
//! Ed25519 verification is portable C and parses the public key (a point decompression, an
//! exponentiation in the field) at every call. `ed25519-dalek` picks its AVX2 backend at run
//! time where the CPU has it, and keeps a parsed [`VerifyingKey`]; this signer keeps the
//! parsed keys of the authors it has checked, a bounded number ([`KEYS_MAX`]). Measured on the
//! 2-core EPYC the bench runs on: ~52 µs per `ring` check, ~33 µs with a cached dalek key,
//! 26 → 18 µs per signature.
//!
//! # Nothing checked twice
//!
//! Anti-entropy checks each entry it receives before storing it, then hands it to pbcast,
//! which checks it again (it cannot know where a copy it does not hold was checked). The
//! signer remembers the signatures it checked lately ([`CHECKED_MAX`], by SHA-256 of key,
//! signature and message, so a remembered one is the same signature over the same bytes) and
//! answers those without a second check.
//!
//! # What is accepted
//!
//! [`VerifyingKey::verify`] is the check `ring` made: `[s]B = R + [k]A` without the cofactor,
//! `s` canonical (below the group order), `R` compared by its encoding. As with `ring`, keys
//! of small order are not refused: anyone can sign under one, but no honest member has one,
//! and a seal's key must share its stream origin's first 24 bytes (see
//! [`auth::Seal`](hearsay_protocols::auth::Seal)), so it cannot stand for another's stream.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use hearsay_protocols::NodeId;
use hearsay_protocols::auth::{Authenticator, Signature};
use sha2::{Digest, Sha256};

/// Parsed keys a signer keeps (of the authors whose signatures it has checked): every member
/// signs its `Alive`s and each of its lives is a stream origin of its own key, so a cluster of
/// up to a few hundred members keeps all of them. 224 bytes each (the key and its point) in
/// two maps of up to 512, so at most ~0.5 MiB with the maps' spare room.
pub const KEYS_MAX: usize = 1024;

/// Signatures a signer remembers having checked: more than one anti-entropy delta's entries,
/// checked by anti-entropy and again by pbcast in the same step. 32 bytes each in two sets of
/// up to 2,048, so at most ~0.3 MiB with the sets' spare room.
pub const CHECKED_MAX: usize = 4096;

/// The machines' [`Authenticator`] in the daemon: signs with this node's Ed25519 key and
/// checks another node's signature under its NodeId (its public key).
pub struct NodeSigner {
    id: NodeId,
    key: SigningKey,
    memory: Mutex<Memory>,
}

/// What a signer keeps between checks.
#[derive(Default)]
struct Memory {
    keys: KeyCache,
    checked: Generations<[u8; 32]>,
}

impl std::fmt::Debug for NodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigner").field("id", &self.id).finish_non_exhaustive()
    }
}

impl NodeSigner {
    /// The signer of the key whose 32-byte seed (RFC 8032's private key) is `seed`; `None` if
    /// that key is not `id`'s.
    pub fn from_seed(id: NodeId, seed: &[u8; 32]) -> Option<Self> {
        let key = SigningKey::from_bytes(seed);
        (key.verifying_key().to_bytes() == *id.as_bytes()).then(|| NodeSigner {
            id,
            key,
            memory: Mutex::new(Memory::default()),
        })
    }
}

/// What names one check: SHA-256 of the key, the signature and the message.
fn check_id(key: &NodeId, msg: &[u8], sig: &Signature) -> [u8; 32] {
    Sha256::new().chain_update(key.as_bytes()).chain_update(sig.0).chain_update(msg).finalize().into()
}

impl Authenticator for NodeSigner {
    fn id(&self) -> NodeId {
        self.id
    }

    fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.key.sign(msg).to_bytes())
    }

    fn verify(&self, key: &NodeId, msg: &[u8], sig: &Signature) -> bool {
        let id = check_id(key, msg, sig);
        let kept = match self.memory.lock() {
            Ok(mut m) => {
                if m.checked.touch(&id) {
                    return true;
                }
                m.keys.get(key.as_bytes())
            }
            Err(_) => None,
        };
        let Some(vk) = kept.or_else(|| VerifyingKey::from_bytes(key.as_bytes()).ok()) else {
            return false;
        };
        let ok = vk.verify(msg, &ed25519_dalek::Signature::from_bytes(&sig.0)).is_ok();
        if ok {
            // Only what checked is kept: a peer sending made-up keys and signatures cannot
            // push the members' keys or checks out.
            if let Ok(mut m) = self.memory.lock() {
                m.keys.keep(*key.as_bytes(), vk);
                m.checked.keep(id, CHECKED_MAX);
            }
        }
        ok
    }
}

/// At most [`KEYS_MAX`] parsed keys in two generations: lookups move a key from the older to
/// the newer; when the newer holds half of them it becomes the older, and the older ones are
/// dropped. A key in use stays; one unused for a whole generation goes.
#[derive(Default)]
struct KeyCache {
    fresh: HashMap<[u8; 32], VerifyingKey>,
    old: HashMap<[u8; 32], VerifyingKey>,
}

impl KeyCache {
    fn get(&mut self, key: &[u8; 32]) -> Option<VerifyingKey> {
        if let Some(k) = self.fresh.get(key) {
            return Some(*k);
        }
        let k = self.old.remove(key)?;
        self.keep(*key, k);
        Some(k)
    }

    fn keep(&mut self, key: [u8; 32], vk: VerifyingKey) {
        if self.fresh.contains_key(&key) {
            return;
        }
        if self.fresh.len() >= KEYS_MAX / 2 {
            self.old = std::mem::take(&mut self.fresh);
        }
        self.old.remove(&key);
        self.fresh.insert(key, vk);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.fresh.len() + self.old.len()
    }
}

/// A set of at most `max` items (given at each [`Generations::keep`]) in two generations, as
/// [`KeyCache`] keeps its keys.
struct Generations<T> {
    fresh: HashSet<T>,
    old: HashSet<T>,
}

impl<T> Default for Generations<T> {
    fn default() -> Self {
        Generations { fresh: HashSet::new(), old: HashSet::new() }
    }
}

impl<T: std::hash::Hash + Eq> Generations<T> {
    /// True if the set holds `item` (now among the fresh ones).
    fn touch(&mut self, item: &T) -> bool
    where
        T: Copy,
    {
        if self.fresh.contains(item) {
            return true;
        }
        if self.old.remove(item) {
            self.fresh.insert(*item);
            return true;
        }
        false
    }

    fn keep(&mut self, item: T, max: usize) {
        if self.fresh.contains(&item) {
            return;
        }
        if self.fresh.len() >= max / 2 {
            self.old = std::mem::take(&mut self.fresh);
        }
        self.old.remove(&item);
        self.fresh.insert(item);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.fresh.len() + self.old.len()
    }
}

/// The 32-byte seed of an Ed25519 key in PKCS#8 (v1 or v2, RFC 8410 and RFC 5958, as `rcgen`
/// and `ring` write it): the fixed header, then the private key as an OCTET STRING in an
/// OCTET STRING.
pub(crate) fn pkcs8_seed(der: &[u8]) -> Option<[u8; 32]> {
    // SEQUENCE { INTEGER version, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } ...
    const ALGORITHM_AND_KEY: [u8; 11] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    if der.len() < 48 || der[0] != 0x30 || der[2..4] != [0x02, 0x01] || der[5..16] != ALGORITHM_AND_KEY {
        return None;
    }
    der[16..48].try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(n: u8) -> NodeSigner {
        let seed = [n; 32];
        let id = NodeId::from_bytes(SigningKey::from_bytes(&seed).verifying_key().to_bytes());
        NodeSigner::from_seed(id, &seed).unwrap()
    }

    #[test]
    fn signatures_are_rfc_8032_ed25519_and_verify_under_the_signer_only() {
        // RFC 8032 §7.1, test 1: the empty message.
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let seed: [u8; 32] =
            hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").try_into().unwrap();
        let public: [u8; 32] =
            hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").try_into().unwrap();
        let expected = hex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        );
        let s = NodeSigner::from_seed(NodeId::from_bytes(public), &seed).unwrap();
        assert_eq!(s.sign(b"").0.to_vec(), expected);
        assert!(NodeSigner::from_seed(NodeId::from_bytes([1; 32]), &seed).is_none(), "another key's id");

        let (a, b) = (signer(1), signer(2));
        let sig = a.sign(b"alive");
        assert!(b.verify(&a.id(), b"alive", &sig));
        assert!(!b.verify(&b.id(), b"alive", &sig));
        assert!(!b.verify(&a.id(), b"alivE", &sig));
        assert!(!b.verify(&a.id(), b"alive", &Signature::ZERO));
        let mut flipped = sig;
        flipped.0[63] ^= 0x10; // s no longer canonical
        assert!(!b.verify(&a.id(), b"alive", &flipped));
        assert!(b.verify(&a.id(), b"alive", &sig), "a kept key checks as before");
    }

    #[test]
    fn a_signature_checks_the_same_as_with_ring() {
        use ring::signature::{ED25519, UnparsedPublicKey};
        let (a, b) = (signer(5), signer(6));
        for i in 0..50u8 {
            let msg = [i; 101];
            let mut sig = a.sign(&msg);
            if i % 3 == 1 {
                sig.0[(i as usize) % 64] ^= 1 << (i % 8);
            }
            let key = if i % 5 == 4 { b.id() } else { a.id() };
            let by_ring = UnparsedPublicKey::new(&ED25519, key.as_bytes()).verify(&msg, &sig.0).is_ok();
            assert_eq!(b.verify(&key, &msg, &sig), by_ring, "message {i}");
        }
    }

    #[test]
    fn only_keys_that_signed_are_kept_and_never_more_than_keys_max() {
        let me = signer(9);
        // Made-up keys with made-up signatures: nothing kept.
        for i in 0..100u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            assert!(!me.verify(&NodeId::from_bytes(k), b"x", &Signature([7; 64])));
        }
        assert_eq!(me.memory.lock().unwrap().keys.len(), 0);
        let a = signer(1);
        assert!(me.verify(&a.id(), b"x", &a.sign(b"x")));
        assert_eq!(me.memory.lock().unwrap().keys.len(), 1);
        // Many keys: bounded, and the one in use stays.
        let mut cache = KeyCache::default();
        let vk = *me.memory.lock().unwrap().keys.fresh.values().next().unwrap();
        cache.keep([0xff; 32], vk);
        for i in 0..(3 * KEYS_MAX as u32) {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            cache.keep(k, vk);
            assert!(cache.len() <= KEYS_MAX);
            if i % 100 == 0 {
                assert!(cache.get(&[0xff; 32]).is_some(), "a key in use stays");
            }
        }
    }

    #[test]
    fn a_signature_checked_once_is_answered_from_memory_and_only_that_one() {
        let (a, me) = (signer(1), signer(2));
        let sig = a.sign(b"entry");
        assert!(me.verify(&a.id(), b"entry", &sig));
        assert!(me.memory.lock().unwrap().checked.touch(&check_id(&a.id(), b"entry", &sig)));
        assert!(me.verify(&a.id(), b"entry", &sig), "again, from memory");
        // Anything else is checked, and a failure is not remembered.
        assert!(!me.verify(&a.id(), b"entrY", &sig));
        assert!(!me.verify(&me.id(), b"entry", &sig));
        let mut other = sig;
        other.0[0] ^= 1;
        assert!(!me.verify(&a.id(), b"entry", &other));
        assert_eq!(me.memory.lock().unwrap().checked.len(), 1);
        // Bounded, and one in use stays.
        let mut g = Generations::default();
        g.keep([0xff; 32], CHECKED_MAX);
        for i in 0..(3 * CHECKED_MAX as u32) {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            g.keep(k, CHECKED_MAX);
            assert!(g.len() <= CHECKED_MAX);
            if i % 1000 == 0 {
                assert!(g.touch(&[0xff; 32]));
            }
        }
    }

    #[test]
    fn the_seed_is_read_from_pkcs8_v1_and_v2() {
        let rng = ring::rand::SystemRandom::new();
        let v2 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let seed = pkcs8_seed(v2.as_ref()).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(v2.as_ref()).unwrap();
        use ring::signature::KeyPair;
        let id = NodeId::from_bytes(pair.public_key().as_ref().try_into().unwrap());
        assert!(NodeSigner::from_seed(id, &seed).is_some());
        let mut v1 = vec![0x30, 0x2e, 0x02, 0x01, 0x00];
        v1.extend_from_slice(&[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);
        v1.extend_from_slice(&seed);
        assert_eq!(pkcs8_seed(&v1), Some(seed));
        assert_eq!(pkcs8_seed(&v1[..40]), None);
        v1[9] = 0x71; // another algorithm
        assert_eq!(pkcs8_seed(&v1), None);
    }
}
