//! Experiment `cluster`: N full Engines (the daemon's composition of every machine, driven
//! through encoded frames exactly as the runtime drives it) under loss, crashes and a
//! partition.
//!
//! Timeline (simulated seconds): the cluster starts converged (every member alive in every
//! table, the ring built from it); at 0.5 s each topic's subscribers subscribe; publishing
//! runs from 5 s for `--duration` seconds at `--publish-rate` messages per second, each from a
//! uniformly random live node on a uniformly random topic; a third of the way in,
//! `--crash-fraction` of the nodes crash for good; halfway, the nodes are split into two
//! random halves for `--partition-secs`, then healed; after publishing, the run drains for
//! `--drain` seconds.
//!
//! Restarts: with `--restart-fraction F`, a fraction F of the nodes (other than the crashed
//! ones) crash a quarter of the way in and come back `--down-secs` later. Each node keeps an
//! in-memory store that stands in for the daemon's data dir: everything the Engine asks to
//! keep ([`Persist`](hearsay::engine::Persist)) goes there, and a restarted node gets it back
//! ([`Engine::restore`]), keeps its stream epoch and resubscribes its topics from where it
//! stopped ([`SubscribeFrom::Resume`]), as a restarted agent does for its durable
//! subscriptions. With `--lose-store` a restarted node starts empty instead (new streams, new
//! subscriptions from the current heads): its pairs are then not counted.
//!
//! For every message m and every subscriber s of its topic that subscribed before m and never
//! crashed, s must either deliver m or announce a gap covering it. The report counts both,
//! and `silent_losses`: pairs with neither (the claim is that this is 0), and duplicates
//! (delivered twice; must be 0). A message whose publisher crashed for good before any copy
//! got anywhere (no subscriber delivered it nor announced a gap covering it) is reported as
//! `died_with_publisher` and its pairs are not counted: nobody can know it existed (the
//! daemon acknowledged it after its store write, and that store is gone). With `HEARSAY_DEBUG_SILENT` set in the environment, every
//! silent loss is printed on stderr with the subscriber's view of that stream.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use hearsay::engine::{Engine, EngineConfig, EngineEvent, Persist, Restored, SubscribeFrom};
use hearsay_overlay::swim::{Addr, SwimConfig};
use hearsay_protocols::auth::Unchecked;
use hearsay_protocols::pbcast::MsgId;
use hearsay_protocols::wire::{Frame, Protocol};
use hearsay_protocols::{Instant, NodeId, Rng, Seed, Seq, TopicId, Transmit};
use serde::Serialize;

use crate::kernel::{Fate, Fault, Latency, NetConfig, Observer, Sim, node_ids};
use crate::report::{self, Progress};

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Nodes.
    pub nodes: usize,
    /// Topics.
    pub topics: usize,
    /// Subscribers per topic.
    pub subscribers: usize,
    /// Messages published per simulated second (all publishers together).
    pub publish_rate: f64,
    /// Seconds of publishing.
    pub duration: f64,
    /// Datagram loss probability.
    pub loss: f64,
    /// Fraction of nodes that crash a third of the way through publishing.
    pub crash_fraction: f64,
    /// Length of the partition halfway through (0: none).
    pub partition_secs: f64,
    /// Seconds of draining after the last publish.
    pub drain: f64,
    /// Network latency model.
    pub latency: Latency,
    /// Runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Worker threads (0 = all cores).
    pub threads: usize,
    /// Fraction of nodes that crash a quarter of the way in and restart.
    pub restart_fraction: f64,
    /// Seconds a restarting node stays down.
    pub down_secs: f64,
    /// Restarted nodes lose their store (start empty).
    pub lose_store: bool,
    /// Also break the bytes down by message kind (decodes every frame: slower).
    pub breakdown: bool,
}

impl Params {
    /// Defaults for `nodes` nodes.
    pub fn new(nodes: usize) -> Params {
        Params {
            nodes,
            topics: 10,
            subscribers: nodes.min(100),
            publish_rate: 20.0,
            duration: 30.0,
            loss: 0.0,
            crash_fraction: 0.0,
            partition_secs: 0.0,
            drain: 60.0,
            latency: Latency::LAN,
            runs: 1,
            seed: 1,
            threads: 0,
            restart_fraction: 0.0,
            down_secs: 10.0,
            lose_store: false,
            breakdown: false,
        }
    }
}

