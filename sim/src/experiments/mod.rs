//! The experiments `hearsay-sim` runs. Each module exposes `Params`, a `run` function returning
//! a serializable `Report` (the JSON line), a readable `table`, and where it makes sense a
//! `plot`. Tests call these functions directly with fixed seeds.

pub mod aggregate;
pub mod anti_entropy;
pub mod bench;
pub mod chord;
pub mod cluster;
pub mod delivery;
pub mod flood_vs_gossip;
pub mod fuzz;
pub mod pbcast;
pub mod rumor;
pub mod scribe;
pub mod swim;
