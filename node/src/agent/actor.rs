//! The actor: the one task that owns the [`Engine`]. Each turn of its `select!` hands the
//! Engine one input (a frame from the transport, a command, a seed resolved, its deadline, a
//! stop), then [`Actor::flush`]es: sends what the Engine wants sent and acts on its events.
//!
//! Commands arrive checked (see [`Command`]); the actor only calls the Engine and replies.
//! Replies are the API's types, built from the Engine's views by [`views`]; subscriptions are
//! [`Subscribers`]' business; joining and reconnecting are [`Join`]'s.
//!
//! # Stopping
//!
//! A leave (SIGTERM) first ends every subscription with its `closed` line (durable clients
//! still acknowledge meanwhile), then goes in three steps, each bounded: **drain**, the Engine still running
//! (it answers repair requests meanwhile), until the transport has nothing in flight (frames
//! waiting for a connection, stream frames not yet acknowledged, queued datagrams: first-phase
//! copies and repairs), at most [`DRAIN_TIMEOUT`]; **close** what subscriptions are left
//! (their topics); **leave**: SWIM announces it (done once the announcement went out in a few
//! datagrams, within a gossip interval; the agent stops waiting after [`LEAVE_TIMEOUT`]).
//! Then the transport drains again (at most [`FINAL_FLUSH_TIMEOUT`], for the leave's own
//! datagrams), the store makes its writes durable and the endpoint closes. A crash stops at
//! once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use hearsay_overlay::swim::State;
use hearsay_protocols::aggregate::{Func, QueryId};
use hearsay_protocols::pbcast::MsgId;
use hearsay_protocols::{Instant, Machine, NodeId};
use tokio::sync::{mpsc, watch};

use super::command::{Command, PublishError, Reply, SubscribeError, SubscribeOptions};
use super::events::EventFeed;
use super::seeds::{Join, JoinNote, ReconnectStats};
use super::subscribers::{ReplayDone, Subscribers};
use super::{AgentError, Stop};
use crate::api::types::QueryResult;
use crate::api::types::StreamItem;
use crate::api::views;
use crate::engine::{CommandError, Engine, EngineEvent, Persist};
use crate::message::TopicName;
use crate::metrics::Metrics;
use crate::store::{MemberRecord, Store, Write};
use crate::transport::{Transport, TransportEvent};

/// How long a leave may take before the agent stops anyway.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a leave waits for what is in flight in the transport before it closes the
/// subscriptions and announces the leave.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the agent waits, once the leave is announced, for the transport to send what it
/// holds before closing the endpoint.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// While draining, the transport is looked at this often.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// The closing line of every subscription when the agent leaves.
const LEAVING: &str = "the agent stopped";

/// How long the store may take to make its queued writes durable when the agent stops.
const STORE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The member list is written to the store at most this often.
const MEMBERS_EVERY: Duration = Duration::from_secs(5);

/// A query this node started, waiting for its answer.
struct PendingQuery {
    func: Func,
    name: String,
    reply: Reply<Result<QueryResult, CommandError>>,
}

/// A publish waiting for its write to be durable: (ticket, reply, id).
type PendingPublish = (u64, Reply<Result<MsgId, PublishError>>, MsgId);

/// Observed peer addresses kept at most: every identity a secret holder mints and connects
/// with would add one; beyond this, new ones fall back to the addresses members advertise.
const ADDRS_MAX: usize = 1 << 16;