/// One run's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunResult {
    /// Messages published.
    pub published: u64,
    /// (message, eligible subscriber) pairs.
    pub eligible: u64,
    /// Pairs delivered.
    pub delivered: u64,
    /// Pairs announced as gaps (not delivered).
    pub gapped: u64,
    /// Pairs neither delivered nor announced: silent loss.
    pub silent_losses: u64,
    /// Messages of a publisher that crashed for good that no subscriber delivered nor
    /// announced: they died with it before any copy got anywhere (nobody can know they
    /// existed), so their pairs are not counted.
    pub died_with_publisher: u64,
    /// Deliveries of a message a subscriber had already delivered.
    pub duplicates: u64,
    /// Gap events.
    pub gap_events: u64,
    /// Delivery latency percentiles over delivered pairs, milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Frame bytes (plus 48 bytes per datagram of overhead) sent per delivered pair.
    pub bytes_per_delivery: f64,
    /// Messages sent per delivered pair (relative message redundancy).
    pub messages_per_delivery: f64,
    /// Bytes each node sent per simulated second, by protocol.
    pub node_bytes_per_s: BTreeMap<String, f64>,
    /// With `breakdown`: bytes each node sent per simulated second by message kind
    /// (`Protocol/Message`; SWIM's piggybacked updates apart, as `Membership/+Update`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_bytes_per_s_by_kind: BTreeMap<String, f64>,
    /// Bytes each node sent per simulated second in the second half of the drain, when
    /// nothing is published any more: the background cost, by protocol.
    pub idle_node_bytes_per_s: BTreeMap<String, f64>,
    /// With `breakdown`: the same by message kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub idle_node_bytes_per_s_by_kind: BTreeMap<String, f64>,
    /// Accounted state per node ([`Engine::state_bytes`], mean over nodes), the highest of
    /// the samples taken every 5 simulated seconds.
    pub accounted_state_bytes_per_node_peak: f64,
    /// The same at the end of the run.
    pub accounted_state_bytes_per_node_end: f64,
    /// Nodes crashed.
    pub crashed: u64,
    /// Nodes restarted.
    pub restarted: u64,
}

/// The experiment's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "cluster".
    pub experiment: &'static str,
    /// Nodes.
    pub nodes: usize,
    /// Topics.
    pub topics: usize,
    /// Subscribers per topic.
    pub subscribers_per_topic: usize,
    /// Messages per second.
    pub publish_rate: f64,
    /// Datagram loss.
    pub loss: f64,
    /// Fraction crashed.
    pub crash_fraction: f64,
    /// Partition length.
    pub partition_secs: f64,
    /// Fraction restarted.
    pub restart_fraction: f64,
    /// Seconds down.
    pub down_secs: f64,
    /// Restarted nodes lost their store.
    pub lose_store: bool,
    /// Runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Delivered pairs / eligible pairs, over all runs.
    pub delivery_ratio: f64,
    /// (delivered + announced) / eligible: 1.0 means nothing was lost silently.
    pub accounted_ratio: f64,
    /// Silent losses over all runs.
    pub silent_losses: u64,
    /// Messages that died with a publisher that crashed for good, over all runs (not counted
    /// in the pairs).
    pub died_with_publisher: u64,
    /// Duplicate deliveries over all runs.
    pub duplicates: u64,
    /// Gap events over all runs.
    pub gaps: u64,
    /// Median delivery latency (mean over runs), ms.
    pub latency_p50_ms: f64,
    /// 99th percentile (mean over runs), ms.
    pub latency_p99_ms: f64,
    /// Bytes sent per delivered pair (mean over runs).
    pub bytes_per_delivery: f64,
    /// Messages sent per delivered pair (mean over runs).
    pub messages_per_delivery: f64,
    /// Bytes each node sent per simulated second, by protocol (mean over runs): the
    /// background cost that `bytes_per_delivery` spreads over the deliveries.
    pub node_bytes_per_s: BTreeMap<String, f64>,
    /// With `breakdown`: bytes each node sent per simulated second by message kind (mean over
    /// runs; `Protocol/Message`, SWIM's piggybacked updates apart as `Membership/+Update`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_bytes_per_s_by_kind: BTreeMap<String, f64>,
    /// Bytes each node sent per simulated second in the second half of the drain, nothing
    /// published any more (mean over runs): the background cost, by protocol.
    pub idle_node_bytes_per_s: BTreeMap<String, f64>,
    /// With `breakdown`: the same by message kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub idle_node_bytes_per_s_by_kind: BTreeMap<String, f64>,
    /// Resident bytes per simulated node (first run, including its queue share).
    pub state_bytes_per_node: Option<f64>,
    /// State the simulated nodes' machines account for themselves ([`Engine::state_bytes`]:
    /// member tables, histories, stores, trees), per node: the highest of the samples taken
    /// every 5 simulated seconds (mean over nodes, mean over runs). The simulator's own
    /// accounting, not its resident size.
    pub accounted_state_bytes_per_node_peak: f64,
    /// The same at the end of the runs.
    pub accounted_state_bytes_per_node_end: f64,
    /// Per-run figures.
    pub per_run: Vec<RunResult>,
}

