//! QUIC transport: authenticated connections between members, a bounded connection cache,
//! datagrams for unreliable frames and streams for reliable or large ones.
//!
//! - **One frame per datagram, one frame per unidirectional stream.** A datagram frame that
//!   does not fit the connection's current datagram size goes on a stream instead. Streams are
//!   independent, so two reliable frames to the same peer may arrive in either order; every
//!   hearsay exchange is request/response, so nothing relies on cross-stream order.
//! - **Bidirectional streams carry key requests only** ([`keyring`]): [`Transport::request`]
//!   sends one and reads its reply; a member's request goes to whoever
//!   [`Transport::serve_keys`] named, at most 2 streams per connection and 4 requests at once,
//!   each bounded in bytes and time.
//! - **Admission changes at run time** ([`Transport::set_identity`]): a key rotation replaces
//!   the TLS settings of new handshakes, both directions; established connections stay.
//! - **Connection cache.** At most `max_connections` live connections; opening one more closes
//!   the least recently used. QUIC's idle timeout closes the rest when traffic stops, so a node
//!   keeps connections only to the peers it currently talks to (gossip partners), far fewer
//!   than the members it knows.
//! - **Admission** is the TLS handshake (see [`identity`]): a connection exists only with a
//!   peer whose certificate chains to the cluster CA, and its [`NodeId`] is the key in that
//!   certificate. A refused handshake becomes a [`TransportEvent::Refused`] with the reason.
//! - **Backpressure.** Received frames go to one channel bounded in frames and in bytes, with
//!   bounded reader tasks and timeouts, and handshakes are admitted after a stateless Retry and
//!   under a rate limit: see [`inbound`]. A datagram that finds the queue full is dropped and
//!   counted (it could have been lost anyway); a stream frame waits, which pushes back on the
//!   sender through QUIC flow control.
//! - **One connection per peer.** A second connection from a peer already connected closes
//!   one of the two: the older, unless both are younger than [`DUPLICATE_GRACE`] (the two
//!   sides dialled each other at once), when both sides keep the one dialled by the smaller
//!   NodeId.
//! - **Restarts.** A peer that restarts leaves its old connections behind at everyone who
//!   talked to it, and QUIC alone would keep sending into them until the idle timeout (60 s).
//!   Three things replace them as soon as the peer is back: a connection accepted from a peer
//!   replaces the cached one at once (the rule above); the endpoint's stateless-reset and
//!   connection-id keys are derived from the node key ([`NodeIdentity::endpoint_keys`]), so the
//!   restarted node answers a packet on a connection of its previous life with a stateless
//!   reset that the sender accepts (RFC 9000 §10.3) and it redials at its next send (a stream
//!   frame the reset took is sent once more, on the new connection); and a cached connection on
//!   which nothing has been received for [`UNANSWERED_AFTER`] since a send (QUIC acknowledges
//!   every packet that carries data within its `max_ack_delay`, 25 ms) is taken out of the
//!   cache, so the next send dials the address the node gives now (a peer back at another
//!   address, or not back at all).
//! - **Dialling** gives up after [`TransportConfig::connect_timeout`] (QUIC's own handshake
//!   timeout is the idle timeout): a seed that is not up yet is dialled again by its caller.
//! - **Draining.** [`Transport::flush`] waits (bounded) until what was handed to the transport
//!   has left: frames waiting for a connection, stream frames until the peer acknowledged them,
//!   datagrams until QUIC sent them. The agent calls it before it closes the endpoint.

pub mod faulty;
pub mod identity;
pub mod inbound;
pub mod keyring;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hearsay_protocols::{NodeId, Reliability};
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::faulty::{Faults, FaultySocket, WireStats};
use self::identity::{IdentityError, NodeIdentity, SERVER_NAME, peer_node_id};
pub use self::inbound::Inbound;
use self::inbound::{HandshakeLimit, Held, RefusalLog, StreamSlots, count};
use self::keyring::{KeyReply, KeyRequest, MAX_REPLY, MAX_REQUEST};

/// Transport settings.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// UDP address to listen on.
    pub bind: SocketAddr,
    /// Live connections kept at most (least recently used closed beyond it). Default 64.
    pub max_connections: usize,
    /// A connection with no traffic for this long is closed. Default 60 s: gossip partners are
    /// random, so at 30 s an N = 100 cluster re-handshook some 20 connections a second.
    pub idle_timeout: Duration,
    /// Largest frame accepted on a stream. Default 2 MiB (`wire::DEFAULT_FRAME_LIMIT`).
    pub frame_limit: usize,
    /// Received frames waiting for the node at most. Default 8192.
    pub queue: usize,
    /// Frames held per peer while its connection is being opened. Default 256.
    pub pending_per_peer: usize,
    /// Bytes of received frames held at most, read or queued for the node (see [`inbound`]).
    /// Default 64 MiB; at least `frame_limit`.
    pub queue_bytes: usize,
    /// Streams read at once per connection. Default 8.
    pub streams_per_connection: usize,
    /// Streams read at once by the node (also at most `queue_bytes / frame_limit`). Default 64.
    pub streams_total: usize,
    /// A received stream must end within this. Default 30 s (2 MiB at ~0.5 Mbit/s).
    pub read_timeout: Duration,
    /// A sent stream must be written within this. Default 30 s.
    pub write_timeout: Duration,
    /// Sent streams in progress at most; a frame beyond is dropped and counted. Default 1024.
    pub streams_out: usize,
    /// Answer an Initial from an unvalidated address with a stateless Retry. Default on.
    pub retry: bool,
    /// Validated handshakes admitted per second (burst: two seconds' worth). Default 200.
    pub handshakes_per_sec: u32,
    /// Handshakes in progress at most. Default 64.
    pub handshakes_in_flight: usize,
    /// A dial that has not completed its handshake by then fails. Default 3 s: a loopback or
    /// LAN handshake takes a millisecond, a WAN one a few round trips, and QUIC resends its
    /// first packet after about 1 s and 3 s, so a peer that came up meanwhile is reached.
    pub connect_timeout: Duration,
}