/// The task that owns the Engine.
pub(super) struct Actor {
    engine: Engine,
    transport: Transport,
    start: tokio::time::Instant,
    /// Observed addresses of peers (what their connections came from), preferred over
    /// advertised ones.
    addrs: HashMap<NodeId, SocketAddr>,
    subscribers: Subscribers,
    /// Where replays report (taken by [`Actor::run`]).
    replays: Option<mpsc::UnboundedReceiver<ReplayDone>>,
    queries: BTreeMap<QueryId, PendingQuery>,
    /// Frames dropped for want of an address.
    unroutable: u64,
    leaving: bool,
    metrics: Metrics,
    /// The durable store, if this agent has one.
    store: Option<Store>,
    /// The last ticket submitted to the store.
    last_ticket: u64,
    /// Publishes whose write is not durable yet: (ticket, reply, id).
    pending: VecDeque<PendingPublish>,
    /// The member list changed since it was last written, and when it was.
    members_dirty: bool,
    members_written: Option<tokio::time::Instant>,
    /// The wall clock at `start`, in µs: the Engine's clock is wall-clock based, so publish
    /// times mean the same on every node (up to their clocks' skew) and retention by age works.
    clock_base: u64,
    /// What a flush inside a command found, for the loop.
    carried: Flushed,
    /// The store refused a write since this was last looked at.
    refused: Option<crate::store::StoreError>,
    /// The SWIM incarnation last handed to the store.
    incarnation_kept: u64,
    /// The member list's last write not yet durable: (ticket, members).
    members_ticket: Option<(u64, usize)>,
    /// Reconnection counters, shared with [`Join`]'s dialling tasks.
    reconnects: std::sync::Arc<ReconnectStats>,
    /// The event stream's sending side.
    events: EventFeed,
}

/// What one flush found out.
#[derive(Default)]
struct Flushed {
    /// The leave is done: the agent may stop.
    done: bool,
    /// A join just failed.
    join_failed: bool,
    /// A join completed.
    joined: bool,
    /// Members whose state changed: (member, live, left, its address).
    members: Vec<(NodeId, bool, bool, Option<SocketAddr>)>,
}

impl Flushed {
    fn merge(&mut self, other: Flushed) {
        self.done |= other.done;
        self.join_failed |= other.join_failed;
        self.joined |= other.joined;
        self.members.extend(other.members);
    }
}

/// Where a leave is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaving {
    /// Running.
    No,
    /// Waiting (until the deadline at most) for the transport to drain.
    Draining(tokio::time::Instant),
    /// Announced; waiting for SWIM to have sent it (until the deadline at most).
    Announced(tokio::time::Instant),
}

/// What the actor needs to find its cluster: the `--join` seeds, the members its store kept,
/// how often to retry the ones that are not live.
pub(super) struct Rejoin {
    /// The seeds.
    pub(super) seeds: Vec<SocketAddr>,
    /// The members the store kept (last-known addresses).
    pub(super) stored: Vec<(NodeId, SocketAddr)>,
    /// The reconnect interval.
    pub(super) interval: Duration,
}

impl Actor {
    /// An actor around `engine`, sending through `transport`, keeping what must last in
    /// `store`, serving `subscribers` (whose replays report on `replays`). `start` and
    /// `clock_base` fix the Engine's clock (see [`Actor::now`]).
    pub(super) fn new(
        engine: Engine,
        transport: Transport,
        store: Option<Store>,
        (subscribers, replays): (Subscribers, mpsc::UnboundedReceiver<ReplayDone>),
        start: tokio::time::Instant,
        clock_base: u64,
    ) -> Self {
        let metrics = Metrics::new();
        Actor {
            // Nothing kept in this life yet: the first flush writes the starting incarnation.
            incarnation_kept: u64::MAX,
            engine,
            transport,
            start,
            addrs: HashMap::new(),
            subscribers,
            replays: Some(replays),
            queries: BTreeMap::new(),
            unroutable: 0,
            leaving: false,
            events: EventFeed::new(metrics.events()),
            metrics,
            store,
            last_ticket: 0,
            pending: VecDeque::new(),
            members_dirty: false,
            members_written: None,
            clock_base,
            carried: Flushed::default(),
            refused: None,
            members_ticket: None,
            reconnects: std::sync::Arc::default(),
        }
    }

