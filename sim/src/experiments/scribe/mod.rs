//! Experiment `scribe`: Scribe topic trees over the Chord ring, with bimodal multicast repairing
//! what the trees lose (Castro et al. 2002; PROTOCOLS.md §8.11).
//!
//! N nodes each run the ring, the trees and pbcast composed into one machine ([`TreeNode`],
//! the daemon Engine's composition without SWIM). The ring is built ideal (every node joins
//! from the full member table, §7.6) and then runs standalone ([`Detector::Standalone`]):
//! without SWIM it finds failures itself. Each of `--topics` topics gets `--group-size`
//! uniformly random members, who all subscribe at t = 0 (tree and pbcast, streams from seq 1).
//! pbcast draws partners from an oracle view of each topic's live members, updated the
//! instant a member crashes (standing in for SWIM's member table, §8.9). Publishing starts
//! once every live member is on its tree (its parent chain reaches a root: stronger than
//! §8.11's "has a parent", which a member of a forwarder still joining already has), checked
//! every 100 ms, or at 30 s; each topic then gets
//! `--messages` messages, one per second at a random phase per topic, each from a uniformly
//! random live member. After the last publish the run drains until every live node's pbcast is
//! quiescent, or for at most `--drain` rounds (10·G). With `--churn RATE`, node failures
//! arrive from t = 0 as a Poisson process of RATE·N per minute, each a uniformly random live
//! node, which stays down.
//!
//! Quantities (§8.11, the names):
//!
//! - `delivery_ratio_with_repair`: §4.10's `delivery_ratio`; `delivery_ratio_tree_only`: its
//!   `delivery_ratio_first_phase` (the first copy came down the tree, or the member is the
//!   origin). Eligible for a message: the topic's members not crashed at the end (all
//!   subscribed before the first publish). Means over runs.
//! - `tree_depth_mean` / `tree_depth_max`: hops from each live member to its tree's root,
//!   following parent pointers when publishing starts (members not on a tree then are counted
//!   in `subscribers_on_tree` instead), pooled over runs; the anchor is log2 N.
//! - `rdp_mean`: for each (message, member other than the origin) whose first copy came by
//!   the tree, first receipt − publish time over the network model's base one-way delay from
//!   origin to member; `rad_mean` and `rmd_mean` per message (mean over mean, max over max),
//!   averaged over messages. Base delays have no jitter; delivered messages have up to 10%,
//!   so a direct copy scores 1.0–1.1.
//! - `link_stress_mean` / `link_stress_max`: with end-to-end latency the only links are access
//!   links: for each message and each node that handled it, the tree copies (`ScribePublish`
//!   and `TreeData`) it sent plus those it received; mean and max over all (message, node).
//! - `node_stress_*`: tree entries and children entries per live node when publishing starts
//!   (nodes in no tree count as 0): mean, p99, max.
//! - `control_messages_per_node`: Scribe maintenance messages (JOIN, JoinAck, LEAVE,
//!   heartbeats and their acks) sent over the whole run, per node; also per node per second.
//!   Ring maintenance and pbcast repair are reported beside it.

mod node;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hearsay_overlay::chord::{ChordConfig, Detector, RingSnapshot};
use hearsay_overlay::scribe::{ScribeConfig, ScribeEvent};
use hearsay_protocols::pbcast::{MsgId, PbConfig, PbMessage, Start, Via};
use hearsay_protocols::{Duration, Instant, PeerView, Rng, Seed, Timing, TopicId, Transmit};
use serde::Serialize;

pub use self::node::{Configs, NodeEvent, NodeMessage, PublishError, TreeNode};
use super::delivery::{
    LAT_BINS, LAT_BINS_PER_DECADE, LatencyStats, Ledger, Samples, latency_edges, latency_hist,
};
pub use super::pbcast::Profile;
use crate::kernel::{Fate, Fault, Latency, NetConfig, Observer, Sim, node_ids};
use crate::report::{self, HistPanel, Progress};

/// The anchor for `delivery_ratio_with_repair` (N = 10^4, 100 topics, 5% loss, 1% of
/// the nodes failing per minute).
pub const ANCHOR_DELIVERY_RATIO: f64 = 0.9999;

/// Bytes of every published payload.
pub const PAYLOAD_BYTES: usize = 64;

/// The depth anchor: log2 N hops ("near log2 N or better").
pub fn anchor_depth(nodes: usize) -> f64 {
    (nodes as f64).log2()
}

/// The id of topic `j`: the hash of its name `topic-j`.
pub fn topic_id(j: usize) -> TopicId {
    TopicId::of(&format!("topic-{j}"))
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of nodes N.
    pub nodes: usize,
    /// Topics T.
    pub topics: usize,
    /// Members per topic.
    pub group_size: usize,
    /// Messages per topic.
    pub messages: usize,
    /// Failures per node per minute.
    pub churn: f64,
    /// Per-datagram loss probability.
    pub loss: f64,
    /// G: rounds an entry stays in pbcast's gossip buffer.
    pub gc_rounds: u64,
    /// Latency profile.
    pub latency: Profile,
    /// Time between two messages of one topic.
    pub publish_interval: Duration,
    /// Publishing starts at the latest this long after the subscriptions.
    pub attach_limit: Duration,
    /// Most rounds to run after the last publish (`None`: 10·G).
    pub drain_rounds: Option<u64>,
    /// Independent runs.
    pub runs: u64,
    /// Seed of run 0..runs.
    pub seed: u64,
    /// Worker threads (0 = all cores).
    pub threads: usize,
}

impl Params {
    /// Defaults for N nodes: 10 topics of 100 members, 10 messages per topic one second apart,
    /// no churn, no loss, G = 20, `wan` latency, 1 run, seed 1.
    pub fn new(nodes: usize) -> Self {
        Params {
            nodes,
            topics: 10,
            group_size: 100.min(nodes),
            messages: 10,
            churn: 0.0,
            loss: 0.0,
            gc_rounds: 20,
            latency: Profile::Wan,
            publish_interval: Duration::from_secs(1),
            attach_limit: Duration::from_secs(30),
            drain_rounds: None,
            runs: 1,
            seed: 1,
            threads: 0,
        }
    }

