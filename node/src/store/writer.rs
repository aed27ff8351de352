//! The writer thread: group commit, retention, and the durable-ticket announcements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use redb::{ReadableTable, WriteTransaction};
use tokio::sync::watch;

use super::disk::{COUNTERS, DURABLES, MEMBERS, MESSAGES, META, encode, header};
use super::index::Index;
use super::{BATCH_MAX, Durable, Record, StoreConfig, StoreError, StoreStats, Sync, Write, key};

/// What the submitting side and the thread share.
#[derive(Debug, Default)]
struct Shared {
    /// The error that failed the store.
    failure: Mutex<Option<StoreError>>,
    /// The highest durable ticket, for blocking waits ([`Writer::flush`]).
    synced: Mutex<u64>,
    progress: Condvar,
    stats: Mutex<StoreStats>,
}

/// A write and its ticket, on the way to the thread.
type Submit = mpsc::Sender<(u64, Write)>;

/// The submitting side.
#[derive(Clone, Debug)]
pub(super) struct Writer {
    /// Taken by [`Writer::close`]: then the thread ends and every clone's submits fail.
    tx: Arc<Mutex<Option<Submit>>>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    next: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

impl Writer {
    pub(super) fn spawn(
        db: Arc<redb::Database>,
        config: StoreConfig,
        index: Index,
        synced: watch::Sender<u64>,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        {
            let (m, b) = index.totals();
            let mut s = shared.stats.lock().unwrap_or_else(|p| p.into_inner());
            s.messages = m;
            s.payload_bytes = b;
        }
        let thread = Thread { db, config, index, rx, synced, shared: shared.clone() };
        let handle = std::thread::Builder::new()
            .name("hearsay-store".into())
            .spawn(move || thread.run())
            .map_err(|e| StoreError::Dir { path: "(store writer thread)".into(), reason: e.to_string() })?;
        Ok(Writer {
            tx: Arc::new(Mutex::new(Some(tx))),
            thread: Arc::new(Mutex::new(Some(handle))),
            next: Arc::new(AtomicU64::new(1)),
            shared,
        })
    }

    /// Stop taking writes, let the thread finish what is queued, and wait for it.
    pub(super) fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(h) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }

