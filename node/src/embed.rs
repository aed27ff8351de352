//! Running an agent inside another program, without HTTP: a thin facade over
//! [`agent::spawn`], [`AgentHandle`] and [`Command`].
//!
//! An embedded agent is the very agent `hearsay agent` runs (QUIC with mutual TLS under the
//! cluster secret, the same Engine, presets and store); the program talks to its actor through
//! channels instead of the local HTTP API. It can still serve that API too
//! ([`Builder::api`]), so the CLI keeps working against it.
//!
//! | step | call |
//! |---|---|
//! | build | [`Agent::builder`] (or [`Agent::from_config`] for a `hearsay.toml`), then [`Builder::secret`] or [`Builder::secret_file`], [`Builder::bind`], [`Builder::join`], [`Builder::data_dir`] (identity and durable store), ... |
//! | start | [`Builder::start`]: binds, joins in the background, returns a running [`Agent`] |
//! | publish | [`Agent::publish`], [`Agent::publish_message`] (with headers): the message id and the subscribers known |
//! | subscribe | [`Agent::subscribe`], [`Agent::subscribe_with`]: a [`Subscription`], an async [`Stream`] of [`Item`]s (messages, gaps, and a last `Closed`) |
//! | members | [`Agent::members`], [`Agent::status`] |
//! | query | [`Agent::set_value`], [`Agent::query`] |
//! | events | [`Agent::events`]: member changes as a [`Stream`] of [`Event`]s |
//! | shutdown | [`Agent::shutdown`] (leave gracefully); dropping the [`Agent`] stops it as a crash would |
//!
//! Every call needs a tokio runtime (multi-threaded or not); an agent runs on the runtime that
//! started it.
//!
//! ```
//! use hearsay::embed::{Agent, ClusterSecret, Item};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One secret per cluster (`hearsay keygen` writes one to a file: `.secret_file(path)`).
//! let secret = ClusterSecret::generate()?;
//! let agent = Agent::builder("solo").secret(secret).start().await?;
//!
//! let mut news = agent.subscribe("news").await?;
//! let sent = agent.publish("news", "hello").await?;
//! assert_eq!(sent.subscribers, 1, "this agent's own subscription");
//!
//! match news.next().await {
//!     Some(Item::Message(m)) => assert_eq!(&m.body[..], b"hello"),
//!     other => panic!("{other:?}"),
//! }
//! agent.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! `node/examples/embed.rs` runs three agents in one program that form a cluster and exchange
//! messages through this API (`cargo run --example embed`).
//!
//! # What comes later
//!
//! Durable subscriptions are options of [`SubscribeOptions`] ([`SubscribeOptions::durable`],
//! [`SubscribeOptions::from`]; its fields are private, set by methods, so options can be added
//! without breaking callers), acknowledged with [`Agent::ack`]; the event stream (member tags,
//! tree changes) adds variants to [`Event`] and [`MemberChange`] (both `#[non_exhaustive]`).
//! [`Agent::events`] reads the agent's own event stream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
pub use futures_core::Stream;
pub use hearsay_protocols::NodeId;
pub use hearsay_protocols::aggregate::Func;
pub use hearsay_protocols::pbcast::MsgId;
pub use hearsay_protocols::tags::{ScopeError, TagScope};
use tokio::sync::mpsc;

use crate::agent::{
    self, AgentError, AgentHandle, AgentOptions, Command, DurableName, IdentitySource, StoreOptions,
    SubscribeError,
};
pub use crate::agent::{DurableError, DurableNameError, StartAt};
use crate::api::types::{self, StreamItem};
pub use crate::api::types::{Member, QueryResult, Status, TopicInfo};
pub use crate::config::{AgentConfig, Preset};
use crate::engine::CommandError;
use crate::filter::{Filter, FilterError};
pub use crate::message::AppMessage;
use crate::message::{MessageError, TopicName};
pub use crate::transport::identity::ClusterSecret;
use crate::transport::identity::IdentityError;

/// Items a subscription holds before its reader counts as not keeping up (the HTTP API's
/// [`SUBSCRIPTION_QUEUE`](crate::api::server::SUBSCRIPTION_QUEUE)).
pub const DEFAULT_QUEUE: usize = crate::api::server::SUBSCRIPTION_QUEUE;

/// Where the cluster secret comes from.
#[derive(Clone, Debug)]
enum Secret {
    Given(ClusterSecret),
    File(PathBuf),
}

