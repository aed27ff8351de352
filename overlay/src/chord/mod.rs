//! The Chord ring (Stoica, Morris, Karger, Kaashoek, Balakrishnan, *Chord: A Scalable
//! Peer-to-peer Lookup Service for Internet Applications*, SIGCOMM 2001, §4–§5; IEEE/ACM ToN
//! 2003), PROTOCOLS.md §7.
//!
//! Nodes sit on a circle of 2^64 identifiers ([`RingId`], derived from the NodeId); key k
//! belongs to successor(k), the first node clockwise from k. Each node keeps a successor list
//! of r = 16 nodes, its predecessor, and 64 fingers, finger k pointing at successor(n + 2^k).
//! A lookup goes, hop by hop, to the closest finger preceding the key
//! (`closest_preceding_node`), which halves the remaining distance at each step: ½·log2 N
//! hops on average. Timers keep the state right under churn: *stabilize*
//! asks the successor for its predecessor and successor list and adopts a node that slid in
//! between, *notify* tells the successor about us, *fix_fingers* recomputes one finger per
//! tick by a lookup, *check_predecessor* forgets a dead predecessor. A failed successor is
//! replaced by the next entry of the successor list.
//!
//! In hearsay the membership layer (SWIM, §6) knows every live member, so a joining node
//! computes its whole state from the member table ([`Chord::join_from_members`], §7.6) and the
//! host feeds every later Alive / Dead / Left with [`Chord::handle_member_up`] and
//! [`Chord::handle_member_down`]. Without SWIM (the standalone `chord` experiment,
//! [`Detector::Standalone`]) a node joins through any member by the paper's lookup
//! ([`Chord::join_via`]) and detects failures itself: a missing `PredIs` for the successor,
//! a missing `RingPong` for the predecessor, lookup timeouts for fingers.
//!
//! # Driving it
//!
//! As every machine ([`hearsay_protocols::machine`]): after each input drain
//! `poll_transmit`, then `poll_event`, then read `poll_timeout`. Local commands:
//! [`Chord::create`], [`Chord::join_from_members`], [`Chord::join_via`], [`Chord::lookup`],
//! [`Chord::leave`], [`Chord::handle_member_up`], [`Chord::handle_member_down`]. Scribe (§8)
//! routes by a copy of the routing state, [`Chord::routes`], handed to it after every input
//! the ring had, and runs its root check on [`ChordEvent::SuccessorChanged`] and
//! [`ChordEvent::PredecessorChanged`].
//!
//! # Timers
//!
//! stabilize and fix_fingers ticks (and check_predecessor, standalone), one reply deadline per
//! outstanding `GetPred`, `RingPing` and lookup step, in the idiom of
//! [`hearsay_protocols::machine#timers`]. Timers that are due together run in
//! the order (deadline, kind, creation) of §0.3 rule 4, kinds ordered: successor reply
//! timeout, predecessor ping timeout, lookup timeouts, stabilize, fix_fingers,
//! check_predecessor.
//!
//! # Departures from PROTOCOLS.md §7
//!
//! - **Next hops are fingers** (the SIGCOMM paper's `closest_preceding_finger`), with the
//!   successor list standing in only when no finger precedes the key (dead or avoided
//!   fingers). §7.4 prescribes the ToN variant, where successor-list entries compete with
//!   fingers; that is [`ChordConfig::route_via_successors`]. The anchors are what
//!   finger routing gives: on the `chord` experiment's ideal ring, fingers only measure
//!   4.84 / 6.49 / 8.17 hops (p99 8 / 10 / 13) at N = 10^3 / 10^4 / 10^5, against the
//!   issue's reference 4.83 / 6.52 / 8.19 (p99 8 / 10 / 13) and §7.7's \[R\] 4.82 / 6.45 /
//!   8.17, while the ToN variant measures 3.88 / 5.55 / 7.20: the last ~log2 r finger hops
//!   collapse into one successor-list hop, a full hop below ½·log2 N and outside the issue's
//!   ±0.5. So §7.7's \[R\] figures were not produced with the successor list in the routing.
//! - **No `addr` on the wire.** A node is referenced as `(NodeId, RingId)`. Transmits are
//!   addressed by NodeId and the runtime resolves addresses from the membership table, of
//!   which every ring node is a member; an address per successor-list entry would only grow
//!   `PredIs` and `LeaveHint`. The RingId carried is checked against the NodeId (hash) unless
//!   the node is already known; a mismatch makes the message malformed.
//! - **Lookups return their path** (the issue: "returns the key's successor and the path"):
//!   `FindSucc` and `FoundSucc` carry the nodes visited, origin first, capped at
//!   [`PATH_MAX`] entries so a datagram stays under 1200 bytes; `hops` still counts every
//!   forwarding. `FindSucc` also names the origin by NodeId only.
//! - **Two misses, not one.** §7.5 drops the successor after one unanswered `GetPred`; with
//!   5% datagram loss that would evict a live successor every ~10 s at every node and answer
//!   lookups wrongly until the next stabilize. The successor is dropped (and the predecessor
//!   forgotten) after [`ChordConfig::miss_limit`] = 2 consecutive misses \[H\].
//! - **The member table also gives the predecessor.** `join_from_members` sets `pred` to the
//!   closest member below (a converged ring holds it; §7.6 keeps pred nil until a Notify) and
//!   keeps up to [`PRED_CANDIDATES`] members below as the §8.1 stand-in when pred is nil.
//! - **`handle_member_up` is applied at once**: the new member is inserted into the successor list
//!   and the fingers it improves, and taken as predecessor if it lies in (pred, n), exactly
//!   what its first Notify would do; stabilize confirms it.
//! - **fix_fingers skips what it fills.** After a finger lookup returns y, the fingers
//!   j > k whose start lies in (n, y] are set to y (§7.5), and `next_finger` moves past them,
//!   so a full refresh takes about log2 N ticks instead of 64 (with base b fingers, about
//!   (b − 1)·log_b N of (b − 1)·64 / log2 b). A finger lookup makes one
//!   attempt (the next refresh is its retry).
//! - **Join through a member** ([`Chord::join_via`], the paper's join) exists for the
//!   standalone ring. A node that has not joined ignores ring messages (counted). If the answer
//!   names the joiner itself (a stale entry of its previous life), it is ignored and the join
//!   attempt times out and is retried (`lookup_attempts`, then [`ChordEvent::JoinFailed`]).
//!   A node stabilizes at once when it joins.
//! - **Lone node**: with no successor, stabilize adopts the predecessor (set by a joiner's
//!   Notify) as successor, the paper's `succ = n` case.
//! - **Iterative retries** restart at the origin from the next-best untried first hop, like
//!   recursive ones; the silent node (whichever hop it was) is the one marked suspect.
//! - **Suspicion steers routing only.** A first hop that let a lookup time out, or a
//!   successor dropped after missed `PredIs`, is skipped by `closest_preceding_node` for
//!   10 × `lookup_timeout` (§7.4), but it is taken back into the successor list if the next
//!   successor still names it (as the paper's stabilize does): only nodes reported Dead or
//!   Left stay out of lists. Filtering suspects from lists made every lost datagram pair
//!   evict a live neighbour for 10 s (25% wrong answers at 5% loss in the `chord`
//!   experiment; keeping a dropped successor out for 2 s still gave 3%). A
//!   finger refresh that times out drops its silent first hop from the fingers instead of
//!   suspecting it: a dead finger whose refresh routes through itself would never be
//!   replaced, and suspecting on every lost refresh kept the best fingers out of use.
//! - **After a `LeaveHint`** the leaver is kept out of every table until the membership
//!   layer reports it Alive again; on a standalone ring, where nothing would ever lift that
//!   mark when it rejoins, it is only avoided for routing.
//! - **Adaptive maintenance** (issue 14, `pace.rs`): with the membership detector, a
//!   stabilize whose `PredIs` changes nothing and a finger refresh that finds the finger
//!   already held double their period, up to [`ChordConfig::stabilize_interval_max`] and
//!   [`ChordConfig::fix_fingers_interval_max`] (30 s); any change or membership event touching
//!   the tables restores the base periods at once. §7.5 runs them at fixed periods, as the
//!   standalone ring still does.
//! - **A larger finger base and proximity selection** (issue 14, opt-in): with
//!   [`ChordConfig::finger_base_bits`] > 1 the table has the digits of base b = 2^bits at
//!   every level, finger k targeting n + digit·b^level ([`FingerLayout`]; the k-ary Chord of
//!   Ganesan and Manku, Pastry's digits), so a route takes about log_b N hops instead of
//!   ½·log2 N. With [`ChordConfig::proximity_candidates`] = c > 1 a finger is any member of
//!   its interval [target, next target): [`Chord::join_from_members_near`] picks, among the
//!   interval's first c members, the one with the lowest RTT the host reports (Chord with
//!   proximity neighbour selection, Dabek et al., NSDI 2004); a refresh that finds the
//!   interval non-empty keeps a finger that lies in it and is not avoided (silent or
//!   reported dead), and a new member replaces only a finger outside its interval. Routing is unchanged: any finger in (n, key) that is farthest still halves
//!   (or divides by b) what is left. The daemon keeps the paper's table for now (no RTT
//!   source yet); `hearsay-sim scribe --finger-base 16 --proximity 64` measures both.
//! - **Bounds**: a `Notify` must name its sender; a `RingPing` is answered only by a joined
//!   node. With no predecessor and no stand-in, `is_responsible` is true only for a node
//!   alone on the ring.

