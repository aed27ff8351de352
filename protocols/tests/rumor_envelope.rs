//! Property tests for the rumor-mongering and flooding messages: they survive the envelope
//! unchanged, hostile bytes never make decoding panic, and a machine fed arbitrary messages
//! from arbitrary peers never panics and never delivers from a malformed message.

use std::sync::Arc;

use bytes::Bytes;
use hearsay_protocols::flood::{Bcrm, BcrmConfig, FloodConfig, FloodMessage, Flooding};
use hearsay_protocols::rumor::{
    Direction, Rumor, RumorConfig, RumorId, RumorMessage, RumorMonger, Staging, Variant,
};
use hearsay_protocols::wire::{self, DEFAULT_FRAME_LIMIT, Frame};
use hearsay_protocols::{Instant, Machine, NodeId, Seed, StreamId, Timing, TopicId};
use proptest::prelude::*;

fn node() -> impl Strategy<Value = NodeId> {
    (0u64..6).prop_map(NodeId::from_u64)
}

fn peer() -> impl Strategy<Value = NodeId> {
    (1u64..6).prop_map(NodeId::from_u64)
}

fn rumor_id() -> impl Strategy<Value = RumorId> {
    prop_oneof![
        (0u64..3, node(), 0u64..5).prop_map(|(t, origin, seq)| RumorId::Message {
            stream: StreamId { topic: TopicId(t), origin },
            seq
        }),
        (node(), 0u64..3).prop_map(|(querier, counter)| RumorId::Query { querier, counter }),
    ]
}

fn rumor_message() -> impl Strategy<Value = RumorMessage> {
    let item = (rumor_id(), prop::collection::vec(any::<u8>(), 0..32))
        .prop_map(|(id, p)| Rumor { id, payload: Bytes::from(p) });
    prop_oneof![
        (prop::collection::vec(item, 0..5), any::<bool>(), any::<bool>())
            .prop_map(|(items, pull, want_feedback)| RumorMessage::Rumors { items, pull, want_feedback }),
        Just(RumorMessage::Pull),
        prop::collection::vec((rumor_id(), any::<bool>()), 0..5)
            .prop_map(|items| RumorMessage::Feedback { items }),
    ]
}

fn flood_message() -> impl Strategy<Value = FloodMessage> {
    prop_oneof![
        (rumor_id(), any::<u8>()).prop_map(|(id, ttl)| FloodMessage::Flood {
            id,
            ttl,
            payload: Bytes::new()
        }),
        rumor_id().prop_map(|id| FloodMessage::Gossip { id, payload: Bytes::new() }),
    ]
}

fn variant() -> impl Strategy<Value = Variant> {
    prop_oneof![
        Just(Variant::FeedbackCounter),
        Just(Variant::FeedbackCoin),
        Just(Variant::BlindCounter),
        Just(Variant::BlindCoin)
    ]
}

fn sorted_ok(msg: &RumorMessage) -> bool {
    match msg {
        RumorMessage::Rumors { items, .. } => items.windows(2).all(|w| w[0].id < w[1].id),
        RumorMessage::Feedback { items } => items.windows(2).all(|w| w[0].0 < w[1].0),
        RumorMessage::Pull => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rumor_messages_round_trip(msg in rumor_message()) {
        let bytes = wire::encode(&msg, DEFAULT_FRAME_LIMIT).unwrap();
        prop_assert_eq!(wire::encoded_len(&msg), bytes.len());
        prop_assert_eq!(wire::decode::<RumorMessage>(&bytes, DEFAULT_FRAME_LIMIT).unwrap(), msg);
    }

    #[test]
    fn flood_messages_round_trip(msg in flood_message()) {
        let bytes = wire::encode(&msg, DEFAULT_FRAME_LIMIT).unwrap();
        prop_assert_eq!(wire::decode::<FloodMessage>(&bytes, DEFAULT_FRAME_LIMIT).unwrap(), msg);
    }

    #[test]
    fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        for kind in [2u8, 8u8] {
            let mut bytes = vec![1u8, kind];
            bytes.extend_from_slice(&body);
            if let Ok(frame) = Frame::open(&bytes, DEFAULT_FRAME_LIMIT) {
                let _ = frame.decode::<RumorMessage>();
                let _ = frame.decode::<FloodMessage>();
            }
        }
    }

    #[test]
    fn rumor_machine_survives_arbitrary_input(
        variant in variant(),
        staging in prop_oneof![Just(Staging::Immediate), Just(Staging::AtCycleStart)],
        direction in prop_oneof![Just(Direction::Push), Just(Direction::Pull), Just(Direction::PushPull)],
        inputs in prop::collection::vec((peer(), rumor_message(), any::<bool>()), 0..40),
    ) {
        let cfg = Arc::new(RumorConfig {
            variant, staging, direction, k: 2, timing: Timing::Sync, hot_max: 4, known_max: 8,
            ..RumorConfig::default()
        });
        let me = NodeId::from_u64(0);
        let mut m = RumorMonger::new(me, cfg, &Seed::derive(1, "node", 0, 0), Instant::ZERO);
        m.handle_peers(Instant::ZERO, (0..6).map(NodeId::from_u64).collect());
        let mut now = Instant::ZERO;
        for (from, msg, tick) in inputs {
            if tick {
                now = m.poll_timeout().unwrap_or(now + hearsay_protocols::Duration::from_millis(200));
                m.handle_timeout(now);
                while m.poll_event().is_some() {}
                while let Some(t) = m.poll_transmit() {
                    prop_assert!(t.to != me);
                }
            }
            let malformed_before = m.stats().malformed;
            let ok = sorted_ok(&msg);
            m.handle_message(now, from, msg);
            prop_assert_eq!(m.stats().malformed, malformed_before + u64::from(!ok));
            let mut delivered = 0;
            while m.poll_event().is_some() { delivered += 1; }
            if !ok {
                prop_assert_eq!(delivered, 0);
            }
            while let Some(t) = m.poll_transmit() {
                prop_assert!(t.to != me);
                prop_assert!(sorted_ok(&t.msg));
            }
            prop_assert!(m.active() <= 4);
        }
    }

    #[test]
    fn flood_machines_survive_arbitrary_input(inputs in prop::collection::vec((node(), flood_message()), 0..40)) {
        let me = NodeId::from_u64(0);
        let peers: hearsay_protocols::PeerView = (1..6).map(NodeId::from_u64).collect();
        let mut f = Flooding::new(me, Arc::new(FloodConfig::default()));
        let mut b = Bcrm::new(me, Arc::new(BcrmConfig::default()), &Seed::derive(1, "node", 0, 0));
        f.set_neighbours(peers.clone());
        b.set_neighbours(peers);
        for (from, msg) in inputs {
            f.handle_message(Instant::ZERO, from, msg.clone());
            b.handle_message(Instant::ZERO, from, msg);
            while let Some(t) = f.poll_transmit() {
                prop_assert!(t.to != me && t.to != from);
            }
            while let Some(t) = b.poll_transmit() {
                prop_assert!(t.to != me && t.to != from);
            }
        }
    }
}
