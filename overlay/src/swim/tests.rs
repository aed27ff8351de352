//! SWIM stepped by hand: a few machines on the `testing::Net` harness (zero latency, cut links
//! as a drop filter, crashed nodes silenced), chosen times and seeds.

use std::collections::BTreeSet;
use std::sync::Arc;

use hearsay_protocols::auth::Unchecked;
use hearsay_protocols::testing::Net;
use hearsay_protocols::{Reliability, TopicId, wire};

use super::*;

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn ms(t: u64) -> Instant {
    Instant::from_micros(t * 1_000)
}

fn config(lifeguard: Lifeguard) -> Arc<SwimConfig> {
    Arc::new(SwimConfig { timing: Timing::Sync, lifeguard, ..SwimConfig::lan() })
}

fn seed(n: u64) -> Seed {
    Seed::derive(7, "node", 0, n)
}

/// The simulator's authenticator for node `n`.
fn auth(n: u64) -> Arc<dyn Authenticator> {
    Arc::new(Unchecked(id(n)))
}

/// Node `n` with a converged table of `all` (Alive, incarnation 0).
fn node(n: u64, all: &[u64], cfg: &Arc<SwimConfig>) -> Swim {
    let others: Vec<(NodeId, SharedProfile)> =
        all.iter().map(|&k| (id(k), SharedProfile::default())).collect();
    Swim::with_members(auth(n), Profile::default(), cfg.clone(), &seed(n), Instant::ZERO, &others)
}

fn gossip(m: &mut Swim, now: Instant, from: u64, updates: Vec<Update>) {
    m.handle_message(now, id(from), SwimMessage::Gossip { updates });
}

/// Node `n`'s own `Alive`, signed.
fn alive(n: u64, inc: u64) -> Update {
    Update::signed_alive(&Unchecked(id(n)), inc, SharedProfile::default())
}

/// Node `n`'s `Alive` with `profile`, signed.
fn alive_with(n: u64, inc: u64, profile: SharedProfile) -> Update {
    Update::signed_alive(&Unchecked(id(n)), inc, profile)
}

fn suspect(n: u64, inc: u64, from: u64) -> Update {
    Update::Suspect { node: id(n), incarnation: inc, from: id(from) }
}

fn dead(n: u64, inc: u64, from: u64) -> Update {
    Update::Dead { node: id(n), incarnation: inc, from: id(from) }
}

fn state(m: &Swim, n: u64) -> Option<(State, u64)> {
    m.member(&id(n)).map(|e| (e.state, e.incarnation))
}

fn drain(m: &mut Swim) -> (Vec<Transmit<SwimMessage>>, Vec<SwimEvent>) {
    (std::iter::from_fn(|| m.poll_transmit()).collect(), std::iter::from_fn(|| m.poll_event()).collect())
}

/// Nodes `ids`, each with a converged table of all of them, on a zero-latency network.
fn cluster(ids: &[u64], cfg: &Arc<SwimConfig>) -> Net<Swim> {
    net_of(ids.iter().map(|&n| node(n, ids, cfg)).collect())
}

fn net_of(nodes: Vec<Swim>) -> Net<Swim> {
    nodes.into_iter().map(|m| (m.id(), m)).collect()
}

/// Lose every message from `from` to `to` (directed links).
fn cut(net: &mut Net<Swim>, links: Vec<(u64, u64)>) {
    net.set_drop(move |from, to, _| links.contains(&(from.prefix_u64(), to.prefix_u64())));
}

#[test]
fn a_probe_is_a_ping_and_an_ack() {
    let cfg = config(Lifeguard::ON);
    let mut net = cluster(&[1, 2], &cfg);
    net.run_until(ms(1_000));
    let pings: Vec<_> = net.sent_by(id(1)).filter(|s| matches!(s.msg, SwimMessage::Ping { .. })).collect();
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].to, id(2));
    assert!(net.sent_by(id(2)).any(|s| s.to == id(1) && matches!(s.msg, SwimMessage::Ack { .. })));
    let s = net[id(1)].stats();
    assert_eq!((s.probes, s.acks_direct, s.probes_failed), (1, 1, 0));
    assert_eq!(net[id(1)].health(), 0);
    // Nothing to disseminate: no gossip datagrams.
    assert_eq!(s.gossip_sent, 0);
}

#[test]
fn round_robin_probes_every_member_once_per_traversal() {
    let cfg = config(Lifeguard::ON);
    let ids: Vec<u64> = (1..=10).collect();
    let mut net = cluster(&ids, &cfg);
    net.run_until(ms(18_000));
    let targets: Vec<u64> = net
        .sent_by(id(1))
        .filter_map(|s| match &s.msg {
            SwimMessage::Ping { target, .. } => Some(target.prefix_u64()),
            _ => None,
        })
        .collect();
    assert_eq!(targets.len(), 18, "one probe per period");
    for traversal in targets.chunks(9) {
        let set: BTreeSet<u64> = traversal.iter().copied().collect();
        assert_eq!(set, (2..=10).collect::<BTreeSet<u64>>(), "{targets:?}");
    }
    assert_ne!(targets[..9], targets[9..], "reshuffled at the wrap");
}

