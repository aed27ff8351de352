//! One test harness for every machine: [`Net`], a network of [`Machine`]s on a virtual clock,
//! in the shape of quinn-proto's `Pair` (tests/util.rs) and iroh-gossip's `sim`.
//!
//! Compiled for this crate's own tests and, behind the `test-utils` feature, for other
//! crates' tests and fuzz targets (`hearsay-protocols = { workspace = true, features =
//! ["test-utils"] }` under `[dev-dependencies]`).
//!
//! # What it models
//!
//! - **Machines by [`NodeId`]**, in a `BTreeMap`: wherever several nodes act at one instant
//!   (gathering pending output, firing due timers) they act in `NodeId` order.
//! - **A virtual clock** that only [`run_until`](Net::run_until) and [`advance`](Net::advance)
//!   move, from deadline to deadline.
//! - **One FIFO of messages in flight.** After every input the net gives a node (a message, a
//!   timeout, a command run through [`call`](Net::call)), it drains the node's outputs in the
//!   [`Machine`] contract's order: its transmits onto the back of the FIFO, in the order
//!   produced, then its events into the event log. Messages arrive after a fixed latency, zero
//!   by default, so a [`pump`](Net::pump) runs a whole exchange to the end at one instant.
//! - **Faults**: silenced nodes (no timers, nothing sent or received; their state is kept) and
//!   a drop filter that sees every message that would otherwise be delivered.
//! - **Logs**: every message the network carried, with its fate ([`Sent`]), and every event,
//!   tagged with the node that emitted it.
//! - **Side inputs**: a hook run on a node before each of its inputs, for machines that need
//!   a fact from another layer first (Scribe is handed its routes before every input).
//!
//! Machines can also be driven by hand through [`machine_mut`](Net::machine_mut) or indexing
//! (`net[id]`), quinn-style; whatever they produce that way is sent at the next `pump`.
//!
//! # Order within one instant
//!
//! [`run_until`](Net::run_until) first pumps what is pending, then repeats: move the clock to
//! the next deadline (a live node's `poll_timeout` or a message's arrival); hand
//! `handle_timeout` to every live node whose deadline has come, in `NodeId` order; then pump.
//! So nodes whose timers fire at the same instant all act before any of their messages is
//! delivered, and those messages are delivered in the order the nodes sent them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::{Index, IndexMut};

use crate::id::NodeId;
use crate::machine::{Machine, Reliability, Transmit};
use crate::time::{Duration, Instant};

/// Deliveries allowed in one [`Net::pump`] before it is taken for a message storm.
pub const STORM_LIMIT: usize = 100_000;

/// A message the network carried, and what became of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent<Msg> {
    /// When it arrived (or would have): its send time plus the latency.
    pub at: Instant,
    /// The sender.
    pub from: NodeId,
    /// The destination.
    pub to: NodeId,
    /// Datagram or stream, as the sender asked.
    pub reliability: Reliability,
    /// The message.
    pub msg: Msg,
    /// False if it was lost: its sender or receiver was silenced, the drop filter chose it, or
    /// no node of the net has its destination's id.
    pub delivered: bool,
}

/// A transmit on its way.
struct InFlight<Msg> {
    arrives: Instant,
    from: NodeId,
    transmit: Transmit<Msg>,
}

type DropFilter<Msg> = Box<dyn FnMut(NodeId, NodeId, &Msg) -> bool>;
type BeforeInput<M> = Box<dyn FnMut(NodeId, &mut M, Instant)>;

/// Machines on a virtual clock, joined by a FIFO network. See the [module docs](self).
pub struct Net<M: Machine> {
    machines: BTreeMap<NodeId, M>,
    now: Instant,
    latency: Duration,
    in_flight: VecDeque<InFlight<M::Message>>,
    silenced: BTreeSet<NodeId>,
    drop: Option<DropFilter<M::Message>>,
    before_input: Option<BeforeInput<M>>,
    sent: Vec<Sent<M::Message>>,
    events: Vec<(NodeId, M::Event)>,
    storm_limit: usize,
}

