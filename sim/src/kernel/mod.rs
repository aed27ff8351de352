//! The discrete-event kernel: drives any [`Machine`] over a simulated network, with crashes,
//! restarts, stalls and partitions, reproducibly from one seed (PROTOCOLS.md §9).
//!
//! # Event loop
//!
//! One queue of events ordered by (time, seq) (see `queue`). Kinds: message delivery, node
//! timer, fault, workload call. After the kernel hands one event to a node, it drains that
//! node in the fixed order of the machine contract: `poll_transmit` until empty (each through
//! the network, in order), `poll_event` until empty (to the [`Observer`]), then
//! `poll_timeout`. A node has at most one live timer event; asking for a different deadline
//! bumps its generation and the old event is skipped when popped. Asking for the same deadline
//! again keeps the event already queued (and its place among equal times).
//!
//! # Rounds
//!
//! The classic round-based experiments run on the same loop: machines tick in
//! [`Timing::Sync`](hearsay_protocols::Timing::Sync) (every node's timer at k·T), the network
//! has [`Latency::Zero`], and state is judged at the start of the round by the machine's own
//! staging (`Commit::AtRoundStart`). All timers of round k are queued before any message of
//! round k, so every node ticks first and the messages of the round follow in FIFO order at
//! the same instant. [`Sim::run_rounds`] steps such a run a round at a time.
//!
//! # Determinism
//!
//! Node `i` of run `r` gets NodeId and seed from [`node_ids`] / [`node_seed`]; the network
//! draws from `derive("net", r, 0)`, the topology from `derive("topo", r, 0)` (§9.3). Nothing
//! else is random, no hash map is iterated, so the same seed gives the same run bit for bit.

mod network;
mod queue;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use hearsay_protocols::{Duration, Instant, Machine, NodeId, Seed, Transmit};

pub(crate) use self::network::Network;
pub use self::network::{Fate, Latency, NetConfig};
use self::queue::{EventQueue, Item};

/// The NodeIds of the `n` nodes of run `run` (PROTOCOLS.md §9.3, `derive("nodeid", r, i)`).
pub fn node_ids(seed: u64, run: u64, n: usize) -> Vec<NodeId> {
    (0..n as u64).map(|i| NodeId::from_bytes(*Seed::derive(seed, "nodeid", run, i).as_bytes())).collect()
}

/// The seed of node `index` in run `run`, for its `restarts`-th life (0 = first start).
pub fn node_seed(seed: u64, run: u64, index: usize, restarts: u32) -> Seed {
    if restarts == 0 {
        Seed::derive(seed, "node", run, index as u64)
    } else {
        Seed::derive(seed, "node-restart", run, ((index as u64) << 16) + u64::from(restarts))
    }
}

/// What a node factory is told when it must build a machine.
#[derive(Clone, Copy, Debug)]
pub struct NodeInit {
    /// The node's index in the simulation.
    pub index: usize,
    /// Its identity (the same across restarts).
    pub id: NodeId,
    /// Its seed for this life; machines derive theirs with `seed.machine(name)`.
    pub seed: Seed,
    /// The instant it starts.
    pub now: Instant,
    /// How many times it has been restarted before (0 at first start).
    pub restarts: u32,
}

/// A fault or topology change, scheduled at an instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The node stops: its pending timer and queued inbound messages are discarded, and
    /// messages to it are dropped until it restarts.
    Crash(usize),
    /// A crashed node comes back with fresh state from the factory (same NodeId, new seed).
    Restart(usize),
    /// Each list is a group; nodes in no list form one more group. Messages between groups
    /// are dropped, at send and at delivery.
    Partition(Vec<Vec<usize>>),
    /// Remove the partition.
    Heal,
    /// The node stops processing inbound messages (they queue, in order); its timers still
    /// fire and it still sends (PROTOCOLS.md §6.15).
    Stall(usize),
    /// The stalled node processes its backlog, in order, at this instant.
    Unstall(usize),
}