#[test]
fn a_lost_direct_path_is_bridged_by_helpers() {
    let cfg = config(Lifeguard::ON);
    let mut net = cluster(&[1, 2, 3, 4], &cfg);
    let x = net[id(1)].table.probe_order()[0].prefix_u64();
    cut(&mut net, vec![(1, x), (x, 1)]);
    net.run_until(ms(1_900));
    let reqs: Vec<_> = net.sent_by(id(1)).filter(|s| matches!(s.msg, SwimMessage::PingReq { .. })).collect();
    assert_eq!(reqs.len(), 2, "k = 3 but only two Alive members besides the target");
    assert!(reqs.iter().all(|s| s.to != id(x)));
    let s = *net[id(1)].stats();
    assert_eq!((s.acks_direct, s.acks_indirect, s.probes_failed), (0, 1, 0));
    assert_eq!(net[id(1)].health(), 0);
    assert_eq!(state(&net[id(1)], x), Some((State::Alive, 0)));
}

#[test]
fn a_dead_target_is_suspected_and_nacks_spare_the_prober_health() {
    let cfg = config(Lifeguard::ON);
    for deaf in [false, true] {
        let mut net = cluster(&[1, 2, 3, 4], &cfg);
        let x = net[id(1)].table.probe_order()[0].prefix_u64();
        net.silence(id(x));
        if deaf {
            // Node 1 hears nobody: the helpers' nacks are lost too.
            cut(&mut net, vec![(2, 1), (3, 1), (4, 1)]);
        }
        net.run_until(ms(2_000));
        let nacks =
            net.sent().iter().filter(|s| s.to == id(1) && matches!(s.msg, SwimMessage::Nack { .. })).count();
        assert_eq!(nacks, 2, "both helpers nack");
        assert_eq!(net[id(1)].stats().probes_failed, 1);
        assert_eq!(state(&net[id(1)], x), Some((State::Suspect, 0)));
        assert!(net.events_of(id(1)).any(|e| *e
            == SwimEvent::Member(MemberEvent {
                node: id(x),
                state: State::Suspect,
                incarnation: 0,
                profile: SharedProfile::default(),
                cause: Cause::FailedProbe,
            })));
        assert!(net.events_of(id(1)).any(|e| *e == SwimEvent::ProbeFailed { target: id(x), incarnation: 0 }));
        // Every helper nacked: delta 0. None got through: delta = 2 missed nacks.
        assert_eq!(net[id(1)].health(), if deaf { 2 } else { 0 }, "deaf = {deaf}");
    }
}

#[test]
fn health_stretches_the_probe_period_and_success_lowers_it() {
    let cfg = config(Lifeguard::ON);
    let mut net = cluster(&[1, 2, 3, 4], &cfg);
    // Node 1 hears nobody for two seconds: its first probe fails with both nacks missed.
    cut(&mut net, vec![(2, 1), (3, 1), (4, 1)]);
    net.run_until(ms(2_000));
    assert_eq!(net[id(1)].health(), 2);
    net.clear_drop();
    net.run_until(ms(40_000));
    let pings: Vec<u64> = net
        .sent_by(id(1))
        .filter(|s| matches!(s.msg, SwimMessage::Ping { .. }))
        .map(|s| s.at.as_micros() / 1_000)
        .collect();
    // Ticks at 1 s and 2 s (L = 0 when the 1 s tick fired); the 2 s tick saw L = 2 and the
    // probe period became 3 s; meanwhile the others suspected node 1, whose refutation cost
    // +1, and each successful probe −1: L = 2, 1, 0 at the ticks of 5, 8 and 10 s.
    assert_eq!(pings[..6], [1_000, 2_000, 5_000, 8_000, 10_000, 11_000], "{pings:?}");
    assert!(pings[5..].windows(2).all(|w| w[1] - w[0] == 1_000), "{pings:?}");
    assert_eq!(net[id(1)].health(), 0, "successful probes restore health");
    assert!(net[id(1)].stats().refutations >= 1, "the others suspected node 1 meanwhile");
}

#[test]
fn plain_swim_keeps_health_at_zero_and_sends_no_nack_requests() {
    let cfg = config(Lifeguard::OFF);
    let mut net = cluster(&[1, 2, 3, 4], &cfg);
    cut(&mut net, vec![(2, 1), (3, 1), (4, 1)]);
    net.run_until(ms(3_000));
    assert_eq!(net[id(1)].health(), 0);
    assert!(net.sent_by(id(1)).all(|s| !matches!(s.msg, SwimMessage::PingReq { want_nack: true, .. })));
    assert!(net[id(1)].stats().probes_failed >= 2);
}

#[test]
fn suspicion_timeout_shrinks_with_confirmations_then_declares_dead() {
    // The worked example of PROTOCOLS.md §6.5: n = 500, LAN defaults.
    let all: Vec<u64> = (1..=500).collect();
    let mut m = node(1, &all, &config(Lifeguard::ON));
    gossip(&mut m, ms(0), 2, vec![suspect(7, 0, 2)]);
    let deadline = |m: &Swim| m.member(&id(7)).and_then(|e| e.suspicion_deadline());
    assert_eq!(state(&m, 7), Some((State::Suspect, 0)));
    assert_eq!(deadline(&m), Some(ms(64_752)));
    gossip(&mut m, ms(1_000), 3, vec![suspect(7, 0, 3)]);
    assert_eq!(deadline(&m), Some(ms(30_707)));
    assert_eq!(m.queue.get(&id(7)).map(|(u, t)| (u.clone(), t)), Some((suspect(7, 0, 3), 0)), "re-broadcast");
    gossip(&mut m, ms(2_000), 3, vec![suspect(7, 0, 3)]);
    assert_eq!(m.member(&id(7)).map(|e| e.confirmations()), Some(1), "a repeat is no confirmation");
    gossip(&mut m, ms(3_000), 4, vec![suspect(7, 0, 4)]);
    assert_eq!(deadline(&m), Some(ms(10_792)));
    gossip(&mut m, ms(4_000), 5, vec![suspect(7, 0, 5)]);
    assert_eq!(deadline(&m), Some(ms(10_792)), "C = K = 2: no more effect");
    let _ = drain(&mut m);
    m.handle_timeout(ms(10_791));
    assert_eq!(state(&m, 7), Some((State::Suspect, 0)));
    m.handle_timeout(ms(10_792));
    assert_eq!(state(&m, 7), Some((State::Dead, 0)));
    let (_, events) = drain(&mut m);
    assert!(events.iter().any(|e| matches!(e,
        SwimEvent::Member(MemberEvent { node, state: State::Dead, cause: Cause::SuspicionTimeout, .. }) if *node == id(7))));
    assert_eq!(m.stats().deaths_declared, 1);
    assert_eq!(m.queue.get(&id(7)).map(|(u, _)| u.clone()), Some(dead(7, 0, 1)));
}

