//! The agent runtime: one tokio task owns the [`Engine`] and runs one `select!` over the
//! QUIC transport's events, the local API's commands, the Engine's next deadline and the
//! shutdown signal. Everything else talks to it through channels, so it can be embedded many
//! times in one process (`hearsay demo`, `hearsay bench`).
//!
//! Time: the Engine's clock is microseconds since the agent started.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use hearsay_overlay::swim::{Addr, State, SwimConfig};
use hearsay_protocols::aggregate::{Func, QueryId};
use hearsay_protocols::{Instant, Machine, NodeId, Seed, TopicId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::types::{self, StreamItem};
use crate::api::{Command, server};
use crate::config::Preset;
use crate::engine::{Engine, EngineConfig, EngineEvent};
use crate::filter::Filter;
use crate::message::{self, AppMessage};
use crate::transport::faulty::Faults;
use crate::transport::identity::{ClusterSecret, NodeIdentity};
use crate::transport::{ConnectError, Transport, TransportConfig, TransportEvent};

/// Where an agent's identity comes from.
#[derive(Clone, Debug)]
pub enum IdentitySource {
    /// `node.key` in this directory (created on first start).
    DataDir(std::path::PathBuf),
    /// A fresh key in memory (demo, bench).
    Ephemeral,
}

/// Everything an agent needs to start.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Its name in member lists.
    pub name: String,
    /// UDP address to bind.
    pub bind: SocketAddr,
    /// Address to advertise to others (default: the bound address, or the local address
    /// toward the first seed when bound to an unspecified IP).
    pub advertise: Option<SocketAddr>,
    /// Seed addresses.
    pub join: Vec<SocketAddr>,
    /// Local API address; `None`: no HTTP server (in-process use through [`AgentHandle`]).
    pub api: Option<SocketAddr>,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// The node key.
    pub identity: IdentitySource,
    /// Timing preset.
    pub preset: Preset,
    /// Injected faults (tests, demo).
    pub faults: Arc<Faults>,
    /// Engine settings override (benchmarks); `None`: the preset's.
    pub engine: Option<EngineConfig>,
}

impl AgentOptions {
    /// Options with defaults for everything but the essentials.
    pub fn new(name: &str, bind: SocketAddr, secret: ClusterSecret) -> Self {
        AgentOptions {
            name: name.to_string(),
            bind,
            advertise: None,
            join: Vec::new(),
            api: None,
            secret,
            identity: IdentitySource::Ephemeral,
            preset: Preset::Lan,
            faults: Faults::none(),
            engine: None,
        }
    }
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    /// Its NodeId.
    pub id: NodeId,
    /// The UDP address it is bound to.
    pub addr: SocketAddr,
    /// Its API address, if it serves HTTP.
    pub api: Option<SocketAddr>,
    /// Send commands to it directly (what the HTTP API does).
    pub commands: mpsc::Sender<Command>,
    /// Its transport (counters, fault injection).
    pub transport: Transport,
    stop: watch::Sender<Stop>,
    task: tokio::task::JoinHandle<Result<()>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Running,
    Leave,
    Crash,
}

impl AgentHandle {
    /// Leave the cluster gracefully (announce, flush) and wait for the agent to end.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(Stop::Leave);
        self.task.await.context("agent task")?
    }

    /// Stop at once, as a crash would: no goodbye, connections dropped.
    pub async fn crash(self) {
        let _ = self.stop.send(Stop::Crash);
        let _ = self.task.await;
    }

    /// Ask the agent to leave gracefully, without waiting (see [`AgentHandle::stopped`]).
    pub fn request_leave(&self) {
        let _ = self.stop.send(Stop::Leave);
    }

    /// Wait until the agent ends: after a leave, or by itself on an error (a wrong secret).
    pub async fn stopped(&mut self) -> Result<()> {
        (&mut self.task).await.context("agent task")?
    }
}