    /// Refuse parameters the experiment cannot run.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes < 2 {
            return Err("the experiment needs at least 2 nodes".into());
        }
        if self.group_size == 0 || self.group_size > self.nodes {
            return Err(format!(
                "--group-size {} must be between 1 and --nodes {}",
                self.group_size, self.nodes
            ));
        }
        if self.topics == 0 || self.messages == 0 {
            return Err("--topics and --messages must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(format!("{} is not a loss probability in [0, 1)", self.loss));
        }
        let c = self.configs();
        c.chord.validate().map_err(|e| e.to_string())?;
        c.scribe.validate().map_err(|e| e.to_string())?;
        c.pbcast.validate().map_err(|e| e.to_string())
    }

    /// The drain limit in rounds.
    pub fn drain_limit(&self) -> u64 {
        self.drain_rounds.unwrap_or(10 * self.gc_rounds)
    }

    /// The machines' settings: defaults, a standalone ring, pbcast without anti-entropy.
    pub fn configs(&self) -> Configs {
        Configs {
            chord: Arc::new(ChordConfig {
                detector: Detector::Standalone,
                timing: Timing::Phased,
                ..ChordConfig::default()
            }),
            scribe: Arc::new(ScribeConfig::default()),
            pbcast: Arc::new(PbConfig {
                gc_rounds: self.gc_rounds,
                pull_on_missing: false,
                ..PbConfig::default()
            }),
        }
    }

    fn net(&self) -> NetConfig {
        let (latency, jitter) = match self.latency {
            Profile::Zero => (Latency::Zero, 0.0),
            Profile::Lan => (Latency::LAN, 0.1),
            Profile::Wan => (Latency::WAN, 0.1),
        };
        NetConfig { latency, jitter, loss: self.loss, stream_loss: false }
    }
}

/// A run's nodes and workload before anything happened (exposed for tests).
pub struct Setup {
    /// The simulation: every node on the ring, every member subscribed at t = 0.
    pub sim: Sim<TreeNode>,
    /// The workload RNG, after the membership draws.
    pub work: Rng,
    /// Topic ids, by topic index.
    pub topics: Vec<TopicId>,
    /// Members of each topic (node indices, ascending).
    pub members: Vec<Vec<usize>>,
}

/// Build run `run`: the ring, the memberships, every subscription at t = 0.
pub fn build(p: &Params, run: u64) -> Setup {
    let n = p.nodes;
    let mut work = Rng::from_seed(Seed::derive(p.seed, "work", run, 0));
    let topics: Vec<TopicId> = (0..p.topics).map(topic_id).collect();
    let mut members: Vec<Vec<usize>> = Vec::with_capacity(p.topics);
    let mut topics_of: Vec<Vec<usize>> = vec![Vec::new(); n];
    for j in 0..p.topics {
        let mut m = work.distinct(n, p.group_size);
        m.sort_unstable();
        for &i in &m {
            topics_of[i].push(j);
        }
        members.push(m);
    }
    let ids = node_ids(p.seed, run, n);
    let views: Vec<PeerView> = members.iter().map(|m| m.iter().map(|&i| ids[i]).collect()).collect();
    let snapshot = RingSnapshot::new(ids);
    let configs = p.configs();
    let topic_ids = topics.clone();
    let sim = Sim::new(p.seed, run, n, p.net(), move |init| {
        let mut node = TreeNode::new(init.id, &configs, &init.seed, init.now);
        if init.restarts == 0 {
            // A RingId collision (probability ~N²/2^65) leaves that node off the ring.
            let _ = node.join(init.now, &snapshot);
            for &j in &topics_of[init.index] {
                node.set_topic_peers(topic_ids[j], views[j].clone());
                let _ = node.subscribe(init.now, topic_ids[j], Start::FromFirst);
            }
        }
        node
    });
    Setup { sim, work, topics, members }
}

/// Watches a run: deliveries (the ledger), tree copies per (message, node), messages by kind.
#[derive(Default)]
struct Watch {
    ledger: Ledger,
    /// (message, node) → tree copies of the message the node sent or received.
    stress: HashMap<(u32, u32), u32>,
    /// (message, member) → µs from publish to the first tree copy at the member.
    tree_arrivals: HashMap<(u32, u32), u64>,
    control: u64,
    ring: u64,
    repair: u64,
}

impl Watch {
    fn copy(&mut self, msg: &NodeMessage, node: usize) {
        if let NodeMessage::Tree(m) = msg {
            if let Some(k) = m.data().and_then(|d| self.ledger.message(&d.id)) {
                *self.stress.entry((k, node as u32)).or_insert(0) += 1;
            }
        }
    }
}

impl Observer<TreeNode> for Watch {
    fn on_event(&mut self, now: Instant, node: usize, event: NodeEvent) {
        match &event {
            NodeEvent::Pb(e) => self.ledger.on_event(now, node, e),
            NodeEvent::Tree(ScribeEvent::FirstPhase(data)) => {
                if let Some(k) = self.ledger.message(&data.id) {
                    let us = (now - self.ledger.published_at(k)).as_micros();
                    self.tree_arrivals.entry((k, node as u32)).or_insert(us);
                }
            }
            _ => {}
        }
    }

    fn on_send(&mut self, _: Instant, from: usize, _: Option<usize>, t: &Transmit<NodeMessage>, _: Fate) {
        match &t.msg {
            NodeMessage::Ring(_) => self.ring += 1,
            NodeMessage::Tree(m) if m.is_control() => self.control += 1,
            NodeMessage::Tree(_) => self.copy(&t.msg, from),
            NodeMessage::Pb(PbMessage::Repair { entries }) => self.repair += entries.len() as u64,
            NodeMessage::Pb(_) => self.repair += 1,
        }
    }

    fn on_deliver(&mut self, _: Instant, _: usize, to: usize, msg: &NodeMessage) {
        self.copy(msg, to);
    }
}

enum Action {
    Crash,
    Publish(usize),
}

