//! Seeds and reconnection: the addresses an agent joins through, and how it finds the cluster
//! again after a restart, a whole-cluster restart or a healed partition (Serf's reconnect).
//!
//! SWIM joins through members (NodeIds), so each address is first resolved by connecting to
//! it (the transport learns the NodeId from the peer's certificate).
//!
//! - **At start** the agent dials its `--join` seeds and up to [`STORED_DIALS`] of the members
//!   its store kept from its previous life, each retried with backoff (200 ms doubling to
//!   5 s) until the agent has joined through any of them: a restarted agent whose seeds are
//!   gone (or not up yet) finds the cluster through the members it knew. A seed that refuses
//!   this node's certificate (another cluster secret) is given up for good, and when every
//!   seed has refused, the agent stops with [`AgentError::SeedsRefused`].
//! - **A join that no resolved address answered in time** is asked again with its own backoff
//!   (500 ms doubling to 10 s): SWIM by itself would only retry at its next push-pull.
//! - **Once joined**, every reconnect interval (the SWIM push-pull interval: memberlist's LAN
//!   30 s, as Serf's `reconnect_interval`) the agent dials at most [`DIALS_PER_ROUND`] of the
//!   addresses it knows whose member is not live in its view, taken in turn: seeds, the
//!   members its store kept, and members that failed (Dead, not Left: a member that left
//!   meant to). One that answers is joined through (a push-pull that merges both tables), so
//!   two halves of a healed partition, or of a cluster restarted all at once that formed in
//!   pieces, become one again. At most [`BOOK_MAX`] members are remembered, each for
//!   [`RECONNECT_TIMEOUT`] after it was last seen live (Serf's `reconnect_timeout`).
//!
//! Dials are logged at debug level; failures of a dial are expected (the member is down).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hearsay_protocols::NodeId;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::AgentError;
use crate::transport::{ConnectError, Transport};

/// Members the store kept that are dialled at start, besides the seeds.
pub(super) const STORED_DIALS: usize = 8;
/// Members remembered for reconnection at most (kept by the store, or seen failing); the
/// oldest is forgotten first.
pub(super) const BOOK_MAX: usize = 64;
/// Addresses dialled per reconnect round at most.
pub(super) const DIALS_PER_ROUND: usize = 2;
/// A member not seen live for this long is not dialled any more (Serf's `reconnect_timeout`).
pub(super) const RECONNECT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Reconnection counters (for `/metrics`), shared with the dialling tasks.
#[derive(Debug, Default)]
pub(super) struct ReconnectStats {
    /// Addresses dialled: seeds and kept members at start (each attempt), members not live in
    /// reconnect rounds.
    pub(super) dials: AtomicU64,
    /// Joins through a member that answered while not live here.
    pub(super) joins: AtomicU64,
}

/// What dialling an address found out.
pub(super) enum JoinNote {
    /// The member at this address is this node (its address travels with it: the transport's
    /// `Connected` event comes on another channel and may be handled later).
    Resolved(NodeId, SocketAddr),
    /// The address refused this node's certificate: why.
    Refused(SocketAddr, String),
}