impl TransportConfig {
    /// Defaults, listening on `bind`.
    pub fn new(bind: SocketAddr) -> Self {
        TransportConfig {
            bind,
            max_connections: 256,
            idle_timeout: Duration::from_secs(60),
            frame_limit: hearsay_protocols::wire::DEFAULT_FRAME_LIMIT,
            queue: 8192,
            pending_per_peer: 256,
            queue_bytes: 64 << 20,
            streams_per_connection: 8,
            streams_total: 64,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            streams_out: 1024,
            retry: true,
            handshakes_per_sec: 200,
            handshakes_in_flight: 64,
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// What the transport tells the node.
#[derive(Debug)]
pub enum TransportEvent {
    /// A frame from an authenticated member.
    Frame {
        /// The sender, as authenticated by TLS.
        from: NodeId,
        /// The sender's UDP address.
        addr: SocketAddr,
        /// How it travelled.
        reliability: Reliability,
        /// The frame bytes (not yet decoded).
        frame: Bytes,
    },
    /// A connection with a member is up (either direction).
    Connected {
        /// The member.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
    },
    /// A handshake failed: the peer is not admitted, or we were not.
    Refused {
        /// The remote address.
        addr: SocketAddr,
        /// A sentence saying why.
        reason: String,
    },
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The handshake failed; the reason says whether the cluster secret differs.
    #[error("{reason}")]
    Refused {
        /// A sentence saying why.
        reason: String,
        /// True when certificates did not chain to the same cluster key (different secrets):
        /// retrying cannot help.
        admission: bool,
    },
    /// The address answered with another identity than expected.
    #[error("{addr} is node {found}, not the expected {expected}")]
    WrongPeer {
        /// The address dialled.
        addr: SocketAddr,
        /// Who answered.
        found: NodeId,
        /// Who was expected.
        expected: NodeId,
    },
    /// The endpoint is shutting down or the connection could not start.
    #[error("cannot connect to {0}: {1}")]
    Io(SocketAddr, String),
    /// No handshake completed within the connect timeout: nothing answers there (yet).
    #[error("no answer from {0} within {1:?}")]
    TimedOut(SocketAddr, Duration),
}

/// Counters of the transport's own decisions (wire bytes are in [`WireStats`]).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames sent as datagrams.
    pub datagrams_sent: AtomicU64,
    /// Frames sent on streams.
    pub streams_sent: AtomicU64,
    /// Frames received as datagrams.
    pub datagrams_received: AtomicU64,
    /// Frames received on streams.
    pub streams_received: AtomicU64,
    /// Frames that could not be sent (connection failed or closed mid-send).
    pub send_failures: AtomicU64,
    /// Received datagrams dropped because the node's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Frames dropped while waiting for a connection (per-peer queue full or connect failed).
    pub dropped_pending: AtomicU64,
    /// Stream frames refused for exceeding the frame limit.
    pub oversize: AtomicU64,
    /// Handshakes refused (either side).
    pub refused: AtomicU64,
    /// Connections closed to stay under the cache bound.
    pub evictions: AtomicU64,
    /// Connections opened (either direction).
    pub connections_opened: AtomicU64,
    /// Received datagrams dropped because the queue's byte budget was spent.
    pub dropped_bytes_full: AtomicU64,
    /// Received streams stopped for not ending within the read timeout.
    pub read_timeouts: AtomicU64,
    /// Sent streams reset for not being written within the write timeout.
    pub write_timeouts: AtomicU64,
    /// Frames not sent because as many sent streams were in progress as allowed.
    pub dropped_streams_out: AtomicU64,
    /// Stateless Retries sent to unvalidated handshakes.
    pub retries: AtomicU64,
    /// Handshakes ignored over the rate limit or the in-flight bound.
    pub handshakes_limited: AtomicU64,
    /// Second connections from an already connected peer, closed.
    pub duplicates_closed: AtomicU64,
    /// Cached connections given up because the peer stopped answering on them (a restart at
    /// another address, a crash, a partition).
    pub unanswered: AtomicU64,
    /// Dials that did not complete their handshake within the connect timeout.
    pub connect_timeouts: AtomicU64,
    /// Stream frames sent again on a new connection because the one they went out on was
    /// reset by the peer's next life (a restart at the same address) before it acknowledged
    /// them.
    pub resent_after_reset: AtomicU64,
}

/// A cached connection on which a send has found nothing received for this long is taken out
/// of the cache, and the next send dials again (module docs). Long enough that a live peer
/// under load is not given up on (it acknowledges within 25 ms), short enough that a peer
/// that came back at another address is reached again within a few seconds.
pub const UNANSWERED_AFTER: Duration = Duration::from_secs(2);

/// A cached connection's receive counter is read at most this often (it takes the
/// connection's lock).
const HEALTH_EVERY: Duration = Duration::from_millis(50);

struct Cached {
    conn: quinn::Connection,
    last_used: Instant,
    /// When it was adopted.
    since: Instant,
    /// Whether this node dialled it.
    dialled: bool,
    /// UDP datagrams received on the connection when it was last looked at.
    rx_seen: u64,
    /// When it was last looked at.
    checked: Instant,
    /// The first send since something was last received on it, if any.
    unanswered_since: Option<Instant>,
}

impl Cached {
    fn new(conn: quinn::Connection, now: Instant, dialled: bool) -> Self {
        let rx_seen = conn.stats().udp_rx.datagrams;
        Cached { conn, last_used: now, since: now, dialled, rx_seen, checked: now, unanswered_since: None }
    }

    /// A send is about to use this connection at `now`: false if the peer has not answered
    /// on it for [`UNANSWERED_AFTER`] since an earlier send.
    fn answered(&mut self, now: Instant) -> bool {
        if now.duration_since(self.checked) < HEALTH_EVERY {
            return true;
        }
        self.checked = now;
        let rx = self.conn.stats().udp_rx.datagrams;
        if rx != self.rx_seen {
            self.rx_seen = rx;
            self.unanswered_since = Some(now);
            return true;
        }
        let since = *self.unanswered_since.get_or_insert(now);
        now.duration_since(since) < UNANSWERED_AFTER.max(self.conn.rtt() * 8)
    }
}

/// Two connections with one peer both younger than this are a simultaneous dial (see the
/// module docs).
pub const DUPLICATE_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Cache {
    live: HashMap<NodeId, Cached>,
    /// Frames waiting for a connection being opened, per peer.
    pending: HashMap<NodeId, Vec<(Reliability, Bytes)>>,
}

/// A key request from a member, for whoever serves them (see [`Transport::serve_keys`]).
#[derive(Debug)]
pub struct KeyCall {
    /// The member asking (authenticated by TLS).
    pub from: NodeId,
    /// What it asks.
    pub request: KeyRequest,
    /// Where the answer goes.
    pub reply: tokio::sync::oneshot::Sender<KeyReply>,
}

/// Key requests served at once (others are refused until one ends).
const KEY_CALLS: usize = 4;

/// Tries of a key request whose connection was lost on the way (after a restart both sides
/// dial, and the duplicates are closed, for a second or so), 100 ms apart and doubling.
const KEY_ATTEMPTS: u32 = 6;

/// How long a member has to send its key request, and the node to answer it.
const KEY_CALL_TIMEOUT: Duration = Duration::from_secs(10);

struct Inner {
    me: NodeId,
    endpoint: quinn::Endpoint,
    /// TLS and QUIC settings for dialling; replaced when the keyring changes.
    client: RwLock<quinn::ClientConfig>,
    /// The settings the endpoint accepts with; kept to replace their TLS part.
    server: Mutex<quinn::ServerConfig>,
    /// QUIC transport settings shared by both.
    quic: Arc<quinn::TransportConfig>,
    /// Where key requests from members go, once someone serves them.
    keys: Mutex<Option<mpsc::Sender<KeyCall>>>,
    /// One permit per key request being served.
    key_calls: Arc<tokio::sync::Semaphore>,
    config: TransportConfig,
    cache: Mutex<Cache>,
    events: mpsc::Sender<TransportEvent>,
    stats: TransportStats,
    wire: Arc<WireStats>,
    faults: Arc<Faults>,
    /// Bytes of received frames held (see [`inbound`]).
    budget: Arc<tokio::sync::Semaphore>,
    slots: StreamSlots,
    handshakes: HandshakeLimit,
    refusals: RefusalLog,
    streams_out: Arc<tokio::sync::Semaphore>,
    /// Frames handed to the transport that have not left yet: waiting for a connection, or on
    /// a stream the peer has not acknowledged (see [`Transport::flush`]).
    in_flight: AtomicUsize,
}

/// A handle to the node's QUIC endpoint; cheap to clone.
#[derive(Clone)]
pub struct Transport(Arc<Inner>);

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("me", &self.0.me).finish_non_exhaustive()
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {0}: {1}")]
    Socket(SocketAddr, std::io::Error),
    /// TLS or QUIC configuration failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// QUIC setup failed.
    #[error("QUIC setup: {0}")]
    Quic(String),
}

/// Turn UDP generic receive offload off on `socket` (quinn turns it on); true if it is off.
///
/// With GRO on, quinn keeps a receive buffer of 32 × 64 × 1472 bytes (3 MiB) per endpoint for
/// coalesced batches. hearsay's frames are small and sent one datagram per transmit (no GSO,
/// see [`faulty`]), so coalescing gains nothing, and the buffer shrinks to 47 KiB without it.
#[cfg(target_os = "linux")]
fn gro_off(socket: &std::net::UdpSocket) -> bool {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt::UdpGroSegment};
    setsockopt(socket, UdpGroSegment, &false).is_ok() && getsockopt(socket, UdpGroSegment).is_ok_and(|on| !on)
}

