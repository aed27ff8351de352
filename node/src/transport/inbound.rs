//! What a peer can make this node hold before the actor reads it, bounded in bytes and tasks,
//! and what a stranger can make it do before a handshake completes.
//!
//! - **Bytes.** Every received frame takes its size from one byte budget
//!   ([`TransportConfig::queue_bytes`](super::TransportConfig::queue_bytes)) from the moment it
//!   is read until the actor takes it from [`Inbound::recv`]. A stream frame is read chunk by
//!   chunk, each chunk waiting for its bytes: while the actor is busy, readers stop reading and
//!   QUIC flow control stops the senders (backpressure, not loss). A datagram that finds the
//!   budget spent is dropped and counted (it could have been lost anyway).
//! - **Tasks.** A stream is read only while its connection holds one of
//!   [`streams_per_connection`](super::TransportConfig::streams_per_connection) slots and the
//!   node one of its [`streams_total`](super::TransportConfig::streams_total); until then it is not accepted, so QUIC grants the
//!   peer no more streams. The total is at most `queue_bytes / frame_limit`, so readers alone can
//!   never spend the whole budget: a reader that waits for bytes waits for the actor, never for
//!   another reader (no deadlock).
//! - **Time.** A stream must be read to its end within
//!   [`read_timeout`](super::TransportConfig::read_timeout), and a sent stream written within
//!   [`write_timeout`](super::TransportConfig::write_timeout) (a peer that grants no credit), or
//!   it is stopped (reset) and counted.
//! - **Handshakes.** An Initial from an address QUIC has not validated is answered with a
//!   stateless Retry (no state kept, no amplification toward a forged source address);
//!   validated handshakes are admitted at most at
//!   [`handshakes_per_sec`](super::TransportConfig::handshakes_per_sec) (token bucket) and
//!   [`handshakes_in_flight`](super::TransportConfig::handshakes_in_flight) at once, the rest
//!   ignored and counted. A refused handshake is counted and logged at warn at most once per
//!   [`REFUSAL_LOG_EVERY`], with the number since the last line; it never enters the frame queue.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use super::TransportEvent;

/// The received events, as the actor reads them: taking a frame gives its bytes back to the
/// budget.
#[derive(Debug)]
pub struct Inbound {
    rx: mpsc::Receiver<TransportEvent>,
    budget: Arc<Semaphore>,
}

impl Inbound {
    pub(super) fn new(rx: mpsc::Receiver<TransportEvent>, budget: Arc<Semaphore>) -> Inbound {
        Inbound { rx, budget }
    }

    /// The next event; `None` once the transport is gone.
    pub async fn recv(&mut self) -> Option<TransportEvent> {
        let ev = self.rx.recv().await?;
        self.release(&ev);
        Some(ev)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<TransportEvent, mpsc::error::TryRecvError> {
        let ev = self.rx.try_recv()?;
        self.release(&ev);
        Ok(ev)
    }

    fn release(&self, ev: &TransportEvent) {
        if let TransportEvent::Frame { frame, .. } = ev {
            self.budget.add_permits(frame.len());
        }
    }
}

/// Bytes taken from the budget, given back on drop unless [`Held::keep`] hands them to a
/// queued frame.
pub(super) struct Held {
    budget: Arc<Semaphore>,
    bytes: usize,
}

impl Held {
    pub(super) fn new(budget: Arc<Semaphore>) -> Held {
        Held { budget, bytes: 0 }
    }

    /// Wait for `n` more bytes of the budget.
    pub(super) async fn take(&mut self, n: usize) -> bool {
        let Ok(n32) = u32::try_from(n) else { return false };
        match self.budget.acquire_many(n32).await {
            Ok(p) => {
                p.forget();
                self.bytes += n;
                true
            }
            Err(_) => false,
        }
    }

    /// `n` bytes now, or false when the budget has not that many left.
    pub(super) fn try_take(&mut self, n: usize) -> bool {
        let Ok(n32) = u32::try_from(n) else { return false };
        match self.budget.try_acquire_many(n32) {
            Ok(p) => {
                p.forget();
                self.bytes += n;
                true
            }
            Err(_) => false,
        }
    }

    /// The bytes now belong to a frame in the queue: [`Inbound::recv`] gives them back.
    pub(super) fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.add_permits(self.bytes);
        }
    }
}

/// The node's stream-reading slots.
#[derive(Debug)]
pub(super) struct StreamSlots {
    all: Arc<Semaphore>,
}

impl StreamSlots {
    pub(super) fn new(total: usize) -> StreamSlots {
        StreamSlots { all: Arc::new(Semaphore::new(total)) }
    }

