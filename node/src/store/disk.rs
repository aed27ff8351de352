//! The file: its tables, how records are encoded, opening (with the integrity check and the
//! read-back of everything a restarted agent needs), and reads.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hearsay_protocols::auth::Seal;
use hearsay_protocols::pbcast::{Data, MsgId};
use hearsay_protocols::{Instant, NodeId, Seq, TopicId};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::index::Index;
use super::{Durable, KEY_LEN, MemberRecord, Record, StoreConfig, key, unkey};
use crate::engine::Restored;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
pub(super) const COUNTERS: TableDefinition<u64, u64> = TableDefinition::new("counters");
pub(super) const DURABLES: TableDefinition<&str, &[u8]> = TableDefinition::new("durables");
pub(super) const MEMBERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("members");

/// The on-disk format this build writes and reads.
pub(super) const FORMAT: u64 = 1;

/// A message without a seal (the first layout).
const MESSAGE: u8 = 0;
/// A message with its origin's seal: kind, publish time, key tail, signature, payload.
const SEALED: u8 = 2;
const GAP: u8 = 1;

/// Why the store cannot be used. Each names the file or dir and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data dir cannot be created or written.
    #[error("cannot use the data dir {path}: {reason}")]
    Dir {
        /// The dir.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The file exists but is not a store this build can read, or fails its integrity check.
    #[error(
        "the store {path} is unreadable: {reason}. Nothing was changed in it; move it away to start with an \
         empty store (this node then opens new streams and forgets its durable subscriptions)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the store (two agents on one data dir).
    #[error("the store {path} is in use by another process (is another agent running on this data dir?)")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// A write failed (full disk, I/O error). The store takes no more writes.
    #[error("writing the store {path} failed: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The writer is gone (the agent is stopping).
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// True when the disk is full (HTTP 507 rather than 503).
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Write { reason, .. } if reason.contains("No space left") || reason.contains("StorageFull"))
    }
}

/// Everything a store held at open.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stored {
    /// The epoch of this node's streams (kept, or new for a new store).
    pub epoch: u64,
    /// True if the store was created now (no earlier state).
    pub created: bool,
    /// The SWIM incarnation last announced (0: none).
    pub incarnation: u64,
    /// For the Engine: counters, heads, recent messages.
    pub restored: Restored,
    /// Durable subscriptions.
    pub durables: Vec<(String, Durable)>,
    /// The last-known members.
    pub members: Vec<(NodeId, MemberRecord)>,
}

pub(super) fn file(dir: &Path) -> PathBuf {
    dir.join("store.redb")
}

pub(super) fn encode(r: &Record) -> Vec<u8> {
    match r {
        Record::Message { published_at, payload, seal } => {
            let mut v = Vec::with_capacity(81 + payload.len());
            v.push(SEALED);
            v.extend_from_slice(&published_at.to_be_bytes());
            v.extend_from_slice(&seal.key_tail);
            v.extend_from_slice(&seal.sig.0);
            v.extend_from_slice(payload);
            v
        }
        Record::Gap { last, at } => {
            let mut v = Vec::with_capacity(17);
            v.push(GAP);
            v.extend_from_slice(&last.to_be_bytes());
            v.extend_from_slice(&at.to_be_bytes());
            v
        }
    }
}

/// The header of a value: (is a message, published_at or last, payload bytes, where the
/// payload starts).
pub(super) fn header(v: &[u8]) -> Option<(bool, u64, usize, usize)> {
    let (&kind, rest) = v.split_first()?;
    let word = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    match kind {
        MESSAGE => Some((true, word, rest.len() - 8, 9)),
        SEALED if rest.len() >= 80 => Some((true, word, rest.len() - 80, 81)),
        GAP if rest.len() == 16 => Some((false, word, 0, 17)),
        _ => None,
    }
}

/// The seal of a message value (the default for the first layout).
pub(super) fn seal_of(v: &[u8]) -> Seal {
    match (v.first(), v.get(9..17), v.get(17..81)) {
        (Some(&SEALED), Some(tail), Some(sig)) => {
            let mut s = Seal::default();
            s.key_tail.copy_from_slice(tail);
            s.sig.0.copy_from_slice(sig);
            s
        }
        _ => Seal::default(),
    }
}