fn swim_preset(p: Preset) -> SwimConfig {
    match p {
        Preset::Lan => SwimConfig::lan(),
        Preset::Wan => SwimConfig::wan(),
        Preset::Local => SwimConfig::local(),
    }
}

/// The address others should use to reach us.
fn advertised(bind: SocketAddr, explicit: Option<SocketAddr>, seeds: &[SocketAddr]) -> SocketAddr {
    if let Some(a) = explicit {
        return a;
    }
    if !bind.ip().is_unspecified() {
        return bind;
    }
    // Bound to 0.0.0.0: the local address the OS would use toward the first seed.
    let guess = seeds.first().and_then(|s| {
        let probe = std::net::UdpSocket::bind((bind.ip(), 0)).ok()?;
        probe.connect(s).ok()?;
        probe.local_addr().ok()
    });
    let ip = guess.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |g| g.ip());
    SocketAddr::new(ip, bind.port())
}

/// Start an agent: bind the transport (and the API if asked), build the Engine, join.
pub async fn spawn(opts: AgentOptions) -> Result<AgentHandle> {
    let identity = match &opts.identity {
        IdentitySource::DataDir(dir) => NodeIdentity::load_or_create(dir, &opts.secret)?,
        IdentitySource::Ephemeral => NodeIdentity::ephemeral(&opts.secret)?,
    };
    let (transport, net_events) =
        Transport::bind_with_faults(TransportConfig::new(opts.bind), &identity, opts.faults.clone())?;
    let addr = transport.local_addr();
    let advertise = advertised(addr, opts.advertise, &opts.join);
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let api = match opts.api {
        Some(api_addr) => {
            let listener = tokio::net::TcpListener::bind(api_addr).await.with_context(|| {
                format!("cannot listen for the API on {api_addr} (in use? pick another with --api)")
            })?;
            let bound = listener.local_addr()?;
            let router = server::router(server::ApiState::new(commands_tx.clone()));
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!("API server stopped: {e}");
                }
            });
            Some(bound)
        }
        None => None,
    };
    let config =
        Arc::new(opts.engine.clone().unwrap_or_else(|| EngineConfig::with_swim(swim_preset(opts.preset))));
    let mut seed_bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed_bytes)
        .map_err(|_| anyhow::anyhow!("OS random source failed"))?;
    let seed = Seed::from_bytes(seed_bytes);
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let engine = Engine::new(
        identity.id(),
        &opts.name,
        Addr::from_socket(advertise),
        epoch,
        config,
        &seed,
        Instant::ZERO,
    );
    tracing::info!(name = %opts.name, id = %identity.id(), %addr, %advertise, "agent started");
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    let actor = Actor {
        engine,
        transport: transport.clone(),
        start: tokio::time::Instant::now(),
        addrs: HashMap::new(),
        subs: BTreeMap::new(),
        next_sub: 1,
        queries: BTreeMap::new(),
        unroutable: 0,
        leaving: false,
        metrics: crate::metrics::Metrics::new(),
    };
    let task = tokio::spawn(actor.run(opts.join.clone(), net_events, commands_rx, stop_rx));
    Ok(AgentHandle { id: identity.id(), addr, api, commands: commands_tx, transport, stop: stop_tx, task })
}

struct Subscription {
    topic: TopicId,
    name: String,
    filter: Option<Filter>,
    expires: Option<tokio::time::Instant>,
    sink: mpsc::Sender<StreamItem>,
}

struct PendingQuery {
    func: String,
    name: String,
    reply: oneshot::Sender<Result<types::QueryResult, String>>,
}

struct Actor {
    engine: Engine,
    transport: Transport,
    start: tokio::time::Instant,
    /// Observed addresses of peers (what their connections came from), preferred over
    /// advertised ones.
    addrs: HashMap<NodeId, SocketAddr>,
    subs: BTreeMap<u64, Subscription>,
    next_sub: u64,
    queries: BTreeMap<QueryId, PendingQuery>,
    unroutable: u64,
    leaving: bool,
    metrics: crate::metrics::Metrics,
}

