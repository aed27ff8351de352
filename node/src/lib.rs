//! The hearsay daemon: the Engine that composes every protocol machine of one node, the
//! runtime that drives it over QUIC, the local HTTP API and the CLI.

pub mod api;
pub mod cli;
pub mod config;
pub mod filter;
pub mod message;
pub mod metrics;
pub mod transport;