pub(super) fn decode(v: &[u8]) -> Option<Record> {
    let (message, word, _, offset) = header(v)?;
    if message {
        Some(Record::Message {
            published_at: word,
            payload: Bytes::copy_from_slice(&v[offset..]),
            seal: seal_of(v),
        })
    } else {
        let at = u64::from_be_bytes(v[9..17].try_into().ok()?);
        Some(Record::Gap { last: word, at })
    }
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Open or create the file, check it, and read back its state and retention index.
pub(super) fn open(config: &StoreConfig) -> Result<(redb::Database, Stored, Index), StoreError> {
    let dir = &config.dir;
    let dir_err = |e: std::io::Error| StoreError::Dir { path: dir.clone(), reason: e.to_string() };
    std::fs::create_dir_all(dir).map_err(dir_err)?;
    // Writable? (A read-only dir would otherwise fail at the first write, after start.)
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"hearsay").map_err(dir_err)?;
    let _ = std::fs::remove_file(&probe);
    let path = file(dir);
    let created = !path.exists();
    // redb reports most damage as errors, but a damaged page can also make it panic while
    // reading: whatever happens in here is an error about the file, never a crash.
    let opened = std::panic::catch_unwind(|| open_and_read(&path, created, config));
    match opened {
        Ok(r) => r,
        Err(_) => Err(corrupt(&path, "the file's pages are inconsistent")),
    }
}

fn open_and_read(
    path: &Path,
    created: bool,
    config: &StoreConfig,
) -> Result<(redb::Database, Stored, Index), StoreError> {
    let mut builder = redb::Database::builder();
    builder.set_check_integrity_on_open(true);
    let db = builder.create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.to_path_buf() },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            StoreError::Dir { path: path.to_path_buf(), reason: io.to_string() }
        }
        other => corrupt(path, other),
    })?;
    let c = |e: &dyn std::fmt::Display| corrupt(path, e);
    // Tables exist, format and epoch are set.
    let w = db.begin_write().map_err(|e| c(&e))?;
    let epoch;
    {
        let mut meta = w.open_table(META).map_err(|e| c(&e))?;
        let format = meta.get("format").map_err(|e| c(&e))?.map(|g| g.value());
        match format {
            Some(FORMAT) => {}
            Some(other) => return Err(c(&format!("format {other}, this build reads format {FORMAT}"))),
            None if created => {
                meta.insert("format", FORMAT).map_err(|e| c(&e))?;
            }
            None => return Err(c(&"no format mark: not a hearsay store")),
        }
        let existing = meta.get("epoch").map_err(|e| c(&e))?.map(|g| g.value());
        epoch = match existing {
            Some(e) => e,
            None => {
                let e = new_epoch();
                meta.insert("epoch", e).map_err(|e| c(&e))?;
                e
            }
        };
        w.open_table(MESSAGES).map_err(|e| c(&e))?;
        w.open_table(COUNTERS).map_err(|e| c(&e))?;
        w.open_table(DURABLES).map_err(|e| c(&e))?;
        w.open_table(MEMBERS).map_err(|e| c(&e))?;
    }
    w.commit().map_err(|e| StoreError::Write { path: path.to_path_buf(), reason: e.to_string() })?;

    let r = db.begin_read().map_err(|e| c(&e))?;
    let meta = r.open_table(META).map_err(|e| c(&e))?;
    let incarnation = meta.get("incarnation").map_err(|e| c(&e))?.map_or(0, |g| g.value());
    let mut stored = Stored { epoch, created, incarnation, ..Stored::default() };
    let counters = r.open_table(COUNTERS).map_err(|e| c(&e))?;
    for e in counters.iter().map_err(|e| c(&e))? {
        let (k, v) = e.map_err(|e| c(&e))?;
        stored.restored.counters.push((TopicId(k.value()), v.value()));
    }
    // Messages: the retention index, each stream's head, each stream's recent messages.
    let mut index = Index::new(config.retention);
    let mut recent: BTreeMap<(TopicId, NodeId), VecDeque<Data>> = BTreeMap::new();
    let messages = r.open_table(MESSAGES).map_err(|e| c(&e))?;
    for e in messages.iter().map_err(|e| c(&e))? {
        let (k, v) = e.map_err(|e| c(&e))?;
        let (topic, origin, seq) = unkey(k.value()).ok_or_else(|| c(&"a message key of the wrong length"))?;
        let value = v.value();
        let (message, word, bytes, offset) =
            header(value).ok_or_else(|| c(&"a message record that does not decode"))?;
        if message {
            index.add(topic, origin, seq, word, bytes as u64);
            let q = recent.entry((topic, origin)).or_default();
            q.push_back(Data {
                id: MsgId { origin, topic, seq },
                published_at: Instant::from_micros(word),
                payload: Bytes::copy_from_slice(&value[offset..]),
                seal: seal_of(value),
            });
            if q.len() > config.restore_per_stream {
                q.pop_front();
            }
        } else {
            index.add_gap(topic, origin, seq, word);
        }
    }
    index.sort_by_age();
    stored.restored.heads = index.heads();
    stored.restored.messages = recent.into_values().flatten().collect();
    let durables = r.open_table(DURABLES).map_err(|e| c(&e))?;
    for e in durables.iter().map_err(|e| c(&e))? {
        let (k, v) = e.map_err(|e| c(&e))?;
        let d = Durable::decode(v.value()).map_err(|e| c(&e))?;
        stored.durables.push((k.value().to_string(), d));
    }
    let members = r.open_table(MEMBERS).map_err(|e| c(&e))?;
    for e in members.iter().map_err(|e| c(&e))? {
        let (k, v) = e.map_err(|e| c(&e))?;
        let id: [u8; 32] = k.value().try_into().map_err(|_| c(&"a member key of the wrong length"))?;
        let m: MemberRecord = postcard::from_bytes(v.value()).map_err(|e| c(&e))?;
        stored.members.push((NodeId::from_bytes(id), m));
    }
    drop((meta, counters, messages, durables, members));
    drop(r);
    Ok((db, stored, index))
}

