//! Clusters of real `hearsay agent` processes on 127.0.0.1 (timing preset `local`): formation,
//! delivery, a crash and a restart, queries, admission, garbage, a graceful leave.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hearsay_tests::{AgentSpec, Cluster, keygen, metric_sum, wait_for};
use serde_json::json;

#[test]
fn five_nodes_form_from_one_seed_and_every_subscriber_gets_everything_in_order() {
    let c = Cluster::start("deliver", 5);
    let subs: Vec<_> = c.agents().iter().map(|a| a.subscribe("orders")).collect();
    c.wait_tree("orders", &c.all());
    let refs: Vec<_> = subs.iter().collect();
    let origins = c.warm_up("orders", &[1, 3], &refs);
    let first: Vec<u64> = [1, 3].iter().map(|p| c[*p].publish("orders", "a-first").seq).collect();
    let started = Instant::now();
    for i in 1..500 {
        c[1].publish("orders", &format!("a{i}"));
        c[3].publish("orders", &format!("b{i}"));
    }
    let last: Vec<u64> = first.iter().map(|f| f + 499).collect();
    for (k, s) in subs.iter().enumerate() {
        wait_for(&format!("n{k} to receive both streams"), Duration::from_secs(60), || {
            let got: Vec<u64> = (0..2).map(|p| s.account(&origins[p], first[p], last[p]).delivered).collect();
            if got == [500, 500] { Ok(()) } else { Err(format!("{got:?} of 500 each")) }
        });
    }
    let elapsed = started.elapsed();
    for (k, s) in subs.iter().enumerate() {
        for p in 0..2 {
            let acc = s.account(&origins[p], first[p], last[p]);
            assert!(acc.is_sound() && acc.gaps.is_empty(), "n{k}, origin {}: {acc:?}", origins[p]);
        }
        // Payloads as published, in publish order.
        let a: Vec<String> = s
            .messages()
            .into_iter()
            .filter(|m| m.origin == origins[0] && m.seq >= first[0])
            .filter_map(|m| m.payload)
            .collect();
        let expected: Vec<String> =
            std::iter::once("a-first".to_string()).chain((1..500).map(|i| format!("a{i}"))).collect();
        assert_eq!(a, expected, "n{k}: n1's payloads");
    }
    eprintln!("1000 messages from 2 publishers reached 5 subscribers in {elapsed:?}");
}

