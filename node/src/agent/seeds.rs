//! Seeds: the addresses an agent joins through. SWIM joins through members (NodeIds), so each
//! seed address is first resolved by connecting to it (the transport learns the NodeId from
//! the peer's certificate). A seed that is not up yet is retried with backoff; one that
//! refuses this node's certificate (another cluster secret) is given up for good, and when
//! every seed has refused, the agent stops with [`AgentError::SeedsRefused`].
//!
//! A join that no resolved seed answered in time is asked again with its own backoff (500 ms
//! doubling to 10 s): SWIM by itself would only retry at its next push-pull.

use std::net::SocketAddr;
use std::time::Duration;

use hearsay_protocols::NodeId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::AgentError;
use crate::transport::{ConnectError, Transport};

/// What resolving a seed found out.
pub(super) enum JoinNote {
    /// The seed at this address is this node (its address travels with it: the transport's
    /// `Connected` event comes on another channel and may be handled later).
    Resolved(NodeId, SocketAddr),
    /// The seed refused this node's certificate: why.
    Refused(String),
}

/// Resolve every seed in its own task; their notes come on the returned channel, which
/// closes when all are done.
pub(super) fn resolve_all(transport: &Transport, seeds: &[SocketAddr]) -> mpsc::Receiver<JoinNote> {
    let (tx, rx) = mpsc::channel(64);
    for s in seeds {
        tokio::spawn(resolve(transport.clone(), *s, tx.clone()));
    }
    rx
}

/// Connect to a seed until it answers; report who it is, or that it refused us for good.
async fn resolve(t: Transport, addr: SocketAddr, tx: mpsc::Sender<JoinNote>) {
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

/// The state of joining: seeds resolved, seeds that refused, and when to ask again.
pub(super) struct Join {
    seeds: usize,
    refusals: usize,
    /// Seeds that answered, in the order they did.
    resolved: Vec<NodeId>,
    retry: Option<Instant>,
    backoff: Duration,
}

impl Join {
    /// Joining through `seeds` addresses.
    pub(super) fn new(seeds: usize) -> Self {
        Join { seeds, refusals: 0, resolved: Vec::new(), retry: None, backoff: Duration::from_millis(500) }
    }

    /// A seed answered: the members to join through now.
    pub(super) fn resolved(&mut self, id: NodeId) -> &[NodeId] {
        self.resolved.push(id);
        &self.resolved
    }

    /// A seed refused this node: an error once every seed has.
    pub(super) fn refused(&mut self, reason: &str) -> Result<(), AgentError> {
        self.refusals += 1;
        tracing::error!("{reason}");
        if self.refusals == self.seeds {
            return Err(AgentError::SeedsRefused);
        }
        Ok(())
    }

    /// The join failed (no seed answered in time): ask again after the backoff, if there is
    /// anyone to ask.
    pub(super) fn failed(&mut self) {
        if !self.resolved.is_empty() {
            self.retry = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Wait for the retry; never ready when none is due.
    pub(super) async fn retry_due(&self) {
        match self.retry {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// The retry is being made: the members to join through.
    pub(super) fn retrying(&mut self) -> &[NodeId] {
        self.retry = None;
        &self.resolved
    }
}
