//! Experiment `scribe`: Scribe topic trees over the Chord ring, with bimodal multicast repairing
//! what the trees lose (Castro et al. 2002; PROTOCOLS.md §8.11).
//!
//! N nodes each run the ring, the trees and pbcast composed into one machine: the daemon
//! Engine's own multicast stack ([`Multicast`], the Engine without SWIM, anti-entropy, rumors
//! and aggregation), so the experiment measures the wiring the daemon runs. The ring is built ideal (every node joins
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
//! Ring and tree options (issue 14, item 6; off by default, as in the daemon):
//! [`Params::finger_base_bits`] (a base-16 finger table routes in about log16 N hops),
//! [`Params::proximity_candidates`] (each finger the lowest-RTT of its interval's first K
//! members; the RTT is twice the network model's base delay, what a measured RTT converges
//! to) and [`Params::tree_streams`] (tree copies on streams, whose retransmissions under loss
//! the network then models: [`NetConfig::stream_retransmit`]).
//!
//! Quantities (§8.11, the names):
//!
//! - `delivery_ratio_with_repair`: §4.10's `delivery_ratio`. Eligible for a message: the
//!   topic's members not crashed at the end (all subscribed before the first publish). Means
//!   over runs.
//! - `delivery_ratio_tree_only`: the (message, member) pairs a tree copy reached, first or not
//!   (the origin counts), over the eligible pairs: what the tree alone delivers.
//!   **Departure:** §8.11 defines it as §4.10's `delivery_ratio_first_phase` (the member's
//!   *first* copy came down the tree), reported here as `delivery_ratio_first_phase`. With a
//!   multi-hop tree the two differ: pbcast's digest gossip from the origin overtakes the
//!   longest tree paths, so even with no loss and no churn only ~86–90% of first copies come
//!   down the tree while the tree reaches every member.
//! - `tree_depth_mean` / `_p99` / `_max`: hops from each live member to its tree's root,
//!   following parent pointers when publishing starts (members not on a tree then are counted
//!   in `subscribers_on_tree` instead), pooled over runs; the anchor is log2 N.
//! - `subscribers_on_tree`: live members whose parent chain reaches a root when publishing
//!   starts; `_mean` / `_min` of the same sampled every second after; `_never_on_tree`: live
//!   members not on their tree in any sample.
//! - `rdp_mean`: for each (message, member other than the origin) a tree copy reached, the
//!   tree copy's arrival − publish time over the network model's base one-way delay from
//!   origin to member; `rad_mean` and `rmd_mean` per message (mean over mean, max over max),
//!   averaged over messages. Base delays have no jitter; delivered messages have up to 10%,
//!   so a direct copy scores 1.0–1.1. The paper's fingers (the default) ignore proximity, so
//!   a tree path is a chain of random WAN hops (Scribe's figures come from Pastry's proximity routing).
//! - `link_stress_mean` / `link_stress_max`: with end-to-end latency the only links are access
//!   links: for each message and each node that handled it, the tree copies (`ScribePublish`
//!   and `TreeData`) it sent plus those it received; mean and max over all (message, node).
//! - `node_stress_*`: tree entries and children entries per live node when publishing starts
//!   (nodes in no tree count as 0): mean, p99, max.
//! - `control_messages_per_node`: Scribe maintenance messages (JOIN, JoinAck, LEAVE,
//!   heartbeats and their acks) sent over the whole run, per node; also per node per second.
//!   Ring maintenance and pbcast repair are reported beside it.

mod report;
mod run;

use std::sync::Arc;

use bytes::Bytes;
use std::collections::HashMap;

use hearsay_overlay::chord::{ChordConfig, Detector, RingNode, RingSnapshot};
use hearsay_overlay::scribe::ScribeConfig;
use hearsay_protocols::pbcast::{MsgId, PbConfig, Start};
use hearsay_protocols::{Duration, Instant, NodeId, PeerView, Rng, Seed, Timing, TopicId};