#[test]
fn without_dynamic_suspicion_the_timeout_is_min_and_confirmations_do_nothing() {
    let all: Vec<u64> = (1..=500).collect();
    let mut m = node(1, &all, &config(Lifeguard { dynamic_suspicion: false, ..Lifeguard::ON }));
    gossip(&mut m, ms(0), 2, vec![suspect(7, 0, 2)]);
    gossip(&mut m, ms(1_000), 3, vec![suspect(7, 0, 3)]);
    assert_eq!(m.member(&id(7)).and_then(|e| e.suspicion_deadline()), Some(ms(10_792)));
    assert_eq!(m.queue.get(&id(7)).map(|(u, _)| u.clone()), Some(suspect(7, 0, 2)), "not re-broadcast");
}

#[test]
fn a_suspect_refutes_and_the_buddy_system_tells_it_directly() {
    for buddy in [true, false] {
        let cfg = config(Lifeguard { buddy, ..Lifeguard::ON });
        let mut net = cluster(&[1, 2], &cfg);
        // Just before the probe tick, so no gossip round carries the suspicion first.
        net.run_until(ms(999));
        net.call(id(1), |m, now| gossip(m, now, 3, vec![suspect(2, 0, 3)]));
        assert_eq!(state(&net[id(1)], 2), Some((State::Suspect, 0)));
        net.run_until(ms(1_000));
        let ping = net
            .sent_by(id(1))
            .find_map(|s| match &s.msg {
                SwimMessage::Ping { updates, .. } => Some(updates.clone()),
                _ => None,
            })
            .expect("node 1 probed node 2");
        assert_eq!(ping.first() == Some(&suspect(2, 0, 1)), buddy, "buddy = {buddy}: {ping:?}");
        // Node 2 learns of the suspicion (buddy, or the piggyback of the queued Suspect from 3)
        // and refutes; its ack carries the refutation.
        assert_eq!(net[id(2)].incarnation(), 1);
        assert_eq!(net[id(2)].stats().refutations, 1);
        assert!(net.events_of(id(2)).any(|e| *e == SwimEvent::Refuted { incarnation: 1 }));
        assert_eq!(state(&net[id(1)], 2), Some((State::Alive, 1)));
        assert_eq!(net[id(1)].member(&id(2)).and_then(|e| e.suspicion_deadline()), None);
    }
}

#[test]
fn precedence_rules_follow_memberlist() {
    let cfg = config(Lifeguard::ON);
    // Node 1 knows X = 9 at incarnation 2 in `start`.
    let setup = |start: State| {
        let mut m = node(1, &[1, 2, 3], &cfg);
        gossip(&mut m, ms(0), 2, vec![alive(9, 2)]);
        match start {
            State::Alive => {}
            State::Suspect => gossip(&mut m, ms(0), 2, vec![suspect(9, 2, 2)]),
            State::Dead => gossip(&mut m, ms(0), 2, vec![dead(9, 2, 2)]),
            State::Left => gossip(&mut m, ms(0), 2, vec![dead(9, 2, 9)]),
        }
        assert_eq!(state(&m, 9), Some((start, 2)));
        m
    };
    use State::*;
    let cases = [
        (Alive, alive(9, 2), (Alive, 2)),
        (Alive, alive(9, 3), (Alive, 3)),
        (Suspect, alive(9, 2), (Suspect, 2)),
        (Suspect, alive(9, 3), (Alive, 3)),
        (Dead, alive(9, 2), (Dead, 2)),
        (Dead, alive(9, 3), (Alive, 3)),
        (Left, alive(9, 3), (Alive, 3)),
        (Alive, suspect(9, 1, 3), (Alive, 2)),
        (Alive, suspect(9, 2, 3), (Suspect, 2)),
        // SWIM adopts the higher incarnation of a Suspect or Dead; hearsay keeps the signed one.
        (Suspect, suspect(9, 3, 3), (Suspect, 2)),
        (Dead, suspect(9, 5, 3), (Dead, 2)),
        (Left, suspect(9, 5, 3), (Left, 2)),
        (Alive, dead(9, 1, 3), (Alive, 2)),
        (Alive, dead(9, 2, 3), (Dead, 2)),
        (Alive, dead(9, 2, 9), (Left, 2)),
        (Suspect, dead(9, 4, 3), (Dead, 2)),
        (Alive, dead(9, u64::MAX, 3), (Dead, 2)),
        (Dead, dead(9, 5, 3), (Dead, 2)),
        (Left, dead(9, 5, 3), (Left, 2)),
    ];
    for (start, update, expected) in cases {
        let mut m = setup(start);
        gossip(&mut m, ms(1), 3, vec![update.clone()]);
        assert_eq!(state(&m, 9), Some(expected), "{start:?} + {update:?}");
        if expected.0 != State::Suspect {
            assert_eq!(m.member(&id(9)).and_then(|e| e.suspicion_deadline()), None);
        }
    }
    // Suspect and Dead about an unknown member are ignored; Alive inserts it.
    let mut m = setup(Alive);
    gossip(&mut m, ms(1), 3, vec![suspect(50, 0, 3), dead(51, 0, 3), alive(52, 4)]);
    assert_eq!((state(&m, 50), state(&m, 51), state(&m, 52)), (None, None, Some((Alive, 4))));
}

