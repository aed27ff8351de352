//! Rumor mongering stepped by hand: a few machines, chosen times and seeds, and the
//! `testing::Net` harness (zero latency, FIFO) where they talk.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::id::StreamId;
use crate::machine::Reliability;
use crate::testing::Net;
use crate::time::Duration;
use crate::timer::Timing;
use crate::wire;

const T: u64 = 1_000_000;

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn at(cycle: u64) -> Instant {
    Instant::from_micros(cycle * T)
}

fn rid(seq: u64) -> RumorId {
    RumorId::Message { stream: StreamId { topic: TopicId(7), origin: id(100) }, seq }
}

fn config(variant: Variant, k: u32, direction: Direction, staging: Staging) -> Arc<RumorConfig> {
    Arc::new(RumorConfig {
        variant,
        k,
        direction,
        staging,
        period: Duration::from_micros(T),
        timing: Timing::Sync,
        ..RumorConfig::default()
    })
}

fn sync(variant: Variant, k: u32, direction: Direction) -> Arc<RumorConfig> {
    config(variant, k, direction, Staging::AtCycleStart)
}

fn machine(n: u64, cfg: &Arc<RumorConfig>, peers: &[u64]) -> RumorMonger {
    let mut m = RumorMonger::new(id(n), cfg.clone(), &Seed::derive(42, "node", 0, n), Instant::ZERO);
    m.handle_peers(Instant::ZERO, peers.iter().map(|&p| id(p)).collect());
    m
}

/// A log line: (from, to, message).
type Sent = (u64, u64, RumorMessage);

/// Put `m` in the net; its id.
fn add(net: &mut Net<RumorMonger>, m: RumorMonger) -> NodeId {
    let id = m.id();
    net.add(id, m);
    id
}

/// Tick every node at `now`, then deliver everything, FIFO; returns what was sent, in order.
fn cycle(net: &mut Net<RumorMonger>, now: Instant) -> Vec<Sent> {
    for (_, m) in net.machines() {
        // Idle push nodes ask for no timer; every other node ticks in step.
        if let Some(t) = m.poll_timeout() {
            assert_eq!(t, now, "sync ticks are aligned");
        }
    }
    let mark = net.sent().len();
    net.run_until(now);
    net.sent()[mark..].iter().map(|s| (s.from.prefix_u64(), s.to.prefix_u64(), s.msg.clone())).collect()
}

fn events(m: &mut RumorMonger) -> Vec<RumorEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// A feedback message in the log: (from, to, items).
type Answer = (u64, u64, Vec<(RumorId, bool)>);

