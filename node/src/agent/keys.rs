//! Key rotation without downtime (`hearsay keys`): the agent's keyring, the key requests of
//! other members, and an operation applied across the cluster.
//!
//! [`LiveKeyring`] owns the node's [`Keyring`] and identity. An operation is applied by making
//! the new ring, writing it to the data dir (atomically), re-issuing the node certificate
//! under its primary, and handing the new TLS settings to the transport
//! ([`Transport::set_identity`]): handshakes from then on present the primary's certificate
//! and accept a peer under any installed key; established connections stay up.
//!
//! Across the cluster ([`LiveKeyring::cluster`]): the operation is applied here first (a refusal
//! here, such as removing the primary, stops it), then sent to every other alive member as a
//! [`KeyRequest`] on the mutually authenticated QUIC connection with it, all at once, each
//! with [`MEMBER_TIMEOUT`]; the report counts who acknowledged. Any member of the cluster (a
//! holder of an installed key) may ask a key operation of another, as in Serf.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

use crate::api::types::{Member, parse_hex};
use crate::transport::identity::{ClusterSecret, NodeIdentity};
use crate::transport::keyring::{Fingerprint, KeyReply, KeyRequest, Keyring, KeyringError};
use crate::transport::{KeyCall, Transport};

/// How long a member has to answer a key request.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(10);

struct State {
    ring: Keyring,
    identity: NodeIdentity,
}

/// The keyring in effect: applied to the transport, kept in the data dir.
pub struct LiveKeyring {
    state: Mutex<State>,
    /// `DATA_DIR/keyring`; `None`: the ring lives in memory only (demo, bench).
    path: Option<PathBuf>,
    transport: Transport,
}

impl std::fmt::Debug for LiveKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKeyring").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A key operation across the cluster.
#[derive(Clone, Debug)]
pub enum KeyOp {
    /// Install this secret (not as the primary).
    Install(ClusterSecret),
    /// Make this installed key the primary.
    Use(Fingerprint),
    /// Remove this key (not the primary).
    Remove(Fingerprint),
}

/// A member that did not acknowledge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFailure {
    /// Its name.
    pub name: String,
    /// Its NodeId (hex).
    pub id: String,
    /// Why: its refusal, or what went wrong reaching it.
    pub error: String,
}

/// What an install, use or remove across the cluster did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOpReport {
    /// `install`, `use` or `remove`.
    pub op: String,
    /// The key's fingerprint.
    pub key: String,
    /// Alive members asked, this node included.
    pub members: usize,
    /// Those that applied it (or had nothing to do), this node included.
    pub acknowledged: usize,
    /// Those that did not, and why.
    pub failed: Vec<KeyFailure>,
}

/// One key in a cluster-wide list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHolders {
    /// Its fingerprint.
    pub fingerprint: String,
    /// Whether it is this node's primary.
    pub primary: bool,
    /// Members that have it installed.
    pub members: usize,
    /// Members whose primary it is.
    pub primary_on: usize,
}

/// `hearsay keys list`: the keys the members hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// This node's primary key.
    pub primary: String,
    /// Every key some member holds: this node's first (primary first), then others'.
    pub keys: Vec<KeyHolders>,
    /// Alive members asked, this node included.
    pub members: usize,
    /// Those that answered, this node included.
    pub responded: usize,
    /// Those that did not, and why.
    pub failed: Vec<KeyFailure>,
}

impl LiveKeyring {
    /// Manage `ring`, whose identity the transport already uses; `path` is where it is kept.
    pub fn new(
        ring: Keyring,
        identity: NodeIdentity,
        path: Option<PathBuf>,
        transport: Transport,
    ) -> Arc<Self> {
        Arc::new(LiveKeyring { state: Mutex::new(State { ring, identity }), path, transport })
    }

    /// The installed keys' fingerprints, the primary first.
    pub async fn fingerprints(&self) -> Vec<Fingerprint> {
        self.state.lock().await.ring.fingerprints()
    }

    /// Apply a request here (a member's, or this node's own).
    pub async fn apply(&self, request: &KeyRequest) -> Result<KeyReply, KeyringError> {
        let mut state = self.state.lock().await;
        let mut ring = state.ring.clone();
        let changed = match request {
            KeyRequest::List => return Ok(KeyReply::Keys(ring.fingerprints())),
            KeyRequest::Install(bytes) => ring.install(ClusterSecret::from_bytes(*bytes))?,
            KeyRequest::Use(fp) => ring.use_key(fp)?,
            KeyRequest::Remove(fp) => ring.remove(fp)?,
        };
        if changed {
            let identity = state.identity.reissue(&ring)?;
            if let Some(path) = &self.path {
                ring.save(path)?;
            }
            self.transport.set_identity(&identity).map_err(|e| KeyringError::Transport(e.to_string()))?;
            tracing::info!(keys = ?ring.fingerprints(), "keyring changed");
            *state = State { ring, identity };
        }
        Ok(KeyReply::Done)
    }

