//! pbcast stepped by hand: a few machines, sync ticks at whole seconds, and the `testing::Net`
//! harness (zero latency, chosen messages dropped) where they talk.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::anti_entropy::{Entry, Store};
use crate::auth::{Proof, Unchecked};
use crate::machine::{Machine, Reliability, Transmit};
use crate::testing::Net;
use crate::time::Duration;
use crate::timer::Timing;
use crate::{Rng, StreamId};

const T: TopicId = TopicId(7);

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn sec(k: u64) -> Instant {
    Instant::from_micros(k * 1_000_000)
}

fn config() -> PbConfig {
    PbConfig {
        period: Duration::from_secs(1),
        timing: Timing::Sync,
        pull_on_missing: false,
        ..PbConfig::default()
    }
}

fn view(members: &[u64]) -> PeerView {
    members.iter().map(|&m| id(m)).collect()
}

/// Node `n`, subscribed from the first message, drawing partners from `members`.
fn node(n: u64, cfg: &PbConfig, members: &[u64]) -> Pbcast {
    let mut m = Pbcast::new(
        id(n),
        Arc::new(Unchecked(id(n))),
        Arc::new(cfg.clone()),
        &Seed::derive(42, "node", 0, n),
        Instant::ZERO,
    );
    m.handle_topic_peers(Instant::ZERO, T, view(members));
    m.subscribe(Instant::ZERO, T, Start::FromFirst);
    m
}

/// Message `seq` of `origin`'s stream, sealed by `origin`.
fn data(origin: u64, seq: Seq) -> Data {
    let payload = Bytes::from(format!("{origin}/{seq}"));
    let seal = crate::auth::seal(&Unchecked(id(origin)), &id(origin), T.0, seq, 0, &payload);
    Data { id: MsgId { origin: id(origin), topic: T, seq }, published_at: Instant::ZERO, payload, seal }
}

/// The proof that message `seq` of `origin`'s stream exists (as [`data`] makes it).
fn proof(origin: u64, seq: Seq) -> Proof {
    let d = data(origin, seq);
    Proof {
        origin: id(origin),
        topic: T.0,
        seq,
        published_at: 0,
        digest: crate::auth::payload_digest(&d.payload),
        seal: d.seal,
    }
}

fn transmits(m: &mut Pbcast) -> Vec<Transmit<PbMessage>> {
    std::iter::from_fn(|| m.poll_transmit()).collect()
}

fn events(m: &mut Pbcast) -> Vec<PbEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// (origin, seq, via) of every delivery among `events`, in order.
fn delivered(events: &[PbEvent]) -> Vec<(u64, Seq, Via)> {
    events
        .iter()
        .filter_map(|e| match e {
            PbEvent::Deliver(d) => Some((d.id.origin.prefix_u64(), d.id.seq, d.via)),
            _ => None,
        })
        .collect()
}

fn gaps(events: &[PbEvent]) -> Vec<(u64, Seq, Seq)> {
    events
        .iter()
        .filter_map(|e| match e {
            PbEvent::Gap { origin, first, last, .. } => Some((origin.prefix_u64(), *first, *last)),
            _ => None,
        })
        .collect()
}

/// A log line: (from, to, message).
type Sent = (u64, u64, PbMessage);

/// The messages `net` delivered after the first `mark` it carried, in order.
fn log_since(net: &Net<Pbcast>, mark: usize) -> Vec<Sent> {
    let sent = net.sent()[mark..].iter().filter(|s| s.delivered);
    sent.map(|s| (s.from.prefix_u64(), s.to.prefix_u64(), s.msg.clone())).collect()
}

#[test]
fn first_phase_delivers_once_and_the_origin_delivers_its_own() {
    let cfg = config();
    let mut a = node(1, &cfg, &[1, 2, 3]);
    let mut b = node(2, &cfg, &[1, 2, 3]);
    let d = a.publish(Instant::ZERO, T, Bytes::from_static(b"hello")).unwrap();
    assert_eq!(d.id, MsgId { origin: id(1), topic: T, seq: 1 });
    assert_eq!(delivered(&events(&mut a)), vec![(1, 1, Via::Local)]);
    a.multicast(Instant::ZERO, &d, &[id(1), id(2), id(3)]);
    let sent = transmits(&mut a);
    assert_eq!(sent.iter().map(|t| t.to.prefix_u64()).collect::<Vec<_>>(), vec![2, 3], "self skipped");
    assert!(sent.iter().all(|t| t.reliability == Reliability::Datagram));
    let PbMessage::Data(copy) = sent[0].msg.clone() else { panic!("a first-phase copy is Data") };
    b.handle_message(sec(0), id(1), PbMessage::Data(copy.clone()));
    b.handle_message(sec(0), id(1), PbMessage::Data(copy));
    let ev = events(&mut b);
    assert_eq!(delivered(&ev), vec![(1, 1, Via::FirstPhase)]);
    let PbEvent::Deliver(del) = &ev[0] else { panic!() };
    assert_eq!(del.payload, Bytes::from_static(b"hello"));
    assert_eq!((b.stats().received, b.stats().duplicates, b.stats().delivered), (1, 1, 1));
    let d2 = a.publish(Instant::ZERO, T, Bytes::new()).unwrap();
    assert_eq!(d2.id.seq, 2, "seq rises per (origin, topic)");
}

