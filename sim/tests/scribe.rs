//! The scribe experiment against the issue's anchors (PROTOCOLS.md §8.11, issue 4 part 3),
//! fixed seeds, at the smallest sizes that still check them: every subscriber on a tree, depth
//! within log2 N, delivery with repair ≥ 0.9999 under 5% loss and churn while the tree alone
//! stays well below, and root failover. The N = 10,000 figures are in the README, from the CLI.

use std::process::Command;

use bytes::Bytes;
use hearsay_overlay::chord::{RingNode, RingSnapshot};
use hearsay_overlay::scribe::{ScribeEvent, topic_key};
use hearsay_protocols::pbcast::PbEvent;
use hearsay_protocols::{Duration, Instant, NodeId};
use hearsay_sim::experiments::scribe::{self, Multicast, MulticastEvent, Params};
use hearsay_sim::kernel::{Fault, Observer, Sim};
use hearsay_sim::report::Progress;

fn run(p: &Params) -> scribe::Report {
    p.validate().unwrap();
    scribe::run(p, &Progress::silent())
}

#[test]
fn every_subscriber_gets_on_a_shallow_tree_and_the_tree_alone_delivers_everything() {
    let p = Params { topics: 8, group_size: 40, messages: 5, ..Params::new(400) };
    let r = run(&p);
    assert_eq!(r.subscribers_on_tree, 1.0);
    assert_eq!(r.subscribers_on_tree_at_end, 1.0);
    assert_eq!(r.split_topics, 0);
    assert!(r.attach_s_mean < 2.0, "trees built in {} s", r.attach_s_mean);
    // A tree is the union of ring routes, each a Chord route (½·log2 N = 4.3 hops on average
    // here) plus the last step to the responsible node: the mean is well under log2 N = 8.6,
    // the deepest member one route's worst case.
    let log2n = scribe::anchor_depth(400);
    assert!((4.0..=0.5 * log2n + 1.5).contains(&r.tree_depth_mean), "mean depth {}", r.tree_depth_mean);
    assert!(r.tree_depth_max <= log2n + 2.0, "max depth {}", r.tree_depth_max);
    assert_eq!(r.subscribers_never_on_tree, 0);
    assert_eq!(r.delivery_ratio_tree_only, 1.0);
    assert_eq!(r.delivery_ratio_with_repair, 1.0);
    assert!(
        r.delivery_ratio_first_phase > 0.8 && r.delivery_ratio_first_phase < 1.0,
        "repair overtakes some"
    );
    assert_eq!(r.fifo_violations, 0);
    // Chord routes ignore proximity: a tree path is several random WAN hops.
    assert!(r.rdp_mean > 2.0 && r.rdp_p50 >= 1.0, "rdp {} (p50 {})", r.rdp_mean, r.rdp_p50);
    assert!(r.link_stress_max >= 2 && r.link_stress_mean >= 1.0);
    assert!(r.node_stress_children_max >= r.node_stress_children_p99);
    assert!(r.control_messages_per_node > 0.0);
    assert_eq!(r.published, 40);
}

#[test]
fn a_base_16_ring_with_proximity_selection_makes_trees_shallower_faster_and_less_lossy_and_streams_lossless()
{
    // Issue 14, item 6: the same nodes, memberships, losses and publishes (seed 1), the paper's
    // ring against base-16 fingers each picked as the lowest-RTT of its interval's first 64
    // members. Measured: depth 6.37 → 4.05, RDP 12.2 → 3.73, tree alone 0.635 → 0.806.
    let base = Params { topics: 10, messages: 5, loss: 0.05, ..Params::new(2_000) };
    let near = Params { finger_base_bits: 4, proximity_candidates: 64, ..base.clone() };
    let (a, b) = (run(&base), run(&near));
    for r in [&a, &b] {
        assert_eq!(r.delivery_ratio_with_repair, 1.0);
        assert_eq!(r.subscribers_on_tree, 1.0);
        assert_eq!((r.gaps, r.fifo_violations), (0.0, 0));
    }
    assert_eq!((a.finger_base, b.finger_base, b.proximity_candidates), (2, 16, 64));
    assert!(
        b.tree_depth_mean < 0.75 * a.tree_depth_mean,
        "depth {} → {}",
        a.tree_depth_mean,
        b.tree_depth_mean
    );
    assert!(b.rdp_mean < 0.4 * a.rdp_mean && b.rdp_mean < 4.5, "rdp {} → {}", a.rdp_mean, b.rdp_mean);
    assert!(
        b.delivery_ratio_tree_only > a.delivery_ratio_tree_only + 0.1,
        "tree only {} → {}",
        a.delivery_ratio_tree_only,
        b.delivery_ratio_tree_only
    );
    let (la, lb) = (a.latency_tree_p50.unwrap(), b.latency_tree_p50.unwrap());
    assert!(lb < 0.5 * la, "tree p50 {la} → {lb} ms");
    // Tree copies on retransmitting streams: the tree alone reaches nearly everyone (measured
    // 0.997: a copy retransmitted several times, its probe timeout doubling, can come after
    // the run has drained), for a retransmission delay on 5% of the hops.
    let c = run(&Params { tree_streams: true, ..near });
    assert!(c.tree_streams && c.delivery_ratio_tree_only > 0.99, "tree only {}", c.delivery_ratio_tree_only);
    assert_eq!((c.delivery_ratio_with_repair, c.gaps, c.fifo_violations), (1.0, 0.0, 0));
    assert!(c.rdp_mean > b.rdp_mean && c.rdp_mean < 0.5 * a.rdp_mean, "rdp {} → {}", b.rdp_mean, c.rdp_mean);
}