fn feedback(log: &[Sent]) -> Vec<Answer> {
    log.iter()
        .filter_map(|(f, t, m)| match m {
            RumorMessage::Feedback { items } => Some((*f, *t, items.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn push_delivers_once_and_the_recipient_answers_with_feedback() {
    let cfg = sync(Variant::FeedbackCounter, 2, Direction::Push);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 2]));
    let b = add(&mut net, machine(2, &cfg, &[1, 2]));
    assert!(net[a].inject(Instant::ZERO, rid(1), Bytes::from_static(b"hi")));
    assert!(!net[a].inject(Instant::ZERO, rid(1), Bytes::new()), "already known");
    let log = cycle(&mut net, at(1));
    // B has nothing hot and sends nothing; A's only partner is B.
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        log[0],
        (
            1,
            2,
            RumorMessage::Rumors {
                items: vec![Rumor { id: rid(1), payload: Bytes::from_static(b"hi") }],
                pull: false,
                want_feedback: true
            }
        )
    );
    assert_eq!(feedback(&log), vec![(2, 1, vec![(rid(1), false)])]);
    assert_eq!(
        net.take_events_of(b),
        vec![RumorEvent::Delivered { id: rid(1), payload: Bytes::from_static(b"hi"), from: id(1) }]
    );
    assert!(net.take_events_of(a).is_empty(), "no delivery for an injected rumor");
    assert_eq!(net[b].state(&rid(1)), Some(RumorState::Staged));
    assert_eq!(net[a].stats().necessary, 1);
    assert_eq!(net[a].stats().rumors_sent, 1);
}

#[test]
fn feedback_counter_resets_on_a_useful_cycle_and_removes_after_k_useless_ones() {
    // A and B both hot; C susceptible. A's pushes: cycle 1 useless (to B), cycle 2 useful
    // (to C) resets the counter, then two useless cycles remove it (k = 2).
    let cfg = sync(Variant::FeedbackCounter, 2, Direction::Push);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 2, 3]));
    let b = add(&mut net, machine(2, &cfg, &[1, 2, 3]));
    add(&mut net, machine(3, &cfg, &[1, 2, 3]));
    net[a].inject(Instant::ZERO, rid(1), Bytes::new());
    net[b].inject(Instant::ZERO, rid(1), Bytes::new());
    let mut counters = Vec::new();
    let mut removed_at = None;
    for r in 1..=12 {
        cycle(&mut net, at(r));
        counters.push(net[a].state(&rid(1)));
        if removed_at.is_none() && net[a].state(&rid(1)) == Some(RumorState::Removed) {
            removed_at = Some(r);
        }
    }
    // The rule is applied at the tick after each cycle: a counter never exceeds k − 1 while
    // hot, drops back to 0 after a useful cycle, and the rumor ends removed.
    assert!(counters.iter().all(|s| !matches!(s, Some(RumorState::Hot { counter }) if *counter >= 2)));
    assert!(removed_at.is_some(), "{counters:?}");
    assert_eq!(net[a].active(), 0);
    assert!(net.take_events_of(a).contains(&RumorEvent::Removed { id: rid(1) }));
    // Every removal needed k consecutive useless cycles: with 3 nodes A's necessary pushes
    // can only be the few to C before C knew.
    assert!(net[a].stats().unnecessary >= 2);
}

#[test]
fn counter_reset_is_visible_cycle_by_cycle() {
    // Two nodes, A hot, B hot: every push is unnecessary, so A is removed at the tick that
    // closes its k-th cycle, exactly.
    for k in 1..=4u32 {
        let cfg = sync(Variant::FeedbackCounter, k, Direction::Push);
        let mut net = Net::new();
        let a = add(&mut net, machine(1, &cfg, &[1, 2]));
        let b = add(&mut net, machine(2, &cfg, &[1, 2]));
        net[a].inject(Instant::ZERO, rid(1), Bytes::new());
        net[b].inject(Instant::ZERO, rid(1), Bytes::new());
        for r in 1..=u64::from(k) {
            cycle(&mut net, at(r));
            assert_eq!(net[a].state(&rid(1)), Some(RumorState::Hot { counter: r as u32 - 1 }), "k {k} r {r}");
        }
        cycle(&mut net, at(u64::from(k) + 1));
        assert_eq!(net[a].state(&rid(1)), Some(RumorState::Removed), "k {k}");
    }
}

#[test]
fn staging_judges_state_at_the_start_of_the_cycle() {
    // A and B are hot and both push to C in cycle 1: both pushes are necessary, because C
    // did not know the rumor at the start of the cycle. C does not pass it on to a puller in
    // the same cycle.
    let cfg = sync(Variant::FeedbackCounter, 1, Direction::Push);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 3]));
    let b = add(&mut net, machine(2, &cfg, &[2, 3]));
    let c = add(&mut net, machine(3, &cfg, &[1, 2, 3]));
    net[a].inject(Instant::ZERO, rid(1), Bytes::new());
    net[b].inject(Instant::ZERO, rid(1), Bytes::new());
    let log = cycle(&mut net, at(1));
    let fb = feedback(&log);
    assert_eq!(fb, vec![(3, 1, vec![(rid(1), false)]), (3, 2, vec![(rid(1), false)])]);
    assert_eq!(net.take_events_of(c).len(), 1, "delivered once");
    // A pull to C in the same cycle gets nothing: the rumor is staged.
    net[c].handle_message(at(1), id(9), RumorMessage::Pull);
    assert!(net[c].poll_transmit().is_none());
    // The continuous reading judges on receipt: the second push is unnecessary.
    let cfg = config(Variant::FeedbackCounter, 1, Direction::Push, Staging::Immediate);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 3]));
    let b = add(&mut net, machine(2, &cfg, &[2, 3]));
    add(&mut net, machine(3, &cfg, &[1, 2, 3]));
    net[a].inject(Instant::ZERO, rid(1), Bytes::new());
    net[b].inject(Instant::ZERO, rid(1), Bytes::new());
    let log = cycle(&mut net, at(1));
    let knew: Vec<bool> = feedback(&log).iter().filter(|f| f.0 == 3).map(|f| f.2[0].1).collect();
    assert_eq!(knew, vec![false, true]);
    // ... and with k = 1 the sender of the useless push loses interest on the spot.
    assert_eq!(net[b].state(&rid(1)), Some(RumorState::Removed));
    assert_eq!(net[a].state(&rid(1)), Some(RumorState::Hot { counter: 0 }));
}

