//! The agent runtime: one tokio task owns the [`Engine`] and runs one `select!` over the
//! QUIC transport's events, the local API's commands, the Engine's next deadline and the
//! shutdown signal. Everything else talks to it through channels, so it can be embedded many
//! times in one process (`hearsay demo`, `hearsay bench`).
//!
//! | file | contents |
//! |---|---|
//! | `mod.rs` | [`spawn`], [`AgentOptions`], [`AgentHandle`], the start and stop errors |
//! | `command.rs` | [`Command`]: what the actor accepts, with checked inputs and typed refusals |
//! | `actor.rs` | the actor: the `select!` loop that drives the Engine and answers commands |
//! | `subscribers/` | local subscriptions: fan-out of deliveries and gaps (filters, slow consumers), durable subscriptions and their cursors, replays from the store |
//! | `keys.rs` | the keyring: key rotation (`hearsay keys`), members' key requests |
//! | `seeds.rs` | resolving seed addresses to members, retrying a join that failed, reconnecting |
//!
//! # The address
//!
//! Asked for port 0 with a data dir, the agent binds the port its previous life bound
//! (`DATA_DIR/last-addr`) when it is free, and any port otherwise: the other members' tables and
//! stores name the node at that address, so a node (or a whole cluster) restarted with
//! `--bind IP:0` is found again where it was, as one started on a fixed port is.
//!
//! Time: the Engine's clock is wall-clock microseconds at start plus the monotonic time since
//! (so publish times compare across nodes, up to clock skew, and never go backwards here).
//!
//! # The store
//!
//! With a data dir the agent keeps a durable store there ([`crate::store`]): it is opened
//! before anything else (a store that cannot be used is a start error naming the file), its
//! epoch names this node's streams (so a restarted publisher continues them), what it kept is
//! handed back to the Engine, and every durable subscription's topic is subscribed again
//! (resuming after what was kept, fetching what was published meanwhile): that subscription,
//! the durable subscription's "anchor", is held by the agent for as long as the durable
//! subscription exists, whether a client is connected or not, so what is published while no
//! client is connected is still received and stored. Publishes are acknowledged once their
//! write is durable.

mod actor;
mod command;
pub mod events;
pub mod keys;
mod seeds;
mod subscribers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hearsay_overlay::swim::Addr;
use hearsay_protocols::{Instant, NodeId, Seed};
use tokio::sync::{mpsc, watch};

pub use self::command::{
    Command, DurableError, DurableName, DurableNameError, MAX_DURABLE_NAME, PublishError, Reply, StartAt,
    StartAtError, SubscribeError, SubscribeOptions, rfc3339,
};
use self::subscribers::Subscribers;
use crate::api::server;
use crate::config::Preset;
use crate::engine::{self, Engine, EngineConfig, SubscribeFrom};
use crate::store::{Store, StoreConfig};
use crate::transport::faulty::Faults;
use crate::transport::identity::{ClusterSecret, IdentityError, NodeIdentity};
use crate::transport::keyring::{KEYRING_FILE, Keyring};
use crate::transport::{BindError, Transport, TransportConfig};

/// How long a stopping agent's API may take to answer the requests it holds (and write the
/// subscriptions' closing lines).
const API_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The reconnect interval: the SWIM push-pull interval (memberlist's LAN 30 s, which is also
/// Serf's `reconnect_interval`; 15 s in the `local` preset).
fn reconnect_interval(engine: &Engine) -> Duration {
    Duration::from_micros(engine.config().swim.push_pull_interval.as_micros())
}

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
    /// The cluster secret (`--secret-file`). With a data dir it seeds the keyring there on
    /// first start; a keyring already there wins (see [`keys`]).
    pub secret: ClusterSecret,
    /// The node key.
    pub identity: IdentitySource,
    /// Timing preset.
    pub preset: Preset,
    /// Injected faults (tests, demo).
    pub faults: Arc<Faults>,
    /// Engine settings override (benchmarks); `None`: the preset's. Validated at [`spawn`].
    pub engine: Option<EngineConfig>,
    /// The durable store: where, how it syncs, what it retains. `None`: nothing is kept
    /// (demo, bench without `--durable`).
    pub store: Option<StoreOptions>,
    /// The largest message body a publish through the HTTP API may carry (the
    /// `max_message_bytes` setting); 1 to [`MAX_BODY_LIMIT`](crate::message::MAX_BODY_LIMIT),
    /// checked at [`spawn`]. Default [`MAX_BODY`](crate::message::MAX_BODY).
    pub max_message_bytes: usize,
    /// Serve the test control over `faults` on the API (`/v1/test/control`; tests only).
    pub test_control: bool,
    /// The tags this node advertises from the start (`--tag`; changeable at run time).
    pub tags: hearsay_protocols::tags::Tags,
    /// A shell command run for each event (`--event-handler`; see [`events`]).
    pub event_handler: Option<String>,
    /// The API's token (`--api-token-file`): every request must carry it as
    /// `Authorization: Bearer`. Required when `api` is not a loopback address.
    pub api_token: Option<String>,
    /// Sign nothing and accept every seal and signature ([`NoAuth`](hearsay_protocols::auth::NoAuth)):
    /// only for measuring what authenticity costs (`hearsay bench --no-auth`), never in a
    /// cluster that faces anyone.
    pub no_auth: bool,
    /// Subscriptions the API serves at once (`--max-subscriptions`; default
    /// [`MAX_SUBSCRIPTIONS`](crate::api::server::MAX_SUBSCRIPTIONS)).
    pub max_subscriptions: usize,
}

