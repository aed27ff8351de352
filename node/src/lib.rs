//! The hearsay daemon: the Engine that composes every protocol machine of one node, the
//! runtime that drives it over QUIC, the local HTTP API and the CLI.
//!
//! The Engine is sans-IO: with `default-features = false` this crate is only the Engine, the
//! message format and the subscription filters, with no async runtime, QUIC, HTTP or TLS
//! (the simulator depends on it so). The feature `runtime` (on by default) adds the rest.
//!
//! | module | contents | feature |
//! |---|---|---|
//! | [`engine`] | the sans-IO composition of all machines (a `Machine` over encoded frames) | |
//! | [`message`] | the application message (headers and body) and checked topic names | |
//! | [`filter`] | subscription filter expressions | |
//! | `agent` | the runtime: one actor task per node around the Engine, its commands | `runtime` |
//! | `store` | the durable store in the data dir (redb): streams, deliveries, cursors, members | `runtime` |
//! | `transport` | QUIC (quinn) with cluster admission, connection cache, fault injection | `runtime` |
//! | `api` | the local HTTP API: routes, JSON types, errors and their statuses | `runtime` |
//! | `cli` | the client commands over the API | `runtime` |
//! | `config` | the agent's configuration file and flags, validated at load | `runtime` |
//! | `metrics` | the `hearsay_*` Prometheus metrics | `runtime` |
//! | `bench` | `hearsay bench`: a load generator over a local cluster in one process | `runtime` |
//! | `demo` | `hearsay demo`: a live local cluster in one process | `runtime` |
//! | [`embed`] | running an agent inside another program, without HTTP: build, start, publish, subscribe (a `Stream`), members, query, events, shutdown | `runtime` |

#[cfg(feature = "runtime")]
pub mod agent;
#[cfg(feature = "runtime")]
pub mod api;
#[cfg(feature = "runtime")]
pub mod bench;
#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod demo;
#[cfg(feature = "runtime")]
pub mod embed;
pub mod engine;
#[cfg(feature = "runtime")]
mod exposition;
pub mod filter;
pub mod message;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod store;
#[cfg(feature = "runtime")]
pub mod transport;