/// Settings of an agent to start: [`Agent::builder`], then [`Builder::start`].
///
/// Defaults: bound to `127.0.0.1:0` (a free loopback port: set [`Builder::bind`] to reach
/// other hosts), no seed (a new cluster), a fresh identity in memory and no store (set
/// [`Builder::data_dir`] to keep both), the `lan` preset, no HTTP API, messages up to
/// [`MAX_BODY`](crate::message::MAX_BODY). A cluster secret is required.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `start`"]
pub struct Builder {
    opts: AgentOptions,
    secret: Option<Secret>,
    data_dir: Option<PathBuf>,
    sync: crate::store::Sync,
    retention: crate::store::Retention,
}

impl Builder {
    /// The UDP address QUIC binds (port 0: any free port; [`Agent::addr`] tells which).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.opts.bind = addr;
        self
    }

    /// The address other nodes dial (default: the bound address; see the README on NAT).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.opts.advertise = Some(addr);
        self
    }

    /// Join the cluster through this member's address (repeat for several seeds). Without
    /// one the agent starts a new cluster. A join that fails is retried with backoff.
    pub fn join(mut self, seed: SocketAddr) -> Self {
        self.opts.join.push(seed);
        self
    }

    /// The cluster secret (every member needs the same; [`ClusterSecret::generate`] makes one).
    pub fn secret(mut self, secret: ClusterSecret) -> Self {
        self.secret = Some(Secret::Given(secret));
        self
    }

    /// Read the cluster secret from this file (made by `hearsay keygen`) at [`Builder::start`].
    pub fn secret_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.secret = Some(Secret::File(path.into()));
        self
    }

    /// Keep the node's key pair (its identity, `node.key`) and the durable store in this
    /// directory, as `hearsay agent --data-dir` does: the node keeps its NodeId and its
    /// streams across restarts.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// When the store syncs writes (with [`Builder::data_dir`]; default `batch`).
    pub fn sync(mut self, sync: crate::store::Sync) -> Self {
        self.sync = sync;
        self
    }

    /// What the store keeps per topic (with [`Builder::data_dir`]).
    pub fn retention(mut self, retention: crate::store::Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The timing preset (default `lan`).
    pub fn preset(mut self, preset: Preset) -> Self {
        self.opts.preset = preset;
        self
    }

    /// Also serve the local HTTP API (and `/metrics`) on this TCP address, so the CLI and
    /// Prometheus can reach this agent. Beyond loopback it needs [`Builder::api_token`] (the
    /// agent refuses to start otherwise).
    pub fn api(mut self, addr: SocketAddr) -> Self {
        self.opts.api = Some(addr);
        self
    }

    /// Every request to the HTTP API must carry `Authorization: Bearer token`.
    pub fn api_token(mut self, token: impl Into<String>) -> Self {
        self.opts.api_token = Some(token.into());
        self
    }

    /// The largest message body a publish may carry, in bytes: 1 to
    /// [`MAX_BODY_LIMIT`](crate::message::MAX_BODY_LIMIT) (checked at [`Builder::start`]).
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.opts.max_message_bytes = max;
        self
    }

    /// The [`AgentOptions`] this builder starts, for what the facade does not cover. The
    /// secret is loaded here (from its file, if given so).
    pub fn into_options(self) -> Result<AgentOptions, StartError> {
        let secret = match self.secret {
            Some(Secret::Given(s)) => s,
            Some(Secret::File(path)) => ClusterSecret::load(&path)?,
            None => return Err(StartError::NoSecret),
        };
        let mut opts = self.opts;
        opts.secret = secret;
        if let Some(dir) = self.data_dir {
            opts.identity = IdentitySource::DataDir(dir.clone());
            opts.store = Some(StoreOptions { dir, sync: self.sync, retention: self.retention });
        }
        Ok(opts)
    }

    /// Start the agent: load the secret, open the store, bind, and join in the background
    /// (watch [`Agent::events`] or [`Agent::members`] to see the cluster form).
    pub async fn start(self) -> Result<Agent, StartError> {
        let opts = self.into_options()?;
        let max_message_bytes = opts.max_message_bytes;
        let handle = agent::spawn(opts).await?;
        Ok(Agent { handle, max_message_bytes })
    }
}