#[test]
fn a_digest_brings_a_solicitation_to_its_sender_and_a_retransmission_back() {
    let cfg = config();
    let mut net: Net<Pbcast> = [
        (id(1), node(1, &cfg, &[1])),    // a gossips with nobody
        (id(2), node(2, &cfg, &[2, 3])), // b's only partner is c
        (id(3), node(3, &cfg, &[3])),
    ]
    .into_iter()
    .collect();
    // c's first-phase copy is lost.
    net.set_drop(|_, to, _| to == id(3));
    net.call(id(1), |a, now| {
        let d = a.publish(now, T, Bytes::from_static(b"m")).unwrap();
        a.multicast(now, &d, &[id(2), id(3)]);
    });
    net.take_events_of(id(3));
    net.clear_drop();
    let mark = net.sent().len();
    net.run_until(sec(1));
    let log = log_since(&net, mark);
    assert_eq!(log.len(), 3, "{log:?}");
    let (2, 3, PbMessage::Digest { summaries, .. }) = &log[0] else { panic!("{:?}", log[0]) };
    assert_eq!((summaries[0].stream.origin, summaries[0].floor, summaries[0].max), (id(1), 1, 1));
    let (3, 2, PbMessage::Solicit { wants, .. }) = &log[1] else { panic!("{:?}", log[1]) };
    assert_eq!(wants, &vec![(id(1), vec![1])]);
    let (2, 3, PbMessage::Retransmit(r)) = &log[2] else { panic!("{:?}", log[2]) };
    assert_eq!(r.id.seq, 1);
    let ev = net.take_events_of(id(3));
    assert_eq!(delivered(&ev), vec![(1, 1, Via::Repair)]);
    let PbEvent::Deliver(del) = &ev[0] else { panic!() };
    assert_eq!(del.received_at, sec(1));
    assert_eq!((net[id(2)].stats().retransmitted, net[id(3)].stats().solicits_sent), (1, 1));
}

#[test]
fn fifo_per_origin_holds_later_seqs_and_never_delivers_twice() {
    let cfg = config();
    let mut b = node(2, &cfg, &[2]);
    b.handle_message(sec(0), id(1), PbMessage::Data(data(1, 2)));
    b.handle_message(sec(0), id(9), PbMessage::Data(data(9, 1)));
    assert_eq!(delivered(&events(&mut b)), vec![(9, 1, Via::FirstPhase)], "other origins do not wait");
    assert!(b.has_known_missing());
    b.handle_message(sec(0), id(1), PbMessage::Retransmit(data(1, 1)));
    assert_eq!(delivered(&events(&mut b)), vec![(1, 1, Via::Repair), (1, 2, Via::FirstPhase)]);
    b.handle_message(sec(0), id(1), PbMessage::Retransmit(data(1, 2)));
    assert!(events(&mut b).is_empty());
    assert_eq!(b.next_delivery(T, id(1)), Some(3));
    assert!(!b.has_known_missing());
}

#[test]
fn a_seq_that_never_comes_becomes_a_gap_after_gap_after_rounds() {
    let cfg = PbConfig { gc_rounds: 3, ..config() }; // gap_after = 6
    let mut b = node(2, &cfg, &[2]);
    b.handle_timeout(sec(1)); // round 1
    b.handle_message(sec(1), id(1), PbMessage::Data(data(1, 3)));
    assert!(delivered(&events(&mut b)).is_empty());
    for k in 2..=6 {
        b.handle_timeout(sec(k));
        assert!(events(&mut b).is_empty(), "round {k}");
    }
    b.handle_timeout(sec(7)); // round 7: seqs 1 and 2 known missing since round 1
    let ev = events(&mut b);
    assert_eq!(gaps(&ev), vec![(1, 1, 2)]);
    assert_eq!(delivered(&ev), vec![(1, 3, Via::FirstPhase)]);
    assert!(matches!(ev[0], PbEvent::Gap { .. }), "the gap is announced before what it unblocks");
    assert_eq!((b.stats().gaps, b.stats().gap_seqs), (1, 2));
    // A late copy of a lost seq is kept for others but never delivered.
    b.handle_message(sec(7), id(1), PbMessage::Retransmit(data(1, 1)));
    assert!(events(&mut b).is_empty());
    assert!(b.holds(&MsgId { origin: id(1), topic: T, seq: 1 }));
}