#[cfg(not(target_os = "linux"))]
fn gro_off(_socket: &std::net::UdpSocket) -> bool {
    false
}

/// Bytes of datagrams a connection queues for sending.
const DATAGRAM_SEND_BUFFER: usize = 4 << 20;

/// Frames taken out of the in-flight count when dropped (whichever way the task ends).
struct InFlight<'a>(&'a AtomicUsize, usize);

impl<'a> InFlight<'a> {
    fn taken(count: &'a AtomicUsize, n: usize) -> Self {
        InFlight(count, n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Streams a peer may have open toward this node at once.
const UNI_STREAMS: u32 = 32;

/// Key request streams a peer may have open toward this node at once.
const KEY_STREAMS: u32 = 2;

/// Bytes a peer may send on one stream ahead of the reader.
const STREAM_WINDOW: u32 = 64 << 10;

fn quic_transport(config: &TransportConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Loopback and LANs carry 1452-byte payloads; MTU discovery and black-hole detection fall
    // back to QUIC's 1200-byte minimum elsewhere.
    t.initial_mtu(1452);
    t.max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok());
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    // quinn pre-allocates a map entry for every stream the peer may open (24+ bytes each, in a
    // hash map): 1024 cost about 50 KiB per connection, and a node holds one per peer it talks
    // to. Frames waiting for stream credit just wait (backpressure).
    t.max_concurrent_uni_streams(UNI_STREAMS.into());
    // Bidirectional streams carry key requests only (see `keyring`).
    t.max_concurrent_bidi_streams(KEY_STREAMS.into());
    // quinn's default connection window is unlimited. The connection window covers every
    // stream's window, so a stream the node reads always gets its credit, however many others
    // wait unread (a smaller one deadlocks: unread streams' bytes would hold all of it); what a
    // peer may have buffered here unread is then at most 2 MiB per connection. A frame larger
    // than a stream's window still flows as the reader consumes it.
    t.stream_receive_window(STREAM_WINDOW.into());
    t.receive_window((STREAM_WINDOW * UNI_STREAMS).into());
    t
}

impl Transport {
    /// Bind the endpoint and start accepting members. Returns the handle and the stream of
    /// events (received frames, connections, refusals).
    pub fn bind(config: TransportConfig, identity: &NodeIdentity) -> Result<(Transport, Inbound), BindError> {
        Self::bind_with_faults(config, identity, Faults::none())
    }

    /// [`Transport::bind`] with a fault-injection handle (tests, the demo's `--loss`).
    pub fn bind_with_faults(
        config: TransportConfig,
        identity: &NodeIdentity,
        faults: Arc<Faults>,
    ) -> Result<(Transport, Inbound), BindError> {
        let transport = Arc::new(quic_transport(&config));
        let server_tls = quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?)
            .map_err(|e| BindError::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server.transport_config(transport.clone());
        let client = client_config(identity, &transport)?;
        let kept_server = server.clone();

        let socket = std::net::UdpSocket::bind(config.bind).map_err(|e| BindError::Socket(config.bind, e))?;
        let runtime = quinn::default_runtime().ok_or_else(|| BindError::Quic("no tokio runtime".into()))?;
        let gro = socket.try_clone().map_err(|e| BindError::Socket(config.bind, e))?;
        let inner_socket = runtime.wrap_udp_socket(socket).map_err(|e| BindError::Socket(config.bind, e))?;
        let wire = Arc::new(WireStats::default());
        let mut socket = FaultySocket::new(inner_socket, faults.clone(), wire.clone());
        if gro_off(&gro) {
            socket = socket.single_segment_receive();
        }
        drop(gro);
        let socket = Arc::new(socket);
        let (reset_key, cid_key) = identity.endpoint_keys()?;
        let mut endpoint_config =
            quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_key)));
        endpoint_config
            .cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
        let endpoint =
            quinn::Endpoint::new_with_abstract_socket(endpoint_config, Some(server), socket, runtime)
                .map_err(|e| BindError::Quic(e.to_string()))?;

