//! Engines stepped by hand: a few nodes, a FIFO of frames, a clock that jumps to the next
//! deadline. (The simulator's `cluster` experiment runs thousands with loss and crashes.)

use std::collections::VecDeque;

use hearsay_overlay::swim::{Addr, State, SwimConfig};
use hearsay_protocols::aggregate::Func;
use hearsay_protocols::{Duration, Instant, Machine, NodeId, Seed};

use super::*;

struct Cluster {
    nodes: Vec<Engine>,
    now: Instant,
    wire: VecDeque<(NodeId, NodeId, Bytes)>,
    events: Vec<(usize, EngineEvent)>,
    /// Frames from these nodes are dropped (a crashed node).
    down: BTreeSet<usize>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let config = Arc::new(EngineConfig::with_swim(SwimConfig::local()));
        let nodes = (0..n)
            .map(|i| {
                let id = NodeId::from_u64(1000 + i as u64);
                let seed = Seed::derive(7, "node", 0, i as u64);
                Engine::new(id, &format!("n{i}"), Addr::default(), 1, config.clone(), &seed, Instant::ZERO)
            })
            .collect();
        let mut c = Cluster {
            nodes,
            now: Instant::ZERO,
            wire: VecDeque::new(),
            events: Vec::new(),
            down: BTreeSet::new(),
        };
        c.collect();
        c
    }

    fn index(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|e| e.id() == id)
    }

    fn collect(&mut self) {
        for (i, e) in self.nodes.iter_mut().enumerate() {
            while let Some(t) = e.poll_transmit() {
                if !self.down.contains(&i) {
                    self.wire.push_back((e.id(), t.to, t.msg));
                }
            }
            while let Some(ev) = e.poll_event() {
                self.events.push((i, ev));
            }
        }
    }

    /// Deliver frames and fire timers until `until`.
    fn run(&mut self, until: Instant) {
        loop {
            while let Some((from, to, frame)) = self.wire.pop_front() {
                if let Some(i) = self.index(to) {
                    if !self.down.contains(&i) {
                        self.nodes[i].handle_message(self.now, from, frame);
                    }
                }
                self.collect();
            }
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.down.contains(i))
                .filter_map(|(_, e)| e.poll_timeout())
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    for (i, e) in self.nodes.iter_mut().enumerate() {
                        if !self.down.contains(&i) && e.poll_timeout().is_some_and(|d| d <= self.now) {
                            e.handle_timeout(self.now);
                        }
                    }
                    self.collect();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
    }

    fn secs(&self, s: u64) -> Instant {
        self.now + Duration::from_secs(s)
    }

    fn join_all(&mut self) {
        let seed = self.nodes[0].id();
        for i in 1..self.nodes.len() {
            let now = self.now;
            self.nodes[i].join(now, &[seed]).unwrap();
        }
        self.collect();
        let t = self.secs(5);
        self.run(t);
    }

    fn delivered(&self, node: usize) -> Vec<(NodeId, u64, Bytes)> {
        self.events
            .iter()
            .filter(|(i, _)| *i == node)
            .filter_map(|(_, e)| match e {
                EngineEvent::Delivered(d) => Some((d.id.origin, d.id.seq, d.payload.clone())),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn nodes_join_through_one_seed_and_see_each_other() {
    let mut c = Cluster::new(4);
    c.join_all();
    for e in &c.nodes {
        let alive: Vec<String> =
            e.members().into_iter().filter(|m| m.state == State::Alive).map(|m| m.name).collect();
        assert_eq!(alive, vec!["n0", "n1", "n2", "n3"], "at {}", e.name());
    }
    assert!(c.events.iter().any(|(i, e)| *i == 1 && *e == EngineEvent::Joined));
}

#[test]
fn a_publish_reaches_every_subscriber_once_in_order() {
    let mut c = Cluster::new(4);
    c.join_all();
    for i in 0..4 {
        let now = c.now;
        c.nodes[i].subscribe(now, "news").unwrap();
    }
    c.collect();
    let t = c.secs(3);
    c.run(t);
    for k in 0..5u8 {
        let now = c.now;
        c.nodes[1].publish(now, "news", Bytes::from(vec![k])).unwrap();
        c.collect();
    }
    let t = c.secs(5);
    c.run(t);
    let origin = c.nodes[1].origin();
    for i in 0..4 {
        let got = c.delivered(i);
        let expected: Vec<(NodeId, u64, Bytes)> =
            (0..5u8).map(|k| (origin, u64::from(k) + 1, Bytes::from(vec![k]))).collect();
        assert_eq!(got, expected, "node {i}");
    }
    assert_eq!(c.nodes[2].node_of_origin(&origin), Some(c.nodes[1].id()));
}

#[test]
fn an_average_query_is_answered() {
    let mut c = Cluster::new(5);
    c.join_all();
    for (i, v) in [1.0, 2.0, 3.0, 4.0, 5.0].iter().enumerate() {
        c.nodes[i].set_value(Instant::ZERO, "load", *v).unwrap();
    }
    let now = c.now;
    c.nodes[2].query(now, Func::Avg, "load").unwrap();
    c.collect();
    let t = c.secs(60);
    c.run(t);
    let answer = c.events.iter().find_map(|(i, e)| match e {
        EngineEvent::Answered { value, converged, .. } if *i == 2 => Some((*value, *converged)),
        _ => None,
    });
    let (value, converged) = answer.expect("an answer");
    assert!(converged);
    assert!((value.unwrap() - 3.0).abs() < 1e-3, "{value:?}");
}

#[test]
fn a_crashed_member_is_detected_dead() {
    let mut c = Cluster::new(4);
    c.join_all();
    c.down.insert(3);
    let t = c.secs(60);
    c.run(t);
    let victim = c.nodes[3].id();
    for i in 0..3 {
        let declared = c.events.iter().any(|(n, e)| {
            *n == i && matches!(e, EngineEvent::Member { node, state: State::Dead, .. } if *node == victim)
        });
        assert!(declared, "node {i} never declared the crashed node dead");
        let state = c.nodes[i].members().into_iter().find(|m| m.id == victim).map(|m| m.state);
        assert!(matches!(state, None | Some(State::Dead)), "node {i} sees {state:?} (dead, or reaped)");
    }
}

#[test]
fn garbage_frames_are_counted_and_dropped() {
    let mut c = Cluster::new(2);
    c.join_all();
    let from = c.nodes[1].id();
    let now = c.now;
    for junk in
        [&b""[..], &b"\x01"[..], &b"\x09\x05abc"[..], &b"\x01\x05\xff\xff\xff\xff"[..], &b"\x01\x63"[..]]
    {
        c.nodes[0].handle_message(now, from, Bytes::copy_from_slice(junk));
    }
    let e = c.nodes[0].stats().decode_errors;
    assert_eq!(e.total(), 5, "{e:?}");
    assert_eq!(c.nodes[0].members().len(), 2, "membership unchanged");
}

#[test]
fn deadlines_move_forward_after_each_timeout() {
    let config = Arc::new(EngineConfig::with_swim(SwimConfig::local()));
    let mut e = Engine::new(
        NodeId::from_u64(1),
        "solo",
        Addr::default(),
        1,
        config,
        &Seed::derive(1, "n", 0, 0),
        Instant::ZERO,
    );
    let mut now = Instant::ZERO;
    for step in 0..200 {
        let next = e.poll_timeout().expect("some timer");
        now = now.max(next);
        e.handle_timeout(now);
        while e.poll_transmit().is_some() {}
        while e.poll_event().is_some() {}
        let parts: [(&str, Option<Instant>); 6] = [
            ("swim", e.swim.poll_timeout()),
            ("multicast", e.multicast.poll_timeout()),
            ("anti_entropy", e.anti_entropy.poll_timeout()),
            ("rumor_topics", e.rumor_topics.poll_timeout()),
            ("rumor_queries", e.rumor_queries.poll_timeout()),
            ("aggregation", e.aggregation.poll_timeout()),
        ];
        for (name, dl) in parts {
            if let Some(dl) = dl {
                assert!(dl > now, "step {step}: {name} asks for {dl:?} at {now:?} after its timeout");
            }
        }
    }
}