#[test]
fn pull_serves_hot_rumors_and_the_puller_gives_feedback() {
    let cfg = sync(Variant::FeedbackCounter, 1, Direction::Pull);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 2]));
    let b = add(&mut net, machine(2, &cfg, &[1, 2]));
    net[a].inject(Instant::ZERO, rid(5), Bytes::from_static(b"x"));
    let log = cycle(&mut net, at(1));
    // Both pull; only A has something to serve.
    let kinds: Vec<(u64, u64, &str)> = log
        .iter()
        .map(|(f, t, m)| {
            let k = match m {
                RumorMessage::Pull => "pull",
                RumorMessage::Rumors { .. } => "rumors",
                RumorMessage::Feedback { .. } => "feedback",
            };
            (*f, *t, k)
        })
        .collect();
    assert_eq!(kinds, vec![(1, 2, "pull"), (2, 1, "pull"), (1, 2, "rumors"), (2, 1, "feedback")]);
    assert!(net[b].knows(&rid(5)));
    // Cycle 2: B's pull is served again by A (useless now), which removes A's interest (k = 1)
    // at the tick of cycle 3.
    cycle(&mut net, at(2));
    assert_eq!(net[a].stats().unnecessary, 1);
    cycle(&mut net, at(3));
    assert_eq!(net[a].state(&rid(5)), Some(RumorState::Removed));
}

#[test]
fn push_pull_moves_rumors_both_ways_in_one_exchange() {
    let cfg = sync(Variant::FeedbackCounter, 3, Direction::PushPull);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 2]));
    let b = add(&mut net, machine(2, &cfg, &[1, 2]));
    net[a].inject(Instant::ZERO, rid(1), Bytes::new());
    net[b].inject(Instant::ZERO, rid(2), Bytes::new());
    let log = cycle(&mut net, at(1));
    assert!(net[a].knows(&rid(2)) && net[b].knows(&rid(1)));
    // Each side's first message asks for the other's rumors; answers do not ask again.
    let asks = log.iter().filter(|(_, _, m)| matches!(m, RumorMessage::Rumors { pull: true, .. })).count();
    assert_eq!(asks, 2);
    // Traffic counts rumor items only: A and B each sent theirs twice (push + answer).
    assert_eq!(net[a].stats().rumors_sent + net[b].stats().rumors_sent, 4);
}

#[test]
fn blind_counter_counts_every_cycle_with_a_transmission() {
    let cfg = sync(Variant::BlindCounter, 3, Direction::Push);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 2]));
    add(&mut net, machine(2, &cfg, &[1, 2]));
    net[a].inject(Instant::ZERO, rid(1), Bytes::new());
    let log = cycle(&mut net, at(1));
    assert!(feedback(&log).is_empty(), "blind variants ask for no feedback");
    assert!(matches!(log[0].2, RumorMessage::Rumors { want_feedback: false, .. }));
    // The first push was useful, yet it counts: removed at the tick closing cycle 3.
    cycle(&mut net, at(2));
    cycle(&mut net, at(3));
    assert_eq!(net[a].state(&rid(1)), Some(RumorState::Hot { counter: 2 }));
    cycle(&mut net, at(4));
    assert_eq!(net[a].state(&rid(1)), Some(RumorState::Removed));
}

