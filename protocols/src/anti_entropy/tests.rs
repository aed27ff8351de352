//! Anti-entropy stepped by hand: two and three machines, chosen times and seeds, and the
//! `testing::Net` harness (zero latency, FIFO) where they talk.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::machine::Reliability;
use crate::testing::Net;
use crate::time::Duration;
use crate::timer::Timing;

const T: TopicId = TopicId(7);

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn stream(origin: u64) -> StreamId {
    StreamId { topic: T, origin: id(origin) }
}

fn entry(origin: u64, seq: u64) -> Entry {
    Entry::unsealed(stream(origin), seq, Bytes::from(format!("{origin}/{seq}")))
}

fn config(mode: AeMode) -> Arc<AeConfig> {
    Arc::new(AeConfig { mode, interval: Duration::from_secs(1), timing: Timing::Sync, ..AeConfig::default() })
}

fn machine(n: u64, cfg: &Arc<AeConfig>, peers: &[u64]) -> AntiEntropy {
    let mut m = AntiEntropy::new(id(n), cfg.clone(), &Seed::derive(42, "node", 0, n), Instant::ZERO);
    m.subscribe(Instant::ZERO, T);
    m.handle_peers(Instant::ZERO, peers.iter().map(|&p| id(p)).collect());
    m
}

fn seqs(m: &AntiEntropy, origin: u64) -> Vec<u64> {
    (1..=20).filter(|&q| m.store().contains(&stream(origin), q)).collect()
}

/// A log line: (from, to, message).
type Sent = (u64, u64, AeMessage);

/// Put `m` in the net; its id.
fn add(net: &mut Net<AntiEntropy>, m: AntiEntropy) -> NodeId {
    let id = m.id();
    net.add(id, m);
    id
}

/// The messages `net` carried after the first `mark`, in order. Every one must be a stream
/// message, to a node of the net.
fn log_since(net: &Net<AntiEntropy>, mark: usize) -> Vec<Sent> {
    let sent = &net.sent()[mark..];
    assert!(sent.iter().all(|s| s.reliability == Reliability::Stream && s.delivered));
    sent.iter().map(|s| (s.from.prefix_u64(), s.to.prefix_u64(), s.msg.clone())).collect()
}

/// Deliver everything queued at the net's current instant, FIFO, until nothing moves. Returns
/// the messages in the order they were delivered.
fn pump(net: &mut Net<AntiEntropy>) -> Vec<Sent> {
    let mark = net.sent().len();
    net.pump();
    log_since(net, mark)
}

fn events(m: &mut AntiEntropy) -> Vec<AeEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

#[test]
fn push_pull_sends_digests_first_then_only_the_missing_entries() {
    let cfg = config(AeMode::PushPull);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[2]));
    let b = add(&mut net, machine(2, &cfg, &[1]));
    for q in [1, 2, 3] {
        net[a].insert(Instant::ZERO, entry(9, q));
    }
    for q in [2, 4] {
        net[b].insert(Instant::ZERO, entry(9, q));
    }
    let before = net[a].store().summary(stream(9), 32);
    net[a].start_exchange(Instant::ZERO, AeMode::PushPull, Some(id(2))).unwrap();
    let log = pump(&mut net);
    assert_eq!(log.len(), 3);
    let AeMessage::Syn { mode, digest, .. } = &log[0].2 else { panic!("{:?}", log[0]) };
    assert_eq!(*mode, AeMode::PushPull);
    assert_eq!(digest.summaries, vec![before]);
    // B's reply: its digest, and from its holdings only what A lacks (4; 2 A has).
    let AeMessage::SynAck { delta, digest, .. } = &log[1].2 else { panic!() };
    assert_eq!(delta.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4]);
    assert_eq!(digest.summaries[0].missing, vec![3]);
    // A's delta: 3 is the only seq ≥ B's floor that B lacks (1 is below B's floor of 2).
    let AeMessage::Delta { delta, .. } = &log[2].2 else { panic!() };
    assert_eq!(delta.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
    assert_eq!(seqs(&net[a], 9), vec![1, 2, 3, 4]);
    assert_eq!(seqs(&net[b], 9), vec![2, 3, 4]);
    assert!(net.take_events_of(a).contains(&AeEvent::ExchangeCompleted { peer: id(2), xid: 1 }));
    assert_eq!(net.take_events_of(b), vec![AeEvent::Received { from: id(1), entry: entry(9, 3) }]);
    assert_eq!(net[a].stats().entries_sent + net[b].stats().entries_sent, 2);
}

