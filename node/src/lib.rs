//! The hearsay daemon: the Engine that composes every protocol machine of one node, the
//! runtime that drives it over QUIC, the local HTTP API and the CLI.
//!
//! | module | contents |
//! |---|---|
//! | [`bench`] | `hearsay bench`: a load generator over a local cluster in one process |
//! | [`demo`] | `hearsay demo`: a live local cluster in one process |
//! | [`engine`] | the sans-IO composition of all machines (a `Machine` over encoded frames) |
//! | [`agent`] | the runtime: one actor task per node, QUIC transport, API server |
//! | [`transport`] | QUIC (quinn) with cluster admission, connection cache, fault injection |
//! | [`api`] | the local HTTP API (routes and JSON types) |
//! | [`cli`] | the client commands over the API |
//! | [`config`] | the agent's configuration file and flags |
//! | [`filter`] | subscription filter expressions |
//! | [`message`] | the application message (headers and body) |

pub mod agent;
pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
mod exposition;
pub mod filter;
pub mod message;
pub mod metrics;
pub mod transport;