mod config;
mod lookup;
mod maintenance;
mod message;
mod pace;
mod ring;
mod routes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use hearsay_protocols::{Earliest, Instant, Machine, NodeId, Outbox, Rng, Seed, Ticker, Transmit};

pub use self::config::{ChordConfig, ConfigError, Detector, LookupMode, PROXIMITY_CANDIDATES_MAX};
pub use self::message::{ChordError, ChordEvent, ChordMessage};
use self::ring::Fingers;
pub use self::ring::{FINGERS, FingerLayout, RingId, RingNode, RingSnapshot};
pub use self::routes::Routes;

/// Most hops a lookup may take, and the most a `ttl` or `hops` field may say (§7.3).
pub const TTL_MAX: u8 = 64;
/// Most nodes a lookup's path carries; later hops are counted but not listed.
pub const PATH_MAX: usize = 32;
/// Most entries a successor list on the wire may hold; longer lists are malformed.
pub const SUCC_LIST_MAX: usize = 64;
/// Members below this node kept as the predecessor stand-in of §8.1.
pub const PRED_CANDIDATES: usize = 4;

/// Counters, for metrics and experiments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChordStats {
    /// Lookups started by [`Chord::lookup`].
    pub lookups_started: u64,
    /// Of those, answered.
    pub lookups_done: u64,
    /// Of those, failed after every attempt.
    pub lookups_failed: u64,
    /// Lookup steps that timed out (every purpose).
    pub lookup_timeouts: u64,
    /// Finger lookups sent by fix_fingers.
    pub finger_lookups: u64,
    /// `FindSucc` forwarded for others.
    pub forwarded: u64,
    /// `FindSucc` answered for others.
    pub answered: u64,
    /// Requests answered with `succ[0]` because nothing closer was usable or the ttl ran out.
    pub stuck: u64,
    /// Successors dropped after missed `GetPred` answers.
    pub successors_dropped: u64,
    /// Predecessors forgotten after missed `RingPong`s.
    pub predecessors_dropped: u64,
    /// Messages dropped as malformed (bounds, RingId not matching NodeId, self-reference).
    pub malformed: u64,
    /// Replies that matched nothing outstanding (late, duplicate, wrong sender).
    pub unmatched: u64,
    /// Messages dropped because this node is not on a ring.
    pub not_joined: u64,
    /// Members refused because their RingId is another member's (§7.1).
    pub ring_id_collisions: u64,
    /// Times a backed-off stabilize or fix_fingers was brought back to its base period
    /// because something changed (adaptive maintenance, membership detector only).
    pub maintenance_resets: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Idle,
    Joining { bootstrap: NodeId },
    Joined,
    Left,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    User,
    Finger(u8),
    Join,
}

