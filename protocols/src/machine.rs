//! The contract every protocol machine follows, so that unit tests, the simulator and the
//! daemon drive all of them the same way (DESIGN.md, "the sans-IO rule").
//!
//! A machine is a plain state machine. It never reads a clock, opens a socket, spawns a
//! thread or draws from a global RNG: time comes in as an [`Instant`] argument, randomness
//! from the [`Rng`](crate::Rng) it owns, and everything it wants done comes out through the
//! `poll_*` methods.
//!
//! # Driving a machine
//!
//! After every input (`handle_message`, `handle_timeout`, or a machine-specific local command
//! such as `publish`), the driver drains the outputs **in this order**:
//!
//! 1. [`poll_transmit`](Machine::poll_transmit) until `None`: each transmit is handed to the
//!    network in the order produced;
//! 2. [`poll_event`](Machine::poll_event) until `None`: deliveries, membership changes,
//!    results;
//! 3. [`poll_timeout`](Machine::poll_timeout): the single instant at which the driver must
//!    next call `handle_timeout` (replacing any earlier request). `None` means no timer.
//!
//! `handle_timeout(now)` may be called late (a busy driver) or early (a stale wake-up); the
//! machine processes whatever deadlines are `<= now` and ignores the rest. A deadline in the
//! past is served at once. This is quinn-proto's `Connection` shape.
//!
//! Machines that are composed of others (the Engine) keep the same shape: parts push into an
//! [`Outbox`] they are handed, and the composite drains it.
//!
//! # Inputs: one naming rule
//!
//! Every input takes `now` first, even where a machine has no use for it today.
//!
//! | kind | name | examples |
//! |---|---|---|
//! | a peer's message | [`handle_message`](Machine::handle_message)`(now, from, msg)`, dispatched to private `on_<message>` handlers | |
//! | a deadline | [`handle_timeout`](Machine::handle_timeout)`(now)` | |
//! | a **side input**: a fact the host learned from another machine or layer | `handle_<fact>(now, …)` | `handle_data`, `handle_heads`, `handle_routes`, `handle_ring_change`, `handle_peers`, `handle_topic_peers`, `handle_member_up`, `handle_member_down`, `handle_query` |
//! | a **command**: something the local application or host asks for | a verb, `(now, …)` | `subscribe`, `unsubscribe`, `publish`, `multicast`, `join`, `leave`, `start_query`, `set_value`, `set_meta`, `set_scope`, `inject`, `insert`, `start_exchange` |
//!
//! No input takes another machine as an argument: a machine that needs another's state (Scribe
//! routing over the ring) gets a copy of it as a side input when it changes.
//!
//! # Timers
//!
//! One idiom for every machine (SWIM's, generalized): deadlines live in the state they time
//! (a [`Ticker`](crate::Ticker) for periodic work, an `Instant` field for a one-shot
//! deadline such as a reply timeout), so nothing is scheduled twice and no stale timer can
//! fire. Each machine declares its timer kinds in a private `enum Timer`, in the order in which
//! simultaneous deadlines are served, and has
//!
//! - `fn next_timer(&self) -> Option<(Instant, Timer)>`: every armed deadline offered to an
//!   [`Earliest`](crate::timer::Earliest), which keeps the smallest `(deadline, kind)`;
//! - `handle_timeout(now)`: fire `next_timer()` while its deadline is `<= now`, where firing a
//!   timer always re-arms it past `now` or clears it;
//! - `poll_timeout()`: `self.next_timer().map(|(at, _)| at)`.
//!
//! Composites (the Engine and its multicast stack) follow it too: their timer kinds are
//! their parts, each part's deadline is its `poll_timeout()`.

use std::collections::VecDeque;

use crate::id::NodeId;
use crate::time::Instant;

/// How a transmit must travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Reliability {
    /// Best effort: may be lost, duplicated or reordered (a QUIC datagram). Marked **(D)** in
    /// PROTOCOLS.md.
    Datagram,
    /// Reliable and ordered per peer pair, may fail as a whole (a QUIC stream). Marked **(S)**.
    Stream,
}

/// One message a machine wants sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit<M> {
    /// The destination node.
    pub to: NodeId,
    /// Datagram or stream.
    pub reliability: Reliability,
    /// The protocol message; the driver encodes it (in the daemon) or carries it as a value
    /// (in the simulator).
    pub msg: M,
}

/// The handle/poll shape shared by every protocol machine. See the [module docs](self) for the
/// order in which a driver calls it.
pub trait Machine {
    /// The protocol's closed set of wire messages.
    type Message;
    /// The protocol's closed set of outputs to the host (deliveries, results, changes).
    type Event;

    /// A message `msg` from the authenticated peer `from` arrived at `now`.
    fn handle_message(&mut self, now: Instant, from: NodeId, msg: Self::Message);

    /// The deadline last returned by `poll_timeout` has been reached (or passed) at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// The next message to send, if any.
    fn poll_transmit(&mut self) -> Option<Transmit<Self::Message>>;

    /// The next event for the host, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// When `handle_timeout` should next be called; `None` if no timer is armed.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// The queue of outputs a machine (or a part of one) produces, drained by `poll_transmit`
/// and `poll_event`. Composite machines hand it to their parts (iroh-gossip's `IO` sink).
#[derive(Debug)]
pub struct Outbox<M, E> {
    transmits: VecDeque<Transmit<M>>,
    events: VecDeque<E>,
}

impl<M, E> Default for Outbox<M, E> {
    fn default() -> Self {
        Outbox { transmits: VecDeque::new(), events: VecDeque::new() }
    }
}

impl<M, E> Outbox<M, E> {
    /// Queue a datagram to `to`.
    #[inline]
    pub fn datagram(&mut self, to: NodeId, msg: M) {
        self.transmits.push_back(Transmit { to, reliability: Reliability::Datagram, msg });
    }

    /// Queue a stream message to `to`.
    #[inline]
    pub fn stream(&mut self, to: NodeId, msg: M) {
        self.transmits.push_back(Transmit { to, reliability: Reliability::Stream, msg });
    }

    /// Queue an event for the host.
    #[inline]
    pub fn event(&mut self, event: E) {
        self.events.push_back(event);
    }

    /// The oldest queued transmit. Once the queue is drained its buffer is released: the
    /// simulator holds 10^5 machines, and an idle machine should not keep the capacity of its
    /// busiest moment.
    #[inline]
    pub fn pop_transmit(&mut self) -> Option<Transmit<M>> {
        let t = self.transmits.pop_front();
        if t.is_none() && self.transmits.capacity() > 0 {
            self.transmits = VecDeque::new();
        }
        t
    }

    /// The oldest queued event; releases the buffer once drained, like `pop_transmit`.
    #[inline]
    pub fn pop_event(&mut self) -> Option<E> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        e
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty() && self.events.is_empty()
    }
}