    /// Wait for a slot of the connection (`per_conn`) and one of the node.
    pub(super) async fn acquire(&self, per_conn: &Arc<Semaphore>) -> Option<Slot> {
        let conn = per_conn.clone().acquire_owned().await.ok()?;
        let node = self.all.clone().acquire_owned().await.ok()?;
        Some(Slot { _conn: conn, _node: node })
    }
}

/// A stream reader's right to run; freed on drop.
pub(super) struct Slot {
    _conn: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
}

/// Admission of validated handshakes: a token bucket and a bound on those in progress.
#[derive(Debug)]
pub(super) struct HandshakeLimit {
    state: Mutex<Bucket>,
    in_flight: Arc<Semaphore>,
    rate: f64,
    burst: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl HandshakeLimit {
    pub(super) fn new(per_sec: u32, in_flight: usize) -> HandshakeLimit {
        let rate = f64::from(per_sec.max(1));
        HandshakeLimit {
            state: Mutex::new(Bucket { tokens: rate * 2.0, at: Instant::now() }),
            in_flight: Arc::new(Semaphore::new(in_flight.max(1))),
            rate,
            burst: rate * 2.0,
        }
    }

    /// A permit for one more handshake now, or `None` (over the rate, or too many running).
    pub(super) fn admit(&self, now: Instant) -> Option<OwnedSemaphorePermit> {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens < 1.0 {
            return None;
        }
        let permit = self.in_flight.clone().try_acquire_owned().ok()?;
        b.tokens -= 1.0;
        Some(permit)
    }
}

/// How often at most a refused handshake is logged at warn.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Refused handshakes, logged at most once per [`REFUSAL_LOG_EVERY`].
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    /// Log `reason` unless a line went out less than [`REFUSAL_LOG_EVERY`] ago (then count it
    /// for the next line). True when it was logged.
    pub(super) fn note(&self, now: Instant, reason: &str) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, quiet) = &mut *s;
        if last.is_some_and(|l| now.saturating_duration_since(l) < REFUSAL_LOG_EVERY) {
            *quiet += 1;
            return false;
        }
        if *quiet > 0 {
            tracing::warn!("{reason} (and {quiet} more refused handshakes not logged)");
        } else {
            tracing::warn!("{reason}");
        }
        *last = Some(now);
        *quiet = 0;
        true
    }
}

/// Add one to `counter`.
pub(super) fn count(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn taking_a_frame_from_the_queue_gives_its_bytes_back() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::channel(8);
        let mut inbound = Inbound::new(rx, budget.clone());
        let mut held = Held::new(budget.clone());
        assert!(held.try_take(60));
        assert!(!Held::new(budget.clone()).try_take(41), "only 40 left");
        held.keep();
        let from = hearsay_protocols::NodeId::from_bytes([1; 32]);
        let frame = bytes::Bytes::from(vec![0u8; 60]);
        let addr = "127.0.0.1:1".parse().unwrap();
        let reliability = hearsay_protocols::Reliability::Stream;
        tx.send(TransportEvent::Frame { from, addr, reliability, frame }).await.unwrap();
        assert_eq!(budget.available_permits(), 40, "queued bytes stay taken");
        inbound.recv().await.unwrap();
        assert_eq!(budget.available_permits(), 100);
        let mut dropped = Held::new(budget.clone());
        assert!(dropped.take(30).await);
        drop(dropped);
        assert_eq!(budget.available_permits(), 100, "a reader that gives up gives its bytes back");
    }

    #[test]
    fn handshakes_beyond_the_rate_or_in_flight_bound_are_not_admitted() {
        let limit = HandshakeLimit::new(10, 5);
        let now = Instant::now();
        let held: Vec<_> = (0..5).map(|_| limit.admit(now).expect("within both bounds")).collect();
        assert!(limit.admit(now).is_none(), "five in flight");
        drop(held);
        let admitted = (0..100).filter_map(|_| limit.admit(now)).count();
        assert_eq!(admitted, 15, "the burst is two seconds' worth (20), five already spent");
        assert!(limit.admit(now + Duration::from_millis(100)).is_some(), "a tenth of a second refills one");
    }

    #[test]
    fn refused_handshakes_are_logged_once_per_interval() {
        let log = RefusalLog::default();
        let now = Instant::now();
        assert!(log.note(now, "refused"));
        assert!(!(0..1000).any(|_| log.note(now + Duration::from_secs(1), "refused")));
        assert!(log.note(now + REFUSAL_LOG_EVERY, "refused"));
    }
}
