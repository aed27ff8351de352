//! The agent's durable store in its data dir (DESIGN.md, "Durability"; the Engine's side is
//! [`crate::engine::Persist`]): its own streams and every message it delivered on subscribed
//! topics, gap notices, stream counters, durable subscriptions and their cursors, the
//! last-known member list, and the node's stream epoch.
//!
//! # On disk
//!
//! One [redb](https://docs.rs/redb) file, `store.redb`, chosen over fjall after measuring both
//! on this workload: with batched fsync fjall wrote 2–4× faster, but redb reports a corrupt
//! file as an error (its integrity check runs at open) where fjall's journal recovery silently
//! drops everything after a damaged spot, and redb reopens a million messages in milliseconds
//! (fjall replays its journal for most of a second, which a restarting agent cannot spare).
//! With group commit both sustain thousands of durable writes per second.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | name | `format`, `epoch`, `incarnation` (u64, big-endian) |
//! | `messages` | topic ‖ origin ‖ seq (48 bytes, big-endian) | a message or a gap notice starting at that seq ([`Record`]) |
//! | `counters` | topic | the last seq this node published on it |
//! | `durables` | name | a durable subscription: topic, cursor per origin, start time if any ([`Durable`]) |
//! | `members` | node id | the last-known address and name ([`MemberRecord`]) |
//!
//! # Writes and their durability
//!
//! One writer thread owns every write. [`Store::submit`] queues a write and returns its ticket
//! at once; the writer applies what is queued in one transaction, commits it with fsync, trims
//! what retention no longer covers, and then announces the highest ticket that is durable
//! ([`Store::synced`]). [`Sync::Batch`] (the default) commits whatever queued up while the
//! previous fsync ran, at most [`BATCH_MAX`] writes at a time: a lone write is synced at once,
//! a burst shares one fsync, and a publish is acknowledged only once its own write is
//! durable. [`Sync::Always`] commits each write on its own (one fsync per write: a few hundred
//! per second on an ordinary disk). A write that fails (a full disk, an I/O error) fails the
//! store: every later write is refused with that error, and the agent refuses publishes
//! (HTTP 507) rather than accept what it cannot keep.
//!
//! # Retention
//!
//! Per topic, the oldest messages go once a topic holds more than [`Retention::messages`]
//! messages or [`Retention::bytes`] payload bytes, or once they are older than
//! [`Retention::age`] (by their publish time). Counters are kept beyond retention, so a
//! publisher's streams continue after a restart however long ago its last message was trimmed.

mod disk;
mod index;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hearsay_protocols::auth::Seal;
use hearsay_protocols::pbcast::MsgId;
use hearsay_protocols::{NodeId, Seq, TopicId};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use self::disk::{StoreError, Stored};
use self::writer::Writer;

/// The most writes one group commit takes.
pub const BATCH_MAX: usize = 1024;

/// When writes are synced to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sync {
    /// Each write committed and fsynced on its own.
    Always,
    /// Writes that queue up while an fsync runs share the next one (group commit); each is
    /// acknowledged once its group is durable.
    #[default]
    Batch,
}

impl std::str::FromStr for Sync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Sync::Always),
            "batch" => Ok(Sync::Batch),
            other => Err(format!("`{other}` is not a sync policy: always, batch")),
        }
    }
}

/// How much of each topic the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Messages per topic at most. Default 100,000.
    pub messages: u64,
    /// Payload bytes per topic at most. Default 256 MiB.
    pub bytes: u64,
    /// Messages older than this (by publish time) go. Default 7 days.
    pub age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { messages: 100_000, bytes: 256 << 20, age: Duration::from_secs(7 * 24 * 3600) }
    }
}