#[test]
fn coins_with_k_1_always_drop_and_large_k_rarely() {
    // Blind coin, k = 1: removed after its first cycle. Immediate: right after the send.
    for staging in [Staging::AtCycleStart, Staging::Immediate] {
        let cfg = config(Variant::BlindCoin, 1, Direction::Push, staging);
        let mut net = Net::new();
        let a = add(&mut net, machine(1, &cfg, &[1, 2]));
        add(&mut net, machine(2, &cfg, &[1, 2]));
        net[a].inject(Instant::ZERO, rid(1), Bytes::new());
        cycle(&mut net, at(1));
        let expect =
            if staging == Staging::Immediate { RumorState::Removed } else { RumorState::Hot { counter: 0 } };
        assert_eq!(net[a].state(&rid(1)), Some(expect), "{staging:?}");
        cycle(&mut net, at(2));
        assert_eq!(net[a].state(&rid(1)), Some(RumorState::Removed), "{staging:?}");
    }
    // Feedback coin, k = 1000: ten useless cycles each almost surely leave both hot.
    let cfg = sync(Variant::FeedbackCoin, 1000, Direction::Push);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 2]));
    let b = add(&mut net, machine(2, &cfg, &[1, 2]));
    net[a].inject(Instant::ZERO, rid(1), Bytes::new());
    net[b].inject(Instant::ZERO, rid(1), Bytes::new());
    for r in 1..=10 {
        cycle(&mut net, at(r));
    }
    assert_eq!((net[a].stats().unnecessary, net[b].stats().unnecessary), (10, 10));
    assert_eq!(net[a].active() + net[b].active(), 2);
}

#[test]
fn feedback_coin_tosses_only_after_useless_cycles() {
    // k = 1: the first useless cycle removes for sure; a useful one never does.
    let cfg = sync(Variant::FeedbackCoin, 1, Direction::Push);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 2]));
    add(&mut net, machine(2, &cfg, &[1, 2]));
    net[a].inject(Instant::ZERO, rid(1), Bytes::new());
    cycle(&mut net, at(1)); // useful
    cycle(&mut net, at(2)); // A: rule for cycle 1 (useful: stays), pushes again (useless)
    assert_eq!(net[a].state(&rid(1)), Some(RumorState::Hot { counter: 0 }));
    cycle(&mut net, at(3));
    assert_eq!(net[a].state(&rid(1)), Some(RumorState::Removed));
}

#[test]
fn unsolicited_and_malformed_input_is_counted_and_changes_nothing() {
    let cfg = sync(Variant::FeedbackCounter, 1, Direction::Push);
    let mut a = machine(1, &cfg, &[1, 2]);
    a.inject(Instant::ZERO, rid(1), Bytes::new());
    // Feedback for a rumor A never sent to node 2 (and for one it does not know at all).
    a.handle_message(at(0), id(2), RumorMessage::Feedback { items: vec![(rid(1), true), (rid(9), true)] });
    assert_eq!(a.stats().unsolicited_feedback, 2);
    a.handle_timeout(at(1));
    assert_eq!(a.state(&rid(1)), Some(RumorState::Hot { counter: 0 }));
    let push = a.poll_transmit().expect("A pushes");
    assert_eq!(push.to, id(2));
    // Feedback from the wrong peer does not count either.
    a.handle_message(at(1), id(3), RumorMessage::Feedback { items: vec![(rid(1), true)] });
    assert_eq!(a.stats().unsolicited_feedback, 3);
    // Items out of order or repeated: the whole message is dropped.
    let mut b = machine(2, &cfg, &[1, 2]);
    let item = |s| Rumor { id: rid(s), payload: Bytes::new() };
    for items in [vec![item(2), item(1)], vec![item(1), item(1)]] {
        b.handle_message(at(1), id(1), RumorMessage::Rumors { items, pull: true, want_feedback: true });
    }
    a.handle_message(at(1), id(2), RumorMessage::Feedback { items: vec![(rid(1), true), (rid(1), true)] });
    assert_eq!(b.stats().malformed, 2);
    assert_eq!(a.stats().malformed, 1);
    assert!(!b.knows(&rid(1)) && b.poll_transmit().is_none() && events(&mut b).is_empty());
    assert_eq!(a.state(&rid(1)), Some(RumorState::Hot { counter: 0 }));
    // The real answer still counts.
    a.handle_message(at(1), id(2), RumorMessage::Feedback { items: vec![(rid(1), true)] });
    assert_eq!(a.stats().unnecessary, 1);
}

