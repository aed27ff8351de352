//! Clusters of real `hearsay agent` processes on 127.0.0.1 (timing preset `local`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hearsay_tests::{Agent, TempDir, cluster, keygen, wait_for};

/// Per-origin seqs in arrival order.
fn by_origin(msgs: &[(String, u64, String)]) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (o, s, _) in msgs {
        m.entry(o.clone()).or_default().push(*s);
    }
    m
}

#[test]
fn five_nodes_form_from_one_seed_and_every_subscriber_gets_everything_in_order() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("deliver");
    let secret = keygen(dir.path(), "cluster.key");
    let agents = cluster(dir.path(), &secret, 5);
    let subs: Vec<_> = agents.iter().map(|a| a.subscribe("orders")).collect();
    // Let the subscriptions reach the member table before publishing.
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (p1, p2) = (&agents[1], &agents[3]);
    let mut origins = Vec::new();
    for i in 0..500 {
        let (o1, _) = p1.publish("orders", &format!("a{i}"));
        let (o2, _) = p2.publish("orders", &format!("b{i}"));
        if i == 0 {
            origins = vec![o1, o2];
        }
    }
    for (k, s) in subs.iter().enumerate() {
        wait_for(&format!("n{k} to receive 1000 messages"), Duration::from_secs(60), || {
            (s.messages().len() >= 1000).then_some(())
        });
    }
    let elapsed = started.elapsed();
    for (k, s) in subs.iter().enumerate() {
        let msgs = s.messages();
        assert_eq!(msgs.len(), 1000, "n{k} got duplicates or extras");
        assert!(s.gaps().is_empty(), "n{k} reported gaps: {:?}", s.gaps());
        let per = by_origin(&msgs);
        for o in &origins {
            let seqs = per.get(o).cloned().unwrap_or_default();
            assert_eq!(seqs, (1..=500).collect::<Vec<u64>>(), "n{k}: origin {o} out of order or incomplete");
        }
        // Payloads match what was published, in order.
        let payloads: Vec<&str> =
            msgs.iter().filter(|(o, _, _)| *o == origins[0]).map(|(_, _, p)| p.as_str()).collect();
        assert_eq!(payloads[0], "a0");
        assert_eq!(payloads[499], "a499");
    }
    eprintln!("1000 messages from 2 publishers reached 5 subscribers in {elapsed:?}");
}

#[test]
fn a_killed_node_is_detected_dead_in_bounded_time_and_rejoins_after_restart() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("crash");
    let secret = keygen(dir.path(), "cluster.key");
    let mut agents = cluster(dir.path(), &secret, 5);
    agents[4].kill();
    let killed = Instant::now();
    // Bound for the `local` preset (memberlist's DefaultLocalConfig, PROTOCOLS.md §6.13): every
    // member is probed within N-1 = 4 periods of 1 s; the suspicion lasts at most
    // SuspicionMaxTimeoutMult 6 × SuspicionMult 3 × 1 s = 18 s; dissemination takes a few
    // periods more. 30 s is the bound asserted.
    let bound = Duration::from_secs(30);
    wait_for("every survivor to mark n4 dead", bound, || {
        agents[..4].iter().all(|a| a.members().get("n4").is_some_and(|s| s == "dead")).then_some(())
    });
    let detected = killed.elapsed();
    eprintln!("n4 killed with SIGKILL; all survivors marked it dead after {detected:?} (bound {bound:?})");

    // Same identity (data dir), same address: it refutes its death and rejoins.
    agents[4].restart();
    agents[4].wait_ready();
    wait_for("every member to see n4 alive again", Duration::from_secs(30), || {
        agents.iter().all(|a| a.members().get("n4").is_some_and(|s| s == "alive")).then_some(())
    });
    // It catches up: subscribes and gets every message published from then on, in order.
    let sub = agents[4].subscribe("after");
    let other = agents[1].subscribe("after");
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..50 {
        agents[0].publish("after", &format!("m{i}"));
    }
    for s in [&sub, &other] {
        wait_for("50 messages after the restart", Duration::from_secs(30), || {
            (s.messages().len() >= 50).then_some(())
        });
    }
    let seqs: Vec<u64> = sub.messages().iter().map(|(_, s, _)| *s).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
}

#[test]
fn an_aggregation_query_returns_the_right_values() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("query");
    let secret = keygen(dir.path(), "cluster.key");
    let agents = cluster(dir.path(), &secret, 5);
    for (i, a) in agents.iter().enumerate() {
        a.post("/v1/values", &serde_json::json!({"name": "load", "value": (i + 1) as f64})).unwrap();
    }
    for (func, expected) in [("avg", 3.0), ("sum", 15.0), ("max", 5.0), ("min", 1.0), ("count", 5.0)] {
        let r = agents[2].post("/v1/query", &serde_json::json!({"fn": func, "name": "load"})).unwrap();
        let value = r["value"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (value - expected).abs() <= 1e-3 * expected.abs(),
            "{func}(load) = {value}, expected {expected}: {r}"
        );
        assert_eq!(r["converged"], true, "{r}");
        assert_eq!(r["nodes"], 5, "{r}");
        eprintln!("{func}(load) = {value} in {} rounds", r["rounds"]);
    }
}

