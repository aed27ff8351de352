//! hearsay's overlay: membership and failure detection (SWIM with Lifeguard), peer sampling,
//! the Chord-style ring and Scribe-style topic trees. Sans-IO machines, driven exactly like
//! those of `hearsay-protocols` (see its `machine` module).
//!
//! | module | contents |
//! |---|---|
//! | [`swim`] | SWIM membership and failure detection with Lifeguard (PROTOCOLS.md §6) |
//! | [`sampling`] | uniform random samples of live members for the gossip machines |
//! | [`chord`] | the Chord-style ring: successor lists, fingers, lookups (PROTOCOLS.md §7) |
//! | [`scribe`] | Scribe-style topic trees over the ring (PROTOCOLS.md §8) |

pub mod chord;
pub mod sampling;
pub mod scribe;
pub mod swim;
