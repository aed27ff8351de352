//! SWIM membership and failure detection with Lifeguard (PROTOCOLS.md §6).
//!
//! Every protocol period each member probes one other, taken round-robin from a shuffled list
//! (so every member is probed once per traversal and worst-case detection is bounded): a
//! `Ping`, and if no `Ack` comes within `probe_timeout`, a `PingReq` to k random members who
//! ping on its behalf and relay the ack. A probe that fails by the end of the period makes the
//! target *Suspect*; a suspect that does not refute (by raising its incarnation) before its
//! suspicion times out is declared *Dead*. Membership updates ride piggyback on every datagram,
//! each λ·⌈log10(n + 1)⌉ times (infection style), plus a few gossip-only datagrams per period
//! and a periodic push-pull exchange of the whole table, the anti-entropy idea of Demers et al.
//! in its full-state form (Das, Gupta, Motivala, *SWIM*, DSN 2002, §3–§4). Lifeguard (Dadgar,
//! Phillips, Currey 2018, §IV) adds three parts, each switchable in [`Lifeguard`]: the **Local
//! Health Multiplier** L, raised by failed probes, missed nacks and refutations, which
//! stretches this node's own probe period to `probe_interval × (L + 1)`; **dynamic suspicion**,
//! a timeout that starts at `max` and shrinks towards `min` as independent confirmations
//! arrive; and the **buddy system**, a ping to a suspect that carries the suspicion. Where SWIM
//! and hashicorp/memberlist differ, hearsay follows memberlist (PROTOCOLS.md §6 says which).
//!
//! # Driving it
//!
//! A [`Swim`] is a [`Machine`]: after each input drain `poll_transmit` (datagrams for probes
//! and gossip, a stream for push-pull), then `poll_event` ([`SwimEvent`]), then ask
//! `poll_timeout`. Transmits name a [`NodeId`]; [`Swim::addr_of`] gives the address the
//! runtime should use. Local commands: [`Swim::join`], [`Swim::leave`], [`Swim::set_meta`];
//! queries: [`Swim::peers`] (a [`PeerView`] of the live members), [`Swim::sample_live`],
//! [`Swim::member`], [`Swim::members`].
//!
//! # Timers
//!
//! Deadlines due at the same instant are served in this order (§0.3 rule 4): the pending
//! probe's deadline (failure), its indirect step (ping-reqs), helper relays (nack, expiry, in
//! sequence order), suspicions (by deadline, then NodeId), the probe tick, the gossip tick,
//! the push-pull exchange timeout, the push-pull tick, the leave timeout, the join retry.
//! A probe's deadline thus fails it before the next probe starts at the same instant.
//!
//! # Departures from PROTOCOLS.md §6
//!
//! - `Ping.source` and `PingReq.requester` are not on the wire: they are always the
//!   authenticated sender ([`message`]). Neither is `PingReq.target_addr`: see "Who may say
//!   what" below.
//! - An `Alive` about self with the same incarnation is refuted when its *profile* differs
//!   (address or meta), not only its meta: an address conflict is as wrong as a meta one.
//! - Uniform choices (helpers, gossip targets, push-pull partner) draw from the sorted table
//!   with a rejection-skipping partial Fisher–Yates ([`crate::sampling`]): the same
//!   distribution as §0.3's "build S, then draw", without an O(N) pass per draw.
//! - At most [`UPDATES_MAX`] updates ride one datagram (the budget allows 36 at most anyway).
//! - A probe tick that finds the previous probe still pending (only possible with Poisson
//!   timing or a late driver) is skipped and counted, as memberlist's synchronous probe loop
//!   skips ticks.
//! - A push-pull reply from a peer we did not ask, or after the exchange timed out, is counted
//!   and dropped rather than merged.
//! - **The periodic push-pull opens with digests** (issue 14; §6.11 and memberlist always
//!   send both tables): the initiator sends a [`TableDigest`] of its live members, a peer whose
//!   table has the same digest answers with its own and nothing more is sent; otherwise the
//!   peer opens a full push-pull with the initiator, so both tables travel and both merge as
//!   before. A still cluster pays two small frames per exchange instead of two tables that grow
//!   with N. Joins are full push-pulls as before.
//! - **Members are trusted to be members, not to speak for others**: signed `Alive`s,
//!   `Suspect`/`Dead` that never raise an incarnation, bounded refutation jumps, confirmations
//!   once per sender, ping-reqs for table members only (see "Who may say what" below; §6.7 and
//!   §6.3 trust every member).
//! - **Bounds** \[H\]: the member table holds at most `members_max` entries and
//!   `members_bytes_max` accounted bytes (a new member beyond either is refused, counted in
//!   `members_refused`); a push-pull is merged, and sent, up to `push_pull_records_max` records
//!   and `push_pull_bytes_max` encoded bytes (the rest dropped unread, `records_dropped`); a
//!   helper serves at most [`RELAYS_MAX`] ping-reqs at once, [`RELAYS_PER_REQUESTER`] per
//!   requester. New members are merged into the table once per input (O(log n) each), not
//!   inserted one by one (O(n) each).
//!
//! # Who may say what (issue 12; PROTOCOLS.md §6 trusts every member)
//!
//! Members hold the cluster secret, so they are trusted to be members, not to tell the truth
//! about others. Everything that would let one member steer another's entry is refused:
//!
//! - **A node's `Alive` is signed by that node.** The incarnation, address and meta of an
//!   `Alive` (and of a push-pull record) carry the member's own signature over
//!   [`message::alive_claim`] (its id, incarnation, address and meta hash), made and checked
//!   through the [`Authenticator`] the host hands [`Swim::new`]. Nobody else can raise its
//!   incarnation (so no one keeps a dead node alive or refutes for it), move its address or
//!   change its meta. A signature is checked only when the update would change the table (a
//!   new member, a higher incarnation), once per member and incarnation, not on every copy;
//!   one that fails is counted (`forged`) and dropped, and so is every later `Alive` of the
//!   same message, unchecked: a message costs one failed check at most. An `Alive` about this
//!   node itself is refuted only if it verifies (it is this node's own, from a previous life).
//! - **`Suspect` and `Dead` never raise an incarnation.** §6.7 adopts a higher incarnation
//!   from them; here one naming an incarnation above the entry's (the highest signed one
//!   known) is applied at the entry's incarnation (`clamped`) and passed on as received, so
//!   `Suspect{X, u64::MAX}` cannot pin X dead: X's next signed `Alive` overrides it.
//! - **Refutation cannot saturate.** A node accused at or above its own incarnation always
//!   refutes; it jumps past the accusation (it may have restarted and forgotten a higher
//!   incarnation) only below [`INCARNATION_CEILING`] (2^62), and otherwise raises its own by 1.
//! - **Confirmations count once per sender.** A confirmation shortens Lifeguard's timeout
//!   only if its confirmer is a member of the table and new for this suspicion *and* the
//!   peer it came from (this node, for its own probes and merges) delivered no earlier
//!   confirmation of it: a member forging `from` fields adds one confirmation at most, as it
//!   could honestly; K still bounds them all.
//! - **No traffic to addresses no member owns.** A ping-req carries no address: a helper pings
//!   only a member of its table, at the address that member signed, and refuses (counts in
//!   `ping_reqs_refused`) a ping-req for anyone else. [`Swim::addr_of`] answers from the table
//!   only. Probe targets, gossip targets and push-pull partners are table entries, each
//!   learned from its own signed `Alive` (or put there by the host).
//!
//! Wire cost: a signed `Alive` is 65 bytes longer (103 bytes with an empty address and meta,
//! 109 with an IPv4 address; 38 and 44 unsigned; the meta's empty tag list is 1 byte), a push-pull record 66 bytes longer (1 byte
//! longer for an entry the host vouched for, which has no signature to send); `Suspect`
//! and `Dead` are unchanged (66 bytes); a `PingReq` is 1 to 19 bytes shorter. A 1200-byte
//! datagram carries up to 11 signed IPv4 `Alive`s or 18 `Suspect`s.
//! - Once a leave is done ([`SwimEvent::LeaveDone`]) the machine is inert: no timers, every
//!   input ignored. While leaving it stops probing and push-pull but still answers pings and
//!   gossips.