#[test]
fn push_teaches_only_the_responder_and_pull_only_the_initiator() {
    let cfg = config(AeMode::Push);
    for (mode, a_learns, b_learns) in [(AeMode::Push, false, true), (AeMode::Pull, true, false)] {
        let mut net = Net::new();
        let a = add(&mut net, machine(1, &cfg, &[2]));
        let b = add(&mut net, machine(2, &cfg, &[1]));
        net[a].insert(Instant::ZERO, entry(1, 1));
        net[b].insert(Instant::ZERO, entry(2, 1));
        net[a].start_exchange(Instant::ZERO, mode, None).unwrap();
        let log = pump(&mut net);
        assert_eq!(log.len(), if mode == AeMode::Push { 3 } else { 2 }, "{mode:?}");
        assert_eq!(net[a].store().contains(&stream(2), 1), a_learns, "{mode:?}");
        assert_eq!(net[b].store().contains(&stream(1), 1), b_learns, "{mode:?}");
    }
}

#[test]
fn heads_reports_the_partner_summaries_and_moves_no_entries() {
    let cfg = config(AeMode::PushPull);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[2]));
    let b = add(&mut net, machine(2, &cfg, &[1]));
    for q in 3..=5 {
        net[b].insert(Instant::ZERO, entry(9, q));
    }
    assert_eq!(
        net[a].start_exchange(Instant::ZERO, AeMode::Heads, None),
        None,
        "heads are asked for a topic"
    );
    net[a].ask_heads(Instant::ZERO, T, id(2)).unwrap();
    pump(&mut net);
    assert!(net[a].store().is_empty());
    let heads = net.take_events_of(a).into_iter().find_map(|e| match e {
        AeEvent::Heads { topic, summaries, .. } => Some((topic, summaries)),
        _ => None,
    });
    let (topic, summaries) = heads.expect("a Heads event");
    assert_eq!(topic, T);
    assert_eq!(summaries.expect("the partner's summaries")[0].max, 5);
}

#[test]
fn a_heads_exchange_without_reply_reports_no_heads_for_its_topic() {
    let cfg = config(AeMode::PushPull);
    let mut a = machine(1, &cfg, &[2]);
    a.ask_heads(Instant::ZERO, T, id(2)).unwrap();
    assert_eq!(a.ask_heads(Instant::ZERO, T, id(2)), None, "one exchange at a time");
    let _syn = a.poll_transmit().unwrap();
    a.handle_timeout(Instant::ZERO + AeConfig::default().timeout);
    assert_eq!(
        events(&mut a),
        vec![
            AeEvent::ExchangeAborted { peer: id(2), xid: 1 },
            AeEvent::Heads { peer: id(2), topic: T, summaries: None, proofs: vec![] }
        ]
    );
}

#[test]
fn periodic_ticks_spread_an_entry_through_three_nodes() {
    let cfg = config(AeMode::PushPull);
    let all = [1, 2, 3];
    let mut net: Net<AntiEntropy> = all.iter().map(|&n| (id(n), machine(n, &cfg, &all))).collect();
    net[id(1)].insert(Instant::ZERO, entry(1, 1));
    let mut rounds = 0;
    while net.machines().any(|(_, m)| !m.store().contains(&stream(1), 1)) {
        rounds += 1;
        assert!(rounds <= 10, "did not converge");
        let now = Instant::from_micros(rounds * 1_000_000);
        for (_, m) in net.machines() {
            assert_eq!(m.poll_timeout(), Some(now), "sync ticks are aligned");
        }
        let mark = net.sent().len();
        net.run_until(now);
        let log = log_since(&net, mark);
        // Everyone initiated exactly one exchange this round, with someone else.
        let syns: Vec<_> = log.iter().filter(|(_, _, m)| matches!(m, AeMessage::Syn { .. })).collect();
        assert_eq!(syns.len(), 3);
        assert!(syns.iter().all(|(f, t, _)| f != t));
    }
    // With three nodes and push-pull the first round already informs the partner; the
    // second reaches the third node unless all its contacts avoided informed nodes.
    assert!(rounds <= 4, "{rounds}");
}