/// A new store's epoch: wall-clock milliseconds, so that streams of a node that lost its
/// store never reuse an origin.
fn new_epoch() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64)
}

/// Records of `topic`: for each origin in `from` after its seq, and every other origin from
/// seq 1, origin by origin, at most `limit` in all.
pub(super) fn scan(
    db: &redb::Database,
    topic: TopicId,
    from: &[(NodeId, Seq)],
    limit: usize,
) -> Result<Vec<(MsgId, Record)>, StoreError> {
    let path = PathBuf::from("store.redb");
    let c = |e: &dyn std::fmt::Display| corrupt(&path, e);
    let r = db.begin_read().map_err(|e| c(&e))?;
    let t = r.open_table(MESSAGES).map_err(|e| c(&e))?;
    let lo = key(topic, &NodeId::from_bytes([0; 32]), 0);
    let hi = key(topic, &NodeId::from_bytes([0xff; 32]), Seq::MAX);
    let mut out = Vec::new();
    let mut k_lo: [u8; KEY_LEN] = lo;
    loop {
        let mut next_origin: Option<NodeId> = None;
        for e in t.range(&k_lo[..]..=&hi[..]).map_err(|e| c(&e))? {
            let (k, v) = e.map_err(|e| c(&e))?;
            let Some((_, origin, seq)) = unkey(k.value()) else { continue };
            let after = from.iter().find(|(o, _)| *o == origin).map_or(0, |(_, s)| *s);
            if seq <= after {
                // Skip to this origin's first seq after its cursor.
                next_origin = Some(origin);
                k_lo = key(topic, &origin, after.saturating_add(1));
                break;
            }
            if out.len() >= limit {
                return Ok(out);
            }
            let Some(record) = decode(v.value()) else { continue };
            if let Record::Gap { last, .. } = record {
                if last <= after {
                    continue;
                }
            }
            out.push((MsgId { origin, topic, seq }, record));
        }
        if next_origin.is_none() {
            return Ok(out);
        }
    }
}

pub(super) fn durables(db: &redb::Database) -> Result<Vec<(String, Durable)>, StoreError> {
    let path = PathBuf::from("store.redb");
    let c = |e: &dyn std::fmt::Display| corrupt(&path, e);
    let r = db.begin_read().map_err(|e| c(&e))?;
    let t = r.open_table(DURABLES).map_err(|e| c(&e))?;
    let mut out = Vec::new();
    for e in t.iter().map_err(|e| c(&e))? {
        let (k, v) = e.map_err(|e| c(&e))?;
        let d = Durable::decode(v.value()).map_err(|e| c(&e))?;
        out.push((k.value().to_string(), d));
    }
    Ok(out)
}