mod apply;
mod broadcast;
mod config;
mod exchange;
#[cfg(test)]
mod hostile_tests;
mod members;
pub mod message;
mod probe;
mod suspicion;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hearsay_protocols::auth::Authenticator;
use hearsay_protocols::wire;
use hearsay_protocols::{
    Duration, Earliest, Instant, Machine, NodeId, Outbox, PeerView, Rng, Seed, Ticker, Timing, Transmit,
};

use self::broadcast::BroadcastQueue;
pub use self::config::{ConfigError, Lifeguard, MIN_DATAGRAM_BUDGET, SwimConfig};
pub use self::members::Member;
use self::members::Table;
pub use self::message::{
    ADDR_MAX, Addr, INCARNATION_CEILING, Incarnation, META_TOPICS_MAX, MemberRecord, Meta, Profile,
    STATES_MAX, SharedProfile, State, SwimMessage, TableDigest, UPDATES_MAX, Update, alive_claim,
};
use crate::sampling::sample_indices;

/// Why a member's entry changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// This node's own probe of the member failed (a Suspect).
    FailedProbe,
    /// This node's own suspicion of the member timed out (a Dead).
    SuspicionTimeout,
    /// An update piggybacked on a datagram from `via`.
    Received {
        /// The datagram's sender.
        via: NodeId,
    },
    /// A push-pull exchange with `via`.
    PushPull {
        /// The exchange partner.
        via: NodeId,
    },
}