impl<M: Machine> Default for Net<M> {
    fn default() -> Self {
        Net {
            machines: BTreeMap::new(),
            now: Instant::ZERO,
            latency: Duration::ZERO,
            in_flight: VecDeque::new(),
            silenced: BTreeSet::new(),
            drop: None,
            before_input: None,
            sent: Vec::new(),
            events: Vec::new(),
            storm_limit: STORM_LIMIT,
        }
    }
}

impl<M: Machine> FromIterator<(NodeId, M)> for Net<M> {
    fn from_iter<I: IntoIterator<Item = (NodeId, M)>>(iter: I) -> Self {
        let mut net = Net::new();
        for (id, m) in iter {
            net.add(id, m);
        }
        net
    }
}

/// Setup and inspection.
impl<M: Machine> Net<M> {
    /// An empty net at [`Instant::ZERO`], zero latency, nothing silenced or dropped.
    pub fn new() -> Self {
        Net::default()
    }

    /// Every message takes `latency` to arrive (zero by default). The latency is the same
    /// for all, so messages still arrive in the order they were sent.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Deliveries allowed in one pump before it panics as a message storm ([`STORM_LIMIT`]
    /// by default).
    pub fn with_storm_limit(mut self, limit: usize) -> Self {
        self.storm_limit = limit;
        self
    }

    /// Put `machine` in the net as node `id`, replacing any machine already there.
    pub fn add(&mut self, id: NodeId, machine: M) {
        self.machines.insert(id, machine);
    }

    /// The current instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The ids of all nodes, in order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.machines.keys().copied()
    }

    /// All machines, in `NodeId` order.
    pub fn machines(&self) -> impl Iterator<Item = (NodeId, &M)> {
        self.machines.iter().map(|(id, m)| (*id, m))
    }

    /// All machines, in `NodeId` order, to drive by hand.
    pub fn machines_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut M)> {
        self.machines.iter_mut().map(|(id, m)| (*id, m))
    }

    /// Node `id`'s machine. Panics if there is none.
    pub fn machine(&self, id: NodeId) -> &M {
        self.machines.get(&id).unwrap_or_else(|| panic!("no node {id} in the net"))
    }

    /// Node `id`'s machine, to drive by hand. Panics if there is none.
    pub fn machine_mut(&mut self, id: NodeId) -> &mut M {
        self.machines.get_mut(&id).unwrap_or_else(|| panic!("no node {id} in the net"))
    }

    /// Silence node `id`: its timers stop firing and every message to or from it is lost,
    /// until [`restore`](Net::restore). Its state is kept.
    pub fn silence(&mut self, id: NodeId) {
        self.silenced.insert(id);
    }

    /// Let a silenced node `id` run and talk again.
    pub fn restore(&mut self, id: NodeId) {
        self.silenced.remove(&id);
    }

    /// True if node `id` is silenced.
    pub fn is_silenced(&self, id: NodeId) -> bool {
        self.silenced.contains(&id)
    }

    /// Lose every message for which `drop(from, to, msg)` is true. It is asked once per
    /// message, in delivery order, and only for messages between live nodes. Replaces any
    /// earlier filter.
    pub fn set_drop(&mut self, drop: impl FnMut(NodeId, NodeId, &M::Message) -> bool + 'static) {
        self.drop = Some(Box::new(drop));
    }

    /// Lose nothing (but what silenced nodes send or are sent).
    pub fn clear_drop(&mut self) {
        self.drop = None;
    }

    /// Run `hook(id, machine, now)` on a node before each input the net gives it (message,
    /// timeout, [`call`](Net::call)): where a test hands side inputs, such as Scribe's routes.
    pub fn set_before_input(&mut self, hook: impl FnMut(NodeId, &mut M, Instant) + 'static) {
        self.before_input = Some(Box::new(hook));
    }

    /// Every message the network carried so far, delivered or not, in delivery order.
    pub fn sent(&self) -> &[Sent<M::Message>] {
        &self.sent
    }

    /// The messages node `id` sent, delivered or not.
    pub fn sent_by(&self, id: NodeId) -> impl Iterator<Item = &Sent<M::Message>> {
        self.sent.iter().filter(move |s| s.from == id)
    }

    /// The messages that were delivered.
    pub fn delivered(&self) -> impl Iterator<Item = &Sent<M::Message>> {
        self.sent.iter().filter(|s| s.delivered)
    }

    /// Empty the message log, returning it.
    pub fn take_sent(&mut self) -> Vec<Sent<M::Message>> {
        std::mem::take(&mut self.sent)
    }

    /// Every event collected so far, with the node that emitted it, in the order emitted.
    pub fn events(&self) -> &[(NodeId, M::Event)] {
        &self.events
    }

    /// The events node `id` emitted.
    pub fn events_of(&self, id: NodeId) -> impl Iterator<Item = &M::Event> {
        self.events.iter().filter(move |(n, _)| *n == id).map(|(_, e)| e)
    }

    /// Remove and return every event, including those still queued in machines driven by hand.
    pub fn take_events(&mut self) -> Vec<(NodeId, M::Event)> {
        for (id, m) in self.machines.iter_mut() {
            while let Some(e) = m.poll_event() {
                self.events.push((*id, e));
            }
        }
        std::mem::take(&mut self.events)
    }

    /// Remove and return node `id`'s events, including those still queued in its machine.
    pub fn take_events_of(&mut self, id: NodeId) -> Vec<M::Event> {
        let m = self.machines.get_mut(&id).unwrap_or_else(|| panic!("no node {id} in the net"));
        while let Some(e) = m.poll_event() {
            self.events.push((id, e));
        }
        let (mine, rest) = std::mem::take(&mut self.events).into_iter().partition(|(n, _)| *n == id);
        self.events = rest;
        mine.into_iter().map(|(_, e)| e).collect()
    }

    /// The next instant at which something happens on its own: a live node's deadline or a
    /// message's arrival.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timers = self.machines.iter().filter(|(id, _)| !self.silenced.contains(*id));
        let timer = timers.filter_map(|(_, m)| m.poll_timeout()).min();
        let arrival = self.in_flight.front().map(|f| f.arrives);
        timer.into_iter().chain(arrival).min()
    }
}

