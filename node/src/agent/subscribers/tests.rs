//! Subscriptions against a real store in a temporary dir: the actor's part is played by hand
//! (a delivery's write is submitted before the delivery, as the Engine's Persist records
//! come before their events), replays run as real tasks.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use hearsay_protocols::pbcast::{MsgId, Via};
use hearsay_protocols::{Instant as At, NodeId};

use super::*;
use crate::agent::command::DurableError;
use crate::api::types::Cursor;
use crate::store::{Retention, StoreConfig, Sync, Write};

fn delivery(topic: &str, seq: u64, msg: &AppMessage) -> Delivery {
    delivery_from(topic, NodeId::from_bytes([7; 32]), seq, msg, 0)
}

fn delivery_from(topic: &str, origin: NodeId, seq: u64, msg: &AppMessage, published_at: u64) -> Delivery {
    Delivery {
        id: MsgId { origin, topic: TopicId::of(topic), seq },
        payload: msg.encode().unwrap(),
        published_at: At::from_micros(published_at),
        received_at: At::ZERO,
        via: Via::Local,
        seal: Default::default(),
    }
}

fn text(body: &'static [u8], headers: &[(&str, &str)]) -> AppMessage {
    AppMessage {
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: Bytes::from_static(body),
    }
}

fn options(filter: Option<&str>) -> SubscribeOptions {
    SubscribeOptions { filter: filter.map(|f| Filter::parse(f).unwrap()), ..SubscribeOptions::default() }
}

fn subscribe(
    subs: &mut Subscribers,
    topic: &str,
    filter: Option<&str>,
    queue: usize,
) -> mpsc::Receiver<StreamItem> {
    let (tx, rx) = mpsc::channel(queue + 1); // as the API makes them: a slot for the closing line
    let name = TopicName::new(topic).unwrap();
    subs.add(TopicId::of(topic), name, options(filter), tx);
    rx
}

fn memory() -> Subscribers {
    Subscribers::new(None, &[], Vec::new()).0
}

#[tokio::test]
async fn a_delivery_reaches_the_matching_subscriptions_of_its_topic_only() {
    let mut subs = memory();
    let mut all = subscribe(&mut subs, "news", None, 8);
    let mut urgent = subscribe(&mut subs, "news", Some("priority >= 3"), 8);
    let mut other = subscribe(&mut subs, "sports", None, 8);
    assert!(subs.deliver(&delivery("news", 1, &text(b"calm", &[("priority", "1")]))).is_empty());
    assert!(subs.deliver(&delivery("news", 2, &text(b"\xff\x00", &[("priority", "5")]))).is_empty());
    let first = all.try_recv().unwrap();
    let StreamItem::Message(d) = first else { panic!("{first:?}") };
    assert_eq!((d.topic.as_str(), d.seq, d.payload.as_deref()), ("news", 1, Some("calm")));
    assert_eq!(d.origin, "07".repeat(32));
    let StreamItem::Message(d) = urgent.try_recv().unwrap() else { panic!() };
    assert_eq!(d.seq, 2, "the filter let only priority 5 through");
    assert_eq!((d.payload, d.payload_b64.as_deref()), (None, Some("/wA=")), "binary bodies in base64");
    assert!(urgent.try_recv().is_err() && other.try_recv().is_err());
    assert_eq!((subs.len(), subs.on(TopicId::of("news"))), (3, 2));
}

#[tokio::test]
async fn a_subscriber_that_does_not_keep_up_is_closed_and_told_why() {
    let mut subs = memory();
    let mut slow = subscribe(&mut subs, "news", None, 1);
    let m = text(b"x", &[]);
    assert!(subs.deliver(&delivery("news", 1, &m)).is_empty());
    let closed = subs.deliver(&delivery("news", 2, &m));
    assert_eq!(closed, vec![TopicName::new("news").unwrap()]);
    assert_eq!(subs.len(), 0);
    assert!(matches!(slow.recv().await, Some(StreamItem::Message(_))));
    let Some(StreamItem::Closed { closed }) = slow.recv().await else { panic!("no closing line") };
    assert!(closed.reason.contains("queue of 1 messages was full"), "{}", closed.reason);
    assert!(slow.recv().await.is_none(), "the stream ends after the closing line");
}