/// A member's entry changed: it appeared, changed state, incarnation or profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEvent {
    /// The member.
    pub node: NodeId,
    /// Its new state.
    pub state: State,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Its address and meta.
    pub profile: SharedProfile,
    /// What changed it.
    pub cause: Cause,
}

/// What SWIM tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwimEvent {
    /// A member's entry changed.
    Member(MemberEvent),
    /// A probe of `target` failed by every path (it is now suspected, or confirmed suspect).
    ProbeFailed {
        /// The member probed.
        target: NodeId,
        /// Its incarnation at the time.
        incarnation: Incarnation,
    },
    /// This node refuted a suspicion, death or stale profile about itself.
    Refuted {
        /// Its new incarnation.
        incarnation: Incarnation,
    },
    /// A join through `seed` succeeded: its table has been merged.
    JoinCompleted {
        /// The seed that answered.
        seed: NodeId,
    },
    /// No seed answered; the node runs alone and retries every `push_pull_interval`.
    JoinFailed,
    /// The `Dead` about self has gone out (or `leave_timeout` passed): safe to shut down.
    LeaveDone,
    /// A Dead or Left member was removed from the table.
    Reaped {
        /// The member.
        node: NodeId,
    },
}

/// Why a local command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// `join` needs at least one seed other than this node.
    #[error("no seed to join through")]
    NoSeeds,
    /// The node is leaving or has left.
    #[error("the node is leaving")]
    Leaving,
}

