//! hearsay's core types and sans-IO protocol machines.
//!
//! Everything here is a plain state machine (DESIGN.md, "the sans-IO rule"): time comes in as
//! an [`Instant`], randomness from an owned, seeded [`Rng`], and output is pulled by the driver
//! through the [`Machine`] contract. The same code runs in unit tests that step time by hand,
//! in the simulator (`hearsay-sim`) at 10^5 nodes, and in the daemon.
//!
//! | module | contents |
//! |---|---|
//! | [`id`] | [`NodeId`], [`TopicId`], [`StreamId`], [`Seq`] |
//! | [`time`] | [`Instant`], [`Duration`]: microseconds, no clock |
//! | [`rng`] | [`Seed`] derivation and the [`Rng`] every machine owns |
//! | [`timer`] | [`Ticker`]: periodic timers in sync, phased or Poisson timing |
//! | [`machine`] | the [`Machine`] trait, [`Transmit`], [`Outbox`] |
//! | [`peers`] | [`PeerView`]: uniform random partner choice |
//! | [`wire`] | the envelope: version, kind, size limit, typed decode errors |
//! | [`auth`] | [`Signature`](auth::Signature) and the [`Authenticator`](auth::Authenticator) machines sign and verify through |
//! | [`anti_entropy`] | Demers et al.'s anti-entropy over a store of sequenced entries |
//! | [`rumor`] | Demers et al.'s rumor mongering: feedback/blind, counter/coin, push/pull |
//! | [`flood`] | flooding with a TTL, and blind counter rumor mongering over a neighbour graph |
//! | [`aggregate`] | gossip aggregation: push-sum (plain and acknowledged), extremum, push-pull averaging |
//! | [`pbcast`] | Birman et al.'s bimodal multicast: digests, solicitation, FIFO delivery, gaps |
//! | `testing` | `Net`: the test harness every machine's tests drive (feature `test-utils`) |

pub mod aggregate;
pub mod anti_entropy;
pub mod auth;
pub mod flood;
pub mod id;
pub mod machine;
pub mod pbcast;
pub mod peers;
pub mod rng;
pub mod rumor;
pub mod tags;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod time;
pub mod timer;
pub mod wire;

pub use id::{NodeId, Seq, StreamId, TopicId};
pub use machine::{Machine, Outbox, Reliability, Transmit};
pub use peers::PeerView;
pub use rng::{Rng, Seed};
pub use time::{Duration, Instant};
pub use timer::{Earliest, Ticker, Timing};
pub use wire::{DecodeError, EncodeError, Frame, Protocol, WireMessage};