#[test]
fn feedback_still_awaited_when_the_cycle_closes_expires() {
    let cfg = sync(Variant::FeedbackCounter, 1, Direction::Push);
    let mut a = machine(1, &cfg, &[1, 2]);
    a.inject(Instant::ZERO, rid(1), Bytes::new());
    a.handle_timeout(at(1));
    assert!(a.poll_transmit().is_some());
    a.handle_timeout(at(2)); // the cycle closes with no answer: counter unchanged
    assert_eq!(a.state(&rid(1)), Some(RumorState::Hot { counter: 0 }));
    assert_eq!(a.stats().feedback_expired, 1);
    a.handle_message(at(2), id(2), RumorMessage::Feedback { items: vec![(rid(1), true)] });
    // That answer belongs to cycle 1's push, which no longer waits: it is unsolicited. Only
    // the answer for cycle 2's push counts.
    assert_eq!(a.stats().unsolicited_feedback, 0, "cycle 2's push is awaited from the same peer");
    assert_eq!(a.stats().unnecessary, 1);
}

#[test]
fn big_rumors_are_split_into_datagrams_within_the_budget() {
    let cfg = sync(Variant::FeedbackCounter, 3, Direction::PushPull);
    let mut a = machine(1, &cfg, &[1, 2]);
    for s in 1..=10 {
        a.inject(Instant::ZERO, rid(s), Bytes::from(vec![s as u8; 300]));
    }
    a.inject(Instant::ZERO, rid(11), Bytes::from(vec![0u8; 5_000]));
    a.handle_timeout(at(1));
    let out: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
    let mut seen = Vec::new();
    let mut asks = 0;
    for t in &out {
        let RumorMessage::Rumors { items, pull, .. } = &t.msg else { panic!() };
        asks += usize::from(*pull);
        seen.extend(items.iter().map(|r| r.id));
        let len = wire::encode(&t.msg, usize::MAX).unwrap().len();
        match t.reliability {
            Reliability::Datagram => assert!(len <= wire::DATAGRAM_BUDGET, "{len}"),
            Reliability::Stream => assert_eq!(items.len(), 1, "an oversized rumor travels alone"),
        }
    }
    assert_eq!(asks, 1, "one exchange, one request");
    assert!(out.len() >= 4, "{} messages", out.len());
    seen.sort();
    assert_eq!(seen, (1..=11).map(rid).collect::<Vec<_>>());
    assert_eq!(a.stats().streamed, 1);
    assert_eq!(a.stats().rumors_sent, 11);
}

#[test]
fn rumors_of_topics_outside_the_scope_are_acknowledged_but_not_kept() {
    let cfg = sync(Variant::FeedbackCounter, 3, Direction::Push);
    let mut b = machine(2, &cfg, &[1, 2]);
    b.set_scope(Instant::ZERO, Some(vec![TopicId(8)]));
    let query = RumorId::Query { querier: id(5), counter: 1 };
    let items = vec![Rumor { id: rid(1), payload: Bytes::new() }, Rumor { id: query, payload: Bytes::new() }];
    b.handle_message(at(0), id(1), RumorMessage::Rumors { items, pull: false, want_feedback: true });
    assert!(!b.knows(&rid(1)) && b.knows(&query));
    let fb = b.poll_transmit().unwrap();
    assert_eq!(fb.msg, RumorMessage::Feedback { items: vec![(rid(1), true), (query, false)] });
    assert_eq!(b.stats().out_of_scope, 1);
}