/// Watches a run. Every method has a no-op default; `()` watches nothing.
pub trait Observer<M: Machine> {
    /// A machine emitted `event`.
    fn on_event(&mut self, _now: Instant, _node: usize, _event: M::Event) {}
    /// Node `from` sent `transmit`; `to` is the destination's index if it is a node of the
    /// simulation.
    fn on_send(
        &mut self,
        _now: Instant,
        _from: usize,
        _to: Option<usize>,
        _transmit: &Transmit<M::Message>,
        _fate: Fate,
    ) {
    }
    /// A message is handed to node `to` (after any stall).
    fn on_deliver(&mut self, _now: Instant, _from: usize, _to: usize, _msg: &M::Message) {}
    /// A scheduled fault takes effect.
    fn on_fault(&mut self, _now: Instant, _fault: &Fault) {}
}

impl<M: Machine> Observer<M> for () {}

/// Counters of what the kernel did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Events popped from the queue (including stale timers and dropped deliveries).
    pub events: u64,
    /// Messages handed to machines.
    pub delivered: u64,
    /// Transmits produced by machines.
    pub sent: u64,
    /// Messages dropped by random loss.
    pub lost: u64,
    /// Messages dropped by a partition (at send or on arrival).
    pub partitioned: u64,
    /// Messages dropped because the destination was down or unknown.
    pub unreachable: u64,
    /// `handle_timeout` calls.
    pub timers: u64,
}

/// A function building a node's machine for one life.
pub type Factory<M> = Box<dyn FnMut(&NodeInit) -> M>;

/// A workload call: runs against a node's machine at its scheduled instant.
type Call<M> = Box<dyn FnOnce(&mut M, Instant)>;

enum Event<M: Machine> {
    Deliver { from: u32, to: u32, life: u32, msg: M::Message },
    Fault(Fault),
    Call { node: u32, call: Call<M> },
}

struct Slot<M: Machine> {
    id: NodeId,
    machine: M,
    up: bool,
    life: u32,
    restarts: u32,
    timer_generation: u32,
    timer_at: Option<Instant>,
    stalled: bool,
}

/// Hashes a NodeId by its first 8 bytes: ids are random (or distinct small integers in tests).
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_be_bytes(b).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

/// A simulation of `M` machines.
pub struct Sim<M: Machine> {
    queue: EventQueue<Event<M>>,
    nodes: Vec<Slot<M>>,
    index: HashMap<NodeId, u32, BuildHasherDefault<PrefixHasher>>,
    net: Network,
    /// Inbound messages of stalled nodes, in arrival order (only stalled nodes have one).
    backlogs: HashMap<u32, VecDeque<(u32, M::Message)>>,
    factory: Factory<M>,
    seed: u64,
    run: u64,
    stats: KernelStats,
}

impl<M: Machine> Sim<M> {
    /// `n` nodes with the ids of [`node_ids`], each built by `factory` at time 0.
    pub fn new(
        seed: u64,
        run: u64,
        n: usize,
        net: NetConfig,
        factory: impl FnMut(&NodeInit) -> M + 'static,
    ) -> Self {
        let mut factory: Factory<M> = Box::new(factory);
        let ids = node_ids(seed, run, n);
        let mut index = HashMap::with_capacity_and_hasher(n, BuildHasherDefault::default());
        let mut nodes = Vec::with_capacity(n);
        for (i, id) in ids.into_iter().enumerate() {
            let previous = index.insert(id, i as u32);
            assert!(previous.is_none(), "duplicate NodeId derived for node {i}");
            let init =
                NodeInit { index: i, id, seed: node_seed(seed, run, i, 0), now: Instant::ZERO, restarts: 0 };
            nodes.push(Slot {
                id,
                machine: factory(&init),
                up: true,
                life: 0,
                restarts: 0,
                timer_generation: 0,
                timer_at: None,
                stalled: false,
            });
        }
        let mut sim = Sim {
            queue: EventQueue::new(),
            nodes,
            index,
            net: Network::new(net, seed, run, n),
            backlogs: HashMap::new(),
            factory,
            seed,
            run,
            stats: KernelStats::default(),
        };
        for i in 0..n {
            sim.drain(i as u32, &mut ());
        }
        sim
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.queue.now()
    }

