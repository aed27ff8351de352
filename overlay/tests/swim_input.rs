//! Untrusted input: whatever a peer sends, SWIM never panics, keeps its invariants, and never
//! builds a datagram over the budget.

use std::sync::Arc;

use hearsay_overlay::swim::{
    Addr, MemberRecord, Meta, Profile, SharedProfile, State, Swim, SwimConfig, SwimMessage, TableDigest,
    Update, alive_claim,
};
use hearsay_protocols::auth::{Authenticator, Signature, Unchecked};
use hearsay_protocols::wire::{self, DATAGRAM_BUDGET, DEFAULT_FRAME_LIMIT};
use hearsay_protocols::{Duration, Instant, Machine, NodeId, Reliability, Seed, Timing, TopicId};
use proptest::prelude::*;

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn machine() -> Swim {
    let others: Vec<(NodeId, SharedProfile)> = (2..=6).map(|n| (id(n), SharedProfile::default())).collect();
    let cfg = Arc::new(SwimConfig { timing: Timing::Phased, ..SwimConfig::lan() });
    let auth = Arc::new(Unchecked(id(1)));
    Swim::with_members(auth, Profile::default(), cfg, &Seed::derive(3, "node", 0, 1), Instant::ZERO, &others)
}

fn node() -> impl Strategy<Value = NodeId> {
    (1u64..=9).prop_map(id)
}

fn incarnation() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4, Just(u64::MAX), Just(u64::MAX - 1)]
}

fn profile() -> impl Strategy<Value = SharedProfile> {
    (any::<bool>(), proptest::collection::vec(0u64..5, 0..3)).prop_map(|(sock, topics)| {
        let addr = if sock { Addr::from_socket("127.0.0.1:7946".parse().unwrap()) } else { Addr::default() };
        let meta = Meta::new(topics.into_iter().map(TopicId).collect()).unwrap_or_default();
        SharedProfile::new(Profile { addr, meta })
    })
}

/// `node`'s signature over its `Alive`, or (when `forged`) a signature that does not verify.
fn sig(node: NodeId, incarnation: u64, profile: &SharedProfile, forged: bool) -> Signature {
    if forged {
        Signature::ZERO
    } else {
        Unchecked(node).sign(&alive_claim(&node, incarnation, profile.profile()))
    }
}

fn update() -> impl Strategy<Value = Update> {
    prop_oneof![
        (node(), incarnation(), profile(), any::<bool>()).prop_map(|(node, incarnation, profile, forged)| {
            let sig = sig(node, incarnation, &profile, forged);
            Update::Alive { node, incarnation, profile, sig }
        }),
        (node(), incarnation(), node()).prop_map(|(node, incarnation, from)| Update::Suspect {
            node,
            incarnation,
            from
        }),
        (node(), incarnation(), node()).prop_map(|(node, incarnation, from)| Update::Dead {
            node,
            incarnation,
            from
        }),
    ]
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![Just(State::Alive), Just(State::Suspect), Just(State::Dead), Just(State::Left)]
}

fn message() -> impl Strategy<Value = SwimMessage> {
    let updates = || proptest::collection::vec(update(), 0..6);
    let seq = || 0u32..6;
    prop_oneof![
        (seq(), node(), updates()).prop_map(|(seq, target, updates)| SwimMessage::Ping {
            seq,
            target,
            updates
        }),
        (seq(), updates()).prop_map(|(seq, updates)| SwimMessage::Ack { seq, updates }),
        (seq(), node(), any::<bool>(), updates()).prop_map(|(seq, target, want_nack, updates)| {
            SwimMessage::PingReq { seq, target, want_nack, updates }
        }),
        (seq(), updates()).prop_map(|(seq, updates)| SwimMessage::Nack { seq, updates }),
        updates().prop_map(|updates| SwimMessage::Gossip { updates }),
        (any::<bool>(), any::<[u8; 16]>())
            .prop_map(|(reply, digest)| SwimMessage::PushPullDigest { reply, digest: TableDigest(digest) }),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec((node(), incarnation(), state(), profile(), any::<bool>()), 0..6)
        )
            .prop_map(|(join, reply, states)| SwimMessage::PushPull {
                join,
                reply,
                states: states
                    .into_iter()
                    .map(|(node, incarnation, state, profile, forged)| MemberRecord {
                        node,
                        incarnation,
                        state,
                        sig: Some(sig(node, incarnation, &profile, forged)),
                        profile,
                    })
                    .collect(),
            }),
    ]
}

/// Drain the outputs, checking every datagram against the budget.
fn drain(m: &mut Swim) {
    while let Some(t) = m.poll_transmit() {
        if t.reliability == Reliability::Datagram {
            let len = wire::encoded_len(&t.msg);
            assert!(len <= DATAGRAM_BUDGET, "datagram of {len} bytes: {:?}", t.msg);
        }
        assert_ne!(t.to, m.id(), "never sends to itself");
    }
    while m.poll_event().is_some() {}
}

fn check_invariants(m: &Swim, now: Instant) {
    let own = m.member(&m.id()).expect("own entry");
    assert!(matches!(own.state, State::Alive | State::Left));
    for e in m.members() {
        assert_eq!(e.state == State::Suspect, e.suspicion_deadline().is_some(), "{e:?}");
    }
    assert!(m.members().windows(2).all(|w| w[0].id < w[1].id), "table sorted and deduplicated");
    if let Some(t) = m.poll_timeout() {
        assert!(t > now, "a due timer was left unserved: {t} <= {now}");
    }
    assert!(m.health() < m.config().awareness_max_multiplier);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut framed = vec![1u8, 5];
        framed.extend_from_slice(&bytes);
        for frame in [&bytes[..], &framed[..]] {
            if let Ok(msg) = wire::decode::<SwimMessage>(frame, DEFAULT_FRAME_LIMIT) {
                let mut m = machine();
                let now = Instant::from_micros(10);
                m.handle_message(now, id(2), msg);
                m.handle_timeout(now);
                drain(&mut m);
                check_invariants(&m, now);
            }
        }
    }

    #[test]
    fn any_sequence_of_messages_keeps_the_invariants(
        steps in proptest::collection::vec((0u64..700, 2u64..=9, message(), any::<bool>()), 1..60)
    ) {
        let mut m = machine();
        let mut now = Instant::ZERO;
        for (gap_ms, from, msg, leave) in steps {
            now += Duration::from_millis(gap_ms);
            m.handle_timeout(now);
            drain(&mut m);
            m.handle_message(now, id(from), msg);
            drain(&mut m);
            if leave && gap_ms == 0 {
                m.leave(now);
                drain(&mut m);
            }
            // An input may make a deadline due at once (a confirmation that shortens a
            // suspicion below its elapsed time): the driver serves it now.
            m.handle_timeout(now);
            drain(&mut m);
            check_invariants(&m, now);
        }
    }
}