        let (tx, rx) = mpsc::channel(config.queue.max(16));
        let queue_bytes = config.queue_bytes.max(config.frame_limit);
        let budget = Arc::new(tokio::sync::Semaphore::new(queue_bytes));
        let readers = (queue_bytes / config.frame_limit.max(1)).clamp(1, config.streams_total.max(1));
        let slots = StreamSlots::new(readers);
        let handshakes = HandshakeLimit::new(config.handshakes_per_sec, config.handshakes_in_flight);
        let streams_out = Arc::new(tokio::sync::Semaphore::new(config.streams_out.max(1)));
        let rx = Inbound::new(rx, budget.clone());
        let inner = Arc::new(Inner {
            me: identity.id(),
            endpoint,
            client: RwLock::new(client),
            server: Mutex::new(kept_server),
            quic: transport,
            keys: Mutex::new(None),
            key_calls: Arc::new(tokio::sync::Semaphore::new(KEY_CALLS)),
            config,
            cache: Mutex::new(Cache::default()),
            events: tx,
            stats: TransportStats::default(),
            wire,
            faults,
            budget,
            slots,
            handshakes,
            refusals: RefusalLog::default(),
            streams_out,
            in_flight: AtomicUsize::new(0),
        });
        let t = Transport(inner);
        tokio::spawn(t.clone().accept_loop());
        Ok((t, rx))
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.endpoint.local_addr().unwrap_or(self.0.config.bind)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.0.me
    }

    /// The transport's counters.
    pub fn stats(&self) -> &TransportStats {
        &self.0.stats
    }

    /// Bytes and datagrams on the wire.
    pub fn wire(&self) -> &WireStats {
        &self.0.wire
    }

    /// The fault-injection handle.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.0.faults
    }

    /// Live connections in the cache.
    pub fn connections(&self) -> usize {
        self.lock().live.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.0.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connect to `addr` (a seed whose identity is not known yet) and return who answered.
    pub async fn connect(&self, addr: SocketAddr) -> Result<NodeId, ConnectError> {
        let conn = self.dial(addr).await?;
        let peer = peer_node_id(&conn).ok_or_else(|| ConnectError::Refused {
            reason: format!("{addr}: no peer identity"),
            admission: true,
        })?;
        self.adopt(peer, conn, true);
        Ok(peer)
    }

    /// Present and accept certificates under `identity` from now on (a key rotation step):
    /// new handshakes, both directions, use it; established connections stay.
    pub fn set_identity(&self, identity: &NodeIdentity) -> Result<(), BindError> {
        if identity.id() != self.0.me {
            return Err(BindError::Quic("another node key than this transport's".into()));
        }
        let server_tls = quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?)
            .map_err(|e| BindError::Quic(e.to_string()))?;
        let client = client_config(identity, &self.0.quic)?;
        let server = {
            let mut kept = self.0.server.lock().unwrap_or_else(|p| p.into_inner());
            kept.crypto = Arc::new(server_tls);
            kept.clone()
        };
        self.0.endpoint.set_server_config(Some(server));
        *self.0.client.write().unwrap_or_else(|p| p.into_inner()) = client;
        Ok(())
    }

    /// Hand key requests from members to `calls` (one at a time per stream, at most
    /// [`KEY_CALLS`] at once); until this is called they are refused.
    pub fn serve_keys(&self, calls: mpsc::Sender<KeyCall>) {
        *self.0.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(calls);
    }

    /// Send a key request to member `peer` at `addr` on a bidirectional stream of the
    /// (mutually authenticated) connection with it, opening one if needed, and wait for its
    /// reply within `within`. A connection lost on the way (closed as a duplicate when both
    /// sides dial at once, say) is tried again, up to [`KEY_ATTEMPTS`] times: every key request
    /// can be repeated safely.
    pub async fn request(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        request: &KeyRequest,
        within: Duration,
    ) -> Result<KeyReply, String> {
        let attempts = async {
            let mut last = String::new();
            for attempt in 1..=KEY_ATTEMPTS {
                match self.exchange(peer, addr, request).await {
                    Ok(reply) => return Ok(reply),
                    Err((why, false)) => return Err(why),
                    Err((why, true)) => last = why,
                }
                if attempt < KEY_ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
                }
            }
            Err(last)
        };
        tokio::time::timeout(within, attempts)
            .await
            .unwrap_or_else(|_| Err(format!("no reply within {within:?}")))
    }

    /// One try of [`Transport::request`]; an error says whether trying again may help.
    async fn exchange(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        request: &KeyRequest,
    ) -> Result<KeyReply, (String, bool)> {
        let live = {
            let mut cache = self.lock();
            match cache.live.get_mut(&peer) {
                Some(c) if c.conn.close_reason().is_none() => {
                    c.last_used = Instant::now();
                    Some(c.conn.clone())
                }
                _ => None,
            }
        };
        let conn = match live {
            Some(c) => c,
            None => {
                let conn = self.dial(addr).await.map_err(|e| {
                    let again = !matches!(e, ConnectError::Refused { admission: true, .. });
                    (e.to_string(), again)
                })?;
                match peer_node_id(&conn) {
                    Some(found) if found == peer => {}
                    found => {
                        conn.close(0u32.into(), b"wrong peer");
                        return Err((format!("{addr} answered as {found:?}, not {peer}"), false));
                    }
                }
                self.adopt(peer, conn.clone(), true);
                conn
            }
        };
        let (mut send, mut recv) =
            conn.open_bi().await.map_err(|e| (format!("opening a stream: {e}"), true))?;
        send.write_all(&request.encode()).await.map_err(|e| (format!("sending: {e}"), true))?;
        let _ = send.finish();
        let bytes =
            recv.read_to_end(MAX_REPLY).await.map_err(|e| (format!("reading the reply: {e}"), true))?;
        KeyReply::decode(&bytes).ok_or_else(|| ("a reply that does not parse".to_string(), false))
    }

    /// Answer one key request a member opened a stream for.
    async fn key_call(self, from: NodeId, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let Ok(permit) = self.0.key_calls.clone().try_acquire_owned() else {
            let _ = send.reset(3u32.into());
            let _ = recv.stop(3u32.into());
            return;
        };
        let _permit = permit;
        let serve = self.0.keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let answered = tokio::time::timeout(KEY_CALL_TIMEOUT, async {
            let bytes = recv.read_to_end(MAX_REQUEST).await.ok()?;
            let reply = match (KeyRequest::decode(&bytes), serve) {
                (None, _) => KeyReply::Refused("a key request that does not parse".into()),
                (Some(_), None) => KeyReply::Refused("this node serves no key requests".into()),
                (Some(request), Some(serve)) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    if serve.send(KeyCall { from, request, reply: tx }).await.is_err() {
                        KeyReply::Refused("this node is stopping".into())
                    } else {
                        rx.await.unwrap_or_else(|_| KeyReply::Refused("this node is stopping".into()))
                    }
                }
            };
            send.write_all(&reply.encode()).await.ok()?;
            send.finish().ok()
        })
        .await;
        if !matches!(answered, Ok(Some(()))) {
            let _ = send.reset(4u32.into());
        }
    }

    async fn dial(&self, addr: SocketAddr) -> Result<quinn::Connection, ConnectError> {
        let client = self.0.client.read().unwrap_or_else(|p| p.into_inner()).clone();
        let connecting = self
            .0
            .endpoint
            .connect_with(client, addr, SERVER_NAME)
            .map_err(|e| ConnectError::Io(addr, e.to_string()))?;
        let within = self.0.config.connect_timeout;
        let Ok(result) = tokio::time::timeout(within, connecting).await else {
            self.0.stats.connect_timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(ConnectError::TimedOut(addr, within));
        };
        match result {
            Ok(conn) => Ok(conn),
            Err(e) => {
                let (reason, admission) = refusal_reason(addr, &e, true);
                self.0.stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = self.0.events.try_send(TransportEvent::Refused { addr, reason: reason.clone() });
                Err(ConnectError::Refused { reason, admission })
            }
        }
    }

    /// Send `frame` to `to` at `addr`, opening a connection if needed. Never blocks: work
    /// that must wait (a handshake, a stream) runs in its own task; failures are counted.
    pub fn send(&self, to: NodeId, addr: SocketAddr, reliability: Reliability, frame: Bytes) {
        self.send_with(to, addr, reliability, frame, true);
    }

    /// [`Transport::send`]; `resend`: a stream frame on a cached connection that the peer
    /// resets before acknowledging it is sent once more on a new connection.
    fn send_with(&self, to: NodeId, addr: SocketAddr, reliability: Reliability, frame: Bytes, resend: bool) {
        let mut cache = self.lock();
        let now = Instant::now();
        if let Some(c) = cache.live.get_mut(&to) {
            if c.conn.close_reason().is_none() {
                if c.answered(now) {
                    c.last_used = now;
                    let conn = c.conn.clone();
                    drop(cache);
                    self.send_on(&conn, reliability, frame, resend);
                    return;
                }
                // Not closed: frames still on their way finish if the peer is there after all.
                self.0.stats.unanswered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %to, was = %c.conn.remote_address(), %addr, "nothing received on the connection since a send; dialling again");
            }
            cache.live.remove(&to);
        }
        if let Some(queue) = cache.pending.get_mut(&to) {
            if queue.len() >= self.0.config.pending_per_peer {
                self.0.stats.dropped_pending.fetch_add(1, Ordering::Relaxed);
            } else {
                queue.push((reliability, frame));
                self.0.in_flight.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        cache.pending.insert(to, vec![(reliability, frame)]);
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        drop(cache);
        let t = self.clone();
        tokio::spawn(async move {
            let result = t.dial(addr).await;
            let queued = t.lock().pending.remove(&to).unwrap_or_default();
            let _left = InFlight::taken(&t.0.in_flight, queued.len());
            match result {
                Ok(conn) => match peer_node_id(&conn) {
                    Some(found) if found == to => {
                        for (r, f) in queued {
                            t.send_on(&conn, r, f, false);
                        }
                        t.adopt(to, conn, true);
                    }
                    found => {
                        tracing::warn!(%addr, expected = %to, found = ?found, "address answered with another identity");
                        conn.close(0u32.into(), b"wrong peer");
                        t.0.stats.dropped_pending.fetch_add(queued.len() as u64, Ordering::Relaxed);
                    }
                },
                Err(e) => {
                    tracing::debug!(%addr, peer = %to, "connect failed: {e}");
                    t.0.stats.dropped_pending.fetch_add(queued.len() as u64, Ordering::Relaxed);
                }
            }
        });
    }

    /// Send `frame` on `conn`. With `resend`, a stream frame that `conn` loses to a stateless
    /// reset (the peer restarted at the same address and its new life answered a packet of
    /// this old connection) is sent once more through [`Transport::send`], which dials the
    /// new life: the frame would otherwise be lost with the connection (module docs, Restarts).
    fn send_on(&self, conn: &quinn::Connection, reliability: Reliability, frame: Bytes, resend: bool) {
        let fits = conn.max_datagram_size().is_some_and(|max| frame.len() <= max);
        if reliability == Reliability::Datagram && fits {
            match conn.send_datagram(frame) {
                Ok(()) => self.0.stats.datagrams_sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.0.stats.send_failures.fetch_add(1, Ordering::Relaxed),
            };
            return;
        }
        let Ok(slot) = self.0.streams_out.clone().try_acquire_owned() else {
            count(&self.0.stats.dropped_streams_out);
            return;
        };
        let conn = conn.clone();
        let t = self.clone();
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _left = InFlight::taken(&t.0.in_flight, 1);
            let mut stream = None;
            // A peer that grants no stream or no credit cannot hold this task forever.
            let sent = tokio::time::timeout(t.0.config.write_timeout, async {
                let s = stream.insert(conn.open_uni().await.ok()?);
                s.write_all(&frame).await.ok()?;
                s.finish().ok()
            })
            .await;
            // The slot bounds streams being written; waiting for the acknowledgement below
            // does not hold one (a peer that never acknowledges cannot use them up).
            drop(slot);
            let acknowledged = match sent {
                Ok(Some(())) => {
                    t.0.stats.streams_sent.fetch_add(1, Ordering::Relaxed);
                    // In flight until the peer acknowledged it (or gave up on the stream), so
                    // that `flush` can wait for it; bounded, for a peer that went away.
                    match stream.as_mut() {
                        Some(s) => {
                            let stopped = tokio::time::timeout(t.0.config.idle_timeout, s.stopped()).await;
                            matches!(stopped, Ok(Ok(None)))
                        }
                        None => false,
                    }
                }
                Ok(None) => {
                    tracing::debug!(to = %conn.remote_address(), "stream send failed");
                    t.0.stats.send_failures.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(_) => {
                    if let Some(mut s) = stream {
                        let _ = s.reset(1u32.into());
                    }
                    count(&t.0.stats.write_timeouts);
                    t.0.stats.send_failures.fetch_add(1, Ordering::Relaxed);
                    false
                }
            };
            if !acknowledged && resend && matches!(conn.close_reason(), Some(quinn::ConnectionError::Reset)) {
                if let Some(peer) = peer_node_id(&conn) {
                    tracing::debug!(%peer, addr = %conn.remote_address(), "the peer restarted (stateless reset): sending the frame again on a new connection");
                    t.0.stats.resent_after_reset.fetch_add(1, Ordering::Relaxed);
                    t.send_with(peer, conn.remote_address(), reliability, frame, false);
                }
            }
        });
    }

    /// Wait until everything handed to the transport so far has left, or `within` has passed:
    /// frames waiting for a connection (sent or given up), stream frames until the peer
    /// acknowledged them, datagrams until QUIC sent them. True if everything left. Frames
    /// handed over meanwhile are waited for too.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.is_drained() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Nothing in flight: no frame waiting for a connection or an acknowledgement, no
    /// datagram queued in any open connection.
    pub fn is_drained(&self) -> bool {
        if self.0.in_flight.load(Ordering::Relaxed) > 0 {
            return false;
        }
        // quinn reports the free space less the size of one queued datagram's bookkeeping.
        let empty = DATAGRAM_SEND_BUFFER.saturating_sub(std::mem::size_of::<quinn_proto::Datagram>());
        let cache = self.lock();
        cache
            .live
            .values()
            .all(|c| c.conn.close_reason().is_some() || c.conn.datagram_send_buffer_space() >= empty)
    }

    /// Frames handed to the transport that have not left yet (see [`Transport::flush`]).
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Relaxed)
    }

    /// Put an established connection in the cache (evicting the least recently used beyond
    /// the bound) and start reading from it.
    fn adopt(&self, peer: NodeId, conn: quinn::Connection, dialled: bool) {
        let addr = conn.remote_address();
        let evicted = {
            let mut cache = self.lock();
            let now = Instant::now();
            let mut evicted = Vec::new();
            if let Some(old) = cache.live.get(&peer).filter(|c| c.conn.close_reason().is_none()) {
                // A simultaneous dial: both sides keep the one the smaller NodeId dialled.
                let simultaneous = now.saturating_duration_since(old.since) < DUPLICATE_GRACE;
                let smaller_is_me = self.0.me < peer;
                if simultaneous && old.dialled == smaller_is_me && dialled != smaller_is_me {
                    drop(cache);
                    count(&self.0.stats.duplicates_closed);
                    conn.close(0u32.into(), b"duplicate");
                    return;
                }
            }
            let previous = cache.live.insert(peer, Cached::new(conn.clone(), now, dialled));
            while cache.live.len() > self.0.config.max_connections.max(1) {
                let Some(oldest) = cache
                    .live
                    .iter()
                    .filter(|(id, _)| **id != peer)
                    .min_by_key(|(id, c)| (c.last_used, **id))
                    .map(|(id, _)| *id)
                else {
                    break;
                };
                if let Some(c) = cache.live.remove(&oldest) {
                    evicted.push(c.conn);
                }
            }
            // A second connection from the same peer replaces the first, which is closed: a
            // member cannot hold many connections (each with its streams and windows).
            if let Some(old) = previous.filter(|c| c.conn.stable_id() != conn.stable_id()) {
                count(&self.0.stats.duplicates_closed);
                old.conn.close(0u32.into(), b"duplicate");
            }
            evicted
        };
        for c in evicted {
            self.0.stats.evictions.fetch_add(1, Ordering::Relaxed);
            c.close(0u32.into(), b"evicted");
        }
        self.0.stats.connections_opened.fetch_add(1, Ordering::Relaxed);
        let _ = self.0.events.try_send(TransportEvent::Connected { peer, addr });
        tokio::spawn(self.clone().read_loop(peer, conn));
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.0.endpoint.accept().await {
            if self.0.config.retry && !incoming.remote_address_validated() && incoming.may_retry() {
                // Stateless: the client comes back with a token proving its address.
                if incoming.retry().is_ok() {
                    count(&self.0.stats.retries);
                }
                continue;
            }
            let Some(permit) = self.0.handshakes.admit(Instant::now()) else {
                count(&self.0.stats.handshakes_limited);
                incoming.ignore();
                continue;
            };
            let t = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let addr = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => match peer_node_id(&conn) {
                        Some(peer) => t.adopt(peer, conn, false),
                        None => conn.close(0u32.into(), b"no identity"),
                    },
                    Err(e) => {
                        // Counted and logged here, rate-limited; never a slot in the frame queue.
                        let (reason, _) = refusal_reason(addr, &e, false);
                        t.0.stats.refused.fetch_add(1, Ordering::Relaxed);
                        t.0.refusals.note(Instant::now(), &reason);
                    }
                }
            });
        }
    }

    async fn read_loop(self, peer: NodeId, conn: quinn::Connection) {
        let addr = conn.remote_address();
        let per_conn = Arc::new(tokio::sync::Semaphore::new(self.0.config.streams_per_connection.max(1)));
        let mut slot = None;
        loop {
            tokio::select! {
                d = conn.read_datagram() => {
                    let Ok(frame) = d else { break };
                    self.0.stats.datagrams_received.fetch_add(1, Ordering::Relaxed);
                    let mut held = Held::new(self.0.budget.clone());
                    if !held.try_take(frame.len()) {
                        count(&self.0.stats.dropped_bytes_full);
                        continue;
                    }
                    let ev = TransportEvent::Frame { from: peer, addr, reliability: Reliability::Datagram, frame };
                    match self.0.events.try_send(ev) {
                        Ok(()) => held.keep(),
                        Err(_) => count(&self.0.stats.dropped_queue_full),
                    }
                }
                // A stream is accepted only with a reading slot in hand: until then QUIC grants
                // the peer no more streams.
                got = self.0.slots.acquire(&per_conn), if slot.is_none() => {
                    let Some(got) = got else { break };
                    slot = Some(got);
                }
                s = conn.accept_uni(), if slot.is_some() => {
                    let Ok(recv) = s else { break };
                    let Some(slot) = slot.take() else { continue };
                    tokio::spawn(self.clone().read_stream(peer, addr, recv, slot));
                }
                // Bidirectional streams carry key requests only (at most KEY_STREAMS open).
                b = conn.accept_bi() => {
                    let Ok((send, recv)) = b else { break };
                    tokio::spawn(self.clone().key_call(peer, send, recv));
                }
            }
        }
        let mut cache = self.lock();
        if cache.live.get(&peer).is_some_and(|c| c.conn.stable_id() == conn.stable_id()) {
            cache.live.remove(&peer);
        }
    }

    /// Read one stream frame within the read timeout, taking its bytes from the budget chunk
    /// by chunk, and queue it.
    async fn read_stream(
        self,
        peer: NodeId,
        addr: SocketAddr,
        mut recv: quinn::RecvStream,
        slot: inbound::Slot,
    ) {
        let _slot = slot;
        let limit = self.0.config.frame_limit;
        let mut held = Held::new(self.0.budget.clone());
        let read = tokio::time::timeout(self.0.config.read_timeout, async {
            let mut frame = Vec::new();
            loop {
                match recv.read_chunk(64 << 10, true).await {
                    Ok(Some(chunk)) => {
                        if frame.len().saturating_add(chunk.bytes.len()) > limit {
                            return Err(true);
                        }
                        if !held.take(chunk.bytes.len()).await {
                            return Err(false);
                        }
                        frame.extend_from_slice(&chunk.bytes);
                    }
                    Ok(None) => return Ok(frame),
                    Err(_) => return Err(false),
                }
            }
        })
        .await;
        match read {
            Ok(Ok(frame)) => {
                tracing::debug!(from = %peer, bytes = frame.len(), "stream frame received");
                self.0.stats.streams_received.fetch_add(1, Ordering::Relaxed);
                let ev = TransportEvent::Frame {
                    from: peer,
                    addr,
                    reliability: Reliability::Stream,
                    frame: frame.into(),
                };
                if self.0.events.send(ev).await.is_ok() {
                    held.keep();
                }
            }
            Ok(Err(true)) => {
                self.0.stats.oversize.fetch_add(1, Ordering::Relaxed);
                let _ = recv.stop(1u32.into());
            }
            Ok(Err(false)) => {}
            Err(_) => {
                count(&self.0.stats.read_timeouts);
                let _ = recv.stop(2u32.into());
            }
        }
    }

    /// Close every connection, telling peers we are leaving, and wait (bounded) for the
    /// close to be sent.
    pub async fn close(&self) {
        self.0.endpoint.close(0u32.into(), b"leaving");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.0.endpoint.wait_idle()).await;
    }
}

/// Dialling settings for `identity` over the QUIC settings `quic`.
fn client_config(
    identity: &NodeIdentity,
    quic: &Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, BindError> {
    let client_tls = quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_config()?)
        .map_err(|e| BindError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
    client.transport_config(quic.clone());
    Ok(client)
}

/// A sentence for a failed handshake, with the likely cause when certificates disagree, and
/// whether it was an admission failure.
fn refusal_reason(addr: SocketAddr, e: &quinn::ConnectionError, we_dialled: bool) -> (String, bool) {
    let text = e.to_string();
    let cert_problem =
        ["certificate", "UnknownIssuer", "BadSignature", "unknown ca", "bad certificate", "BadCertificate"]
            .iter()
            .any(|needle| text.to_lowercase().contains(&needle.to_lowercase()));
    let who = if we_dialled { format!("connection to {addr}") } else { format!("connection from {addr}") };
    if cert_problem {
        let reason = format!(
            "{who} refused: the certificates do not chain to the same cluster key \
             (the two nodes use different --secret-file secrets, or share no key of their keyrings): {text}"
        );
        (reason, true)
    } else {
        (format!("{who} failed: {text}"), false)
    }
}

#[cfg(test)]
mod tests;
