//! A rogue member (issue 12 item 3): test code that holds the cluster secret runs a real member
//! in this process (the embedding API, so it joins, is alive and subscribes like any agent) and,
//! through its authenticated QUIC transport, sends the honest agents — real `hearsay agent`
//! processes — well-formed frames that lie, floods of amplifying requests, and malformed
//! frames. The honest agents must go on delivering each other's messages in order, with no
//! forged one and no gap, stay alive in each other's view, and count what they dropped.

use std::time::Duration;

use bytes::Bytes;
use hearsay::embed::{Agent as Embedded, Preset};
use hearsay::engine::{ChannelRumor, RumorChannel};
use hearsay::message::AppMessage;
use hearsay::transport::Transport;
use hearsay::transport::identity::ClusterSecret;
use hearsay_protocols::anti_entropy::{AeMessage, AeMode, Digest, StreamSummary};
use hearsay_protocols::pbcast::{Data, MsgId, PbMessage, SEQ_MAX};
use hearsay_protocols::rumor::RumorMessage;
use hearsay_protocols::wire::{self, DEFAULT_FRAME_LIMIT, WireMessage};
use hearsay_protocols::{Instant, NodeId, Reliability, StreamId, TopicId};
use hearsay_tests::{Cluster, metric_sample, wait_for};

const TOPIC: &str = "news";

/// A NodeId from its hex form (as the API prints it).
fn node_id(hex: &str) -> NodeId {
    let mut b = [0u8; 32];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex id");
    }
    NodeId::from_bytes(b)
}

fn frame<M: WireMessage>(msg: &M) -> Bytes {
    Bytes::from(wire::encode(msg, DEFAULT_FRAME_LIMIT).expect("encodes"))
}

/// A summary claiming `origin`'s stream on `topic` runs to `SEQ_MAX`, all held.
fn huge(origin: NodeId, topic: TopicId) -> Vec<StreamSummary> {
    vec![StreamSummary {
        stream: StreamId { topic, origin },
        floor: 1,
        contig: SEQ_MAX,
        max: SEQ_MAX,
        missing: Vec::new(),
    }]
}

/// Every lie and flood of the rogue, to one honest agent.
fn attack(t: &Transport, to: NodeId, addr: std::net::SocketAddr, victim: NodeId, next_seq: u64) {
    let topic = TopicId::of(TOPIC);
    let send = |r: Reliability, f: Bytes| t.send(to, addr, r, f);
    // 1. The victim's next message, forged: its origin and next seq, a made-up seal.
    // (The first two race the real ones: one that comes second is a duplicate, dropped before
    // its seal is checked; the third is never published, so it is always checked and counted.)
    for seq in [next_seq, next_seq + 1, next_seq + 1_000] {
        forged(t, to, addr, victim, seq);
    }
    // 2. A digest naming the victim's stream up to SEQ_MAX (to make it skip, or wait forever).
    send(Reliability::Stream, frame(&PbMessage::Digest { topic, summaries: huge(victim, topic) }));
    // 3. A heads reply saying the same (to an exchange it never asked for, and unsolicited).
    let digest = Digest { summaries: huge(victim, topic), partial: false };
    for xid in [0, 1, u64::MAX] {
        let reply = AeMessage::SynAck {
            xid,
            scope: vec![topic],
            digest: digest.clone(),
            delta: Vec::new(),
            more: false,
            proofs: Vec::new(),
        };
        send(Reliability::Stream, frame(&reply));
    }
    // 4. Floods of amplifying requests: anti-entropy Syns and rumor pulls.
    for xid in 0..300u64 {
        let syn = AeMessage::Syn {
            xid: 1_000 + xid,
            mode: AeMode::Pull,
            scope: vec![topic],
            digest: Digest { summaries: Vec::new(), partial: false },
        };
        send(Reliability::Datagram, frame(&syn));
    }
    for _ in 0..200 {
        let pull = ChannelRumor { channel: RumorChannel::Topics, msg: RumorMessage::Pull };
        send(Reliability::Datagram, frame(&pull));
    }
    // 5. Malformed frames of every kind.
    malformed(t, to, addr);
}

/// A frame of every kind whose body does not decode.
/// The victim's message `seq`, forged (its origin, a made-up seal), as `Data` and as a
/// `Repair`.
fn forged(t: &Transport, to: NodeId, addr: std::net::SocketAddr, victim: NodeId, seq: u64) {
    let body = AppMessage { headers: Default::default(), body: Bytes::from_static(b"forged") }
        .encode_within(1 << 16)
        .expect("a small message");
    let data = Data {
        id: MsgId { origin: victim, topic: TopicId::of(TOPIC), seq },
        published_at: Instant::from_micros(1),
        payload: body,
        seal: Default::default(),
    };
    t.send(to, addr, Reliability::Stream, frame(&PbMessage::Data(data.clone())));
    t.send(to, addr, Reliability::Stream, frame(&PbMessage::Repair { entries: vec![data] }));
}