#[test]
fn repair_reaches_the_anchor_under_5_percent_loss_and_churn_and_the_tree_alone_does_not() {
    // 1% per minute fails ~2 of 500 nodes in a 30 s run; 5% per minute fails ten or more.
    let p = Params { topics: 10, group_size: 50, loss: 0.05, churn: 0.05, runs: 2, ..Params::new(500) };
    let r = run(&p);
    assert!(r.crashes >= 10, "{} crashes", r.crashes);
    // Every subscriber got on its tree; under churn a few are re-joining at any moment.
    assert!(r.subscribers_on_tree >= 0.99, "on a tree {}", r.subscribers_on_tree);
    assert!(r.subscribers_on_tree_mean >= 0.98, "on a tree {}", r.subscribers_on_tree_mean);
    assert_eq!(r.subscribers_never_on_tree, 0);
    assert!(r.tree_depth_mean <= scribe::anchor_depth(500), "mean depth {}", r.tree_depth_mean);
    assert!(
        r.delivery_ratio_with_repair >= scribe::ANCHOR_DELIVERY_RATIO,
        "with repair {} (worst run {})",
        r.delivery_ratio_with_repair,
        r.delivery_ratio_with_repair_min
    );
    assert!(r.delivery_ratio_tree_only < 0.9, "tree only {}", r.delivery_ratio_tree_only);
    assert!(r.delivery_ratio_tree_only > 0.5, "tree only {}", r.delivery_ratio_tree_only);
    assert!(r.delivery_ratio_first_phase <= r.delivery_ratio_tree_only);
    assert_eq!(r.fifo_violations, 0);
    assert_eq!(r.unquiescent_runs, 0);
    assert!(r.bimodality >= 0.99);
}

/// Tree events and deliveries at each node.
#[derive(Default)]
struct Seen {
    tree_copies: Vec<(usize, u64)>,
    delivered: Vec<(usize, u64)>,
}

impl Observer<Multicast> for Seen {
    fn on_event(&mut self, _: Instant, node: usize, e: MulticastEvent) {
        match e {
            MulticastEvent::Tree(ScribeEvent::FirstPhase(d)) => self.tree_copies.push((node, d.id.seq)),
            MulticastEvent::Pbcast(PbEvent::Deliver(d)) => self.delivered.push((node, d.id.seq)),
            _ => {}
        }
    }
}

