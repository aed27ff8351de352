//! A replay: one subscription's catch-up from the store, in its own task (store reads in
//! `spawn_blocking`), sending with back-pressure: a client that does not read holds it, and it
//! holds at most one chunk.
//!
//! Per origin it continues after the position it was given (a durable subscription's cursor,
//! or what a paused client was last sent) in seq order. What is missing right after a position
//! is announced as one gap notice (merged with a stored gap notice that follows it): retention
//! dropped it. An origin without a position starts silently at its first record: it is a
//! stream this node began to hold after the subscription started (see the parent module).
//! Messages published before the subscription's start time are passed over, and so is a
//! missing stretch right before one of them (older still).

use std::collections::BTreeMap;

use hearsay_protocols::pbcast::MsgId;
use hearsay_protocols::{NodeId, Seq, TopicId};
use tokio::sync::mpsc;

use super::{Rendered, gap_item};
use crate::api::types::{StreamItem, hex};
use crate::filter::Filter;
use crate::message::TopicName;
use crate::store::{Record, Store, StoreError};

/// Records read from the store at a time.
pub(super) const CHUNK: usize = 256;

/// What to replay, for which subscription.
pub(super) struct Plan {
    /// The subscription.
    pub(super) sub: u64,
    /// Which of its replays.
    pub(super) generation: u64,
    pub(super) topic: TopicId,
    pub(super) name: TopicName,
    pub(super) filter: Option<Filter>,
    pub(super) since: Option<u64>,
    /// Per origin, the last seq already sent or acknowledged.
    pub(super) from: BTreeMap<NodeId, Seq>,
    /// The store's last ticket when the replay began: everything delivered before is
    /// durable once the synced ticket reaches it.
    pub(super) upto: u64,
}

/// How a replay ended, reported to the actor.
#[derive(Debug)]
pub(in crate::agent) struct ReplayDone {
    pub(super) sub: u64,
    pub(super) generation: u64,
    /// Per origin, the last seq sent or passed over.
    pub(super) sent: BTreeMap<NodeId, Seq>,
    pub(super) outcome: Outcome,
}

#[derive(Debug)]
pub(super) enum Outcome {
    /// Everything the store held past the positions was sent.
    Caught,
    /// The client went away.
    ClientGone,
    /// The store cannot be read, or failed.
    StoreFailed(StoreError),
}

/// Run `plan` against `store`, sending to `sink`; report on `done`.
pub(super) async fn run(
    store: Store,
    plan: Plan,
    sink: mpsc::Sender<StreamItem>,
    done: mpsc::UnboundedSender<ReplayDone>,
) {
    let mut pos = plan.from.clone();
    let outcome = replay(&store, &plan, &sink, &mut pos).await;
    let _ = done.send(ReplayDone { sub: plan.sub, generation: plan.generation, sent: pos, outcome });
}

async fn replay(
    store: &Store,
    plan: &Plan,
    sink: &mpsc::Sender<StreamItem>,
    pos: &mut BTreeMap<NodeId, Seq>,
) -> Outcome {
    // Whatever was delivered before the replay began is durable, hence visible, first.
    let mut synced = store.synced();
    loop {
        if *synced.borrow_and_update() >= plan.upto {
            break;
        }
        if let Some(e) = store.failure() {
            return Outcome::StoreFailed(e);
        }
        tokio::select! {
            changed = synced.changed() => {
                if changed.is_err() {
                    return Outcome::StoreFailed(store.failure().unwrap_or(StoreError::Closed));
                }
            }
            () = sink.closed() => return Outcome::ClientGone,
        }
    }
    loop {
        let from: Vec<(NodeId, Seq)> = pos.iter().map(|(o, s)| (*o, *s)).collect();
        let (s, topic) = (store.clone(), plan.topic);
        let records = match tokio::task::spawn_blocking(move || s.scan(topic, &from, CHUNK)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Outcome::StoreFailed(e),
            Err(_) => return Outcome::StoreFailed(StoreError::Closed),
        };
        let n = records.len();
        for item in items(plan, records, pos) {
            if sink.send(item).await.is_err() {
                return Outcome::ClientGone;
            }
        }
        if n < CHUNK {
            return Outcome::Caught;
        }
    }
}

/// The stream items for `records` (one scan, per origin in seq order), advancing `pos`.
pub(super) fn items(
    plan: &Plan,
    records: Vec<(MsgId, Record)>,
    pos: &mut BTreeMap<NodeId, Seq>,
) -> Vec<StreamItem> {
    let mut out = Vec::new();
    for (id, record) in records {
        let origin = id.origin;
        let at = pos.get(&origin).copied();
        let origin_hex = || hex(&origin);
        match record {
            Record::Message { published_at, payload, .. } => {
                let seq = id.seq;
                if at.is_some_and(|p| seq <= p) {
                    continue;
                }
                let early = plan.since.is_some_and(|t| published_at < t);
                if let Some(p) = at {
                    if seq > p.saturating_add(1) && !early {
                        out.push(gap_item(&plan.name, &origin_hex(), p + 1, seq - 1));
                    }
                }
                pos.insert(origin, seq);
                if early {
                    continue;
                }
                let rendered = Rendered::new(&payload);
                if rendered.matches(plan.filter.as_ref()) {
                    out.push(rendered.item(&plan.name, &origin_hex(), seq));
                }
            }
            Record::Gap { last, .. } => {
                let first = match at {
                    Some(p) if last <= p => continue,
                    Some(p) => p + 1,
                    None => id.seq,
                };
                pos.insert(origin, last);
                out.push(gap_item(&plan.name, &origin_hex(), first, last));
            }
        }
    }
    out
}
