//! Flooding and BCRM stepped by hand over small graphs, on the `testing::Net` harness (zero
//! latency, FIFO).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::id::{StreamId, TopicId};
use crate::rng::Seed;
use crate::testing::Net;
use crate::wire;

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn mid(seq: u64) -> RumorId {
    RumorId::Message { stream: StreamId { topic: TopicId(1), origin: id(0) }, seq }
}

/// Undirected graph as adjacency lists of small integers.
fn graph(edges: &[(u64, u64)]) -> BTreeMap<u64, Vec<u64>> {
    let mut adj: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(a, b) in edges {
        adj.entry(a).or_default().push(b);
        adj.entry(b).or_default().push(a);
    }
    adj
}

fn view(ns: &[u64]) -> PeerView {
    ns.iter().map(|&n| id(n)).collect()
}

/// Deliver everything FIFO until quiet; returns (from, to) of every message in order.
fn pump<M: Machine<Message = FloodMessage>>(net: &mut Net<M>) -> Vec<(u64, u64)> {
    let mark = net.sent().len();
    net.pump();
    net.sent()[mark..].iter().map(|s| (s.from.prefix_u64(), s.to.prefix_u64())).collect()
}

fn flooding(adj: &BTreeMap<u64, Vec<u64>>, ttl: u8) -> Net<Flooding> {
    let cfg = Arc::new(FloodConfig { ttl, ..FloodConfig::default() });
    adj.iter()
        .map(|(&n, ns)| {
            let mut m = Flooding::new(id(n), cfg.clone());
            m.set_neighbours(view(ns));
            (id(n), m)
        })
        .collect()
}

fn bcrm(adj: &BTreeMap<u64, Vec<u64>>, b: u32, f: u32, seed: u64) -> Net<Bcrm> {
    let cfg = Arc::new(BcrmConfig { b, f, ..BcrmConfig::default() });
    adj.iter()
        .map(|(&n, ns)| {
            let mut m = Bcrm::new(id(n), cfg.clone(), &Seed::derive(seed, "node", 0, n));
            m.set_neighbours(view(ns));
            (id(n), m)
        })
        .collect()
}

#[test]
fn flooding_sends_once_per_edge_direction_and_respects_the_ttl() {
    // A path 1-2-3-4-5 plus a chord 1-3.
    let adj = graph(&[(1, 2), (2, 3), (3, 4), (4, 5), (1, 3)]);
    let mut nodes = flooding(&adj, 7);
    assert!(nodes[id(1)].originate(Instant::ZERO, mid(1), Bytes::from_static(b"m")));
    let log = pump(&mut nodes);
    assert!(nodes.machines().all(|(_, m)| m.has_seen(&mid(1))));
    // Every node forwards once to all neighbours but the sender: the origin to 2, 3 (2);
    // 2 to 3, 3 to 2 and 4 (3 from 1 first); 4 to 5; 5 nothing. Duplicates: 2↔3 crossing.
    let sent: u64 = nodes.machines().map(|(_, m)| m.stats().sent).sum();
    assert_eq!(sent, log.len() as u64);
    assert_eq!(sent, 2 + 1 + 2 + 1);
    let dups: u64 = nodes.machines().map(|(_, m)| m.stats().duplicates).sum();
    assert_eq!(dups, 2);
    let delivered: Vec<u64> =
        nodes.ids().filter(|n| nodes.events_of(*n).next().is_some()).map(|n| n.prefix_u64()).collect();
    assert_eq!(delivered, vec![2, 3, 4, 5], "the origin does not deliver its own message");

    // TTL 2 from node 1: reaches 2 and 3 (1 hop) and 4 (2 hops), not 5.
    let mut nodes = flooding(&adj, 2);
    nodes[id(1)].originate(Instant::ZERO, mid(1), Bytes::new());
    pump(&mut nodes);
    let reached: Vec<u64> =
        nodes.machines().filter(|(_, m)| m.has_seen(&mid(1))).map(|(n, _)| n.prefix_u64()).collect();
    assert_eq!(reached, vec![1, 2, 3, 4]);
}

#[test]
fn flooding_drops_malformed_and_duplicate_input() {
    let adj = graph(&[(1, 2)]);
    let mut nodes = flooding(&adj, 3);
    let m = &mut nodes[id(2)];
    m.handle_message(Instant::ZERO, id(1), FloodMessage::Flood { id: mid(1), ttl: 0, payload: Bytes::new() });
    m.handle_message(Instant::ZERO, id(1), FloodMessage::Gossip { id: mid(1), payload: Bytes::new() });
    assert_eq!(m.stats().malformed, 2);
    assert!(!m.has_seen(&mid(1)) && m.poll_event().is_none() && m.poll_transmit().is_none());
    let o = &mut nodes[id(1)];
    assert!(o.originate(Instant::ZERO, mid(1), Bytes::new()));
    assert!(!o.originate(Instant::ZERO, mid(1), Bytes::new()), "seen already");
}

#[test]
fn flooding_forgets_ids_after_the_retention() {
    let cfg = Arc::new(FloodConfig { ttl: 3, seen_retention: Duration::from_secs(10) });
    let mut m = Flooding::new(id(2), cfg);
    m.set_neighbours(view(&[1, 3]));
    let msg = || FloodMessage::Flood { id: mid(1), ttl: 3, payload: Bytes::new() };
    m.handle_message(Instant::ZERO, id(1), msg());
    m.handle_message(Instant::from_micros(9_000_000), id(1), msg());
    assert_eq!(m.stats().duplicates, 1);
    m.handle_message(Instant::from_micros(20_000_000), id(1), msg());
    assert_eq!(m.stats().delivered, 2, "forgotten after 10 s, so delivered again");
}