/// One outstanding lookup at its origin.
#[derive(Clone, Debug)]
struct Pending {
    key: RingId,
    purpose: Purpose,
    deadline: Instant,
    attempt: u32,
    /// First hops already tried, in order.
    tried: Vec<NodeId>,
    /// The node whose answer is awaited.
    current: NodeId,
    /// Iterative: nodes asked so far in this attempt.
    hops: u8,
    /// Iterative: the path so far.
    path: Vec<NodeId>,
}

/// A request awaiting one answer (`GetPred`, `RingPing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Probe {
    req_id: u64,
    to: NodeId,
    deadline: Instant,
}

/// Why a node is kept out of routing, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Avoid {
    until: Instant,
    /// Reported Dead or Left (versus merely silent).
    dead: bool,
}

#[derive(Clone, Copy, Debug)]
struct Ticks {
    stabilize: Ticker,
    fix_fingers: Ticker,
    check_predecessor: Option<Ticker>,
    /// Answers in a row that changed nothing, per maintenance kind (the backoff exponent).
    still: pace::Still,
}

/// The Chord machine of one node. Drive it as described in [`hearsay_protocols::machine`].
#[derive(Debug)]
pub struct Chord {
    me: RingNode,
    config: Arc<ChordConfig>,
    rng: Rng,
    status: Status,
    /// Successor list, closest first, self never included; empty: alone (or not joined).
    succ: Vec<RingNode>,
    pred: Option<RingNode>,
    /// Closest members below, closest first (§8.1 stand-in).
    pred_candidates: Vec<RingNode>,
    fingers: Fingers,
    /// Index (0-based) of the finger the next fix_fingers tick refreshes.
    next_finger: u8,
    pending: BTreeMap<u64, Pending>,
    next_req: u64,
    ticks: Option<Ticks>,
    get_pred: Option<Probe>,
    succ_misses: u32,
    ping: Option<Probe>,
    pred_misses: u32,
    avoid: BTreeMap<NodeId, Avoid>,
    /// The successor and predecessor last reported in events.
    reported: (Option<NodeId>, Option<NodeId>),
    out: Outbox<ChordMessage, ChordEvent>,
    stats: ChordStats,
}