/// One run in progress: the simulation, its workload and what it knows of the topics.
struct Driver<'a> {
    p: &'a Params,
    sim: Sim<TreeNode>,
    watch: Watch,
    work: Rng,
    topics: Vec<TopicId>,
    members: Vec<Vec<usize>>,
    live: Vec<bool>,
    actions: BTreeMap<(Instant, u64), Action>,
    seq: u64,
    /// Seqs published per (node, topic index).
    published_by: HashMap<(usize, usize), u64>,
    /// Per message: topic index and origin.
    msgs: Vec<(usize, usize)>,
    crashes: u64,
    skipped: u64,
    /// Per topic, per member (in `members` order): on its tree in some sample.
    ever_on: Vec<Vec<bool>>,
    /// The on-tree fraction sampled every second from the first publish to the end.
    on_samples: Vec<f64>,
}

impl Driver<'_> {
    fn push(&mut self, at: Instant, a: Action) {
        self.actions.insert((at, self.seq), a);
        self.seq += 1;
    }

    /// Apply every action due before `until` in order, then run the simulation to `until`.
    fn advance(&mut self, until: Instant) {
        while let Some(entry) = self.actions.first_entry() {
            let at = entry.key().0;
            if at >= until {
                break;
            }
            let action = entry.remove();
            self.sim.run_until(at, &mut self.watch);
            match action {
                Action::Crash => self.crash(at),
                Action::Publish(j) => self.publish(j),
            }
        }
        self.sim.run_until(until, &mut self.watch);
    }

    fn crash(&mut self, at: Instant) {
        let Some(victim) = pick(&mut self.work, &self.live) else {
            return;
        };
        self.live[victim] = false;
        self.crashes += 1;
        self.sim.schedule_fault(at, Fault::Crash(victim));
        // The oracle view of each of its topics loses it at once.
        for j in 0..self.topics.len() {
            if self.members[j].binary_search(&victim).is_err() {
                continue;
            }
            let alive: Vec<usize> = self.members[j].iter().copied().filter(|&i| self.live[i]).collect();
            let view: PeerView = alive.iter().map(|&i| self.sim.id(i)).collect();
            let topic = self.topics[j];
            for i in alive {
                let v = view.clone();
                self.sim.call(i, &mut self.watch, move |m, _| m.set_topic_peers(topic, v));
            }
        }
    }

    fn publish(&mut self, j: usize) {
        let alive: Vec<usize> = self.members[j].iter().copied().filter(|&i| self.live[i]).collect();
        if alive.is_empty() {
            self.skipped += 1;
            return;
        }
        let origin = alive[self.work.index(alive.len())];
        let topic = self.topics[j];
        let seq = {
            let s = self.published_by.entry((origin, j)).or_insert(0);
            *s += 1;
            *s
        };
        let k = self.msgs.len();
        // Known to the ledger before the origin delivers it to itself.
        let id = MsgId { origin: self.sim.id(origin), topic, seq };
        self.watch.ledger.publish(id, self.sim.now());
        self.msgs.push((j, origin));
        let mut payload = vec![0u8; PAYLOAD_BYTES];
        payload[..8].copy_from_slice(&(k as u64).to_le_bytes());
        let payload = Bytes::from(payload);
        let r = self.sim.call(origin, &mut self.watch, move |m, now| m.publish(now, topic, payload));
        debug_assert_eq!(r.as_ref().ok(), Some(&id), "the origin stamps the predicted seq");
    }

    /// The fraction of live members on their tree (parent chain reaching a root), noting who
    /// has been on one.
    fn sample(&mut self) -> f64 {
        let (mut on, mut total) = (0u64, 0u64);
        for j in 0..self.topics.len() {
            for k in 0..self.members[j].len() {
                let i = self.members[j][k];
                if !self.live[i] {
                    continue;
                }
                total += 1;
                if self.depth(i, self.topics[j]).is_some() {
                    on += 1;
                    self.ever_on[j][k] = true;
                }
            }
        }
        if total > 0 { on as f64 / total as f64 } else { 1.0 }
    }

    /// Live members that were never on their tree in any sample.
    fn never_on(&self) -> u64 {
        let mut n = 0;
        for (m, ever) in self.members.iter().zip(&self.ever_on) {
            n += m.iter().zip(ever).filter(|(i, on)| self.live[**i] && !**on).count() as u64;
        }
        n
    }

    /// Hops from member `i` to its tree's root by parent pointers through live nodes; `None`
    /// if the chain breaks (a detached node, a crashed one, a cycle).
    fn depth(&self, i: usize, topic: TopicId) -> Option<usize> {
        let mut at = i;
        for hops in 0..=64 {
            if !self.live[at] {
                return None;
            }
            let s = self.sim.machine(at).scribe();
            if s.is_root(topic) {
                return Some(hops);
            }
            at = self.sim.index_of(&s.parent(topic)?)?;
        }
        None
    }

    /// Depth of every live member on a tree, and how many live members there are.
    fn tree_shape(&self) -> (Vec<usize>, usize) {
        let mut depths = Vec::new();
        let mut total = 0;
        for (m, &t) in self.members.iter().zip(&self.topics) {
            for &i in m.iter().filter(|&&i| self.live[i]) {
                total += 1;
                depths.extend(self.depth(i, t));
            }
        }
        (depths, total)
    }

    fn all_quiescent(&self) -> bool {
        (0..self.p.nodes).all(|i| !self.live[i] || self.sim.machine(i).pbcast().is_quiescent())
    }
}

/// A uniformly random index whose flag is set (rejection sampling; `None` if none is).
fn pick(work: &mut Rng, flags: &[bool]) -> Option<usize> {
    if !flags.iter().any(|&f| f) {
        return None;
    }
    loop {
        let i = work.index(flags.len());
        if flags[i] {
            return Some(i);
        }
    }
}

/// The trees when publishing starts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TreeShape {
    /// Depth of each live member on a tree (hops to the root).
    #[serde(skip)]
    pub depths: Vec<usize>,
    /// Tree entries per live node.
    #[serde(skip)]
    pub entries: Vec<f64>,
    /// Children entries per live node.
    #[serde(skip)]
    pub children: Vec<f64>,
    /// Fraction of live members whose parent chain reaches a root.
    pub on_tree: f64,
    /// Topics with more than one live node holding the root role.
    pub split_topics: u64,
}