#[tokio::test]
async fn expired_and_abandoned_subscriptions_are_ended_by_housekeeping() {
    let mut subs = memory();
    let (tx, mut expiring) = mpsc::channel(4);
    let expire = SubscribeOptions { expire: Some(Duration::from_secs(1)), ..SubscribeOptions::default() };
    subs.add(TopicId::of("a"), TopicName::new("a").unwrap(), expire, tx);
    let abandoned = subscribe(&mut subs, "b", None, 4);
    let _kept = subscribe(&mut subs, "c", None, 4);
    drop(abandoned);
    let ended = subs.housekeeping(Instant::now() + Duration::from_secs(2));
    let names: Vec<&str> = ended.iter().map(TopicName::as_str).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(subs.len(), 1);
    let Some(StreamItem::Closed { closed }) = expiring.recv().await else { panic!() };
    assert_eq!(closed.reason, "the subscription expired");
}

// ---- with a store: durable subscriptions, replays, the handover, pauses ----

/// A store in a fresh temp dir, and subscriptions over it.
struct Rig {
    /// Publish times are `base + seq` µs: now on the wall clock, as in the daemon (retention
    /// by age would trim older ones at once).
    base: u64,
    dir: PathBuf,
    store: Store,
    subs: Subscribers,
    reports: mpsc::UnboundedReceiver<ReplayDone>,
}

const ORIGIN: NodeId = NodeId::from_bytes([7; 32]);