#[test]
fn when_the_root_crashes_the_tree_reforms_at_its_successor() {
    let p = Params { topics: 1, group_size: 30, ..Params::new(200) };
    let scribe::Setup { mut sim, topics, members, .. } = scribe::build(&p, 0);
    let t = topics[0];
    let mut seen = Seen::default();
    let at = |s: f64| Instant::ZERO + Duration::from_secs_f64(s);
    sim.run_until(at(3.0), &mut seen);
    let ids: Vec<NodeId> = (0..sim.len()).map(|i| sim.id(i)).collect();
    let root_of = |sim: &Sim<Multicast>| {
        (0..sim.len()).filter(|&i| sim.is_up(i) && sim.machine(i).scribe().is_root(t)).collect::<Vec<_>>()
    };
    let truth = RingSnapshot::new(ids.iter().copied()).successor(topic_key(t)).unwrap();
    let root = root_of(&sim);
    assert_eq!(root, vec![sim.index_of(&truth.id).unwrap()], "the topic's successor is the root");
    let old = root[0];
    sim.schedule_fault(at(3.0), Fault::Crash(old));
    let live: Vec<RingNode> =
        ids.iter().enumerate().filter(|(i, _)| *i != old).map(|(_, id)| RingNode::of(*id)).collect();
    let next = RingSnapshot::from_nodes(live).successor(topic_key(t)).unwrap();
    let next = sim.index_of(&next.id).unwrap();
    let on_tree = |sim: &Sim<Multicast>, i: usize| {
        let mut at = i;
        for _ in 0..64 {
            let s = sim.machine(at).scribe();
            if s.is_root(t) {
                return at == next;
            }
            match s.parent(t).and_then(|p| sim.index_of(&p)) {
                Some(p) if sim.is_up(p) => at = p,
                _ => return false,
            }
        }
        false
    };
    let live_members: Vec<usize> = members[0].iter().copied().filter(|&m| m != old).collect();
    let mut reformed = None;
    for k in 1..=300 {
        sim.run_until(at(3.0 + 0.1 * k as f64), &mut seen);
        if root_of(&sim) == vec![next] && live_members.iter().all(|&m| on_tree(&sim, m)) {
            reformed = Some(0.1 * k as f64);
            break;
        }
    }
    let took = reformed.expect("the tree re-formed at the successor within 30 s");
    assert!(took > 1.0, "found by timeouts, not at once ({took} s)");
    assert!(sim.machine(next).scribe().stats().roots_taken >= 1);
    // A message published now reaches every live member down the new tree.
    let origin = live_members[live_members.len() / 2];
    let now = sim.now();
    let id = sim
        .call(origin, &mut seen, |m, now| scribe::publish(m, now, t, Bytes::from_static(b"after failover")))
        .unwrap();
    sim.run_until(now + Duration::from_secs(3), &mut seen);
    let mut by_tree: Vec<usize> =
        seen.tree_copies.iter().filter(|(_, s)| *s == id.seq).map(|(n, _)| *n).collect();
    by_tree.sort_unstable();
    let expected: Vec<usize> = live_members.iter().copied().filter(|&m| m != origin).collect();
    let on_origin: Vec<_> = seen.tree_copies.iter().filter(|(n, _)| *n == origin).collect();
    assert!(on_origin.is_empty());
    assert_eq!(by_tree, expected, "every live member got the message by the tree");
    let delivered = seen.delivered.iter().filter(|(n, s)| *s == id.seq && live_members.contains(n)).count();
    assert_eq!(delivered, live_members.len());
}

fn sim_bin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearsay-sim")).args(args).output().expect("hearsay-sim runs")
}

#[test]
fn cli_prints_the_issue_fields_the_same_bytes_and_refuses_bad_input() {
    let args = [
        "scribe",
        "--nodes",
        "150",
        "--topics",
        "3",
        "--group-size",
        "20",
        "--messages",
        "3",
        "--runs",
        "2",
        "--json",
    ];
    let out = sim_bin(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["experiment"], "scribe");
    for field in [
        "tree_depth_mean",
        "tree_depth_max",
        "rdp_mean",
        "link_stress_max",
        "delivery_ratio_tree_only",
        "delivery_ratio_with_repair",
        "control_messages_per_node",
    ] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {}", v[field]);
    }
    assert_eq!(sim_bin(&args).stdout, stdout.as_bytes(), "same arguments, same bytes");
    let mut threaded = args.to_vec();
    threaded.extend(["--threads", "1"]);
    assert_eq!(sim_bin(&threaded).stdout, stdout.as_bytes(), "--threads changes nothing");
    assert_eq!((v["finger_base"].as_u64(), v["proximity_candidates"].as_u64()), (Some(2), Some(0)));
    let mut near = args.to_vec();
    near.extend(["--finger-base", "16", "--proximity", "8", "--route-via-successors"]);
    let out = sim_bin(&near);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((w["finger_base"].as_u64(), w["proximity_candidates"].as_u64()), (Some(16), Some(8)));
    assert_eq!(w["route_via_successors"], true);
    assert_ne!(w["tree_depth_mean"], v["tree_depth_mean"], "the ring options change the trees");
    for (bad, says) in [
        (vec!["scribe", "--nodes", "10", "--group-size", "11"], "--group-size"),
        (vec!["scribe", "--churn", "61"], "churn"),
        (vec!["scribe", "--loss", "1"], "probability"),
        (vec!["scribe", "--topics", "0"], "topics"),
        (vec!["scribe", "--finger-base", "8"], "2, 4 or 16"),
        (vec!["scribe", "--proximity", "65"], "proximity"),
    ] {
        let out = sim_bin(&bad);
        assert!(!out.status.success(), "{bad:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}