#[test]
fn at_round_start_staging_hides_new_entries_until_the_next_tick() {
    let cfg = Arc::new(AeConfig { commit: Commit::AtRoundStart, ..(*config(AeMode::PushPull)).clone() });
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[2, 3]));
    let b = add(&mut net, machine(2, &cfg, &[1, 3]));
    let c = add(&mut net, machine(3, &cfg, &[1, 2]));
    net[a].insert(Instant::ZERO, entry(1, 1));
    // A pushes to B; then, in the same round, C pulls from B: B must not pass it on yet.
    net[a].start_exchange(Instant::ZERO, AeMode::Push, Some(id(2))).unwrap();
    net[c].start_exchange(Instant::ZERO, AeMode::Pull, Some(id(2))).unwrap();
    pump(&mut net);
    assert_eq!(net[b].staged().len(), 1);
    assert!(!net[b].store().contains(&stream(1), 1));
    assert!(net[c].staged().is_empty() && net[c].store().is_empty());
    // The Received event fires on arrival, so experiments see when B was informed.
    assert!(net.take_events_of(b).iter().any(|e| matches!(e, AeEvent::Received { .. })));
    // B's next tick commits before it sends anything.
    net[b].handle_timeout(Instant::from_micros(1_000_000));
    assert!(net[b].store().contains(&stream(1), 1) && net[b].staged().is_empty());
}

#[test]
fn an_unanswered_exchange_times_out_and_blocks_ticks_until_then() {
    let cfg =
        Arc::new(AeConfig { timeout: Duration::from_millis(2_500), ..(*config(AeMode::PushPull)).clone() });
    let mut a = machine(1, &cfg, &[2]);
    a.handle_timeout(Instant::from_micros(1_000_000));
    let syn = a.poll_transmit().unwrap();
    assert!(matches!(syn.msg, AeMessage::Syn { xid: 1, .. }));
    // Partner never answers. The tick at 2 s is skipped; the timeout fires at 3.5 s.
    assert_eq!(a.poll_timeout(), Some(Instant::from_micros(2_000_000)));
    a.handle_timeout(Instant::from_micros(2_000_000));
    assert!(a.poll_transmit().is_none());
    assert_eq!(a.stats().ticks_skipped, 1);
    assert_eq!(a.poll_timeout(), Some(Instant::from_micros(3_000_000)));
    a.handle_timeout(Instant::from_micros(3_000_000));
    assert_eq!(a.stats().ticks_skipped, 2);
    assert_eq!(a.poll_timeout(), Some(Instant::from_micros(3_500_000)));
    a.handle_timeout(Instant::from_micros(3_500_000));
    assert_eq!(events(&mut a), vec![AeEvent::ExchangeAborted { peer: id(2), xid: 1 }]);
    // A late reply to the aborted exchange is counted and ignored.
    a.handle_message(
        Instant::from_micros(3_600_000),
        id(2),
        AeMessage::SynAck {
            xid: 1,
            scope: vec![T],
            digest: Digest::default(),
            delta: vec![entry(2, 1)],
            more: false,
            proofs: vec![],
        },
    );
    assert_eq!(a.stats().unknown_xid, 1);
    assert!(a.store().is_empty());
    // The next tick opens a new exchange.
    a.handle_timeout(Instant::from_micros(4_000_000));
    assert!(matches!(a.poll_transmit().unwrap().msg, AeMessage::Syn { xid: 2, .. }));
}