impl Rig {
    fn new(label: &str, retention: Retention) -> Rig {
        let dir = std::env::temp_dir().join(format!("hearsay-subs-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = StoreConfig { dir: dir.clone(), sync: Sync::Batch, retention, restore_per_stream: 4 };
        let (store, _) = Store::open(config).unwrap();
        let (subs, reports) = Subscribers::new(Some(store.clone()), &[], Vec::new());
        let base =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
        Rig { base, dir, store, subs, reports }
    }

    /// What the actor does when the Engine delivers: the write first, then the fan-out.
    fn deliver(&mut self, topic: &str, origin: NodeId, seq: u64, published_at: u64) -> Vec<TopicName> {
        let body = format!("m{seq}");
        let msg = AppMessage { headers: BTreeMap::new(), body: Bytes::from(body) };
        let d = delivery_from(topic, origin, seq, &msg, published_at);
        self.store
            .submit(Write::Message {
                id: d.id,
                published_at,
                payload: d.payload.clone(),
                own: false,
                seal: d.seal,
            })
            .unwrap();
        self.subs.deliver(&d)
    }

    fn deliver_many(&mut self, topic: &str, seqs: std::ops::RangeInclusive<u64>) {
        for s in seqs {
            assert!(self.deliver(topic, ORIGIN, s, self.base + s).is_empty());
        }
    }

    fn durable(
        &mut self,
        name: &str,
        topic: &str,
        from: StartAt,
        queue: usize,
    ) -> mpsc::Receiver<StreamItem> {
        let name = DurableName::new(name).unwrap();
        let topic = TopicName::new(topic).unwrap();
        if !self.subs.check_durable(&name, &topic).unwrap() {
            self.subs.create_durable(name.clone(), topic, from).unwrap();
        }
        let (tx, rx) = mpsc::channel(queue + 1);
        self.subs.connect(&name, &SubscribeOptions::default(), tx).unwrap();
        rx
    }

    /// Hand the next replay report to the subscriptions.
    async fn report(&mut self) {
        let done = tokio::time::timeout(Duration::from_secs(10), self.reports.recv())
            .await
            .expect("a replay reports within 10 s")
            .expect("reports channel open");
        assert!(self.subs.replay_done(done).is_empty());
    }

    /// Read `rx` until `n` items came, handing replay reports over meanwhile.
    async fn read(&mut self, rx: &mut mpsc::Receiver<StreamItem>, n: usize) -> Vec<StreamItem> {
        let mut got = Vec::new();
        while got.len() < n {
            tokio::select! {
                item = rx.recv() => got.push(item.expect("the stream is open")),
                Some(done) = self.reports.recv() => {
                    self.subs.replay_done(done);
                }
                () = tokio::time::sleep(Duration::from_secs(10)) => panic!("only {} of {n} items: {got:?}", got.len()),
            }
        }
        got
    }

    /// Nothing more comes on `rx` (after the pending replay reports are handled).
    async fn quiet(&mut self, rx: &mut mpsc::Receiver<StreamItem>) {
        self.store.flush(Duration::from_secs(10)).unwrap();
        while let Ok(Some(done)) = tokio::time::timeout(Duration::from_millis(200), self.reports.recv()).await
        {
            self.subs.replay_done(done);
        }
        assert!(rx.try_recv().is_err(), "an extra item came");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.store.close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// (seq) of messages and (from, to) of gaps, in order.
fn seqs(items: &[StreamItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            StreamItem::Message(d) => d.seq.to_string(),
            StreamItem::Gap { gap } => format!("gap {}..={}", gap.from_seq, gap.to_seq),
            StreamItem::Closed { closed } => format!("closed: {}", closed.reason),
        })
        .collect()
}

fn range(r: std::ops::RangeInclusive<u64>) -> Vec<String> {
    r.map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_durable_client_gets_what_it_did_not_acknowledge_then_live_items_each_once() {
    let mut rig = Rig::new("handover", Retention::default());
    let name = DurableName::new("d").unwrap();
    // Created with no client; what comes meanwhile is kept.
    drop(rig.durable("d", "news", StartAt::New, 64));
    rig.deliver_many("news", 1..=5);
    rig.subs.ack(&name, vec![(ORIGIN, 2)]).unwrap();
    // The client comes back; items delivered while its replay runs (some also read by the
    // replay from the store) are buffered and deduplicated.
    let mut rx = rig.durable("d", "news", StartAt::New, 64);
    rig.deliver_many("news", 6..=8);
    rig.report().await;
    rig.deliver_many("news", 9..=10);
    let got = rig.read(&mut rx, 8).await;
    assert_eq!(seqs(&got), range(3..=10), "after the cursor, in order, each once");
    rig.quiet(&mut rx).await;
    let listed = rig.subs.durables();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].topic.as_str(), listed[0].connected), ("news", true));
    assert_eq!(listed[0].cursors, vec![Cursor { origin: hex(&ORIGIN), seq: 2 }]);
}

#[tokio::test]
async fn retention_past_a_cursor_is_one_gap_notice_then_the_rest() {
    let mut rig = Rig::new("retention", Retention { messages: 5, ..Retention::default() });
    let name = DurableName::new("d").unwrap();
    drop(rig.durable("d", "news", StartAt::New, 64));
    rig.deliver_many("news", 1..=2);
    rig.subs.ack(&name, vec![(ORIGIN, 2)]).unwrap();
    rig.deliver_many("news", 3..=20);
    rig.store.flush(Duration::from_secs(10)).unwrap();
    let mut rx = rig.durable("d", "news", StartAt::New, 64);
    rig.report().await;
    let got = rig.read(&mut rx, 6).await;
    let mut want = vec!["gap 3..=15".to_string()];
    want.extend(range(16..=20));
    assert_eq!(seqs(&got), want);
    rig.quiet(&mut rx).await;
}

#[tokio::test]
async fn a_stream_this_node_began_to_hold_late_is_no_gap_but_its_trimmed_start_is() {
    let mut rig = Rig::new("late", Retention { messages: 3, ..Retention::default() });
    drop(rig.durable("d", "news", StartAt::New, 64));
    // This node's copy of another origin starts at 57 (the Engine started at the topic's heads).
    let late = NodeId::from_bytes([9; 32]);
    assert!(rig.deliver("news", late, 57, rig.base).is_empty());
    let mut rx = rig.durable("d", "news", StartAt::New, 64);
    rig.report().await;
    assert_eq!(seqs(&rig.read(&mut rx, 1).await), ["57"], "no gap for 1..=56");
    drop(rx);
    rig.subs.housekeeping(Instant::now());
    // Then, with no client, retention trims 57..=59 before anyone acknowledged them.
    for s in 58..=62 {
        assert!(rig.deliver("news", late, s, rig.base + s).is_empty());
    }
    rig.store.flush(Duration::from_secs(10)).unwrap();
    let mut rx = rig.durable("d", "news", StartAt::New, 64);
    rig.report().await;
    let got = rig.read(&mut rx, 4).await;
    assert_eq!(seqs(&got), ["gap 57..=59", "60", "61", "62"]);
}

#[tokio::test]
async fn a_slow_durable_client_is_paused_and_catches_up_from_the_store_without_loss_or_duplicates() {
    let mut rig = Rig::new("pause", Retention::default());
    let mut rx = rig.durable("d", "news", StartAt::New, 4);
    rig.report().await;
    // Nobody reads: the queue of 4 fills, the client is paused (not closed), and the rest
    // waits in the store; more comes while its catch-up runs.
    rig.deliver_many("news", 1..=40);
    assert_eq!(rig.subs.len(), 1, "paused, not closed");
    let first = rig.read(&mut rx, 20).await;
    rig.deliver_many("news", 41..=50);
    let rest = rig.read(&mut rx, 30).await;
    let all: Vec<StreamItem> = first.into_iter().chain(rest).collect();
    assert_eq!(seqs(&all), range(1..=50));
    rig.quiet(&mut rx).await;
    // Live again: the next one goes straight through.
    rig.deliver_many("news", 51..=51);
    assert_eq!(seqs(&rig.read(&mut rx, 1).await), ["51"]);
}

#[tokio::test]
async fn a_live_buffer_that_overflows_during_a_replay_is_read_from_the_store_by_another_pass() {
    let mut rig = Rig::new("overflow", Retention::default());
    rig.subs.buffer_max = 4;
    drop(rig.durable("d", "news", StartAt::All, 64));
    rig.deliver_many("news", 1..=10);
    // A client with a queue of 1 that does not read yet: its replay is stuck on its queue
    // while 30 more arrive, far more than the buffer holds.
    let mut rx = rig.durable("d", "news", StartAt::All, 1);
    rig.deliver_many("news", 11..=40);
    let got = rig.read(&mut rx, 40).await;
    assert_eq!(seqs(&got), range(1..=40));
    rig.quiet(&mut rx).await;
}

#[tokio::test]
async fn from_all_replays_the_store_and_from_a_time_passes_over_older_messages() {
    let mut rig = Rig::new("from", Retention::default());
    rig.deliver_many("news", 1..=6); // published at base + 1..=6
    let (tx, mut all) = mpsc::channel(64);
    let news = TopicName::new("news").unwrap();
    let opts = SubscribeOptions { from: StartAt::All, ..SubscribeOptions::default() };
    rig.subs.add(TopicId::of("news"), news.clone(), opts, tx);
    let (tx, mut recent) = mpsc::channel(64);
    let opts = SubscribeOptions { from: StartAt::Time(rig.base + 4), ..SubscribeOptions::default() };
    rig.subs.add(TopicId::of("news"), news, opts, tx);
    let (tx, mut new) = mpsc::channel(64);
    rig.subs.add(TopicId::of("news"), TopicName::new("news").unwrap(), SubscribeOptions::default(), tx);
    rig.deliver_many("news", 7..=7);
    assert_eq!(seqs(&rig.read(&mut all, 7).await), range(1..=7));
    assert_eq!(seqs(&rig.read(&mut recent, 4).await), range(4..=7));
    assert_eq!(seqs(&rig.read(&mut new, 1).await), ["7"], "new: no replay, no gap");
    rig.quiet(&mut all).await;
    rig.quiet(&mut recent).await;
}

#[tokio::test]
async fn one_client_per_durable_name_and_a_gone_one_frees_it() {
    let mut rig = Rig::new("one", Retention::default());
    let name = DurableName::new("d").unwrap();
    let news = TopicName::new("news").unwrap();
    let rx = rig.durable("d", "news", StartAt::New, 8);
    assert_eq!(rig.subs.check_durable(&name, &news), Err(DurableError::InUse(name.clone())));
    let sports = TopicName::new("sports").unwrap();
    assert!(matches!(rig.subs.check_durable(&name, &sports), Err(DurableError::OtherTopic { .. })));
    drop(rx);
    assert_eq!(rig.subs.check_durable(&name, &news), Ok(true), "a client whose stream is gone frees it");
    let mut rx = rig.durable("d", "news", StartAt::New, 8);
    let unknown = DurableName::new("nope").unwrap();
    assert_eq!(rig.subs.ack(&unknown, vec![]), Err(DurableError::Unknown(unknown.clone())));
    assert_eq!(rig.subs.delete_durable(&unknown), Err(DurableError::Unknown(unknown)));
    assert_eq!(rig.subs.delete_durable(&name), Ok(news));
    let got = rig.read(&mut rx, 1).await;
    assert_eq!(seqs(&got), ["closed: the durable subscription was deleted"]);
    assert!(rig.subs.durables().is_empty());
    rig.store.flush(Duration::from_secs(10)).unwrap();
    assert!(rig.store.durables().unwrap().is_empty(), "deleted in the store too");
}

#[tokio::test]
async fn cursors_and_start_times_survive_in_the_store() {
    let mut rig = Rig::new("kept", Retention::default());
    let since = rig.base + 3;
    drop(rig.durable("t", "news", StartAt::Time(since), 8));
    rig.deliver_many("news", 1..=5);
    rig.subs.ack(&DurableName::new("t").unwrap(), vec![(ORIGIN, 3)]).unwrap();
    rig.store.flush(Duration::from_secs(10)).unwrap();
    let stored = rig.store.durables().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1.cursors, vec![(ORIGIN, 3)]);
    assert_eq!(stored[0].1.since, Some(since));
    // A restarted agent's subscriptions, from what the store gave back.
    let (mut subs, mut reports) = Subscribers::new(Some(rig.store.clone()), &[], stored);
    let name = DurableName::new("t").unwrap();
    assert_eq!(subs.check_durable(&name, &TopicName::new("news").unwrap()), Ok(true));
    let (tx, mut rx) = mpsc::channel(8);
    subs.connect(&name, &SubscribeOptions::default(), tx).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), reports.recv()).await.unwrap().unwrap();
    subs.replay_done(done);
    let mut got = Vec::new();
    while let Ok(item) = rx.try_recv() {
        got.push(item);
    }
    assert_eq!(seqs(&got), ["4", "5"]);
}

