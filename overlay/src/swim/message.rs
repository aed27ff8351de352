//! SWIM's wire messages (PROTOCOLS.md §6.2) and what a member advertises: its address and
//! its meta (the topics it subscribes to, §8.9).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use hearsay_protocols::auth::{Authenticator, Signature};
use hearsay_protocols::tags::Tags;
use hearsay_protocols::wire::{Protocol, WireMessage};
use hearsay_protocols::{NodeId, TopicId};

/// A member's incarnation number: raised only by the member itself (§6.6).
pub type Incarnation = u64;

/// The most bytes an [`Addr`] may hold.
pub const ADDR_MAX: usize = 64;
/// The most topics a member may advertise in its [`Meta`] (§8.9).
pub const META_TOPICS_MAX: usize = 64;
/// The most updates one datagram may carry; more is malformed. A 1200-byte datagram holds
/// at most 18 (a `Suspect` or `Dead` is 66 bytes, a signed `Alive` with empty address and meta
/// 103).
pub const UPDATES_MAX: usize = 64;
/// The most member states one push-pull message may carry; more is malformed. What a node
/// merges of a well-formed one is capped lower, by `SwimConfig::push_pull_records_max` and
/// `push_pull_bytes_max`.
pub const STATES_MAX: usize = 1 << 17;
/// Incarnations at or above this are never adopted on another member's word: a node refutes
/// an accusation above its own incarnation by jumping past it (it may have restarted and
/// forgotten a higher one) only below this ceiling, so a forged `Suspect{X, u64::MAX}` cannot
/// make X's refutation saturate. Raises of 1 (refutations of accusations at or below the own
/// incarnation, meta changes) go on past it.
pub const INCARNATION_CEILING: Incarnation = 1 << 62;

/// Where a member can be reached: opaque bytes for the runtime (a socket address in the
/// daemon, see [`Addr::from_socket`]; empty in the simulator, which routes by [`NodeId`]).
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Addr(Bytes);

impl Addr {
    /// An address of at most [`ADDR_MAX`] bytes.
    pub fn new(bytes: Bytes) -> Option<Self> {
        (bytes.len() <= ADDR_MAX).then_some(Addr(bytes))
    }

    /// A socket address: the IP's 4 or 16 bytes, then the port, big-endian.
    pub fn from_socket(addr: SocketAddr) -> Self {
        let mut v = match addr.ip() {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        v.extend_from_slice(&addr.port().to_be_bytes());
        Addr(Bytes::from(v))
    }

    /// The socket address this holds, if it holds one (the encoding of [`Addr::from_socket`]).
    pub fn to_socket(&self) -> Option<SocketAddr> {
        let b = &self.0;
        let port = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        match b.len() {
            6 => Some(SocketAddr::new(Ipv4Addr::new(b[0], b[1], b[2], b[3]).into(), port(4))),
            18 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&b[..16]);
                Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port(16)))
            }
            _ => None,
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn is_valid(&self) -> bool {
        self.0.len() <= ADDR_MAX
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_socket() {
            Some(s) => write!(f, "Addr({s})"),
            None => write!(f, "Addr({:02x?})", &self.0[..]),
        }
    }
}

/// What a member advertises besides its address: the topics it subscribes to, strictly
/// ascending, at most [`META_TOPICS_MAX`] (PROTOCOLS.md §6.1, §8.9), its human-readable
/// name (at most [`META_NAME_MAX`] bytes; empty in the simulator) and its tags (issue 15; at
/// most [`TAGS_MAX`](hearsay_protocols::tags::TAGS_MAX) of them and
/// [`TAGS_BYTES_MAX`](hearsay_protocols::tags::TAGS_BYTES_MAX) bytes of keys and values).
///
/// Size: at its largest (64 topics, a 64-byte name, 256 bytes of tags in 16 tags) a signed
/// `Alive` with an IPv6 address encodes to 1,122 bytes (1,164 in a ping-req), so it rides a 1200-byte
/// datagram with a ping's header (checked in the tests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    topics: Vec<TopicId>,
    name: String,
    tags: Tags,
}

/// The longest name a member may advertise, in bytes.
pub const META_NAME_MAX: usize = 64;