enum JoinNote {
    /// The seed at this address is this node (its address travels with it: the transport's
    /// `Connected` event comes on another channel and may be handled later).
    Resolved(NodeId, SocketAddr),
    Refused(String),
}

impl Actor {
    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    fn deadline(&self) -> tokio::time::Instant {
        match self.engine.poll_timeout() {
            Some(t) => self.start + Duration::from_micros(t.as_micros()),
            None => self.start + Duration::from_secs(3600 * 24 * 365),
        }
    }

    async fn run(
        mut self,
        seeds: Vec<SocketAddr>,
        mut net: mpsc::Receiver<TransportEvent>,
        mut commands: mpsc::Receiver<Command>,
        mut stop: watch::Receiver<Stop>,
    ) -> Result<()> {
        let (join_tx, mut join_rx) = mpsc::channel::<JoinNote>(64);
        let seed_count = seeds.len();
        for s in seeds {
            tokio::spawn(resolve_seed(self.transport.clone(), s, join_tx.clone()));
        }
        drop(join_tx);
        let mut refusals = 0usize;
        // Closed channels are ready at once forever: stop polling them when they close.
        let mut join_open = true;
        let mut commands_open = true;
        let mut housekeeping = tokio::time::interval(Duration::from_millis(500));
        let mut leave_deadline: Option<tokio::time::Instant> = None;
        // Seeds that answered, and when to ask them again after a failed join (SWIM itself
        // would wait a whole push-pull interval).
        let mut seed_ids: Vec<NodeId> = Vec::new();
        let mut join_retry: Option<tokio::time::Instant> = None;
        let mut join_backoff = Duration::from_millis(500);
        let _ = self.flush();
        loop {
            let timer = tokio::time::sleep_until(self.deadline());
            tokio::pin!(timer);
            tokio::select! {
                ev = net.recv() => {
                    let Some(ev) = ev else { break };
                    self.on_transport(ev);
                }
                cmd = commands.recv(), if !self.leaving && commands_open => {
                    match cmd {
                        Some(cmd) => self.on_command(cmd),
                        None => commands_open = false,
                    }
                }
                note = join_rx.recv(), if join_open => match note {
                    Some(JoinNote::Resolved(id, addr)) => {
                        self.addrs.insert(id, addr);
                        seed_ids.push(id);
                        let now = self.now();
                        let _ = self.engine.join(now, &seed_ids);
                    }
                    Some(JoinNote::Refused(reason)) => {
                        refusals += 1;
                        tracing::error!("{reason}");
                        if refusals == seed_count {
                            self.transport.close().await;
                            bail!("cannot join: every seed refused this node's certificate. The cluster \
                                   secret differs: start the agent with the cluster's --secret-file.");
                        }
                    }
                    None => join_open = false,
                },
                () = &mut timer => {
                    let now = self.now();
                    self.engine.handle_timeout(now);
                }
                _ = housekeeping.tick() => self.housekeeping(),
                () = async { match join_retry { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    join_retry = None;
                    let now = self.now();
                    let _ = self.engine.join(now, &seed_ids);
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
                            let now = self.now();
                            self.engine.leave(now);
                            leave_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                        }
                        _ => {}
                    }
                }
                () = async { match leave_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    tracing::warn!("leave not confirmed within 5 s; stopping anyway");
                    break;
                }
            }
            let (done, join_failed) = self.flush();
            if done {
                break;
            }
            if join_failed && !seed_ids.is_empty() && !self.leaving {
                join_retry = Some(tokio::time::Instant::now() + join_backoff);
                join_backoff = (join_backoff * 2).min(Duration::from_secs(10));
            }
        }
        self.close_subscriptions("the agent stopped");
        self.transport.close().await;
        Ok(())
    }

    fn on_transport(&mut self, ev: TransportEvent) {
        match ev {
            TransportEvent::Frame { from, addr, frame, .. } => {
                self.addrs.insert(from, addr);
                let now = self.now();
                self.engine.handle_message(now, from, frame);
            }
            TransportEvent::Connected { peer, addr } => {
                self.addrs.insert(peer, addr);
            }
            TransportEvent::Refused { addr, reason } => {
                tracing::warn!(%addr, "{reason}");
            }
        }
    }

    /// Send what the Engine wants sent and handle its events. Returns whether the agent is
    /// done, and whether a join just failed.
    fn flush(&mut self) -> (bool, bool) {
        let mut done = false;
        let mut join_failed = false;
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
                EngineEvent::Delivered(d) => self.deliver(d.id.topic, d.id.origin, d.id.seq, &d.payload),
                EngineEvent::Gap { topic, origin, first, last } => self.gap(topic, origin, first, last),
                EngineEvent::Answered { qid, value, rounds, converged, nodes } => {
                    self.metrics.observe_query_rounds(rounds);
                    if let Some(p) = self.queries.remove(&qid) {
                        let _ = p.reply.send(Ok(types::QueryResult {
                            func: p.func,
                            name: p.name,
                            value,
                            rounds,
                            nodes,
                            converged,
                        }));
                    }
                }
                EngineEvent::Member { node, state, incarnation } => {
                    let name = self
                        .engine
                        .members()
                        .into_iter()
                        .find(|m| m.id == node)
                        .map(|m| m.name)
                        .unwrap_or_default();
                    tracing::info!(member = %name, id = %node, ?state, incarnation, "member");
                    if !matches!(state, State::Alive | State::Suspect) {
                        self.addrs.remove(&node);
                    }
                }
                EngineEvent::Joined => tracing::info!("joined the cluster"),
                EngineEvent::JoinFailed => {
                    tracing::warn!("no seed answered the join in time; retrying");
                    join_failed = true;
                }
                EngineEvent::LeaveDone => {
                    if self.leaving {
                        done = true;
                    }
                }
            }
        }
        (done, join_failed)
    }

    fn deliver(&mut self, topic: TopicId, origin: NodeId, seq: u64, payload: &Bytes) {
        let msg = AppMessage::decode(payload)
            .unwrap_or_else(|_| AppMessage { headers: BTreeMap::new(), body: payload.clone() });
        let origin_hex = hex(&origin);
        let mut dead = Vec::new();
        for (id, sub) in self.subs.iter().filter(|(_, s)| s.topic == topic) {
            if sub.filter.as_ref().is_some_and(|f| !f.matches(&msg.headers)) {
                continue;
            }
            let (text, b64) = match std::str::from_utf8(&msg.body) {
                Ok(t) => (Some(t.to_string()), None),
                Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&msg.body))),
            };
            let item = StreamItem::Message(types::Delivery {
                topic: sub.name.clone(),
                origin: origin_hex.clone(),
                seq,
                payload: text,
                payload_b64: b64,
                headers: msg.headers.clone(),
            });
            if sub.sink.try_send(item).is_err() {
                dead.push(*id);
            }
        }
        for id in dead {
            self.end_subscription(id, "the subscriber did not keep up (its queue of 8192 messages was full)");
        }
    }

    fn gap(&mut self, topic: TopicId, origin: NodeId, first: u64, last: u64) {
        let origin_hex = hex(&origin);
        let mut dead = Vec::new();
        for (id, sub) in self.subs.iter().filter(|(_, s)| s.topic == topic) {
            let item = StreamItem::Gap {
                gap: types::Gap {
                    topic: sub.name.clone(),
                    origin: origin_hex.clone(),
                    from_seq: first,
                    to_seq: last,
                },
            };
            if sub.sink.try_send(item).is_err() {
                dead.push(*id);
            }
        }
        for id in dead {
            self.end_subscription(id, "the subscriber did not keep up (its queue of 8192 messages was full)");
        }
    }

    /// Close a subscription, telling its client why (in a task: its queue may be full).
    fn end_subscription(&mut self, id: u64, reason: &str) {
        let Some(sub) = self.subs.remove(&id) else { return };
        let now = self.now();
        self.engine.unsubscribe(now, &sub.name);
        let item = StreamItem::Closed { closed: types::Closed { reason: reason.to_string() } };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), sub.sink.send(item)).await;
        });
    }

    fn close_subscriptions(&mut self, reason: &str) {
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        for id in ids {
            self.end_subscription(id, reason);
        }
    }

    fn housekeeping(&mut self) {
        let now = tokio::time::Instant::now();
        let expired: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires.is_some_and(|e| e <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.end_subscription(id, "the subscription expired");
        }
        let gone: Vec<u64> =
            self.subs.iter().filter(|(_, s)| s.sink.is_closed()).map(|(id, _)| *id).collect();
        for id in gone {
            if let Some(sub) = self.subs.remove(&id) {
                let now = self.now();
                self.engine.unsubscribe(now, &sub.name);
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Status(reply) => {
                let members = self
                    .engine
                    .members()
                    .iter()
                    .filter(|m| matches!(m.state, State::Alive | State::Suspect))
                    .count();
                let _ = reply.send(types::Status {
                    name: self.engine.name().to_string(),
                    id: hex(&self.engine.id()),
                    addr: self.transport.local_addr().to_string(),
                    members,
                    uptime_s: self.start.elapsed().as_secs_f64(),
                });
            }
            Command::Members(reply) => {
                let v = self
                    .engine
                    .members()
                    .into_iter()
                    .map(|m| types::Member {
                        name: m.name,
                        addr: m.addr.map_or_else(String::new, |a| a.to_string()),
                        state: state_name(m.state).to_string(),
                        incarnation: m.incarnation,
                        id: hex(&m.id),
                        ring_id: format!("{:016x}", m.ring_id.0),
                    })
                    .collect();
                let _ = reply.send(v);
            }
            Command::Publish(req, reply) => {
                let _ = reply.send(self.publish(now, req));
            }
            Command::Subscribe { topic, filter, expire, sink, reply } => {
                if let Err(e) = message::validate_topic(&topic) {
                    let _ = reply.send(Err(e.to_string()));
                    return;
                }
                match self.engine.subscribe(now, &topic) {
                    Ok(tid) => {
                        let id = self.next_sub;
                        self.next_sub += 1;
                        let expires = expire.map(|d| tokio::time::Instant::now() + d);
                        self.subs.insert(id, Subscription { topic: tid, name: topic, filter, expires, sink });
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::Topics(reply) => {
                let mut v: Vec<types::TopicInfo> = self
                    .engine
                    .topic_views()
                    .into_iter()
                    .map(|t| {
                        let tree = self.engine.scribe().tree(t.topic);
                        let role = match &tree {
                            Some(tv) => tree_role(tv.role).to_string(),
                            None => t.role.to_string(),
                        };
                        types::TopicInfo {
                            topic: t.name.unwrap_or_else(|| t.topic.to_string()),
                            topic_id: t.topic.to_string(),
                            subscribers: self.subs.values().filter(|s| s.topic == t.topic).count(),
                            role,
                            parent: tree.as_ref().and_then(|tv| tv.parent).map(|p| hex(&p)),
                            children: tree
                                .as_ref()
                                .map_or_else(Vec::new, |tv| tv.children.iter().map(hex).collect()),
                            depth: tree.as_ref().filter(|tv| !tv.joining).map(|tv| tv.depth()),
                        }
                    })
                    .collect();
                // Topics this node only forwards for others.
                let known: Vec<TopicId> = self.engine.topic_views().iter().map(|t| t.topic).collect();
                for tv in self.engine.scribe().trees().filter(|tv| !known.contains(&tv.topic)) {
                    v.push(types::TopicInfo {
                        topic: self
                            .engine
                            .topic_name(tv.topic)
                            .map_or_else(|| tv.topic.to_string(), str::to_string),
                        topic_id: tv.topic.to_string(),
                        subscribers: 0,
                        role: tree_role(tv.role).to_string(),
                        parent: tv.parent.map(|p| hex(&p)),
                        children: tv.children.iter().map(hex).collect(),
                        depth: (!tv.joining).then(|| tv.depth()),
                    });
                }
                let _ = reply.send(v);
            }
            Command::Ring(reply) => {
                let r = self.engine.ring_view();
                let peer = |n: &hearsay_overlay::chord::RingNode| types::RingPeer {
                    id: hex(&n.id),
                    ring_id: format!("{:016x}", n.ring.0),
                };
                let _ = reply.send(types::RingInfo {
                    me: peer(&r.me),
                    predecessor: r.predecessor.as_ref().map(peer),
                    successors: r.successors.iter().map(peer).collect(),
                    fingers: r.fingers.iter().map(peer).collect(),
                });
            }
            Command::SetValue(req, reply) => {
                let _ = reply
                    .send(self.engine.set_value(self.now(), &req.name, req.value).map_err(|e| e.to_string()));
            }
            Command::Query(req, reply) => {
                let func = match req.func.as_str() {
                    "avg" => Func::Avg,
                    "sum" => Func::Sum,
                    "count" => Func::Count,
                    "min" => Func::Min,
                    _ => Func::Max,
                };
                match self.engine.query(now, func, &req.name) {
                    Ok(qid) => {
                        self.queries.insert(qid, PendingQuery { func: req.func, name: req.name, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::Metrics(reply) => {
                crate::exposition::update(&self.metrics, &self.engine, &self.transport, self.subs.len());
                let _ = reply.send(self.metrics.encode());
            }
        }
    }

    fn publish(&mut self, now: Instant, req: types::PublishRequest) -> Result<types::Published, String> {
        message::validate_topic(&req.topic).map_err(|e| e.to_string())?;
        let body = match (req.payload, req.payload_b64) {
            (Some(_), Some(_)) => return Err("give either payload or payload_b64, not both".into()),
            (Some(t), None) => Bytes::from(t.into_bytes()),
            (None, Some(b)) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| format!("payload_b64 is not base64: {e}"))?,
            ),
            (None, None) => Bytes::new(),
        };
        let encoded = AppMessage { headers: req.headers, body }.encode().map_err(|e| e.to_string())?;
        let id = self.engine.publish(now, &req.topic, encoded).map_err(|e| e.to_string())?;
        Ok(types::Published { topic: req.topic, origin: hex(&id.origin), seq: id.seq })
    }
}

/// Connect to a seed until it answers; report who it is, or that it refused us for good.
async fn resolve_seed(t: Transport, addr: SocketAddr, tx: mpsc::Sender<JoinNote>) {
    let mut delay = Duration::from_millis(200);
    loop {
        match t.connect(addr).await {
            Ok(id) => {
                let _ = tx.send(JoinNote::Resolved(id, addr)).await;
                return;
            }
            Err(ConnectError::Refused { reason, admission: true }) => {
                let _ = tx.send(JoinNote::Refused(reason)).await;
                return;
            }
            Err(e) => {
                tracing::warn!(seed = %addr, "seed not reachable yet: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Lower-case hex of a NodeId.
pub fn hex(id: &NodeId) -> String {
    id.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn tree_role(r: hearsay_overlay::scribe::Role) -> &'static str {
    match r {
        hearsay_overlay::scribe::Role::Root => "root",
        hearsay_overlay::scribe::Role::Member => "member",
        hearsay_overlay::scribe::Role::Forwarder => "forwarder",
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Alive => "alive",
        State::Suspect => "suspect",
        State::Dead => "dead",
        State::Left => "left",
    }
}