/// Connect to `addr` until it answers, it refuses us for good, or `joined` turns true.
async fn resolve(
    t: Transport,
    addr: SocketAddr,
    seed: bool,
    joined: watch::Receiver<bool>,
    tx: mpsc::Sender<JoinNote>,
    stats: Arc<ReconnectStats>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        stats.dials.fetch_add(1, Ordering::Relaxed);
        match t.connect(addr).await {
            Ok(id) => {
                let _ = tx.send(JoinNote::Resolved(id, addr)).await;
                return;
            }
            Err(ConnectError::Refused { reason, admission: true }) => {
                let _ = tx.send(JoinNote::Refused(addr, reason)).await;
                return;
            }
            Err(e) if seed && !*joined.borrow() => {
                tracing::warn!(seed = %addr, "seed not reachable yet: {e}")
            }
            Err(e) => tracing::debug!(%addr, "not reachable: {e}"),
        }
        if *joined.borrow() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Dial `addr` once (the transport's connect timeout bounds it) and report who answered.
async fn dial_once(t: Transport, addr: SocketAddr, tx: mpsc::Sender<JoinNote>, stats: Arc<ReconnectStats>) {
    stats.dials.fetch_add(1, Ordering::Relaxed);
    match t.connect(addr).await {
        Ok(id) => {
            let _ = tx.send(JoinNote::Resolved(id, addr)).await;
        }
        Err(ConnectError::Refused { reason, admission: true }) => {
            let _ = tx.send(JoinNote::Refused(addr, reason)).await;
        }
        Err(e) => tracing::debug!(%addr, "reconnect: no answer: {e}"),
    }
}

/// An address worth dialling when its member is not live.
#[derive(Clone, Debug)]
struct Known {
    addr: SocketAddr,
    /// Its member, once known (a seed's is learnt by dialling it).
    id: Option<NodeId>,
    /// A `--join` seed: never forgotten.
    seed: bool,
    /// When its member was last seen live (or remembered).
    seen: Instant,
}

/// The state of joining and rejoining: seeds and remembered members, the initial join's
/// retry, and the reconnect rounds.
pub(super) struct Join {
    transport: Transport,
    tx: mpsc::Sender<JoinNote>,
    joined_tx: watch::Sender<bool>,
    seeds: usize,
    refusals: usize,
    /// Members resolved before the first join completed, in the order they answered.
    resolved: Vec<NodeId>,
    retry: Option<Instant>,
    backoff: Duration,
    /// Seeds first, then remembered members, oldest first.
    known: VecDeque<Known>,
    /// Where the next reconnect round starts in `known`.
    cursor: usize,
    interval: Duration,
    next_round: Option<Instant>,
    stats: Arc<ReconnectStats>,
}

impl Join {
    /// Joining through `seeds` and, besides them, the members the store kept; reconnect
    /// rounds every `interval` once joined. Starts dialling at once; what the dials find comes
    /// on the returned channel.
    pub(super) fn start(
        transport: Transport,
        seeds: &[SocketAddr],
        stored: &[(NodeId, SocketAddr)],
        interval: Duration,
        stats: Arc<ReconnectStats>,
    ) -> (Join, mpsc::Receiver<JoinNote>) {
        let (tx, rx) = mpsc::channel(64);
        let (joined_tx, joined) = watch::channel(false);
        let now = Instant::now();
        let mut known: VecDeque<Known> =
            seeds.iter().map(|&addr| Known { addr, id: None, seed: true, seen: now }).collect();
        for &(id, addr) in stored.iter().filter(|(_, a)| !seeds.contains(a)).take(BOOK_MAX) {
            known.push_back(Known { addr, id: Some(id), seed: false, seen: now });
        }
        let stored_dials = known.iter().filter(|k| !k.seed).take(STORED_DIALS);
        for k in known.iter().filter(|k| k.seed).chain(stored_dials) {
            let stats = stats.clone();
            tokio::spawn(resolve(transport.clone(), k.addr, k.seed, joined.clone(), tx.clone(), stats));
        }
        if !stored.is_empty() {
            tracing::info!(
                seeds = seeds.len(),
                stored = stored.len(),
                dialled = stored.len().min(STORED_DIALS),
                "dialling the seeds and members kept from the previous run"
            );
        }
        let join = Join {
            transport,
            tx,
            joined_tx,
            seeds: seeds.len(),
            refusals: 0,
            resolved: Vec::new(),
            retry: None,
            backoff: Duration::from_millis(500),
            known,
            cursor: 0,
            interval: interval.max(Duration::from_millis(100)),
            next_round: None,
            stats,
        };
        (join, rx)
    }

    /// True once the first join completed.
    pub(super) fn is_joined(&self) -> bool {
        *self.joined_tx.borrow()
    }

    /// The first join completed (later ones are reconnections): the start dials stop, the
    /// reconnect rounds begin.
    pub(super) fn joined(&mut self) {
        if !self.is_joined() {
            let _ = self.joined_tx.send(true);
            self.retry = None;
            self.next_round = Some(Instant::now() + self.interval);
        }
    }

    /// `addr` answered as `id`. Before the first join: the members to join through now.
    pub(super) fn resolved(&mut self, id: NodeId, addr: SocketAddr) -> &[NodeId] {
        let now = Instant::now();
        for k in self.known.iter_mut().filter(|k| k.addr == addr) {
            k.id = Some(id);
            k.seen = now;
        }
        if !self.is_joined() && !self.resolved.contains(&id) {
            self.resolved.push(id);
        }
        &self.resolved
    }

    /// `addr` refused this node: an error once every seed has (before the first join).
    pub(super) fn refused(&mut self, addr: SocketAddr, reason: &str) -> Result<(), AgentError> {
        tracing::error!("{reason}");
        let seed = self.known.iter().any(|k| k.seed && k.addr == addr);
        self.known.retain(|k| k.seed || k.addr != addr);
        if seed {
            self.refusals += 1;
            if self.refusals == self.seeds && !self.is_joined() {
                return Err(AgentError::SeedsRefused);
            }
        }
        Ok(())
    }

    /// A member's state changed: one that failed is remembered for reconnection (at `addr`),
    /// one that left is forgotten, a live one is seen now.
    pub(super) fn member(&mut self, id: NodeId, live: bool, left: bool, addr: Option<SocketAddr>) {
        let now = Instant::now();
        if left {
            self.known.retain(|k| k.seed || k.id != Some(id));
            return;
        }
        if let Some(k) = self.known.iter_mut().find(|k| k.id == Some(id)) {
            if live {
                k.seen = now;
            }
            if let Some(a) = addr.filter(|_| !k.seed) {
                k.addr = a;
            }
            return;
        }
        if live {
            return;
        }
        let Some(addr) = addr else { return };
        if self.known.iter().filter(|k| !k.seed).count() >= BOOK_MAX {
            if let Some(oldest) = self.known.iter().position(|k| !k.seed) {
                self.known.remove(oldest);
            }
        }
        self.known.push_back(Known { addr, id: Some(id), seed: false, seen: now });
    }

    /// The first join failed (no resolved member answered in time): ask again after the
    /// backoff, if there is anyone to ask. Later joins (reconnections) are not retried here.
    pub(super) fn failed(&mut self) {
        if !self.is_joined() && !self.resolved.is_empty() {
            self.retry = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Wait for the join retry or the next reconnect round; never ready when none is due.
    pub(super) async fn due(&self) {
        match self.retry.into_iter().chain(self.next_round).min() {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// What is due now: `Some(members)` to join through again (the first join's retry), or
    /// `None` after starting a reconnect round: dialling at most [`DIALS_PER_ROUND`] known
    /// addresses whose member `live` says is not live.
    pub(super) fn fire(&mut self, live: impl Fn(&NodeId) -> bool) -> Option<&[NodeId]> {
        let now = Instant::now();
        if self.retry.is_some_and(|at| at <= now) {
            self.retry = None;
            return Some(&self.resolved);
        }
        if self.next_round.is_none_or(|at| at > now) {
            return None;
        }
        self.next_round = Some(now + self.interval);
        self.known.retain(|k| k.seed || now.duration_since(k.seen) < RECONNECT_TIMEOUT);
        let n = self.known.len();
        let mut dialled = 0;
        for step in 0..n {
            if dialled == DIALS_PER_ROUND {
                break;
            }
            let k = &self.known[(self.cursor + step) % n];
            if k.id.as_ref().is_some_and(&live) {
                continue;
            }
            tracing::debug!(addr = %k.addr, id = ?k.id, seed = k.seed, "reconnect: dialling");
            tokio::spawn(dial_once(self.transport.clone(), k.addr, self.tx.clone(), self.stats.clone()));
            dialled += 1;
            self.cursor = (self.cursor + step + 1) % n;
        }
        None
    }
}