impl Meta {
    /// Meta advertising `topics` (sorted and deduplicated here); `None` if more than
    /// [`META_TOPICS_MAX`] remain.
    pub fn new(mut topics: Vec<TopicId>) -> Option<Self> {
        topics.sort_unstable();
        topics.dedup();
        (topics.len() <= META_TOPICS_MAX).then_some(Meta {
            topics,
            name: String::new(),
            tags: Tags::default(),
        })
    }

    /// The same meta advertising `name`, cut to [`META_NAME_MAX`] bytes at a character
    /// boundary.
    pub fn with_name(mut self, name: &str) -> Self {
        let mut end = name.len().min(META_NAME_MAX);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        self.name = name[..end].to_string();
        self
    }

    /// The same meta advertising `tags` (checked when they were made).
    pub fn with_tags(mut self, tags: Tags) -> Self {
        self.tags = tags;
        self
    }

    /// The advertised tags.
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// The advertised name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The advertised topics, ascending.
    pub fn topics(&self) -> &[TopicId] {
        &self.topics
    }

    /// True if `topic` is advertised.
    pub fn has_topic(&self, topic: TopicId) -> bool {
        self.topics.binary_search(&topic).is_ok()
    }

    fn is_valid(&self) -> bool {
        self.topics.len() <= META_TOPICS_MAX
            && self.topics.windows(2).all(|w| w[0] < w[1])
            && self.name.len() <= META_NAME_MAX
            && self.tags.is_valid()
    }
}

/// A member's address and meta: what an `Alive` update carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Profile {
    /// Where to reach it.
    pub addr: Addr,
    /// What it advertises.
    pub meta: Meta,
}

impl Profile {
    /// True if both parts are within their bounds.
    pub fn is_valid(&self) -> bool {
        self.addr.is_valid() && self.meta.is_valid()
    }
}

/// A [`Profile`] shared between a member table entry, the updates about it and the events that
/// report it: every member of a simulated 2,000-node cluster holds 2,000 entries, so an
/// entry carries a pointer, not a copy. Encoded exactly as the profile itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SharedProfile(Arc<Profile>);

impl SharedProfile {
    /// Share `profile`.
    pub fn new(profile: Profile) -> Self {
        SharedProfile(Arc::new(profile))
    }

    /// The address.
    pub fn addr(&self) -> &Addr {
        &self.0.addr
    }

    /// The meta.
    pub fn meta(&self) -> &Meta {
        &self.0.meta
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.0
    }
}

impl Serialize for SharedProfile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedProfile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Profile::deserialize(d).map(SharedProfile::new)
    }
}

/// A member's state in a table (§6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    /// Answering probes, or not yet found otherwise.
    Alive,
    /// A probe failed; dead unless it refutes before the suspicion timeout.
    Suspect,
    /// Declared dead (suspicion timed out somewhere).
    Dead,
    /// Left gracefully (a `Dead` about itself, from itself).
    Left,
}

impl State {
    /// Alive or Suspect: a member for every purpose but probing order (§0.3 rule 2).
    pub fn is_live(self) -> bool {
        matches!(self, State::Alive | State::Suspect)
    }
}

/// A membership update, piggybacked on datagrams (infection style, §6.8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// `node` is alive at `incarnation`, reachable and advertising as in `profile`; `sig` is
    /// `node`'s own signature over [`alive_claim`] of the three, so only `node` can say it.
    Alive {
        /// The member.
        node: NodeId,
        /// Its incarnation.
        incarnation: Incarnation,
        /// Its address and meta.
        profile: SharedProfile,
        /// `node`'s signature over (node, incarnation, address, meta hash).
        sig: Signature,
    },
    /// `from` suspects `node` at `incarnation`.
    Suspect {
        /// The member.
        node: NodeId,
        /// The incarnation suspected.
        incarnation: Incarnation,
        /// Who suspects it (a confirmation when new, §6.5).
        from: NodeId,
    },
    /// `from` declares `node` dead at `incarnation`; `from == node` means it left.
    Dead {
        /// The member.
        node: NodeId,
        /// The incarnation declared dead.
        incarnation: Incarnation,
        /// Who declares it; the member itself for a graceful leave.
        from: NodeId,
    },
}