#[test]
fn a_node_with_the_wrong_secret_is_refused_with_a_clear_error_on_both_sides() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("secret");
    let secret = keygen(dir.path(), "cluster.key");
    let agents = cluster(dir.path(), &secret, 3);
    let wrong = keygen(dir.path(), "other.key");
    let mut intruder = Agent::start(dir.path(), "intruder", &wrong, &[agents[0].addr], &[]);
    let status = intruder.wait_exit(Duration::from_secs(20)).expect("the intruder gives up by itself");
    assert!(!status.success());
    let its_log = intruder.log_text();
    assert!(its_log.contains("secret"), "intruder's log does not say why: {its_log}");
    let seed_log = agents[0].log_text();
    assert!(seed_log.contains("different --secret-file"), "seed's log does not say why: {seed_log}");
    for a in &agents {
        assert!(!a.members().contains_key("intruder"), "{} lists the intruder", a.name);
    }
}

#[test]
fn malformed_datagrams_are_counted_and_dropped_while_the_cluster_keeps_working() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("garbage");
    let secret = keygen(dir.path(), "cluster.key");
    let agents = cluster(dir.path(), &secret, 3);
    let metric = |a: &Agent, name: &str| -> f64 {
        let text = ureq::get(&format!("http://{}/metrics", a.api))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let udp_before = metric(&agents[0], "hearsay_udp_datagrams_received_total");
    let errors_before = metric(&agents[0], "hearsay_decode_errors_total");

    // 1. Raw UDP garbage at the QUIC port: not QUIC, dropped by the endpoint, counted.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
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
        let _ = sock.send_to(&junk, agents[0].addr);
        if i % 20 == 19 {
            // Paced, so the kernel's socket buffer does not drop them before the agent sees them.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // 2. Authenticated garbage: a member's connection carrying frames that do not decode.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target_id = {
        let hex = agents[0].get("/v1/status").unwrap()["id"].as_str().unwrap().to_string();
        let mut b = [0u8; 32];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        hearsay_protocols::NodeId::from_bytes(b)
    };
    runtime.block_on(async {
        use hearsay::transport::identity::{ClusterSecret, NodeIdentity};
        use hearsay::transport::{Transport, TransportConfig};
        let id = NodeIdentity::ephemeral(&ClusterSecret::load(&secret).unwrap()).unwrap();
        let (t, _rx) = Transport::bind(TransportConfig::new("127.0.0.1:0".parse().unwrap()), &id).unwrap();
        for junk in
            [&b"\x01"[..], &b"\x01\x63junk"[..], &b"\x09\x05"[..], &b"\x01\x05\xff\xff\xff\xff\xff"[..]]
        {
            for _ in 0..25 {
                t.send(
                    target_id,
                    agents[0].addr,
                    hearsay_protocols::Reliability::Datagram,
                    bytes::Bytes::copy_from_slice(junk),
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        t.close().await;
    });
    let mut seen = (0.0, 0.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        seen = (
            metric(&agents[0], "hearsay_udp_datagrams_received_total") - udp_before,
            metric(&agents[0], "hearsay_decode_errors_total") - errors_before,
        );
        if seen.0 >= 500.0 && seen.1 >= 100.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        seen.0 >= 500.0 && seen.1 >= 100.0,
        "garbage not counted: {} datagrams, {} decode errors",
        seen.0,
        seen.1
    );
    // The cluster still works.
    let sub = agents[2].subscribe("still");
    std::thread::sleep(Duration::from_secs(2));
    agents[0].publish("still", "alive");
    wait_for("a message after the garbage", Duration::from_secs(20), || {
        (sub.messages().len() == 1).then_some(())
    });
    for a in &agents {
        assert_eq!(a.members().values().filter(|s| *s == "alive").count(), 3, "{}", a.name);
    }
}

#[test]
fn sigterm_leaves_the_cluster_gracefully() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("leave");
    let secret = keygen(dir.path(), "cluster.key");
    let mut agents = cluster(dir.path(), &secret, 3);
    let status = agents[2].terminate().expect("the agent exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    wait_for("the others to record n2 as left", Duration::from_secs(10), || {
        agents[..2].iter().all(|a| a.members().get("n2").is_some_and(|s| s == "left")).then_some(())
    });
}
