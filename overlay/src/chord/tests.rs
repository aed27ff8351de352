//! The ring stepped by hand: a handful of machines on the `testing::Net` harness (zero-latency
//! FIFO, a clock moved from deadline to deadline, nodes that can be silenced).

use std::collections::BTreeSet;
use std::sync::Arc;

use hearsay_protocols::testing::{Net, Sent};
use hearsay_protocols::wire::{self, DATAGRAM_BUDGET};
use hearsay_protocols::{Duration, Instant, Machine, NodeId, Reliability, Seed, Timing};

use super::*;

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn config(detector: Detector, mode: LookupMode) -> Arc<ChordConfig> {
    Arc::new(ChordConfig { detector, lookup_mode: mode, timing: Timing::Phased, ..ChordConfig::default() })
}

fn machine(n: u64, cfg: &Arc<ChordConfig>) -> Chord {
    Chord::new(id(n), cfg.clone(), &Seed::derive(7, "node", 0, n), Instant::ZERO)
}

/// `nodes` on a zero-latency network, their first outputs delivered.
fn net_of(nodes: Vec<Chord>) -> Net<Chord> {
    let mut net: Net<Chord> = nodes.into_iter().map(|m| (m.id(), m)).collect();
    net.pump();
    net
}

/// A ring of nodes 1..=n, every node joined from the full member table.
fn converged(n: u64, cfg: &Arc<ChordConfig>) -> (Net<Chord>, RingSnapshot) {
    let snap = RingSnapshot::new((1..=n).map(id));
    let nodes = (1..=n)
        .map(|i| {
            let mut m = machine(i, cfg);
            m.join_from_members(Instant::ZERO, &snap).unwrap();
            m
        })
        .collect();
    (net_of(nodes), snap)
}

/// Every message in `sent` is a datagram: Chord sends nothing on streams.
fn datagrams_only(sent: &[Sent<ChordMessage>]) {
    assert!(sent.iter().all(|s| s.reliability == Reliability::Datagram));
}

/// Run a lookup from `origin` and return its outcome event.
fn lookup(net: &mut Net<Chord>, origin: NodeId, key: RingId) -> ChordEvent {
    let mark = net.sent().len();
    let req = net.call(origin, |m, now| m.lookup(now, key)).unwrap();
    let done = |net: &Net<Chord>| {
        net.events().iter().rev().find_map(|(n, e)| match e {
            ChordEvent::LookupDone { id, .. } | ChordEvent::LookupFailed { id, .. }
                if *n == origin && *id == req =>
            {
                Some(e.clone())
            }
            _ => None,
        })
    };
    for _ in 0..20 {
        if let Some(e) = done(net) {
            datagrams_only(&net.sent()[mark..]);
            return e;
        }
        net.advance(Duration::from_millis(500));
    }
    panic!("lookup {req} never finished")
}

/// Every live node's successor list, predecessor and fingers equal the converged ones.
fn assert_converged(net: &Net<Chord>) {
    datagrams_only(net.sent());
    let live: Vec<NodeId> = net.ids().filter(|i| !net.is_silenced(*i)).collect();
    let snap = RingSnapshot::new(live);
    for (_, m) in net.machines().filter(|(i, _)| !net.is_silenced(*i)) {
        let me = m.node();
        let r = m.config().successor_list_len;
        assert_eq!(m.successors(), snap.successors_of(&me, r).as_slice(), "{} successors", me.id);
        assert_eq!(m.predecessor(), snap.predecessors_of(&me, 1).first().copied(), "{} pred", me.id);
        for k in 0..FINGERS {
            assert_eq!(m.finger(k), snap.finger_of(&me, k), "{} finger {k}", me.id);
        }
    }
}

fn keys(n: usize) -> Vec<RingId> {
    let mut rng = hearsay_protocols::Rng::from_seed(Seed::derive(3, "keys", 0, 0));
    (0..n).map(|_| RingId(rng.next_u64())).collect()
}