/// Counters, for metrics and experiments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwimStats {
    /// Probes started.
    pub probes: u64,
    /// Probes that failed by every path.
    pub probes_failed: u64,
    /// Probes answered by the target directly.
    pub acks_direct: u64,
    /// Probes answered through a helper.
    pub acks_indirect: u64,
    /// Ping-reqs sent.
    pub ping_reqs_sent: u64,
    /// Ping-reqs served as a helper.
    pub relays_served: u64,
    /// Nacks sent as a helper.
    pub nacks_sent: u64,
    /// Nacks received for our probes.
    pub nacks_received: u64,
    /// Suspicions started (by any cause).
    pub suspicions: u64,
    /// New confirmations of a suspicion.
    pub confirmations: u64,
    /// Members this node declared dead when its own suspicion timed out.
    pub deaths_declared: u64,
    /// Refutations of suspicions or deaths about self.
    pub refutations: u64,
    /// Datagrams sent (all kinds).
    pub datagrams_sent: u64,
    /// Gossip-only datagrams sent.
    pub gossip_sent: u64,
    /// Updates piggybacked, summed over datagrams.
    pub updates_sent: u64,
    /// Received updates that changed the table.
    pub updates_applied: u64,
    /// Received updates that did not (stale, unknown member, repeated).
    pub updates_ignored: u64,
    /// Push-pull exchanges started (joins included).
    pub push_pulls_started: u64,
    /// Push-pull exchanges this node started that completed.
    pub push_pulls_completed: u64,
    /// Push-pull exchanges this node started that timed out.
    pub push_pulls_aborted: u64,
    /// Push-pull exchanges this node answered.
    pub push_pulls_served: u64,
    /// Push-pull exchanges (started or answered here) that ended on equal digests: no table
    /// sent either way.
    pub push_pulls_in_sync: u64,
    /// Join rounds in which no seed answered.
    pub joins_failed: u64,
    /// Members reaped.
    pub reaped: u64,
    /// Messages dropped as malformed or out of bounds.
    pub malformed: u64,
    /// Pings for another target, dropped.
    pub misdirected: u64,
    /// Acks, nacks and push-pull replies that matched nothing pending.
    pub unexpected: u64,
    /// Probe ticks skipped because the previous probe was still pending.
    pub probe_ticks_skipped: u64,
    /// Messages ignored because the node has left.
    pub ignored_after_leave: u64,
    /// `Alive` updates and push-pull records that would have changed the table but whose
    /// signature did not verify under the member's id (dropped).
    pub forged: u64,
    /// `Suspect` and `Dead` updates naming an incarnation above the highest signed one known,
    /// applied at that one.
    pub clamped: u64,
    /// New members refused because the table was at `members_max` or `members_bytes_max`.
    pub members_refused: u64,
    /// Push-pull records dropped unread past `push_pull_records_max` or
    /// `push_pull_bytes_max`.
    pub records_dropped: u64,
    /// Ping-reqs refused: a target not in the table, or a helper at [`RELAYS_MAX`] relays
    /// ([`RELAYS_PER_REQUESTER`] for this requester).
    pub ping_reqs_refused: u64,
}

/// Most ping-reqs a helper serves at once (each lives `probe_timeout`) \[H\].
pub const RELAYS_MAX: usize = 256;
/// Most ping-reqs a helper serves at once for one requester (an honest one has one probe in
/// flight) \[H\].
pub const RELAYS_PER_REQUESTER: usize = 8;

/// The probe in flight.
#[derive(Clone, Debug)]
struct Probe {
    seq: u32,
    target: NodeId,
    /// When to ask helpers; `None` once asked.
    indirect_at: Option<Instant>,
    /// End of the probe: no ack by then is a failure.
    deadline: Instant,
    helpers: Vec<NodeId>,
    nacked: Vec<NodeId>,
    expected_nacks: u32,
}

/// A ping-req this node serves as a helper, keyed by the sequence number of its own ping.
#[derive(Clone, Debug)]
struct Relay {
    requester: NodeId,
    requester_seq: u32,
    target: NodeId,
    nack_at: Option<Instant>,
    expire_at: Instant,
}

/// A push-pull exchange this node started.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    peer: NodeId,
    deadline: Instant,
    join: bool,
    /// Opened by a digest ([`SwimMessage::PushPullDigest`]): the peer answers with its digest
    /// (in sync), a full push-pull of its own, or its table as a reply.
    digest: bool,
    /// Opened in answer to a peer's digest that differed from ours: our own periodic
    /// push-pull replaces it rather than waiting, so digests from a silent or hostile member
    /// cannot keep this node from its own exchanges.
    answering: bool,
}

#[derive(Clone, Debug)]
struct Join {
    seeds: Vec<NodeId>,
    next: usize,
    retry_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Leave {
    deadline: Instant,
    sent: usize,
}

/// Timer kinds, in the order they are served at equal deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    ProbeDeadline,
    ProbeIndirect,
    Relay,
    Suspicion,
    Probe,
    Gossip,
    ExchangeTimeout,
    PushPull,
    Leave,
    JoinRetry,
}