#[test]
fn later_knowledge_gives_later_seqs_their_own_deadline() {
    let cfg = PbConfig { gc_rounds: 2, ..config() }; // gap_after = 4
    let mut b = node(2, &cfg, &[2]);
    b.handle_timeout(sec(1));
    b.handle_message(sec(1), id(1), PbMessage::Data(data(1, 2))); // 1 missing since r1
    b.handle_timeout(sec(2));
    // A digest in round 2 tells b that seq 4 exists: 3 is missing since round 2.
    let summary = summarize(StreamId { topic: T, origin: id(1) }, [4], 32);
    b.handle_message(sec(2), id(5), PbMessage::Digest { topic: T, summaries: vec![summary] });
    let solicit = transmits(&mut b);
    assert!(matches!(&solicit[0].msg, PbMessage::Solicit { wants, .. } if wants == &vec![(id(1), vec![4])]));
    for k in 3..=4 {
        b.handle_timeout(sec(k));
    }
    assert!(gaps(&events(&mut b)).is_empty());
    b.handle_timeout(sec(5)); // 1 is overdue (r1 + 4), 3 is not (r2 + 4 = 6)
    let ev = events(&mut b);
    assert_eq!(gaps(&ev), vec![(1, 1, 1)]);
    assert_eq!(delivered(&ev), vec![(1, 2, Via::FirstPhase)]);
    b.handle_timeout(sec(6));
    assert!(gaps(&events(&mut b)).is_empty(), "a digest's word alone proves nothing: no gap for 3..4");
    // Seq 5 comes, sealed by its origin: 3 and 4 are proven to exist, and overdue.
    b.handle_message(sec(6), id(1), PbMessage::Data(data(1, 5)));
    b.handle_timeout(sec(7));
    let ev = events(&mut b);
    assert_eq!(gaps(&ev), vec![(1, 3, 4)]);
    assert_eq!(delivered(&ev), vec![(1, 5, Via::FirstPhase)]);
}

#[test]
fn an_unproven_seq_is_given_up_once_a_member_proves_it_and_forgotten_if_none_does() {
    let cfg = PbConfig { gc_rounds: 2, ..config() }; // gap_after = 4
    let mut b = node(2, &cfg, &[2, 3]);
    b.handle_message(sec(0), id(1), PbMessage::Data(data(1, 1)));
    assert_eq!(delivered(&events(&mut b)), vec![(1, 1, Via::FirstPhase)]);
    b.handle_timeout(sec(1));
    // Round 1: a digest says seqs 2 and 3 exist; the retransmissions never come.
    let summary = summarize(StreamId { topic: T, origin: id(1) }, [3], 32);
    b.handle_message(sec(1), id(3), PbMessage::Digest { topic: T, summaries: vec![summary] });
    transmits(&mut b);
    let mut asked = Vec::new();
    for k in 2..=5 {
        b.handle_timeout(sec(k));
        asked
            .extend(transmits(&mut b).into_iter().filter(|t| matches!(t.msg, PbMessage::ProofWanted { .. })));
    }
    assert!(gaps(&events(&mut b)).is_empty(), "unproven: no gap");
    // Overdue in round 5 (1 + 4): b asks a member for proof.
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].to, id(3));
    assert!(matches!(&asked[0].msg, PbMessage::ProofWanted { origins, .. } if origins == &vec![id(1)]));
    // A forged proof changes nothing (counted); the real one for seq 3 proves 2 and 3.
    let mut forged = proof(1, 3);
    forged.seq = 4;
    b.handle_message(sec(5), id(3), PbMessage::Proofs { topic: T, proofs: vec![forged] });
    assert_eq!(b.stats().forged, 1);
    b.handle_timeout(sec(6));
    assert!(gaps(&events(&mut b)).is_empty());
    b.handle_message(sec(6), id(3), PbMessage::Proofs { topic: T, proofs: vec![proof(1, 3)] });
    b.handle_timeout(sec(7));
    assert_eq!(gaps(&events(&mut b)), vec![(1, 2, 3)]);
    assert!(b.is_quiescent());

    // The member asked answers with the newest proof it holds, once per stream named.
    let mut c = node(3, &cfg, &[2, 3]);
    c.handle_message(sec(0), id(1), PbMessage::Data(data(1, 3)));
    c.handle_message(sec(0), id(2), PbMessage::ProofWanted { topic: T, origins: vec![id(1), id(9)] });
    let replies = transmits(&mut c);
    assert!(
        matches!(&replies[..], [t] if t.msg == PbMessage::Proofs { topic: T, proofs: vec![proof(1, 3)] })
    );

    // A digest line nobody can prove (forged, or its seqs lost everywhere) is asked about
    // for 4 × gap_after rounds, then forgotten: never a gap, and the node is quiescent again.
    let mut d = node(4, &cfg, &[4, 5]);
    d.handle_message(sec(0), id(1), PbMessage::Data(data(1, 1)));
    d.handle_timeout(sec(1));
    let summary = summarize(StreamId { topic: T, origin: id(1) }, [900], 32);
    d.handle_message(sec(1), id(5), PbMessage::Digest { topic: T, summaries: vec![summary] });
    let mut wanted = 0;
    for k in 2..=30 {
        d.handle_timeout(sec(k));
        let t = transmits(&mut d);
        wanted += t.iter().filter(|t| matches!(t.msg, PbMessage::ProofWanted { .. })).count();
    }
    assert_eq!(d.stats().unproven_forgotten, 1);
    assert_eq!(wanted, 16, "asked from round 5 until forgotten in round 21");
    assert!(gaps(&events(&mut d)).is_empty());
    assert!(d.is_quiescent());
    // The stream goes on from where it was: seq 2 is delivered when it comes.
    d.handle_message(sec(30), id(1), PbMessage::Data(data(1, 2)));
    assert_eq!(delivered(&events(&mut d)), vec![(1, 2, Via::FirstPhase)]);
}