#[test]
fn self_updates_are_refuted_unless_stale_or_leaving() {
    let cfg = config(Lifeguard::ON);
    let mut m = node(1, &[1, 2], &cfg);
    gossip(&mut m, ms(0), 2, vec![dead(1, 0, 2)]);
    assert_eq!(m.incarnation(), 1);
    gossip(&mut m, ms(0), 2, vec![suspect(1, 0, 2)]);
    assert_eq!(m.incarnation(), 1, "stale: 0 < 1");
    gossip(&mut m, ms(0), 2, vec![alive(1, 1)]);
    assert_eq!(m.incarnation(), 1, "our own Alive coming back");
    gossip(&mut m, ms(0), 2, vec![alive(1, 6)]);
    assert_eq!(m.incarnation(), 7, "a higher incarnation than ours is refuted above it");
    let other = SharedProfile::new(Profile {
        addr: Addr::from_socket("10.0.0.1:7946".parse().unwrap()),
        ..Profile::default()
    });
    gossip(&mut m, ms(0), 2, vec![alive_with(1, 7, other)]);
    assert_eq!(m.incarnation(), 8, "same incarnation, another profile");
    assert_eq!(m.health(), 3, "each refutation costs health");
    assert_eq!(m.stats().refutations, 3);
    m.leave(ms(0));
    gossip(&mut m, ms(0), 2, vec![suspect(1, 8, 2)]);
    assert_eq!(m.incarnation(), 8, "a leaving node does not refute");
}

#[test]
fn piggyback_fills_the_budget_in_queue_order_up_to_the_retransmit_limit() {
    let cfg = config(Lifeguard::ON);
    let mut m = node(1, &[1, 2], &cfg);
    for chunk in (100..200u64).collect::<Vec<_>>().chunks(50) {
        gossip(&mut m, ms(0), 2, chunk.iter().map(|&n| alive(n, 0)).collect());
    }
    assert_eq!(m.queued_updates(), 100);
    let _ = drain(&mut m);
    let ack = |m: &mut Swim, seq: u32| {
        m.handle_message(ms(1), id(2), SwimMessage::Ping { seq, target: id(1), updates: vec![] });
        let (ts, _) = drain(m);
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].reliability, Reliability::Datagram);
        ts.into_iter().next().map(|t| t.msg)
    };
    let first = ack(&mut m, 1).expect("an ack");
    let len = wire::encoded_len(&first);
    let SwimMessage::Ack { updates, .. } = &first else { panic!("{first:?}") };
    // 5 bytes of ack, 103 per signed Alive (empty address, no topics, empty name, no tags): 11 fit in
    // 1200, a 12th would not.
    assert_eq!(updates.len(), 11);
    assert!(len <= 1200 && len + 103 > 1200, "{len}");
    assert_eq!(wire::encode(&first, 1200).map(|b| b.len()), Ok(len));
    // Equal transmits and sizes: newest first.
    assert_eq!(updates[0], alive(199, 0));
    assert_eq!(updates[10], alive(189, 0));
    // The next datagram starts with what has been sent least.
    let second = ack(&mut m, 2).expect("an ack");
    assert_eq!(second.updates()[0], alive(188, 0));
    // n = 102 entries: limit 4 × ⌈log10 103⌉ = 12 transmits each, 1200 in all.
    assert_eq!(retransmit_limit(4, m.estimated_size()), 12);
    let mut total = first.updates().len() + second.updates().len();
    for seq in 3..200 {
        total += ack(&mut m, seq).map_or(0, |a| a.updates().len());
    }
    assert_eq!(total, 1200);
    assert_eq!(m.queued_updates(), 0);
    // A new update about a member replaces the queued one.
    gossip(&mut m, ms(2), 2, vec![suspect(150, 0, 2)]);
    gossip(&mut m, ms(2), 2, vec![alive(150, 1)]);
    assert_eq!(m.queued_updates(), 1);
}

#[test]
fn push_pull_merges_remote_death_only_as_suspicion() {
    let cfg = config(Lifeguard::ON);
    let mut net = cluster(&[1, 2, 3, 4], &cfg);
    // Node 2 believes 3 dead and 4 left; node 1 still has them Alive.
    net.call(id(2), |m, now| gossip(m, now, 9, vec![dead(3, 0, 9), dead(4, 0, 4)]));
    net.call(id(1), |m, now| m.open_exchange(now, id(2), false));
    assert!(
        net.sent()
            .iter()
            .any(|s| s.from == id(2) && matches!(s.msg, SwimMessage::PushPull { reply: true, .. }))
    );
    assert_eq!(state(&net[id(1)], 3), Some((State::Suspect, 0)));
    assert_eq!(state(&net[id(1)], 4), Some((State::Left, 0)));
    assert_eq!(net[id(1)].stats().push_pulls_completed, 1);
    assert_eq!(net[id(2)].stats().push_pulls_served, 1);
    // A reply nobody asked for is dropped.
    let states = vec![MemberRecord {
        node: id(5),
        incarnation: 0,
        state: State::Alive,
        profile: SharedProfile::default(),
        sig: Some(Unchecked(id(5)).sign(&alive_claim(&id(5), 0, &Profile::default()))),
    }];
    net.call(id(1), |m, now| {
        m.handle_message(now, id(2), SwimMessage::PushPull { join: false, reply: true, states })
    });
    assert_eq!(state(&net[id(1)], 5), None);
    assert_eq!(net[id(1)].stats().unexpected, 1);
}