/// Driving.
impl<M: Machine> Net<M>
where
    M::Message: Clone,
{
    /// Run `f` on node `id` at the current instant (a command, or any input by hand), then
    /// pump. The before-input hook runs first.
    pub fn call<R>(&mut self, id: NodeId, f: impl FnOnce(&mut M, Instant) -> R) -> R {
        let r = self.input(id, f);
        self.pump();
        r
    }

    /// Hand node `to` the message `msg` from `from` (a crafted message), then pump. It does not
    /// travel the network: no filter, no silencing, not in the log.
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: M::Message) {
        self.call(to, |m, now| m.handle_message(now, from, msg));
    }

    /// Deliver every message due by the current instant, FIFO, including the ones those
    /// deliveries cause, until nothing more is due. Output still queued in machines driven by
    /// hand is sent first, in `NodeId` order. Panics after more than the storm limit of
    /// deliveries.
    pub fn pump(&mut self) {
        let arrives = self.now + self.latency;
        for (id, m) in self.machines.iter_mut() {
            drain(*id, m, arrives, &mut self.in_flight, &mut self.events);
        }
        let mut delivered = 0;
        while self.in_flight.front().is_some_and(|f| f.arrives <= self.now) {
            let Some(InFlight { from, transmit, .. }) = self.in_flight.pop_front() else { break };
            let Transmit { to, reliability, msg } = transmit;
            let live = !self.silenced.contains(&from) && !self.silenced.contains(&to);
            let ok = live
                && !self.drop.as_mut().is_some_and(|drop| drop(from, to, &msg))
                && self.machines.contains_key(&to);
            let at = self.now;
            if !ok {
                self.sent.push(Sent { at, from, to, reliability, msg, delivered: false });
                continue;
            }
            self.sent.push(Sent { at, from, to, reliability, msg: msg.clone(), delivered: true });
            delivered += 1;
            assert!(delivered <= self.storm_limit, "a message storm: {delivered} deliveries at {at}");
            self.input(to, |m, now| m.handle_message(now, from, msg));
        }
    }

    /// Move the clock to `until`, from deadline to deadline: at each, every live node whose
    /// timer is due gets `handle_timeout`, in `NodeId` order, then the net is pumped. Pumps
    /// first, so nothing is left pending at the current instant.
    /// Panics if the clock stops moving: more steps at one instant than the storm limit (a
    /// timer that fires without moving its deadline past `now`).
    pub fn run_until(&mut self, until: Instant) {
        self.pump();
        let mut steps_here = 0;
        while let Some(next) = self.next_deadline().filter(|t| *t <= until) {
            steps_here = if next > self.now { 1 } else { steps_here + 1 };
            assert!(steps_here <= self.storm_limit, "the clock is stuck at {}", self.now);
            self.now = self.now.max(next);
            let now = self.now;
            let due: Vec<NodeId> = self
                .machines
                .iter()
                .filter(|(id, m)| !self.silenced.contains(*id) && m.poll_timeout().is_some_and(|t| t <= now))
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                self.input(id, |m, now| m.handle_timeout(now));
            }
            self.pump();
        }
        self.now = self.now.max(until);
    }

    /// [`run_until`](Net::run_until) `d` from now.
    pub fn advance(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// One input to node `id`: the hook, `f`, then its outputs collected.
    fn input<R>(&mut self, id: NodeId, f: impl FnOnce(&mut M, Instant) -> R) -> R {
        let now = self.now;
        let m = self.machines.get_mut(&id).unwrap_or_else(|| panic!("no node {id} in the net"));
        if let Some(hook) = self.before_input.as_mut() {
            hook(id, m, now);
        }
        let r = f(m, now);
        self.collect(id);
        r
    }

    /// Node `id`'s outputs, see [`drain`].
    fn collect(&mut self, id: NodeId) {
        let arrives = self.now + self.latency;
        if let Some(m) = self.machines.get_mut(&id) {
            drain(id, m, arrives, &mut self.in_flight, &mut self.events);
        }
    }
}