pub use self::report::{Report, plot, run, run_with_results, table};
pub use self::run::{RunResult, TreeShape, run_once};
pub use super::pbcast::Profile;
use crate::kernel::{Latency, NetConfig, Network, Sim, node_ids};
pub use hearsay::engine::multicast::{
    Multicast, MulticastConfig, MulticastError, MulticastEvent, MulticastMessage,
};

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
    /// log2 of the ring's finger base (`ChordConfig::finger_base_bits`).
    pub finger_base_bits: u8,
    /// Proximity neighbour selection: candidates per finger, weighed by the network model's
    /// round-trip time between the two nodes (what a measured RTT converges to); 0: off.
    pub proximity_candidates: usize,
    /// Successor-list entries compete with fingers as next hops
    /// (`ChordConfig::route_via_successors`).
    pub route_via_successors: bool,
    /// Tree copies on streams (`ScribeConfig::tree_streams`); the network then models a
    /// stream's retransmissions under loss (`NetConfig::stream_retransmit`).
    pub tree_streams: bool,
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
            finger_base_bits: 1,
            proximity_candidates: 0,
            route_via_successors: false,
            tree_streams: false,
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
    pub fn configs(&self) -> MulticastConfig {
        MulticastConfig {
            chord: Arc::new(ChordConfig {
                detector: Detector::Standalone,
                timing: Timing::Phased,
                finger_base_bits: self.finger_base_bits,
                proximity_candidates: self.proximity_candidates,
                route_via_successors: self.route_via_successors,
                ..ChordConfig::default()
            }),
            scribe: Arc::new(ScribeConfig { tree_streams: self.tree_streams, ..ScribeConfig::default() }),
            pbcast: Arc::new(PbConfig {
                gc_rounds: self.gc_rounds,
                pull_on_missing: false,
                ..PbConfig::default()
            }),
        }
    }

    pub(super) fn net(&self) -> NetConfig {
        let (latency, jitter) = match self.latency {
            Profile::Zero => (Latency::Zero, 0.0),
            Profile::Lan => (Latency::LAN, 0.1),
            Profile::Wan => (Latency::WAN, 0.1),
        };
        NetConfig {
            latency,
            jitter,
            loss: self.loss,
            stream_loss: false,
            stream_retransmit: self.tree_streams,
        }
    }
}

/// Publish `payload` on `topic` at `m` with the tree as its first phase (what the Engine does
/// for a topic that is not `gossip`-mode). Returns the message id.
pub fn publish(
    m: &mut Multicast,
    now: Instant,
    topic: TopicId,
    payload: Bytes,
) -> Result<MsgId, MulticastError> {
    let data = m.publish(now, topic, payload)?;
    let id = data.id;
    m.send_down_tree(now, data);
    Ok(id)
}

/// A run's nodes and workload before anything happened (exposed for tests).
pub struct Setup {
    /// The simulation: every node on the ring, every member subscribed at t = 0.
    pub sim: Sim<Multicast>,
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
    let snapshot = RingSnapshot::new(ids.iter().copied());
    let index: HashMap<NodeId, u32> = ids.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect();
    // The network model of this run (the same topology as the simulation's): proximity
    // selection weighs a candidate by its base round-trip time, what a measured RTT converges to.
    let model = Network::new(p.net(), p.seed, run, n);
    let configs = p.configs();
    let topic_ids = topics.clone();
    let sim = Sim::new(p.seed, run, n, p.net(), move |init| {
        let auth = Arc::new(hearsay_protocols::auth::Unchecked(init.id));
        let mut node = Multicast::new(init.id, init.id, auth, &configs, &init.seed, init.now);
        if init.restarts == 0 {
            // A RingId collision (probability ~N²/2^65) leaves that node off the ring.
            let me = init.index as u32;
            let rtt = |x: &RingNode| index.get(&x.id).map(|&j| model.base_delay(me, j) * 2);
            let _ = node.join_from_members_near(init.now, &snapshot, rtt);
            for &j in &topics_of[init.index] {
                node.handle_topic_peers(init.now, topic_ids[j], views[j].clone());
                node.subscribe(init.now, topic_ids[j], Start::FromFirst, true);
            }
        }
        node
    });
    Setup { sim, work, topics, members }
}