impl Update {
    /// The `Alive` of the node that `auth` signs for, at `incarnation` with `profile`.
    pub fn signed_alive(auth: &dyn Authenticator, incarnation: Incarnation, profile: SharedProfile) -> Self {
        let node = auth.id();
        let sig = auth.sign(&alive_claim(&node, incarnation, profile.profile()));
        Update::Alive { node, incarnation, profile, sig }
    }

    /// The member the update is about.
    pub fn node(&self) -> NodeId {
        match self {
            Update::Alive { node, .. } | Update::Suspect { node, .. } | Update::Dead { node, .. } => *node,
        }
    }

    /// The incarnation it names.
    pub fn incarnation(&self) -> Incarnation {
        match self {
            Update::Alive { incarnation, .. }
            | Update::Suspect { incarnation, .. }
            | Update::Dead { incarnation, .. } => *incarnation,
        }
    }

    /// Its encoded size inside a datagram's update list.
    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }

    fn is_valid(&self) -> bool {
        match self {
            Update::Alive { profile, .. } => profile.profile().is_valid(),
            Update::Suspect { .. } | Update::Dead { .. } => true,
        }
    }
}

/// One member's entry as sent in a push-pull exchange (§6.11).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member.
    pub node: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Its state in the sender's table.
    pub state: State,
    /// Its address and meta.
    pub profile: SharedProfile,
    /// The member's signature over its `Alive` at `incarnation` with `profile`
    /// ([`alive_claim`]); `None` (one byte instead of 65) when the sender holds none: an entry
    /// its host put in its starting table ([`Swim::with_members`](super::Swim::with_members)),
    /// which a receiver that does not hold it already refuses.
    pub sig: Option<Signature>,
}

impl MemberRecord {
    /// Its encoded size inside a push-pull's record list.
    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
}

/// What a member signs to say it is alive (PROTOCOLS.md §6.6, hearsay's signed `Alive`): a
/// domain tag, its id, its incarnation (8 bytes, big-endian), its address (a length byte and
/// the bytes) and SHA-256 of its meta's encoding. The meta travels beside the signature; only
/// its hash is signed, so the claim is at most 137 bytes whatever the meta.
pub fn alive_claim(node: &NodeId, incarnation: Incarnation, profile: &Profile) -> Vec<u8> {
    const TAG: &[u8] = b"hearsay/swim/alive/1";
    let addr = profile.addr.as_bytes();
    let meta = postcard::to_allocvec(&profile.meta).unwrap_or_default();
    let mut claim = Vec::with_capacity(TAG.len() + 32 + 8 + 1 + addr.len() + 32);
    claim.extend_from_slice(TAG);
    claim.extend_from_slice(node.as_bytes());
    claim.extend_from_slice(&incarnation.to_be_bytes());
    claim.push(addr.len() as u8);
    claim.extend_from_slice(addr);
    claim.extend_from_slice(&Sha256::digest(&meta));
    claim
}