#[test]
fn malformed_and_out_of_scope_input_is_counted_and_changes_nothing() {
    let cfg = config(AeMode::PushPull);
    let mut b = machine(2, &cfg, &[1]);
    b.insert(Instant::ZERO, entry(9, 1));
    let bad_summary = StreamSummary { stream: stream(9), floor: 5, contig: 2, max: 9, missing: vec![] };
    let now = Instant::ZERO;
    b.handle_message(
        now,
        id(1),
        AeMessage::Syn {
            xid: 1,
            mode: AeMode::PushPull,
            scope: vec![T],
            digest: Digest { summaries: vec![bad_summary], partial: false },
        },
    );
    b.handle_message(
        now,
        id(1),
        AeMessage::Syn { xid: 2, mode: AeMode::Pull, scope: vec![T, T], digest: Digest::default() },
    );
    assert_eq!(b.stats().malformed, 2);
    assert!(b.poll_transmit().is_none(), "no reply to a malformed Syn");
    // Entries of a topic B does not reconcile, and seq 0, are dropped.
    let foreign = Entry::unsealed(StreamId { topic: TopicId(8), origin: id(1) }, 1, Bytes::new());
    let zero = Entry { seq: 0, ..entry(1, 1) };
    // (A Delta must answer B's digest: open a Push exchange first.)
    b.handle_message(
        now,
        id(1),
        AeMessage::Syn { xid: 9, mode: AeMode::Push, scope: vec![T], digest: Digest::default() },
    );
    while b.poll_transmit().is_some() {}
    b.handle_message(now, id(1), AeMessage::Delta { xid: 9, delta: vec![foreign, zero], more: false });
    assert_eq!((b.stats().out_of_scope, b.stats().malformed), (1, 3));
    assert_eq!(b.store().len(), 1);
    assert!(events(&mut b).is_empty());
}

/// Issue 12, case 3. Before the fix every `Delta` was applied, whoever sent it and whatever it
/// answered: any member could push any entries into any node's store. Now a `Delta` is applied
/// only if it answers a digest this node sent that peer for that exchange, once, in time.
#[test]
fn a_delta_is_applied_only_if_it_answers_our_digest() {
    let cfg = config(AeMode::PushPull);
    let mut b = machine(2, &cfg, &[1]);
    let now = Instant::ZERO;
    let delta = |xid| AeMessage::Delta { xid, delta: vec![entry(1, 1)], more: false };
    b.handle_message(now, id(1), delta(5));
    assert_eq!((b.stats().unsolicited, b.store().len()), (1, 0));
    // A Pull asks for no Delta.
    b.handle_message(
        now,
        id(1),
        AeMessage::Syn { xid: 5, mode: AeMode::Pull, scope: vec![T], digest: Digest::default() },
    );
    b.handle_message(now, id(1), delta(5));
    assert_eq!((b.stats().unsolicited, b.store().len()), (2, 0));
    // A PushPull from 1 does: its Delta, from 1, with its xid, before the timeout, once.
    b.handle_message(
        now,
        id(1),
        AeMessage::Syn { xid: 6, mode: AeMode::PushPull, scope: vec![T], digest: Digest::default() },
    );
    b.handle_message(now, id(3), delta(6));
    b.handle_message(now, id(1), delta(7));
    assert_eq!((b.stats().unsolicited, b.store().len()), (4, 0));
    b.handle_message(now + Duration::from_secs(1), id(1), delta(6));
    assert_eq!((b.stats().unsolicited, b.store().len()), (4, 1));
    b.handle_message(
        now + Duration::from_secs(1),
        id(1),
        AeMessage::Delta { xid: 6, delta: vec![entry(1, 2)], more: false },
    );
    assert_eq!((b.stats().unsolicited, b.store().len()), (5, 1));
    // Too late.
    b.handle_message(
        now,
        id(1),
        AeMessage::Syn { xid: 8, mode: AeMode::Push, scope: vec![T], digest: Digest::default() },
    );
    b.handle_message(now + cfg.timeout + Duration::from_micros(1), id(1), delta(8));
    assert_eq!(b.stats().unsolicited, 6);
    // Awaited Deltas are bounded: one per peer, AWAITED_MAX in all.
    for p in 100..100 + 2 * AWAITED_MAX as u64 {
        b.handle_message(
            now,
            id(p),
            AeMessage::Syn { xid: 1, mode: AeMode::Push, scope: vec![T], digest: Digest::default() },
        );
    }
    assert!(b.awaited.len() <= AWAITED_MAX);
}

