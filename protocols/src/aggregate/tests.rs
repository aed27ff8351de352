//! Aggregation stepped by hand: a few machines, manual ticks, chosen seeds, and the
//! `testing::Net` harness (zero latency, FIFO, chosen messages dropped) where they talk.

use std::sync::Arc;

use super::*;
use crate::machine::Reliability;
use crate::testing::Net;
use crate::time::Duration;
use crate::timer::Timing;

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn config(f: impl FnOnce(&mut AggConfig)) -> Arc<AggConfig> {
    let mut c = AggConfig { manual_ticks: true, ..AggConfig::default() };
    f(&mut c);
    Arc::new(c)
}

/// Nodes 0..n, each seeing all of them, node i holding `values[i]` for "x" (if `Some`), on a
/// zero-latency network.
fn cluster(cfg: &Arc<AggConfig>, values: &[Option<f64>]) -> Net<Aggregation> {
    let view: PeerView = (0..values.len() as u64).map(id).collect();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let i = i as u64;
            let mut m = Aggregation::new(id(i), cfg.clone(), &Seed::derive(7, "node", 0, i), Instant::ZERO);
            m.handle_peers(Instant::ZERO, view.clone());
            if let Some(x) = v {
                m.set_value(Instant::ZERO, "x", *x).unwrap();
            }
            (id(i), m)
        })
        .collect()
}

/// (from, to, message) of a delivered or dropped message.
type Sent = (u64, u64, AggMessage);

/// Deliver queued transmits in FIFO order until nothing moves, losing those the net's drop
/// filter chooses (it is asked for each, in send order). Returns (delivered, dropped).
fn pump(net: &mut Net<Aggregation>) -> (Vec<Sent>, Vec<Sent>) {
    let mark = net.sent().len();
    net.pump();
    let (mut delivered, mut dropped) = (Vec::new(), Vec::new());
    for s in &net.sent()[mark..] {
        assert_eq!(s.reliability, Reliability::Datagram);
        let rec = (s.from.prefix_u64(), s.to.prefix_u64(), s.msg.clone());
        if s.delivered { delivered.push(rec) } else { dropped.push(rec) }
    }
    (delivered, dropped)
}

/// [`pump`], losing the messages `drop` chooses.
fn pump_dropping(
    net: &mut Net<Aggregation>,
    mut drop: impl FnMut(&AggMessage) -> bool + 'static,
) -> (Vec<Sent>, Vec<Sent>) {
    net.set_drop(move |_, _, m| drop(m));
    let out = pump(net);
    net.clear_drop();
    out
}

/// Every machine of the net.
fn all(net: &Net<Aggregation>) -> impl Iterator<Item = &Aggregation> {
    net.machines().map(|(_, m)| m)
}

fn start(m: &mut Aggregation, func: Func, algorithm: Algorithm) -> Query {
    m.start_query(Instant::ZERO, QuerySpec::new(func, "x").with_algorithm(algorithm)).unwrap()
}

/// Σ over nodes of (s + outstanding s, w + outstanding w).
fn total<'a>(nodes: impl IntoIterator<Item = &'a Aggregation>, qid: &QueryId) -> (f64, f64) {
    nodes
        .into_iter()
        .filter_map(|m| m.mass(qid))
        .fold((0.0, 0.0), |(s, w), v| (s + v.s + v.outstanding_s, w + v.w + v.outstanding_w))
}