    /// Answer the key requests of members until the transport stops sending them.
    pub async fn serve(self: Arc<Self>, mut calls: mpsc::Receiver<KeyCall>) {
        while let Some(call) = calls.recv().await {
            let reply = match self.apply(&call.request).await {
                Ok(r) => r,
                Err(e) => KeyReply::Refused(e.to_string()),
            };
            tracing::info!(from = %call.from, request = op_name(&call.request), ?reply, "key request from a member");
            let _ = call.reply.send(reply);
        }
    }

    /// Send `request` to every alive member but this node, all at once; each one's reply.
    async fn ask_all(
        &self,
        request: &KeyRequest,
        members: &[Member],
    ) -> Vec<(Member, Result<KeyReply, String>)> {
        let me = self.transport.id();
        let mut set = tokio::task::JoinSet::new();
        let mut asked = std::collections::HashMap::new();
        for m in members.iter().filter(|m| m.state == "alive") {
            let id = parse_hex(&m.id);
            if id == Some(me) {
                continue;
            }
            let (t, request) = (self.transport.clone(), request.clone());
            let addr: Option<SocketAddr> = m.addr.parse().ok();
            let what = format!("no usable id and address: {} {}", m.id, m.addr);
            let task = set.spawn(async move {
                match (id, addr) {
                    (Some(id), Some(addr)) => t.request(id, addr, &request, MEMBER_TIMEOUT).await,
                    _ => Err(what),
                }
            });
            asked.insert(task.id(), m.clone());
        }
        let mut out = Vec::new();
        while let Some(done) = set.join_next_with_id().await {
            let (task, reply) = match done {
                Ok((task, reply)) => (task, reply),
                Err(e) => (e.id(), Err(format!("the request failed: {e}"))),
            };
            if let Some(m) = asked.remove(&task) {
                out.push((m, reply));
            }
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        out
    }

    /// Apply `request` (install, use or remove) here, then on every other alive member; a
    /// refusal here is returned as the error and nothing is sent.
    pub async fn cluster(&self, op: KeyOp, members: &[Member]) -> Result<KeyOpReport, KeyringError> {
        let (key, request) = match op {
            KeyOp::Install(s) => (s.fingerprint(), KeyRequest::Install(*s.as_bytes())),
            KeyOp::Use(fp) => (fp, KeyRequest::Use(fp)),
            KeyOp::Remove(fp) => (fp, KeyRequest::Remove(fp)),
        };
        self.apply(&request).await?;
        let replies = self.ask_all(&request, members).await;
        let mut report = KeyOpReport {
            op: op_name(&request).to_string(),
            key: key.to_string(),
            members: 1 + replies.len(),
            acknowledged: 1,
            failed: Vec::new(),
        };
        for (m, reply) in replies {
            match reply {
                Ok(KeyReply::Done) => report.acknowledged += 1,
                Ok(KeyReply::Refused(e)) | Err(e) => report.failed.push(failure(&m, e)),
                Ok(KeyReply::Keys(_)) => {
                    report.failed.push(failure(&m, "an answer of another request".into()))
                }
            }
        }
        tracing::info!(?report, "key operation across the cluster");
        Ok(report)
    }

    /// Which keys every alive member holds.
    pub async fn list(&self, members: &[Member]) -> KeyList {
        let mine = self.fingerprints().await;
        let replies = self.ask_all(&KeyRequest::List, members).await;
        let mut keys: Vec<KeyHolders> = mine
            .iter()
            .enumerate()
            .map(|(i, fp)| KeyHolders {
                fingerprint: fp.to_string(),
                primary: i == 0,
                members: 1,
                primary_on: usize::from(i == 0),
            })
            .collect();
        let mut list = KeyList {
            primary: mine.first().map(ToString::to_string).unwrap_or_default(),
            keys: Vec::new(),
            members: 1 + replies.len(),
            responded: 1,
            failed: Vec::new(),
        };
        for (m, reply) in replies {
            match reply {
                Ok(KeyReply::Keys(theirs)) => {
                    list.responded += 1;
                    for (i, fp) in theirs.iter().enumerate() {
                        let fp = fp.to_string();
                        let entry = match keys.iter().position(|k| k.fingerprint == fp) {
                            Some(at) => &mut keys[at],
                            None => {
                                keys.push(KeyHolders {
                                    fingerprint: fp,
                                    primary: false,
                                    members: 0,
                                    primary_on: 0,
                                });
                                let last = keys.len() - 1;
                                &mut keys[last]
                            }
                        };
                        entry.members += 1;
                        entry.primary_on += usize::from(i == 0);
                    }
                }
                Ok(KeyReply::Refused(e)) | Err(e) => list.failed.push(failure(&m, e)),
                Ok(KeyReply::Done) => list.failed.push(failure(&m, "an answer of another request".into())),
            }
        }
        list.keys = keys;
        list
    }
}

fn failure(m: &Member, error: String) -> KeyFailure {
    KeyFailure { name: m.name.clone(), id: m.id.clone(), error }
}

fn op_name(r: &KeyRequest) -> &'static str {
    match r {
        KeyRequest::Install(_) => "install",
        KeyRequest::Use(_) => "use",
        KeyRequest::Remove(_) => "remove",
        KeyRequest::List => "list",
    }
}
