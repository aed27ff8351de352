//! The store against a real file in a temporary dir.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use hearsay_protocols::pbcast::MsgId;
use hearsay_protocols::{NodeId, TopicId};

use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearsay-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(dir: &Path, retention: Retention) -> StoreConfig {
    StoreConfig { dir: dir.to_path_buf(), sync: Sync::Batch, retention, restore_per_stream: 4 }
}

/// Microseconds of "now" on the wall clock (publish times in the daemon are wall-clock based).
fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

fn message(topic: u64, origin: u64, seq: u64, own: bool) -> Write {
    Write::Message {
        id: MsgId { origin: NodeId::from_u64(origin), topic: TopicId(topic), seq },
        published_at: now_us(),
        payload: Bytes::from(format!("m{seq}")),
        own,
        seal: hearsay_protocols::auth::Seal { key_tail: [seq as u8; 8], ..Default::default() },
    }
}

#[test]
fn what_was_written_comes_back_after_a_reopen() {
    let d = dir("reopen");
    let (store, first) = Store::open(config(&d, Retention::default())).unwrap();
    assert!(first.created);
    for s in 1..=6 {
        store.submit(message(1, 9, s, true)).unwrap();
    }
    store.submit(message(1, 7, 3, false)).unwrap();
    store
        .submit(Write::Gap {
            topic: TopicId(1),
            origin: NodeId::from_u64(7),
            first: 1,
            last: 2,
            at: now_us(),
        })
        .unwrap();
    let durable = Durable { topic: "t".into(), cursors: vec![], since: Some(17) };
    store.submit(Write::Durable { name: "d".into(), durable }).unwrap();
    store.submit(Write::Ack { name: "d".into(), acks: vec![(NodeId::from_u64(9), 4)] }).unwrap();
    store.submit(Write::Incarnation(5)).unwrap();
    let member = MemberRecord { addr: "127.0.0.1:1".into(), name: "a".into() };
    store.submit(Write::Members(vec![(NodeId::from_u64(3), member.clone())])).unwrap();
    store.flush(Duration::from_secs(10)).unwrap();
    let scanned = store.scan(TopicId(1), &[(NodeId::from_u64(9), 4)], 100).unwrap();
    let seqs: Vec<(u64, u64)> = scanned.iter().map(|(id, _)| (id.origin.prefix_u64(), id.seq)).collect();
    assert_eq!(
        seqs,
        vec![(7, 1), (7, 3), (9, 5), (9, 6)],
        "after the cursor, origin by origin, the gap included"
    );
    assert!(matches!(scanned[0].1, Record::Gap { last: 2, .. }));
    store.close();
    drop(store);
    let (_store, again) = Store::open(config(&d, Retention::default())).unwrap();
    assert!(!again.created);
    assert_eq!(again.epoch, first.epoch, "the epoch is kept");
    assert_eq!(again.incarnation, 5);
    assert_eq!(again.restored.counters, vec![(TopicId(1), 6)]);
    let mut heads = again.restored.heads.clone();
    heads.sort();
    assert_eq!(heads, vec![(TopicId(1), NodeId::from_u64(7), 3), (TopicId(1), NodeId::from_u64(9), 6)]);
    let recent: Vec<u64> = again
        .restored
        .messages
        .iter()
        .filter(|d| d.id.origin == NodeId::from_u64(9))
        .map(|d| d.id.seq)
        .collect();
    assert_eq!(recent, vec![3, 4, 5, 6], "the last `restore_per_stream` of each stream, oldest first");
    assert_eq!(
        again.durables,
        vec![(
            "d".into(),
            Durable { topic: "t".into(), cursors: vec![(NodeId::from_u64(9), 4)], since: Some(17) }
        )]
    );
    assert_eq!(again.members, vec![(NodeId::from_u64(3), member)]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn retention_trims_the_oldest_messages_but_keeps_the_counter() {
    let d = dir("retention");
    let retention = Retention { messages: 3, ..Retention::default() };
    let (store, _) = Store::open(config(&d, retention)).unwrap();
    for s in 1..=10 {
        store.submit(message(2, 1, s, true)).unwrap();
    }
    store.flush(Duration::from_secs(10)).unwrap();
    let left: Vec<u64> = store.scan(TopicId(2), &[], 100).unwrap().iter().map(|(id, _)| id.seq).collect();
    assert_eq!(left, vec![8, 9, 10]);
    let stats = store.stats();
    assert_eq!((stats.messages, stats.trimmed), (3, 7));
    assert!(stats.file_bytes > 0);
    store.close();
    drop(store);
    let (_s, again) = Store::open(config(&d, retention)).unwrap();
    assert_eq!(again.restored.counters, vec![(TopicId(2), 10)]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_file_that_is_not_a_store_is_a_clear_error_and_is_left_alone() {
    let d = dir("corrupt");
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("store.redb");
    std::fs::write(&f, vec![0x5a; 64 * 1024]).unwrap();
    let err = Store::open(config(&d, Retention::default())).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("store.redb"), "{err}");
    assert_eq!(std::fs::read(&f).unwrap(), vec![0x5a; 64 * 1024], "nothing was changed");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn damaged_pages_are_a_clear_error_not_a_panic() {
    let d = dir("damaged");
    let (store, _) = Store::open(config(&d, Retention::default())).unwrap();
    for s in 1..=2_000 {
        store.submit(message(3, 1, s, false)).unwrap();
    }
    store.flush(Duration::from_secs(30)).unwrap();
    store.close();
    drop(store);
    let f = d.join("store.redb");
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8192] {
        *b = 0xa7;
    }
    std::fs::write(&f, &bytes).unwrap();
    let err = Store::open(config(&d, Retention::default())).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_unusable_data_dir_is_refused_at_open() {
    // A data dir whose parent is a file: no permission bits involved, so this holds as root.
    let d = dir("notadir");
    std::fs::create_dir_all(&d).unwrap();
    let file = d.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(config(&file.join("data"), Retention::default())).unwrap_err();
    assert!(matches!(err, StoreError::Dir { .. }), "{err}");
    assert!(err.to_string().contains("plain-file"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_durable_subscription_in_the_first_layout_of_format_1_still_reads() {
    #[derive(serde::Serialize)]
    struct First {
        topic: String,
        cursors: Vec<(NodeId, u64)>,
    }
    let old =
        postcard::to_allocvec(&First { topic: "t".into(), cursors: vec![(NodeId::from_u64(2), 5)] }).unwrap();
    let d = Durable::decode(&old).unwrap();
    assert_eq!(d, Durable { topic: "t".into(), cursors: vec![(NodeId::from_u64(2), 5)], since: None });
    let new = Durable { since: Some(9), ..d };
    assert_eq!(Durable::decode(&new.encode().unwrap()).unwrap(), new);
}