/// The layout of a config (base 2 for a config `validate` would refuse).
fn layout_of(config: &ChordConfig) -> FingerLayout {
    FingerLayout::new(config.finger_base_bits).unwrap_or(FingerLayout::BINARY)
}

impl Chord {
    /// The machine name used to derive its RNG from the node seed.
    pub const NAME: &'static str = "chord";

    /// A machine for node `id`, not yet on a ring: follow with [`Chord::create`],
    /// [`Chord::join_from_members`] or [`Chord::join_via`].
    pub fn new(id: NodeId, config: Arc<ChordConfig>, node_seed: &Seed, _now: Instant) -> Self {
        let mut rng = Rng::from_seed(node_seed.machine(Self::NAME));
        // A random start, so that a restarted node never takes a late answer meant for its
        // previous life.
        let next_req = rng.next_u64();
        let fingers = Fingers::empty(layout_of(&config).len());
        Chord {
            me: RingNode::of(id),
            config,
            rng,
            status: Status::Idle,
            succ: Vec::new(),
            pred: None,
            pred_candidates: Vec::new(),
            fingers,
            next_finger: 0,
            pending: BTreeMap::new(),
            next_req,
            ticks: None,
            get_pred: None,
            succ_misses: 0,
            ping: None,
            pred_misses: 0,
            avoid: BTreeMap::new(),
            reported: (None, None),
            out: Outbox::default(),
            stats: ChordStats::default(),
        }
    }