    pub(super) fn submit(&self, write: Write) -> Result<u64, StoreError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = tx.as_ref().ok_or(StoreError::Closed)?;
        let ticket = self.next.fetch_add(1, Ordering::SeqCst);
        tx.send((ticket, write)).map_err(|_| StoreError::Closed)?;
        Ok(ticket)
    }

    pub(super) fn last_ticket(&self) -> u64 {
        self.next.load(Ordering::SeqCst).saturating_sub(1)
    }

    pub(super) fn failure(&self) -> Option<StoreError> {
        self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn stats(&self) -> StoreStats {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Block until every ticket handed out so far is durable, the store failed, or `timeout`.
    pub(super) fn flush(&self, timeout: Duration) -> Result<(), StoreError> {
        let target = self.next.load(Ordering::SeqCst).saturating_sub(1);
        let deadline = std::time::Instant::now() + timeout;
        let mut synced = self.shared.synced.lock().unwrap_or_else(|p| p.into_inner());
        while *synced < target {
            if let Some(e) = self.failure() {
                return Err(e);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Write {
                    path: "store.redb".into(),
                    reason: format!("writes still queued after {timeout:?}"),
                });
            }
            synced = self.shared.progress.wait_timeout(synced, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(())
    }
}

struct Thread {
    db: Arc<redb::Database>,
    config: StoreConfig,
    index: Index,
    rx: mpsc::Receiver<(u64, Write)>,
    synced: watch::Sender<u64>,
    shared: Arc<Shared>,
}

impl Thread {
    fn run(mut self) {
        let max = match self.config.sync {
            Sync::Always => 1,
            Sync::Batch => BATCH_MAX,
        };
        let mut batch = Vec::with_capacity(max);
        // Ends when every `Store` (every sender) is dropped.
        while let Ok(first) = self.rx.recv() {
            batch.push(first);
            while batch.len() < max {
                match self.rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            let last = batch.last().map_or(0, |(t, _)| *t);
            let n = batch.len() as u64;
            match self.commit(batch.drain(..).map(|(_, w)| w)) {
                Ok(trimmed) => {
                    {
                        let mut s = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
                        let (m, b) = self.index.totals();
                        s.messages = m;
                        s.payload_bytes = b;
                        s.trimmed += trimmed;
                        s.commits += 1;
                        s.writes += n;
                    }
                    *self.shared.synced.lock().unwrap_or_else(|p| p.into_inner()) = last;
                    self.shared.progress.notify_all();
                    let _ = self.synced.send(last);
                }
                Err(e) => {
                    tracing::error!("{e}");
                    *self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    self.shared.progress.notify_all();
                    // Wake waiters: a failed store never advances `synced` again.
                    self.synced.send_modify(|_| {});
                    // Refuse everything queued; later submits see the failure.
                    while self.rx.try_recv().is_ok() {}
                    return;
                }
            }
        }
    }

    /// Apply `writes` and what retention trims in one transaction, then commit durably.
    fn commit(&mut self, writes: impl Iterator<Item = Write>) -> Result<u64, StoreError> {
        let path = super::disk::file(&self.config.dir);
        let fail =
            |e: &dyn std::fmt::Display| StoreError::Write { path: path.clone(), reason: e.to_string() };
        let mut tx = self.db.begin_write().map_err(|e| fail(&e))?;
        tx.set_durability(redb::Durability::Immediate).map_err(|e| fail(&e))?;
        let mut newest = 0u64;
        for w in writes {
            if let Write::Message { published_at, .. } = &w {
                newest = newest.max(*published_at);
            }
            self.apply(&tx, w).map_err(|e| fail(&e))?;
        }
        let trimmed = self.trim(&tx, newest).map_err(|e| fail(&e))?;
        tx.commit().map_err(|e| fail(&e))?;
        Ok(trimmed)
    }

    fn apply(&mut self, tx: &WriteTransaction, w: Write) -> Result<(), redb::Error> {
        match w {
            Write::Message { id, published_at, payload, own, seal } => {
                let k = key(id.topic, &id.origin, id.seq);
                let mut m = tx.open_table(MESSAGES)?;
                let exists = m.get(&k[..])?.and_then(|v| header(v.value())).is_some_and(|(msg, ..)| msg);
                if !exists {
                    let bytes = payload.len() as u64;
                    m.insert(&k[..], &encode(&Record::Message { published_at, payload, seal })[..])?;
                    self.index.add(id.topic, id.origin, id.seq, published_at, bytes);
                }
                if own {
                    let mut c = tx.open_table(COUNTERS)?;
                    let old = c.get(id.topic.0)?.map_or(0, |g| g.value());
                    if id.seq > old {
                        c.insert(id.topic.0, id.seq)?;
                    }
                }
            }
            Write::Gap { topic, origin, first, last, at } => {
                let k = key(topic, &origin, first);
                let mut m = tx.open_table(MESSAGES)?;
                if m.get(&k[..])?.is_none() {
                    m.insert(&k[..], &encode(&Record::Gap { last, at })[..])?;
                    self.index.add_gap(topic, origin, first, last);
                }
            }
            Write::Durable { name, durable } => {
                let mut d = tx.open_table(DURABLES)?;
                let v = durable.encode().map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                d.insert(name.as_str(), &v[..])?;
            }
            Write::Ack { name, acks } => {
                let mut d = tx.open_table(DURABLES)?;
                let current: Option<Durable> =
                    d.get(name.as_str())?.and_then(|v| Durable::decode(v.value()).ok());
                if let Some(mut durable) = current {
                    for (origin, seq) in acks {
                        durable.advance(origin, seq);
                    }
                    let v = durable.encode().map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                    d.insert(name.as_str(), &v[..])?;
                }
            }
            Write::DeleteDurable { name } => {
                tx.open_table(DURABLES)?.remove(name.as_str())?;
            }
            Write::Members(list) => {
                let mut t = tx.open_table(MEMBERS)?;
                t.retain(|_, _| false)?;
                for (id, m) in list {
                    let v = postcard::to_allocvec(&m).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                    t.insert(&id.as_bytes()[..], &v[..])?;
                }
            }
            Write::Incarnation(n) => {
                tx.open_table(META)?.insert("incarnation", n)?;
            }
        }
        Ok(())
    }

    /// Remove what retention no longer covers, judged at the newest publish time written.
    fn trim(&mut self, tx: &WriteTransaction, newest: u64) -> Result<u64, redb::Error> {
        let now = newest.max(wall_micros());
        let expired = self.index.expired(now);
        if expired.is_empty() {
            return Ok(0);
        }
        let mut m = tx.open_table(MESSAGES)?;
        for &(topic, origin, seq) in &expired {
            m.remove(&key(topic, &origin, seq)[..])?;
            for first in self.index.gaps_below(topic, origin, seq) {
                m.remove(&key(topic, &origin, first)[..])?;
            }
        }
        Ok(expired.len() as u64)
    }
}

fn wall_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