#[test]
fn bcrm_forwards_to_at_most_b_unknown_neighbours_on_the_first_f_receptions() {
    // A star: centre 1 with leaves 2..=9, plus 2-3 so node 3 can hear twice.
    let mut edges: Vec<(u64, u64)> = (2..=9).map(|l| (1, l)).collect();
    edges.push((2, 3));
    let adj = graph(&edges);
    let mut nodes = bcrm(&adj, 2, 1, 7);
    assert!(nodes[id(1)].originate(Instant::ZERO, mid(1), Bytes::from_static(b"m")));
    // The origin sends to exactly B = 2 leaves and knows them.
    let first: Vec<_> = std::iter::from_fn(|| nodes[id(1)].poll_transmit()).collect();
    assert_eq!(first.len(), 2);
    let known = nodes[id(1)].known(&mid(1)).to_vec();
    assert_eq!(known.len(), 2);
    let mut log = Vec::new();
    for t in first {
        assert!(known.contains(&t.to));
        let to = t.to.prefix_u64();
        log.push((1, to));
        nodes[t.to].handle_message(Instant::ZERO, id(1), t.msg);
    }
    log.extend(pump(&mut nodes));
    // Only to neighbours not known to have it: no node sends the message twice to the same
    // neighbour, and never back to the one it got it from.
    let mut pairs = log.clone();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), log.len(), "{log:?}");
    // F = 1: a node forwards on its first reception only (the origin's reception 1 is the
    // message coming back to it), each time to at most B = 2.
    for (n, m) in nodes.machines() {
        let limit = if n == id(1) { 4 } else { 2 };
        assert!(m.stats().sent <= limit, "node {n} sent {}", m.stats().sent);
    }
    // A leaf never sends back to the centre it got the message from (it knows the centre has
    // it): leaves other than 2 and 3 have no other neighbour, so they send nothing.
    for leaf in 4..=9 {
        assert_eq!(nodes[id(leaf)].stats().sent, 0, "leaf {leaf}");
    }
}

#[test]
fn bcrm_origin_forwards_again_when_the_message_comes_back() {
    // Triangle 1-2-3, B = 1, F = 2: 1 → x, x → y (the only neighbour it does not know has
    // it), y → 1 (its only unknown neighbour): the origin's reception 1, which makes it
    // forward, but it knows both neighbours have it, so nothing is sent. No delivery at the
    // origin.
    let adj = graph(&[(1, 2), (2, 3), (1, 3)]);
    let mut nodes = bcrm(&adj, 1, 2, 3);
    nodes[id(1)].originate(Instant::ZERO, mid(1), Bytes::new());
    let log = pump(&mut nodes);
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[2].1, 1, "the message came back to the origin");
    assert_eq!(nodes[id(1)].stats().duplicates, 1);
    assert!(nodes.take_events_of(id(1)).is_empty());
    assert_eq!(nodes[id(1)].known(&mid(1)).len(), 2);
}

#[test]
fn bcrm_choices_are_uniform_and_seeded() {
    // Origin with 10 neighbours, B = 3: over many seeds every neighbour is chosen about
    // equally often, and one seed always makes the same choice.
    let edges: Vec<(u64, u64)> = (2..=11).map(|l| (1, l)).collect();
    let adj = graph(&edges);
    let mut counts = [0u32; 12];
    for seed in 0..2_000 {
        let mut nodes = bcrm(&adj, 3, 2, seed);
        let o = &mut nodes[id(1)];
        o.originate(Instant::ZERO, mid(1), Bytes::new());
        let to: Vec<u64> = std::iter::from_fn(|| o.poll_transmit()).map(|t| t.to.prefix_u64()).collect();
        assert_eq!(to.len(), 3);
        for t in to {
            counts[t as usize] += 1;
        }
    }
    for (n, c) in counts.iter().enumerate().skip(2) {
        assert!((520..680).contains(c), "neighbour {n}: {counts:?}");
    }
    let pick = |seed| {
        let mut nodes = bcrm(&adj, 3, 2, seed);
        let o = &mut nodes[id(1)];
        o.originate(Instant::ZERO, mid(1), Bytes::new());
        std::iter::from_fn(|| o.poll_transmit()).map(|t| t.to).collect::<Vec<_>>()
    };
    assert_eq!(pick(5), pick(5));
}

#[test]
fn bcrm_rejects_flood_messages_and_validates_config() {
    let mut m = Bcrm::new(id(1), Arc::new(BcrmConfig::default()), &Seed::derive(1, "node", 0, 1));
    m.handle_message(Instant::ZERO, id(2), FloodMessage::Flood { id: mid(1), ttl: 3, payload: Bytes::new() });
    assert_eq!(m.stats().malformed, 1);
    assert!(!m.holds(&mid(1)));
    assert_eq!(BcrmConfig { b: 0, ..BcrmConfig::default() }.validate(), Err(ConfigError::Zero("b")));
    assert_eq!(FloodConfig { ttl: 0, ..FloodConfig::default() }.validate(), Err(ConfigError::Zero("ttl")));
    assert!(BcrmConfig::default().validate().is_ok() && FloodConfig::default().validate().is_ok());
}

#[test]
fn messages_round_trip_through_the_envelope() {
    for m in [
        FloodMessage::Flood { id: mid(3), ttl: 7, payload: Bytes::from_static(b"abc") },
        FloodMessage::Gossip { id: mid(4), payload: Bytes::new() },
    ] {
        let bytes = wire::encode(&m, wire::DATAGRAM_BUDGET).unwrap();
        assert_eq!(wire::decode::<FloodMessage>(&bytes, wire::DATAGRAM_BUDGET).unwrap(), m);
    }
}