/// Why an agent did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Neither [`Builder::secret`] nor [`Builder::secret_file`] was given.
    #[error("no cluster secret: call .secret(..) or .secret_file(..) (make one with `hearsay keygen`)")]
    NoSecret,
    /// The secret file could not be read.
    #[error(transparent)]
    Secret(#[from] IdentityError),
    /// The agent refused its settings, or could not bind or open its store.
    #[error(transparent)]
    Agent(#[from] agent::StartError),
}

/// Why a call to a running agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic name, header or body that breaks a bound (the body's is
    /// [`Builder::max_message_bytes`]).
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A subscription filter that does not parse.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The node refused the command (too many topics subscribed, a bad attribute name, too
    /// many queries running, leaving).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// The publish was refused (the Engine's limit) or cannot be kept (the store failed).
    #[error(transparent)]
    Publish(#[from] agent::PublishError),
    /// A durable subscription refused: a client has it already, it follows another topic,
    /// the agent has no store, no such name (an ack), or the store failed.
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// A durable subscription name that breaks the naming rule.
    #[error(transparent)]
    DurableName(#[from] DurableNameError),
    /// The agent is leaving or gone: it takes no more commands.
    #[error("the agent is stopping")]
    Stopping,
    /// The agent ended with an error (every seed refused its certificate: a wrong secret).
    #[error(transparent)]
    Ended(#[from] AgentError),
}

impl From<SubscribeError> for Error {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::Engine(e) => Error::Refused(e),
            SubscribeError::Durable(e) => Error::Durable(e),
        }
    }
}

impl From<agent::Stopping> for Error {
    fn from(_: agent::Stopping) -> Self {
        Error::Stopping
    }
}

/// A running agent. Dropping it stops the agent at once, as [`Agent::crash`] does (no
/// goodbye: the others detect it as failed); call [`Agent::shutdown`] to leave gracefully.
#[derive(Debug)]
pub struct Agent {
    handle: AgentHandle,
    max_message_bytes: usize,
}

/// A published message's id, and how many subscribers the agent knew of.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The message id: (origin, topic, seq).
    pub id: MsgId,
    /// Subscribers of the topic this agent knew of when it published: its own subscriptions
    /// plus the other members advertising the topic (membership spreads by gossip, so one that
    /// subscribed a moment ago may be missing). 0: nobody is known to receive it.
    pub subscribers: usize,
}

impl Published {
    /// The HTTP API's warning when no subscriber was known, `None` otherwise.
    pub fn warning(&self, topic: &str) -> Option<String> {
        (self.subscribers == 0).then(|| types::no_subscriber_warning(topic))
    }
}

impl Agent {
    /// A builder for an agent named `name` (its name in member lists).
    pub fn builder(name: impl Into<String>) -> Builder {
        let bind = SocketAddr::from(([127, 0, 0, 1], 0));
        // A placeholder: `into_options` puts the secret given (or read) in its place.
        let opts = AgentOptions::new(&name.into(), bind, ClusterSecret::from_bytes([0; 32]));
        Builder {
            opts,
            secret: None,
            data_dir: None,
            sync: crate::store::Sync::default(),
            retention: crate::store::Retention::default(),
        }
    }

    /// A builder with the settings of a resolved config file (`hearsay.toml`, read with
    /// [`FileConfig::load`](crate::config::FileConfig::load) and
    /// [`resolve`](crate::config::FileConfig::resolve)): name, bind, advertise, join, secret
    /// file, data dir (identity and store, with its sync and retention), preset and maximum
    /// message size. The HTTP API is not served unless [`Builder::api`] asks for it.
    pub fn from_config(config: &AgentConfig) -> Builder {
        let mut b = Agent::builder(&config.name)
            .bind(config.bind)
            .secret_file(&config.secret_file)
            .data_dir(&config.data_dir)
            .sync(config.sync)
            .retention(config.retention)
            .preset(config.preset)
            .max_message_bytes(config.max_message_bytes);
        if let Some(a) = config.advertise {
            b = b.advertise(a);
        }
        for seed in &config.join {
            b = b.join(*seed);
        }
        b
    }

    /// Its NodeId (the public key of its identity).
    pub fn id(&self) -> NodeId {
        self.handle.id
    }

    /// The UDP address it is bound to: what other agents [`Builder::join`] through.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// Its HTTP API address, if it serves one.
    pub fn api(&self) -> Option<SocketAddr> {
        self.handle.api
    }

    /// The [`AgentHandle`] underneath, for [`Command`]s the facade does not wrap.
    pub fn handle(&self) -> &AgentHandle {
        &self.handle
    }

    /// Publish `body` on `topic` (topics starting with `gossip/` spread by rumor mongering,
    /// others down the topic's tree). Returns once the message is published (with a store:
    /// once it is durable).
    pub async fn publish(&self, topic: &str, body: impl Into<Bytes>) -> Result<Published, Error> {
        self.publish_message(topic, AppMessage::new(body)).await
    }

    /// Publish a message with headers (which subscription filters read).
    pub async fn publish_message(&self, topic: &str, message: AppMessage) -> Result<Published, Error> {
        let topic = TopicName::new(topic)?;
        let payload = message.encode_within(self.max_message_bytes)?;
        let name = topic.clone();
        let id = self.handle.ask(|reply| Command::Publish { topic, payload, reply }).await??;
        let subscribers = self.handle.ask(|reply| Command::KnownSubscribers { topic: name, reply }).await?;
        Ok(Published { id, subscribers })
    }

    /// Subscribers of `topic` this agent knows of (as [`Published::subscribers`] counts them),
    /// without publishing.
    pub async fn subscribers(&self, topic: &str) -> Result<usize, Error> {
        let topic = TopicName::new(topic)?;
        Ok(self.handle.ask(|reply| Command::KnownSubscribers { topic, reply }).await?)
    }

    /// Subscribe to `topic`: every message published on it from now on, and gap notices for
    /// those that can no longer be had.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, Error> {
        self.subscribe_with(topic, SubscribeOptions::default()).await
    }

    /// Subscribe with options (a filter, an expiry, a queue size, where it starts, a durable
    /// name).
    pub async fn subscribe_with(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let topic = TopicName::new(topic)?;
        let filter = options.filter.as_deref().map(Filter::parse).transpose()?;
        let durable = options.durable.as_deref().map(DurableName::new).transpose()?;
        let (sink, items) = mpsc::channel(options.queue.max(1) + 1);
        let name = topic.clone();
        let options = agent::SubscribeOptions { filter, expire: options.expire, from: options.from, durable };
        self.handle.ask(|reply| Command::Subscribe { topic: name, options, sink, reply }).await??;
        Ok(Subscription { topic, items })
    }

    /// Acknowledge, for the durable subscription `durable`, every message of `origin` up to
    /// `seq` (cumulative; a cursor never goes backwards): a client that comes back resumes
    /// after it. Acknowledge what has been handled, not what was merely received.
    pub async fn ack(&self, durable: &str, origin: NodeId, seq: u64) -> Result<(), Error> {
        let durable = DurableName::new(durable)?;
        let acks = vec![(origin, seq)];
        self.handle.ask(|reply| Command::Ack { durable, acks, reply }).await??;
        Ok(())
    }

    /// The member table, this agent included.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        Ok(self.handle.ask(Command::Members).await?)
    }

    /// Name, id, address, members alive or suspect, uptime.
    pub async fn status(&self) -> Result<Status, Error> {
        Ok(self.handle.ask(Command::Status).await?)
    }

    /// Topics this agent takes part in (tree role, parent, children, depth).
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, Error> {
        Ok(self.handle.ask(Command::Topics).await?)
    }

    /// Set this node's value of `attr` for aggregation queries.
    pub async fn set_value(&self, attr: &str, value: f64) -> Result<(), Error> {
        let name = attr.to_string();
        self.handle.ask(|reply| Command::SetValue { name, value, reply }).await??;
        Ok(())
    }

    /// Aggregate `attr` over the cluster by gossip; answers when the estimate settles or the
    /// round cap is hit (`converged` says which). No timeout of its own: wrap it in
    /// `tokio::time::timeout` (the HTTP API gives up after 60 s).
    pub async fn query(&self, func: Func, attr: &str) -> Result<QueryResult, Error> {
        let name = attr.to_string();
        Ok(self.handle.ask(|reply| Command::Query { func, name, scope: Default::default(), reply }).await??)
    }

    /// Aggregate `attr` over the members whose tags match `scope` only (each node decides from
    /// its own tags; see the README's "Tag-scoped queries"), e.g.
    /// `TagScope::parse(&["role=web"])?`. Otherwise as [`Agent::query`].
    pub async fn query_scoped(&self, func: Func, attr: &str, scope: TagScope) -> Result<QueryResult, Error> {
        let name = attr.to_string();
        Ok(self.handle.ask(|reply| Command::Query { func, name, scope, reply }).await??)
    }

    /// Change this agent's tags: `set` added or replaced, `delete` removed, at once (gossiped
    /// in its membership record). Returns the tags after; refused as a whole (with the limit
    /// in the error) when beyond 16 tags or 256 bytes of keys and values.
    pub async fn set_tags(
        &self,
        set: BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<BTreeMap<String, String>, Error> {
        let delete = delete.to_vec();
        Ok(self.handle.ask(|reply| Command::SetTags { set, delete, reply }).await??)
    }

    /// Events from now on, as a [`Stream`]: first one [`MemberChange::Join`] per live member
    /// already known (this agent included), then every member change and tree change as it
    /// happens: the agent's own event stream (`GET /v1/events`), so no change is missed unless
    /// the reader falls more than [`EVENTS_QUEUE`](crate::agent::events::EVENTS_QUEUE) events
    /// behind (then the oldest are skipped, with a warning logged). The stream ends when the
    /// agent stops.
    pub fn events(&self) -> Events {
        let (tx, rx) = mpsc::channel(256);
        let commands = self.handle.commands.clone();
        tokio::spawn(forward_events(commands, tx));
        Events { rx }
    }

    /// Leave the cluster gracefully (announce, flush the store) and wait until the agent ends.
    pub async fn shutdown(self) -> Result<(), Error> {
        Ok(self.handle.shutdown().await?)
    }

    /// Stop at once as a crash would: no goodbye (others detect it as failed).
    pub async fn crash(self) {
        self.handle.crash().await;
    }
}

