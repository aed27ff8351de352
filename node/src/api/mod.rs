//! The local HTTP API (loopback by default): JSON endpoints over the agent's actor, and
//! `/metrics` for Prometheus. Handlers never touch node state: each parses its request at the
//! edge, sends a [`Command`](crate::agent::Command) to the actor that owns the Engine and
//! awaits its reply.
//!
//! | method | path | body / query | reply |
//! |---|---|---|---|
//! | GET | `/v1/status` | | [`types::Status`] |
//! | GET | `/v1/members` | | `[`[`types::Member`]`]` |
//! | POST | `/v1/publish` | [`types::PublishRequest`] | [`types::Published`] |
//! | GET | `/v1/subscribe` | `?topic=T[&filter=EXPR][&expire=SECS][&durable=NAME][&from=new\|all\|TIME]` | a stream of JSON lines, each a [`types::StreamItem`] |
//! | POST | `/v1/ack` | [`types::AckRequest`] | `{}` |
//! | GET | `/v1/durable` | | `[`[`types::DurableInfo`]`]` |
//! | DELETE | `/v1/durable/NAME` | | `{}` |
//! | GET | `/v1/topics` | | `[`[`types::TopicInfo`]`]` |
//! | GET | `/v1/ring` | | [`types::RingInfo`] |
//! | POST | `/v1/values` | [`types::SetValue`] | `{}` |
//! | POST | `/v1/query` | [`types::QueryRequest`] | [`types::QueryResult`] |
//! | GET | `/v1/tags` | | this node's tags, `{KEY: VALUE}` |
//! | POST | `/v1/tags` | [`types::TagsRequest`] | the node's tags after, `{KEY: VALUE}` |
//! | GET | `/v1/events` | | a stream of JSON lines, each a [`types::Event`] |
//! | GET | `/metrics` | | Prometheus text format |
//!
//! Every request first passes the guard ([`guard`]): a token when the agent has one, a `Host`
//! that names the API by address or `localhost`, no `Origin` of another site, and
//! `Content-Type: application/json` on every POST, so a web page in a browser on the same host
//! can neither publish nor read.
//!
//! Errors are `{"error": "..."}` with the status [`error::ApiError::status`] gives: 400 bad
//! input, 404 no such endpoint or durable subscription, 409 refused by the node's state (too
//! many topics or queries, a durable subscription with a client already), 413 too large,
//! 401/403/415/421 refused by the guard, 503 the node is stopping, its store failed or it
//! serves as many subscriptions as it allows, 504 a query that did not converge in time, 507
//! the store's disk is full.
//!
//! | file | contents |
//! |---|---|
//! | `guard.rs` | the checks every request passes first |
//! | `server.rs` | the routes: parse, ask the actor, render |
//! | `types.rs` | the JSON shapes, shared with the CLI |
//! | `error.rs` | [`error::ApiError`] and its statuses |
//! | `views.rs` | the replies built from the Engine's views (hex ids, names of states and roles) |

pub mod error;
pub mod events;
pub mod guard;
pub mod server;
pub mod types;
pub(crate) mod views;
