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
use std::collections::BTreeMap;

use hearsay_protocols::tags::TagScope;
use hearsay_protocols::{NodeId, Seq};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::api::types::{DurableInfo, Event, Member, QueryResult, RingInfo, Status, StreamItem, TopicInfo};
use crate::engine::{CommandError, SubscribeFrom};
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

/// Where a subscription starts (`--from`, `&from=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartAt {
    /// What this node delivers from now on: the default of a non-durable subscription, and a
    /// new durable one's cursors start at the topic's current heads.
    #[default]
    New,
    /// Everything retained: the local store from its oldest message of the topic, and the
    /// topic's history from its members when this node was not subscribed to it yet.
    All,
    /// As [`StartAt::All`], passing over messages published before this time (µs since the
    /// UNIX epoch, compared with each message's publish time on its origin's clock).
    Time(u64),
}

impl StartAt {
    /// Where the Engine starts the topic's streams if this is its first local subscription.
    pub fn engine(self) -> SubscribeFrom {
        match self {
            StartAt::New => SubscribeFrom::New,
            StartAt::All | StartAt::Time(_) => SubscribeFrom::All,
        }
    }

    /// The publish time before which messages are passed over: `Some` for a start that wants
    /// everything retained (`all` is the UNIX epoch).
    pub fn since(self) -> Option<u64> {
        match self {
            StartAt::New => None,
            StartAt::All => Some(0),
            StartAt::Time(t) => Some(t),
        }
    }
}

/// A `from` that is neither `new`, `all` nor an RFC 3339 time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a start: new, all, or an RFC 3339 time such as 2025-01-31T08:00:00Z")]
pub struct StartAtError(pub String);

impl std::str::FromStr for StartAt {
    type Err = StartAtError;

    fn from_str(s: &str) -> Result<Self, StartAtError> {
        match s.trim() {
            "new" => Ok(StartAt::New),
            "all" => Ok(StartAt::All),
            t => {
                let bad = || StartAtError(s.to_string());
                let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| bad())?;
                let micros = at.unix_timestamp_nanos() / 1000;
                u64::try_from(micros).map(StartAt::Time).map_err(|_| bad())
            }
        }
    }
}

/// The RFC 3339 text of a time in µs since the UNIX epoch (UTC).
pub fn rfc3339(micros: u64) -> String {
    let nanos = i128::from(micros) * 1000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{micros} µs after the UNIX epoch"))
}

/// Longest durable subscription name, in bytes.
pub const MAX_DURABLE_NAME: usize = 128;

/// The name of a durable subscription: 1 to [`MAX_DURABLE_NAME`] bytes of ASCII letters,
/// digits, `.`, `_` and `-` (it goes in URLs and file-like listings unescaped).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DurableName(String);

/// A durable subscription name that breaks the rule of [`DurableName`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a durable subscription name: 1 to {MAX_DURABLE_NAME} bytes of letters, digits, `.`, `_` and `-`"
)]
pub struct DurableNameError(pub String);

impl DurableName {
    /// Check `name`.
    pub fn new(name: impl Into<String>) -> Result<DurableName, DurableNameError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= MAX_DURABLE_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok { Ok(DurableName(name)) } else { Err(DurableNameError(name)) }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DurableName {
    type Error = DurableNameError;

    fn try_from(name: String) -> Result<Self, DurableNameError> {
        DurableName::new(name)
    }
}

impl std::str::FromStr for DurableName {
    type Err = DurableNameError;

    fn from_str(name: &str) -> Result<Self, DurableNameError> {
        DurableName::new(name)
    }
}

impl From<DurableName> for String {
    fn from(name: DurableName) -> String {
        name.0
    }
}

impl std::fmt::Display for DurableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a durable subscription operation was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// No durable subscription has this name.
    #[error("no durable subscription named `{0}`")]
    Unknown(DurableName),
    /// Another client is connected to it.
    #[error(
        "durable subscription `{0}` already has a client (one at a time; it is free again as soon as that \
         client disconnects)"
    )]
    InUse(DurableName),
    /// It exists for another topic.
    #[error("durable subscription `{name}` follows topic `{topic}`, not `{asked}`")]
    OtherTopic {
        /// Its name.
        name: DurableName,
        /// The topic it follows.
        topic: TopicName,
        /// The topic asked for.
        asked: TopicName,
    },
    /// This agent has no store to keep cursors in.
    #[error("durable subscriptions need the agent's store (this agent runs without a data dir)")]
    NoStore,
    /// The store cannot keep it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a subscription was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The Engine refused it (too many topics, the node is leaving).
    #[error(transparent)]
    Engine(#[from] CommandError),
    /// The durable subscription cannot be had.
    #[error(transparent)]
    Durable(#[from] DurableError),
}

/// How a subscription behaves; the default is a non-durable one from now on, unfiltered,
/// without expiry.
#[derive(Clone, Debug, Default)]
pub struct SubscribeOptions {
    /// Only messages whose headers match.
    pub filter: Option<Filter>,
    /// Close the subscription after this long.
    pub expire: Option<Duration>,
    /// Where it starts (for an existing durable subscription: ignored, it resumes after its
    /// cursors).
    pub from: StartAt,
    /// Make it durable under this name: its cursors are kept, acknowledged with
    /// [`Command::Ack`], and a client that comes back resumes after them.
    pub durable: Option<DurableName>,
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
        /// Filter, expiry, start, durability.
        options: SubscribeOptions,
        /// Where deliveries and gaps go. A non-durable subscription whose sink is full when an
        /// item comes is closed (the subscriber did not keep up); a durable one is paused and
        /// resumes from the store once its client reads again.
        sink: mpsc::Sender<StreamItem>,
        /// Accepted, or why not.
        reply: Reply<Result<(), SubscribeError>>,
    },
    /// Acknowledge messages of a durable subscription: per origin, everything up to the seq
    /// given has been handled (cursors never go backwards).
    Ack {
        /// The durable subscription.
        durable: DurableName,
        /// (origin, seq) pairs.
        acks: Vec<(NodeId, Seq)>,
        /// Taken (queued for the store), or why not.
        reply: Reply<Result<(), DurableError>>,
    },
    /// The durable subscriptions and their cursors.
    Durables(Reply<Vec<DurableInfo>>),
    /// Forget a durable subscription (its client, if any, is closed).
    DeleteDurable {
        /// Its name.
        name: DurableName,
        /// Done, or why not.
        reply: Reply<Result<(), DurableError>>,
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
