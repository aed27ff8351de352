//! The JSON shapes of the local HTTP API, shared by the server and the CLI. Inputs are checked
//! while they are parsed: a topic is a [`TopicName`], a query's function a [`Func`].

use hearsay_protocols::NodeId;
use hearsay_protocols::aggregate::Func;
use hearsay_protocols::pbcast::MsgId;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::TopicName;

/// A NodeId as the API shows it: lower-case hex.
pub fn hex(id: &NodeId) -> String {
    id.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A NodeId from the API's lower-case (or upper-case) hex: 64 hex digits.
pub fn parse_hex(text: &str) -> Option<NodeId> {
    let t = text.as_bytes();
    if t.len() != 64 {
        return None;
    }
    let mut b = [0u8; 32];
    for (i, pair) in t.chunks_exact(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok()?;
        b[i] = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(NodeId::from_bytes(b))
}

/// A member as `GET /v1/members` lists it (and `hearsay members --json` prints it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name (`--name`).
    pub name: String,
    /// Its UDP address.
    pub addr: String,
    /// alive, suspect, dead or left.
    pub state: String,
    /// Its incarnation number.
    pub incarnation: u64,
    /// Its NodeId (public key, hex).
    pub id: String,
    /// Its position on the ring (hex).
    pub ring_id: String,
    /// The tags it advertises (`hearsay agent --tag KEY=VALUE`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `POST /v1/keys/{install,use,remove}` body: the secret (install), or the key's fingerprint
/// (use, remove; the secret does too).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyOpRequest {
    /// The secret, 64 hex digits (as in a `hearsay keygen` file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The key's fingerprint, 16 hex digits (as `hearsay keys list` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// `POST /v1/publish` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The topic.
    pub topic: TopicName,
    /// The body as UTF-8 text...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// ...or as base64 (standard alphabet) for binary bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
    /// Headers for subscription filters.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// `POST /v1/publish` reply: the message id, and who is known to receive it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The topic.
    pub topic: String,
    /// The publishing node (hex NodeId).
    pub origin: String,
    /// Its sequence number in (origin, topic).
    pub seq: u64,
    /// Subscribers of the topic the publishing node knew of when it published: its own
    /// subscriptions plus the other members advertising the topic (membership spreads by
    /// gossip, so one that subscribed a moment ago may be missing).
    #[serde(default)]
    pub subscribers: usize,
    /// Set when `subscribers` is 0: a sentence saying that nobody is known to receive the
    /// message. Not an error: the message was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl Published {
    /// The reply for message `id` on `topic`, published with `subscribers` known.
    pub fn new(topic: &str, id: &MsgId, subscribers: usize) -> Published {
        Published {
            topic: topic.to_string(),
            origin: hex(&id.origin),
            seq: id.seq,
            subscribers,
            warning: (subscribers == 0).then(|| no_subscriber_warning(topic)),
        }
    }
}

/// What a publish on a topic without a known subscriber is told.
pub fn no_subscriber_warning(topic: &str) -> String {
    format!(
        "no subscriber known for topic `{topic}`: no node (this one included) advertises a \
         subscription to it, so nobody receives this message now (a subscription made in the \
         last few seconds may not have reached this node yet)"
    )
}

/// One line of a subscription stream: a message or a gap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamItem {
    /// A gap notice: these seqs of this origin will never be delivered.
    Gap {
        /// The gap.
        gap: Gap,
    },
    /// The agent ended the subscription (expiry, a consumer that fell behind, shutdown); the
    /// stream ends after this line.
    Closed {
        /// Why.
        closed: Closed,
    },
    /// A delivered message.
    Message(Delivery),
}

/// A delivered message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The topic.
    pub topic: String,
    /// The publishing node (hex NodeId).
    pub origin: String,
    /// Sequence number in (origin, topic).
    pub seq: u64,
    /// The body, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The body in base64, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
    /// The message's headers.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Messages that can no longer be had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The topic.
    pub topic: String,
    /// The publishing node (hex NodeId).
    pub origin: String,
    /// First missing seq.
    pub from_seq: u64,
    /// Last missing seq (inclusive).
    pub to_seq: u64,
}

/// Why a subscription ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// A sentence.
    pub reason: String,
}

/// `POST /v1/values` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetValue {
    /// The attribute name.
    pub name: String,
    /// This node's value (finite).
    pub value: f64,
}