#[test]
fn join_through_a_seed_after_a_dead_one_and_spread_by_gossip() {
    let cfg = config(Lifeguard::ON);
    let alone = |n| Swim::new(auth(n), Profile::default(), cfg.clone(), &seed(n), Instant::ZERO);
    let mut net = net_of(vec![alone(1), alone(2), alone(10)]);
    // Nodes 1 and 2 form the cluster (so each holds the other's signed Alive).
    net.call(id(2), |m, now| m.join(now, [id(1)])).expect("seed");
    assert_eq!(net[id(1)].members().len(), 2);
    assert_eq!(net.call(id(10), |m, now| m.join(now, [id(10)])), Err(CommandError::NoSeeds));
    net.call(id(10), |m, now| m.join(now, [id(99), id(1)])).expect("seeds");
    assert!(
        net.sent().iter().any(|s| s.to == id(99) && !s.delivered),
        "the first seed is tried first, and is dead"
    );
    net.run_until(ms(10_000));
    assert!(net.events_of(id(10)).any(|e| *e == SwimEvent::JoinCompleted { seed: id(1) }));
    assert_eq!(net[id(10)].members().len(), 3);
    assert_eq!(net[id(10)].incarnation(), 1);
    assert_eq!(state(&net[id(1)], 10), Some((State::Alive, 0)), "merged from the joiner's table");
    net.run_until(ms(12_000));
    assert_eq!(state(&net[id(2)], 10), Some((State::Alive, 1)), "gossiped on");
    assert_eq!(net[id(10)].peers().as_slice(), &[id(1), id(2)]);
    assert_eq!(net[id(10)].stats().forged, 0);
}

#[test]
fn entries_the_host_vouched_for_are_not_passed_on_unsigned() {
    // Node 1 starts converged with 2 (no signature of 2's); a newcomer learns 1 from its own
    // signed record and refuses 2's unsigned one until 2 itself says it is alive.
    let cfg = config(Lifeguard::ON);
    let newcomer = Swim::new(auth(10), Profile::default(), cfg.clone(), &seed(10), Instant::ZERO);
    let mut net = net_of(vec![node(1, &[1, 2], &cfg), newcomer]);
    net.call(id(10), |m, now| m.join(now, [id(1)])).expect("seed");
    assert!(net.events_of(id(10)).any(|e| *e == SwimEvent::JoinCompleted { seed: id(1) }));
    assert_eq!(state(&net[id(10)], 1), Some((State::Alive, 0)));
    assert_eq!(state(&net[id(10)], 2), None);
    assert_eq!(net[id(10)].stats().forged, 1);
    net.call(id(10), |m, now| gossip(m, now, 1, vec![alive(2, 1)]));
    assert_eq!(state(&net[id(10)], 2), Some((State::Alive, 1)));
}

#[test]
fn a_join_with_no_answer_fails_and_retries() {
    let cfg = config(Lifeguard::ON);
    let mut net =
        net_of(vec![Swim::new(auth(10), Profile::default(), cfg.clone(), &seed(10), Instant::ZERO)]);
    net.call(id(10), |m, now| m.join(now, [id(98), id(99)])).expect("seeds");
    net.run_until(ms(20_000));
    assert_eq!(net.events_of(id(10)).filter(|e| **e == SwimEvent::JoinFailed).count(), 1);
    net.run_until(ms(70_000));
    assert_eq!(
        net.events_of(id(10)).filter(|e| **e == SwimEvent::JoinFailed).count(),
        2,
        "retried after 30 s"
    );
    assert_eq!(
        net.sent().iter().filter(|s| matches!(s.msg, SwimMessage::PushPull { join: true, .. })).count(),
        4
    );
}

#[test]
fn a_leave_is_done_once_its_update_reached_the_retransmit_limit_below_gossip_nodes() {
    // `local`: retransmit_mult 2, so with 4 members the `Dead` goes out twice, fewer than
    // gossip_nodes (3): the leave is done then, not at leave_timeout.
    let cfg = Arc::new(SwimConfig { timing: Timing::Sync, ..SwimConfig::local() });
    assert!(retransmit_limit(cfg.retransmit_mult, 4) < cfg.gossip_nodes as u32);
    let mut net = cluster(&[1, 2, 3, 4], &cfg);
    net.run_until(ms(500));
    net.call(id(4), |m, now| m.leave(now));
    net.run_until(ms(1_000));
    assert!(net.events_of(id(4)).any(|e| *e == SwimEvent::LeaveDone));
    assert!(cfg.leave_timeout > Duration::from_millis(500));
}

#[test]
fn a_leave_is_recorded_as_left_and_the_node_goes_quiet() {
    let cfg = config(Lifeguard::ON);
    let mut net = cluster(&[1, 2, 3], &cfg);
    net.run_until(ms(500));
    net.call(id(3), |m, now| m.leave(now));
    net.run_until(ms(2_000));
    assert!(net.events_of(id(3)).any(|e| *e == SwimEvent::LeaveDone));
    assert_eq!(state(&net[id(1)], 3), Some((State::Left, 0)));
    assert_eq!(state(&net[id(2)], 3), Some((State::Left, 0)));
    let sent = net.sent_by(id(3)).count();
    net.run_until(ms(20_000));
    assert_eq!(net.sent_by(id(3)).count(), sent, "nothing after the leave");
    assert_eq!(net[id(3)].poll_timeout(), None);
    net.call(id(3), |m, now| {
        m.handle_message(now, id(1), SwimMessage::Ping { seq: 9, target: id(3), updates: vec![] })
    });
    assert_eq!(net[id(3)].stats().ignored_after_leave, 1);
    assert_eq!(net.sent_by(id(3)).count(), sent);
    assert!(net[id(1)].peers().as_slice() == [id(2)]);
}

