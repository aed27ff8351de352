//! The event stream (issue 15): the Engine's [`Notice`]s, numbered and rendered as the API's
//! [`Event`], broadcast to every reader (`GET /v1/events`, `hearsay monitor`, the embedding
//! API, the event handler), and the event handler itself.
//!
//! Readers that fall more than [`EVENTS_QUEUE`] events behind lose the oldest and are told
//! how many (an `events-dropped` event); the agent never waits for a reader.
//!
//! # The event handler
//!
//! `hearsay agent --event-handler CMD` runs `sh -c CMD` once per event, one at a time, in
//! order, on its own thread: the event's JSON on stdin (one line), `HEARSAY_EVENT` set to the
//! event's name (as Serf sets `SERF_EVENT`). A run that takes longer than
//! [`HANDLER_TIMEOUT`] is killed. What it prints (up to [`HANDLER_OUTPUT_MAX`] bytes of each
//! stream) is logged; a run that exits non-zero, times out or cannot start is logged as a
//! warning and counted (`hearsay_event_handler_failures_total`). Events that arrive while a
//! slow handler runs wait, up to [`EVENTS_QUEUE`]; beyond that the oldest are skipped and
//! counted (`hearsay_event_handler_dropped_total`).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

use tokio::sync::broadcast;

use crate::api::types::{Event, hex};
use crate::api::views;
use crate::engine::{Notice, TreeChange};
use crate::metrics::EventCounters;

/// Events a reader may fall behind before it loses the oldest.
pub const EVENTS_QUEUE: usize = 1024;

/// How long one event handler run may take before it is killed.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes of a handler's stdout, and of its stderr, that are logged per run.
pub const HANDLER_OUTPUT_MAX: usize = 4096;

/// The sending side of the stream, owned by the actor.
#[derive(Debug)]
pub(crate) struct EventFeed {
    /// Made on the first reader: the channel's [`EVENTS_QUEUE`] slots cost about 300 KiB,
    /// which an agent nobody watches need not hold (issue 14, memory).
    tx: Option<broadcast::Sender<Event>>,
    seq: u64,
    counters: EventCounters,
}

impl EventFeed {
    /// A feed counting into `counters`.
    pub(crate) fn new(counters: EventCounters) -> Self {
        EventFeed { tx: None, seq: 0, counters }
    }

    /// A new reader, from the next event on.
    pub(crate) fn subscribe(&mut self) -> broadcast::Receiver<Event> {
        self.tx.get_or_insert_with(|| broadcast::channel(EVENTS_QUEUE).0).subscribe()
    }

    /// Number `notice`, render it and send it to every reader (none is fine: then it is
    /// numbered and counted, not rendered).
    pub(crate) fn emit(&mut self, notice: &Notice) {
        self.seq += 1;
        self.counters.emitted.inc();
        if let Some(tx) = self.tx.as_ref().filter(|tx| tx.receiver_count() > 0) {
            let _ = tx.send(render(self.seq, notice));
        }
    }
}

/// The API's form of a notice.
fn render(seq: u64, notice: &Notice) -> Event {
    let blank = |event: &str, at: hearsay_protocols::Instant| Event {
        seq,
        event: event.to_string(),
        time_ms: at.as_micros() / 1000,
        member: None,
        topic: None,
        parent: None,
        cause: None,
        dropped: None,
    };
    match notice {
        Notice::Member { change, member, at } => {
            Event { member: Some(views::member(member.clone())), ..blank(change.name(), *at) }
        }
        Notice::Tree { change, topic, name, at } => {
            let mut e = blank(change.name(), *at);
            e.topic = Some(name.clone().unwrap_or_else(|| format!("{:016x}", topic.0)));
            match change {
                TreeChange::Attached { parent } => e.parent = Some(hex(parent)),
                TreeChange::Detached { cause } => e.cause = Some((*cause).to_string()),
                TreeChange::Root => {}
            }
            e
        }
    }
}

/// The event a reader gets in place of `n` it missed.
pub fn dropped_event(n: u64) -> Event {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Event {
        seq: 0,
        event: "events-dropped".into(),
        time_ms: now.as_millis() as u64,
        member: None,
        topic: None,
        parent: None,
        cause: None,
        dropped: Some(n),
    }
}

/// Run `command` for every event `events` brings, serially, on a thread of its own, until
/// the stream closes (the agent stopped). See the module docs.
pub(crate) fn spawn_handler(
    command: String,
    mut events: broadcast::Receiver<Event>,
    counters: EventCounters,
) {
    let spawned = std::thread::Builder::new().name("event-handler".into()).spawn(move || {
        loop {
            match events.blocking_recv() {
                Ok(event) => run_handler(&command, &event, &counters),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    counters.handler_dropped.inc_by(n);
                    tracing::warn!(skipped = n, "event handler fell behind: events skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("event handler thread did not start: {e}");
    }
}

/// Read up to [`HANDLER_OUTPUT_MAX`] bytes of `r` (draining the rest, so the child never
/// blocks on a full pipe).
fn capped(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = HANDLER_OUTPUT_MAX.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).trim_end().to_string()
    })
}

/// One run of the handler for `event`.
fn run_handler(command: &str, event: &Event, counters: &EventCounters) {
    counters.handler_runs.inc();
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("HEARSAY_EVENT", &event.event)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            counters.handler_failures.inc();
            tracing::warn!(event = %event.event, seq = event.seq, "event handler could not start: {e}");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A handler that does not read its stdin closes the pipe: not a failure by itself.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&line);
        });
    }
    let out = child.stdout.take().map(capped);
    let err = child.stderr.take().map(capped);
    let started = StdInstant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= HANDLER_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                tracing::warn!("event handler: cannot wait for it: {e}");
                let _ = child.kill();
                break None;
            }
        }
    };
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    let (name, seq) = (&event.event, event.seq);
    match status {
        Some(s) if s.success() => {
            tracing::info!(event = %name, seq, %stdout, %stderr, "event handler ran");
        }
        Some(s) => {
            counters.handler_failures.inc();
            tracing::warn!(event = %name, seq, status = %s, %stdout, %stderr, "event handler failed");
        }
        None => {
            counters.handler_failures.inc();
            tracing::warn!(event = %name, seq, timeout_s = HANDLER_TIMEOUT.as_secs(), %stdout, %stderr,
                "event handler timed out and was killed");
        }
    }
}