#[test]
fn a_killed_node_is_detected_dead_and_comes_back_with_its_identity_after_a_restart() {
    let mut c = Cluster::start("crash", 5);
    let before = c[4].id();
    let incarnation =
        |c: &Cluster| c[0].members().expect("members").iter().find(|m| m.id == before).map(|m| m.incarnation);
    let incarnation_before = incarnation(&c).expect("n0 lists n4");
    let sub1 = c[1].subscribe("during");
    c.wait_tree("during", &[1]);
    let origin0 = c.warm_up("during", &[0], &[&sub1])[0].clone();

    c[4].kill();
    let killed = Instant::now();
    // Bound for the `local` preset (memberlist's DefaultLocalConfig, PROTOCOLS.md §6.13): every
    // member is probed within N-1 = 4 periods of 1 s; the suspicion lasts at most
    // SuspicionMaxTimeoutMult 6 × SuspicionMult 3 × 1 s = 18 s; dissemination takes a few
    // periods more. 30 s is the bound asserted.
    // Survivors are watched together: one that saw n4 dead may already have forgotten it
    // (`gossip_to_the_dead_time`, 15 s in `local`) by the time another is asked, and a member
    // leaves the list only after being dead, so dropped counts as detected.
    let bound = Duration::from_secs(30);
    let mut detected = [false; 4];
    wait_for("every survivor to see n4 dead", bound, || {
        for (i, seen) in detected.iter_mut().enumerate() {
            if *seen {
                continue;
            }
            let members = c[i].members()?;
            match members.iter().find(|m| m.id == before) {
                Some(m) if m.state == "dead" => *seen = true,
                Some(m) => return Err(format!("n{i} sees n4 {}", m.state)),
                None => *seen = true,
            }
        }
        Ok(())
    });
    eprintln!("n4 killed with SIGKILL; all survivors marked it dead after {:?}", killed.elapsed());

    // While it is down the others keep publishing and delivering.
    let down_first = c[0].publish("during", "down 0").seq;
    for i in 1..20 {
        c[0].publish("during", &format!("down {i}"));
    }
    let down_last = down_first + 19;
    wait_for("n1 to get what n0 published while n4 was down", Duration::from_secs(30), || {
        let acc = sub1.account(&origin0, down_first, down_last);
        if acc.delivered == 20 { Ok(()) } else { Err(format!("{acc:?}")) }
    });

    // Same data dir: same NodeId, on fresh ports; it refutes its death with a higher
    // incarnation and every member lists it alive again, once.
    let ready = c[4].restart();
    assert_eq!(ready.id, before, "the restarted agent has the identity kept in its data dir");
    c.wait_converged();
    for a in c.agents() {
        let members = a.members().expect("members");
        let n4: Vec<_> = members.iter().filter(|m| m.name == "n4").collect();
        assert_eq!(n4.len(), 1, "{} lists n4 once: {members:?}", a.name);
        assert_eq!(
            (n4[0].id.as_str(), n4[0].addr.as_str()),
            (before.as_str(), ready.addr.to_string().as_str())
        );
    }
    let incarnation_after = incarnation(&c).expect("n0 lists n4");
    assert!(incarnation_after > incarnation_before, "refuted: {incarnation_before} -> {incarnation_after}");

    // What arrives at the restarted node. A new (non-durable) subscription starts at the
    // current heads (issue 11 §3): every message published after it, in order, without a gap
    // notice for the history before it (catching up on that is a durable subscription's job).
    let sub4 = c[4].subscribe("during");
    c.wait_tree("during", &[1, 4]);
    let after_first = c[0].publish("during", "after 0").seq;
    for i in 1..30 {
        c[0].publish("during", &format!("after {i}"));
    }
    let after_last = after_first + 29;
    // And what it publishes now is a new stream (a new origin: a new process life) that reaches n1.
    let mine = c[4].publish("during", "from the new life");
    assert_ne!(mine.origin, before, "a stream's origin is the node id with the life's epoch");
    assert_eq!(mine.seq, 1, "a new life starts a new stream");
    for (s, name, from) in [(&sub4, "n4", after_first), (&sub1, "n1", down_first)] {
        wait_for(
            &format!("{name} to get n0's stream up to the last message"),
            Duration::from_secs(30),
            || {
                let acc = s.account(&origin0, from, after_last);
                if acc.delivered + acc.gapped == after_last - from + 1 {
                    Ok(())
                } else {
                    Err(format!("{acc:?}"))
                }
            },
        );
        let acc = s.account(&origin0, from, after_last);
        assert!(acc.is_sound() && acc.gaps.is_empty(), "{name}: {acc:?}");
    }
    assert!(sub4.gaps().is_empty(), "n4's new subscription announced gaps: {:?}", sub4.gaps());
    wait_for("n1 to get the restarted node's message", Duration::from_secs(30), || {
        let got = sub1.messages().into_iter().find(|m| m.origin == mine.origin);
        got.map(|m| assert_eq!((m.seq, m.payload.as_deref()), (1, Some("from the new life"))))
            .ok_or("not yet".to_string())
    });
}

#[test]
fn an_aggregation_query_returns_the_right_values() {
    let c = Cluster::start("query", 5);
    for (i, a) in c.agents().iter().enumerate() {
        a.post("/v1/values", &json!({"name": "load", "value": (i + 1) as f64})).expect("set value");
    }
    for (func, expected) in [("avg", 3.0), ("sum", 15.0), ("max", 5.0), ("min", 1.0), ("count", 5.0)] {
        let r = c[2].query(func, "load").expect("an answer").ok().expect("200");
        let value = r["value"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (value - expected).abs() <= 1e-3 * expected,
            "{func}(load) = {value}, expected {expected}: {r}"
        );
        assert_eq!((r["fn"].as_str(), r["name"].as_str()), (Some(func), Some("load")), "{r}");
        assert_eq!(r["converged"], true, "{r}");
        assert_eq!(r["nodes"], 5, "{r}");
        eprintln!("{func}(load) = {value} in {} rounds", r["rounds"]);
    }
}

#[test]
fn a_node_with_the_wrong_secret_is_refused_with_a_clear_error_on_both_sides() {
    let mut c = Cluster::start("secret", 3);
    let wrong = keygen(c.dir(), "other.key");
    let seed = c[0].addr();
    let i = c.launch(AgentSpec::new("intruder").secret(&wrong).join(&[seed]));
    let status = c[i].wait_exit(Duration::from_secs(30)).expect("the intruder gives up by itself");
    assert_eq!(status.code(), Some(1), "{status:?}");
    let its_log = c[i].log_text();
    assert!(
        its_log.contains("every seed refused this node's certificate. The cluster secret differs"),
        "intruder's log does not say why: {its_log}"
    );
    let seed_log = c[0].log_text();
    assert!(seed_log.contains("different --secret-file"), "seed's log does not say why: {seed_log}");
    for a in &c.agents()[..3] {
        let names: Vec<String> = a.members().expect("the API answers").into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["n0", "n1", "n2"], "{} lists only the members", a.name);
    }
}