/// A node's store in the simulator: what the daemon keeps in its data dir.
#[derive(Clone, Debug, Default)]
struct MemStore {
    /// Last own seq per topic.
    counters: BTreeMap<TopicId, Seq>,
    /// Messages kept (retention: unbounded here; the Engine keeps what fits its histories).
    messages: BTreeMap<(TopicId, NodeId, Seq), hearsay_protocols::pbcast::Data>,
    /// Highest seq kept per stream (messages and gaps).
    heads: BTreeMap<(TopicId, NodeId), Seq>,
    /// Topics subscribed (resumed after a restart).
    topics: Vec<String>,
}

impl MemStore {
    fn keep(&mut self, p: Persist) {
        match p {
            Persist::Message { data, own } => {
                let id = data.id;
                if own {
                    let c = self.counters.entry(id.topic).or_insert(0);
                    *c = (*c).max(id.seq);
                }
                let h = self.heads.entry((id.topic, id.origin)).or_insert(0);
                *h = (*h).max(id.seq);
                self.messages.insert((id.topic, id.origin, id.seq), data);
            }
            Persist::Gap { topic, origin, last, .. } => {
                let h = self.heads.entry((topic, origin)).or_insert(0);
                *h = (*h).max(last);
            }
        }
    }

    fn restored(&self, per_stream: usize) -> Restored {
        let mut messages = Vec::new();
        let mut by_stream: BTreeMap<(TopicId, NodeId), Vec<hearsay_protocols::pbcast::Data>> =
            BTreeMap::new();
        for ((t, o, _), d) in &self.messages {
            by_stream.entry((*t, *o)).or_default().push(d.clone());
        }
        for (_, v) in by_stream {
            let skip = v.len().saturating_sub(per_stream);
            messages.extend(v.into_iter().skip(skip));
        }
        Restored {
            counters: self.counters.iter().map(|(t, s)| (*t, *s)).collect(),
            heads: self.heads.iter().map(|((t, o), s)| (*t, *o, *s)).collect(),
            messages,
        }
    }
}

#[derive(Default)]
struct Watch {
    /// Each node's store.
    stores: Rc<RefCell<Vec<MemStore>>>,
    /// node index → deliveries (origin, topic, seq).
    seen: HashSet<(u32, NodeId, TopicId, Seq)>,
    /// node → topic → origin → gaps (first, last).
    gaps: HashMap<(u32, TopicId, NodeId), Vec<(Seq, Seq)>>,
    gap_events: u64,
    duplicates: u64,
    latencies: Vec<u64>,
    bytes: u64,
    messages: u64,
    /// Bytes by frame kind (`None`: a frame that does not open).
    bytes_by_kind: BTreeMap<Option<Protocol>, u64>,
    /// With `breakdown`: bytes by message kind.
    by_message: Option<BTreeMap<String, u64>>,
    /// From this instant on the cluster is idle (the second half of the drain): what is
    /// sent is the background cost.
    idle_from: Instant,
    /// Bytes sent while idle, by frame kind, and with `breakdown` by message kind too.
    idle_by_kind: BTreeMap<Option<Protocol>, u64>,
    idle_by_message: Option<BTreeMap<String, u64>>,
}