#[test]
fn joining_from_the_member_table_gives_the_converged_state() {
    let cfg = config(Detector::Membership, LookupMode::Recursive);
    let (net, _) = converged(40, &cfg);
    assert_converged(&net);
    assert!(net.machines().all(|(_, m)| m.is_joined() && m.successors().len() == 16));
    let joined = net.events().iter().filter(|(_, e)| *e == ChordEvent::Joined).count();
    assert_eq!(joined, 40);
}

#[test]
fn a_key_between_self_and_successor_is_resolved_locally_with_zero_hops() {
    let cfg = config(Detector::Membership, LookupMode::Recursive);
    let (mut net, _) = converged(10, &cfg);
    let origin = net[id(1)].node();
    let succ = net[id(1)].successor().unwrap();
    let key = RingId(origin.ring.0.wrapping_add(1));
    let sent = net.delivered().count();
    match lookup(&mut net, origin.id, key) {
        ChordEvent::LookupDone { node, hops, path, .. } => {
            assert_eq!((node, hops, path), (succ, 0, vec![origin.id]));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(net.delivered().count(), sent, "no message for a local answer");
}

#[test]
fn recursive_lookups_find_the_successor_and_count_forwardings_only() {
    let cfg = config(Detector::Membership, LookupMode::Recursive);
    let (mut net, snap) = converged(64, &cfg);
    let mut total = 0u32;
    for (i, key) in keys(200).into_iter().enumerate() {
        let origin = id(1 + (i % 64) as u64);
        let ChordEvent::LookupDone { node, hops, path, .. } = lookup(&mut net, origin, key) else {
            panic!("lookup failed")
        };
        assert_eq!(node, snap.successor(key).unwrap(), "key {key}");
        // hops = distinct nodes on the path, initiator included, minus one (§7.7).
        assert_eq!(usize::from(hops), path.len() - 1);
        assert_eq!(path[0], origin);
        let distinct: BTreeSet<_> = path.iter().collect();
        assert_eq!(distinct.len(), path.len(), "no node visited twice");
        // Each hop gets strictly closer to the key, and the last one answers: key ∈ (p, p.succ].
        let d = |n: &NodeId| RingId::of(n).distance(key);
        assert!(path.windows(2).all(|w| d(&w[1]) < d(&w[0])), "{path:?}");
        let p = &net[*path.last().unwrap()];
        assert!(key.in_half_open(p.node().ring, p.successor().unwrap().ring));
        total += u32::from(hops);
    }
    // ½·log2 64 = 3 forwardings on average; the successor list shortens the end of the path.
    let mean = f64::from(total) / 200.0;
    assert!((1.5..3.5).contains(&mean), "mean hops {mean}");
}

#[test]
fn iterative_lookups_visit_the_same_nodes_as_recursive_ones() {
    let rec = config(Detector::Membership, LookupMode::Recursive);
    let it = config(Detector::Membership, LookupMode::Iterative);
    let (mut a, _) = converged(50, &rec);
    let (mut b, _) = converged(50, &it);
    for (i, key) in keys(60).into_iter().enumerate() {
        let origin = id(1 + (i % 50) as u64);
        let ra = lookup(&mut a, origin, key);
        let rb = lookup(&mut b, origin, key);
        let (
            ChordEvent::LookupDone { node: na, hops: ha, path: pa, .. },
            ChordEvent::LookupDone { node: nb, hops: hb, path: pb, .. },
        ) = (ra, rb)
        else {
            panic!("a lookup failed")
        };
        assert_eq!((na, ha, pa), (nb, hb, pb), "key {key}");
    }
    // Iterative: every step is a request to the origin's next hop and a reply to the origin.
    let replies =
        b.delivered().filter(|s| matches!(s.msg, ChordMessage::NextHop { .. }) && s.to == id(1)).count();
    assert!(replies > 0);
    assert!(!b.delivered().any(|s| matches!(s.msg, ChordMessage::FoundSucc { .. })));
}

#[test]
fn nodes_joining_through_a_member_converge_by_stabilize_and_fix_fingers() {
    let cfg = config(Detector::Standalone, LookupMode::Recursive);
    let mut net = net_of((1..=12).map(|i| machine(i, &cfg)).collect());
    net[id(1)].create(Instant::ZERO).unwrap();
    for i in 2..=12 {
        let now = net.now();
        net[id(i)].join_via(now, id(1 + (i * 7) % (i - 1))).unwrap();
        net.pump();
        net.advance(Duration::from_secs(1));
    }
    assert!(net.machines().all(|(_, m)| m.is_joined()));
    net.advance(Duration::from_secs(40));
    assert_converged(&net);
    let (mut ok, snap) = (0, RingSnapshot::new((1..=12).map(id)));
    for (i, key) in keys(50).into_iter().enumerate() {
        if let ChordEvent::LookupDone { node, .. } = lookup(&mut net, id(1 + (i as u64 % 12)), key) {
            ok += u32::from(node == snap.successor(key).unwrap());
        }
    }
    assert_eq!(ok, 50);
}

#[test]
fn a_second_node_makes_a_lone_node_a_ring_of_two() {
    let cfg = config(Detector::Standalone, LookupMode::Recursive);
    let mut net = net_of(vec![machine(1, &cfg), machine(2, &cfg)]);
    net[id(1)].create(Instant::ZERO).unwrap();
    assert!(net[id(1)].routes().is_responsible(RingId(12345)), "alone: responsible for everything");
    net[id(2)].join_via(Instant::ZERO, id(1)).unwrap();
    net.pump();
    assert_eq!(net[id(2)].successor().map(|n| n.id), Some(id(1)));
    net.advance(Duration::from_secs(3));
    assert_eq!(net[id(1)].successor().map(|n| n.id), Some(id(2)));
    assert_eq!(net[id(1)].predecessor().map(|n| n.id), Some(id(2)));
    assert_eq!(net[id(2)].predecessor().map(|n| n.id), Some(id(1)));
    let changed =
        net.events_of(id(1)).any(|e| *e == ChordEvent::SuccessorChanged { old: None, new: Some(id(2)) });
    assert!(changed, "the host hears about the new successor");
}

#[test]
fn a_silent_successor_is_dropped_after_two_missed_answers_and_the_ring_heals() {
    let cfg = config(Detector::Standalone, LookupMode::Recursive);
    let (mut net, _) = converged(20, &cfg);
    let victim = net[id(6)].node();
    let pred = net.machines().find(|(_, m)| m.successor() == Some(victim)).unwrap().0;
    let next = net[victim.id].successor().unwrap();
    net.silence(victim.id);
    net.advance(Duration::from_secs(1));
    assert_eq!(net[pred].successor(), Some(victim), "one miss is not enough");
    net.advance(Duration::from_secs(3));
    assert!(net[pred].stats().successors_dropped >= 1, "two misses drop it");
    // Until the victim's successor forgets it as predecessor (RingPing), its PredIs may hand
    // the victim back (the paper's stabilize); then the new neighbours find each other.
    net.advance(Duration::from_secs(30));
    assert!(net[next.id].stats().predecessors_dropped >= 1);
    assert_eq!(net[pred].successor(), Some(next));
    assert_eq!(net[next.id].predecessor().map(|n| n.id), Some(pred));
    assert_converged(&net);
}

#[test]
fn a_silent_first_hop_times_out_and_the_retry_goes_around_it() {
    let cfg = config(Detector::Membership, LookupMode::Recursive);
    let (mut net, snap) = converged(64, &cfg);
    let origin = net[id(1)].node();
    // The key just before the origin: the first hop is the origin's farthest finger.
    let key = RingId(origin.ring.0.wrapping_sub(2));
    let first = net[origin.id].closest_preceding(key, &[]);
    assert_ne!(first.id, origin.id);
    net.silence(first.id);
    let started = net.now();
    match lookup(&mut net, origin.id, key) {
        ChordEvent::LookupDone { node, path, .. } => {
            assert_eq!(node, snap.successor(key).unwrap());
            assert!(!path.contains(&first.id));
        }
        e => panic!("{e:?}"),
    }
    assert!(net.now() >= started + Duration::from_secs(1), "the retry waited for the timeout");
    assert_eq!(net[origin.id].stats().lookup_timeouts, 1);
    assert!(net[origin.id].avoided(&first.id), "the silent hop is avoided for routing");
}

#[test]
fn a_lookup_fails_after_its_attempts_when_no_route_answers() {
    let cfg = config(Detector::Membership, LookupMode::Iterative);
    let (mut net, _) = converged(8, &cfg);
    let origin = id(1);
    for n in net.ids().collect::<Vec<_>>() {
        if n != origin {
            net.silence(n);
        }
    }
    let key = RingId(net[id(1)].node().ring.0.wrapping_sub(2));
    let e = lookup(&mut net, origin, key);
    assert!(matches!(e, ChordEvent::LookupFailed { .. }), "{e:?}");
    assert_eq!(net[origin].stats().lookups_failed, 1);
    assert!(net[origin].stats().lookup_timeouts >= 3);
    assert_eq!(net[origin].stats().lookups_done, 0);
}

#[test]
fn leave_hands_over_at_once() {
    let cfg = config(Detector::Standalone, LookupMode::Recursive);
    let (mut net, _) = converged(20, &cfg);
    let leaver = net[id(4)].node();
    let pred = net[leaver.id].predecessor().unwrap();
    let succ_list = net[leaver.id].successors().to_vec();
    let now = net.now();
    net[leaver.id].leave(now).unwrap();
    net.pump();
    assert_eq!(net[pred.id].successors()[..15], succ_list[..15]);
    assert_eq!(net[succ_list[0].id].predecessor(), Some(pred));
    assert!(!net[leaver.id].is_joined());
    assert_eq!(net[leaver.id].lookup(now, RingId(1)), Err(ChordError::NotJoined));
    net.silence(leaver.id);
    net.advance(Duration::from_secs(20));
    assert_converged(&net);
    // It comes back with fresh state and joins again: its neighbours take it back.
    net.restore(leaver.id);
    let fresh = machine(leaver.id.prefix_u64(), &cfg);
    net.add(leaver.id, fresh);
    let now = net.now();
    net[leaver.id].join_via(now, pred.id).unwrap();
    net.pump();
    net.advance(Duration::from_secs(40));
    assert_converged(&net);
}

#[test]
fn membership_events_update_the_tables_at_once() {
    let cfg = config(Detector::Membership, LookupMode::Recursive);
    let all = RingSnapshot::new((1..=30).map(id));
    let newcomer = all.nodes()[10];
    let without = RingSnapshot::from_nodes(all.nodes().iter().copied().filter(|n| *n != newcomer).collect());
    let mut ms: Vec<Chord> = (1..=30)
        .map(|i| {
            let mut m = machine(i, &cfg);
            if id(i) != newcomer.id {
                m.join_from_members(Instant::ZERO, &without).unwrap();
            }
            m
        })
        .collect();
    let pos = ms.iter().position(|m| m.id() == newcomer.id).unwrap();
    ms[pos].join_from_members(Instant::ZERO, &all).unwrap();
    let mut net = net_of(ms);
    let now = net.now();
    for (_, m) in net.machines_mut() {
        m.handle_member_up(now, newcomer.id);
    }
    net.pump();
    assert_converged(&net);
    let before = all.nodes()[9];
    assert!(net.events().contains(&(
        before.id,
        ChordEvent::SuccessorChanged { old: Some(all.nodes()[11].id), new: Some(newcomer.id) }
    )));
    // Dead: out of every table at once, and not taken back from a neighbour's stale list.
    for (_, m) in net.machines_mut() {
        m.handle_member_down(now, newcomer.id);
    }
    net.pump();
    assert_eq!(net[before.id].successor(), Some(all.nodes()[11]));
    let after = &net[all.nodes()[11].id];
    assert_eq!(after.predecessor(), None, "cleared; re-learned from the next Notify");
    assert!(after.routes().is_responsible(newcomer.ring), "the closest member below stands in (§8.1)");
    assert!(!net[before.id].routes().is_responsible(newcomer.ring));
    assert!(net.machines().all(|(_, m)| m.id() == newcomer.id
        || (!m.successors().contains(&newcomer) && (0..FINGERS).all(|k| m.finger(k) != Some(newcomer)))));
    net.silence(newcomer.id);
    net.advance(Duration::from_secs(30));
    assert_converged(&net);
}

#[test]
fn responsibility_and_next_hop_agree_with_the_ring() {
    let cfg = config(Detector::Membership, LookupMode::Recursive);
    let (net, snap) = converged(32, &cfg);
    for key in keys(300) {
        let owners: Vec<NodeId> =
            net.machines().filter(|(_, m)| m.routes().is_responsible(key)).map(|(n, _)| n).collect();
        let root = snap.successor(key).unwrap().id;
        assert_eq!(owners, vec![root], "exactly one responsible node for {key}");
        // Routed all the way to the responsible node (Scribe's use), in at most 32 steps.
        let mut at = id(1 + key.0 % 32);
        for _ in 0..32 {
            if at == root {
                break;
            }
            at = net[at].routes().next_hop(key).unwrap();
        }
        assert_eq!(at, root);
    }
}

#[test]
fn malformed_input_is_counted_and_changes_nothing() {
    let cfg = config(Detector::Standalone, LookupMode::Recursive);
    let (mut net, _) = converged(10, &cfg);
    let target = id(1);
    let stranger = id(999);
    let forged = RingNode { id: stranger, ring: RingId(net[id(1)].node().ring.0.wrapping_sub(1)) };
    let honest = RingNode::of(stranger);
    let before = (net[target].successors().to_vec(), net[target].predecessor());
    let now = net.now();
    let bad = [
        (stranger, ChordMessage::Notify { node: forged }),
        (stranger, ChordMessage::Notify { node: RingNode::of(id(5)) }),
        (
            stranger,
            ChordMessage::FindSucc {
                req_id: 1,
                key: RingId(5),
                origin: stranger,
                hops: 1,
                ttl: 200,
                iterative: false,
                path: vec![stranger],
            },
        ),
        (
            stranger,
            ChordMessage::FindSucc {
                req_id: 1,
                key: RingId(5),
                origin: stranger,
                hops: 1,
                ttl: 3,
                iterative: false,
                path: vec![id(5), stranger],
            },
        ),
        (stranger, ChordMessage::LeaveHint { pred: None, succ_list: vec![honest; SUCC_LIST_MAX + 1] }),
    ];
    let m = &mut net[target];
    for (from, msg) in bad {
        m.handle_message(now, from, msg);
    }
    assert_eq!(m.stats().malformed, 5);
    // Replies nobody asked for, and hints from strangers.
    m.handle_message(
        now,
        stranger,
        ChordMessage::PredIs { req_id: 77, pred: Some(honest), succ_list: vec![] },
    );
    m.handle_message(now, stranger, ChordMessage::RingPong { req_id: 77 });
    m.handle_message(now, stranger, ChordMessage::LeaveHint { pred: Some(honest), succ_list: vec![honest] });
    let fake =
        ChordMessage::FoundSucc { req_id: 77, key: RingId(1), node: honest, hops: 1, path: vec![target] };
    m.handle_message(now, stranger, fake);
    assert_eq!(m.stats().unmatched, 4);
    assert_eq!((m.successors().to_vec(), m.predecessor()), before);
    assert!(m.poll_transmit().is_none(), "nothing answered");
}

#[test]
fn messages_fit_a_datagram_and_round_trip() {
    let nodes: Vec<RingNode> = (1..=SUCC_LIST_MAX as u64).map(|i| RingNode::of(id(i))).collect();
    let big_list =
        ChordMessage::PredIs { req_id: u64::MAX, pred: Some(nodes[0]), succ_list: nodes[..16].to_vec() };
    let big_path = ChordMessage::FindSucc {
        req_id: u64::MAX,
        key: RingId(u64::MAX),
        origin: id(1),
        hops: TTL_MAX,
        ttl: TTL_MAX,
        iterative: true,
        path: (1..=PATH_MAX as u64).map(id).collect(),
    };
    for msg in [big_list, big_path] {
        let bytes = wire::encode(&msg, DATAGRAM_BUDGET).expect("fits a datagram");
        assert_eq!(wire::decode::<ChordMessage>(&bytes, DATAGRAM_BUDGET).unwrap(), msg);
    }
}

#[test]
fn timers_are_reported_and_stale_wakeups_do_nothing() {
    let cfg = config(Detector::Standalone, LookupMode::Recursive);
    let mut m = machine(1, &cfg);
    assert_eq!(m.poll_timeout(), None, "idle: no timer");
    m.create(Instant::ZERO).unwrap();
    let first = m.poll_timeout().unwrap();
    assert!(first < Instant::ZERO + Duration::from_millis(250), "phased fix_fingers tick comes first");
    m.handle_timeout(Instant::ZERO);
    assert_eq!(m.poll_timeout(), Some(first), "an early wake-up changes nothing");
    assert!(m.poll_transmit().is_none());
}

#[test]
fn config_validation() {
    assert_eq!(ChordConfig::default().validate(), Ok(()));
    let bad = [
        ChordConfig { successor_list_len: 0, ..ChordConfig::default() },
        ChordConfig { lookup_ttl: 65, ..ChordConfig::default() },
        ChordConfig { lookup_timeout: Duration::ZERO, ..ChordConfig::default() },
        ChordConfig { miss_limit: 0, ..ChordConfig::default() },
        ChordConfig { lookup_attempts: 0, ..ChordConfig::default() },
    ];
    for c in bad {
        assert!(c.validate().is_err(), "{c:?}");
    }
}

/// `GetPred`s node `n` sent from `from` on.
fn get_preds_by(net: &Net<Chord>, n: NodeId, from: Instant) -> usize {
    net.sent_by(n).filter(|s| s.at >= from && matches!(s.msg, ChordMessage::GetPred { .. })).count()
}

#[test]
fn on_a_still_ring_maintenance_backs_off_and_a_membership_change_restores_the_base_pace() {
    let cfg = config(Detector::Membership, LookupMode::Recursive);
    let (mut net, _) = converged(20, &cfg);
    net.run_until(Instant::ZERO + Duration::from_secs(300));
    assert_converged(&net);
    let one = id(1);
    assert_eq!(net[one].period_of(pace::Check::Stabilize), Some(cfg.stabilize_interval_max));
    assert_eq!(net[one].period_of(pace::Check::FixFingers), Some(cfg.fix_fingers_interval_max));
    let quiet = net.now();
    net.advance(Duration::from_secs(120));
    let asked = get_preds_by(&net, one, quiet);
    assert!((3..=5).contains(&asked), "{asked} GetPred in 120 s at the 30 s cap");

    // Node 1's successor fails: SWIM says so, and both checks are back at the base pace.
    let succ = net[one].successor().unwrap().id;
    net.silence(succ);
    let now = net.now();
    for (i, m) in net.machines_mut() {
        if i != succ {
            m.handle_member_down(now, succ);
        }
    }
    net.pump();
    assert_eq!(net[one].period_of(pace::Check::Stabilize), Some(cfg.stabilize_interval));
    assert_eq!(net[one].period_of(pace::Check::FixFingers), Some(cfg.fix_fingers_interval));
    assert!(net[one].stats().maintenance_resets >= 1);
    let after = net.now();
    net.advance(Duration::from_secs(3));
    assert!(get_preds_by(&net, one, after) >= 2, "stabilize within a base period of the change");
    net.advance(Duration::from_secs(120));
    assert_converged(&net);
}

#[test]
fn the_standalone_ring_keeps_its_base_periods() {
    let cfg = config(Detector::Standalone, LookupMode::Recursive);
    let (mut net, _) = converged(20, &cfg);
    net.run_until(Instant::ZERO + Duration::from_secs(120));
    assert_eq!(net[id(1)].period_of(pace::Check::Stabilize), Some(cfg.stabilize_interval));
    assert_eq!(net[id(1)].period_of(pace::Check::FixFingers), Some(cfg.fix_fingers_interval));
}

#[test]
fn finger_layouts_partition_the_ring_and_base_two_is_the_papers() {
    let me = RingId(0x1234_5678_9abc_def0);
    let binary = FingerLayout::BINARY;
    assert_eq!(binary.len(), FINGERS);
    for k in 0..FINGERS {
        assert_eq!(binary.start(me, k), me.finger_start(k), "base 2, finger {k}");
    }
    let base4 = FingerLayout::new(2).unwrap();
    let base16 = FingerLayout::new(4).unwrap();
    assert_eq!((base4.len(), base16.len()), (96, 240));
    assert!(FingerLayout::new(3).is_none() && FingerLayout::new(8).is_none());
    assert_eq!(base16.offset(0), 1);
    assert_eq!(base16.offset(14), 15);
    assert_eq!(base16.offset(15), 16);
    assert_eq!(base16.offset(16), 32);
    assert_eq!(base16.offset(239), 15 << 60);
    // Every point but `me` lies in exactly one interval, and targets ascend.
    let mut rng = hearsay_protocols::Rng::from_seed(Seed::derive(5, "points", 0, 0));
    for layout in [binary, base4, base16] {
        for k in 1..layout.len() {
            assert!(me.distance(layout.start(me, k - 1)) < me.distance(layout.start(me, k)));
        }
        let mut points: Vec<RingId> = (0..2_000).map(|_| RingId(rng.next_u64())).collect();
        points.extend((0..layout.len()).map(|k| layout.start(me, k)));
        points.extend([RingId(me.0.wrapping_sub(1)), RingId(me.0.wrapping_add(1))]);
        for x in points {
            let n = (0..layout.len()).filter(|&k| layout.covers(me, k, x)).count();
            assert_eq!(n, 1, "{x} in {n} intervals of base {}", layout.len());
        }
        assert!((0..layout.len()).all(|k| !layout.covers(me, k, me)));
    }
}

/// Mean forwardings of `lookups` lookups over a converged ring of `n` nodes.
fn mean_hops(n: u64, cfg: &Arc<ChordConfig>, lookups: usize) -> f64 {
    let (mut net, snap) = converged(n, cfg);
    let mut total = 0u64;
    for (i, key) in keys(lookups).into_iter().enumerate() {
        let origin = id(1 + (i as u64 * 7) % n);
        match lookup(&mut net, origin, key) {
            ChordEvent::LookupDone { node, hops, .. } => {
                assert_eq!(Some(node), snap.successor(key), "lookup {i} answers successor(key)");
                total += u64::from(hops);
            }
            e => panic!("lookup {i}: {e:?}"),
        }
    }
    total as f64 / lookups as f64
}

#[test]
fn a_larger_finger_base_answers_the_same_in_fewer_hops() {
    let binary = config(Detector::Membership, LookupMode::Recursive);
    let base16 = Arc::new(ChordConfig { finger_base_bits: 4, ..(*binary).clone() });
    let (net, snap) = converged(300, &base16);
    for (_, m) in net.machines() {
        let me = m.node();
        for k in 0..m.layout().len() {
            let want = snap.successor(m.layout().start(me.ring, k)).filter(|x| x.id != me.id);
            assert_eq!(m.finger(k), want, "{} finger {k}", me.id);
        }
    }
    let (two, sixteen) = (mean_hops(300, &binary, 200), mean_hops(300, &base16, 200));
    // ½·log2 300 ≈ 4.1 against about (15/16)·log16 300 ≈ 1.9.
    assert!(two > 3.0 && sixteen < 2.6 && sixteen < 0.7 * two, "base 2: {two} hops, base 16: {sixteen}");
}

#[test]
fn proximity_selection_takes_the_nearest_candidate_and_refreshes_keep_it() {
    let cfg = Arc::new(ChordConfig {
        proximity_candidates: 8,
        ..(*config(Detector::Standalone, LookupMode::Recursive)).clone()
    });
    let n = 200u64;
    let snap = RingSnapshot::new((1..=n).map(id));
    // A made-up metric: the RTT between a and b is |a − b| ms by NodeId number.
    let num = |x: &NodeId| (1..=n).find(|&i| id(i) == *x).unwrap();
    let nodes: Vec<Chord> = (1..=n)
        .map(|i| {
            let mut m = machine(i, &cfg);
            let rtt = |x: &RingNode| Some(Duration::from_millis(num(&x.id).abs_diff(i)));
            m.join_from_members_near(Instant::ZERO, &snap, rtt).unwrap();
            m
        })
        .collect();
    let mut chosen = 0;
    for m in &nodes {
        let me = m.node();
        let i = num(&me.id);
        let layout = m.layout();
        let s = m.successor().unwrap();
        for k in 0..layout.len() {
            let start = layout.start(me.ring, k);
            let f = m.finger(k);
            if start.in_half_open(me.ring, s.ring) {
                assert_eq!(f, Some(s), "{i} finger {k}: the successor");
                continue;
            }
            let cands: Vec<RingNode> = snap
                .walk_from(start)
                .take(8)
                .take_while(|x| layout.covers(me.ring, k, x.ring) && x.id != me.id)
                .collect();
            let Some(best) = cands.iter().min_by_key(|x| num(&x.id).abs_diff(i)) else {
                assert_eq!(f, snap.finger_of(&me, k), "{i} finger {k}: empty interval");
                continue;
            };
            let f = f.unwrap();
            assert_eq!(num(&f.id).abs_diff(i), num(&best.id).abs_diff(i), "{i} finger {k}");
            chosen += usize::from(Some(f) != snap.successor(start));
        }
    }
    assert!(chosen > 100, "proximity changed only {chosen} fingers");
    // Routing still answers right, and a minute of fix_fingers keeps the chosen fingers.
    let before: Vec<Vec<Option<RingNode>>> =
        nodes.iter().map(|m| (0..FINGERS).map(|k| m.finger(k)).collect()).collect();
    let mut net = net_of(nodes);
    for (i, key) in keys(50).into_iter().enumerate() {
        match lookup(&mut net, id(1 + i as u64), key) {
            ChordEvent::LookupDone { node, .. } => assert_eq!(Some(node), snap.successor(key)),
            e => panic!("lookup {i}: {e:?}"),
        }
    }
    net.advance(Duration::from_secs(60));
    let lookups: u64 = net.machines().map(|(_, m)| m.stats().finger_lookups).sum();
    assert!(lookups > 1_000, "fix_fingers ran ({lookups} finger lookups)");
    for (i, was) in (1..=n).zip(&before) {
        for (k, was) in was.iter().enumerate() {
            let is = net[id(i)].finger(k);
            assert_eq!(
                was.map(|x| x.id),
                is.map(|x| x.id),
                "node {i} finger {k} after a minute of refreshes"
            );
        }
    }
}