/// One run's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Σ delivered / Σ eligible.
    pub delivery_ratio_with_repair: f64,
    /// Σ members the tree got a copy to (first or not; the origin counts) / Σ eligible.
    pub delivery_ratio_tree_only: f64,
    /// §4.10's ratio: only members whose first copy came down the tree (or the origin).
    pub delivery_ratio_first_phase: f64,
    /// Fraction of messages delivered to < 5% or ≥ 95% of their eligible members.
    pub bimodality: f64,
    /// The trees when publishing started.
    pub start: TreeShape,
    /// Fraction of live members on a tree at the end of the run.
    pub on_tree_at_end: f64,
    /// Mean of the on-tree fraction sampled every second from the first publish to the end.
    pub on_tree_mean: f64,
    /// Lowest of those samples.
    pub on_tree_min: f64,
    /// Members alive at the end that were never on their tree in any sample (every 100 ms
    /// until publishing, every second after).
    pub never_on_tree: u64,
    /// Seconds from the subscriptions until every live member had a parent (or the limit).
    pub attach_s: f64,
    /// RDP of each (message, member) reached by the tree.
    #[serde(skip)]
    pub rdp: Vec<f64>,
    /// Per message: mean tree delay / mean unicast delay.
    #[serde(skip)]
    pub rad: Vec<f64>,
    /// Per message: max tree delay / max unicast delay.
    #[serde(skip)]
    pub rmd: Vec<f64>,
    /// Σ stress over (message, node) pairs, and the number of pairs.
    pub stress_sum: u64,
    /// (message, node) pairs that handled a tree copy.
    pub stress_pairs: u64,
    /// Largest stress of any node for any message.
    pub link_stress_max: u64,
    /// Scribe control messages per node over the run.
    pub control_messages_per_node: f64,
    /// The same per second.
    pub control_messages_per_node_per_s: f64,
    /// Ring messages per node per second.
    pub ring_messages_per_node_per_s: f64,
    /// (digests + solicitations + retransmissions) / Σ delivered.
    pub repair_msgs_per_delivery: f64,
    /// Nodes crashed.
    pub crashes: u64,
    /// Messages published.
    pub published: u64,
    /// Publishes skipped: every member of the topic had crashed.
    pub publish_skipped: u64,
    /// Gap events at live nodes.
    pub gaps: u64,
    /// Eligible (message, member) pairs covered by gaps.
    pub gap_pairs: u64,
    /// Deliveries out of per-origin order or repeated (must be 0).
    pub fifo_violations: u64,
    /// Rounds run after the last publish.
    pub drain_rounds: u64,
    /// True if the run ended quiescent.
    pub quiescent: bool,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Latencies of tree deliveries.
    #[serde(skip)]
    pub tree: Samples,
    /// Latencies of repaired deliveries.
    #[serde(skip)]
    pub repaired: Samples,
}

/// Run one repetition.
pub fn run_once(p: &Params, run: u64) -> RunResult {
    let Setup { sim, work, topics, members } = build(p, run);
    let n = p.nodes;
    let ever_on = members.iter().map(|m| vec![false; m.len()]).collect();
    let mut d = Driver {
        p,
        sim,
        watch: Watch::default(),
        work,
        topics,
        members,
        live: vec![true; n],
        actions: BTreeMap::new(),
        seq: 0,
        published_by: HashMap::new(),
        msgs: Vec::new(),
        crashes: 0,
        skipped: 0,
        ever_on,
        on_samples: Vec::new(),
    };
    let period = d.p.configs().pbcast.period;
    let publish_span = p.publish_interval * p.messages as u64;
    let horizon =
        Instant::ZERO + p.attach_limit + publish_span + period * p.drain_limit() + Duration::from_secs(1);
    if p.churn > 0.0 {
        let mean_gap = 60.0 / (p.churn * n as f64);
        let mut t = Instant::ZERO + Duration::from_secs_f64(d.work.exp(mean_gap));
        while t < horizon {
            d.push(t, Action::Crash);
            t += Duration::from_secs_f64(d.work.exp(mean_gap));
        }
    }
    // Until every live member is on a tree, or the limit.
    let step = Duration::from_millis(100);
    loop {
        let next = d.sim.now() + step;
        d.advance(next);
        if d.sample() == 1.0 || d.sim.now() >= Instant::ZERO + p.attach_limit {
            break;
        }
    }
    let publish_start = d.sim.now();
    let start = shape(&d);
    for j in 0..p.topics {
        let phase = d.work.unit() * p.publish_interval.as_secs_f64();
        for k in 0..p.messages {
            let at = publish_start + p.publish_interval * k as u64 + Duration::from_secs_f64(phase);
            d.push(at, Action::Publish(j));
        }
    }
    let last = publish_start + publish_span;
    let second = Duration::from_secs(1);
    let mut at = publish_start;
    while at < last {
        at = (at + second).min(last);
        d.advance(at);
        let f = d.sample();
        d.on_samples.push(f);
    }
    let mut drained = 0;
    let mut quiescent = false;
    while drained < p.drain_limit() {
        drained += 1;
        d.advance(last + period * drained);
        if (period * drained).as_micros() % second.as_micros() == 0 {
            let f = d.sample();
            d.on_samples.push(f);
        }
        if d.all_quiescent() {
            quiescent = true;
            break;
        }
    }
    measure(&d, start, publish_start, drained, quiescent)
}

fn shape(d: &Driver<'_>) -> TreeShape {
    let (depths, total) = d.tree_shape();
    let live: Vec<usize> = (0..d.p.nodes).filter(|&i| d.live[i]).collect();
    let entries = live.iter().map(|&i| d.sim.machine(i).scribe().entries() as f64).collect();
    let children = live.iter().map(|&i| d.sim.machine(i).scribe().children_total() as f64).collect();
    let split_topics = d
        .topics
        .iter()
        .filter(|&&t| live.iter().filter(|&&i| d.sim.machine(i).scribe().is_root(t)).count() > 1)
        .count() as u64;
    let on_tree = if total > 0 { depths.len() as f64 / total as f64 } else { 1.0 };
    TreeShape { depths, entries, children, on_tree, split_topics }
}