#[test]
fn a_full_hold_buffer_declares_the_gap_at_the_next_tick() {
    let cfg = PbConfig { hold_max: 2, ..config() };
    let mut b = node(2, &cfg, &[2]);
    for s in [3, 5] {
        b.handle_message(sec(0), id(1), PbMessage::Data(data(1, s)));
    }
    b.handle_timeout(sec(1));
    let ev = events(&mut b);
    // Full (3 and 5 wait): 1..=2 given up, 3 delivered; then only 5 waits, 4 keeps its
    // gap_after deadline.
    assert_eq!(gaps(&ev), vec![(1, 1, 2)]);
    assert_eq!(delivered(&ev), vec![(1, 3, Via::FirstPhase)]);
    b.handle_message(sec(1), id(1), PbMessage::Data(data(1, 6)));
    b.handle_timeout(sec(2));
    let ev = events(&mut b);
    assert_eq!(gaps(&ev), vec![(1, 4, 4)]);
    assert_eq!(delivered(&ev), vec![(1, 5, Via::FirstPhase), (1, 6, Via::FirstPhase)]);
}

#[test]
fn entries_leave_the_gossip_buffer_after_g_rounds_but_stay_in_history() {
    let cfg = PbConfig { gc_rounds: 3, ..config() };
    let mut b = node(2, &cfg, &[2, 3]);
    b.handle_message(sec(0), id(1), PbMessage::Data(data(1, 1)));
    for k in 1..=3 {
        b.handle_timeout(sec(k));
        let sent = transmits(&mut b);
        assert_eq!(sent.len(), 1, "round {k}: one digest to c");
        assert!(matches!(&sent[0].msg, PbMessage::Digest { summaries, .. } if summaries.len() == 1));
    }
    b.handle_timeout(sec(4));
    assert!(transmits(&mut b).is_empty(), "nothing active, no digest");
    assert!(b.is_quiescent());
    // Still served from history.
    b.handle_message(sec(4), id(3), PbMessage::Solicit { topic: T, wants: vec![(id(1), vec![1])] });
    let sent = transmits(&mut b);
    assert!(matches!(&sent[0].msg, PbMessage::Retransmit(d) if d.id.seq == 1));
}