/// Where and how an agent keeps its durable store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The data dir (`store.redb` goes in it).
    pub dir: std::path::PathBuf,
    /// When writes are synced.
    pub sync: crate::store::Sync,
    /// What each topic keeps.
    pub retention: crate::store::Retention,
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
            store: None,
            max_message_bytes: crate::message::MAX_BODY,
            test_control: false,
            tags: hearsay_protocols::tags::Tags::default(),
            event_handler: None,
            api_token: None,
            no_auth: false,
            max_subscriptions: server::MAX_SUBSCRIPTIONS,
        }
    }
}

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The Engine's settings cannot work (an override; a preset's always can).
    #[error("engine settings: {0}")]
    Config(#[from] engine::ConfigError),
    /// The node key could not be loaded or made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The QUIC transport could not start.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The API's TCP port could not be had.
    #[error("cannot listen for the API on {addr} (in use? pick another with --api)")]
    Api {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The API would be reachable beyond this host with no token to guard it.
    #[error(
        "the API address {0} is reachable beyond this host: give it a token with --api-token-file FILE \
         (clients send it as `Authorization: Bearer`), or bind the API to 127.0.0.1"
    )]
    ApiUnguarded(SocketAddr),
    /// The OS gave no randomness for the Engine's seed.
    #[error("the OS random source failed")]
    Random,
    /// The keyring in the data dir cannot be read or written.
    #[error(transparent)]
    Keyring(#[from] crate::transport::keyring::KeyringError),
    /// The store cannot be used (the data dir is unwritable, or the file is unreadable).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// `max_message_bytes` is 0, or more than an encoded message can carry.
    #[error("max_message_bytes (--max-message-bytes) = {0}")]
    MaxMessageBytes(String),
}

/// Why a running agent ended other than by a leave or a crash asked of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Every seed refused this node's certificate: the cluster secret differs.
    #[error(
        "cannot join: every seed refused this node's certificate. The cluster secret differs: \
         start the agent with the cluster's --secret-file (its current primary key, after a \
         `hearsay keys` rotation)."
    )]
    SeedsRefused,
    /// The actor task panicked or was cancelled.
    #[error("agent task: {0}")]
    Task(#[from] tokio::task::JoinError),
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
    /// Its keyring (key rotation).
    pub keys: Arc<keys::LiveKeyring>,
    stop: watch::Sender<Stop>,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

/// What the handle asks of the actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Running,
    Leave,
    Crash,
}

impl AgentHandle {
    /// Leave the cluster gracefully (announce, flush) and wait for the agent to end.
    pub async fn shutdown(self) -> Result<(), AgentError> {
        let _ = self.stop.send(Stop::Leave);
        self.task.await?
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
    pub async fn stopped(&mut self) -> Result<(), AgentError> {
        (&mut self.task).await?
    }
    /// Send `make(reply)` to the agent and wait for the reply.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Stopping> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Stopping)?;
        rx.await.map_err(|_| Stopping)
    }
}

/// The agent took no more commands, or ended before it replied: it is stopping or gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the agent is stopping")]
pub struct Stopping;

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