#[test]
fn the_dead_are_declared_gossiped_and_reaped() {
    let cfg = config(Lifeguard::ON);
    let mut net = cluster(&[1, 2, 3], &cfg);
    net.silence(id(3));
    net.run_until(ms(10_000));
    // n = 3: K = 0, so the first timeout is min = 4 s.
    assert_eq!(state(&net[id(1)], 3).map(|s| s.0), Some(State::Dead));
    assert_eq!(state(&net[id(2)], 3).map(|s| s.0), Some(State::Dead));
    net.run_until(ms(60_000));
    assert!(net.events_of(id(1)).any(|e| *e == SwimEvent::Reaped { node: id(3) }));
    assert_eq!(net[id(1)].members().len(), 2);
}

#[test]
fn malformed_input_is_counted_and_changes_nothing() {
    let cfg = config(Lifeguard::ON);
    let mut m = node(1, &[1, 2, 3], &cfg);
    let before = format!("{:?}", m.members());
    let too_many: Vec<Update> = (100..165).map(|n| alive(n, 0)).collect();
    gossip(&mut m, ms(0), 2, too_many);
    #[derive(serde::Serialize)]
    struct RawMeta {
        topics: Vec<TopicId>,
        name: String,
        tags: Vec<(String, String)>,
    }
    let unsorted: Meta = postcard::from_bytes(
        &postcard::to_allocvec(&RawMeta {
            topics: vec![TopicId(5), TopicId(3)],
            name: String::new(),
            tags: Vec::new(),
        })
        .unwrap(),
    )
    .unwrap();
    let bad = SharedProfile::new(Profile { addr: Addr::default(), meta: unsorted });
    gossip(&mut m, ms(0), 2, vec![alive(50, 0), alive_with(51, 0, bad)]);
    let long: Addr =
        postcard::from_bytes(&postcard::to_allocvec(&bytes::Bytes::from(vec![1u8; 65])).unwrap()).unwrap();
    let long = SharedProfile::new(Profile { addr: long, meta: Meta::default() });
    m.handle_message(
        ms(0),
        id(2),
        SwimMessage::PingReq {
            seq: 1,
            target: id(3),
            want_nack: true,
            updates: vec![alive_with(55, 0, long)],
        },
    );
    m.handle_message(
        ms(0),
        id(2),
        SwimMessage::PingReq { seq: 1, target: id(1), want_nack: true, updates: vec![alive(52, 0)] },
    );
    m.handle_message(ms(0), id(1), SwimMessage::Gossip { updates: vec![alive(53, 0)] });
    assert_eq!(m.stats().malformed, 5);
    m.handle_message(ms(0), id(2), SwimMessage::Ping { seq: 1, target: id(3), updates: vec![alive(54, 0)] });
    assert_eq!(m.stats().misdirected, 1);
    m.handle_message(ms(0), id(2), SwimMessage::Ack { seq: 77, updates: vec![] });
    m.handle_message(ms(0), id(2), SwimMessage::Nack { seq: 77, updates: vec![] });
    assert_eq!(m.stats().unexpected, 2);
    assert_eq!(format!("{:?}", m.members()), before);
    assert_eq!(m.queued_updates(), 0);
    let (ts, events) = drain(&mut m);
    assert!(ts.is_empty() && events.is_empty());
}

#[test]
fn messages_round_trip_through_the_envelope() {
    let profile = SharedProfile::new(Profile {
        addr: Addr::from_socket("[2001:db8::1]:7946".parse().unwrap()),
        meta: Meta::new(vec![TopicId(9), TopicId(2), TopicId(9)]).expect("few topics"),
    });
    assert_eq!(profile.meta().topics(), &[TopicId(2), TopicId(9)]);
    assert_eq!(profile.addr().to_socket(), Some("[2001:db8::1]:7946".parse().unwrap()));
    let msgs = [
        SwimMessage::Ping { seq: u32::MAX, target: id(3), updates: vec![suspect(3, 1, 2), alive(4, 9)] },
        SwimMessage::PingReq { seq: 5, target: id(3), want_nack: true, updates: vec![] },
        SwimMessage::Gossip { updates: vec![alive_with(8, 3, profile.clone())] },
        SwimMessage::PushPull {
            join: true,
            reply: false,
            states: vec![MemberRecord {
                node: id(1),
                incarnation: 2,
                state: State::Left,
                profile,
                sig: None,
            }],
        },
    ];
    for msg in msgs {
        let bytes = wire::encode(&msg, wire::DEFAULT_FRAME_LIMIT).expect("encodes");
        assert_eq!(bytes.len(), wire::encoded_len(&msg));
        assert_eq!(wire::decode::<SwimMessage>(&bytes, wire::DEFAULT_FRAME_LIMIT), Ok(msg));
    }
    // A signed Alive: 38 bytes of update (empty address and meta) and a 65-byte signature;
    // with an IPv4 address, 109. Suspect and Dead are the smallest updates.
    assert_eq!(alive(1, 0).encoded_len(), 103);
    let v4 = SharedProfile::new(Profile {
        addr: Addr::from_socket("10.0.0.1:7946".parse().unwrap()),
        ..Profile::default()
    });
    assert_eq!(alive_with(1, 0, v4).encoded_len(), 109);
    assert_eq!(suspect(1, 0, 2).encoded_len(), broadcast::MIN_UPDATE_LEN);
    assert_eq!(dead(1, 0, 2).encoded_len(), 66);
}