#[test]
fn plain_push_sum_sends_half_and_the_receiver_joins_and_adds() {
    let mut n = cluster(&config(|_| {}), &[Some(4.0), Some(2.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::PushSum);
    assert!(
        matches!(&n.take_events_of(id(0))[..], [AggEvent::Announce(a), AggEvent::Joined { from: None, .. }] if *a == q)
    );
    n[id(0)].tick(Instant::ZERO);
    let (log, _) = pump(&mut n);
    assert_eq!(log.len(), 1, "plain push-sum sends no acknowledgement");
    let AggMessage::PsMass { s, w, seq, .. } = &log[0].2 else { panic!("{log:?}") };
    assert_eq!((*s, *w, *seq), (2.0, 0.5, 0));
    assert_eq!(n[id(0)].mass(&q.qid).map(|v| (v.s, v.w)), Some((2.0, 0.5)));
    assert_eq!(n[id(1)].mass(&q.qid).map(|v| (v.s, v.w)), Some((4.0, 1.5)));
    assert_eq!(n.take_events_of(id(1)), vec![AggEvent::Joined { qid: q.qid, from: Some(id(0)) }]);
    assert_eq!(total(all(&n), &q.qid), (6.0, 2.0));
}

#[test]
fn a_lost_plain_transfer_is_mass_lost_for_good() {
    let mut n = cluster(&config(|_| {}), &[Some(4.0), Some(2.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::PushSum);
    n[id(1)].handle_query(Instant::ZERO, q.clone()).unwrap();
    n[id(0)].tick(Instant::ZERO);
    let (_, dropped) = pump_dropping(&mut n, |_| true);
    assert_eq!(dropped.len(), 1);
    assert_eq!(total(all(&n), &q.qid), (4.0, 1.5));
}

#[test]
fn an_acknowledged_transfer_stays_outstanding_until_acked_then_is_applied_once() {
    let mut n = cluster(&config(|_| {}), &[Some(4.0), Some(2.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::AckPushSum);
    n[id(1)].handle_query(Instant::ZERO, q.clone()).unwrap();
    // Round 1: the transfer is lost. Its mass is outstanding, not gone.
    n[id(0)].tick(Instant::ZERO);
    let (_, dropped) = pump_dropping(&mut n, |_| true);
    let AggMessage::PsMass { seq: 1, floor: 1, s, w, .. } = dropped[0].2 else { panic!("{dropped:?}") };
    assert_eq!((s, w), (2.0, 0.5));
    let v = n[id(0)].mass(&q.qid).unwrap();
    assert_eq!((v.s, v.w, v.outstanding_s, v.outstanding_w, v.outstanding), (2.0, 0.5, 2.0, 0.5, 1));
    assert_eq!(total(all(&n), &q.qid), (6.0, 2.0));
    // Round 2: a new transfer (seq 2) and the retransmission of seq 1; both arrive, the ack of
    // seq 2 is lost.
    n[id(0)].tick(Instant::ZERO);
    let (log, dropped) = pump_dropping(&mut n, |m| matches!(m, AggMessage::PsAck { seq: 2, .. }));
    let kinds: Vec<(u64, u64)> = log
        .iter()
        .filter_map(|(_, _, m)| match m {
            AggMessage::PsMass { seq, floor, .. } => Some((*seq, *floor)),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec![(2, 1), (1, 1)], "new transfer first, then the retransmission");
    assert_eq!(dropped.len(), 1);
    assert_eq!(n[id(0)].mass(&q.qid).unwrap().outstanding, 1, "seq 2 still unacknowledged");
    assert_eq!(n[id(1)].stats().transfers_applied, 2);
    // Round 3: seq 2 is resent, recognised as a duplicate, acknowledged, not applied again.
    n[id(0)].tick(Instant::ZERO);
    pump(&mut n);
    assert_eq!(n[id(1)].stats().transfers_applied, 3, "round 3's own new transfer");
    assert_eq!(n[id(1)].stats().duplicates, 1);
    assert_eq!(n[id(0)].mass(&q.qid).unwrap().outstanding, 0);
    assert_eq!(n[id(0)].stats().retransmissions, 2);
    assert_eq!(total(all(&n), &q.qid), (6.0, 2.0));
}

#[test]
fn transfers_to_a_member_that_is_gone_are_reclaimed() {
    let mut n = cluster(&config(|_| {}), &[Some(4.0), Some(2.0)]);
    let q = start(&mut n[id(0)], Func::Sum, Algorithm::AckPushSum);
    for _ in 0..3 {
        n[id(0)].tick(Instant::ZERO);
        pump_dropping(&mut n, |_| true);
    }
    assert_eq!(n[id(0)].mass(&q.qid).unwrap().outstanding, 3);
    n[id(0)].handle_member_down(Instant::ZERO, id(1));
    let v = n[id(0)].mass(&q.qid).unwrap();
    assert_eq!((v.s, v.w, v.outstanding), (4.0, 1.0, 0));
    assert_eq!(n[id(0)].stats().reclaimed, 3);
    assert_eq!(n[id(0)].estimate(&q.qid), Some(4.0));
}

#[test]
fn the_window_caps_new_transfers_and_retransmissions_go_oldest_first() {
    let cfg = config(|c| {
        c.aps_window = 2;
        c.aps_retx_max = 1;
    });
    let mut n = cluster(&cfg, &[Some(1.0), Some(1.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::AckPushSum);
    let mut seqs = Vec::new();
    for _ in 0..4 {
        n[id(0)].tick(Instant::ZERO);
        let (_, dropped) = pump_dropping(&mut n, |_| true);
        seqs.push(
            dropped
                .iter()
                .filter_map(
                    |(_, _, m)| if let AggMessage::PsMass { seq, .. } = m { Some(*seq) } else { None },
                )
                .collect::<Vec<_>>(),
        );
    }
    // Round 1: seq 1. Round 2: seq 2, resend 1. Rounds 3, 4: window full; resend the one
    // least recently sent (ties: lower seq).
    assert_eq!(seqs, vec![vec![1], vec![2, 1], vec![1], vec![2]]);
    assert_eq!(n[id(0)].stats().window_full, 2);
    assert_eq!(total([&n[id(0)]], &q.qid), (1.0, 1.0));
}

#[test]
fn stale_and_foreign_acks_change_nothing() {
    let mut n = cluster(&config(|_| {}), &[Some(1.0), Some(1.0), Some(1.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::AckPushSum);
    n[id(0)].tick(Instant::ZERO);
    let t = n[id(0)].poll_transmit().unwrap();
    let AggMessage::PsMass { session, seq, .. } = t.msg else { panic!() };
    let other = if t.to == id(1) { id(2) } else { id(1) };
    let before = n[id(0)].mass(&q.qid).unwrap();
    n[id(0)].handle_message(Instant::ZERO, t.to, AggMessage::PsAck { qid: q.qid, session: session ^ 1, seq });
    n[id(0)].handle_message(Instant::ZERO, other, AggMessage::PsAck { qid: q.qid, session, seq });
    n[id(0)].handle_message(Instant::ZERO, t.to, AggMessage::PsAck { qid: q.qid, session, seq: seq + 1 });
    assert_eq!(n[id(0)].stats().stale_acks, 3);
    assert_eq!(n[id(0)].mass(&q.qid).unwrap(), before);
    n[id(0)].handle_message(Instant::ZERO, t.to, AggMessage::PsAck { qid: q.qid, session, seq });
    assert_eq!(n[id(0)].mass(&q.qid).unwrap().outstanding, 0);
}

#[test]
fn the_senders_floor_and_session_decide_what_is_a_duplicate() {
    let mut n = cluster(&config(|_| {}), &[Some(1.0), Some(1.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::AckPushSum);
    let mass =
        |session, floor, seq| AggMessage::PsMass { query: q.clone(), session, floor, seq, s: 1.0, w: 1.0 };
    let b = &mut n[id(1)];
    b.handle_message(Instant::ZERO, id(0), mass(9, 5, 5));
    // Seq 3 lies below the floor the sender announced: acknowledged long ago, so a duplicate.
    b.handle_message(Instant::ZERO, id(0), mass(9, 3, 3));
    assert_eq!((b.stats().transfers_applied, b.stats().duplicates), (1, 1));
    // The same seq from another life of the sender (it restarted) is new.
    b.handle_message(Instant::ZERO, id(0), mass(10, 5, 5));
    assert_eq!(b.stats().transfers_applied, 2);
    // A third life evicts the least recently used window: still two kept.
    b.handle_message(Instant::ZERO, id(0), mass(11, 1, 1));
    assert_eq!(b.dedup_windows(&q.qid), 2);
    let acks = std::iter::from_fn(|| b.poll_transmit()).filter(|t| matches!(t.msg, AggMessage::PsAck { .. }));
    assert_eq!(acks.count(), 4, "duplicates are acknowledged too");
    b.handle_member_down(Instant::ZERO, id(0));
    assert_eq!(b.dedup_windows(&q.qid), 0);
}

#[test]
fn extremum_push_and_reply_merge_both_sides() {
    let mut n = cluster(&config(|_| {}), &[Some(5.0), Some(3.0), None]);
    let q = start(&mut n[id(0)], Func::Min, Algorithm::Extremum);
    assert_eq!(n[id(0)].estimate(&q.qid), Some(5.0));
    n[id(2)].handle_query(Instant::ZERO, q.clone()).unwrap();
    assert_eq!(n[id(2)].estimate(&q.qid), None, "+∞: knows no value yet");
    for _ in 0..6 {
        for (_, m) in n.machines_mut() {
            m.tick(Instant::ZERO);
        }
        pump(&mut n);
    }
    for m in all(&n) {
        assert_eq!(m.estimate(&q.qid), Some(3.0));
    }
}

#[test]
fn push_pull_exchange_leaves_both_sides_at_the_mean() {
    let mut n = cluster(&config(|_| {}), &[Some(4.0), Some(2.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::PushPull);
    n[id(0)].tick(Instant::ZERO);
    let (log, _) = pump(&mut n);
    assert!(matches!(log[0].2, AggMessage::PpxRequest { s: 4.0, w: 1.0, .. }));
    assert!(matches!(log[1].2, AggMessage::PpxReply { s: 2.0, w: 1.0, .. }));
    assert_eq!(n[id(0)].estimate(&q.qid), Some(3.0));
    assert_eq!(n[id(1)].estimate(&q.qid), Some(3.0));
    assert_eq!(n[id(0)].stats().exchanges, 1);
    // A reply nobody asked for is dropped.
    n[id(1)].handle_message(Instant::ZERO, id(0), AggMessage::PpxReply { qid: q.qid, s: 100.0, w: 1.0 });
    assert_eq!(n[id(1)].stats().unexpected_replies, 1);
    assert_eq!(n[id(1)].estimate(&q.qid), Some(3.0));
}

#[test]
fn a_lost_push_pull_reply_breaks_mass_conservation() {
    let mut n = cluster(&config(|_| {}), &[Some(4.0), Some(2.0)]);
    let q = start(&mut n[id(0)], Func::Sum, Algorithm::PushPull);
    n[id(1)].handle_query(Instant::ZERO, q.clone()).unwrap();
    n[id(0)].tick(Instant::ZERO);
    // The second transmit (the reply) is lost.
    let mut k = 0;
    pump_dropping(&mut n, move |_| {
        k += 1;
        k == 2
    });
    assert_eq!(total(all(&n), &q.qid), (4.0 + 3.0, 1.0 + 0.5), "the passive side moved, the active did not");
    n[id(0)].tick(Instant::ZERO);
    assert_eq!(n[id(0)].stats().exchanges_lost, 1);
}

#[test]
fn malformed_messages_are_counted_and_change_nothing() {
    let mut n = cluster(&config(|_| {}), &[Some(4.0), Some(2.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::AckPushSum);
    let pp =
        Query { algorithm: Algorithm::PushPull, qid: QueryId { querier: id(0), counter: 99 }, ..q.clone() };
    let long = Query {
        attr: "a".repeat(ATTR_MAX_BYTES + 1),
        qid: QueryId { querier: id(0), counter: 98 },
        ..q.clone()
    };
    let bad_eps = Query { epsilon: f64::NAN, qid: QueryId { querier: id(0), counter: 97 }, ..q.clone() };
    let min_by_sum = Query { func: Func::Min, qid: QueryId { querier: id(0), counter: 96 }, ..q.clone() };
    let conflicting = Query { epsilon: 0.5, ..q.clone() };
    let ps = |query: &Query, floor, seq, s, w| AggMessage::PsMass {
        query: query.clone(),
        session: 1,
        floor,
        seq,
        s,
        w,
    };
    let bad = vec![
        ps(&q, 1, 1, f64::NAN, 1.0),
        ps(&q, 1, 1, 1.0, -1.0),
        ps(&q, 1, 1, f64::INFINITY, 1.0),
        ps(&q, 0, 0, 1.0, 1.0),  // acknowledged push-sum needs seq ≥ 1
        ps(&q, 3, 2, 1.0, 1.0),  // floor above seq
        ps(&pp, 1, 1, 1.0, 1.0), // push-sum mass for a push-pull query
        ps(&long, 1, 1, 1.0, 1.0),
        ps(&bad_eps, 1, 1, 1.0, 1.0),
        ps(&min_by_sum, 1, 1, 1.0, 1.0),
        AggMessage::ExtPush { query: q.clone(), m: 1.0 },
        AggMessage::PpxRequest { query: pp.clone(), s: 1.0, w: -0.5 },
        AggMessage::PpxRequest { query: q.clone(), s: 1.0, w: 1.0 },
        AggMessage::PpxReply { qid: q.qid, s: f64::NAN, w: 1.0 },
        AggMessage::ExtReply { qid: q.qid, m: 1.0 },
        AggMessage::PsMass { query: conflicting, session: 1, floor: 1, seq: 1, s: 1.0, w: 1.0 },
    ];
    let count = bad.len() as u64;
    n[id(1)].handle_query(Instant::ZERO, q.clone()).unwrap();
    n.take_events_of(id(1));
    let before = n[id(1)].mass(&q.qid);
    for msg in bad {
        n[id(1)].handle_message(Instant::ZERO, id(0), msg);
    }
    assert_eq!(n[id(1)].stats().malformed, count);
    assert_eq!(n[id(1)].mass(&q.qid), before);
    assert_eq!(n[id(1)].queries().count(), 1, "joined nothing");
    assert!(n.take_events_of(id(1)).is_empty());
    assert!(n[id(1)].poll_transmit().is_none(), "answered nothing");
    // Replies and acks naming unknown queries are counted separately.
    let unknown = QueryId { querier: id(5), counter: 1 };
    n[id(1)].handle_message(Instant::ZERO, id(0), AggMessage::PsAck { qid: unknown, session: 1, seq: 1 });
    assert_eq!(n[id(1)].stats().unknown_query, 1);
}

#[test]
fn the_querier_answers_once_its_estimate_is_stable_after_min_rounds() {
    // Alone: N_view = 1, min_rounds = ⌈log2 2⌉ + 2 = 3; the estimate never moves, and est_0
    // counts, so stable reaches 3 at round 3.
    let mut n = cluster(&config(|_| {}), &[Some(7.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::AckPushSum);
    n.take_events_of(id(0));
    let mut answers = Vec::new();
    for _ in 0..6 {
        n[id(0)].tick(Instant::ZERO);
        answers.extend(n.take_events_of(id(0)));
    }
    let expected = QueryResult {
        qid: q.qid,
        value: Some(7.0),
        rounds: 3,
        converged: true,
        epsilon: 1e-4,
        stable_rounds: 3,
        algorithm: Algorithm::AckPushSum,
    };
    assert_eq!(answers, vec![AggEvent::Answered(expected)]);
    assert_eq!(n[id(0)].stats().ticks_idle, 6);
}

#[test]
fn min_rounds_grows_with_the_view_and_silence_is_not_stability() {
    // 8 members: min_rounds = ⌈log2 9⌉ + 2 = 6. Every value is 1, so every estimate is 1 from
    // the start and Δ = 0 whenever anything arrives.
    let run = |drop_to_querier: bool| {
        let mut n = cluster(&config(|_| {}), &[Some(1.0); 8]);
        let q = start(&mut n[id(0)], Func::Avg, Algorithm::PushSum);
        for (_, m) in n.machines_mut().skip(1) {
            m.handle_query(Instant::ZERO, q.clone()).unwrap();
        }
        n.take_events_of(id(0));
        n.set_drop(move |_, _, m| drop_to_querier && matches!(m, AggMessage::PsMass { .. }));
        for _ in 1..=12 {
            for (_, m) in n.machines_mut() {
                m.tick(Instant::ZERO);
            }
            pump(&mut n);
            if let Some(AggEvent::Answered(res)) = n.take_events_of(id(0)).pop() {
                return Some(res);
            }
        }
        None
    };
    let heard = run(false).expect("answers");
    assert!(heard.rounds >= 6 && heard.converged && heard.value == Some(1.0), "{heard:?}");
    // A querier that hears nothing keeps its ratio, which looks stable but is not.
    assert_eq!(run(true), None);
}

#[test]
fn the_cap_answers_unconverged_and_an_undefined_estimate_is_null() {
    // avg where no node holds the attribute: w = 0 everywhere, the estimate is undefined.
    let mut n = cluster(&config(|_| {}), &[None, None]);
    let spec = QuerySpec { max_rounds: Some(5), ..QuerySpec::new(Func::Avg, "x") };
    let q = n[id(0)].start_query(Instant::ZERO, spec).unwrap();
    n.take_events_of(id(0));
    let mut answers = Vec::new();
    for _ in 0..7 {
        n[id(0)].tick(Instant::ZERO);
        pump(&mut n);
        answers.extend(n.take_events_of(id(0)));
    }
    let [AggEvent::Answered(r)] = &answers[..] else { panic!("{answers:?}") };
    assert_eq!((r.qid, r.value, r.rounds, r.converged), (q.qid, None, 5, false));
}

#[test]
fn extremum_answers_after_its_own_stable_count() {
    // Alone: ext_stable_rounds = ⌈log2 2⌉ + 1 = 2, min_rounds = 3.
    let mut n = cluster(&config(|_| {}), &[Some(-2.5)]);
    start(&mut n[id(0)], Func::Max, Algorithm::Extremum);
    n.take_events_of(id(0));
    let mut answers = Vec::new();
    for _ in 0..5 {
        n[id(0)].tick(Instant::ZERO);
        answers.extend(n.take_events_of(id(0)));
    }
    let [AggEvent::Answered(r)] = &answers[..] else { panic!("{answers:?}") };
    assert_eq!((r.value, r.rounds, r.converged), (Some(-2.5), 3, true));
}

#[test]
fn state_expires_after_the_ttl_and_an_ended_query_is_not_joined_again() {
    let cfg = config(|c| c.query_ttl_extra = 1);
    let mut n = cluster(&cfg, &[Some(1.0), Some(1.0)]);
    let spec = QuerySpec { max_rounds: Some(2), stable_rounds: Some(1), ..QuerySpec::new(Func::Avg, "x") };
    let q = n[id(0)].start_query(Instant::ZERO, spec).unwrap();
    n[id(1)].handle_query(Instant::ZERO, q.clone()).unwrap();
    n.take_events_of(id(1));
    for _ in 0..4 {
        n[id(1)].tick(Instant::ZERO);
        while n[id(1)].poll_transmit().is_some() {}
    }
    assert_eq!(n.take_events_of(id(1)), vec![AggEvent::Expired(q.qid)]);
    assert_eq!(n[id(1)].queries().count(), 0);
    let late = AggMessage::PsMass { query: q.clone(), session: 3, floor: 1, seq: 1, s: 1.0, w: 0.0 };
    n[id(1)].handle_message(Instant::ZERO, id(0), late);
    assert_eq!(n[id(1)].stats().ended_query, 1);
    assert_eq!(n[id(1)].handle_query(Instant::ZERO, q.clone()), Err(QueryError::Ended));
    // An explicit end does the same at the querier.
    n[id(0)].end(Instant::ZERO, q.qid);
    assert_eq!(n[id(0)].estimate(&q.qid), None);
    assert_eq!(n[id(0)].handle_query(Instant::ZERO, q), Err(QueryError::Ended));
}

#[test]
fn local_commands_refuse_bad_input() {
    let mut n = cluster(&config(|c| c.queries_max = 1), &[Some(1.0)]);
    assert!(matches!(n[id(0)].set_value(Instant::ZERO, "x", f64::NAN), Err(ValueError::NotFinite(_))));
    assert!(matches!(n[id(0)].set_value(Instant::ZERO, "x", f64::INFINITY), Err(ValueError::NotFinite(_))));
    assert_eq!(n[id(0)].set_value(Instant::ZERO, "", 1.0), Err(ValueError::BadAttr));
    let mismatch = QuerySpec::new(Func::Max, "x").with_algorithm(Algorithm::PushSum);
    assert!(matches!(
        n[id(0)].start_query(Instant::ZERO, mismatch),
        Err(QueryError::AlgorithmMismatch { .. })
    ));
    let eps = QuerySpec { epsilon: Some(0.0), ..QuerySpec::new(Func::Avg, "x") };
    assert_eq!(n[id(0)].start_query(Instant::ZERO, eps), Err(QueryError::BadEpsilon(0.0)));
    let q = n[id(0)].start_query(Instant::ZERO, QuerySpec::new(Func::Count, "x")).unwrap();
    assert_eq!(q.algorithm, Algorithm::AckPushSum, "the default for count");
    assert_eq!(q.qid.counter, 0);
    assert_eq!(
        n[id(0)].start_query(Instant::ZERO, QuerySpec::new(Func::Avg, "x")),
        Err(QueryError::TooManyQueries)
    );
    assert_eq!(n[id(0)].handle_query(Instant::ZERO, q.clone()), Ok(false));
    assert_eq!(n[id(0)].handle_query(Instant::ZERO, Query { epsilon: 0.5, ..q }), Err(QueryError::Conflict));
    assert!(AggConfig { aps_window: 0, ..AggConfig::default() }.validate().is_err());
    assert!(AggConfig { stable_rounds: 0, ..AggConfig::default() }.validate().is_err());
    assert_eq!(AggConfig::default().validate(), Ok(()));
}

#[test]
fn the_timer_runs_only_while_a_query_is_in_progress() {
    let cfg =
        Arc::new(AggConfig { timing: Timing::Sync, period: Duration::from_secs(1), ..AggConfig::default() });
    let mut n = cluster(&cfg, &[Some(1.0), Some(3.0)]);
    assert_eq!(n[id(0)].poll_timeout(), None);
    // Idle past several periods, then start: the first tick is the next multiple of T.
    let now = Instant::from_micros(3_500_000);
    let q = n[id(0)].start_query(now, QuerySpec::new(Func::Avg, "x")).unwrap();
    assert_eq!(n[id(0)].poll_timeout(), Some(Instant::from_micros(4_000_000)));
    n[id(0)].handle_timeout(Instant::from_micros(3_900_000));
    assert!(n[id(0)].poll_transmit().is_none(), "not due yet");
    n[id(0)].handle_timeout(Instant::from_micros(4_000_000));
    assert!(matches!(n[id(0)].poll_transmit().map(|t| t.msg), Some(AggMessage::PsMass { seq: 1, .. })));
    assert_eq!(n[id(0)].poll_timeout(), Some(Instant::from_micros(5_000_000)));
    n[id(0)].end(Instant::ZERO, q.qid);
    assert_eq!(n[id(0)].poll_timeout(), None);
}

#[test]
fn every_message_survives_the_wire() {
    let q = Query {
        qid: QueryId { querier: id(3), counter: 9 },
        func: Func::Sum,
        attr: "load".into(),
        algorithm: Algorithm::AckPushSum,
        epsilon: 1e-4,
        stable_rounds: 3,
        max_rounds: 200,
        scope: crate::tags::TagScope::default(),
    };
    let msgs = vec![
        AggMessage::PsMass { query: q.clone(), session: u64::MAX, floor: 4, seq: 7, s: -1.5, w: 0.25 },
        AggMessage::PsAck { qid: q.qid, session: 1, seq: 7 },
        AggMessage::ExtPush { query: q.clone(), m: f64::NEG_INFINITY },
        AggMessage::ExtReply { qid: q.qid, m: 2.0 },
        AggMessage::PpxRequest { query: q.clone(), s: 1.0, w: 0.5 },
        AggMessage::PpxReply { qid: q.qid, s: 3.0, w: 1.0 },
    ];
    for m in msgs {
        let bytes = crate::wire::encode(&m, crate::wire::DATAGRAM_BUDGET).unwrap();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(crate::wire::decode::<AggMessage>(&bytes, crate::wire::DATAGRAM_BUDGET).unwrap(), m);
    }
}

/// §5.3's invariant: Σ held + Σ outstanding transfers not yet applied at their receiver.
fn conserved(net: &Net<Aggregation>, qid: &QueryId) -> (f64, f64) {
    let (mut s, mut w) = (0.0, 0.0);
    for m in all(net) {
        let Some(v) = m.mass(qid) else { continue };
        s += v.s;
        w += v.w;
        for t in m.in_flight(qid) {
            if !net[t.peer].has_applied(qid, &m.id(), t.session, t.seq) {
                s += t.s;
                w += t.w;
            }
        }
    }
    (s, w)
}

#[test]
fn acknowledged_push_sum_conserves_mass_exactly_under_heavy_loss() {
    // 8 nodes, sum, 30% of all messages lost (both ways), 80 rounds: Σ(s, w) over nodes and
    // outstanding transfers never moves, and every estimate ends at the true sum.
    let values: Vec<Option<f64>> = (0..8).map(|i| Some(f64::from(i) * 1.25 - 3.0)).collect();
    let truth: f64 = values.iter().flatten().sum();
    let mut n = cluster(&config(|_| {}), &values);
    let q = start(&mut n[id(0)], Func::Sum, Algorithm::AckPushSum);
    for (_, m) in n.machines_mut().skip(1) {
        m.handle_query(Instant::ZERO, q.clone()).unwrap();
    }
    let mut loss = Rng::from_seed(Seed::derive(3, "loss", 0, 0));
    n.set_drop(move |_, _, _| loss.chance(0.3));
    let mut lost = 0;
    for _ in 0..80 {
        for (_, m) in n.machines_mut() {
            m.tick(Instant::ZERO);
        }
        let (_, dropped) = pump(&mut n);
        lost += dropped.len();
        let (s, w) = conserved(&n, &q.qid);
        assert!((s - truth).abs() < 1e-9 && (w - 1.0).abs() < 1e-12, "mass moved: ({s}, {w})");
    }
    assert!(lost > 200, "{lost} messages lost");
    for m in all(&n) {
        let e = m.estimate(&q.qid).unwrap();
        assert!((e - truth).abs() / truth.abs() < 1e-6, "{e} vs {truth}");
    }
    assert!(all(&n).map(|m| m.stats().duplicates).sum::<u64>() > 0, "lost acks caused duplicates");
}

/// A query of `querier` with counter `counter` and `max_rounds`.
fn remote_query(querier: u64, counter: u64, max_rounds: u32) -> Query {
    Query {
        qid: QueryId { querier: id(querier), counter },
        func: Func::Avg,
        attr: "x".into(),
        algorithm: Algorithm::AckPushSum,
        epsilon: 1e-4,
        stable_rounds: 3,
        max_rounds,
        scope: crate::tags::TagScope::default(),
    }
}

/// Issue 12, case 3. Before the fix 64 queries with `max_rounds = 10000` filled `queries_max`
/// for 10,050 rounds (33 minutes at 200 ms): the node could join no other query. Now a node
/// that is not the querier keeps a query at most `joined_rounds_max + query_ttl_extra` rounds.
#[test]
fn a_joined_query_expires_after_joined_rounds_max_whatever_its_max_rounds() {
    let cfg = config(|_| {});
    let mut n = cluster(&cfg, &[Some(1.0), Some(2.0)]);
    n[id(1)].handle_query(Instant::ZERO, remote_query(0, 0, MAX_ROUNDS_LIMIT)).unwrap();
    for _ in 0..(cfg.joined_rounds_max + cfg.query_ttl_extra) {
        n[id(1)].tick(Instant::ZERO);
    }
    assert_eq!(n[id(1)].queries().count(), 1);
    n[id(1)].tick(Instant::ZERO);
    assert_eq!(n[id(1)].queries().count(), 0);
    assert_eq!(n[id(1)].stats().expired, 1);
    // The querier itself keeps its own query for its max_rounds.
    let spec = QuerySpec { max_rounds: Some(MAX_ROUNDS_LIMIT), ..QuerySpec::new(Func::Avg, "x") };
    let q = n[id(0)].start_query(Instant::ZERO, spec).unwrap();
    for _ in 0..700 {
        n[id(0)].tick(Instant::ZERO);
    }
    assert!(n[id(0)].queries().any(|x| *x == q.qid));
}

/// Issue 12, case 3. Before the fix one querier could take all `queries_max` slots, and so
/// could made-up queriers. Now a node joins at most `queries_per_querier_max` queries of one
/// querier, and only of a querier in its peer view.
#[test]
fn one_querier_takes_at_most_its_share_and_strangers_none() {
    let cfg = config(|_| {});
    let mut n = cluster(&cfg, &[Some(1.0), Some(2.0), Some(3.0)]);
    let m = &mut n[id(1)];
    let joined = (0..64).filter(|&c| m.handle_query(Instant::ZERO, remote_query(0, c, 200)).is_ok()).count();
    assert_eq!(joined, cfg.queries_per_querier_max);
    assert!(m.handle_query(Instant::ZERO, remote_query(2, 0, 200)).is_ok(), "another querier still gets in");
    assert!(m.handle_query(Instant::ZERO, remote_query(77, 0, 200)).is_err(), "not a member");
    // Joining on a message follows the same rules.
    let msg =
        AggMessage::PsMass { query: remote_query(78, 0, 200), session: 1, floor: 1, seq: 1, s: 1.0, w: 1.0 };
    m.handle_message(Instant::ZERO, id(0), msg);
    assert_eq!(m.stats().refused_querier, (64 - cfg.queries_per_querier_max + 2) as u64);
    assert_eq!(m.queries().count(), cfg.queries_per_querier_max + 1);
}

/// Issue 15: a scoped query counts only the nodes whose tags match; the others relay mass
/// but hold none, so the querier (itself out of scope here) gets the exact mean of those in
/// scope, and their count.
#[test]
fn a_scoped_query_counts_only_the_members_whose_tags_match() {
    use crate::tags::{TagScope, Tags};
    let run = |func: Func| {
        let mut n = cluster(&config(|_| {}), &[Some(100.0), Some(1.0), Some(2.0), Some(50.0), Some(3.0)]);
        for (i, (_, m)) in n.machines_mut().enumerate() {
            let role = if [1, 2, 4].contains(&i) { "role=web" } else { "role=db" };
            m.set_tags(Instant::ZERO, Tags::parse(&[role]).unwrap());
        }
        let spec = QuerySpec { scope: TagScope::parse(&["role=we."]).unwrap(), ..QuerySpec::new(func, "x") };
        let q = n[id(0)].start_query(Instant::ZERO, spec).unwrap();
        for (_, m) in n.machines_mut().skip(1) {
            m.handle_query(Instant::ZERO, q.clone()).unwrap();
        }
        n.take_events_of(id(0));
        for _ in 0..200 {
            for (_, m) in n.machines_mut() {
                m.tick(Instant::ZERO);
            }
            pump(&mut n);
            if let Some(AggEvent::Answered(res)) = n.take_events_of(id(0)).pop() {
                return res;
            }
        }
        panic!("no answer");
    };
    let avg = run(Func::Avg);
    assert!((avg.value.unwrap() - 2.0).abs() < 1e-3, "{avg:?}");
    let count = run(Func::Count);
    assert!((count.value.unwrap() - 3.0).abs() < 1e-2, "{count:?}");
}

#[test]
fn a_query_whose_scope_is_beyond_bounds_is_refused_and_counted() {
    let mut n = cluster(&config(|_| {}), &[Some(1.0), Some(2.0)]);
    let q = start(&mut n[id(0)], Func::Avg, Algorithm::AckPushSum);
    // A forged scope can only come off the wire: decode one with a pattern that cannot compile.
    let scope: crate::tags::TagScope =
        postcard::from_bytes(&postcard::to_allocvec(&vec![("k".to_string(), "(".to_string())]).unwrap())
            .unwrap();
    let bad = Query { scope, qid: QueryId { querier: id(0), counter: 50 }, ..q };
    let before = n[id(1)].stats().malformed;
    n[id(1)].handle_message(
        Instant::ZERO,
        id(0),
        AggMessage::PsMass { query: bad, session: 1, floor: 0, seq: 0, s: 1.0, w: 1.0 },
    );
    assert_eq!(n[id(1)].stats().malformed, before + 1);
    assert_eq!(n[id(1)].queries().count(), 0);
}