/// What is stored under (topic, origin, seq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A message: its publish time (µs on the origin's clock: wall-clock based in the daemon)
    /// and payload.
    Message {
        /// When the origin published it.
        published_at: u64,
        /// The payload (the encoded application message).
        payload: Bytes,
        /// Its origin's seal (so it can be served again after a restart).
        seal: Seal,
    },
    /// Seqs `seq..=last` of the stream can no longer be had: a gap notice, kept so a replay
    /// announces it again.
    Gap {
        /// The last seq the gap covers.
        last: Seq,
        /// When this node announced it (µs, its clock).
        at: u64,
    },
}

/// A durable subscription: a name with a cursor per origin, advanced by acknowledgements.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable {
    /// The topic's name.
    pub topic: String,
    /// Per origin, the last seq acknowledged (everything at or below it was acknowledged or
    /// announced as a gap).
    pub cursors: Vec<(NodeId, Seq)>,
    /// Created `--from TIME` (or `all`: 0): messages published before this (µs since the UNIX
    /// epoch, the origin's clock) are passed over, never delivered; `None` for one created
    /// from `new`. Added after format 1's first
    /// records, which `Durable::decode` still reads (as `None`).
    pub since: Option<u64>,
}

/// A durable subscription as format 1 first wrote it (no `since`).
#[derive(Deserialize)]
struct DurableV1 {
    topic: String,
    cursors: Vec<(NodeId, Seq)>,
}

impl Durable {
    /// The stored bytes of this durable subscription.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// A durable subscription from its stored bytes, in either layout format 1 has used: the
    /// current one, or the first (without `since`, which is then `None`).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Durable, postcard::Error> {
        postcard::from_bytes::<Durable>(bytes).or_else(|e| {
            postcard::from_bytes::<DurableV1>(bytes)
                .map(|d| Durable { topic: d.topic, cursors: d.cursors, since: None })
                .map_err(|_| e)
        })
    }

    /// The cursor of `origin` (0: nothing acknowledged).
    pub fn cursor(&self, origin: &NodeId) -> Seq {
        self.cursors.iter().find(|(o, _)| o == origin).map_or(0, |(_, s)| *s)
    }

    /// Advance `origin`'s cursor to `seq` (never backwards).
    pub fn advance(&mut self, origin: NodeId, seq: Seq) {
        match self.cursors.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, s)) => *s = (*s).max(seq),
            None => {
                self.cursors.push((origin, seq));
                self.cursors.sort_unstable();
            }
        }
    }
}

/// A member as last known: where to re-dial it after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Its socket address, as text.
    pub addr: String,
    /// Its name.
    pub name: String,
}

/// One write.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Keep a message (retention permitting); an own message also moves its topic's counter.
    Message {
        /// Its id.
        id: MsgId,
        /// When it was published (µs, the origin's clock).
        published_at: u64,
        /// The payload.
        payload: Bytes,
        /// Published by this node.
        own: bool,
        /// Its origin's seal.
        seal: Seal,
    },
    /// Keep a gap notice.
    Gap {
        /// The topic.
        topic: TopicId,
        /// The stream's origin.
        origin: NodeId,
        /// First seq given up.
        first: Seq,
        /// Last seq given up.
        last: Seq,
        /// When (µs).
        at: u64,
    },
    /// Create or replace a durable subscription.
    Durable {
        /// Its name.
        name: String,
        /// Its state.
        durable: Durable,
    },
    /// Advance a durable subscription's cursors (acknowledgements); unknown names are ignored.
    Ack {
        /// The subscription.
        name: String,
        /// (origin, seq) pairs acknowledged.
        acks: Vec<(NodeId, Seq)>,
    },
    /// Forget a durable subscription.
    DeleteDurable {
        /// Its name.
        name: String,
    },
    /// Replace the last-known member list.
    Members(Vec<(NodeId, MemberRecord)>),
    /// The SWIM incarnation this node last announced.
    Incarnation(u64),
}

/// The store's figures for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Messages retained.
    pub messages: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// Bytes of the file on disk.
    pub file_bytes: u64,
    /// Messages removed by retention.
    pub trimmed: u64,
    /// Group commits, and the writes they carried.
    pub commits: u64,
    /// Writes applied.
    pub writes: u64,
}

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The data dir; the file is `store.redb` in it.
    pub dir: PathBuf,
    /// When writes are synced.
    pub sync: Sync,
    /// Retention per topic.
    pub retention: Retention,
    /// Most recent messages per stream handed back at open (the Engine's history size).
    pub restore_per_stream: usize,
}