#[test]
fn presets_and_validation() {
    let lan = SwimConfig::default();
    assert_eq!(lan, SwimConfig::lan());
    assert_eq!(
        (lan.probe_interval, lan.probe_timeout, lan.indirect_checks),
        (Duration::from_secs(1), Duration::from_millis(500), 3)
    );
    assert_eq!((lan.retransmit_mult, lan.suspicion_mult, lan.suspicion_max_timeout_mult), (4, 4, 6));
    let wan = SwimConfig::wan();
    assert_eq!(
        (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult, wan.gossip_nodes),
        (Duration::from_secs(5), Duration::from_secs(3), 6, 4)
    );
    let local = SwimConfig::local();
    assert_eq!(
        (local.probe_timeout, local.indirect_checks, local.retransmit_mult),
        (Duration::from_millis(200), 1, 2)
    );
    for c in [&lan, &wan, &local] {
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.nack_timeout, c.probe_timeout.mul_f64(0.8));
    }
    let bad = SwimConfig { probe_timeout: Duration::from_secs(2), ..SwimConfig::lan() };
    assert_eq!(bad.validate(), Err(ConfigError::Order("probe_timeout", "probe_interval")));
    assert_eq!(
        SwimConfig { gossip_nodes: 0, ..SwimConfig::lan() }.validate(),
        Err(ConfigError::Zero("gossip_nodes"))
    );
    assert_eq!(
        SwimConfig { datagram_budget: 100, ..SwimConfig::lan() }.validate(),
        Err(ConfigError::BudgetTooSmall(100))
    );
    let partial: SwimConfig =
        serde_json::from_str(r#"{"probe_interval": 2000000, "lifeguard": {"buddy": false}}"#).unwrap();
    assert_eq!(partial.probe_interval, Duration::from_secs(2));
    assert_eq!(partial.lifeguard, Lifeguard { buddy: false, ..Lifeguard::ON });
    assert_eq!(push_pull_period(Duration::from_secs(30), 32), Duration::from_secs(30));
    assert_eq!(push_pull_period(Duration::from_secs(30), 1000), Duration::from_secs(180));
    assert_eq!(push_pull_period(Duration::from_secs(30), 10_000), Duration::from_secs(300));
    assert_eq!((retransmit_limit(4, 500), retransmit_limit(4, 1000)), (12, 16));
}

#[test]
fn peer_sampling_is_uniform_over_live_members() {
    let cfg = config(Lifeguard::ON);
    let all: Vec<u64> = (1..=6).collect();
    let mut m = node(1, &all, &cfg);
    gossip(&mut m, ms(0), 2, vec![dead(6, 0, 2), suspect(5, 0, 2)]);
    assert_eq!(m.peers().as_slice(), &[id(2), id(3), id(4), id(5)]);
    let mut rng = Rng::from_seed(Seed::derive(1, "test", 0, 0));
    let mut counts = [0u32; 7];
    for _ in 0..8_000 {
        let s = m.sample_live(2, &mut rng);
        assert_eq!(s.len(), 2);
        assert_ne!(s[0], s[1]);
        for x in s {
            counts[x.prefix_u64() as usize] += 1;
        }
    }
    assert_eq!((counts[1], counts[6]), (0, 0));
    for c in &counts[2..6] {
        assert!((3_700..4_300).contains(c), "{counts:?}");
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let cfg = config(Lifeguard::ON);
        let mut net = cluster(&[1, 2, 3, 4, 5], &cfg);
        net.silence(id(4));
        net.run_until(ms(20_000));
        format!("{:?}", net.sent())
    };
    let a = run();
    assert!(a.len() > 1_000);
    assert_eq!(a, run());
}

/// Issue 15: the largest meta (64 topics of 10-byte varints, a 64-byte name, 16 tags of 256
/// bytes in all) in a signed `Alive` with an IPv6 address at the largest incarnation still
/// fits a 1200-byte datagram beside the largest ping-req header, so a member's `Alive` always
/// rides piggyback.
#[test]
fn the_largest_alive_with_tags_fits_a_datagram_with_a_ping_req() {
    use hearsay_protocols::tags::{TAGS_BYTES_MAX, TAGS_MAX, Tags};
    let topics: Vec<TopicId> = (0..META_TOPICS_MAX as u64).map(|i| TopicId(u64::MAX - i)).collect();
    let per = TAGS_BYTES_MAX / TAGS_MAX;
    let tags: Vec<String> = (0..TAGS_MAX).map(|i| format!("{i:02}={}", "v".repeat(per - 2))).collect();
    let tags = Tags::parse(&tags).unwrap();
    let meta = Meta::new(topics).unwrap().with_name(&"n".repeat(80)).with_tags(tags);
    let addr = Addr::from_socket("[::1]:65535".parse().unwrap());
    let profile = Profile { addr, meta };
    assert!(profile.is_valid());
    let up = Update::signed_alive(&Unchecked(id(1)), u64::MAX, SharedProfile::new(profile));
    let msg =
        SwimMessage::PingReq { seq: u32::MAX, target: id(2), want_nack: true, updates: vec![up.clone()] };
    let len = wire::encoded_len(&msg);
    assert!(len <= 1200, "{len} bytes");
    assert!(up.encoded_len() <= 1122, "{}", up.encoded_len());
}