/// Options of [`Agent::subscribe_with`].
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    filter: Option<String>,
    expire: Option<Duration>,
    queue: usize,
    from: StartAt,
    durable: Option<String>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            filter: None,
            expire: None,
            queue: DEFAULT_QUEUE,
            from: StartAt::default(),
            durable: None,
        }
    }
}

impl SubscribeOptions {
    /// Only messages whose headers match `expr`, e.g. `priority >= 3 && region == eu` (see the
    /// README on filters); parsed at subscribe time.
    pub fn filter(mut self, expr: impl Into<String>) -> Self {
        self.filter = Some(expr.into());
        self
    }

    /// End the subscription after this long (a last [`Item::Closed`] says so).
    pub fn expire(mut self, after: Duration) -> Self {
        self.expire = Some(after);
        self
    }

    /// Items held for a reader that is behind (default [`DEFAULT_QUEUE`], at least 1; one slot
    /// more is kept for the closing line). A reader that lets it fill is closed
    /// ([`Item::Closed`] says so): read steadily.
    pub fn queue(mut self, items: usize) -> Self {
        self.queue = items;
        self
    }

    /// Where it starts: new messages only (the default), everything the store retains, or
    /// from a publish time. A durable subscription that exists already ignores it and resumes
    /// after its cursors.
    pub fn from(mut self, start: StartAt) -> Self {
        self.from = start;
        self
    }