impl Observer<Engine> for Watch {
    fn on_event(&mut self, now: Instant, node: usize, event: EngineEvent) {
        match event {
            EngineEvent::Delivered(d) => {
                let MsgId { origin, topic, seq } = d.id;
                if self.seen.insert((node as u32, origin, topic, seq)) {
                    self.latencies.push(now.as_micros().saturating_sub(d.published_at.as_micros()));
                } else {
                    self.duplicates += 1;
                }
            }
            EngineEvent::Gap { topic, origin, first, last } => {
                self.gap_events += 1;
                self.gaps.entry((node as u32, topic, origin)).or_default().push((first, last));
            }
            EngineEvent::Persist(p) => {
                if let Some(s) = self.stores.borrow_mut().get_mut(node) {
                    s.keep(p);
                }
            }
            _ => {}
        }
    }
    fn on_send(&mut self, now: Instant, _: usize, _: Option<usize>, t: &Transmit<Bytes>, _: Fate) {
        self.messages += 1;
        let bytes = t.msg.len() as u64 + 48;
        self.bytes += bytes;
        let frame = Frame::open(&t.msg, usize::MAX).ok();
        *self.bytes_by_kind.entry(frame.map(|f| f.kind)).or_default() += bytes;
        if let (Some(by), Some(f)) = (self.by_message.as_mut(), frame) {
            breakdown(&f, bytes, by);
        }
        if now >= self.idle_from {
            *self.idle_by_kind.entry(frame.map(|f| f.kind)).or_default() += bytes;
            if let (Some(by), Some(f)) = (self.idle_by_message.as_mut(), frame) {
                breakdown(&f, bytes, by);
            }
        }
    }
}