#[test]
fn malformed_datagrams_are_counted_and_dropped_while_the_cluster_keeps_working() {
    let c = Cluster::start("garbage", 3);
    let target = &c[0];
    let metric = |name: &str| metric_sum(&target.metrics().expect("metrics"), name);
    // Cut n0 off from the others (both ways) so that nothing but the junk reaches its socket,
    // and wait until its datagram counter stands still.
    c.partition(&[&[0], &[1, 2]]);
    let mut last = -1.0;
    let mut still = 0;
    wait_for("n0's datagram counter to stand still", Duration::from_secs(30), || {
        let now = metric("hearsay_udp_datagrams_received_total");
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still >= 10 { Ok(()) } else { Err(format!("{now} and counting")) }
    });
    let udp_before = last;
    let errors_before = metric("hearsay_decode_errors_total");

    // 1. Raw UDP garbage at the QUIC port: not QUIC, counted on the wire, dropped by the
    //    endpoint before any decoding.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..500usize {
        let len = 1 + (i * 7) % 1400;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        sock.send_to(&junk, target.addr()).expect("send junk");
        if i % 10 == 9 {
            // Paced, so the kernel's socket buffer does not drop them before the agent reads.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    wait_for("n0 to count the 500 junk datagrams", Duration::from_secs(20), || {
        let got = metric("hearsay_udp_datagrams_received_total") - udp_before;
        if got >= 500.0 { Ok(()) } else { Err(format!("{got} counted")) }
    });
    assert_eq!(
        metric("hearsay_udp_datagrams_received_total") - udp_before,
        500.0,
        "exactly the junk arrived"
    );
    assert_eq!(metric("hearsay_decode_errors_total"), errors_before, "raw junk never reaches the decoder");

    // 2. Authenticated garbage: a member's connection carrying 4 kinds × 25 frames that do not
    //    decode; each is counted as one decode error, by kind.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let target_id = {
        let hex = target.id();
        let mut b = [0u8; 32];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex id");
        }
        hearsay_protocols::NodeId::from_bytes(b)
    };
    let secret = c.secret().to_path_buf();
    let addr = target.addr();
    runtime.block_on(async {
        use hearsay::transport::identity::{ClusterSecret, NodeIdentity};
        use hearsay::transport::{Transport, TransportConfig};
        let id = NodeIdentity::ephemeral(&ClusterSecret::load(&secret).expect("secret")).expect("identity");
        let (t, _rx) =
            Transport::bind(TransportConfig::new("127.0.0.1:0".parse().expect("addr")), &id).expect("bind");
        t.connect(addr).await.expect("a member's connection");
        for junk in
            [&b"\x01"[..], &b"\x01\x63junk"[..], &b"\x09\x05"[..], &b"\x01\x05\xff\xff\xff\xff\xff"[..]]
        {
            for _ in 0..25 {
                t.send(
                    target_id,
                    addr,
                    hearsay_protocols::Reliability::Stream,
                    bytes::Bytes::copy_from_slice(junk),
                );
            }
        }
        wait_for("n0 to count 100 decode errors", Duration::from_secs(20), || {
            let got = metric("hearsay_decode_errors_total") - errors_before;
            if got >= 100.0 { Ok(()) } else { Err(format!("{got} counted")) }
        });
        t.close().await;
    });
    let text = target.metrics().expect("metrics");
    assert_eq!(
        metric_sum(&text, "hearsay_decode_errors_total") - errors_before,
        100.0,
        "one error per frame"
    );
    let kinds: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("hearsay_decode_errors_total{") && !l.ends_with(" 0"))
        .collect();
    eprintln!("decode errors by kind: {kinds:?}");

    // The cluster still works once the links are back.
    c.heal();
    c.wait_converged();
    let sub = c[2].subscribe("still");
    c.wait_tree("still", &[2]);
    let origin = c.warm_up("still", &[0], &[&sub]).remove(0);
    let id = c[0].publish("still", "alive");
    wait_for("a message after the garbage", Duration::from_secs(20), || {
        let acc = sub.account(&origin, id.seq, id.seq);
        if acc.delivered == 1 { Ok(()) } else { Err(format!("{acc:?}")) }
    });
}

#[test]
fn sigterm_leaves_the_cluster_gracefully() {
    let mut c = Cluster::start("leave", 3);
    let ready_file = c[2].data_dir.join("ready.json");
    assert!(ready_file.exists());
    let status = c[2].terminate().expect("the agent exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(!ready_file.exists(), "a clean exit removes the ready file");
    for i in 0..2 {
        c[i].wait_state("n2", "left", Duration::from_secs(10));
    }
    let alive: BTreeSet<String> =
        c[0].members().expect("members").into_iter().filter(|m| m.state == "alive").map(|m| m.name).collect();
    assert_eq!(alive, BTreeSet::from(["n0".to_string(), "n1".to_string()]));
}