fn malformed(t: &Transport, to: NodeId, addr: std::net::SocketAddr) {
    for kind in 1..=7u8 {
        t.send(to, addr, Reliability::Stream, Bytes::from(vec![1, kind, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]));
    }
}

#[test]
fn a_rogue_member_can_neither_forge_nor_silence_nor_flood_the_honest_ones() {
    let c = Cluster::start("rogue", 3);
    let subs = [c[1].subscribe(TOPIC), c[2].subscribe(TOPIC)];
    c.wait_tree(TOPIC, &[1, 2]);
    let first = c[0].publish(TOPIC, "real-1");
    let origin = first.origin.clone();
    wait_for("both subscribers to receive the first message", Duration::from_secs(20), || {
        let got = subs.iter().filter(|s| s.messages().iter().any(|m| m.origin == origin)).count();
        if got == 2 { Ok(()) } else { Err(format!("{got} of 2")) }
    });
    let victim = node_id(&origin);
    let honest: Vec<(NodeId, std::net::SocketAddr)> =
        (0..3).map(|i| (node_id(&c[i].id()), c[i].addr())).collect();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let secret = ClusterSecret::load(c.secret()).expect("the cluster secret");
    let rogue = runtime.block_on(async {
        let rogue = Embedded::builder("rogue")
            .secret(secret)
            .bind("127.0.0.1:0".parse().expect("addr"))
            .join(c[0].addr())
            .preset(Preset::Local)
            .start()
            .await
            .expect("the rogue joins");
        let sub = rogue.subscribe(TOPIC).await.expect("the rogue subscribes");
        (rogue, sub)
    });
    for i in 0..3 {
        c[i].wait_state("rogue", "alive", Duration::from_secs(20));
    }
    let transport = rogue.0.handle().transport.clone();
    runtime.block_on(async {
        for (id, addr) in &honest {
            attack(&transport, *id, *addr, victim, first.seq + 1);
        }
    });

    // The victim goes on publishing; both subscribers get every real message, in order.
    let last = first.seq + 20;
    for k in first.seq + 1..=last {
        let p = c[0].publish(TOPIC, &format!("real-{k}"));
        assert_eq!(p.seq, k);
    }
    for (i, s) in subs.iter().enumerate() {
        wait_for(&format!("subscriber {i} to receive seq {last}"), Duration::from_secs(30), || {
            let got = s.messages().iter().filter(|m| m.origin == origin).count();
            if got as u64 >= last { Ok(()) } else { Err(format!("{got} of {last}")) }
        });
        let mine: Vec<_> = s.messages().into_iter().filter(|m| m.origin == origin).collect();
        let seqs: Vec<u64> = mine.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "subscriber {i}: every seq once, in order");
        for m in &mine {
            assert_eq!(
                m.payload.as_deref(),
                Some(format!("real-{}", m.seq).as_str()),
                "subscriber {i}: {m:?}"
            );
        }
        assert!(s.gaps().is_empty(), "subscriber {i}: no gap: {:?}", s.gaps());
    }

    // Every honest agent is healthy, sees the others alive, and counted what it dropped.
    for i in 0..3 {
        for name in ["n0", "n1", "n2"] {
            c[i].wait_state(name, "alive", Duration::from_secs(20));
        }
    }
    let mut limited = 0.0;
    for i in 0..3 {
        let text = c[i].metrics().expect("metrics");
        let refused = |reason: &str| {
            metric_sample(&text, &format!("hearsay_refused_total{{reason=\"{reason}\"}}")).unwrap_or(0.0)
        };
        limited += refused("limited_ae_syn") + refused("limited_rumor_pull");
        // Both sent again while none is counted: the rogue's own transport may shed stream
        // frames while the floods are in flight (failed runs under load counted 0 malformed
        // frames at n2, and 0 forged messages at n1); what is checked is that a forged message
        // or a malformed frame that arrives is counted and dropped.
        if i > 0 {
            wait_for(&format!("n{i} to count the forged messages"), Duration::from_secs(20), || {
                let text = c[i].metrics()?;
                let n =
                    metric_sample(&text, "hearsay_refused_total{reason=\"pbcast_forged\"}").unwrap_or(0.0);
                if n >= 1.0 {
                    return Ok(());
                }
                let _enter = runtime.enter();
                forged(&transport, honest[i].0, honest[i].1, victim, last + 1_000);
                Err(format!("{n} counted"))
            });
        }
        wait_for(&format!("n{i} to count the malformed frames"), Duration::from_secs(20), || {
            let text = c[i].metrics()?;
            let n = hearsay_tests::metric_sum(&text, "hearsay_decode_errors_total");
            if n >= 1.0 {
                return Ok(());
            }
            let _enter = runtime.enter();
            malformed(&transport, honest[i].0, honest[i].1);
            Err(format!("{n} counted"))
        });
    }
    assert!(limited >= 100.0, "the floods were rate-limited ({limited} requests unanswered)");
    runtime.block_on(rogue.0.crash());
}
