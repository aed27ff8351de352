//! What the actor accepts: one closed enum of commands, each with its reply channel.
//!
//! Inputs are parsed at the edge (the HTTP API, the CLI, an embedder) into checked types: a
//! [`TopicName`], an encoded [`AppMessage`](crate::message::AppMessage), a [`Func`], a parsed
//! [`Filter`]. What the Engine refuses comes back as its typed [`CommandError`]; the API maps
//! it to an HTTP status in one place ([`ApiError`](crate::api::error::ApiError)). A dropped
//! reply means the agent is stopping.

use std::time::Duration;

use bytes::Bytes;
use hearsay_protocols::aggregate::Func;
use hearsay_protocols::pbcast::MsgId;
use hearsay_protocols::tags::TagScope;
use std::collections::BTreeMap;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::api::types::{Event, Member, QueryResult, RingInfo, Status, StreamItem, TopicInfo};
use crate::engine::CommandError;
use crate::filter::Filter;
use crate::message::TopicName;
use crate::store::StoreError;

/// A reply channel.
pub type Reply<T> = oneshot::Sender<T>;

/// Why a publish was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The Engine refused it (payload too large, the node is leaving).
    #[error(transparent)]
    Engine(#[from] CommandError),
    /// The store cannot keep it (full disk, I/O error): nothing is published that cannot be
    /// kept.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the API (or an embedder) asks of the agent's actor.
#[derive(Debug)]
pub enum Command {
    /// Node status.
    Status(Reply<Status>),
    /// The member table.
    Members(Reply<Vec<Member>>),
    /// Publish a message; the reply is its id.
    Publish {
        /// The topic.
        topic: TopicName,
        /// An encoded [`AppMessage`](crate::message::AppMessage) (encoding checks its bounds).
        payload: Bytes,
        /// Its id once its write is durable (with a store), or why not.
        reply: Reply<Result<MsgId, PublishError>>,
    },
    /// Open a subscription; items go to the sink until it is dropped or the expiry passes.
    Subscribe {
        /// The topic.
        topic: TopicName,
        /// Only messages whose headers match.
        filter: Option<Filter>,
        /// Close the subscription after this long.
        expire: Option<Duration>,
        /// Where deliveries and gaps go. A sink that is full when an item comes is closed
        /// (the subscriber did not keep up).
        sink: mpsc::Sender<StreamItem>,
        /// Accepted, or why not.
        reply: Reply<Result<(), CommandError>>,
    },
    /// Subscribers of a topic this node knows of: its own open subscriptions plus the other
    /// members that advertise the topic in their membership meta (one each, however many
    /// subscriptions they hold). Membership spreads by gossip, so a subscriber that joined a
    /// moment ago may not be counted yet. A publish reply carries it (0: nobody receives it).
    KnownSubscribers {
        /// The topic.
        topic: TopicName,
        /// The count.
        reply: Reply<usize>,
    },
    /// Topics this node takes part in.
    Topics(Reply<Vec<TopicInfo>>),
    /// Ring neighbourhood.
    Ring(Reply<RingInfo>),
    /// Set this node's value of an attribute.
    SetValue {
        /// The attribute.
        name: String,
        /// Its value here.
        value: f64,
        /// Done, or why not.
        reply: Reply<Result<(), CommandError>>,
    },
    /// Run an aggregation query; the reply comes when the querier's estimate settles (or the
    /// round cap is hit: `converged` is false then).
    Query {
        /// The function.
        func: Func,
        /// The attribute.
        name: String,
        /// Only members whose tags match contribute (empty: all).
        scope: TagScope,
        /// The answer, or why the query could not start.
        reply: Reply<Result<QueryResult, CommandError>>,
    },
    /// Prometheus text of the node's metrics.
    Metrics(Reply<String>),
    /// Change this node's tags: `set` added or replaced, `delete` removed, at once; the reply
    /// is the tags after, or why the change was refused (nothing changed then).
    SetTags {
        /// KEY to VALUE.
        set: BTreeMap<String, String>,
        /// Keys to remove.
        delete: Vec<String>,
        /// The tags now.
        reply: Reply<Result<BTreeMap<String, String>, CommandError>>,
    },
    /// A reader of the event stream, from the next event on (see
    /// [`events`](super::events)).
    Events(Reply<broadcast::Receiver<Event>>),
}
