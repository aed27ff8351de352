//! Two and three real endpoints on loopback: admission, datagrams, streams, the cache bound,
//! fault injection.

use std::net::SocketAddr;
use std::time::Duration;

use super::Inbound as Receiver;
use bytes::Bytes;
use hearsay_protocols::Reliability;

use super::identity::{ClusterSecret, NodeIdentity};
use super::*;

fn node(secret: u8, config: impl FnOnce(&mut TransportConfig)) -> (Transport, Receiver) {
    let id = NodeIdentity::ephemeral(&ClusterSecret::from_bytes([secret; 32])).unwrap();
    let mut c = TransportConfig::new("127.0.0.1:0".parse().unwrap());
    config(&mut c);
    Transport::bind(c, &id).unwrap()
}

async fn next_frame(rx: &mut Receiver) -> (NodeId, Reliability, Bytes) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a frame within 5 s")
            .unwrap();
        if let TransportEvent::Frame { from, reliability, frame, .. } = ev {
            return (from, reliability, frame);
        }
    }
}

#[tokio::test]
async fn members_exchange_datagrams_and_streams() {
    let (a, _ra) = node(1, |_| {});
    let (b, mut rb) = node(1, |_| {});
    // No explicit connect: the first send opens the connection.
    a.send(b.id(), b.local_addr(), Reliability::Datagram, Bytes::from_static(b"hello"));
    let (from, rel, frame) = next_frame(&mut rb).await;
    assert_eq!((from, rel, &frame[..]), (a.id(), Reliability::Datagram, &b"hello"[..]));
    // A large frame goes on a stream even if asked as a datagram.
    let big = Bytes::from(vec![7u8; 100_000]);
    a.send(b.id(), b.local_addr(), Reliability::Datagram, big.clone());
    let (_, rel, frame) = next_frame(&mut rb).await;
    assert_eq!((rel, frame), (Reliability::Stream, big));
    assert_eq!(a.connections(), 1);
    assert!(a.wire().bytes_sent.load(Ordering::Relaxed) > 100_000);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_on_both_sides() {
    let (a, mut ra) = node(1, |_| {});
    let (c, mut rc) = node(2, |_| {});
    let err = a.connect(c.local_addr()).await.unwrap_err().to_string();
    assert!(err.contains("different --secret-file"), "{err}");
    // The other side counts it (and logs it, rate-limited), without a slot in its queue.
    until("the refusal counted", || c.stats().refused.load(Ordering::Relaxed) > 0).await;
    assert!(rc.try_recv().is_err(), "an inbound refusal takes no slot in the frame queue");
    assert!(c.stats().retries.load(Ordering::Relaxed) >= 1, "the stranger was made to prove its address");
    assert!(matches!(ra.try_recv(), Ok(TransportEvent::Refused { .. })));
    // And no frame of a stranger ever reaches a member.
    c.send(a.id(), a.local_addr(), Reliability::Datagram, Bytes::from_static(b"let me in"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(ev) = ra.try_recv() {
        assert!(!matches!(ev, TransportEvent::Frame { .. }), "{ev:?}");
    }
    assert_eq!(a.connections(), 0);
}

#[tokio::test]
async fn connect_reports_who_answered() {
    let (a, _ra) = node(3, |_| {});
    let (b, _rb) = node(3, |_| {});
    assert_eq!(a.connect(b.local_addr()).await.unwrap(), b.id());
}

#[tokio::test]
async fn the_cache_stays_bounded() {
    let (a, _ra) = node(4, |c| c.max_connections = 2);
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(node(4, |_| {}));
    }
    for (o, _) in &others {
        a.connect(o.local_addr()).await.unwrap();
    }
    assert_eq!(a.connections(), 2);
    assert_eq!(a.stats().evictions.load(Ordering::Relaxed), 2);
    // An evicted peer is reached again by reconnecting.
    let (first, rx) = &mut others[0];
    a.send(first.id(), first.local_addr(), Reliability::Datagram, Bytes::from_static(b"again"));
    assert_eq!(&next_frame(rx).await.2[..], b"again");
}

#[tokio::test]
async fn oversize_stream_frames_are_counted_and_dropped() {
    let (a, _ra) = node(5, |_| {});
    let (b, mut rb) = node(5, |c| c.frame_limit = 1_000);
    a.send(b.id(), b.local_addr(), Reliability::Stream, Bytes::from(vec![1u8; 5_000]));
    a.send(b.id(), b.local_addr(), Reliability::Stream, Bytes::from(vec![2u8; 500]));
    let (_, _, frame) = next_frame(&mut rb).await;
    assert_eq!(frame.len(), 500);
    // Streams are independent: the oversize one may be counted after the small one arrived.
    until("the oversize frame counted", || b.stats().oversize.load(Ordering::Relaxed) > 0).await;
    assert_eq!(b.stats().oversize.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn injected_loss_drops_that_fraction_of_datagrams() {
    let (a, _ra) = node(6, |_| {});
    let (b, mut rb) = node(6, |_| {});
    a.connect(b.local_addr()).await.unwrap();
    let before =
        (a.wire().datagrams_sent.load(Ordering::Relaxed), a.wire().dropped_by_faults.load(Ordering::Relaxed));
    a.faults().set_loss(0.3);
    // 1,000-byte frames: one per UDP datagram (two would not fit), so a frame is lost exactly
    // when its datagram is.
    for i in 0..2_000u32 {
        let mut frame = vec![0u8; 1_000];
        frame[..4].copy_from_slice(&i.to_be_bytes());
        a.send(b.id(), b.local_addr(), Reliability::Datagram, Bytes::from(frame));
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Until nothing more arrives for half a second (bounded by the 5 s of next_frame's caller).
    let mut got = 0u32;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(500), rb.recv()).await {
        got += u32::from(matches!(ev, TransportEvent::Frame { .. }));
    }
    a.faults().set_loss(0.0);
    // At the socket: every outgoing datagram (frames, ACKs, probes) dropped with probability
    // 0.3, independently: within 5 standard deviations of the binomial.
    let sent = a.wire().datagrams_sent.load(Ordering::Relaxed) - before.0;
    let dropped = a.wire().dropped_by_faults.load(Ordering::Relaxed) - before.1;
    let n = (sent + dropped) as f64;
    let rate = dropped as f64 / n;
    eprintln!("{dropped} of {n} datagrams dropped; {got} of 2000 frames received");
    assert!((rate - 0.3).abs() < 5.0 * (0.21 / n).sqrt(), "{dropped} of {n} datagrams dropped");
    // End to end: 2,000 frames, each arriving with probability 0.7 (1,400 ± 5 × 20.5).
    assert!((1_297..=1_503).contains(&got), "received {got} of 2000 frames at 30% datagram loss");
}

#[tokio::test]
async fn a_partition_blocks_until_healed() {
    let (a, _ra) = node(7, |_| {});
    let (b, mut rb) = node(7, |_| {});
    a.connect(b.local_addr()).await.unwrap();
    a.faults().set_blocked([b.local_addr()]);
    a.send(b.id(), b.local_addr(), Reliability::Datagram, Bytes::from_static(b"cut"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(ev) = rb.try_recv() {
        assert!(!matches!(ev, TransportEvent::Frame { .. }), "crossed the partition: {ev:?}");
    }
    a.faults().set_blocked([]);
    a.send(b.id(), b.local_addr(), Reliability::Datagram, Bytes::from_static(b"healed"));
    assert_eq!(&next_frame(&mut rb).await.2[..], b"healed");
}

#[test]
fn faults_drop_at_the_set_rate_and_block_only_the_chosen() {
    let f = faulty::Faults::none();
    let to: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let other: std::net::SocketAddr = "127.0.0.1:10".parse().unwrap();
    f.set_loss(0.3);
    let dropped = (0..100_000).filter(|_| f.drops(&to)).count();
    assert!((29_000..31_000).contains(&dropped), "{dropped}");
    f.set_loss(0.0);
    f.set_blocked([to]);
    assert!(f.drops(&to) && !f.drops(&other));
    f.set_blocked([]);
    assert!(!f.drops(&to));
}

/// A node with the identity kept in `dir`, bound to `bind` (retried while the port is still
/// held by a previous life that is shutting down).
async fn node_in(dir: &std::path::Path, bind: SocketAddr) -> (Transport, Receiver) {
    let id = NodeIdentity::load_or_create(dir, &ClusterSecret::from_bytes([9; 32])).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Transport::bind(TransportConfig::new(bind), &id) {
            Ok(t) => return t,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// End `t` as a crash would: nothing more reaches `peers`, then the endpoint goes away.
async fn crash(t: Transport, rx: Receiver, peers: &[SocketAddr]) {
    t.faults().set_blocked(peers.iter().copied());
    t.close().await;
    drop(rx);
    drop(t);
}

/// Send `frame` to `to` every 10 ms until `rx` gets a frame; how long that took.
async fn send_until_received(a: &Transport, to: NodeId, addr: SocketAddr, rx: &mut Receiver) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        a.send(to, addr, Reliability::Datagram, Bytes::from_static(b"hello again"));
        if let Ok(Some(TransportEvent::Frame { .. })) =
            tokio::time::timeout(Duration::from_millis(10), rx.recv()).await
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never reached the peer again");
    }
}

fn scratch(label: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("hearsay-transport-{label}-{}-{nanos}", std::process::id()))
}

#[tokio::test]
async fn a_peer_restarted_at_its_address_resets_the_old_connection_and_is_reached_at_once() {
    let dir = scratch("reset");
    let (a, _ra) = node(9, |_| {});
    let (b, mut rb) = node_in(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let (id, addr) = (b.id(), b.local_addr());
    a.send(id, addr, Reliability::Datagram, Bytes::from_static(b"first life"));
    next_frame(&mut rb).await;
    crash(b, rb, &[a.local_addr()]).await;
    // Same identity, same address: a's cached connection belongs to the previous life.
    let (b2, mut rb2) = node_in(&dir, addr).await;
    assert_eq!(b2.id(), id);
    let took = send_until_received(&a, id, addr, &mut rb2).await;
    // The new life answers the old connection with a stateless reset a accepts: a dials again
    // at once, without waiting for the unanswered-connection fallback or the idle timeout.
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(a.stats().unanswered.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_connection_nothing_comes_back_on_is_given_up_and_the_new_address_dialled() {
    let dir = scratch("moved");
    let (a, _ra) = node(9, |_| {});
    let (b, mut rb) = node_in(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let id = b.id();
    a.send(id, b.local_addr(), Reliability::Datagram, Bytes::from_static(b"first life"));
    next_frame(&mut rb).await;
    crash(b, rb, &[a.local_addr()]).await;
    // Back at another port: no reset can reach a's old connection.
    let (b2, mut rb2) = node_in(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let took = send_until_received(&a, id, b2.local_addr(), &mut rb2).await;
    assert!(took < UNANSWERED_AFTER + Duration::from_secs(2), "took {took:?}");
    assert_eq!(a.stats().unanswered.load(Ordering::Relaxed), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn flush_waits_until_stream_frames_are_acknowledged_and_is_bounded() {
    let (a, _ra) = node(10, |_| {});
    let (b, mut rb) = node(10, |_| {});
    assert!(a.flush(Duration::from_secs(1)).await, "nothing handed over, nothing to wait for");
    for i in 0..20u8 {
        a.send(b.id(), b.local_addr(), Reliability::Stream, Bytes::from(vec![i; 50_000]));
    }
    assert!(a.in_flight() > 0);
    assert!(a.flush(Duration::from_secs(5)).await);
    assert_eq!(a.in_flight(), 0);
    for _ in 0..20 {
        next_frame(&mut rb).await;
    }
    // A frame for a peer that does not answer is waited for at most the bound.
    let silent: SocketAddr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    a.send(NodeId::from_bytes([1; 32]), silent, Reliability::Datagram, Bytes::from_static(b"lost"));
    let start = tokio::time::Instant::now();
    assert!(!a.flush(Duration::from_millis(300)).await);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_stream_frame_the_peers_restart_reset_is_sent_again_on_a_new_connection() {
    let dir = scratch("resend");
    let (a, _ra) = node(9, |_| {});
    let (b, mut rb) = node_in(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let (id, addr) = (b.id(), b.local_addr());
    a.send(id, addr, Reliability::Stream, Bytes::from_static(b"first life"));
    next_frame(&mut rb).await;
    crash(b, rb, &[a.local_addr()]).await;
    let (b2, mut rb2) = node_in(&dir, addr).await;
    assert_eq!(b2.id(), id);
    // Sent once, on the previous life's connection: the new life resets it, and the frame goes
    // again on a new connection instead of being lost with the old one.
    a.send(id, addr, Reliability::Stream, Bytes::from_static(b"sent once"));
    let (from, reliability, frame) = next_frame(&mut rb2).await;
    assert_eq!((from, reliability, &frame[..]), (a.id(), Reliability::Stream, &b"sent once"[..]));
    assert_eq!(a.stats().resent_after_reset.load(Ordering::Relaxed), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Poll `done` every 10 ms for up to 10 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let polled = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), polled).await.unwrap_or_else(|_| panic!("{what}"));
}

#[tokio::test]
async fn a_second_connection_from_the_same_peer_closes_the_first() {
    let secret = ClusterSecret::from_bytes([8; 32]);
    let id = NodeIdentity::ephemeral(&secret).unwrap();
    let (b, _rb) = node(8, |_| {});
    let bind = || Transport::bind(TransportConfig::new("127.0.0.1:0".parse().unwrap()), &id).unwrap();
    let (first, _r1) = bind();
    let (second, _r2) = bind();
    first.connect(b.local_addr()).await.unwrap();
    second.connect(b.local_addr()).await.unwrap();
    until("the duplicate closed", || b.stats().duplicates_closed.load(Ordering::Relaxed) == 1).await;
    assert_eq!(b.connections(), 1);
    until("the first side sees its connection closed", || first.connections() == 0).await;
}

#[tokio::test]
async fn received_stream_bytes_wait_within_the_budget_and_all_arrive() {
    let (a, _ra) = node(9, |_| {});
    let (b, mut rb) = node(9, |c| {
        c.frame_limit = 4_000;
        c.queue_bytes = 10_000;
    });
    for i in 0..20u8 {
        a.send(b.id(), b.local_addr(), Reliability::Stream, Bytes::from(vec![i; 3_000]));
    }
    for read in 0..20u64 {
        let (_, _, frame) = next_frame(&mut rb).await;
        assert_eq!(frame.len(), 3_000);
        let received = b.stats().streams_received.load(Ordering::Relaxed);
        assert!(received <= read + 1 + 3, "{received} frames read with {read} taken: over 10,000 bytes held");
    }
    assert_eq!(b.stats().dropped_queue_full.load(Ordering::Relaxed), 0, "backpressure, not loss");
}

#[tokio::test]
async fn a_peer_that_stops_reading_times_out_the_streams_on_both_sides() {
    let (a, _ra) = node(10, |c| c.write_timeout = Duration::from_millis(300));
    // b never takes a frame: its budget holds one, then its reader waits and times out.
    let (b, _rb) = node(10, |c| {
        c.frame_limit = 20_000;
        c.queue_bytes = 20_000;
        c.read_timeout = Duration::from_millis(300);
    });
    // More streams than b grants at once: the rest wait for stream credit that comes slowly.
    for i in 0..100u8 {
        a.send(b.id(), b.local_addr(), Reliability::Stream, Bytes::from(vec![i; 15_000]));
    }
    until("a's writes time out", || a.stats().write_timeouts.load(Ordering::Relaxed) > 0).await;
    until("b's reads time out", || b.stats().read_timeouts.load(Ordering::Relaxed) > 0).await;
}

/// A transport under the keyring of these secrets (the first the primary), and its identity.
fn ringed(secrets: &[u8]) -> (Transport, Receiver, NodeIdentity) {
    let id = NodeIdentity::ephemeral(&ClusterSecret::from_bytes([secrets[0]; 32])).unwrap();
    let id = id.reissue(&ring(secrets)).unwrap();
    let (t, rx) = Transport::bind(TransportConfig::new("127.0.0.1:0".parse().unwrap()), &id).unwrap();
    (t, rx, id)
}

fn ring(secrets: &[u8]) -> keyring::Keyring {
    let mut r = keyring::Keyring::single(ClusterSecret::from_bytes([secrets[0]; 32]));
    for s in &secrets[1..] {
        r.install(ClusterSecret::from_bytes([*s; 32])).unwrap();
    }
    r
}

#[tokio::test]
async fn a_rotation_admits_under_any_installed_key_and_presents_the_primary() {
    let (b, _rb, bid) = ringed(&[1]);
    // Installed but not primary: b still presents a certificate under 1, which a node holding
    // only 2 refuses.
    b.set_identity(&bid.reissue(&ring(&[1, 2])).unwrap()).unwrap();
    let (only_new, _r1, _) = ringed(&[2]);
    assert!(only_new.connect(b.local_addr()).await.is_err());
    let (both, _r2, _) = ringed(&[1, 2]);
    assert_eq!(both.connect(b.local_addr()).await.unwrap(), b.id());
    // Primary 2: b presents under 2 and still accepts a peer under 1 that knows 2.
    b.set_identity(&bid.reissue(&ring(&[2, 1])).unwrap()).unwrap();
    let (only_new, _r3, _) = ringed(&[2]);
    assert_eq!(only_new.connect(b.local_addr()).await.unwrap(), b.id());
    let (old_primary, _r4, _) = ringed(&[1, 2]);
    assert_eq!(old_primary.connect(b.local_addr()).await.unwrap(), b.id());
    // 1 removed: a node holding only 1 is refused, one holding 2 joins.
    b.set_identity(&bid.reissue(&ring(&[2])).unwrap()).unwrap();
    let (only_old, _r5, _) = ringed(&[1]);
    let err = only_old.connect(b.local_addr()).await.unwrap_err().to_string();
    assert!(err.contains("share no key"), "{err}");
    let (only_new, _r6, _) = ringed(&[2]);
    assert_eq!(only_new.connect(b.local_addr()).await.unwrap(), b.id());
    // The connection made before the change stays up.
    assert!(both.connections() == 1);
}

#[tokio::test]
async fn key_requests_travel_on_bidirectional_streams() {
    let (a, _ra, _) = ringed(&[5]);
    let (b, _rb, _) = ringed(&[5]);
    let list = keyring::KeyRequest::List;
    let within = Duration::from_secs(5);
    let reply = a.request(b.id(), b.local_addr(), &list, within).await.unwrap();
    assert!(matches!(reply, keyring::KeyReply::Refused(ref e) if e.contains("serves no key")), "{reply:?}");
    let (tx, mut calls) = mpsc::channel::<KeyCall>(1);
    b.serve_keys(tx);
    tokio::spawn(async move {
        while let Some(call) = calls.recv().await {
            let _ = call
                .reply
                .send(keyring::KeyReply::Keys(vec![keyring::Fingerprint([call.from.as_bytes()[0]; 8])]));
        }
    });
    let reply = a.request(b.id(), b.local_addr(), &list, within).await.unwrap();
    assert_eq!(reply, keyring::KeyReply::Keys(vec![keyring::Fingerprint([a.id().as_bytes()[0]; 8])]));
    // Asking the wrong node at an address is refused before anything is sent.
    let (c, _rc, _) = ringed(&[5]);
    assert!(a.request(c.id(), b.local_addr(), &list, within).await.is_err());
}