fn measure(
    d: &Driver<'_>,
    start: TreeShape,
    publish_start: Instant,
    drained: u64,
    quiescent: bool,
) -> RunResult {
    let n = d.p.nodes;
    let w = &d.watch;
    let member = |node: u32, j: usize| d.members[j].binary_search(&(node as usize)).is_ok();
    let live_members: Vec<u64> =
        d.members.iter().map(|m| m.iter().filter(|&&i| d.live[i]).count() as u64).collect();
    let counts: Vec<u64> = d.msgs.iter().map(|&(j, _)| live_members[j]).collect();
    let eligible = |m: u32, node: u32| d.live[node as usize] && member(node, d.msgs[m as usize].0);
    let tally = w.ledger.tally(&d.live, eligible, &counts);
    // Reached by the tree: every eligible member a tree copy got to (first or not), and the
    // origin itself. RDP, RAD and RMD over the tree copies (the origin excluded), in the
    // order of the ledger's deliveries so that sums do not depend on hash order.
    let origins = d.msgs.iter().enumerate().filter(|(k, (_, o))| eligible(*k as u32, *o as u32)).count();
    let mut per_msg: Vec<Vec<(f64, f64)>> = vec![Vec::new(); d.msgs.len()];
    let mut rdp = Vec::new();
    let mut reached = origins as u64;
    for r in w.ledger.receipts().filter(|r| r.via != Via::Local && eligible(r.msg, r.node)) {
        let Some(&tree_us) = w.tree_arrivals.get(&(r.msg, r.node)) else {
            continue;
        };
        reached += 1;
        let origin = d.msgs[r.msg as usize].1;
        let uni = d.sim.base_delay(origin, r.node as usize).as_micros() as f64;
        if uni > 0.0 {
            rdp.push(tree_us as f64 / uni);
            per_msg[r.msg as usize].push((tree_us as f64, uni));
        }
    }
    let total_eligible: u64 = counts.iter().sum();
    let tree_only = if total_eligible > 0 { reached as f64 / total_eligible as f64 } else { 0.0 };
    let (mut rad, mut rmd) = (Vec::new(), Vec::new());
    for pairs in per_msg.iter().filter(|v| !v.is_empty()) {
        let k = pairs.len() as f64;
        let (tree, uni): (f64, f64) = pairs.iter().fold((0.0, 0.0), |(a, b), (t, u)| (a + t, b + u));
        rad.push((tree / k) / (uni / k));
        let max = |f: fn(&(f64, f64)) -> f64| pairs.iter().map(f).fold(0.0, f64::max);
        rmd.push(max(|x| x.0) / max(|x| x.1));
    }
    let stress_sum: u64 = w.stress.values().map(|&c| u64::from(c)).sum();
    let link_stress_max = w.stress.values().copied().max().unwrap_or(0);
    let duration_s = d.sim.now().as_micros() as f64 / 1e6;
    let (end_depths, end_total) = d.tree_shape();
    RunResult {
        delivery_ratio_with_repair: tally.delivery_ratio,
        delivery_ratio_tree_only: tree_only,
        delivery_ratio_first_phase: tally.delivery_ratio_first_phase,
        bimodality: tally.bimodality,
        start,
        on_tree_at_end: if end_total > 0 { end_depths.len() as f64 / end_total as f64 } else { 1.0 },
        on_tree_mean: report::mean(&d.on_samples),
        on_tree_min: d.on_samples.iter().copied().fold(1.0, f64::min),
        never_on_tree: d.never_on(),
        attach_s: publish_start.as_micros() as f64 / 1e6,
        rdp,
        rad,
        rmd,
        stress_sum,
        stress_pairs: w.stress.len() as u64,
        link_stress_max: u64::from(link_stress_max),
        control_messages_per_node: w.control as f64 / n as f64,
        control_messages_per_node_per_s: w.control as f64 / n as f64 / duration_s.max(1e-9),
        ring_messages_per_node_per_s: w.ring as f64 / n as f64 / duration_s.max(1e-9),
        repair_msgs_per_delivery: if tally.total_delivered > 0 {
            w.repair as f64 / tally.total_delivered as f64
        } else {
            0.0
        },
        crashes: d.crashes,
        published: d.msgs.len() as u64,
        publish_skipped: d.skipped,
        gaps: tally.gaps,
        gap_pairs: tally.gap_pairs,
        fifo_violations: tally.fifo_violations,
        drain_rounds: drained,
        quiescent,
        duration_s,
        tree: tally.first_phase,
        repaired: tally.repair,
    }
}

