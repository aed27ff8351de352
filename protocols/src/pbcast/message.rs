//! pbcast's wire messages and the events it gives its host (PROTOCOLS.md §4.3).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::anti_entropy::StreamSummary;
use crate::auth::{Authenticator, Proof, Seal, payload_digest};
use crate::id::{NodeId, Seq, StreamId, TopicId};
use crate::time::Instant;
use crate::wire::{Protocol, WireMessage};

/// A message's identity (PROTOCOLS.md §0.2): its origin, topic and per-(origin, topic) seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    /// The node that published it.
    pub origin: NodeId,
    /// The topic it was published on.
    pub topic: TopicId,
    /// Its sequence number in the stream (origin, topic), from 1.
    pub seq: Seq,
}

impl MsgId {
    /// The stream the message belongs to.
    pub fn stream(&self) -> StreamId {
        StreamId { topic: self.topic, origin: self.origin }
    }
}

/// How a node obtained an entry. Local knowledge, never on the wire: a receiver knows it from
/// the message kind that carried the entry ([`PbMessage::Data`], [`PbMessage::Retransmit`],
/// [`PbMessage::Repair`]) or from the host's side input ([`Pbcast::handle_data`](super::Pbcast::handle_data)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Via {
    /// It published the entry itself.
    Local,
    /// The first-phase multicast (the tree, or the origin's direct copies).
    FirstPhase,
    /// A pbcast retransmission, solicited after a digest.
    Repair,
    /// An anti-entropy exchange (handed in by the host).
    AntiEntropy,
}

impl Via {
    /// Every path, in the order metrics and counters list them.
    pub const ALL: [Via; 4] = [Via::Local, Via::FirstPhase, Via::Repair, Via::AntiEntropy];

    /// The `via` label of metrics.
    pub fn label(self) -> &'static str {
        match self {
            Via::Local => "local",
            Via::FirstPhase => "first_phase",
            Via::Repair => "repair",
            Via::AntiEntropy => "anti_entropy",
        }
    }
}

/// One message on the wire: first-phase copy or retransmission (PROTOCOLS.md §4.3, without
/// `via`: the message kind that carries it says which).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// Its identity.
    pub id: MsgId,
    /// The origin's clock at publish time (informational).
    pub published_at: Instant,
    /// The application's bytes.
    pub payload: Bytes,
    /// The origin's signature over it (every receiver checks it before keeping anything).
    pub seal: Seal,
}

impl Data {
    /// True if the seal is the origin's author's signature over this message.
    pub fn verify(&self, auth: &dyn Authenticator) -> bool {
        self.checked_proof(auth).is_some()
    }

    /// The proof that this message exists, if its seal is its origin's author's signature.
    pub fn checked_proof(&self, auth: &dyn Authenticator) -> Option<Proof> {
        let proof = self.proof();
        proof.verify(auth).then_some(proof)
    }

    /// What its seal claims, without the payload (not checked).
    pub fn proof(&self) -> Proof {
        Proof {
            origin: self.id.origin,
            topic: self.id.topic.0,
            seq: self.id.seq,
            published_at: self.published_at.as_micros(),
            digest: payload_digest(&self.payload),
            seal: self.seal,
        }
    }
}

/// The pbcast wire messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PbMessage {
    /// A first-phase copy (a datagram unless over the budget).
    Data(Data),
    /// A summary of the sender's gossip buffer for one topic.
    Digest {
        /// The topic.
        topic: TopicId,
        /// One summary per stream with active entries, strictly ascending by stream.
        summaries: Vec<StreamSummary>,
    },
    /// A request for retransmissions, sent to a digest's sender.
    Solicit {
        /// The topic.
        topic: TopicId,
        /// Per origin (strictly ascending), the seqs wanted (strictly ascending, non-empty).
        wants: Vec<(NodeId, Vec<Seq>)>,
    },
    /// More than `batch_over` retransmissions for one solicitation, on a stream.
    Repair {
        /// The entries.
        entries: Vec<Data>,
    },
    /// One retransmission answering a solicitation (up to `batch_over` of them are sent this
    /// way, a datagram each unless over the budget).
    Retransmit(Data),
    /// A request for the newest proof the receiver holds of each listed stream (strictly
    /// ascending, at most [`PROOFS_MAX`]): sent when a seq only digests spoke of has been
    /// missing for the gap timeout, so it can be given up once proven to exist.
    ProofWanted {
        /// The topic.
        topic: TopicId,
        /// The streams' origins.
        origins: Vec<NodeId>,
    },
    /// The answer to [`PbMessage::ProofWanted`]: per stream the receiver knew, the proof (its
    /// origin's seal) of the highest seq it has seen. At most [`PROOFS_MAX`].
    Proofs {
        /// The topic.
        topic: TopicId,
        /// The proofs.
        proofs: Vec<Proof>,
    },
}

/// Streams named in one [`PbMessage::ProofWanted`], and proofs in one [`PbMessage::Proofs`].
pub const PROOFS_MAX: usize = 64;

impl WireMessage for PbMessage {
    const KIND: Protocol = Protocol::Pbcast;
}

/// One message handed to the local subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Its identity.
    pub id: MsgId,
    /// The application's bytes.
    pub payload: Bytes,
    /// The origin's clock at publish time.
    pub published_at: Instant,
    /// When this node first obtained it.
    pub received_at: Instant,
    /// How this node first obtained it.
    pub via: Via,
    /// The origin's signature (kept, so the message can be served again, even after a
    /// restart).
    pub seal: Seal,
}

/// What pbcast tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbEvent {
    /// Hand this message to the subscriber (per origin in seq order, each at most once).
    Deliver(Delivery),
    /// Seqs `first..=last` of `origin` on `topic` can no longer be had; the subscriber will
    /// never see them.
    Gap {
        /// The topic.
        topic: TopicId,
        /// The stream's origin.
        origin: NodeId,
        /// First seq given up.
        first: Seq,
        /// Last seq given up.
        last: Seq,
    },
    /// A new subscriber needs the members' heads: run an anti-entropy exchange in Heads mode
    /// with `peer` for `topic` and pass the reply (or its failure) to
    /// [`Pbcast::handle_heads`](super::Pbcast::handle_heads) (§4.7).
    HeadsWanted {
        /// The topic subscribed to.
        topic: TopicId,
        /// The member to ask.
        peer: NodeId,
    },
    /// A seq of `topic` has been missing for G rounds: run one on-demand anti-entropy Pull
    /// for the topic and hand what it brings to
    /// [`Pbcast::handle_data`](super::Pbcast::handle_data) (§4.7).
    PullWanted {
        /// The topic.
        topic: TopicId,
    },
}

/// Where a new subscriber's streams start (PROTOCOLS.md §4.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Ask a member for its heads first ([`PbEvent::HeadsWanted`]); streams start after
    /// them. Without any other member, every stream starts at its first evidence.
    Heads,
    /// Every stream starts at its first evidence: the first entry obtained or the floor of the
    /// first summary seen.
    FirstEvidence,
    /// Every stream starts at seq 1: nothing was published before this subscription.
    FromFirst,
    /// Resume where this node stopped before a restart: each listed stream starts after its
    /// seq (the last one this node delivered and kept), every other stream at seq 1 (it began
    /// while this node was away, or was never heard of). A durable subscription's topic after a
    /// restart.
    After(Vec<(NodeId, Seq)>),
}