/// An open store: submit writes from the actor, read from anywhere.
#[derive(Clone)]
pub struct Store {
    db: Arc<redb::Database>,
    writer: Writer,
    synced: watch::Receiver<u64>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store in `config.dir` and read back what it holds. A file that is
    /// not a store, fails its integrity check, or cannot be written is an error naming the
    /// path; nothing is changed in it then.
    pub fn open(config: StoreConfig) -> Result<(Store, Stored), StoreError> {
        let (db, stored, index) = disk::open(&config)?;
        let db = Arc::new(db);
        let (synced_tx, synced) = watch::channel(0);
        let path = disk::file(&config.dir);
        let writer = Writer::spawn(db.clone(), config, index, synced_tx)?;
        Ok((Store { db, writer, synced, path }, stored))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue `write`; its ticket is durable once [`Store::synced`] reaches it. An error once
    /// the store has failed.
    pub fn submit(&self, write: Write) -> Result<u64, StoreError> {
        self.writer.submit(write)
    }

    /// The last ticket handed out: once [`Store::synced`] reaches it, every write submitted
    /// so far is durable and visible to [`Store::scan`].
    pub fn last_ticket(&self) -> u64 {
        self.writer.last_ticket()
    }

    /// The highest ticket whose write is durable.
    pub fn synced(&self) -> watch::Receiver<u64> {
        self.synced.clone()
    }

    /// The error that failed the store, if any.
    pub fn failure(&self) -> Option<StoreError> {
        self.writer.failure()
    }

    /// Figures for `/metrics`.
    pub fn stats(&self) -> StoreStats {
        let mut s = self.writer.stats();
        s.file_bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        s
    }

    /// The records of `topic` from `origin`'s seq `after + 1` on, in seq order, at most
    /// `limit`; every origin when `origin` is `None` (origin by origin). Reads a consistent
    /// snapshot; does not wait for queued writes.
    pub fn scan(
        &self,
        topic: TopicId,
        from: &[(NodeId, Seq)],
        limit: usize,
    ) -> Result<Vec<(MsgId, Record)>, StoreError> {
        disk::scan(&self.db, topic, from, limit)
    }

    /// Durable subscriptions as stored now.
    pub fn durables(&self) -> Result<Vec<(String, Durable)>, StoreError> {
        disk::durables(&self.db)
    }

    /// Finish the queued writes and stop the writer: later submits fail with
    /// [`StoreError::Closed`]. The file is released once every clone is dropped.
    pub fn close(&self) {
        self.writer.close();
    }

    /// Wait (bounded) until every write queued so far is durable, e.g. before exiting.
    pub fn flush(&self, timeout: Duration) -> Result<(), StoreError> {
        self.writer.flush(timeout)
    }
}

/// Bytes of a message key.
pub(crate) const KEY_LEN: usize = 48;

/// The big-endian key of (topic, origin, seq): keys sort by topic, then origin, then seq.
pub(crate) fn key(topic: TopicId, origin: &NodeId, seq: Seq) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&topic.0.to_be_bytes());
    k[8..40].copy_from_slice(origin.as_bytes());
    k[40..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The (topic, origin, seq) of a key; `None` for a key of another length.
pub(crate) fn unkey(k: &[u8]) -> Option<(TopicId, NodeId, Seq)> {
    if k.len() != KEY_LEN {
        return None;
    }
    let topic = TopicId(u64::from_be_bytes(k[..8].try_into().ok()?));
    let origin = NodeId::from_bytes(k[8..40].try_into().ok()?);
    let seq = u64::from_be_bytes(k[40..].try_into().ok()?);
    Some((topic, origin, seq))
}

#[cfg(test)]
mod tests;