/// The experiment's report: one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "scribe".
    pub experiment: &'static str,
    /// N.
    pub nodes: usize,
    /// Topics.
    pub topics: usize,
    /// Members per topic.
    pub group_size: usize,
    /// Messages per topic.
    pub messages: usize,
    /// Failures per node per minute.
    pub churn: f64,
    /// Per-datagram loss probability.
    pub loss: f64,
    /// G.
    pub gc_rounds: u64,
    /// Latency profile.
    pub latency: Profile,
    /// Number of runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Mean hops from a member to its root when publishing starts, all runs pooled.
    pub tree_depth_mean: f64,
    /// Most hops of any member.
    pub tree_depth_max: f64,
    /// The anchor: log2 N.
    pub anchor_tree_depth: f64,
    /// Fraction of live members on a tree when publishing starts, mean over runs.
    pub subscribers_on_tree: f64,
    /// The same at the end of the run.
    pub subscribers_on_tree_at_end: f64,
    /// The fraction sampled every second from the first publish to the end: mean over samples
    /// and runs.
    pub subscribers_on_tree_mean: f64,
    /// The lowest sample of any run.
    pub subscribers_on_tree_min: f64,
    /// Members alive at the end never seen on their tree, all runs.
    pub subscribers_never_on_tree: u64,
    /// Topics with two live roots when publishing started, all runs.
    pub split_topics: u64,
    /// Seconds until publishing started (every live member with a parent, or the limit).
    pub attach_s_mean: f64,
    /// Mean RDP over (message, member) pairs reached by the tree.
    pub rdp_mean: f64,
    /// Median RDP.
    pub rdp_p50: f64,
    /// 99th percentile RDP.
    pub rdp_p99: f64,
    /// Mean over messages of mean tree delay / mean unicast delay.
    pub rad_mean: f64,
    /// Mean over messages of max tree delay / max unicast delay.
    pub rmd_mean: f64,
    /// Mean tree copies sent + received per (message, node that handled it).
    pub link_stress_mean: f64,
    /// Most tree copies any node sent + received for one message.
    pub link_stress_max: u64,
    /// Tree entries per live node: mean.
    pub node_stress_topics_mean: f64,
    /// Tree entries per live node: 99th percentile.
    pub node_stress_topics_p99: f64,
    /// Tree entries per live node: max.
    pub node_stress_topics_max: f64,
    /// Children entries per live node: mean.
    pub node_stress_children_mean: f64,
    /// Children entries per live node: 99th percentile.
    pub node_stress_children_p99: f64,
    /// Children entries per live node: max.
    pub node_stress_children_max: f64,
    /// Mean over runs of Σ members the tree got a copy to / Σ eligible (the origin counts).
    pub delivery_ratio_tree_only: f64,
    /// Mean over runs of §4.10's first-phase ratio: members whose first copy came down the
    /// tree (repair can overtake a long tree path).
    pub delivery_ratio_first_phase: f64,
    /// Mean over runs of Σ delivered / Σ eligible, after repair.
    pub delivery_ratio_with_repair: f64,
    /// The worst run's delivery ratio with repair.
    pub delivery_ratio_with_repair_min: f64,
    /// The anchor for `delivery_ratio_with_repair`.
    pub anchor_delivery_ratio: f64,
    /// Fraction of messages (all runs) delivered to < 5% or ≥ 95% of their eligible members.
    pub bimodality: f64,
    /// Delivery latency p50 of tree deliveries, ms.
    pub latency_tree_p50: Option<f64>,
    /// Delivery latency p50 of repaired deliveries, ms.
    pub latency_repaired_p50: Option<f64>,
    /// Full latency figures, tree deliveries, ms.
    pub latency_tree: LatencyStats,
    /// Full latency figures, repaired deliveries, ms.
    pub latency_repaired: LatencyStats,
    /// Scribe control messages (JOIN, JoinAck, LEAVE, heartbeats, acks) per node over a run.
    pub control_messages_per_node: f64,
    /// The same per second of simulated time.
    pub control_messages_per_node_per_s: f64,
    /// Ring maintenance messages per node per second.
    pub ring_messages_per_node_per_s: f64,
    /// pbcast (digests + solicitations + retransmissions) per delivery.
    pub repair_msgs_per_delivery: f64,
    /// Nodes crashed, all runs.
    pub crashes: u64,
    /// Messages published, all runs.
    pub published: u64,
    /// Publishes skipped because every member of the topic had crashed, all runs.
    pub publish_skipped: u64,
    /// Gap events at live nodes, mean per run.
    pub gaps: f64,
    /// Eligible pairs covered by gaps, mean per run.
    pub gap_pairs: f64,
    /// Out-of-order or repeated deliveries, all runs (must be 0).
    pub fifo_violations: u64,
    /// Rounds drained after the last publish, mean.
    pub drain_rounds_mean: f64,
    /// Runs cut by the drain limit before quiescence.
    pub unquiescent_runs: u64,
    /// Simulated seconds per run, mean.
    pub duration_s_mean: f64,
    /// Per-run figures, in run order.
    pub per_run: Vec<RunResult>,
}

/// Run every repetition and summarize.
pub fn run(p: &Params, progress: &Progress) -> Report {
    run_with_results(p, progress).0
}

/// Run, keeping the per-run results (with their samples) for plotting.
pub fn run_with_results(p: &Params, progress: &Progress) -> (Report, Vec<RunResult>) {
    let results = report::parallel_runs(p.runs, report::threads(p.threads), progress, |r| run_once(p, r));
    (summarize(p, &results), results)
}

fn stats3(xs: &[f64]) -> (f64, f64, f64) {
    let max = xs.iter().copied().fold(0.0, f64::max);
    (report::round(report::mean(xs), 4), report::percentile(xs, 99.0), max)
}