#[test]
fn retransmissions_are_limited_per_round_and_batched_on_a_stream() {
    // A round retransmits 24 messages at most, a quarter of them to any one peer.
    let cfg = PbConfig { retx_msgs: 24, ..config() };
    let mut b = node(2, &cfg, &[2, 3]);
    for s in 1..=10 {
        b.handle_message(sec(0), id(1), PbMessage::Data(data(1, s)));
    }
    let ask = |seqs: Vec<Seq>| PbMessage::Solicit { topic: T, wants: vec![(id(1), seqs)] };
    b.handle_message(sec(0), id(3), ask((1..=10).collect()));
    let sent = transmits(&mut b);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].reliability, Reliability::Stream);
    let PbMessage::Repair { entries } = &sent[0].msg else { panic!() };
    assert_eq!(entries.iter().map(|d| d.id.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(b.stats().retx_limited, 4);
    b.handle_message(sec(0), id(3), ask(vec![7]));
    assert!(transmits(&mut b).is_empty(), "this peer's share of the round is spent");
    b.handle_timeout(sec(1));
    transmits(&mut b);
    b.handle_message(sec(1), id(3), ask(vec![7, 8, 11]));
    let sent = transmits(&mut b);
    assert_eq!(sent.len(), 2, "few retransmissions go as datagrams");
    assert!(sent.iter().all(|t| t.reliability == Reliability::Datagram));
    assert_eq!(b.stats().solicit_absent, 1);
}

#[test]
fn a_solicited_seq_is_not_asked_again_within_the_backoff() {
    let cfg = config();
    let mut c = node(3, &cfg, &[3]);
    let summary = summarize(StreamId { topic: T, origin: id(1) }, [1, 2], 32);
    let digest = PbMessage::Digest { topic: T, summaries: vec![summary] };
    c.handle_message(sec(0), id(2), digest.clone());
    assert_eq!(transmits(&mut c).len(), 1);
    c.handle_message(sec(0), id(4), digest.clone());
    assert!(transmits(&mut c).is_empty(), "same round: already solicited");
    c.handle_timeout(sec(1));
    c.handle_message(sec(1), id(4), digest);
    let sent = transmits(&mut c);
    assert_eq!(sent[0].to, id(4), "solicits always go to the digest's sender");
}

#[test]
fn malformed_and_foreign_input_is_counted_and_changes_nothing() {
    let cfg = config();
    let mut b = node(2, &cfg, &[2, 3]);
    b.handle_message(sec(0), id(1), PbMessage::Data(data(1, 1)));
    events(&mut b);
    let s = |floor, contig, max, missing: Vec<Seq>| StreamSummary {
        stream: StreamId { topic: T, origin: id(1) },
        floor,
        contig,
        max,
        missing,
    };
    let other = StreamSummary { stream: StreamId { topic: TopicId(8), origin: id(1) }, ..s(1, 1, 1, vec![]) };
    let mut b2 = s(1, 1, 1, vec![]);
    b2.stream.origin = id(0);
    let bad = vec![
        PbMessage::Digest { topic: T, summaries: vec![s(5, 2, 9, vec![])] },
        PbMessage::Digest { topic: T, summaries: vec![s(1, 1, 1, vec![]), b2] },
        PbMessage::Digest { topic: T, summaries: vec![other] },
        PbMessage::Digest { topic: T, summaries: vec![s(1, 1, SEQ_MAX + 1, vec![])] },
        PbMessage::Solicit { topic: T, wants: vec![(id(1), vec![2, 1])] },
        PbMessage::Solicit { topic: T, wants: vec![(id(1), vec![])] },
        PbMessage::Solicit { topic: T, wants: vec![(id(2), vec![1]), (id(1), vec![1])] },
        PbMessage::Solicit { topic: T, wants: vec![(id(1), (1..=65).collect())] },
        PbMessage::Data(data(1, 0)),
        PbMessage::Retransmit(data(1, 0)),
        PbMessage::Retransmit(data(1, SEQ_MAX + 1)),
        PbMessage::Repair { entries: vec![data(1, 2), data(1, 0)] },
    ];
    let n = bad.len() as u64;
    for msg in bad {
        b.handle_message(sec(0), id(3), msg);
    }
    assert_eq!(b.stats().malformed, n);
    // Well-formed, but for a topic b has no part in.
    let foreign = Data { id: MsgId { topic: TopicId(8), ..data(1, 1).id }, ..data(1, 1) };
    b.handle_message(sec(0), id(3), PbMessage::Data(foreign));
    b.handle_message(sec(0), id(3), PbMessage::Solicit { topic: TopicId(8), wants: vec![(id(1), vec![1])] });
    assert_eq!(b.stats().unknown_topic, 2);
    assert!(transmits(&mut b).is_empty());
    assert!(events(&mut b).is_empty());
    assert_eq!(b.history_len(T), 1);
    assert_eq!(b.next_delivery(T, id(1)), Some(2));
    assert!(!b.has_known_missing(), "nothing malformed taught b about seq 2 or 9");
}

#[test]
fn a_new_subscriber_starts_after_the_heads_it_is_given() {
    let cfg = config();
    let mut c = Pbcast::new(
        id(3),
        Arc::new(Unchecked(id(3))),
        Arc::new(cfg),
        &Seed::derive(42, "node", 0, 3),
        Instant::ZERO,
    );
    c.handle_topic_peers(Instant::ZERO, T, view(&[2, 3]));
    // Asked for the heads 5 s after the messages below were published (at 0).
    c.subscribe(sec(5), T, Start::Heads);
    assert_eq!(events(&mut c), vec![PbEvent::HeadsWanted { topic: T, peer: id(2) }]);
    assert_eq!(c.poll_timeout(), Some(sec(1)), "tick first; the heads deadline is at 15 s");
    // While waiting: entries are stored, not delivered; digests are ignored.
    for s in [5, 6] {
        c.handle_message(sec(0), id(1), PbMessage::Data(data(1, s)));
    }
    c.handle_message(sec(0), id(9), PbMessage::Data(data(9, 4)));
    let summary = summarize(StreamId { topic: T, origin: id(1) }, [7], 32);
    c.handle_message(sec(0), id(2), PbMessage::Digest { topic: T, summaries: vec![summary] });
    assert!(transmits(&mut c).is_empty() && events(&mut c).is_empty());
    assert_eq!(c.stats().digests_ignored, 1);
    // The partner's history of origin 1 ends at 5: c starts at 6. Origin 9 is not in the
    // reply: its stream began after the reply was made, so all of it is c's to deliver,
    // from seq 1 (4 waits for 1 to 3).
    let heads = summarize(StreamId { topic: T, origin: id(1) }, 1..=5, 32);
    c.handle_heads(sec(0), T, Some((&[heads], &[proof(1, 5)])));
    assert_eq!(delivered(&events(&mut c)), vec![(1, 6, Via::FirstPhase)]);
    assert_eq!(c.next_delivery(T, id(1)), Some(7));
    assert_eq!(c.next_delivery(T, id(9)), Some(1));
    for s in 1..=3 {
        c.handle_message(sec(0), id(9), PbMessage::Data(data(9, s)));
    }
    assert_eq!(delivered(&events(&mut c)), (1..=4).map(|s| (9, s, Via::FirstPhase)).collect::<Vec<_>>());
    // A second reply changes nothing.
    let late = summarize(StreamId { topic: T, origin: id(1) }, [1], 32);
    c.handle_heads(sec(0), T, Some((&[late], &[proof(1, 1)])));
    assert_eq!(c.next_delivery(T, id(1)), Some(7));
}

#[test]
fn a_head_published_about_when_the_heads_were_asked_for_is_delivered() {
    let mut c = Pbcast::new(
        id(3),
        Arc::new(Unchecked(id(3))),
        Arc::new(config()),
        &Seed::derive(42, "node", 0, 3),
        Instant::ZERO,
    );
    c.handle_topic_peers(Instant::ZERO, T, view(&[2, 3]));
    // Asked at 0.5 s; the partner got message 7 (published at 0, within HEADS_RECENT) before
    // it answered: 7 may have been published after this node subscribed, so it is delivered.
    c.subscribe(Instant::from_micros(500_000), T, Start::Heads);
    events(&mut c);
    let heads = summarize(StreamId { topic: T, origin: id(1) }, 1..=7, 32);
    c.handle_heads(sec(1), T, Some((&[heads], &[proof(1, 7)])));
    assert_eq!(c.next_delivery(T, id(1)), Some(7));
    c.handle_message(sec(1), id(1), PbMessage::Data(data(1, 7)));
    c.handle_message(sec(1), id(1), PbMessage::Data(data(1, 8)));
    assert_eq!(delivered(&events(&mut c)), vec![(1, 7, Via::FirstPhase), (1, 8, Via::FirstPhase)]);
}

#[test]
fn a_stream_first_named_by_the_heads_starts_after_its_head() {
    let mut c = Pbcast::new(
        id(3),
        Arc::new(Unchecked(id(3))),
        Arc::new(config()),
        &Seed::derive(42, "node", 0, 3),
        Instant::ZERO,
    );
    c.handle_topic_peers(Instant::ZERO, T, view(&[2, 3]));
    c.subscribe(sec(5), T, Start::Heads);
    events(&mut c);
    // Nothing of origin 1 reached c before the reply: its stream starts after the head all
    // the same, not at seq 1 (which would hold every new message back behind the history).
    let heads = summarize(StreamId { topic: T, origin: id(1) }, 1..=42, 32);
    c.handle_heads(sec(0), T, Some((&[heads], &[proof(1, 42)])));
    assert_eq!(c.next_delivery(T, id(1)), Some(43));
    c.handle_message(sec(0), id(1), PbMessage::Data(data(1, 43)));
    assert_eq!(delivered(&events(&mut c)), vec![(1, 43, Via::FirstPhase)]);
}

#[test]
fn without_a_heads_reply_streams_start_at_first_evidence_after_the_timeout() {
    let cfg = PbConfig { heads_timeout: Duration::from_millis(2_500), ..config() };
    let mut c = Pbcast::new(
        id(3),
        Arc::new(Unchecked(id(3))),
        Arc::new(cfg),
        &Seed::derive(42, "node", 0, 3),
        Instant::ZERO,
    );
    c.handle_topic_peers(Instant::ZERO, T, view(&[2, 3]));
    c.subscribe(sec(0), T, Start::Heads);
    events(&mut c);
    c.handle_message(sec(0), id(1), PbMessage::Data(data(1, 8)));
    c.handle_message(sec(0), id(1), PbMessage::Data(data(1, 7)));
    for k in 1..=2 {
        c.handle_timeout(sec(k));
    }
    assert!(events(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(Instant::from_micros(2_500_000)));
    c.handle_timeout(Instant::from_micros(2_500_000));
    assert_eq!(delivered(&events(&mut c)), vec![(1, 7, Via::FirstPhase), (1, 8, Via::FirstPhase)]);
    // With no other member there is nothing to ask and nothing published before: every
    // stream is d's from seq 1, so a lost first message is waited for, not skipped.
    let mut d = Pbcast::new(
        id(4),
        Arc::new(Unchecked(id(4))),
        Arc::new(config()),
        &Seed::derive(42, "node", 0, 4),
        Instant::ZERO,
    );
    d.subscribe(sec(0), T, Start::Heads);
    assert!(events(&mut d).is_empty());
    d.handle_message(sec(0), id(1), PbMessage::Data(data(1, 3)));
    assert!(delivered(&events(&mut d)).is_empty());
    assert_eq!(d.next_delivery(T, id(1)), Some(1));
    for s in [1, 2] {
        d.handle_message(sec(0), id(1), PbMessage::Data(data(1, s)));
    }
    assert_eq!(delivered(&events(&mut d)), (1..=3).map(|s| (1, s, Via::FirstPhase)).collect::<Vec<_>>());
}

#[test]
fn a_source_that_is_not_a_member_serves_its_entries_for_g_rounds_then_forgets_the_topic() {
    let cfg = PbConfig { gc_rounds: 2, ..config() };
    let mut a = Pbcast::new(
        id(1),
        Arc::new(Unchecked(id(1))),
        Arc::new(cfg),
        &Seed::derive(42, "node", 0, 1),
        Instant::ZERO,
    );
    a.handle_topic_peers(Instant::ZERO, T, view(&[2]));
    a.publish(Instant::ZERO, T, Bytes::from_static(b"x")).unwrap();
    assert!(events(&mut a).is_empty(), "no subscriber here");
    assert!(!a.is_member(T));
    a.handle_message(sec(0), id(2), PbMessage::Data(data(5, 1)));
    assert_eq!(a.stats().unknown_topic, 1, "a source keeps only its own entries");
    for k in 1..=2 {
        a.handle_timeout(sec(k));
        let sent = transmits(&mut a);
        assert!(matches!(&sent[..], [t] if t.to == id(2) && matches!(t.msg, PbMessage::Digest { .. })));
    }
    a.handle_message(sec(2), id(2), PbMessage::Solicit { topic: T, wants: vec![(id(1), vec![1])] });
    assert_eq!(transmits(&mut a).len(), 1);
    a.handle_timeout(sec(3));
    assert!(transmits(&mut a).is_empty());
    assert_eq!(a.topics().count(), 0);
    // Seqs keep rising for the process's life.
    assert_eq!(a.publish(sec(3), T, Bytes::new()).unwrap().id.seq, 2);
}

#[test]
fn history_is_bounded_and_evicts_the_oldest_delivered_first() {
    let cfg = PbConfig { history_msgs: 3, ..config() };
    let mut b = node(2, &cfg, &[2]);
    // 2 is held back waiting for 1: it is not evictable while it waits.
    b.handle_message(sec(0), id(1), PbMessage::Data(data(1, 2)));
    for s in 1..=4 {
        b.handle_message(sec(0), id(9), PbMessage::Data(data(9, s)));
    }
    assert_eq!(b.history_len(T), 3);
    let held = |m: &Pbcast, o, s| m.holds(&MsgId { origin: id(o), topic: T, seq: s });
    assert!(held(&b, 1, 2) && !held(&b, 9, 1) && !held(&b, 9, 2) && held(&b, 9, 4));
    b.handle_message(sec(0), id(1), PbMessage::Retransmit(data(1, 1)));
    assert_eq!(delivered(&events(&mut b)).iter().filter(|d| d.0 == 1).count(), 2);
    assert_eq!(b.history_len(T), 3);
    assert_eq!(b.stats().evicted, 3);
}

#[test]
fn digests_rotate_when_more_streams_are_active_than_fit() {
    let cfg = PbConfig { digest_streams: 2, ..config() };
    let mut b = node(2, &cfg, &[2, 3]);
    for o in [1, 4, 5, 6, 7] {
        b.handle_message(sec(0), id(o), PbMessage::Data(data(o, 1)));
    }
    let mut seen = Vec::new();
    for k in 1..=3 {
        b.handle_timeout(sec(k));
        let sent = transmits(&mut b);
        let PbMessage::Digest { summaries, .. } = &sent[0].msg else { panic!() };
        assert_eq!(summaries.len(), 2);
        assert!(summaries.windows(2).all(|w| w[0].stream < w[1].stream));
        seen.extend(summaries.iter().map(|s| s.stream.origin.prefix_u64()));
    }
    // Windows [1, 4], [5, 6], then 7 and wrapping to 1 (sorted in the digest).
    assert_eq!(seen, vec![1, 4, 5, 6, 1, 7]);
}

#[test]
fn summaries_match_the_anti_entropy_store() {
    let mut rng = Rng::from_seed(Seed::derive(3, "summaries", 0, 0));
    let stream = StreamId { topic: T, origin: id(1) };
    for _ in 0..300 {
        let mut store = Store::new(1_000);
        let mut seqs: Vec<Seq> = (0..rng.below(40)).map(|_| 1 + rng.below(80)).collect();
        seqs.sort_unstable();
        seqs.dedup();
        for &s in &seqs {
            store.insert(Entry::unsealed(stream, s, Bytes::new()));
        }
        for missing_max in [0, 1, 3, 32] {
            let ours = summarize(stream, seqs.iter().copied(), missing_max);
            assert_eq!(ours, store.summary(stream, missing_max), "{seqs:?} M={missing_max}");
            assert!(ours.is_consistent(missing_max), "{ours:?}");
            for q in 1..=90 {
                if ours.covers(q) {
                    assert!(seqs.contains(&q));
                }
            }
        }
    }
}

#[test]
fn a_seq_missing_for_g_rounds_asks_once_for_an_anti_entropy_pull() {
    let cfg = PbConfig { gc_rounds: 2, pull_on_missing: true, ..config() };
    let mut b = node(2, &cfg, &[2]);
    b.handle_message(sec(0), id(1), PbMessage::Data(data(1, 2)));
    b.handle_timeout(sec(1));
    assert!(events(&mut b).is_empty());
    b.handle_timeout(sec(2));
    assert_eq!(events(&mut b), vec![PbEvent::PullWanted { topic: T }]);
    b.handle_timeout(sec(3));
    assert!(events(&mut b).is_empty(), "once per missing seq");
    b.handle_data(sec(3), data(1, 1), Via::AntiEntropy);
    assert_eq!(delivered(&events(&mut b)), vec![(1, 1, Via::AntiEntropy), (1, 2, Via::FirstPhase)]);
}

#[test]
fn unsubscribing_stops_delivery_and_keeps_a_recent_source_serving() {
    let cfg = config();
    let mut b = node(2, &cfg, &[2, 3]);
    b.publish(Instant::ZERO, T, Bytes::from_static(b"own")).unwrap();
    b.handle_message(sec(0), id(1), PbMessage::Data(data(1, 1)));
    events(&mut b);
    b.unsubscribe(Instant::ZERO, T);
    assert!(!b.is_member(T));
    b.handle_message(sec(0), id(1), PbMessage::Data(data(1, 2)));
    assert!(events(&mut b).is_empty());
    assert_eq!(b.history_len(T), 1, "only its own entry is left");
    b.handle_message(sec(0), id(3), PbMessage::Solicit { topic: T, wants: vec![(id(2), vec![1])] });
    assert_eq!(transmits(&mut b).len(), 1);
}

#[test]
fn repair_converges_among_lossy_peers_by_hand() {
    // Five members; first-phase copies to 3, 4, 5 are lost; every digest from node 2 to 4 too.
    let cfg = config();
    let all = [1, 2, 3, 4, 5];
    let mut net: Net<Pbcast> = all.iter().map(|&n| (id(n), node(n, &cfg, &all))).collect();
    let targets: Vec<NodeId> = all.iter().map(|&n| id(n)).collect();
    net.set_drop(|_, to, m| matches!(m, PbMessage::Data(_)) && to.prefix_u64() >= 3);
    net.call(id(1), |a, now| {
        let d = a.publish(now, T, Bytes::from_static(b"m")).unwrap();
        a.multicast(now, &d, &targets);
    });
    net.set_drop(|from, to, m| matches!(m, PbMessage::Digest { .. }) && (from, to) == (id(2), id(4)));
    net.run_until(sec(10));
    for n in all {
        let got = delivered(&net.take_events_of(id(n)));
        assert_eq!(got.len(), 1, "{}: {got:?}", id(n));
        assert_eq!(got[0].1, 1);
    }
}

#[test]
fn bad_configs_are_refused() {
    assert_eq!(PbConfig::default().validate(), Ok(()));
    assert_eq!(PbConfig::default().gap_after(), 40);
    let bad = [
        PbConfig { gc_rounds: 0, ..PbConfig::default() },
        PbConfig { period: Duration::ZERO, ..PbConfig::default() },
        PbConfig { gap_after: Some(0), ..PbConfig::default() },
        PbConfig { fanout: FANOUT_MAX + 1, ..PbConfig::default() },
        PbConfig { hold_max: 0, ..PbConfig::default() },
    ];
    for c in bad {
        assert!(c.validate().is_err(), "{c:?}");
    }
    let cfg = PbConfig { max_payload: 4, ..config() };
    let mut a = node(1, &cfg, &[1]);
    assert_eq!(
        a.publish(Instant::ZERO, T, Bytes::from_static(b"12345")),
        Err(PublishError::TooLarge { len: 5, max: 4 })
    );
    assert_eq!(a.history_len(T), 0);
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn summary() -> impl Strategy<Value = StreamSummary> {
        (0u64..4, any::<u64>(), any::<u64>(), any::<u64>(), prop::collection::vec(any::<u64>(), 0..4))
            .prop_map(|(o, floor, contig, max, missing)| StreamSummary {
                stream: StreamId { topic: T, origin: id(o) },
                floor: floor % 12,
                contig: contig % 12,
                max: if max % 5 == 0 { max } else { max % 12 },
                missing: missing.into_iter().map(|m| m % 12).collect(),
            })
    }

    fn message() -> impl Strategy<Value = PbMessage> {
        prop_oneof![
            prop::collection::vec(summary(), 0..4)
                .prop_map(|summaries| PbMessage::Digest { topic: T, summaries }),
            prop::collection::vec((0u64..4, prop::collection::vec(any::<u64>(), 0..5)), 0..3).prop_map(|w| {
                PbMessage::Solicit {
                    topic: T,
                    wants: w
                        .into_iter()
                        .map(|(o, s)| (id(o), s.into_iter().map(|x| x % 20).collect()))
                        .collect(),
                }
            }),
            (0u64..4, any::<u64>()).prop_map(|(o, s)| PbMessage::Retransmit(data(o, s % 20))),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_or_breaks_fifo(msgs in prop::collection::vec(message(), 1..40)) {
            let mut b = node(9, &config(), &[1, 2, 9]);
            let mut last: BTreeMap<u64, Seq> = BTreeMap::new();
            for (k, msg) in msgs.into_iter().enumerate() {
                b.handle_message(sec(k as u64 / 4), id(1), msg);
                if k % 4 == 3 {
                    b.handle_timeout(sec(k as u64 / 4 + 1));
                }
                transmits(&mut b);
                for (o, s, _) in delivered(&events(&mut b)) {
                    let prev = last.insert(o, s).unwrap_or(0);
                    prop_assert!(s > prev, "origin {o}: {s} after {prev}");
                }
            }
        }
    }
}