/// Start an agent: check the Engine's settings, bind the transport (and the API if asked),
/// build the Engine, join.
pub async fn spawn(opts: AgentOptions) -> Result<AgentHandle, StartError> {
    let config = opts.engine.clone().unwrap_or_else(|| opts.preset.engine_config());
    config.validate()?;
    crate::config::check_max_message_bytes(opts.max_message_bytes).map_err(StartError::MaxMessageBytes)?;
    if let Some(api) = opts.api {
        if !api.ip().is_loopback() && opts.api_token.is_none() {
            return Err(StartError::ApiUnguarded(api));
        }
    }
    let opened = match &opts.store {
        Some(s) => {
            let (store, stored) = Store::open(StoreConfig {
                dir: s.dir.clone(),
                sync: s.sync,
                retention: s.retention,
                restore_per_stream: config.pbcast.history_msgs,
            })?;
            Some((store, stored))
        }
        None => None,
    };
    let (ring, ring_path, identity) = match &opts.identity {
        IdentitySource::DataDir(dir) => {
            let (ring, missing) = Keyring::load_or_init(dir, &opts.secret)?;
            if missing {
                tracing::warn!(
                    keyring = %dir.join(KEYRING_FILE).display(),
                    secret_file_key = %opts.secret.fingerprint(),
                    keys = ?ring.fingerprints(),
                    "the --secret-file key is not in the keyring, which wins: the keyring's keys are used"
                );
            }
            let identity = NodeIdentity::load_or_create_with(dir, &ring)?;
            (ring, Some(dir.join(KEYRING_FILE)), identity)
        }
        IdentitySource::Ephemeral => {
            (Keyring::single(opts.secret.clone()), None, NodeIdentity::ephemeral(&opts.secret)?)
        }
    };
    let data_dir = match &opts.identity {
        IdentitySource::DataDir(dir) => Some(dir.as_path()),
        IdentitySource::Ephemeral => None,
    };
    let (transport, net_events) = bind(&opts, data_dir, &identity)?;
    let id = identity.id();
    let auth: Arc<dyn hearsay_protocols::auth::Authenticator> = if opts.no_auth {
        Arc::new(hearsay_protocols::auth::NoAuth(id))
    } else {
        Arc::new(identity.signer()?)
    };
    let live_keyring = keys::LiveKeyring::new(ring, identity, ring_path, transport.clone());
    let (key_calls_tx, key_calls) = mpsc::channel(16);
    transport.serve_keys(key_calls_tx);
    tokio::spawn(live_keyring.clone().serve(key_calls));
    let addr = transport.local_addr();
    let advertise = advertised(addr, opts.advertise, &opts.join);
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    // When the actor ends, the API stops taking connections and answers what it holds (a 503:
    // the agent is stopping) before the agent counts as stopped.
    let (actor_ended, api_stop) = tokio::sync::oneshot::channel::<()>();
    let (api, api_server) = match opts.api {
        Some(api_addr) => {
            let listen = tokio::net::TcpListener::bind(api_addr).await;
            let listener = listen.map_err(|source| StartError::Api { addr: api_addr, source })?;
            let bound = listener.local_addr().map_err(|source| StartError::Api { addr: api_addr, source })?;
            let mut state = server::ApiState::new(commands_tx.clone())
                .with_max_message_bytes(opts.max_message_bytes)
                .with_token(opts.api_token.as_deref())
                .with_max_subscriptions(opts.max_subscriptions)
                .with_keys(live_keyring.clone());
            if opts.test_control {
                state = state.with_test_control(opts.faults.clone());
            }
            let router = server::router(state);
            let server = tokio::spawn(async move {
                let stop = async move {
                    let _ = api_stop.await;
                };
                if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
                    tracing::error!("API server stopped: {e}");
                }
            });
            (Some(bound), Some(server))
        }
        None => (None, None),
    };
    let mut seed_bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed_bytes)
        .map_err(|_| StartError::Random)?;
    let seed = Seed::from_bytes(seed_bytes);
    let start = tokio::time::Instant::now();
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let clock_base = wall.as_micros() as u64;
    let now = Instant::from_micros(clock_base);
    // A node without a store opens new streams at every start (epoch: the start time).
    let epoch = opened.as_ref().map_or(wall.as_millis() as u64, |(_, s)| s.epoch);
    let mut engine =
        Engine::new(auth, &opts.name, Addr::from_socket(advertise), epoch, Arc::new(config), &seed, now);
    let mut kept_members = Vec::new();
    let (store, subscribers) = match opened {
        Some((store, stored)) => {
            let kept = stored.restored.messages.len();
            let heads = stored.restored.heads.clone();
            if stored.incarnation > 0 {
                // Above whatever the cluster still holds about the previous life.
                engine.raise_incarnation(stored.incarnation + 1);
            }
            kept_members = stored
                .members
                .iter()
                .filter_map(|(id, m)| Some((*id, m.addr.parse::<SocketAddr>().ok()?)))
                .collect();
            engine.restore(now, stored.restored);
            let mut topics: Vec<&str> = stored.durables.iter().map(|(_, d)| d.topic.as_str()).collect();
            topics.sort_unstable();
            topics.dedup();
            for topic in &topics {
                if let Err(e) = engine.subscribe(now, topic, SubscribeFrom::Resume) {
                    tracing::warn!(topic, "durable subscription not resumed: {e}");
                }
            }
            tracing::info!(
                path = %store.path().display(),
                epoch,
                kept,
                durable_topics = topics.len(),
                members = kept_members.len(),
                incarnation = stored.incarnation,
                created = stored.created,
                "store opened"
            );
            let subscribers = Subscribers::new(Some(store.clone()), &heads, stored.durables);
            (Some(store), subscribers)
        }
        None => (None, Subscribers::new(None, &[], Vec::new())),
    };
    if !opts.tags.is_empty() {
        if let Err(e) = engine.set_tags(now, opts.tags.clone()) {
            tracing::warn!("tags not advertised: {e}");
        }
    }
    tracing::info!(name = %opts.name, %id, %addr, %advertise, "agent started");
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    let rejoin = actor::Rejoin {
        seeds: opts.join.clone(),
        stored: kept_members,
        interval: reconnect_interval(&engine),
    };
    let mut actor = actor::Actor::new(engine, transport.clone(), store, subscribers, start, clock_base);
    if let Some(command) = &opts.event_handler {
        let (events, counters) = actor.event_reader();
        events::spawn_handler(command.clone(), events, counters);
    }
    let task = tokio::spawn(async move {
        let ended = actor.run(rejoin, net_events, commands_rx, stop_rx).await;
        drop(actor_ended);
        if let Some(server) = api_server {
            // Bounded: a client that does not read its subscription stream cannot hold us.
            if tokio::time::timeout(API_DRAIN, server).await.is_err() {
                tracing::warn!("the API did not finish within {API_DRAIN:?}");
            }
        }
        ended
    });
    Ok(AgentHandle {
        id,
        addr,
        api,
        commands: commands_tx,
        transport,
        keys: live_keyring,
        stop: stop_tx,
        task,
    })
}