    /// Number of nodes (up or down).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if the simulation has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s identity.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].id
    }

    /// The index of the node with this identity.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).map(|&i| i as usize)
    }

    /// Node `i`'s machine (its last state if it is down).
    pub fn machine(&self, i: usize) -> &M {
        &self.nodes[i].machine
    }

    /// True unless node `i` is crashed.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].up
    }

    /// The kernel's counters.
    pub fn stats(&self) -> &KernelStats {
        &self.stats
    }

    /// The network's settings.
    pub fn net_config(&self) -> &NetConfig {
        self.net.config()
    }

    /// The base one-way delay between nodes `i` and `j` (no jitter, no queueing).
    pub fn base_delay(&self, i: usize, j: usize) -> Duration {
        self.net.base_delay(i as u32, j as u32)
    }

    /// Events waiting in the queue.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Schedule a fault at `at`. Faults scheduled before the run starts precede every node
    /// timer at the same instant.
    pub fn schedule_fault(&mut self, at: Instant, fault: Fault) {
        self.queue.push(at, Event::Fault(fault));
    }

    /// Schedule `call` against node `node`'s machine at `at` (skipped if the node is down).
    pub fn schedule_call(&mut self, at: Instant, node: usize, call: impl FnOnce(&mut M, Instant) + 'static) {
        self.queue.push(at, Event::Call { node: node as u32, call: Box::new(call) });
    }

    /// Run `f` against node `node` now and drain its outputs.
    pub fn call<R>(
        &mut self,
        node: usize,
        obs: &mut impl Observer<M>,
        f: impl FnOnce(&mut M, Instant) -> R,
    ) -> R {
        let now = self.now();
        let r = f(&mut self.nodes[node].machine, now);
        self.drain(node as u32, obs);
        r
    }

    /// Process one event. Returns false when the queue is empty.
    pub fn step(&mut self, obs: &mut impl Observer<M>) -> bool {
        let Some((now, event)) = self.queue.pop() else {
            return false;
        };
        self.stats.events += 1;
        let event = match event {
            Item::Timer { node, generation } => {
                let slot = &mut self.nodes[node as usize];
                if slot.up && slot.timer_generation == generation {
                    slot.timer_at = None;
                    self.stats.timers += 1;
                    slot.machine.handle_timeout(now);
                    self.drain(node, obs);
                }
                return true;
            }
            Item::Event(event) => event,
        };
        match event {
            Event::Deliver { from, to, life, msg } => self.deliver(now, from, to, life, msg, obs),
            Event::Fault(fault) => self.apply_fault(now, fault, obs),
            Event::Call { node, call } => {
                if self.nodes[node as usize].up {
                    call(&mut self.nodes[node as usize].machine, now);
                    self.drain(node, obs);
                }
            }
        }
        true
    }

    /// Process every event due strictly before `t`, then set the clock to `t`.
    pub fn run_until(&mut self, t: Instant, obs: &mut impl Observer<M>) {
        while self.queue.peek_time().is_some_and(|next| next < t) {
            self.step(obs);
        }
        if self.now() < t {
            self.queue.advance_to(t);
        }
    }

    /// Process events while `keep_going(self)` holds and events remain.
    pub fn run_while(&mut self, obs: &mut impl Observer<M>, mut keep_going: impl FnMut(&Self) -> bool) {
        while keep_going(self) && self.step(obs) {}
    }

    /// Round-based stepping: run round after round (round k covers [k·T, (k+1)·T)), calling
    /// `after_round(k, self)` at the end of each; stop when it returns false or after
    /// `max_rounds` rounds. Returns the number of rounds run.
    pub fn run_rounds(
        &mut self,
        period: Duration,
        max_rounds: u64,
        obs: &mut impl Observer<M>,
        mut after_round: impl FnMut(u64, &Self) -> bool,
    ) -> u64 {
        let p = period.as_micros().max(1);
        let mut k = self.now().as_micros() / p;
        let mut ran = 0;
        while ran < max_rounds {
            self.run_until(Instant::from_micros((k + 1) * p), obs);
            ran += 1;
            if !after_round(k, self) {
                break;
            }
            k += 1;
        }
        ran
    }

    fn deliver(
        &mut self,
        now: Instant,
        from: u32,
        to: u32,
        life: u32,
        msg: M::Message,
        obs: &mut impl Observer<M>,
    ) {
        if self.net.separated(from, to) {
            self.stats.partitioned += 1;
            return;
        }
        let slot = &mut self.nodes[to as usize];
        if !slot.up || slot.life != life {
            self.stats.unreachable += 1;
            return;
        }
        if slot.stalled {
            self.backlogs.entry(to).or_default().push_back((from, msg));
            return;
        }
        self.hand_over(now, from, to, msg, obs);
    }

    fn hand_over(&mut self, now: Instant, from: u32, to: u32, msg: M::Message, obs: &mut impl Observer<M>) {
        obs.on_deliver(now, from as usize, to as usize, &msg);
        self.stats.delivered += 1;
        let from_id = self.nodes[from as usize].id;
        self.nodes[to as usize].machine.handle_message(now, from_id, msg);
        self.drain(to, obs);
    }

    /// Drain node `i` in contract order: transmits, events, timeout.
    fn drain(&mut self, i: u32, obs: &mut impl Observer<M>) {
        let now = self.now();
        while let Some(t) = self.nodes[i as usize].machine.poll_transmit() {
            self.stats.sent += 1;
            let dest = self.index.get(&t.to).copied();
            let fate = match dest {
                Some(d) if self.nodes[d as usize].up => self.net.send(now, i, d, t.reliability),
                _ => Fate::Unreachable,
            };
            obs.on_send(now, i as usize, dest.map(|d| d as usize), &t, fate);
            match (fate, dest) {
                (Fate::Arrives(at), Some(d)) => {
                    let life = self.nodes[d as usize].life;
                    self.queue.push(at, Event::Deliver { from: i, to: d, life, msg: t.msg });
                }
                (Fate::Lost, _) => self.stats.lost += 1,
                (Fate::Partitioned, _) => self.stats.partitioned += 1,
                _ => self.stats.unreachable += 1,
            }
        }
        while let Some(e) = self.nodes[i as usize].machine.poll_event() {
            obs.on_event(now, i as usize, e);
        }
        let slot = &mut self.nodes[i as usize];
        let wanted = slot.machine.poll_timeout();
        if wanted != slot.timer_at {
            slot.timer_generation = slot.timer_generation.wrapping_add(1);
            slot.timer_at = wanted;
            if let Some(at) = wanted {
                let generation = slot.timer_generation;
                self.queue.push_timer(at, i, generation);
            }
        }
    }

    fn apply_fault(&mut self, now: Instant, fault: Fault, obs: &mut impl Observer<M>) {
        obs.on_fault(now, &fault);
        match fault {
            Fault::Crash(i) => {
                let slot = &mut self.nodes[i];
                slot.up = false;
                slot.life = slot.life.wrapping_add(1);
                slot.timer_generation = slot.timer_generation.wrapping_add(1);
                slot.timer_at = None;
                slot.stalled = false;
                self.backlogs.remove(&(i as u32));
            }
            Fault::Restart(i) => {
                if self.nodes[i].up {
                    return;
                }
                let restarts = self.nodes[i].restarts + 1;
                let init = NodeInit {
                    index: i,
                    id: self.nodes[i].id,
                    seed: node_seed(self.seed, self.run, i, restarts),
                    now,
                    restarts,
                };
                let machine = (self.factory)(&init);
                let slot = &mut self.nodes[i];
                slot.machine = machine;
                slot.up = true;
                slot.restarts = restarts;
                self.drain(i as u32, obs);
            }
            Fault::Partition(groups) => {
                let mut g = vec![0u32; self.nodes.len()];
                for (k, members) in groups.iter().enumerate() {
                    for &m in members {
                        g[m] = k as u32 + 1;
                    }
                }
                self.net.partition(Some(g));
            }
            Fault::Heal => self.net.partition(None),
            Fault::Stall(i) => {
                if self.nodes[i].up {
                    self.nodes[i].stalled = true;
                }
            }
            Fault::Unstall(i) => {
                self.nodes[i].stalled = false;
                let backlog = self.backlogs.remove(&(i as u32)).unwrap_or_default();
                for (from, msg) in backlog {
                    self.hand_over(now, from, i as u32, msg, obs);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
