//! The hearsay daemon: the Engine that composes every protocol machine of one node, the
//! runtime that drives it over QUIC, the local HTTP API and the CLI.

pub mod filter;
pub mod transport;