/// The SWIM + Lifeguard machine of one node. Drive it as described in the [module docs](self).
#[derive(Debug)]
pub struct Swim {
    id: NodeId,
    /// Signs this node's own `Alive`, verifies the others'.
    auth: Arc<dyn Authenticator>,
    config: Arc<SwimConfig>,
    rng: Rng,
    table: Table,
    /// Lifeguard's local health score L, in 0..S.
    health: u32,
    queue: BroadcastQueue,
    next_seq: u32,
    probe: Option<Probe>,
    next_probe: Instant,
    relays: BTreeMap<u32, Relay>,
    /// (deadline, member) of every running suspicion.
    suspicions: BTreeSet<(Instant, NodeId)>,
    gossip: Ticker,
    push_pull_at: Instant,
    exchange: Option<Exchange>,
    join: Option<Join>,
    leave: Option<Leave>,
    done: bool,
    out: Outbox<SwimMessage, SwimEvent>,
    stats: SwimStats,
    /// A signature check failed in the message being applied (see `apply::signed_by`).
    tainted: bool,
}

impl Swim {
    /// The machine name used to derive its RNG from the node seed.
    pub const NAME: &'static str = "swim";

    /// A node alone in its table (Alive, incarnation 0), to [`join`](Swim::join) a cluster.
    /// Its id is `auth`'s, which signs its `Alive` and verifies the others' (the module docs,
    /// "Who may say what").
    pub fn new(
        auth: Arc<dyn Authenticator>,
        profile: Profile,
        config: Arc<SwimConfig>,
        node_seed: &Seed,
        now: Instant,
    ) -> Self {
        Swim::with_members(auth, profile, config, node_seed, now, &[])
    }

    /// A node that starts with a converged table: itself and `others`, all Alive at
    /// incarnation 0 (the simulator's start state, PROTOCOLS.md §6.15; a restarted node should
    /// [`join`](Swim::join) instead). The host vouches for `others`: their entries hold no
    /// signature, and a push-pull sends them without one, which a receiver that does not
    /// already hold them refuses.
    pub fn with_members(
        auth: Arc<dyn Authenticator>,
        profile: Profile,
        config: Arc<SwimConfig>,
        node_seed: &Seed,
        now: Instant,
        others: &[(NodeId, SharedProfile)],
    ) -> Self {
        let id = auth.id();
        let mut rng = Rng::from_seed(node_seed.machine(Self::NAME));
        let profile = SharedProfile::new(profile);
        let mut own = Member::new(id, 0, State::Alive, now, profile.clone());
        own.sig = Some(auth.sign(&alive_claim(&id, 0, profile.profile())));
        let table = if others.is_empty() {
            Table::new(own)
        } else {
            let mut all = Vec::with_capacity(others.len() + 1);
            all.push(own);
            all.extend(
                others
                    .iter()
                    .filter(|(n, _)| *n != id)
                    .map(|(n, p)| Member::new(*n, 0, State::Alive, now, p.clone())),
            );
            Table::with_members(id, all, &mut rng)
        };
        let interval = config.probe_interval.max(MIN_PERIOD);
        let next_probe = Ticker::start(now, interval, config.timing, &mut rng).deadline();
        let gossip = Ticker::start(now, config.gossip_interval.max(MIN_PERIOD), config.timing, &mut rng);
        let pp = push_pull_period(config.push_pull_interval, table.len());
        let push_pull_at = now + Duration::from_micros(rng.below(pp.as_micros()));
        Swim {
            id,
            auth,
            config,
            rng,
            table,
            health: 0,
            queue: BroadcastQueue::default(),
            next_seq: 0,
            probe: None,
            next_probe,
            relays: BTreeMap::new(),
            suspicions: BTreeSet::new(),
            gossip,
            push_pull_at,
            exchange: None,
            join: None,
            leave: None,
            done: false,
            out: Outbox::default(),
            stats: SwimStats::default(),
            tainted: false,
        }
    }

    /// Change the advertised meta: raises the incarnation and broadcasts `Alive` (§6.6,
    /// memberlist `UpdateNode`).
    pub fn set_meta(&mut self, _now: Instant, meta: Meta) -> Result<(), CommandError> {
        if self.leave.is_some() || self.done {
            return Err(CommandError::Leaving);
        }
        let own = self.table.own();
        let profile = SharedProfile::new(Profile { addr: own.profile.addr().clone(), meta });
        let incarnation = own.incarnation.saturating_add(1);
        let update = self.sign_own(incarnation, profile);
        self.queue.push(update);
        Ok(())
    }