    /// Make it durable under `name` (the agent needs a data dir): its cursors are kept in the
    /// store, [`Agent::ack`] moves them, and a subscription under the same name after a crash
    /// of the reader or the agent resumes after them (at least once: a redelivered message
    /// carries the same origin and seq). A reader that falls behind is paused, not closed;
    /// only one reader at a time (a second is refused: [`DurableError::InUse`]).
    pub fn durable(mut self, name: impl Into<String>) -> Self {
        self.durable = Some(name.into());
        self
    }
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Item {
    /// A message, in order per publisher.
    Message(Message),
    /// Messages of one publisher that will never come (the publisher's history moved past
    /// them, or it is gone and nobody holds them): `from_seq..=to_seq`.
    Gap {
        /// The publisher's stream origin (as in [`MsgId::origin`]).
        origin: NodeId,
        /// First missing seq.
        from_seq: u64,
        /// Last missing seq.
        to_seq: u64,
    },
    /// The agent ended the subscription (expiry, a reader that did not keep up, shutdown);
    /// the stream ends after it.
    Closed {
        /// Why, in a sentence.
        reason: String,
    },
}

/// A delivered message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The topic.
    pub topic: TopicName,
    /// The publisher's stream origin (as in [`MsgId::origin`]).
    pub origin: NodeId,
    /// Its seq in (origin, topic), from 1.
    pub seq: u64,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
    /// Its body.
    pub body: Bytes,
}