    /// The Engine's clock: wall-clock microseconds at start, plus the monotonic time since.
    fn now(&self) -> Instant {
        Instant::from_micros(self.clock_base + self.start.elapsed().as_micros() as u64)
    }

    fn deadline(&self) -> tokio::time::Instant {
        match self.engine.poll_timeout() {
            Some(t) => self.start + Duration::from_micros(t.as_micros().saturating_sub(self.clock_base)),
            None => self.start + Duration::from_secs(3600 * 24 * 365),
        }
    }

    /// Run until a leave completes, a crash is asked for, or every seed refuses this node.
    pub(super) async fn run(
        mut self,
        rejoin: Rejoin,
        mut net: crate::transport::Inbound,
        mut commands: mpsc::Receiver<Command>,
        mut stop: watch::Receiver<Stop>,
    ) -> Result<(), AgentError> {
        let (mut join, mut join_notes) = Join::start(
            self.transport.clone(),
            &rejoin.seeds,
            &rejoin.stored,
            rejoin.interval,
            self.reconnects.clone(),
        );
        // A closed channel is ready at once forever: stop polling it when it closes.
        let mut commands_open = true;
        let mut housekeeping = tokio::time::interval(Duration::from_millis(500));
        let mut leaving = Leaving::No;
        let mut synced = self.store.as_ref().map(Store::synced);
        let mut replays = self.replays.take().unwrap_or_else(|| mpsc::unbounded_channel().1);
        self.flush();
        loop {
            let timer = tokio::time::sleep_until(self.deadline());
            tokio::pin!(timer);
            let step = match leaving {
                Leaving::No => None,
                Leaving::Draining(until) => Some(until.min(tokio::time::Instant::now() + DRAIN_POLL)),
                Leaving::Announced(until) => Some(until),
            };
            tokio::select! {
                ev = net.recv() => {
                    let Some(ev) = ev else { break };
                    self.on_transport(ev);
                }
                cmd = commands.recv(), if commands_open => {
                    match cmd {
                        // While leaving, only acknowledgements are taken (clients closed at
                        // the leave flush theirs); any other command's reply is dropped: 503.
                        Some(cmd) if self.leaving && !matches!(cmd, Command::Ack { .. }) => drop(cmd),
                        Some(cmd) => self.on_command(cmd),
                        None => commands_open = false,
                    }
                }
                Some(note) = join_notes.recv() => match note {
                    JoinNote::Resolved(id, addr) => {
                        self.addrs.insert(id, addr);
                        let now = self.now();
                        if join.is_joined() {
                            join.resolved(id, addr);
                            self.reconnect(now, id, addr);
                        } else {
                            let _ = self.engine.join(now, join.resolved(id, addr));
                        }
                    }
                    JoinNote::Refused(addr, reason) => {
                        if let Err(e) = join.refused(addr, &reason) {
                            self.transport.close().await;
                            return Err(e);
                        }
                    }
                },
                () = &mut timer => {
                    let now = self.now();
                    self.engine.handle_timeout(now);
                }
                Some(done) = replays.recv() => {
                    let ended = self.subscribers.replay_done(done);
                    self.unsubscribe(ended);
                }
                _ = housekeeping.tick() => {
                    let ended = self.subscribers.housekeeping(tokio::time::Instant::now());
                    self.unsubscribe(ended);
                    self.write_members();
                }
                durable = async {
                    match synced.as_mut() {
                        Some(s) => match s.changed().await {
                            Ok(()) => Some(*s.borrow()),
                            Err(_) => std::future::pending().await,
                        },
                        None => std::future::pending().await,
                    }
                } => self.release(durable.unwrap_or(0)),
                () = join.due(), if !self.leaving => {
                    let engine = &self.engine;
                    let again = join.fire(|id| engine.swim().member(id).is_some_and(|m| m.state.is_live()));
                    if let Some(ids) = again.map(<[NodeId]>::to_vec) {
                        let now = self.now();
                        let _ = self.engine.join(now, &ids);
                    }
                }
                changed = stop.changed() => {
                    let what = if changed.is_ok() { *stop.borrow() } else { Stop::Crash };
                    match what {
                        Stop::Crash => {
                            self.transport.close().await;
                            return Ok(());
                        }
                        Stop::Leave if !self.leaving => {
                            self.leaving = true;
                            // Subscriptions end first, each with its closing line, so durable
                            // clients acknowledge what they printed while the agent leaves (the
                            // Engine keeps its topics: the leave takes the node out of them).
                            let _ = self.subscribers.close_all(LEAVING);
                            leaving = Leaving::Draining(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                            tracing::info!(in_flight = self.transport.in_flight(), "leaving: draining the transport");
                        }
                        _ => {}
                    }
                }
                () = async { match step { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    let now = tokio::time::Instant::now();
                    match leaving {
                        Leaving::Draining(until) if self.transport.is_drained() || now >= until => {
                            if !self.transport.is_drained() {
                                tracing::warn!(in_flight = self.transport.in_flight(), "leaving: frames still in flight after {DRAIN_TIMEOUT:?}");
                            }
                            let ended = self.subscribers.close_all(LEAVING);
                            self.unsubscribe(ended);
                            self.engine.leave(self.now());
                            leaving = Leaving::Announced(now + LEAVE_TIMEOUT);
                        }
                        Leaving::Announced(until) if now >= until => {
                            tracing::warn!("leave not confirmed within {LEAVE_TIMEOUT:?}; stopping anyway");
                            break;
                        }
                        _ => {}
                    }
                }
            }
            let mut flushed = self.flush();
            flushed.merge(std::mem::take(&mut self.carried));
            if flushed.done {
                break;
            }
            for (id, live, left, addr) in flushed.members {
                join.member(id, live, left, addr);
            }
            if flushed.joined {
                if join.is_joined() {
                    tracing::debug!("joined again: member tables merged");
                } else {
                    tracing::info!("joined the cluster");
                    join.joined();
                }
            }
            if flushed.join_failed && !self.leaving {
                if join.is_joined() {
                    tracing::debug!("a reconnection's join got no answer in time");
                } else {
                    tracing::warn!("no seed answered the join in time; retrying");
                    join.failed();
                }
            }
        }
        let ended = self.subscribers.close_all(LEAVING);
        self.unsubscribe(ended);
        self.close_store();
        if !self.transport.flush(FINAL_FLUSH_TIMEOUT).await {
            tracing::warn!(
                in_flight = self.transport.in_flight(),
                "frames still in flight at the end of the leave"
            );
        }
        self.transport.close().await;
        Ok(())
    }

    /// A member that is not live in our view answered a reconnect dial at `addr`: join
    /// through it (a push-pull that merges both tables), with a few live members after it so
    /// that the join completes even if it goes away again.
    fn reconnect(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        let me = self.engine.id();
        if id == me || self.engine.swim().member(&id).is_some_and(|m| m.state.is_live()) {
            return;
        }
        let mut through = vec![id];
        through.extend(
            self.engine
                .swim()
                .members()
                .iter()
                .filter(|m| m.id != me && m.id != id && m.state == State::Alive)
                .map(|m| m.id)
                .take(2),
        );
        tracing::debug!(%addr, member = %id, "reconnect: joining through a member not live here");
        self.reconnects.joins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.engine.join(now, &through);
    }

    /// Make every queued write durable (bounded), answer the publishes waiting for it, stop
    /// the writer.
    fn close_store(&mut self) {
        self.write_members_now();
        if let Some(store) = self.store.take() {
            let durable = store.flush(STORE_FLUSH_TIMEOUT);
            if let Err(e) = &durable {
                tracing::error!("the store did not finish its writes: {e}");
            }
            let synced = *store.synced().borrow();
            self.release(synced);
            for (_, reply, _) in self.pending.drain(..) {
                let e = durable.clone().err().unwrap_or(crate::store::StoreError::Closed);
                let _ = reply.send(Err(e.into()));
            }
            store.close();
        }
    }

    /// Answer the publishes whose write is durable now.
    fn release(&mut self, synced: u64) {
        if let Some((_, kept)) = self.members_ticket.filter(|(t, _)| *t <= synced) {
            self.members_ticket = None;
            self.metrics.set_members_kept(kept);
            tracing::debug!(members = kept, "member list kept");
        }
        while self.pending.front().is_some_and(|(t, _, _)| *t <= synced) {
            if let Some((_, reply, id)) = self.pending.pop_front() {
                let _ = reply.send(Ok(id));
            }
        }
        if let Some(e) = self.store.as_ref().and_then(Store::failure) {
            for (_, reply, _) in self.pending.drain(..) {
                let _ = reply.send(Err(e.clone().into()));
            }
        }
    }

    /// Hand a record to the store. A store that failed refuses it (publishes are refused
    /// then; deliveries still reach subscribers, but are not kept: logged).
    fn persist(&mut self, p: Persist) {
        let Some(store) = &self.store else { return };
        let write = match p {
            Persist::Message { data, own } => Write::Message {
                id: data.id,
                published_at: data.published_at.as_micros(),
                payload: data.payload,
                own,
                seal: data.seal,
            },
            Persist::Gap { topic, origin, first, last } => {
                Write::Gap { topic, origin, first, last, at: self.now().as_micros() }
            }
        };
        match store.submit(write) {
            Ok(t) => self.last_ticket = t,
            Err(e) => {
                tracing::error!("not kept: {e}");
                self.refused = Some(e);
            }
        }
    }

    /// Write the member list if it changed and was not written lately.
    fn write_members(&mut self) {
        let due = self.members_written.is_none_or(|t| t.elapsed() >= MEMBERS_EVERY);
        if self.members_dirty && due {
            self.write_members_now();
        }
    }

    fn write_members_now(&mut self) {
        let Some(store) = &self.store else { return };
        if !self.members_dirty {
            return;
        }
        let list: Vec<(NodeId, MemberRecord)> = self
            .engine
            .members()
            .into_iter()
            .filter(|m| m.id != self.engine.id() && matches!(m.state, State::Alive | State::Suspect))
            .filter_map(|m| m.addr.map(|a| (m.id, MemberRecord { addr: a.to_string(), name: m.name })))
            .collect();
        let kept = list.len();
        match store.submit(Write::Members(list)) {
            // Shown in `/metrics` once durable (see `release`).
            Ok(ticket) => self.members_ticket = Some((ticket, kept)),
            Err(e) => tracing::warn!("member list not kept: {e}"),
        }
        self.members_dirty = false;
        self.members_written = Some(tokio::time::Instant::now());
    }

    fn on_transport(&mut self, ev: TransportEvent) {
        match ev {
            TransportEvent::Frame { from, addr, frame, .. } => {
                self.observed(from, addr);
                let now = self.now();
                self.engine.handle_message(now, from, frame);
            }
            TransportEvent::Connected { peer, addr } => self.observed(peer, addr),
            TransportEvent::Refused { addr, reason } => {
                tracing::warn!(%addr, "{reason}");
            }
        }
    }

    /// Note where `peer`'s connection comes from, within [`ADDRS_MAX`].
    fn observed(&mut self, peer: NodeId, addr: SocketAddr) {
        if self.addrs.len() < ADDRS_MAX || self.addrs.contains_key(&peer) {
            self.addrs.insert(peer, addr);
        }
    }

    /// Send what the Engine wants sent and handle its events.
    fn flush(&mut self) -> Flushed {
        let mut flushed = Flushed::default();
        while let Some(t) = self.engine.poll_transmit() {
            let addr = self
                .addrs
                .get(&t.to)
                .copied()
                .or_else(|| self.engine.addr_of(&t.to).and_then(|a| a.to_socket()));
            match addr {
                Some(a) => self.transport.send(t.to, a, t.reliability, t.msg),
                None => {
                    tracing::debug!(to = %t.to, "no address known: frame dropped");
                    self.unroutable += 1;
                }
            }
        }
        while let Some(e) = self.engine.poll_event() {
            match e {
                EngineEvent::Delivered(d) => {
                    let slow = self.subscribers.deliver(&d);
                    self.unsubscribe(slow);
                }
                EngineEvent::Gap { topic, origin, first, last } => {
                    let slow = self.subscribers.gap(topic, origin, first, last);
                    self.unsubscribe(slow);
                }
                EngineEvent::Answered { qid, value, rounds, converged, nodes } => {
                    self.metrics.observe_query_rounds(rounds);
                    if let Some(p) = self.queries.remove(&qid) {
                        let answer =
                            QueryResult { func: p.func, name: p.name, value, rounds, nodes, converged };
                        let _ = p.reply.send(Ok(answer));
                    }
                }
                EngineEvent::Member { node, state, incarnation } => {
                    self.members_dirty = true;
                    let name = self
                        .engine
                        .members()
                        .into_iter()
                        .find(|m| m.id == node)
                        .map(|m| m.name)
                        .unwrap_or_default();
                    tracing::info!(member = %name, id = %node, ?state, incarnation, "member");
                    let live = matches!(state, State::Alive | State::Suspect);
                    let observed =
                        if live { self.addrs.get(&node).copied() } else { self.addrs.remove(&node) };
                    let addr = observed.or_else(|| self.engine.addr_of(&node).and_then(|a| a.to_socket()));
                    flushed.members.push((node, live, state == State::Left, addr));
                }
                EngineEvent::Joined => flushed.joined = true,
                EngineEvent::JoinFailed => flushed.join_failed = true,
                EngineEvent::LeaveDone => flushed.done |= self.leaving,
                EngineEvent::Persist(p) => self.persist(p),
                EngineEvent::Notice(n) => self.events.emit(&n),
            }
        }
        self.keep_incarnation();
        flushed
    }

    /// Hand the SWIM incarnation to the store when it changed, so that the next life starts
    /// above it.
    fn keep_incarnation(&mut self) {
        let Some(store) = &self.store else { return };
        let incarnation = self.engine.incarnation();
        if incarnation != self.incarnation_kept {
            if let Err(e) = store.submit(Write::Incarnation(incarnation)) {
                tracing::warn!("incarnation not kept: {e}");
            }
            self.incarnation_kept = incarnation;
        }
    }

    /// Drop the Engine's subscriptions that ended here.
    fn unsubscribe(&mut self, ended: Vec<TopicName>) {
        let now = self.now();
        for name in ended {
            self.engine.unsubscribe(now, name.as_str());
        }
    }

    /// Open a subscription: a non-durable one subscribes the Engine (from where `options`
    /// says, if the topic is new here); a durable one is created if it does not exist (its
    /// topic anchored in the Engine for as long as it exists), then connected.
    fn subscribe(
        &mut self,
        topic: TopicName,
        options: SubscribeOptions,
        sink: mpsc::Sender<StreamItem>,
    ) -> Result<(), SubscribeError> {
        let now = self.now();
        let Some(name) = options.durable.clone() else {
            let id = self.engine.subscribe(now, topic.as_str(), options.from.engine())?;
            self.subscribers.add(id, topic, options, sink);
            return Ok(());
        };
        if !self.subscribers.check_durable(&name, &topic)? {
            self.engine.subscribe(now, topic.as_str(), options.from.engine())?;
            if let Err(e) = self.subscribers.create_durable(name.clone(), topic.clone(), options.from) {
                self.engine.unsubscribe(now, topic.as_str());
                return Err(e.into());
            }
        }
        self.subscribers.connect(&name, &options, sink)?;
        Ok(())
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Status(reply) => {
                let status = views::status(&self.engine, self.transport.local_addr(), self.start.elapsed());
                let _ = reply.send(status);
            }
            Command::Members(reply) => {
                let _ = reply.send(views::members(&self.engine));
            }
            Command::Publish { topic, payload, reply } => {
                if let Some(e) = self.store.as_ref().and_then(Store::failure) {
                    let _ = reply.send(Err(e.into()));
                    return;
                }
                match self.engine.publish(now, topic.as_str(), payload) {
                    Ok(id) if self.store.is_some() => {
                        // The publish's write is among the events: submit it now and answer
                        // once it is durable.
                        self.refused = None;
                        let f = self.flush();
                        self.carried.merge(f);
                        match self.refused.take() {
                            Some(e) => {
                                let _ = reply.send(Err(e.into()));
                            }
                            None => self.pending.push_back((self.last_ticket, reply, id)),
                        }
                    }
                    other => {
                        let _ = reply.send(other.map_err(PublishError::from));
                    }
                }
            }
            Command::Subscribe { topic, options, sink, reply } => {
                let _ = reply.send(self.subscribe(topic, options, sink));
            }
            Command::Ack { durable, acks, reply } => {
                let _ = reply.send(self.subscribers.ack(&durable, acks));
            }
            Command::Durables(reply) => {
                let _ = reply.send(self.subscribers.durables());
            }
            Command::DeleteDurable { name, reply } => {
                let deleted = self.subscribers.delete_durable(&name).map(|topic| {
                    // Its anchor goes: the topic stays subscribed only if others hold it.
                    self.engine.unsubscribe(now, topic.as_str());
                });
                let _ = reply.send(deleted);
            }
            Command::KnownSubscribers { topic, reply } => {
                let id = hearsay_protocols::TopicId::of(topic.as_str());
                let _ = reply.send(self.subscribers.on(id) + self.engine.topic_member_count(id));
            }
            Command::Topics(reply) => {
                let subscribers = &self.subscribers;
                let _ = reply.send(views::topics(&self.engine, |t| subscribers.on(t)));
            }
            Command::Ring(reply) => {
                let _ = reply.send(views::ring(&self.engine));
            }
            Command::SetValue { name, value, reply } => {
                let _ = reply.send(self.engine.set_value(now, &name, value));
            }
            Command::Query { func, name, scope, reply } => {
                match self.engine.query_scoped(now, func, &name, scope) {
                    Ok(qid) => {
                        self.queries.insert(qid, PendingQuery { func, name, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Metrics(reply) => {
                crate::exposition::update(
                    &self.metrics,
                    &self.engine,
                    &self.transport,
                    self.subscribers.len(),
                    self.store.as_ref(),
                );
                let r = &self.reconnects;
                self.metrics.set_reconnects(
                    r.dials.load(std::sync::atomic::Ordering::Relaxed),
                    r.joins.load(std::sync::atomic::Ordering::Relaxed),
                );
                let _ = reply.send(self.metrics.encode());
            }
            Command::SetTags { set, delete, reply } if set.is_empty() && delete.is_empty() => {
                let _ = reply.send(Ok(self.engine.tags().to_map()));
            }
            Command::SetTags { set, delete, reply } => {
                let changed = self.engine.tags().with_changes(&set, &delete).map_err(CommandError::from);
                let done = changed.and_then(|t| self.engine.set_tags(now, t));
                let _ = reply.send(done.map(|()| self.engine.tags().to_map()));
            }
            Command::Events(reply) => {
                let _ = reply.send(self.events.subscribe());
            }
        }
    }
}

impl Actor {
    /// A reader of the event stream and its counters, for the event handler.
    pub(super) fn event_reader(
        &mut self,
    ) -> (tokio::sync::broadcast::Receiver<crate::api::types::Event>, crate::metrics::EventCounters) {
        (self.events.subscribe(), self.metrics.events())
    }
}