    /// This node.
    pub fn node(&self) -> RingNode {
        self.me
    }

    /// This node's identity.
    pub fn id(&self) -> NodeId {
        self.me.id
    }

    /// True once the node is part of a ring (and until it leaves).
    pub fn is_joined(&self) -> bool {
        self.status == Status::Joined
    }

    /// The successor, `None` when alone on the ring or not joined.
    pub fn successor(&self) -> Option<RingNode> {
        self.succ.first().copied()
    }

    /// The successor list, closest first.
    pub fn successors(&self) -> &[RingNode] {
        &self.succ
    }

    /// The predecessor, if known.
    pub fn predecessor(&self) -> Option<RingNode> {
        self.pred
    }

    /// Finger `k` (0-based: in the base-2 layout it targets successor(n + 2^k)), if set.
    pub fn finger(&self, k: usize) -> Option<RingNode> {
        if k < self.fingers.len() { self.fingers.get(k) } else { None }
    }

    /// The finger table as runs `(first index, last index, node)`, 0-based, for display.
    pub fn finger_runs(&self) -> Vec<(usize, usize, Option<RingNode>)> {
        self.fingers.runs().collect()
    }

    /// Lookups outstanding at this node (every purpose).
    pub fn pending_lookups(&self) -> usize {
        self.pending.len()
    }

    /// The counters.
    pub fn stats(&self) -> &ChordStats {
        &self.stats
    }

    /// The settings.
    pub fn config(&self) -> &ChordConfig {
        &self.config
    }

    /// Where the fingers point ([`ChordConfig::finger_base_bits`]).
    pub fn layout(&self) -> FingerLayout {
        layout_of(&self.config)
    }

    /// Report successor and predecessor changes since the last report.
    fn report_changes(&mut self) {
        let now = (self.successor().map(|n| n.id), self.pred.map(|n| n.id));
        let (old_s, old_p) = self.reported;
        if now.0 != old_s {
            self.out.event(ChordEvent::SuccessorChanged { old: old_s, new: now.0 });
        }
        if now.1 != old_p {
            self.out.event(ChordEvent::PredecessorChanged { old: old_p, new: now.1 });
        }
        self.reported = now;
    }

    fn next_req_id(&mut self) -> u64 {
        let id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        id
    }

    /// True if `n` is kept out of routing (reported dead, or silent recently).
    fn avoided(&self, id: &NodeId) -> bool {
        !self.avoid.is_empty() && self.avoid.contains_key(id)
    }

    /// True if the membership layer reported `id` Dead or Left (or it sent a `LeaveHint`).
    fn dead(&self, id: &NodeId) -> bool {
        !self.avoid.is_empty() && self.avoid.get(id).is_some_and(|a| a.dead)
    }

    /// The RingId on a reference is the hash of its NodeId (checked against what this node
    /// already holds first, which saves the hash for the usual case).
    fn valid(&self, n: &RingNode) -> bool {
        let known = self
            .succ
            .iter()
            .chain(self.pred.iter())
            .chain(self.fingers.entries())
            .chain(self.pred_candidates.iter())
            .find(|k| k.id == n.id);
        match known {
            Some(k) => k.ring == n.ring,
            None => RingId::of(&n.id) == n.ring,
        }
    }