#[tokio::test]
async fn a_topic_held_afresh_starts_where_the_engine_delivers_not_at_the_stale_stored_heads() {
    let mut rig = Rig::new("fresh", Retention::default());
    // A previous life kept seqs 1..=100 of the topic, then the agent stopped holding it.
    rig.deliver_many("news", 1..=100);
    rig.store.flush(Duration::from_secs(10)).unwrap();
    let (subs, reports) =
        Subscribers::new(Some(rig.store.clone()), &[(TopicId::of("news"), ORIGIN, 100)], Vec::new());
    (rig.subs, rig.reports) = (subs, reports);
    // A durable subscription from `new`: the Engine starts the stream at its current head (149).
    drop(rig.durable("new", "news", StartAt::New, 256));
    // One from `all` wants the store's older copy too.
    drop(rig.durable("all", "news", StartAt::All, 256));
    assert!(rig.deliver("news", ORIGIN, 150, rig.base + 150).is_empty());
    rig.store.flush(Duration::from_secs(10)).unwrap();
    let mut new = rig.durable("new", "news", StartAt::New, 256);
    let mut all = rig.durable("all", "news", StartAt::New, 256);
    assert_eq!(seqs(&rig.read(&mut new, 1).await), ["150"], "no gap for 101..=149, none of the old copy");
    let mut want = range(1..=100);
    want.extend(["gap 101..=149".to_string(), "150".to_string()]);
    assert_eq!(seqs(&rig.read(&mut all, 102).await), want, "everything retained, and what is not is a gap");
    rig.quiet(&mut new).await;
    rig.quiet(&mut all).await;
}