/// An open subscription: a [`Stream`] of [`Item`]s ([`Subscription::next`] without a stream
/// library). Dropping it unsubscribes (within the agent's next housekeeping, 0.5 s).
#[derive(Debug)]
pub struct Subscription {
    topic: TopicName,
    items: mpsc::Receiver<StreamItem>,
}

impl Subscription {
    /// Its topic.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// The next item; `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<Item> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Subscription {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        this.items.poll_recv(cx).map(|o| o.map(|item| from_stream_item(&this.topic, item)))
    }
}

/// The agent renders each delivery once, in the HTTP API's shape, for all its local
/// subscribers; the facade turns it back into bytes and ids.
fn from_stream_item(topic: &TopicName, item: StreamItem) -> Item {
    match item {
        StreamItem::Message(d) => {
            let body = match (d.payload, d.payload_b64) {
                (Some(text), _) => Bytes::from(text.into_bytes()),
                (None, Some(b64)) => {
                    Bytes::from(base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default())
                }
                (None, None) => Bytes::new(),
            };
            Item::Message(Message {
                topic: topic.clone(),
                origin: node_id(&d.origin),
                seq: d.seq,
                headers: d.headers,
                body,
            })
        }
        StreamItem::Gap { gap } => {
            Item::Gap { origin: node_id(&gap.origin), from_seq: gap.from_seq, to_seq: gap.to_seq }
        }
        StreamItem::Closed { closed } => Item::Closed { reason: closed.reason },
    }
}

/// A NodeId from the API's lower-case hex (the agent wrote it: always 64 hex digits).
fn node_id(hex: &str) -> NodeId {
    let mut b = [0u8; 32];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = hex.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
    }
    NodeId::from_bytes(b)
}

/// Something that happened in the cluster, as this agent saw it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A member appeared or changed.
    Member {
        /// What happened.
        change: MemberChange,
        /// The member as it is now.
        member: Member,
    },
    /// This agent's place in a topic's tree changed.
    Tree {
        /// The topic's name (or its id in hex when unknown here).
        topic: String,
        /// How.
        change: TreeChange,
    },
}

/// How this agent's place in a topic's tree changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TreeChange {
    /// It got a parent.
    Attached {
        /// The parent.
        parent: NodeId,
    },
    /// It lost its parent (or its root role) and re-joins: `parent-timeout`, `parent-down`,
    /// `parent-left`, `cycle` or `root-moved`.
    Detached {
        /// Why.
        cause: String,
    },
    /// It is the topic's root.
    Root,
}

/// How a member changed (Serf's member events, plus SWIM's suspicion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberChange {
    /// Newly known (or already known when the stream opened).
    Join,
    /// Suspected of having failed (it may refute).
    Suspect,
    /// Alive again after a suspicion, a failure or a leave.
    Alive,
    /// Declared dead: it stopped answering.
    Fail,
    /// It left gracefully.
    Leave,
    /// Same state, new address, name or tags.
    Update,
}

/// The [`Stream`] of [`Agent::events`].
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the agent stopped.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// The embedding form of one event of the agent's stream (`None`: one it does not model).
fn from_api_event(e: types::Event) -> Option<Event> {
    let change = match e.event.as_str() {
        "member-join" => Some(MemberChange::Join),
        "member-suspect" => Some(MemberChange::Suspect),
        "member-alive" => Some(MemberChange::Alive),
        "member-failed" => Some(MemberChange::Fail),
        "member-leave" => Some(MemberChange::Leave),
        "member-update" => Some(MemberChange::Update),
        _ => None,
    };
    if let (Some(change), Some(member)) = (change, e.member) {
        return Some(Event::Member { change, member });
    }
    let topic = e.topic?;
    let change = match e.event.as_str() {
        "tree-attached" => TreeChange::Attached { parent: node_id(e.parent.as_deref().unwrap_or_default()) },
        "tree-root" => TreeChange::Root,
        "tree-detached" => TreeChange::Detached { cause: e.cause.unwrap_or_default() },
        _ => return None,
    };
    Some(Event::Tree { topic, change })
}

