//! The UDP socket under quinn, wrapped to count every byte on the wire and, when tests ask,
//! to inject faults: independent loss, added delay, and partitions (no traffic to chosen
//! addresses). This is how tests get loss and partitions on loopback without `tc netem`.
//!
//! Faults act on outgoing datagrams only; a partition is made symmetric by blocking on both
//! sides. The wrapper tells quinn it sends one datagram per transmit (no GSO batching), so
//! loss is per datagram.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// Faults to inject, changeable while running. Shared by the socket and whoever controls it.
#[derive(Debug, Default)]
pub struct Faults {
    /// Probability of dropping an outgoing datagram, as f64 bits.
    loss_bits: AtomicU64,
    /// Delay added to every outgoing datagram, in microseconds.
    delay_us: AtomicU64,
    /// Destinations that get nothing.
    blocked: Mutex<HashSet<SocketAddr>>,
    rng: AtomicU64,
}

impl Faults {
    /// No faults.
    pub fn none() -> Arc<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Arc::new(Faults { rng: AtomicU64::new(seed | 1), ..Faults::default() })
    }

    /// Drop each outgoing datagram with probability `p` (clamped to [0, 1]).
    pub fn set_loss(&self, p: f64) {
        self.loss_bits.store(p.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// The current loss probability.
    pub fn loss(&self) -> f64 {
        f64::from_bits(self.loss_bits.load(Ordering::Relaxed))
    }

    /// Delay every outgoing datagram by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.delay_us.store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The delay added to every outgoing datagram.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// The addresses that get nothing, sorted.
    pub fn blocked(&self) -> Vec<SocketAddr> {
        let b = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<SocketAddr> = b.iter().copied().collect();
        v.sort();
        v
    }

    /// Send nothing to these addresses (replaces the previous set; empty heals).
    pub fn set_blocked(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut b = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        *b = addrs.into_iter().collect();
    }

    fn roll(&self) -> f64 {
        // splitmix64 over an atomic counter: good enough for fault injection, lock-free.
        let mut z = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn drops(&self, to: &SocketAddr) -> bool {
        let p = self.loss();
        if p > 0.0 && self.roll() < p {
            return true;
        }
        let b = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        !b.is_empty() && b.contains(to)
    }
}

/// Byte and datagram counters of the socket: what really crossed the wire.
#[derive(Debug, Default)]
pub struct WireStats {
    /// UDP payload bytes sent.
    pub bytes_sent: AtomicU64,
    /// UDP datagrams sent.
    pub datagrams_sent: AtomicU64,
    /// UDP payload bytes received.
    pub bytes_received: AtomicU64,
    /// UDP datagrams received (a GRO batch counts as its datagrams).
    pub datagrams_received: AtomicU64,
    /// Outgoing datagrams dropped by injected faults.
    pub dropped_by_faults: AtomicU64,
}

/// quinn's socket with counting and fault injection.
pub struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    faults: Arc<Faults>,
    stats: Arc<WireStats>,
    /// Receive one datagram per buffer (GRO is off on the socket).
    single_segment: bool,
}

impl fmt::Debug for FaultySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultySocket").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl FaultySocket {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, faults: Arc<Faults>, stats: Arc<WireStats>) -> Self {
        FaultySocket { inner, faults, stats, single_segment: false }
    }

    /// Tell quinn to expect one datagram per receive buffer: only when UDP GRO is off on the
    /// socket, or coalesced batches would be truncated.
    pub fn single_segment_receive(mut self) -> Self {
        self.single_segment = true;
        self
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.faults.drops(&transmit.destination) {
            self.stats.dropped_by_faults.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let delay = self.faults.delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            // Send later from a task; a send that would block then is a lost datagram.
            let inner = self.inner.clone();
            let stats = self.stats.clone();
            let (destination, ecn, src_ip) = (transmit.destination, transmit.ecn, transmit.src_ip);
            let contents = transmit.contents.to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(delay)).await;
                let t = Transmit { destination, ecn, contents: &contents, segment_size: None, src_ip };
                if inner.try_send(&t).is_ok() {
                    stats.bytes_sent.fetch_add(contents.len() as u64, Ordering::Relaxed);
                    stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.dropped_by_faults.fetch_add(1, Ordering::Relaxed);
                }
            });
            return Ok(());
        }
        self.inner.try_send(transmit)?;
        self.stats.bytes_sent.fetch_add(transmit.contents.len() as u64, Ordering::Relaxed);
        self.stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let poll = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &poll {
            for m in &meta[..*n] {
                self.stats.bytes_received.fetch_add(m.len as u64, Ordering::Relaxed);
                let count = if m.stride > 0 { m.len.div_ceil(m.stride) } else { 1 };
                self.stats.datagrams_received.fetch_add(count as u64, Ordering::Relaxed);
            }
        }
        poll
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        if self.single_segment { 1 } else { self.inner.max_receive_segments() }
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