fn summarize(p: &Params, results: &[RunResult]) -> Report {
    let mean = |f: &dyn Fn(&RunResult) -> f64| report::mean(&results.iter().map(f).collect::<Vec<_>>());
    let pool = |f: &dyn Fn(&RunResult) -> &[f64]| {
        results.iter().flat_map(|r| f(r).iter().copied()).collect::<Vec<f64>>()
    };
    let depths: Vec<f64> = results.iter().flat_map(|r| r.start.depths.iter().map(|&x| x as f64)).collect();
    let rdp = pool(&|r| &r.rdp);
    let (entries, children) = (pool(&|r| &r.start.entries), pool(&|r| &r.start.children));
    let (em, ep, ex) = stats3(&entries);
    let (cm, cp, cx) = stats3(&children);
    let stress_sum: u64 = results.iter().map(|r| r.stress_sum).sum();
    let stress_pairs: u64 = results.iter().map(|r| r.stress_pairs).sum();
    let tree = Samples::pooled(results.iter().map(|r| &r.tree));
    let repaired = Samples::pooled(results.iter().map(|r| &r.repaired));
    let (ts, rs) = (LatencyStats::of(&tree), LatencyStats::of(&repaired));
    let messages: u64 = results.iter().map(|r| r.published).sum();
    let bimodal = results.iter().map(|r| r.bimodality * r.published as f64).sum::<f64>();
    Report {
        experiment: "scribe",
        nodes: p.nodes,
        topics: p.topics,
        group_size: p.group_size,
        messages: p.messages,
        churn: p.churn,
        loss: p.loss,
        gc_rounds: p.gc_rounds,
        latency: p.latency,
        runs: p.runs,
        seed: p.seed,
        tree_depth_mean: report::round(report::mean(&depths), 3),
        tree_depth_max: depths.iter().copied().fold(0.0, f64::max),
        anchor_tree_depth: report::round(anchor_depth(p.nodes), 3),
        subscribers_on_tree: report::round(mean(&|r| r.start.on_tree), 6),
        subscribers_on_tree_at_end: report::round(mean(&|r| r.on_tree_at_end), 6),
        subscribers_on_tree_mean: report::round(mean(&|r| r.on_tree_mean), 6),
        subscribers_on_tree_min: report::round(results.iter().map(|r| r.on_tree_min).fold(1.0, f64::min), 6),
        subscribers_never_on_tree: results.iter().map(|r| r.never_on_tree).sum(),
        split_topics: results.iter().map(|r| r.start.split_topics).sum(),
        attach_s_mean: report::round(mean(&|r| r.attach_s), 2),
        rdp_mean: report::round(report::mean(&rdp), 3),
        rdp_p50: report::round(report::percentile(&rdp, 50.0), 3),
        rdp_p99: report::round(report::percentile(&rdp, 99.0), 3),
        rad_mean: report::round(report::mean(&pool(&|r| &r.rad)), 3),
        rmd_mean: report::round(report::mean(&pool(&|r| &r.rmd)), 3),
        link_stress_mean: if stress_pairs > 0 {
            report::round(stress_sum as f64 / stress_pairs as f64, 3)
        } else {
            0.0
        },
        link_stress_max: results.iter().map(|r| r.link_stress_max).max().unwrap_or(0),
        node_stress_topics_mean: em,
        node_stress_topics_p99: ep,
        node_stress_topics_max: ex,
        node_stress_children_mean: cm,
        node_stress_children_p99: cp,
        node_stress_children_max: cx,
        delivery_ratio_tree_only: report::round(mean(&|r| r.delivery_ratio_tree_only), 7),
        delivery_ratio_first_phase: report::round(mean(&|r| r.delivery_ratio_first_phase), 7),
        delivery_ratio_with_repair: report::round(mean(&|r| r.delivery_ratio_with_repair), 7),
        delivery_ratio_with_repair_min: report::round(
            results.iter().map(|r| r.delivery_ratio_with_repair).fold(1.0, f64::min),
            7,
        ),
        anchor_delivery_ratio: ANCHOR_DELIVERY_RATIO,
        bimodality: if messages > 0 { report::round(bimodal / messages as f64, 6) } else { 1.0 },
        latency_tree_p50: (ts.count > 0).then_some(ts.delivery_p50),
        latency_repaired_p50: (rs.count > 0).then_some(rs.delivery_p50),
        latency_tree: ts,
        latency_repaired: rs,
        control_messages_per_node: report::round(mean(&|r| r.control_messages_per_node), 2),
        control_messages_per_node_per_s: report::round(mean(&|r| r.control_messages_per_node_per_s), 3),
        ring_messages_per_node_per_s: report::round(mean(&|r| r.ring_messages_per_node_per_s), 2),
        repair_msgs_per_delivery: report::round(mean(&|r| r.repair_msgs_per_delivery), 4),
        crashes: results.iter().map(|r| r.crashes).sum(),
        published: messages,
        publish_skipped: results.iter().map(|r| r.publish_skipped).sum(),
        gaps: report::round(mean(&|r| r.gaps as f64), 3),
        gap_pairs: report::round(mean(&|r| r.gap_pairs as f64), 3),
        fifo_violations: results.iter().map(|r| r.fifo_violations).sum(),
        drain_rounds_mean: report::round(mean(&|r| r.drain_rounds as f64), 2),
        unquiescent_runs: results.iter().filter(|r| !r.quiescent).count() as u64,
        duration_s_mean: report::round(mean(&|r| r.duration_s), 3),
        per_run: results
            .iter()
            .map(|r| RunResult {
                delivery_ratio_with_repair: report::round(r.delivery_ratio_with_repair, 7),
                delivery_ratio_tree_only: report::round(r.delivery_ratio_tree_only, 7),
                delivery_ratio_first_phase: report::round(r.delivery_ratio_first_phase, 7),
                bimodality: report::round(r.bimodality, 6),
                start: TreeShape { on_tree: report::round(r.start.on_tree, 6), ..TreeShape::default() },
                on_tree_at_end: report::round(r.on_tree_at_end, 6),
                on_tree_mean: report::round(r.on_tree_mean, 6),
                on_tree_min: report::round(r.on_tree_min, 6),
                attach_s: report::round(r.attach_s, 3),
                rdp: Vec::new(),
                rad: Vec::new(),
                rmd: Vec::new(),
                control_messages_per_node: report::round(r.control_messages_per_node, 3),
                control_messages_per_node_per_s: report::round(r.control_messages_per_node_per_s, 3),
                ring_messages_per_node_per_s: report::round(r.ring_messages_per_node_per_s, 3),
                repair_msgs_per_delivery: report::round(r.repair_msgs_per_delivery, 4),
                duration_s: report::round(r.duration_s, 3),
                tree: Samples::default(),
                repaired: Samples::default(),
                ..r.clone()
            })
            .collect(),
    }
}

