//! One simulated node of the `scribe` experiment: the Chord ring, Scribe's topic trees and
//! pbcast composed into one [`Machine`], the way the daemon's Engine composes them.
//!
//! Inputs go to their part by message kind; after every input the parts are drained in a fixed
//! order: the ring (its successor or predecessor changes trigger Scribe's root check, §8.8),
//! then Scribe (first-phase copies at members go to pbcast, §8.9), then pbcast. Timers: each
//! part's deadline is served when due, ring first. Outputs keep that order.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use hearsay_overlay::chord::{Chord, ChordConfig, ChordError, ChordEvent, ChordMessage, RingSnapshot};
use hearsay_overlay::scribe::{Scribe, ScribeConfig, ScribeError, ScribeEvent, ScribeMessage};
use hearsay_protocols::pbcast::{MsgId, PbConfig, PbEvent, PbMessage, Pbcast, Start};
use hearsay_protocols::{Instant, Machine, NodeId, PeerView, Seed, TopicId, Transmit};

/// A node's wire messages: one per part.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeMessage {
    /// Ring maintenance and lookups.
    Ring(ChordMessage),
    /// Topic trees.
    Tree(ScribeMessage),
    /// pbcast data, digests, solicitations.
    Pb(PbMessage),
}

/// What a node tells the simulator. Scribe's first-phase copies are handed to pbcast and also
/// reported here (the experiment times the tree with them).
#[derive(Clone, Debug, PartialEq)]
pub enum NodeEvent {
    /// From the ring.
    Ring(ChordEvent),
    /// From the trees.
    Tree(ScribeEvent),
    /// From pbcast (deliveries, gaps).
    Pb(PbEvent),
}

/// The settings of the three parts.
#[derive(Clone, Debug)]
pub struct Configs {
    /// The ring.
    pub chord: Arc<ChordConfig>,
    /// The trees.
    pub scribe: Arc<ScribeConfig>,
    /// pbcast.
    pub pbcast: Arc<PbConfig>,
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// pbcast refused it (payload too large).
    Pbcast(hearsay_protocols::pbcast::PublishError),
    /// The tree refused it.
    Tree(ScribeError),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Pbcast(e) => e.fmt(f),
            PublishError::Tree(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PublishError {}

/// Ring + trees + pbcast at one node.
#[derive(Debug)]
pub struct TreeNode {
    chord: Chord,
    scribe: Scribe,
    pbcast: Pbcast,
    out: VecDeque<Transmit<NodeMessage>>,
    events: VecDeque<NodeEvent>,
}

impl TreeNode {
    /// A node `id` started at `now`, not on a ring yet.
    pub fn new(id: NodeId, configs: &Configs, seed: &Seed, now: Instant) -> Self {
        TreeNode {
            chord: Chord::new(id, configs.chord.clone(), seed, now),
            scribe: Scribe::new(id, configs.scribe.clone(), seed, now),
            pbcast: Pbcast::new(id, configs.pbcast.clone(), seed, now),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The ring.
    pub fn chord(&self) -> &Chord {
        &self.chord
    }

    /// The trees.
    pub fn scribe(&self) -> &Scribe {
        &self.scribe
    }

    /// pbcast.
    pub fn pbcast(&self) -> &Pbcast {
        &self.pbcast
    }

    /// Join the ring from the member table (what SWIM's table gives the daemon).
    pub fn join(&mut self, now: Instant, members: &RingSnapshot) -> Result<(), ChordError> {
        let r = self.chord.join_from_members(now, members);
        self.pump(now);
        r
    }

    /// Subscribe to `topic`: join its tree and become a pbcast member from `start`.
    pub fn subscribe(&mut self, now: Instant, topic: TopicId, start: Start) -> Result<(), ScribeError> {
        let r = self.scribe.subscribe(now, topic, &self.chord);
        if r.is_ok() {
            self.pbcast.subscribe(now, topic, start);
        }
        self.pump(now);
        r
    }

    /// The members of `topic` pbcast gossips with.
    pub fn set_topic_peers(&mut self, topic: TopicId, peers: PeerView) {
        self.pbcast.set_topic_peers(topic, peers);
    }

    /// Publish `payload` on `topic`: pbcast stamps and keeps it, the tree carries it.
    pub fn publish(&mut self, now: Instant, topic: TopicId, payload: Bytes) -> Result<MsgId, PublishError> {
        let data = self.pbcast.publish(now, topic, payload).map_err(PublishError::Pbcast)?;
        let id = data.id;
        let r = self.scribe.publish(now, data, &self.chord);
        self.pump(now);
        r.map(|()| id).map_err(PublishError::Tree)
    }

    /// Drain the parts in order: ring, trees, pbcast.
    fn pump(&mut self, now: Instant) {
        let mut ring_changed = false;
        while let Some(t) = self.chord.poll_transmit() {
            self.out.push_back(Transmit {
                to: t.to,
                reliability: t.reliability,
                msg: NodeMessage::Ring(t.msg),
            });
        }
        while let Some(e) = self.chord.poll_event() {
            ring_changed |= matches!(
                e,
                ChordEvent::Joined
                    | ChordEvent::SuccessorChanged { .. }
                    | ChordEvent::PredecessorChanged { .. }
            );
            self.events.push_back(NodeEvent::Ring(e));
        }
        if ring_changed {
            self.scribe.ring_changed(now, &self.chord);
        }
        while let Some(t) = self.scribe.poll_transmit() {
            self.out.push_back(Transmit {
                to: t.to,
                reliability: t.reliability,
                msg: NodeMessage::Tree(t.msg),
            });
        }
        while let Some(e) = self.scribe.poll_event() {
            if let ScribeEvent::FirstPhase(data) = &e {
                self.pbcast.handle_data(now, data.clone());
            }
            self.events.push_back(NodeEvent::Tree(e));
        }
        while let Some(t) = self.pbcast.poll_transmit() {
            self.out.push_back(Transmit {
                to: t.to,
                reliability: t.reliability,
                msg: NodeMessage::Pb(t.msg),
            });
        }
        while let Some(e) = self.pbcast.poll_event() {
            self.events.push_back(NodeEvent::Pb(e));
        }
    }
}

impl Machine for TreeNode {
    type Message = NodeMessage;
    type Event = NodeEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: NodeMessage) {
        match msg {
            NodeMessage::Ring(m) => self.chord.handle_message(now, from, m),
            NodeMessage::Tree(m) => self.scribe.handle_message(now, from, m, &self.chord),
            NodeMessage::Pb(m) => self.pbcast.handle_message(now, from, m),
        }
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.chord.poll_timeout().is_some_and(|t| t <= now) {
            self.chord.handle_timeout(now);
            self.pump(now);
        }
        if self.scribe.poll_timeout().is_some_and(|t| t <= now) {
            self.scribe.handle_timeout(now, &self.chord);
        }
        if self.pbcast.poll_timeout().is_some_and(|t| t <= now) {
            self.pbcast.handle_timeout(now);
        }
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit<NodeMessage>> {
        let t = self.out.pop_front();
        if t.is_none() && self.out.capacity() > 0 {
            self.out = VecDeque::new();
        }
        t
    }

    fn poll_event(&mut self) -> Option<NodeEvent> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        e
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.chord.poll_timeout(), self.scribe.poll_timeout(), self.pbcast.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}