    /// Raise this node's own incarnation to at least `n` (never lowers it), re-signed but
    /// not announced: a restarted node starts above the last incarnation its previous life
    /// announced (kept by its host), so that its `Alive` outranks whatever the cluster still
    /// holds about that life (§6.6) from its first message on.
    pub fn raise_incarnation(&mut self, n: Incarnation) {
        let own = self.table.own();
        if n > own.incarnation {
            let profile = own.profile.clone();
            let _ = self.sign_own(n, profile);
        }
    }

    /// Make `incarnation` and `profile` this node's own entry, signed, and return the `Alive`
    /// that says so.
    fn sign_own(&mut self, incarnation: Incarnation, profile: SharedProfile) -> Update {
        let update = Update::signed_alive(self.auth.as_ref(), incarnation, profile.clone());
        let sig = match &update {
            Update::Alive { sig, .. } => Some(*sig),
            _ => None,
        };
        let (old, new) = (members::entry_cost(&self.table.own().profile), members::entry_cost(&profile));
        let own = self.table.own_mut();
        own.incarnation = incarnation;
        own.profile = profile;
        own.sig = sig;
        self.table.recost(old, new);
        update
    }

    /// Bytes of state this machine accounts for: the member table (each entry 256 bytes and
    /// its encoded profile), the broadcast queue, relays and the probe in flight. Everything a
    /// peer can make it hold is in one of them, each capped.
    pub fn state_bytes(&self) -> usize {
        self.table
            .bytes()
            .saturating_add(self.queue.bytes())
            .saturating_add(self.relays.len().saturating_mul(std::mem::size_of::<Relay>() + 32))
            .saturating_add(std::mem::size_of::<Self>())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The settings.
    pub fn config(&self) -> &SwimConfig {
        &self.config
    }

    /// This node's own incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.table.own().incarnation
    }

    /// Lifeguard's local health score L (0 = healthy).
    pub fn health(&self) -> u32 {
        self.health
    }

