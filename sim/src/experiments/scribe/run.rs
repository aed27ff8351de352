//! One run of the `scribe` experiment: the workload (churn, publishes), the samples of the
//! trees, and the measurement of one run's quantities.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use hearsay_overlay::scribe::ScribeEvent;
use hearsay_protocols::pbcast::{MsgId, PbMessage, Via};
use hearsay_protocols::{Duration, Instant, PeerView, Rng, TopicId, Transmit};
use serde::Serialize;

use super::{Multicast, MulticastEvent, MulticastMessage, PAYLOAD_BYTES, Params, Setup, build, publish};
use crate::experiments::delivery::{Ledger, Samples};
use crate::kernel::{Fate, Fault, Observer, Sim};
use crate::report;

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
    fn copy(&mut self, msg: &MulticastMessage, node: usize) {
        if let MulticastMessage::Tree(m) = msg {
            if let Some(k) = m.data().and_then(|d| self.ledger.message(&d.id)) {
                *self.stress.entry((k, node as u32)).or_insert(0) += 1;
            }
        }
    }
}

impl Observer<Multicast> for Watch {
    fn on_event(&mut self, now: Instant, node: usize, event: MulticastEvent) {
        match &event {
            MulticastEvent::Pbcast(e) => self.ledger.on_event(now, node, e),
            MulticastEvent::Tree(ScribeEvent::FirstPhase(data)) => {
                if let Some(k) = self.ledger.message(&data.id) {
                    let us = (now - self.ledger.published_at(k)).as_micros();
                    self.tree_arrivals.entry((k, node as u32)).or_insert(us);
                }
            }
            _ => {}
        }
    }

    fn on_send(
        &mut self,
        _: Instant,
        from: usize,
        _: Option<usize>,
        t: &Transmit<MulticastMessage>,
        _: Fate,
    ) {
        match &t.msg {
            MulticastMessage::Ring(_) => self.ring += 1,
            MulticastMessage::Tree(m) if m.is_control() => self.control += 1,
            MulticastMessage::Tree(_) => self.copy(&t.msg, from),
            MulticastMessage::Pbcast(PbMessage::Repair { entries }) => self.repair += entries.len() as u64,
            MulticastMessage::Pbcast(_) => self.repair += 1,
        }
    }

    fn on_deliver(&mut self, _: Instant, _: usize, to: usize, msg: &MulticastMessage) {
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
    sim: Sim<Multicast>,
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
                self.sim.call(i, &mut self.watch, move |m, now| m.handle_topic_peers(now, topic, v));
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
        let r = self.sim.call(origin, &mut self.watch, move |m, now| publish(m, now, topic, payload));
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