#[test]
fn removed_rumors_are_forgotten_after_the_retention_and_bounds_hold() {
    let cfg = Arc::new(RumorConfig {
        known_retention: 3,
        hot_max: 2,
        known_max: 3,
        ..(*sync(Variant::BlindCoin, 1, Direction::Push)).clone()
    });
    let mut a = machine(1, &cfg, &[1, 2]);
    a.inject(Instant::ZERO, rid(1), Bytes::new());
    a.handle_timeout(at(1)); // pushes
    a.handle_timeout(at(2)); // removed (blind coin, k = 1) at tick 2
    assert_eq!(a.state(&rid(1)), Some(RumorState::Removed));
    a.handle_timeout(at(3));
    a.handle_timeout(at(4));
    assert!(a.knows(&rid(1)));
    a.handle_timeout(at(5)); // three ticks after its removal: forgotten
    assert!(!a.knows(&rid(1)));
    // hot_max = 2: a third new rumor from a peer is dropped, without feedback.
    let items = (1..=3).map(|s| Rumor { id: rid(s), payload: Bytes::new() }).collect();
    while a.poll_transmit().is_some() {}
    a.handle_message(at(5), id(2), RumorMessage::Rumors { items, pull: false, want_feedback: true });
    assert_eq!(a.stats().overflow, 1);
    assert!(!a.knows(&rid(3)));
    let Some(Transmit { msg: RumorMessage::Feedback { items }, .. }) = a.poll_transmit() else { panic!() };
    assert_eq!(items.len(), 2);
}

#[test]
fn config_validation() {
    assert_eq!(RumorConfig::default().validate(), Ok(()));
    for (cfg, name) in [
        (RumorConfig { k: 0, ..RumorConfig::default() }, "k"),
        (RumorConfig { fanout: 0, ..RumorConfig::default() }, "fanout"),
        (RumorConfig { period: Duration::ZERO, ..RumorConfig::default() }, "period"),
    ] {
        assert_eq!(cfg.validate(), Err(ConfigError::Zero(name)));
    }
    let bad = RumorConfig { hot_max: 10, known_max: 5, ..RumorConfig::default() };
    assert_eq!(bad.validate(), Err(ConfigError::HotAboveKnown));
}

#[test]
fn messages_round_trip_through_the_envelope() {
    let msgs = [
        RumorMessage::Rumors {
            items: vec![Rumor { id: rid(3), payload: Bytes::from_static(b"abc") }],
            pull: true,
            want_feedback: false,
        },
        RumorMessage::Pull,
        RumorMessage::Feedback { items: vec![(RumorId::Query { querier: id(4), counter: 9 }, true)] },
    ];
    for m in msgs {
        let bytes = wire::encode(&m, wire::DATAGRAM_BUDGET).unwrap();
        assert_eq!(wire::decode::<RumorMessage>(&bytes, wire::DATAGRAM_BUDGET).unwrap(), m);
    }
}

#[test]
fn fanout_picks_distinct_partners_and_same_seed_same_choices() {
    let cfg =
        Arc::new(RumorConfig { fanout: 3, ..(*sync(Variant::BlindCounter, 100, Direction::Push)).clone() });
    let peers: Vec<u64> = (1..=20).collect();
    let run = || {
        let mut m = machine(1, &cfg, &peers);
        m.inject(Instant::ZERO, rid(1), Bytes::new());
        let mut picks = Vec::new();
        for r in 1..=10 {
            m.handle_timeout(at(r));
            let to: Vec<u64> = std::iter::from_fn(|| m.poll_transmit()).map(|t| t.to.prefix_u64()).collect();
            assert_eq!(to.len(), 3);
            let mut d = to.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3, "distinct partners");
            assert!(!to.contains(&1), "never self");
            picks.push(to);
        }
        picks
    };
    assert_eq!(run(), run());
}

#[test]
fn poisson_timing_ticks_at_exponential_gaps() {
    let cfg = Arc::new(RumorConfig {
        timing: Timing::Poisson,
        ..(*config(Variant::FeedbackCoin, 2, Direction::Pull, Staging::Immediate)).clone()
    });
    let mut m = machine(1, &cfg, &[1, 2]);
    let mut last = Instant::ZERO;
    let mut gaps = Vec::new();
    for _ in 0..2_000 {
        let next = m.poll_timeout().unwrap();
        gaps.push((next - last).as_micros() as f64);
        last = next;
        m.handle_timeout(next);
    }
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!((mean - T as f64).abs() < 0.08 * T as f64, "{mean}");
    let distinct: std::collections::BTreeSet<u64> = gaps.iter().map(|g| *g as u64).collect();
    assert!(distinct.len() > 1_900, "gaps vary");
}