    /// The entry of `id`, if known.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.table.get(id)
    }

    /// Every entry, self included, ascending by NodeId.
    pub fn members(&self) -> &[Member] {
        self.table.members()
    }

    /// The cluster size estimate n: table entries, self and unreaped Dead/Left included.
    pub fn estimated_size(&self) -> usize {
        self.table.len()
    }

    /// The live members (Alive or Suspect), self excluded, as a view for the gossip machines.
    pub fn peers(&self) -> PeerView {
        PeerView::new(
            self.table
                .members()
                .iter()
                .filter(|m| m.id != self.id && m.state.is_live())
                .map(|m| m.id)
                .collect(),
        )
    }

    /// Up to `k` distinct live members (self excluded), uniformly at random, drawn from the
    /// caller's `rng` (peer sampling for the gossip machines, [`crate::sampling`]).
    pub fn sample_live(&self, k: usize, rng: &mut Rng) -> Vec<NodeId> {
        let members = self.table.members();
        let me = self.id;
        sample_indices(members.len(), k, rng, |i| members[i].id != me && members[i].state.is_live())
            .into_iter()
            .map(|i| members[i].id)
            .collect()
    }

    /// Where to send to `id`: its table entry's address (signed by it, or given by the host).
    /// A node never learns an address from anything but a member's own `Alive`.
    pub fn addr_of(&self, id: &NodeId) -> Option<Addr> {
        self.table.get(id).map(|m| m.profile.addr().clone())
    }

    /// The counters.
    pub fn stats(&self) -> &SwimStats {
        &self.stats
    }

    /// Updates waiting to be piggybacked.
    pub fn queued_updates(&self) -> usize {
        self.queue.len()
    }

    /// True while a leave is in progress or done.
    pub fn is_leaving(&self) -> bool {
        self.leave.is_some() || self.done
    }

    /// The probe period now: `probe_interval × (L + 1)`.
    fn probe_period(&self) -> Duration {
        self.config.probe_interval.max(MIN_PERIOD) * u64::from(self.health + 1)
    }

    /// Raise or lower L, clamped to 0..S (only with Lifeguard's health part on).
    fn adjust_health(&mut self, delta: i64) {
        if !self.config.lifeguard.health {
            return;
        }
        let top = i64::from(self.config.awareness_max_multiplier.max(1) - 1);
        self.health = (i64::from(self.health) + delta).clamp(0, top) as u32;
    }

    fn new_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    /// Fill `msg`'s piggyback from the queue up to the datagram budget and queue it to `to`.
    /// A gossip datagram with nothing to carry is not sent (returns false).
    fn send_datagram(&mut self, to: NodeId, mut msg: SwimMessage) -> bool {
        let base = wire::encoded_len(&msg);
        let limit = retransmit_limit(self.config.retransmit_mult, self.table.len());
        let mut extra = Vec::new();
        let room = self.config.datagram_budget.saturating_sub(base);
        let have = msg.updates().len();
        self.queue.fill(room, limit, UPDATES_MAX.saturating_sub(have), &mut extra);
        let is_gossip = matches!(msg, SwimMessage::Gossip { .. });
        if is_gossip && have == 0 && extra.is_empty() {
            return false;
        }
        let me = self.id;
        let carries_leave =
            extra.iter().any(|u| matches!(u, Update::Dead { node, from, .. } if *node == me && *from == me));
        self.stats.updates_sent += extra.len() as u64;
        if let Some(updates) = msg.updates_mut() {
            updates.extend(extra);
        }
        self.stats.datagrams_sent += 1;
        self.stats.gossip_sent += u64::from(is_gossip);
        self.out.datagram(to, msg);
        if carries_leave {
            // The `Dead` about self left the queue once it reached its retransmit limit, which
            // in a small cluster is below `gossip_nodes` (2 with 4 members in the `local`
            // preset): then it has gone out all it ever will.
            let spent = !self.queue.holds(&me);
            if let Some(leave) = self.leave.as_mut() {
                leave.sent += 1;
                if leave.sent >= self.config.gossip_nodes || spent {
                    self.finish_leave();
                }
            }
        }
        true
    }

    fn gossip_tick(&mut self, now: Instant) {
        self.gossip.advance(now, &mut self.rng);
        if self.queue.is_empty() {
            return;
        }
        let me = self.id;
        let dead_time = self.config.gossip_to_the_dead_time;
        let members = self.table.members();
        let picked = sample_indices(members.len(), self.config.gossip_nodes, &mut self.rng, |i| {
            let m = &members[i];
            m.id != me
                && (m.state.is_live()
                    || (m.state == State::Dead && now.saturating_since(m.changed_at) < dead_time))
        });
        let targets: Vec<NodeId> = picked.into_iter().map(|i| members[i].id).collect();
        for to in targets {
            if self.done || !self.send_datagram(to, SwimMessage::Gossip { updates: Vec::new() }) {
                break;
            }
        }
    }

    /// The earliest armed deadline and its kind (ties broken by kind order).
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        if self.done {
            return None;
        }
        let mut e = Earliest::new();
        if let Some(p) = &self.probe {
            e.offer(Some(p.deadline), Timer::ProbeDeadline);
            e.offer(p.indirect_at, Timer::ProbeIndirect);
        }
        e.offer(
            self.relays.values().map(|r| r.nack_at.map_or(r.expire_at, |n| n.min(r.expire_at))).min(),
            Timer::Relay,
        );
        e.offer(self.suspicions.first().map(|s| s.0), Timer::Suspicion);
        e.offer((self.next_probe != Instant::MAX).then_some(self.next_probe), Timer::Probe);
        e.offer(Some(self.gossip.deadline()), Timer::Gossip);
        e.offer(self.exchange.map(|x| x.deadline), Timer::ExchangeTimeout);
        e.offer((self.leave.is_none()).then_some(self.push_pull_at), Timer::PushPull);
        e.offer(self.leave.map(|l| l.deadline), Timer::Leave);
        e.offer(self.join.as_ref().and_then(|j| j.retry_at), Timer::JoinRetry);
        e.get()
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::ProbeDeadline => self.probe_failed(now),
            Timer::ProbeIndirect => self.probe_indirect(now),
            Timer::Relay => self.relay_timers(now),
            Timer::Suspicion => self.suspicion_timeout(now),
            Timer::Probe => self.probe_tick(now),
            Timer::Gossip => self.gossip_tick(now),
            Timer::ExchangeTimeout => self.exchange_timeout(now),
            Timer::PushPull => self.push_pull_tick(now),
            Timer::Leave => self.finish_leave(),
            Timer::JoinRetry => {
                if let Some(j) = self.join.as_mut() {
                    j.retry_at = None;
                }
                self.try_next_seed(now);
            }
        }
    }
}

