//! hearsay's deterministic simulator: the very same protocol machines as the daemon, at up to
//! 10^5 nodes, reproducible bit for bit from one seed (PROTOCOLS.md §9).
//!
//! - [`kernel`]: the discrete-event loop, network model, faults and observers;
//! - [`trace`]: a run's fingerprint, for replay checks;
//! - [`experiments`]: the experiments `hearsay-sim` runs, each a function returning its report;
//! - [`report`]: statistics, JSON lines and plots shared by the experiments.

pub mod experiments;
pub mod kernel;
pub mod report;
pub mod trace;