/// Node `id`'s transmits onto the back of the FIFO, arriving at `arrives`, then its events into
/// the log: the [`Machine`] contract's order.
fn drain<M: Machine>(
    id: NodeId,
    m: &mut M,
    arrives: Instant,
    in_flight: &mut VecDeque<InFlight<M::Message>>,
    events: &mut Vec<(NodeId, M::Event)>,
) {
    while let Some(transmit) = m.poll_transmit() {
        in_flight.push_back(InFlight { arrives, from: id, transmit });
    }
    while let Some(e) = m.poll_event() {
        events.push((id, e));
    }
}

impl<M: Machine> Index<NodeId> for Net<M> {
    type Output = M;

    fn index(&self, id: NodeId) -> &M {
        self.machine(id)
    }
}

impl<M: Machine> IndexMut<NodeId> for Net<M> {
    fn index_mut(&mut self, id: NodeId) -> &mut M {
        self.machine_mut(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Outbox;

    fn id(n: u64) -> NodeId {
        NodeId::from_u64(n)
    }

    /// A toy machine: `Hop(k)` is passed on to the next node as `Hop(k - 1)` until 0; a timer
    /// every second sends `Hop(2)` to the next node if `ticking` (and never moves if `stuck`).
    struct Relay {
        next: NodeId,
        ticking: bool,
        stuck: bool,
        at: Instant,
        out: Outbox<u32, (Instant, u32)>,
    }

    impl Relay {
        fn new(next: u64, ticking: bool) -> Self {
            Relay {
                next: id(next),
                ticking,
                stuck: false,
                at: Instant::from_micros(1_000_000),
                out: Outbox::default(),
            }
        }
    }

    impl Machine for Relay {
        type Message = u32;
        type Event = (Instant, u32);

        fn handle_message(&mut self, now: Instant, _from: NodeId, k: u32) {
            self.out.event((now, k));
            if k > 0 {
                self.out.datagram(self.next, k - 1);
            }
        }

        fn handle_timeout(&mut self, now: Instant) {
            while self.ticking && !self.stuck && self.at <= now {
                self.out.datagram(self.next, 2);
                self.at += Duration::from_secs(1);
            }
        }

        fn poll_transmit(&mut self) -> Option<Transmit<u32>> {
            self.out.pop_transmit()
        }

        fn poll_event(&mut self) -> Option<(Instant, u32)> {
            self.out.pop_event()
        }

        fn poll_timeout(&self) -> Option<Instant> {
            self.ticking.then_some(self.at)
        }
    }

    /// A ring 1 → 2 → 3 → 1; only node 1 ticks.
    fn ring() -> Net<Relay> {
        [(id(1), Relay::new(2, true)), (id(2), Relay::new(3, false)), (id(3), Relay::new(1, false))]
            .into_iter()
            .collect()
    }

    fn hops(net: &Net<Relay>) -> Vec<(u64, u64, u32, bool)> {
        net.sent().iter().map(|s| (s.from.prefix_u64(), s.to.prefix_u64(), s.msg, s.delivered)).collect()
    }

    #[test]
    fn a_call_runs_the_exchange_to_its_end_in_fifo_order() {
        let mut net = ring();
        net.call(id(1), |m, _| {
            m.out.datagram(id(2), 1);
            m.out.datagram(id(3), 0);
        });
        assert_eq!(hops(&net), vec![(1, 2, 1, true), (1, 3, 0, true), (2, 3, 0, true)]);
        assert_eq!(net.take_events_of(id(3)), vec![(Instant::ZERO, 0), (Instant::ZERO, 0)]);
        assert_eq!(net.events().len(), 1, "node 2's event is left");
    }

    #[test]
    fn the_clock_moves_from_deadline_to_deadline_and_silenced_nodes_lose_everything() {
        let mut net = ring();
        net.advance(Duration::from_millis(2_500));
        assert_eq!(net.now(), Instant::from_micros(2_500_000));
        assert_eq!(net.delivered().count(), 6, "two ticks, three hops each");
        assert!(net.events_of(id(1)).all(|(at, _)| at.as_micros() % 1_000_000 == 0));
        net.silence(id(3));
        net.advance(Duration::from_secs(1));
        assert_eq!(hops(&net)[6..], [(1, 2, 2, true), (2, 3, 1, false)]);
        net.restore(id(3));
        net.set_drop(|from, _, _| from == id(2));
        net.advance(Duration::from_secs(1));
        assert_eq!(hops(&net)[8..], [(1, 2, 2, true), (2, 3, 1, false)]);
        net.clear_drop();
        net.silence(id(1));
        net.advance(Duration::from_secs(5));
        assert_eq!(net.sent().len(), 10, "a silenced node's timers do not fire");
    }

    #[test]
    fn latency_delays_every_message_alike() {
        let mut net = ring().with_latency(Duration::from_millis(10));
        net.run_until(Instant::from_micros(1_015_000));
        let at: Vec<u64> = net.sent().iter().map(|s| s.at.as_micros()).collect();
        assert_eq!(at, vec![1_010_000], "the second hop is still in flight");
        assert_eq!(net.next_deadline(), Some(Instant::from_micros(1_020_000)));
        net.run_until(Instant::from_micros(1_030_000));
        assert_eq!(hops(&net), vec![(1, 2, 2, true), (2, 3, 1, true), (3, 1, 0, true)]);
    }

    #[test]
    fn the_hook_runs_before_every_input_and_injected_messages_skip_the_log() {
        let mut net = ring();
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let log = seen.clone();
        net.set_before_input(move |id, _, _| log.borrow_mut().push(id.prefix_u64()));
        net.inject(id(3), id(2), 1);
        assert_eq!(*seen.borrow(), vec![2, 3]);
        assert_eq!(hops(&net), vec![(2, 3, 0, true)]);
        net.advance(Duration::from_secs(1));
        assert_eq!(*seen.borrow(), vec![2, 3, 1, 2, 3, 1]);
    }

    #[test]
    #[should_panic(expected = "the clock is stuck")]
    fn a_timer_that_does_not_move_is_stopped() {
        let mut net = ring().with_storm_limit(10);
        net[id(1)].stuck = true;
        net.advance(Duration::from_secs(2));
    }

    #[test]
    #[should_panic(expected = "a message storm")]
    fn a_storm_is_stopped() {
        let mut net = ring().with_storm_limit(10);
        net.inject(id(3), id(1), u32::MAX);
    }
}