/// Issue 15: tags beyond their bounds in a peer's `Alive` (which only a forged encoding can
/// carry: `Tags` cannot be built so) make the message malformed; nothing of it is applied.
#[test]
fn an_alive_with_tags_beyond_their_bounds_is_malformed() {
    let cfg = config(Lifeguard::ON);
    let mut m = node(1, &[1, 2, 3], &cfg);
    let before = format!("{:?}", m.members());
    #[derive(serde::Serialize)]
    struct RawMeta {
        topics: Vec<TopicId>,
        name: String,
        tags: Vec<(String, String)>,
    }
    let forged = |tags: Vec<(String, String)>| -> SharedProfile {
        let raw = postcard::to_allocvec(&RawMeta { topics: Vec::new(), name: String::new(), tags }).unwrap();
        SharedProfile::new(Profile { addr: Addr::default(), meta: postcard::from_bytes(&raw).unwrap() })
    };
    let many = (0..17).map(|i| (format!("k{i:02}"), String::new())).collect();
    let big = vec![("k".to_string(), "v".repeat(300))];
    let unsorted = vec![("b".to_string(), String::new()), ("a".to_string(), String::new())];
    for (i, tags) in [many, big, unsorted].into_iter().enumerate() {
        gossip(&mut m, ms(0), 2, vec![alive_with(60 + i as u64, 0, forged(tags))]);
    }
    assert_eq!(m.stats().malformed, 3);
    assert_eq!(format!("{:?}", m.members()), before);
}

#[test]
fn a_push_pull_between_equal_tables_sends_two_digests_and_no_table() {
    let cfg = config(Lifeguard::ON);
    let mut net = cluster(&[1, 2, 3, 4], &cfg);
    net.call(id(1), |m, now| m.open_digest_exchange(now, id(2)));
    let kinds: Vec<&str> =
        net.sent().iter().filter(|s| s.reliability == Reliability::Stream).map(|s| s.msg.name()).collect();
    assert_eq!(kinds, ["push-pull-digest", "push-pull-digest"]);
    assert_eq!(net[id(1)].stats().push_pulls_completed, 1);
    assert_eq!(net[id(1)].stats().push_pulls_in_sync, 1);
    assert_eq!(net[id(2)].stats().push_pulls_in_sync, 1);
    // The periodic exchange is the digest one: a still cluster never sends its tables.
    net.advance(Duration::from_secs(300));
    assert!(net.sent().iter().all(|s| !matches!(s.msg, SwimMessage::PushPull { .. })));
    assert!(net.machines().map(|(_, m)| m.stats().push_pulls_in_sync).sum::<u64>() >= 8);
}

#[test]
fn a_push_pull_between_different_tables_sends_both_tables_and_both_merge() {
    let cfg = config(Lifeguard::ON);
    let mut net = cluster(&[1, 2, 3, 4], &cfg);
    // Node 1 knows 3 at incarnation 5, node 2 knows 4 at incarnation 7; neither told anyone.
    net.call(id(1), |m, now| gossip(m, now, 3, vec![alive(3, 5)]));
    net.call(id(2), |m, now| gossip(m, now, 4, vec![alive(4, 7)]));
    assert_ne!(net[id(1)].table_digest(), net[id(2)].table_digest());
    net.set_drop(|_, _, m: &SwimMessage| {
        !matches!(m, SwimMessage::PushPull { .. } | SwimMessage::PushPullDigest { .. })
    });
    net.call(id(1), |m, now| m.open_digest_exchange(now, id(2)));
    let kinds: Vec<&str> =
        net.sent().iter().filter(|s| s.reliability == Reliability::Stream).map(|s| s.msg.name()).collect();
    assert_eq!(kinds, ["push-pull-digest", "push-pull", "push-pull"]);
    for n in [1, 2] {
        assert_eq!(state(&net[id(n)], 3), Some((State::Alive, 5)), "node {n}");
        assert_eq!(state(&net[id(n)], 4), Some((State::Alive, 7)), "node {n}");
    }
    assert_eq!(net[id(1)].table_digest(), net[id(2)].table_digest());
    assert_eq!(net[id(1)].stats().push_pulls_completed, 1);
    assert_eq!(net[id(2)].stats().push_pulls_completed, 1);
    assert_eq!(net[id(1)].stats().push_pulls_in_sync, 0);
    // A digest answer nobody asked for is dropped.
    let digest = net[id(2)].table_digest();
    net.call(id(1), |m, now| {
        m.handle_message(now, id(2), SwimMessage::PushPullDigest { reply: true, digest })
    });
    assert_eq!(net[id(1)].stats().unexpected, 1);
}

#[test]
fn a_digest_from_a_silent_member_does_not_hold_up_our_own_push_pull() {
    let cfg = config(Lifeguard::ON);
    let mut net = cluster(&[1, 2, 3, 4], &cfg);
    net.silence(id(3));
    let digest = TableDigest([7; 16]);
    net.call(id(1), |m, now| {
        m.handle_message(now, id(3), SwimMessage::PushPullDigest { reply: false, digest })
    });
    // The digests differ: node 1 sends its table to 3 and waits for 3's, which never comes.
    assert_eq!(net[id(1)].stats().push_pulls_started, 1);
    // Its own push-pull tick does not wait for that: the answering exchange is given up and
    // node 1's own goes out.
    net.call(id(1), |m, now| m.push_pull_tick(now));
    let s = net[id(1)].stats();
    assert_eq!((s.push_pulls_started, s.push_pulls_aborted), (2, 1), "{s:?}");
}