/// Forward the agent's event stream, after one `Join` per member already known, until the
/// agent or the reader goes away.
async fn forward_events(commands: mpsc::Sender<Command>, tx: mpsc::Sender<Event>) {
    // Open the stream before the snapshot, so nothing between them is lost.
    let (reply, answer) = tokio::sync::oneshot::channel();
    if commands.send(Command::Events(reply)).await.is_err() {
        return;
    }
    let Ok(mut stream) = answer.await else { return };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if commands.send(Command::Members(reply)).await.is_err() {
        return;
    }
    let Ok(members) = answer.await else { return };
    for member in members.into_iter().filter(|m| m.state == "alive" || m.state == "suspect") {
        if tx.send(Event::Member { change: MemberChange::Join, member }).await.is_err() {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            r = stream.recv() => r,
            () = tx.closed() => return,
        };
        let event = match next {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "embedded event reader fell behind");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if let Some(e) = from_api_event(event) {
            if tx.send(e).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(state: &str, incarnation: u64) -> Member {
        Member {
            name: "a".into(),
            addr: "127.0.0.1:1".into(),
            state: state.into(),
            incarnation,
            id: "00".repeat(32),
            ring_id: "0".repeat(16),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn member_changes_are_named_after_serfs_events() {
        let event = |name: &str| types::Event {
            seq: 1,
            event: name.into(),
            time_ms: 0,
            member: Some(member("alive", 1)),
            topic: None,
            parent: None,
            cause: None,
            dropped: None,
        };
        for (name, change) in [
            ("member-join", MemberChange::Join),
            ("member-suspect", MemberChange::Suspect),
            ("member-alive", MemberChange::Alive),
            ("member-failed", MemberChange::Fail),
            ("member-leave", MemberChange::Leave),
            ("member-update", MemberChange::Update),
        ] {
            assert_eq!(
                from_api_event(event(name)),
                Some(Event::Member { change, member: member("alive", 1) })
            );
        }
        let root = types::Event { member: None, topic: Some("chat".into()), ..event("tree-root") };
        assert_eq!(
            from_api_event(root),
            Some(Event::Tree { topic: "chat".into(), change: TreeChange::Root })
        );
        assert_eq!(from_api_event(event("events-dropped")), None);
    }

    #[test]
    fn a_config_file_builds_the_same_agent_the_daemon_would_run() {
        let dir = std::env::temp_dir().join(format!("hearsay-embed-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("cluster.key");
        ClusterSecret::generate().unwrap().write_new(&key).unwrap();
        let toml = format!(
            "name = \"app\"\nbind = \"127.0.0.1:7999\"\njoin = [\"127.0.0.1:7998\"]\n\
             secret_file = {key:?}\ndata_dir = {data:?}\nmax_message_bytes = 4096\npreset = \"wan\"\n",
            data = dir.join("data"),
        );
        let file: crate::config::FileConfig = toml::from_str(&toml).unwrap();
        let opts = Agent::from_config(&file.resolve().unwrap()).into_options().unwrap();
        assert_eq!((opts.name.as_str(), opts.bind.port(), opts.join.len()), ("app", 7999, 1));
        assert_eq!((opts.max_message_bytes, opts.preset, opts.api), (4096, Preset::Wan, None));
        assert!(matches!(&opts.identity, IdentitySource::DataDir(d) if *d == dir.join("data")));
        assert_eq!(opts.store.map(|s| s.dir), Some(dir.join("data")));
        let e = Agent::builder("x").into_options().unwrap_err();
        assert!(matches!(e, StartError::NoSecret), "{e}");
        let e = Agent::builder("x").secret_file(dir.join("missing.key")).into_options().unwrap_err();
        assert!(matches!(e, StartError::Secret(_)), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stream_items_come_back_as_bytes_and_ids() {
        let topic = TopicName::new("t").unwrap();
        let origin = "ab".repeat(32);
        let d = types::Delivery {
            topic: "t".into(),
            origin: origin.clone(),
            seq: 3,
            payload: None,
            payload_b64: Some("/wA=".into()),
            headers: BTreeMap::new(),
        };
        let Item::Message(m) = from_stream_item(&topic, StreamItem::Message(d)) else { panic!() };
        assert_eq!((&m.body[..], m.seq, m.origin), (&[0xff, 0x00][..], 3, NodeId::from_bytes([0xab; 32])));
        let gap = types::Gap { topic: "t".into(), origin, from_seq: 4, to_seq: 9 };
        let item = from_stream_item(&topic, StreamItem::Gap { gap });
        assert_eq!(item, Item::Gap { origin: NodeId::from_bytes([0xab; 32]), from_seq: 4, to_seq: 9 });
    }
}