fn name<T: Serialize>(x: &T) -> String {
    serde_json::to_value(x).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A readable table of one report.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "scribe  N = {}  topics = {}  group size = {}  messages = {}/topic  churn = {}/node/min  loss = {}  G = {}  latency = {}  runs = {}  seed = {}\n",
        r.nodes, r.topics, r.group_size, r.messages, r.churn, r.loss, r.gc_rounds, name(&r.latency), r.runs, r.seed
    ));
    s.push_str(&format!(
        "  tree depth            mean {:.3}   max {}   (anchor: near log2 N = {:.2} or better)\n",
        r.tree_depth_mean, r.tree_depth_max, r.anchor_tree_depth
    ));
    s.push_str(&format!(
        "  on a tree             {:.4}% of live members when publishing started ({:.1} s); after: mean {:.4}%, lowest {:.4}%, end {:.4}%\n",
        100.0 * r.subscribers_on_tree,
        r.attach_s_mean,
        100.0 * r.subscribers_on_tree_mean,
        100.0 * r.subscribers_on_tree_min,
        100.0 * r.subscribers_on_tree_at_end
    ));
    s.push_str(&format!(
        "                        never on a tree: {} members; topics with two roots: {}\n",
        r.subscribers_never_on_tree, r.split_topics
    ));
    s.push_str(&format!(
        "  delivery ratio        with repair {:.7} (anchor ≥ {}; worst run {:.7})   tree only {:.5}   first copy by the tree {:.5}\n",
        r.delivery_ratio_with_repair,
        r.anchor_delivery_ratio,
        r.delivery_ratio_with_repair_min,
        r.delivery_ratio_tree_only,
        r.delivery_ratio_first_phase
    ));
    s.push_str(&format!(
        "  delay penalty         RDP mean {:.3} (p50 {:.3}, p99 {:.3})   RAD {:.3}   RMD {:.3}\n",
        r.rdp_mean, r.rdp_p50, r.rdp_p99, r.rad_mean, r.rmd_mean
    ));
    s.push_str(&format!(
        "  link stress           mean {:.3}   max {}   (copies sent + received per node per message)\n",
        r.link_stress_mean, r.link_stress_max
    ));
    s.push_str(&format!(
        "  node stress           tree entries mean {:.3} p99 {} max {}   children mean {:.3} p99 {} max {}\n",
        r.node_stress_topics_mean,
        r.node_stress_topics_p99,
        r.node_stress_topics_max,
        r.node_stress_children_mean,
        r.node_stress_children_p99,
        r.node_stress_children_max
    ));
    s.push_str(&format!(
        "  latency (ms)          tree p50 {:.1} p99 {:.1} ({} pairs)   repaired p50 {:.1} p99 {:.1} ({} pairs)\n",
        r.latency_tree.delivery_p50,
        r.latency_tree.delivery_p99,
        r.latency_tree.count,
        r.latency_repaired.delivery_p50,
        r.latency_repaired.delivery_p99,
        r.latency_repaired.count
    ));
    s.push_str(&format!(
        "  cost                  {:.1} tree control messages per node ({:.2}/s); ring {:.1}/node/s; {:.3} repair messages per delivery\n",
        r.control_messages_per_node,
        r.control_messages_per_node_per_s,
        r.ring_messages_per_node_per_s,
        r.repair_msgs_per_delivery
    ));
    s.push_str(&format!(
        "  run                   {} messages, {} crashes, {} skipped; gaps {:.2} ({:.2} pairs) per run; bimodality {:.4}; drain {:.1} rounds, {} cut; FIFO violations {}\n",
        r.published,
        r.crashes,
        r.publish_skipped,
        r.gaps,
        r.gap_pairs,
        r.bimodality,
        r.drain_rounds_mean,
        r.unquiescent_runs,
        r.fifo_violations
    ));
    s
}

/// RDP histogram: bins per decade from 1, and the number of bins (1 … 100).
const RDP_BINS_PER_DECADE: usize = 20;
const RDP_BINS: usize = 40;

/// Draw three panels: tree depth of the members, RDP, and delivery latency of tree and
/// repaired deliveries.
pub fn plot(p: &Params, results: &[RunResult], r: &Report, path: &Path) -> Result<(), String> {
    let max_depth = results.iter().flat_map(|x| x.start.depths.iter().copied()).max().unwrap_or(0);
    let mut depth = vec![0.0; max_depth + 1];
    for &x in results.iter().flat_map(|x| x.start.depths.iter()) {
        depth[x] += 1.0;
    }
    let depth_panel = HistPanel {
        title: format!("tree depth (mean {:.2}, log2 N = {:.1})", r.tree_depth_mean, r.anchor_tree_depth),
        x_label: "hops from the root".into(),
        y_label: "members".into(),
        edges: (0..=max_depth + 1).map(|k| k as f64 - 0.5).collect(),
        series: vec![("members".into(), depth)],
        log_x: false,
        log_y: false,
    };
    let rdp_bin =
        |x: f64| ((x.max(1.0).log10() * RDP_BINS_PER_DECADE as f64).floor() as usize).min(RDP_BINS - 1);
    let mut rdp = vec![0.0; RDP_BINS];
    for &x in results.iter().flat_map(|x| x.rdp.iter()) {
        rdp[rdp_bin(x)] += 1.0;
    }
    let used = (0..RDP_BINS).rev().find(|&k| rdp[k] > 0.0).map_or(1, |k| k + 1);
    let rdp_panel = HistPanel {
        title: format!("relative delay penalty (mean {:.2})", r.rdp_mean),
        x_label: "tree delay / unicast delay (log scale)".into(),
        y_label: "(message, member) pairs".into(),
        edges: (0..=used).map(|k| 10f64.powf(k as f64 / RDP_BINS_PER_DECADE as f64)).collect(),
        series: vec![("tree".into(), rdp[..used].to_vec())],
        log_x: true,
        log_y: false,
    };
    let tree = Samples::pooled(results.iter().map(|x| &x.tree));
    let repaired = Samples::pooled(results.iter().map(|x| &x.repaired));
    let (ht, hr) = (latency_hist(&tree.delivery_ms), latency_hist(&repaired.delivery_ms));
    let used = (0..LAT_BINS)
        .rev()
        .find(|&k| ht[k] + hr[k] > 0)
        .map_or(LAT_BINS, |k| ((k / LAT_BINS_PER_DECADE + 1) * LAT_BINS_PER_DECADE).min(LAT_BINS));
    let counts = |h: &[u64]| h[..used].iter().map(|&c| c as f64).collect::<Vec<f64>>();
    let latency_panel = HistPanel {
        title: "delivery latency".into(),
        x_label: "ms after publish (log scale)".into(),
        y_label: "(message, member) pairs (log scale)".into(),
        edges: latency_edges()[..=used].to_vec(),
        series: vec![("tree".into(), counts(&ht)), ("repaired".into(), counts(&hr))],
        log_x: true,
        log_y: true,
    };
    let title = format!(
        "scribe, N = {}, {} topics × {} members, loss = {}, churn = {}/node/min: delivered {:.5} by the tree, {:.6} with repair",
        p.nodes,
        p.topics,
        p.group_size,
        p.loss,
        p.churn,
        r.delivery_ratio_tree_only,
        r.delivery_ratio_with_repair
    );
    report::plot_histograms(path, &title, &[depth_panel, rdp_panel, latency_panel])
}