#[test]
fn an_idle_push_node_sleeps_and_wakes_at_the_next_boundary() {
    let cfg = sync(Variant::FeedbackCounter, 1, Direction::Push);
    let mut net = Net::new();
    let a = add(&mut net, machine(1, &cfg, &[1, 2]));
    let b = add(&mut net, machine(2, &cfg, &[1, 2]));
    assert_eq!(net[b].poll_timeout(), None, "nothing to spread, no timer");
    net[a].inject(at(0), rid(1), Bytes::new());
    assert_eq!(net[a].poll_timeout(), Some(at(1)));
    // B learns the rumor during cycle 1 (at the instant of its boundary): its timer restarts
    // at the next boundary, not at the one just past, so the staged rumor waits a cycle.
    cycle(&mut net, at(1));
    assert_eq!(net[b].poll_timeout(), Some(at(2)));
    assert_eq!(net[b].state(&rid(1)), Some(RumorState::Staged));
    // A pull-mode node always ticks: it must ask others.
    let pull = sync(Variant::FeedbackCounter, 1, Direction::Pull);
    assert_eq!(machine(3, &pull, &[1, 3]).poll_timeout(), Some(at(1)));
    // After its removal (k = 1: the tick closing a useless cycle) A sleeps again.
    for r in 2..=6 {
        cycle(&mut net, at(r));
    }
    assert_eq!((net[a].poll_timeout(), net[b].poll_timeout()), (None, None));
    assert_eq!((net[a].active(), net[b].active()), (0, 0));
}

fn query(querier: u64, counter: u64) -> RumorId {
    RumorId::Query { querier: id(querier), counter }
}

fn push(m: &mut RumorMonger, from: u64, items: Vec<Rumor>) {
    m.handle_message(at(0), id(from), RumorMessage::Rumors { items, pull: false, want_feedback: true });
}

/// Issue 12, case 3. Before the fix a query rumor (or any rumor) was kept hot with a payload of
/// any size, up to the frame limit: 1,024 hot slots of 2 MiB each. Now a payload over
/// `payload_max` is dropped unanswered, and hot payloads are capped in bytes.
#[test]
fn oversized_payloads_are_dropped_and_hot_bytes_are_capped() {
    let cfg = Arc::new(RumorConfig {
        payload_max: 1_000,
        hot_bytes_max: 2_500,
        ..(*sync(Variant::FeedbackCounter, 3, Direction::Push)).clone()
    });
    let mut m = machine(1, &cfg, &[2]);
    push(&mut m, 2, vec![Rumor { id: rid(1), payload: Bytes::from(vec![0; 1_001]) }]);
    assert_eq!((m.stats().oversized, m.knows(&rid(1))), (1, false));
    let items = (2..=5).map(|q| Rumor { id: rid(q), payload: Bytes::from(vec![0; 1_000]) }).collect();
    push(&mut m, 2, items);
    assert_eq!(m.active(), 2, "two of 1,000 bytes fit in 2,500");
    assert_eq!(m.stats().overflow, 2);
    assert!(m.state_bytes() < 2_500 + 4 * 96 + 4_096);
}

/// Issue 12, case 3. Before the fix one querier (or one stream origin) could take all 1,024
/// hot slots: 64 bogus queries crowded out every real announcement. Now each origin holds at
/// most `hot_per_origin_max` of them (the Engine's query announcements: 4).
#[test]
fn one_origin_takes_at_most_its_share_of_the_hot_slots() {
    let cfg = Arc::new(RumorConfig {
        hot_per_origin_max: 4,
        ..(*sync(Variant::FeedbackCounter, 3, Direction::Push)).clone()
    });
    let mut m = machine(1, &cfg, &[2]);
    push(&mut m, 2, (0..64).map(|c| Rumor { id: query(9, c), payload: Bytes::from_static(b"q") }).collect());
    assert_eq!(m.active(), 4);
    assert_eq!(m.stats().overflow, 60);
    push(&mut m, 2, vec![Rumor { id: query(8, 0), payload: Bytes::from_static(b"q") }]);
    assert!(m.knows(&query(8, 0)), "another querier still gets a slot");
}
