//! Property tests of the wire envelope: every message survives encode → decode unchanged, and
//! no byte string, however hostile, makes decoding panic.

use bytes::Bytes;
use hearsay_protocols::anti_entropy::{AeMessage, AeMode, Digest, Entry, StreamSummary};
use hearsay_protocols::wire::{self, DEFAULT_FRAME_LIMIT, DecodeError, Frame};
use hearsay_protocols::{NodeId, StreamId, TopicId};
use proptest::prelude::*;

fn node() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId::from_bytes)
}

fn stream() -> impl Strategy<Value = StreamId> {
    (any::<u64>(), node()).prop_map(|(t, origin)| StreamId { topic: TopicId(t), origin })
}

fn summary() -> impl Strategy<Value = StreamSummary> {
    (stream(), any::<u64>(), any::<u64>(), any::<u64>(), prop::collection::vec(any::<u64>(), 0..8)).prop_map(
        |(stream, floor, contig, max, missing)| StreamSummary { stream, floor, contig, max, missing },
    )
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        stream(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<u64>(),
        any::<[u8; 8]>(),
        any::<u8>(),
    )
        .prop_map(|(stream, seq, p, at, key_tail, s)| Entry {
            stream,
            seq,
            payload: Bytes::from(p),
            published_at: hearsay_protocols::Instant::from_micros(at),
            seal: hearsay_protocols::auth::Seal {
                key_tail,
                sig: hearsay_protocols::auth::Signature([s; 64]),
            },
        })
}

fn digest() -> impl Strategy<Value = Digest> {
    (prop::collection::vec(summary(), 0..4), any::<bool>())
        .prop_map(|(summaries, partial)| Digest { summaries, partial })
}

fn mode() -> impl Strategy<Value = AeMode> {
    prop_oneof![Just(AeMode::Push), Just(AeMode::Pull), Just(AeMode::PushPull), Just(AeMode::Heads)]
}

fn ae_message() -> impl Strategy<Value = AeMessage> {
    let topics = || prop::collection::vec(any::<u64>().prop_map(TopicId), 0..6);
    let entries = || prop::collection::vec(entry(), 0..4);
    prop_oneof![
        (any::<u64>(), mode(), topics(), digest())
            .prop_map(|(xid, mode, scope, digest)| { AeMessage::Syn { xid, mode, scope, digest } }),
        (any::<u64>(), topics(), digest(), entries(), any::<bool>()).prop_map(
            |(xid, scope, digest, delta, more)| AeMessage::SynAck {
                xid,
                scope,
                digest,
                delta,
                more,
                proofs: vec![]
            }
        ),
        (any::<u64>(), entries(), any::<bool>()).prop_map(|(xid, delta, more)| AeMessage::Delta {
            xid,
            delta,
            more
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips(msg in ae_message()) {
        let bytes = wire::encode(&msg, DEFAULT_FRAME_LIMIT).unwrap();
        prop_assert_eq!(wire::encoded_len(&msg), bytes.len());
        let back: AeMessage = wire::decode(&bytes, DEFAULT_FRAME_LIMIT).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // Any outcome is fine as long as it is a value, not a panic.
        if let Ok(frame) = Frame::open(&bytes, DEFAULT_FRAME_LIMIT) {
            let _ = frame.decode::<AeMessage>();
        }
    }

    #[test]
    fn valid_header_with_random_body_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = vec![1u8, 1u8]; // version 1, kind anti-entropy
        bytes.extend_from_slice(&body);
        let _ = wire::decode::<AeMessage>(&bytes, DEFAULT_FRAME_LIMIT);
    }

    #[test]
    fn truncation_and_corruption_are_errors_not_panics(msg in ae_message(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let bytes = wire::encode(&msg, DEFAULT_FRAME_LIMIT).unwrap();
        let n = cut.index(bytes.len());
        prop_assert!(wire::decode::<AeMessage>(&bytes[..n], DEFAULT_FRAME_LIMIT).is_err());
        let mut corrupt = bytes.clone();
        let i = flip.0.index(corrupt.len());
        corrupt[i] ^= flip.1 | 1;
        let _ = wire::decode::<AeMessage>(&corrupt, DEFAULT_FRAME_LIMIT);
    }

    #[test]
    fn oversized_frames_are_refused_before_decoding(len in 65usize..4096) {
        let bytes = vec![0u8; len];
        prop_assert_eq!(Frame::open(&bytes, 64), Err(DecodeError::TooLarge { len, limit: 64 }));
    }
}