/// The variant name of a message, from its `Debug` form.
fn variant<M: std::fmt::Debug>(m: &M) -> String {
    let s = format!("{m:?}");
    s.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

/// Count `bytes` of frame `f` under its protocol and message kind; SWIM's piggybacked updates
/// are counted apart, by update kind.
fn breakdown(f: &Frame<'_>, bytes: u64, by: &mut BTreeMap<String, u64>) {
    use hearsay_overlay::chord::ChordMessage;
    use hearsay_overlay::scribe::ScribeMessage;
    use hearsay_overlay::swim::SwimMessage;
    use hearsay_protocols::pbcast::PbMessage;
    let mut add = |k: String, b: u64| *by.entry(k).or_default() += b;
    let kind = format!("{:?}", f.kind);
    match f.kind {
        Protocol::Membership => match f.decode::<SwimMessage>() {
            Ok(m) => {
                let mut rest = bytes;
                for u in m.updates() {
                    let b = u.encoded_len() as u64;
                    rest = rest.saturating_sub(b);
                    add(format!("{kind}/+{}", variant(u)), b);
                }
                add(format!("{kind}/{}", variant(&m)), rest);
            }
            Err(_) => add(format!("{kind}/?"), bytes),
        },
        Protocol::Ring => {
            add(format!("{kind}/{}", f.decode::<ChordMessage>().map_or("?".into(), |m| variant(&m))), bytes)
        }
        Protocol::Tree => {
            add(format!("{kind}/{}", f.decode::<ScribeMessage>().map_or("?".into(), |m| variant(&m))), bytes)
        }
        Protocol::Pbcast => {
            add(format!("{kind}/{}", f.decode::<PbMessage>().map_or("?".into(), |m| variant(&m))), bytes)
        }
        _ => add(kind, bytes),
    }
}

struct Published {
    /// The publishing node.
    node: usize,
    origin: NodeId,
    topic: TopicId,
    seq: Seq,
}

fn secs(s: f64) -> Instant {
    Instant::from_micros((s * 1e6) as u64)
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Run one repetition; also returns resident bytes per node measured around the setup.
pub fn run_once(p: &Params, run: u64) -> (RunResult, Option<f64>) {
    let before = resident_bytes();
    let ids = node_ids(p.seed, run, p.nodes);
    let config = Arc::new(EngineConfig::with_swim(SwimConfig::lan()));
    let members = ids.clone();
    let net = NetConfig {
        latency: p.latency,
        jitter: 0.1,
        loss: p.loss,
        stream_loss: false,
        stream_retransmit: false,
    };
    let stores: Rc<RefCell<Vec<MemStore>>> = Rc::new(RefCell::new(vec![MemStore::default(); p.nodes]));
    let kept = stores.clone();
    let lose_store = p.lose_store;
    let mut sim: Sim<Engine> = Sim::new(p.seed, run, p.nodes, net, move |init| {
        if init.restarts == 0 {
            return Engine::converged(
                Arc::new(Unchecked(init.id)),
                "",
                Addr::default(),
                1,
                config.clone(),
                &init.seed,
                init.now,
                &members,
            );
        }
        if lose_store {
            let epoch = u64::from(init.restarts) + 1;
            kept.borrow_mut()[init.index] = MemStore::default();
            return Engine::converged(
                Arc::new(Unchecked(init.id)),
                "",
                Addr::default(),
                epoch,
                config.clone(),
                &init.seed,
                init.now,
                &members,
            );
        }
        // Back with its store, as a restarted agent: same streams, its topics resumed where
        // it stopped, then a join through a few members (a push-pull brings the member table).
        let store = kept.borrow()[init.index].clone();
        let mut e = Engine::new(
            Arc::new(Unchecked(init.id)),
            "",
            Addr::default(),
            1,
            config.clone(),
            &init.seed,
            init.now,
        );
        e.restore(init.now, store.restored(config.pbcast.history_msgs));
        for name in &store.topics {
            let _ = e.subscribe(init.now, name, SubscribeFrom::Resume);
        }
        let n = members.len();
        let seeds: Vec<NodeId> =
            (1..=3).map(|k| members[(init.index + k) % n]).filter(|m| *m != init.id).collect();
        let _ = e.join(init.now, &seeds);
        e
    });
    let state_per_node = match (before, resident_bytes()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / p.nodes as f64),
        _ => None,
    };
    let mut work = Rng::from_seed(Seed::derive(p.seed, "work", run, 0));
    // Subscriptions.
    let topic_names: Vec<String> = (0..p.topics).map(|k| format!("topic-{k}")).collect();
    let mut subscribers: Vec<Vec<usize>> = Vec::new();
    for name in &topic_names {
        let subs = work.distinct(p.nodes, p.subscribers);
        for &s in &subs {
            let n = name.clone();
            stores.borrow_mut()[s].topics.push(name.clone());
            sim.schedule_call(secs(0.5), s, move |e: &mut Engine, now| {
                let _ = e.subscribe(now, &n, SubscribeFrom::New);
            });
        }
        subscribers.push(subs);
    }
    // Faults.
    let start = 5.0;
    let crash_count = ((p.nodes as f64) * p.crash_fraction).round() as usize;
    let crashed: Vec<usize> = work.distinct(p.nodes, crash_count);
    for &c in &crashed {
        sim.schedule_fault(secs(start + p.duration / 3.0), Fault::Crash(c));
    }
    let crashed_set: HashSet<usize> = crashed.iter().copied().collect();
    let restart_count = ((p.nodes as f64) * p.restart_fraction).round() as usize;
    let candidates: Vec<usize> = (0..p.nodes).filter(|i| !crashed_set.contains(i)).collect();
    let restarted: Vec<usize> = work
        .distinct(candidates.len(), restart_count.min(candidates.len()))
        .into_iter()
        .map(|i| candidates[i])
        .collect();
    for &n in &restarted {
        let at = start + p.duration / 4.0;
        sim.schedule_fault(secs(at), Fault::Crash(n));
        sim.schedule_fault(secs(at + p.down_secs), Fault::Restart(n));
    }
    if p.partition_secs > 0.0 {
        let half = work.distinct(p.nodes, p.nodes / 2);
        let at = start + p.duration / 2.0;
        sim.schedule_fault(secs(at), Fault::Partition(vec![half]));
        sim.schedule_fault(secs(at + p.partition_secs), Fault::Heal);
    }
    // Publishing.
    let published: Rc<RefCell<Vec<Published>>> = Rc::default();
    let count = (p.duration * p.publish_rate).round() as usize;
    for i in 0..count {
        let t = start + i as f64 / p.publish_rate;
        let node = work.index(p.nodes);
        let k = work.index(p.topics);
        let name = topic_names[k].clone();
        let log = published.clone();
        sim.schedule_call(secs(t), node, move |e: &mut Engine, now| {
            if let Ok(id) = e.publish(now, &name, Bytes::from(vec![0u8; 64])) {
                log.borrow_mut().push(Published { node, origin: id.origin, topic: id.topic, seq: id.seq });
            }
        });
    }
    let mut watch = Watch {
        stores,
        by_message: p.breakdown.then(BTreeMap::new),
        idle_from: secs(start + p.duration + p.drain / 2.0),
        idle_by_message: p.breakdown.then(BTreeMap::new),
        ..Watch::default()
    };
    // Run in steps of 5 simulated seconds, sampling the accounted state between them (the
    // steps change nothing: the kernel runs the same events in the same order).
    let end = start + p.duration + p.drain;
    let accounted = |sim: &Sim<Engine>| {
        (0..p.nodes).map(|i| sim.machine(i).state_bytes()).fold(0usize, usize::saturating_add) as f64
            / p.nodes as f64
    };
    let mut peak_state = 0.0f64;
    let mut t = 0.0;
    while t < end {
        t = (t + 5.0).min(end);
        sim.run_until(secs(t), &mut watch);
        peak_state = peak_state.max(accounted(&sim));
    }
    let end_state = accounted(&sim);

    // Account every (message, eligible subscriber) pair. A node that restarted without its
    // store is not counted; one that kept it must account for everything.
    let mut crashed_set = crashed_set;
    if p.lose_store {
        crashed_set.extend(restarted.iter().copied());
    }
    let topic_index: HashMap<TopicId, usize> =
        topic_names.iter().enumerate().map(|(k, n)| (TopicId::of(n), k)).collect();
    let mut r = RunResult {
        accounted_state_bytes_per_node_peak: report::round(peak_state, 0),
        accounted_state_bytes_per_node_end: report::round(end_state, 0),
        crashed: crashed.len() as u64,
        restarted: restarted.len() as u64,
        ..RunResult::default()
    };
    let crashed_for_good: HashSet<usize> = crashed.iter().copied().collect();
    let reached: HashSet<(NodeId, TopicId, Seq)> = watch.seen.iter().map(|&(_, o, t, q)| (o, t, q)).collect();
    for m in published.borrow().iter() {
        r.published += 1;
        let Some(&k) = topic_index.get(&m.topic) else { continue };
        let announced = || {
            watch.gaps.iter().any(|((_, t, o), g)| {
                *t == m.topic && *o == m.origin && g.iter().any(|(a, b)| (*a..=*b).contains(&m.seq))
            })
        };
        if crashed_for_good.contains(&m.node)
            && !reached.contains(&(m.origin, m.topic, m.seq))
            && !announced()
        {
            r.died_with_publisher += 1;
            continue;
        }
        for &s in &subscribers[k] {
            if crashed_set.contains(&s) {
                continue;
            }
            r.eligible += 1;
            if watch.seen.contains(&(s as u32, m.origin, m.topic, m.seq)) {
                r.delivered += 1;
            } else if watch
                .gaps
                .get(&(s as u32, m.topic, m.origin))
                .is_some_and(|g| g.iter().any(|(a, b)| (*a..=*b).contains(&m.seq)))
            {
                r.gapped += 1;
            } else {
                r.silent_losses += 1;
                if std::env::var_os("HEARSAY_DEBUG_SILENT").is_some() {
                    let e = sim.machine(s);
                    let pb = e.pbcast();
                    eprintln!(
                        "silent: sub {s} origin {:?} seq {} next {:?} member {} gaps {:?} quiescent {} missing {}",
                        m.origin,
                        m.seq,
                        pb.next_delivery(m.topic, m.origin),
                        pb.is_member(m.topic),
                        watch.gaps.get(&(s as u32, m.topic, m.origin)),
                        pb.is_quiescent(),
                        pb.has_known_missing(),
                    );
                }
            }
        }
    }
    r.duplicates = watch.duplicates;
    r.gap_events = watch.gap_events;
    let lat: Vec<f64> = watch.latencies.iter().map(|us| *us as f64 / 1e3).collect();
    r.latency_p50_ms = report::round(report::percentile(&lat, 50.0), 2);
    r.latency_p99_ms = report::round(report::percentile(&lat, 99.0), 2);
    let d = r.delivered.max(1) as f64;
    r.bytes_per_delivery = report::round(watch.bytes as f64 / d, 1);
    r.messages_per_delivery = report::round(watch.messages as f64 / d, 3);
    let node_secs = p.nodes as f64 * (start + p.duration + p.drain);
    let idle_secs = p.nodes as f64 * (p.drain / 2.0);
    let by_protocol = |m: &BTreeMap<Option<Protocol>, u64>, node_secs: f64| {
        m.iter()
            .map(|(k, b)| {
                let name = k.map_or_else(|| "unknown".to_string(), |k| format!("{k:?}"));
                (name, report::round(*b as f64 / node_secs, 1))
            })
            .collect()
    };
    let per_second = |m: &Option<BTreeMap<String, u64>>, node_secs: f64| {
        m.iter().flatten().map(|(k, b)| (k.clone(), report::round(*b as f64 / node_secs, 1))).collect()
    };
    r.node_bytes_per_s = by_protocol(&watch.bytes_by_kind, node_secs);
    r.node_bytes_per_s_by_kind = per_second(&watch.by_message, node_secs);
    if idle_secs > 0.0 {
        r.idle_node_bytes_per_s = by_protocol(&watch.idle_by_kind, idle_secs);
        r.idle_node_bytes_per_s_by_kind = per_second(&watch.idle_by_message, idle_secs);
    }
    (r, state_per_node)
}

/// Run all repetitions.
pub fn run(p: &Params, progress: &Progress) -> Report {
    let results = report::parallel_runs(p.runs, report::threads(p.threads), progress, |r| run_once(p, r));
    let per_run: Vec<RunResult> = results.iter().map(|(r, _)| r.clone()).collect();
    let sum = |f: fn(&RunResult) -> u64| per_run.iter().map(f).sum::<u64>();
    let eligible = sum(|r| r.eligible).max(1) as f64;
    let mean = |f: fn(&RunResult) -> f64| report::mean(&per_run.iter().map(f).collect::<Vec<_>>());
    Report {
        experiment: "cluster",
        nodes: p.nodes,
        topics: p.topics,
        subscribers_per_topic: p.subscribers,
        publish_rate: p.publish_rate,
        loss: p.loss,
        crash_fraction: p.crash_fraction,
        partition_secs: p.partition_secs,
        restart_fraction: p.restart_fraction,
        down_secs: p.down_secs,
        lose_store: p.lose_store,
        runs: p.runs,
        seed: p.seed,
        delivery_ratio: report::round(sum(|r| r.delivered) as f64 / eligible, 6),
        accounted_ratio: report::round((sum(|r| r.delivered) + sum(|r| r.gapped)) as f64 / eligible, 6),
        silent_losses: sum(|r| r.silent_losses),
        died_with_publisher: sum(|r| r.died_with_publisher),
        duplicates: sum(|r| r.duplicates),
        gaps: sum(|r| r.gap_events),
        latency_p50_ms: report::round(mean(|r| r.latency_p50_ms), 2),
        latency_p99_ms: report::round(mean(|r| r.latency_p99_ms), 2),
        bytes_per_delivery: report::round(mean(|r| r.bytes_per_delivery), 1),
        messages_per_delivery: report::round(mean(|r| r.messages_per_delivery), 3),
        node_bytes_per_s: mean_by_key(&per_run, |r| &r.node_bytes_per_s),
        node_bytes_per_s_by_kind: mean_by_key(&per_run, |r| &r.node_bytes_per_s_by_kind),
        idle_node_bytes_per_s: mean_by_key(&per_run, |r| &r.idle_node_bytes_per_s),
        idle_node_bytes_per_s_by_kind: mean_by_key(&per_run, |r| &r.idle_node_bytes_per_s_by_kind),
        state_bytes_per_node: results.first().and_then(|(_, s)| *s).map(|b| report::round(b, 0)),
        accounted_state_bytes_per_node_peak: report::round(
            mean(|r| r.accounted_state_bytes_per_node_peak),
            0,
        ),
        accounted_state_bytes_per_node_end: report::round(mean(|r| r.accounted_state_bytes_per_node_end), 0),
        per_run,
    }
}

/// The mean over runs of a per-run map (a key missing from a run counts as 0 there).
fn mean_by_key(per_run: &[RunResult], f: fn(&RunResult) -> &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut m: BTreeMap<String, f64> = BTreeMap::new();
    for r in per_run {
        for (k, v) in f(r) {
            *m.entry(k.clone()).or_default() += v / per_run.len() as f64;
        }
    }
    m.into_iter().map(|(k, v)| (k, report::round(v, 1))).collect()
}

/// One line of bytes per node per second by protocol, and with `--breakdown` one line per
/// protocol, its message kinds after it.
fn bytes_lines(title: &str, by_protocol: &BTreeMap<String, f64>, by_kind: &BTreeMap<String, f64>) -> String {
    let total: f64 = by_protocol.values().sum();
    let mut s = format!("  {title} {total:.0}:");
    for (k, v) in by_protocol {
        s += &format!("  {k} {v:.0}");
    }
    s += "\n";
    let mut protocol = "";
    for (k, v) in by_kind {
        let (p, kind) = k.split_once('/').unwrap_or((k.as_str(), ""));
        if p != protocol {
            if !protocol.is_empty() {
                s += "\n";
            }
            protocol = p;
            s += &format!("    {p:<12} {:>7.0}:", by_protocol.get(p).copied().unwrap_or(0.0));
        }
        if !kind.is_empty() {
            s += &format!("  {kind} {v:.0}");
        }
    }
    if !by_kind.is_empty() {
        s += "\n";
    }
    s
}

/// A readable table.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "cluster  N = {}  topics = {} x {} subscribers  {} msg/s  loss = {}  crashed = {}  partition = {} s  runs = {}  seed = {}\n",
        r.nodes,
        r.topics,
        r.subscribers_per_topic,
        r.publish_rate,
        r.loss,
        r.crash_fraction,
        r.partition_secs,
        r.runs,
        r.seed
    );
    s += &format!(
        "  delivery ratio {:.6}   accounted (delivered or announced gap) {:.6}   silent losses {}   duplicates {}   gap events {}\n",
        r.delivery_ratio, r.accounted_ratio, r.silent_losses, r.duplicates, r.gaps
    );
    s += &format!(
        "  latency p50 {:.1} ms   p99 {:.1} ms   bytes per delivery {:.0}   messages per delivery {:.2}\n",
        r.latency_p50_ms, r.latency_p99_ms, r.bytes_per_delivery, r.messages_per_delivery
    );
    s += &bytes_lines("bytes sent per node per second", &r.node_bytes_per_s, &r.node_bytes_per_s_by_kind);
    s += &bytes_lines(
        "idle (second half of the drain): bytes sent per node per second",
        &r.idle_node_bytes_per_s,
        &r.idle_node_bytes_per_s_by_kind,
    );
    if let Some(b) = r.state_bytes_per_node {
        s += &format!("  resident bytes per simulated node at start {b:.0}\n");
    }
    s += &format!(
        "  accounted state per node (Engine::state_bytes): peak {:.0} bytes, at the end {:.0}\n",
        r.accounted_state_bytes_per_node_peak, r.accounted_state_bytes_per_node_end
    );
    s
}
