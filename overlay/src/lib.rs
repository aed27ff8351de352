//! hearsay's overlay: membership and failure detection (SWIM with Lifeguard), peer sampling,
//! the Chord-style ring and Scribe-style topic trees. Sans-IO machines, driven exactly like
//! those of `hearsay-protocols` (see its `machine` module).

pub mod chord;
pub mod scribe;
