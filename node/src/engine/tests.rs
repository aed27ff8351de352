//! Engines stepped by hand on the shared harness ([`Net`]): a few nodes, a FIFO of frames, a
//! clock that jumps to the next deadline. (The simulator's `cluster` experiment runs
//! thousands with loss and crashes.)

use hearsay_overlay::swim::{Addr, State, SwimConfig};
use hearsay_protocols::aggregate::Func;
use hearsay_protocols::auth::Unchecked;
use hearsay_protocols::testing::Net;
use hearsay_protocols::{Duration, Instant, Machine, NodeId, Seed};

use super::*;

/// Engines on the shared harness, addressed by index.
struct Cluster {
    net: Net<Engine>,
    ids: Vec<NodeId>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let config = Arc::new(EngineConfig::with_swim(SwimConfig::local()));
        let mut net = Net::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = NodeId::from_u64(1000 + i as u64);
            let seed = Seed::derive(7, "node", 0, i as u64);
            net.add(
                id,
                Engine::new(
                    Arc::new(Unchecked(id)),
                    &format!("n{i}"),
                    Addr::default(),
                    1,
                    config.clone(),
                    &seed,
                    Instant::ZERO,
                ),
            );
            ids.push(id);
        }
        Cluster { net, ids }
    }

    fn node(&self, i: usize) -> &Engine {
        &self.net[self.ids[i]]
    }

    /// Run a command on node `i`, then deliver what it sent.
    fn call<R>(&mut self, i: usize, f: impl FnOnce(&mut Engine, Instant) -> R) -> R {
        self.net.call(self.ids[i], f)
    }

    fn events(&self) -> impl Iterator<Item = (usize, &EngineEvent)> {
        self.net
            .events()
            .iter()
            .map(|(id, e)| (self.ids.iter().position(|x| x == id).unwrap_or(usize::MAX), e))
    }

    fn secs(&mut self, s: u64) {
        self.net.advance(Duration::from_secs(s));
    }

    fn join_all(&mut self) {
        let seed = self.ids[0];
        for i in 1..self.ids.len() {
            self.call(i, |e, now| e.join(now, &[seed])).unwrap();
        }
        self.secs(5);
    }

    fn delivered(&self, node: usize) -> Vec<(NodeId, u64, Bytes)> {
        self.net
            .events_of(self.ids[node])
            .filter_map(|e| match e {
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
    for (_, e) in c.net.machines() {
        let alive: Vec<String> =
            e.members().into_iter().filter(|m| m.state == State::Alive).map(|m| m.name).collect();
        assert_eq!(alive, vec!["n0", "n1", "n2", "n3"], "at {}", e.name());
    }
    assert!(c.events().any(|(i, e)| i == 1 && *e == EngineEvent::Joined));
}

#[test]
fn a_publish_reaches_every_subscriber_once_in_order() {
    let mut c = Cluster::new(4);
    c.join_all();
    for i in 0..4 {
        c.call(i, |e, now| e.subscribe(now, "news", SubscribeFrom::New)).unwrap();
    }
    c.secs(3);
    for k in 0..5u8 {
        c.call(1, |e, now| e.publish(now, "news", Bytes::from(vec![k]))).unwrap();
    }
    c.secs(5);
    let origin = c.node(1).origin();
    for i in 0..4 {
        let got = c.delivered(i);
        let expected: Vec<(NodeId, u64, Bytes)> =
            (0..5u8).map(|k| (origin, u64::from(k) + 1, Bytes::from(vec![k]))).collect();
        assert_eq!(got, expected, "node {i}");
    }
    assert_eq!(c.node(2).node_of_origin(&origin), Some(c.node(1).id()));
}

#[test]
fn an_average_query_is_answered() {
    let mut c = Cluster::new(5);
    c.join_all();
    for (i, v) in [1.0, 2.0, 3.0, 4.0, 5.0].iter().enumerate() {
        c.call(i, |e, now| e.set_value(now, "load", *v)).unwrap();
    }
    c.call(2, |e, now| e.query(now, Func::Avg, "load")).unwrap();
    c.secs(60);
    let answer = c.events().find_map(|(i, e)| match e {
        EngineEvent::Answered { value, converged, .. } if i == 2 => Some((*value, *converged)),
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
    let victim = c.ids[3];
    c.net.silence(victim);
    c.secs(60);
    for i in 0..3 {
        let declared = c.events().any(|(n, e)| {
            n == i && matches!(e, EngineEvent::Member { node, state: State::Dead, .. } if *node == victim)
        });
        assert!(declared, "node {i} never declared the crashed node dead");
        let state = c.node(i).members().into_iter().find(|m| m.id == victim).map(|m| m.state);
        assert!(matches!(state, None | Some(State::Dead)), "node {i} sees {state:?} (dead, or reaped)");
    }
}

/// The member changes node `i` reported on its event stream about `node`, in order.
fn notices_about(c: &Cluster, i: usize, node: NodeId) -> Vec<MemberChange> {
    c.events()
        .filter_map(|(n, e)| match e {
            EngineEvent::Notice(Notice::Member { change, member, .. }) if n == i && member.id == node => {
                Some(*change)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_event_stream_reports_a_join_a_tag_update_a_suspicion_and_a_failure_once_each() {
    let mut c = Cluster::new(4);
    c.join_all();
    let (watcher, victim) = (0, c.ids[3]);
    let tags = hearsay_protocols::tags::Tags::parse(&["role=web"]).unwrap();
    c.call(3, |e, now| e.set_tags(now, tags)).unwrap();
    c.secs(10);
    let seen = c.node(watcher).members().into_iter().find(|m| m.id == victim).map(|m| m.tags);
    assert_eq!(seen.unwrap_or_default().get("role").map(String::as_str), Some("web"));
    c.net.silence(victim);
    c.secs(60);
    assert_eq!(
        notices_about(&c, watcher, victim),
        [MemberChange::Join, MemberChange::Update, MemberChange::Suspect, MemberChange::Failed]
    );
    // The tagged node reported its own change too.
    assert_eq!(notices_about(&c, 3, victim), [MemberChange::Update]);
}

#[test]
fn garbage_frames_are_counted_and_dropped() {
    let mut c = Cluster::new(2);
    c.join_all();
    let (from, to) = (c.ids[1], c.ids[0]);
    for junk in
        [&b""[..], &b"\x01"[..], &b"\x09\x05abc"[..], &b"\x01\x05\xff\xff\xff\xff"[..], &b"\x01\x63"[..]]
    {
        c.net.inject(from, to, Bytes::copy_from_slice(junk));
    }
    let e = c.node(0).stats().decode_errors;
    assert_eq!(e.total(), 5, "{e:?}");
    assert_eq!(c.node(0).members().len(), 2, "membership unchanged");
}

#[test]
fn deadlines_move_forward_after_each_timeout() {
    let config = Arc::new(EngineConfig::with_swim(SwimConfig::local()));
    let mut e = Engine::new(
        Arc::new(Unchecked(NodeId::from_u64(1))),
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

#[test]
fn a_late_subscriber_starts_at_the_heads_and_gets_the_next_message_at_once() {
    let mut c = Cluster::new(4);
    c.join_all();
    for i in [0, 2] {
        c.call(i, |e, now| e.subscribe(now, "news", SubscribeFrom::New)).unwrap();
    }
    c.secs(3);
    for k in 0..20u8 {
        c.call(1, |e, now| e.publish(now, "news", Bytes::from(vec![k]))).unwrap();
    }
    c.secs(3);
    // Node 3 knows the topic's members from their SWIM meta: it asks one of them for the
    // heads as it subscribes, and the next message is its first delivery, with nothing
    // published before it held back or announced as a gap.
    c.call(3, |e, now| e.subscribe(now, "news", SubscribeFrom::New)).unwrap();
    c.call(1, |e, now| e.publish(now, "news", Bytes::from_static(b"next"))).unwrap();
    let origin = c.node(1).origin();
    assert_eq!(c.delivered(3), vec![(origin, 21, Bytes::from_static(b"next"))]);
    c.secs(5);
    assert_eq!(c.delivered(3).len(), 1);
    assert!(!c.events().any(|(i, e)| i == 3 && matches!(e, EngineEvent::Gap { .. })));
}

#[test]
fn a_restarted_node_starts_above_the_incarnation_of_its_previous_life() {
    let mut c = Cluster::new(3);
    c.join_all();
    // Node 2's previous life announced a few incarnations (each meta change raises one).
    for _ in 0..4 {
        c.call(2, |e, now| e.subscribe(now, "news", SubscribeFrom::New)).unwrap();
        c.call(2, |e, now| e.unsubscribe(now, "news"));
    }
    c.secs(3);
    let last = c.node(2).incarnation();
    assert!(last >= 8, "{last}");
    for i in 0..2 {
        let seen = c.node(i).members().into_iter().find(|m| m.id == c.ids[2]).map(|m| m.incarnation);
        assert_eq!(seen, Some(last), "node {i}");
    }
    // Its next life, with what its host kept: above the last one from the start, never lowered.
    let config = Arc::new(EngineConfig::with_swim(SwimConfig::local()));
    let now = c.net.now();
    let mut next = Engine::new(
        Arc::new(Unchecked(c.ids[2])),
        "n2",
        Addr::default(),
        1,
        config,
        &Seed::derive(7, "node", 1, 2),
        now,
    );
    next.raise_incarnation(last + 1);
    next.raise_incarnation(1);
    assert_eq!(next.incarnation(), last + 1);
    *c.net.machine_mut(c.ids[2]) = next;
    let seed = c.ids[0];
    c.call(2, |e, now| e.join(now, &[seed])).unwrap();
    c.secs(2);
    for i in 0..2 {
        let m = c.node(i).members().into_iter().find(|m| m.id == c.ids[2]).expect("known");
        assert!(m.incarnation > last && m.state == State::Alive, "node {i}: {m:?}");
    }
}

#[test]
fn a_flood_of_syns_from_one_peer_is_answered_at_its_rate_and_counted() {
    use hearsay_protocols::anti_entropy::{AeMessage, AeMode, Digest};
    let config = Arc::new(EngineConfig::with_swim(SwimConfig::local()));
    let me = NodeId::from_u64(1);
    let rogue = NodeId::from_u64(2);
    let seed = Seed::derive(7, "node", 0, 0);
    let mut e = Engine::new(Arc::new(Unchecked(me)), "n0", Addr::default(), 1, config, &seed, Instant::ZERO);
    let now = Instant::from_micros(5_000_000);
    while e.poll_transmit().is_some() {}
    let syn = |xid| AeMessage::Syn {
        xid,
        mode: AeMode::Pull,
        scope: Vec::new(),
        digest: Digest { summaries: Vec::new(), partial: false },
    };
    for xid in 0..1_000 {
        let frame = frames::encode(&syn(xid), e.config.frame_limit).unwrap();
        e.handle_message(now, rogue, frame);
    }
    let answered = std::iter::from_fn(|| e.poll_transmit()).filter(|t| t.to == rogue).count();
    let limited = e.stats().replies_limited[limits::Amplifier::Syn as usize];
    assert_eq!(limited, 1_000 - 2 * limits::SYN_PER_SEC, "all but the burst are dropped and counted");
    assert!(answered <= 2 * limits::SYN_PER_SEC as usize, "{answered} answers to one peer in one instant");
    // Another peer is not held back by the first one's flood.
    let frame = frames::encode(&syn(5_000), e.config.frame_limit).unwrap();
    e.handle_message(now, NodeId::from_u64(3), frame);
    assert_eq!(e.stats().replies_limited[limits::Amplifier::Syn as usize], limited);
}