/// Issue 12, case 3. Before the fix the store kept 4,096 entries of any size for any number of
/// origins. Now the machine's store is capped in streams and bytes, refusals counted.
#[test]
fn entries_over_the_store_caps_are_refused_and_counted() {
    let cfg = Arc::new(AeConfig { streams_max: 2, ..(*config(AeMode::PushPull)).clone() });
    let mut b = machine(2, &cfg, &[1]);
    let now = Instant::ZERO;
    b.handle_message(
        now,
        id(1),
        AeMessage::Syn { xid: 1, mode: AeMode::Push, scope: vec![T], digest: Digest::default() },
    );
    let delta: Vec<Entry> = (1..=5).map(|o| entry(o, 1)).collect();
    b.handle_message(now, id(1), AeMessage::Delta { xid: 1, delta, more: false });
    assert_eq!(b.store().stream_count(), 2);
    assert_eq!(b.stats().refused_full, 3);
    assert!(b.state_bytes() < 4_096);
}

#[test]
fn responder_only_reconciles_the_topics_both_sides_hold() {
    let cfg = config(AeMode::PushPull);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[2]));
    let b = add(&mut net, machine(2, &cfg, &[1]));
    let other = TopicId(99);
    net[a].subscribe(Instant::ZERO, other);
    net[a].insert(Instant::ZERO, Entry::unsealed(StreamId { topic: other, origin: id(1) }, 1, Bytes::new()));
    net[a].insert(Instant::ZERO, entry(1, 1));
    net[a].start_exchange(Instant::ZERO, AeMode::PushPull, None).unwrap();
    let log = pump(&mut net);
    let AeMessage::SynAck { scope, .. } = &log[1].2 else { panic!() };
    assert_eq!(scope, &vec![T]);
    assert_eq!(net[b].stats().out_of_scope, 0, "A never sent the foreign topic");
    assert_eq!(net[b].store().len(), 1);
}

#[test]
fn partial_digests_rotate_and_do_not_trigger_full_resends() {
    let cfg = Arc::new(AeConfig { digest_streams_max: 2, ..(*config(AeMode::PushPull)).clone() });
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[2]));
    let b = add(&mut net, machine(2, &cfg, &[1]));
    for o in 1..=5 {
        net[a].insert(Instant::ZERO, entry(o, 1));
        net[b].insert(Instant::ZERO, entry(o, 1));
    }
    for round in 0..3u64 {
        let now = Instant::from_micros(round);
        net.run_until(now);
        net[a].start_exchange(now, AeMode::PushPull, None).unwrap();
        let log = pump(&mut net);
        // Both hold the same: no entry ever moves although each digest names only 2 of 5.
        assert_eq!(log.len(), 2, "round {round}: {log:?}");
    }
    assert_eq!(net[a].stats().entries_sent + net[b].stats().entries_sent, 0);
}

#[test]
fn same_seed_same_choices() {
    let cfg = config(AeMode::PushPull);
    let peers: Vec<u64> = (1..=50).collect();
    let run = || {
        let mut m = machine(1, &cfg, &peers);
        let mut targets = Vec::new();
        for r in 1..=20u64 {
            let now = Instant::from_micros(r * 1_000_000);
            m.handle_timeout(now);
            let t = m.poll_transmit().unwrap();
            targets.push(t.to);
            // Answer so the next tick is free.
            let AeMessage::Syn { xid, .. } = t.msg else { panic!() };
            m.handle_message(
                now,
                t.to,
                AeMessage::SynAck {
                    xid,
                    scope: vec![T],
                    digest: Digest::default(),
                    delta: vec![],
                    more: false,
                    proofs: vec![],
                },
            );
        }
        targets
    };
    let first = run();
    assert_eq!(first, run());
    assert!(!first.contains(&id(1)));
    let distinct: std::collections::BTreeSet<_> = first.iter().collect();
    assert!(distinct.len() > 10);
}
