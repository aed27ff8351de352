//! QUIC transport: authenticated connections between members, a bounded connection cache,
//! datagrams for unreliable frames and streams for reliable or large ones.
//!
//! - **One frame per datagram, one frame per unidirectional stream.** A datagram frame that
//!   does not fit the connection's current datagram size goes on a stream instead. Streams are
//!   independent, so two reliable frames to the same peer may arrive in either order; every
//!   hearsay exchange is request/response, so nothing relies on cross-stream order.
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

pub mod faulty;
pub mod identity;
pub mod inbound;
pub mod signer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hearsay_protocols::{NodeId, Reliability};
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::faulty::{Faults, FaultySocket, WireStats};
use self::identity::{IdentityError, NodeIdentity, SERVER_NAME, peer_node_id};
pub use self::inbound::Inbound;
use self::inbound::{HandshakeLimit, Held, RefusalLog, StreamSlots, count};

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
}

struct Cached {
    conn: quinn::Connection,
    last_used: Instant,
    /// When it was adopted.
    since: Instant,
    /// Whether this node dialled it.
    dialled: bool,
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

struct Inner {
    me: NodeId,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
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

/// Streams a peer may have open toward this node at once.
const UNI_STREAMS: u32 = 32;

/// Bytes a peer may send on one stream ahead of the reader.
const STREAM_WINDOW: u32 = 64 << 10;

fn quic_transport(config: &TransportConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Loopback and LANs carry 1452-byte payloads; MTU discovery and black-hole detection fall
    // back to QUIC's 1200-byte minimum elsewhere.
    t.initial_mtu(1452);
    t.max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok());
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(4 << 20);
    // quinn pre-allocates a map entry for every stream the peer may open (24+ bytes each, in a
    // hash map): 1024 cost about 50 KiB per connection, and a node holds one per peer it talks
    // to. Frames waiting for stream credit just wait (backpressure).
    t.max_concurrent_uni_streams(UNI_STREAMS.into());
    t.max_concurrent_bidi_streams(0u32.into());
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
        let client_tls = quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_config()?)
            .map_err(|e| BindError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(transport);

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
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
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
            client,
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

    async fn dial(&self, addr: SocketAddr) -> Result<quinn::Connection, ConnectError> {
        let connecting = self
            .0
            .endpoint
            .connect_with(self.0.client.clone(), addr, SERVER_NAME)
            .map_err(|e| ConnectError::Io(addr, e.to_string()))?;
        match connecting.await {
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
        let mut cache = self.lock();
        if let Some(c) = cache.live.get_mut(&to) {
            if c.conn.close_reason().is_none() {
                c.last_used = Instant::now();
                let conn = c.conn.clone();
                drop(cache);
                self.send_on(&conn, reliability, frame);
                return;
            }
            cache.live.remove(&to);
        }
        if let Some(queue) = cache.pending.get_mut(&to) {
            if queue.len() >= self.0.config.pending_per_peer {
                self.0.stats.dropped_pending.fetch_add(1, Ordering::Relaxed);
            } else {
                queue.push((reliability, frame));
            }
            return;
        }
        cache.pending.insert(to, vec![(reliability, frame)]);
        drop(cache);
        let t = self.clone();
        tokio::spawn(async move {
            let result = t.dial(addr).await;
            let queued = t.lock().pending.remove(&to).unwrap_or_default();
            match result {
                Ok(conn) => match peer_node_id(&conn) {
                    Some(found) if found == to => {
                        for (r, f) in queued {
                            t.send_on(&conn, r, f);
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

    fn send_on(&self, conn: &quinn::Connection, reliability: Reliability, frame: Bytes) {
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
        tokio::spawn(async move {
            let _slot = slot;
            let mut stream = None;
            // A peer that grants no stream or no credit cannot hold this task forever.
            let sent = tokio::time::timeout(t.0.config.write_timeout, async {
                let s = stream.insert(conn.open_uni().await.ok()?);
                s.write_all(&frame).await.ok()?;
                s.finish().ok()
            })
            .await;
            match sent {
                Ok(Some(())) => t.0.stats.streams_sent.fetch_add(1, Ordering::Relaxed),
                Ok(None) => {
                    tracing::debug!(to = %conn.remote_address(), "stream send failed");
                    t.0.stats.send_failures.fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => {
                    if let Some(mut s) = stream {
                        let _ = s.reset(1u32.into());
                    }
                    count(&t.0.stats.write_timeouts);
                    t.0.stats.send_failures.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
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
            let previous =
                cache.live.insert(peer, Cached { conn: conn.clone(), last_used: now, since: now, dialled });
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
             (the two nodes use different --secret-file secrets): {text}"
        );
        (reason, true)
    } else {
        (format!("{who} failed: {text}"), false)
    }
}

#[cfg(test)]
mod tests;