/// `POST /v1/query` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRequest {
    /// avg, sum, count, min or max.
    #[serde(rename = "fn")]
    pub func: Func,
    /// The attribute name.
    pub name: String,
    /// Only members whose tags match count: `KEY=PATTERN` terms, every one must match (the
    /// pattern is an anchored regex); empty or absent: every member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `POST /v1/query` reply (and `hearsay query --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    /// The function.
    #[serde(rename = "fn")]
    pub func: Func,
    /// The attribute.
    pub name: String,
    /// The estimate; null when no node has the attribute.
    pub value: Option<f64>,
    /// Rounds until the querier's estimate settled.
    pub rounds: u32,
    /// Members in the querier's view when it answered.
    pub nodes: usize,
    /// False when the round cap was hit first.
    pub converged: bool,
}

/// An error reply: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: String,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This node's name.
    pub name: String,
    /// Its NodeId (hex).
    pub id: String,
    /// Its UDP address.
    pub addr: String,
    /// Members alive or suspect, self included.
    pub members: usize,
    /// Seconds since start.
    pub uptime_s: f64,
}

/// A topic this node takes part in (`GET /v1/topics`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// The topic name (or its id in hex when this node only forwards it).
    pub topic: String,
    /// The topic id (hex).
    pub topic_id: String,
    /// Local subscriptions.
    pub subscribers: usize,
    /// Other nodes this node knows subscribe to the topic (from the member table; 0 where it
    /// only forwards): whom pbcast repair gossips with.
    pub members: usize,
    /// root, forwarder or member (a member may also forward).
    pub role: String,
    /// Tree parent (hex NodeId), none at the root or while re-joining.
    pub parent: Option<String>,
    /// Tree children (hex NodeIds).
    pub children: Vec<String>,
    /// Hops to the root, when known.
    pub depth: Option<usize>,
}

/// A node on the ring (`GET /v1/ring`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingPeer {
    /// Its NodeId (hex).
    pub id: String,
    /// Its ring position (hex).
    pub ring_id: String,
}

/// This node's ring neighbourhood (`GET /v1/ring`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingInfo {
    /// This node.
    pub me: RingPeer,
    /// Its predecessor, if known.
    pub predecessor: Option<RingPeer>,
    /// Its successor list, nearest first.
    pub successors: Vec<RingPeer>,
    /// Distinct finger targets, nearest first.
    pub fingers: Vec<RingPeer>,
}

/// One stream's position: an acknowledgement, or a durable subscription's cursor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The stream's origin (hex).
    pub origin: String,
    /// Its last seq acknowledged: everything at or below it was handled (or announced as a
    /// gap).
    pub seq: u64,
}

/// `POST /v1/ack` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRequest {
    /// The durable subscription's name.
    pub durable: String,
    /// Per origin, the last seq handled (cumulative: it covers every earlier seq of that
    /// origin).
    pub acks: Vec<Cursor>,
}

/// A durable subscription (`GET /v1/durable`, `hearsay durable list --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableInfo {
    /// Its name.
    pub name: String,
    /// The topic it follows.
    pub topic: String,
    /// A client is connected to it now.
    pub connected: bool,
    /// Created `--from TIME` (or `all`: the UNIX epoch): messages published before this RFC
    /// 3339 time are passed over. Absent for one created from `new`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Per origin, the last seq acknowledged.
    pub cursors: Vec<Cursor>,
}

/// `GET`/`POST /v1/test/control` (only with `hearsay agent --test-control`): the faults the
/// agent injects into its own outgoing UDP datagrams, and the API's query timeout. A POST
/// changes the fields it gives and leaves the others; both reply with every field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestControl {
    /// Addresses sent nothing at all (a cut link; `[]` heals). Cut both ends for a symmetric
    /// partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Vec<std::net::SocketAddr>>,
    /// Probability of dropping each outgoing datagram, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Delay added to every outgoing datagram, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// How long `POST /v1/query` waits before answering 504, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_timeout_ms: Option<u64>,
}

/// `POST /v1/tags` body (and `hearsay tags set|delete`): tags to set (added or replaced) and
/// keys to delete, applied together; the reply is the node's tags after.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TagsRequest {
    /// KEY to VALUE.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys to remove.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// One event of `GET /v1/events` (and `hearsay monitor --json`, and an event handler's stdin).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// This agent's count of events, from 1 (a gap in it: events the reader missed).
    pub seq: u64,
    /// `member-join`, `member-leave`, `member-failed`, `member-suspect`, `member-alive`,
    /// `member-update`, `tree-attached`, `tree-detached`, `tree-root`; `events-dropped` when
    /// the reader fell behind.
    pub event: String,
    /// When, in milliseconds since the Unix epoch (this agent's clock).
    pub time_ms: u64,
    /// The member (member events), as it is after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
    /// The topic (tree events): its name, or its id in hex when unknown here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The new parent (`tree-attached`), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Why (`tree-detached`): parent-timeout, parent-down, parent-left, cycle, root-moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Events this reader missed (`events-dropped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}
