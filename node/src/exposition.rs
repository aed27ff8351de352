//! Filling [`Metrics`] from the Engine's, the machines' and the transport's own counters at
//! scrape time (every counter there is a monotonic total since start).

use hearsay_overlay::swim::State;

use hearsay_protocols::pbcast::Via;
use hearsay_protocols::wire::Protocol;

use crate::engine::Engine;
use crate::metrics::{DecodeErrorKind, MemberState, Metrics, ProofEvent, RefusedReason, Traffic};
use crate::transport::Transport;

/// Copy every figure of `engine` and `transport` into `m`.
pub(crate) fn update(
    m: &Metrics,
    engine: &Engine,
    transport: &Transport,
    subscriptions: usize,
    store: Option<&crate::store::Store>,
) {
    if let Some(store) = store {
        m.set_store(&store.stats());
    }
    let stats = engine.stats();
    for p in Protocol::NODE {
        let i = p.index();
        m.set_traffic(
            p,
            Traffic {
                messages_sent: stats.traffic.sent[i],
                messages_received: stats.traffic.received[i],
                bytes_sent: stats.traffic.bytes_sent[i],
                bytes_received: stats.traffic.bytes_received[i],
            },
        );
    }
    for (via, n) in Via::ALL.into_iter().zip(stats.delivered) {
        m.set_deliveries(via, n);
    }
    let pb = engine.pbcast().stats();
    m.set_duplicates(pb.duplicates);
    m.set_repairs(pb.seqs_solicited, pb.retransmitted);
    m.set_gaps(stats.gaps.0, stats.gaps.1);
    let members = engine.swim().members();
    for (label, state) in [
        (MemberState::Alive, State::Alive),
        (MemberState::Suspect, State::Suspect),
        (MemberState::Dead, State::Dead),
        (MemberState::Left, State::Left),
    ] {
        m.set_members(label, members.iter().filter(|x| x.state == state).count() as u64);
    }
    let swim = engine.swim().stats();
    m.set_suspicions(swim.suspicions, swim.refutations);
    m.set_local_health(engine.swim().health());
    m.set_membership_queued(engine.swim().queued_updates());
    m.set_queries(engine.aggregation().stats().answered);
    let e = stats.decode_errors;
    for (kind, n) in [
        (DecodeErrorKind::TooLarge, e.too_large),
        (DecodeErrorKind::Truncated, e.truncated),
        (DecodeErrorKind::UnsupportedVersion, e.unsupported_version),
        (DecodeErrorKind::UnknownKind, e.unknown_kind),
        (DecodeErrorKind::Malformed, e.malformed),
        (DecodeErrorKind::TrailingBytes, e.trailing_bytes),
        (DecodeErrorKind::DroppedMalformed, dropped_malformed(engine)),
    ] {
        m.set_decode_errors(kind, n);
    }
    let ae = engine.anti_entropy().stats();
    let limited = stats.replies_limited;
    for (reason, n) in [
        (RefusedReason::PbcastForged, pb.forged),
        (RefusedReason::PbcastStreamsFull, pb.refused_streams),
        (RefusedReason::PbcastHoldFull, pb.hold_refused),
        (RefusedReason::PbcastUnprovenForgotten, pb.unproven_forgotten),
        (RefusedReason::AeForged, ae.forged),
        (RefusedReason::AeStoreFull, ae.refused_full),
        (RefusedReason::AeUnsolicited, ae.unsolicited),
        (RefusedReason::SwimForged, swim.forged),
        (RefusedReason::SwimClamped, swim.clamped),
        (RefusedReason::SwimMembersFull, swim.members_refused),
        (RefusedReason::SwimRecordsDropped, swim.records_dropped),
        (RefusedReason::SwimPingReqsRefused, swim.ping_reqs_refused),
        (RefusedReason::LimitedAeSyn, limited[0]),
        (RefusedReason::LimitedRumorPull, limited[1]),
        (RefusedReason::LimitedSwimPushPull, limited[2]),
    ] {
        m.set_refused(reason, n);
    }
    for (event, n) in [
        (ProofEvent::Wanted, pb.proofs_wanted),
        (ProofEvent::Sent, pb.proofs_sent),
        (ProofEvent::Received, pb.proofs_received),
    ] {
        m.set_proofs(event, n);
    }
    m.set_trees(engine.scribe().trees().map(|tv| crate::metrics::TreePosition {
        topic: engine.topic_name(tv.topic).map_or_else(|| tv.topic.to_string(), str::to_string),
        depth: (!tv.joining).then(|| u32::try_from(tv.depth()).unwrap_or(u32::MAX)),
        children: u32::try_from(tv.children.len()).unwrap_or(u32::MAX),
    }));
    m.set_transport(transport);
    m.set_subscriptions(subscriptions);
}

/// Messages that decoded but a machine dropped as malformed or out of bounds, over every
/// machine of the Engine.
fn dropped_malformed(engine: &Engine) -> u64 {
    let [topics, queries] = engine.rumors();
    [
        engine.swim().stats().malformed,
        engine.chord().stats().malformed,
        engine.scribe().stats().malformed,
        engine.pbcast().stats().malformed,
        engine.anti_entropy().stats().malformed,
        topics.stats().malformed,
        queries.stats().malformed,
        engine.aggregation().stats().malformed,
    ]
    .into_iter()
    .fold(0u64, u64::saturating_add)
}
