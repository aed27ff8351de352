//! The local HTTP API (loopback by default): JSON endpoints over the node actor, and
//! `/metrics` for Prometheus. Handlers never touch node state: each sends a [`Command`] to
//! the actor that owns the Engine and awaits its reply.
//!
//! | method | path | body / query | reply |
//! |---|---|---|---|
//! | GET | `/v1/status` | | [`types::Status`] |
//! | GET | `/v1/members` | | `[`[`types::Member`]`]` |
//! | POST | `/v1/publish` | [`types::PublishRequest`] | [`types::Published`] |
//! | GET | `/v1/subscribe` | `?topic=T[&filter=EXPR][&expire=SECS]` | a stream of JSON lines, each a [`types::StreamItem`] |
//! | GET | `/v1/topics` | | `[`[`types::TopicInfo`]`]` |
//! | GET | `/v1/ring` | | [`types::RingInfo`] |
//! | POST | `/v1/values` | [`types::SetValue`] | `{}` |
//! | POST | `/v1/query` | [`types::QueryRequest`] | [`types::QueryResult`] |
//! | GET | `/metrics` | | Prometheus text format |
//!
//! Errors are `{"error": "..."}` with status 400 (bad input), 503 (the node is stopping) or
//! 504 (a query did not finish in time).

pub mod server;
pub mod types;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::filter::Filter;
use types::*;

/// A reply channel.
pub type Reply<T> = oneshot::Sender<T>;

/// What the API asks of the node actor.
#[derive(Debug)]
pub enum Command {
    /// Node status.
    Status(Reply<Status>),
    /// The member table.
    Members(Reply<Vec<Member>>),
    /// Publish a message.
    Publish(PublishRequest, Reply<Result<Published, String>>),
    /// Open a subscription; items go to the sender until it is dropped or the expiry passes.
    Subscribe {
        /// The topic.
        topic: String,
        /// Only messages whose headers match.
        filter: Option<Filter>,
        /// Close the subscription after this long.
        expire: Option<Duration>,
        /// Where deliveries and gaps go.
        sink: mpsc::Sender<StreamItem>,
        /// Accepted, or why not.
        reply: Reply<Result<(), String>>,
    },
    /// Topics this node takes part in.
    Topics(Reply<Vec<TopicInfo>>),
    /// Ring neighbourhood.
    Ring(Reply<RingInfo>),
    /// Set this node's value of an attribute.
    SetValue(SetValue, Reply<Result<(), String>>),
    /// Run an aggregation query; the reply comes when it converges.
    Query(QueryRequest, Reply<Result<QueryResult, String>>),
    /// Prometheus text of the node's metrics.
    Metrics(Reply<String>),
}