/// Periods are never shorter than this, so a zero setting cannot spin the timer loop.
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// λ·⌈log10(n + 1)⌉ (memberlist `retransmitLimit`).
pub fn retransmit_limit(mult: u32, n: usize) -> u32 {
    let scale = ((n as f64) + 1.0).log10().ceil().max(0.0) as u32;
    mult.saturating_mul(scale)
}

/// `push_pull_interval × scale(n)`: scale 1 up to 32 members, ⌈log2 n − log2 32⌉ + 1 above
/// (memberlist `pushPullScale`).
pub fn push_pull_period(interval: Duration, n: usize) -> Duration {
    let interval = interval.max(MIN_PERIOD);
    if n <= 32 {
        return interval;
    }
    let mult = ((n as f64).log2() - 5.0).ceil() as u64 + 1;
    interval * mult
}

impl Machine for Swim {
    type Message = SwimMessage;
    type Event = SwimEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: SwimMessage) {
        self.tainted = false;
        self.dispatch(now, from, msg);
        // New members were staged while the message was applied: merge them in one pass.
        self.table.flush(&mut self.rng);
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some((t, timer)) = self.next_timer() {
            if t > now {
                break;
            }
            self.fire(now, timer);
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit<SwimMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<SwimEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(t, _)| t)
    }
}

impl Swim {
    fn dispatch(&mut self, now: Instant, from: NodeId, msg: SwimMessage) {
        if self.done {
            self.stats.ignored_after_leave += 1;
            return;
        }
        if !msg.is_valid() || from == self.id {
            self.stats.malformed += 1;
            return;
        }
        match msg {
            SwimMessage::Ping { seq, target, updates } => {
                if target != self.id {
                    self.stats.misdirected += 1;
                    return;
                }
                self.apply_all(now, from, updates);
                self.send_datagram(from, SwimMessage::Ack { seq, updates: Vec::new() });
            }
            SwimMessage::Ack { seq, updates } => {
                self.apply_all(now, from, updates);
                self.on_ack(from, seq);
            }
            SwimMessage::PingReq { seq, target, want_nack, updates } => {
                if target == self.id || target == from {
                    self.stats.malformed += 1;
                    return;
                }
                self.apply_all(now, from, updates);
                self.on_ping_req(now, from, seq, target, want_nack);
            }
            SwimMessage::Nack { seq, updates } => {
                self.apply_all(now, from, updates);
                self.on_nack(from, seq);
            }
            SwimMessage::Gossip { updates } => self.apply_all(now, from, updates),
            SwimMessage::PushPull { join: _, reply, states } => self.on_push_pull(now, from, reply, states),
            SwimMessage::PushPullDigest { reply, digest } => {
                self.on_push_pull_digest(now, from, reply, digest)
            }
        }
    }
}

/// The next tick of a period-`period` timer due at `due`, served at `now`: `due + period`, or
/// an exponential gap in Poisson timing; never in the past.
fn next_tick(due: Instant, now: Instant, period: Duration, timing: Timing, rng: &mut Rng) -> Instant {
    let next = match timing {
        Timing::Poisson => {
            now + Duration::from_secs_f64(rng.exp(period.as_secs_f64())).max(Duration::from_micros(1))
        }
        Timing::Sync | Timing::Phased => due + period,
    };
    if next <= now { now + period } else { next }
}