    /// The earliest armed timer, ties in the order (kind, creation) of §0.3 rule 4.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let mut e = Earliest::new();
        if let Some(p) = self.get_pred {
            e.offer(Some(p.deadline), Timer::GetPred { req: p.req_id });
        }
        if let Some(p) = self.ping {
            e.offer(Some(p.deadline), Timer::Ping { req: p.req_id });
        }
        for (&req, p) in &self.pending {
            // Request ids rise from a random start: creation order is the distance from it.
            e.offer(Some(p.deadline), Timer::Lookup { order: req.wrapping_sub(self.next_req), req });
        }
        if let Some(t) = &self.ticks {
            e.offer(Some(t.stabilize.deadline()), Timer::Stabilize);
            e.offer(Some(t.fix_fingers.deadline()), Timer::FixFingers);
            e.offer(t.check_predecessor.map(|c| c.deadline()), Timer::CheckPredecessor);
        }
        e.get()
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::GetPred { req } => self.on_get_pred_timeout(now, req),
            Timer::Ping { req } => self.on_ping_timeout(now, req),
            Timer::Lookup { req, .. } => self.on_lookup_timeout(now, req),
            Timer::Stabilize => {
                if let Some(t) = &mut self.ticks {
                    t.stabilize.advance(now, &mut self.rng);
                }
                self.stabilize(now);
            }
            Timer::FixFingers => {
                if let Some(t) = &mut self.ticks {
                    t.fix_fingers.advance(now, &mut self.rng);
                }
                self.fix_fingers(now);
            }
            Timer::CheckPredecessor => {
                if let Some(c) = self.ticks.as_mut().and_then(|t| t.check_predecessor.as_mut()) {
                    c.advance(now, &mut self.rng);
                }
                self.check_predecessor(now);
            }
        }
    }
}

/// The ring's timer kinds, in the order simultaneous ones are served (§0.3 rule 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The successor did not answer `GetPred`.
    GetPred { req: u64 },
    /// The predecessor did not answer `RingPing`.
    Ping { req: u64 },
    /// A lookup step got no answer (`order`: creation order among lookups).
    Lookup { order: u64, req: u64 },
    /// stabilize.
    Stabilize,
    /// fix_fingers.
    FixFingers,
    /// check_predecessor (standalone).
    CheckPredecessor,
}

impl Machine for Chord {
    type Message = ChordMessage;
    type Event = ChordEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: ChordMessage) {
        match self.status {
            Status::Left => {
                self.stats.not_joined += 1;
                return;
            }
            Status::Idle | Status::Joining { .. } if !matches!(msg, ChordMessage::FoundSucc { .. }) => {
                self.stats.not_joined += 1;
                return;
            }
            _ => {}
        }
        match msg {
            ChordMessage::FindSucc { req_id, key, origin, hops, ttl, iterative, path } => {
                self.on_find_succ(from, req_id, key, origin, hops, ttl, iterative, path)
            }
            ChordMessage::FoundSucc { req_id, key, node, hops, path } => {
                self.on_found_succ(now, from, req_id, key, node, hops, path)
            }
            ChordMessage::NextHop { req_id, key, next, done } => {
                self.on_next_hop(now, from, req_id, key, next, done)
            }
            ChordMessage::GetPred { req_id } => self.on_get_pred(from, req_id),
            ChordMessage::PredIs { req_id, pred, succ_list } => {
                self.on_pred_is(now, from, req_id, pred, succ_list)
            }
            ChordMessage::Notify { node } => self.on_notify(now, from, node),
            ChordMessage::RingPing { req_id } => self.out.datagram(from, ChordMessage::RingPong { req_id }),
            ChordMessage::RingPong { req_id } => self.on_ring_pong(from, req_id),
            ChordMessage::LeaveHint { pred, succ_list } => self.on_leave_hint(now, from, pred, succ_list),
        }
        self.report_changes();
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.next_timer() {
            if at > now {
                break;
            }
            self.fire(now, timer);
        }
        self.report_changes();
    }

    fn poll_transmit(&mut self) -> Option<Transmit<ChordMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<ChordEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }
}