/// The file that holds the QUIC address the agent last bound, in its data dir.
const LAST_ADDR_FILE: &str = "last-addr";

/// Bind the QUIC transport: on port 0 with a data dir, the previous life's port first if it
/// is free (see "The address" above); the address bound is kept for the next life.
fn bind(
    opts: &AgentOptions,
    data_dir: Option<&std::path::Path>,
    identity: &NodeIdentity,
) -> Result<(Transport, crate::transport::Inbound), StartError> {
    let previous = data_dir
        .filter(|_| opts.bind.port() == 0)
        .and_then(|d| std::fs::read_to_string(d.join(LAST_ADDR_FILE)).ok())
        .and_then(|text| text.trim().parse::<SocketAddr>().ok())
        .filter(|a| a.ip() == opts.bind.ip() && a.port() != 0);
    let bound = match previous {
        Some(at) => {
            match Transport::bind_with_faults(TransportConfig::new(at), identity, opts.faults.clone()) {
                Ok(t) => Ok(t),
                Err(e) => {
                    tracing::info!(%at, "the previous life's address is taken ({e}); binding another port");
                    Transport::bind_with_faults(
                        TransportConfig::new(opts.bind),
                        identity,
                        opts.faults.clone(),
                    )
                }
            }
        }
        None => Transport::bind_with_faults(TransportConfig::new(opts.bind), identity, opts.faults.clone()),
    }?;
    if let Some(d) = data_dir {
        // Written whole then renamed: a crash leaves the old file or the new one.
        let tmp = d.join(format!("{LAST_ADDR_FILE}.tmp"));
        let kept = std::fs::write(&tmp, bound.0.local_addr().to_string())
            .and_then(|()| std::fs::rename(&tmp, d.join(LAST_ADDR_FILE)));
        if let Err(e) = kept {
            tracing::warn!("cannot keep the bound address in {}: {e}", d.display());
        }
    }
    Ok(bound)
}