/// The SWIM wire messages. Every datagram ends with its piggybacked `updates`, filled up to
/// the datagram budget; `PushPull` travels on a stream.
///
/// PROTOCOLS.md §6.2 also lists `source` in `Ping` and `requester` in `PingReq`; both are the
/// authenticated sender of the datagram, so they are left out (as the envelope leaves out the
/// sender, `hearsay_protocols::wire`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwimMessage {
    /// Are you alive? Answered with `Ack{seq}` by `target`, which must be the receiver.
    Ping {
        /// The prober's sequence number.
        seq: u32,
        /// Who is probed (a receiver that is not `target` drops it).
        target: NodeId,
        /// Piggyback.
        updates: Vec<Update>,
    },
    /// The answer to `Ping{seq}`, or relayed by a helper for `PingReq{seq}`.
    Ack {
        /// The sequence number answered.
        seq: u32,
        /// Piggyback.
        updates: Vec<Update>,
    },
    /// Please ping `target` for me and relay its ack (an indirect probe). A helper pings only
    /// a live member of its own table, at the address that member signed: a ping-req carries
    /// no address (PROTOCOLS.md §6.2 has `target_addr`), so no member can make another send
    /// traffic to an address no member owns.
    PingReq {
        /// The requester's sequence number, used in the relayed `Ack` and `Nack`.
        seq: u32,
        /// The member to ping.
        target: NodeId,
        /// Send a `Nack` if the target stays silent (Lifeguard).
        want_nack: bool,
        /// Piggyback.
        updates: Vec<Update>,
    },
    /// The helper got no ack from the target in time (Lifeguard §IV.A).
    Nack {
        /// The requester's sequence number.
        seq: u32,
        /// Piggyback.
        updates: Vec<Update>,
    },
    /// Only piggyback: the periodic gossip datagram.
    Gossip {
        /// The updates.
        updates: Vec<Update>,
    },
    /// A full-state exchange (§6.11) or a join (§6.12), on a stream: the initiator sends its
    /// table, the responder answers with its own (`reply`), both merge.
    PushPull {
        /// The initiator is joining.
        join: bool,
        /// This is the responder's answer.
        reply: bool,
        /// Every entry of the sender's table, self included.
        states: Vec<MemberRecord>,
    },
    /// The periodic push-pull, opened by digests (hearsay, issue 14): the initiator sends the
    /// [`TableDigest`] of its table. A responder whose table has the same digest answers with
    /// its own (`reply`) and the exchange is over, a few dozen bytes instead of two tables; one
    /// whose table differs opens a full [`SwimMessage::PushPull`] with the initiator (or, with
    /// an exchange of its own under way, answers with its table as a reply).
    PushPullDigest {
        /// This is the responder's answer: the tables agree.
        reply: bool,
        /// The sender's table digest.
        digest: TableDigest,
    },
}

/// What a push-pull digest covers of a member table: SHA-256 over the live members (Alive and
/// Suspect) in NodeId order, each as its id, incarnation and whether it is suspected,
/// truncated to 16 bytes. Dead and Left members are left out: when they are reaped differs
/// from node to node, and a death that did not reach a node shows as a member it still
/// holds live. An incarnation names one signed address and meta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableDigest(pub [u8; 16]);

impl WireMessage for SwimMessage {
    const KIND: Protocol = Protocol::Membership;
}

impl SwimMessage {
    /// The piggybacked updates, for the datagram kinds.
    pub fn updates(&self) -> &[Update] {
        match self {
            SwimMessage::Ping { updates, .. }
            | SwimMessage::Ack { updates, .. }
            | SwimMessage::PingReq { updates, .. }
            | SwimMessage::Nack { updates, .. }
            | SwimMessage::Gossip { updates } => updates,
            SwimMessage::PushPull { .. } | SwimMessage::PushPullDigest { .. } => &[],
        }
    }

    pub(crate) fn updates_mut(&mut self) -> Option<&mut Vec<Update>> {
        match self {
            SwimMessage::Ping { updates, .. }
            | SwimMessage::Ack { updates, .. }
            | SwimMessage::PingReq { updates, .. }
            | SwimMessage::Nack { updates, .. }
            | SwimMessage::Gossip { updates } => Some(updates),
            SwimMessage::PushPull { .. } | SwimMessage::PushPullDigest { .. } => None,
        }
    }

    /// The message's name, for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            SwimMessage::Ping { .. } => "ping",
            SwimMessage::Ack { .. } => "ack",
            SwimMessage::PingReq { .. } => "ping-req",
            SwimMessage::Nack { .. } => "nack",
            SwimMessage::Gossip { .. } => "gossip",
            SwimMessage::PushPull { .. } => "push-pull",
            SwimMessage::PushPullDigest { .. } => "push-pull-digest",
        }
    }

    /// True if every bound holds: a message that fails this is counted and dropped whole.
    pub fn is_valid(&self) -> bool {
        match self {
            SwimMessage::PushPull { states, .. } => {
                states.len() <= STATES_MAX && states.iter().all(|s| s.profile.profile().is_valid())
            }
            SwimMessage::PushPullDigest { .. } => true,
            _ => {
                let updates = self.updates();
                updates.len() <= UPDATES_MAX && updates.iter().all(Update::is_valid)
            }
        }
    }
}
