//! Restarts and shutdowns lose nothing (issue 11): real agents SIGKILLed or SIGTERMed and
//! started again with the same data dir (so the same identity, store and address).

use std::time::{Duration, Instant};

use hearsay_tests::{Agent, Subscription, TempDir, cluster, keygen, wait_for};

/// Poll `probe` every 5 ms until it is true: the instant it was, or `None` after `within`.
/// (Finer than [`wait_for`]: these tests measure latencies of a few milliseconds.)
fn poll_until(within: Duration, mut probe: impl FnMut() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if probe() {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn has_payload(sub: &Subscription, payload: &str) -> bool {
    sub.messages().iter().any(|(_, _, p)| p == payload)
}

/// Members alive or suspect in `a`'s own view, self included (`GET /v1/status`).
fn live_members(a: &Agent) -> u64 {
    a.get("/v1/status").ok().and_then(|v| v["members"].as_u64()).unwrap_or(0)
}

/// The sum of a metric's samples in `a`'s `/metrics` (0 if it cannot be read).
fn metric(a: &Agent, name: &str) -> f64 {
    let text = ureq::get(&format!("http://{}/metrics", a.api))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// True when every one of `names` is alive in `a`'s member list.
fn sees_alive(a: &Agent, names: &[&str]) -> bool {
    let m = a.members();
    names.iter().all(|n| m.get(*n).is_some_and(|s| s == "alive"))
}

/// True when `a` is on `topic`'s tree: the root, or a member with a parent.
fn on_tree(a: &Agent, topic: &str) -> bool {
    a.get("/v1/topics")
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|t| t["topic"] == topic && (t["role"] == "root" || t["parent"].is_string()))
}

#[test]
fn a_restarted_subscriber_gets_the_first_message_after_rejoining_within_a_second() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("restart-first");
    let secret = keygen(dir.path(), "cluster.key");
    let mut agents = cluster(dir.path(), &secret, 5);
    let (publisher, steady, restarted) = (1, 2, 4);
    let steady_sub = agents[steady].subscribe("news");
    let first_life = agents[restarted].subscribe("news");
    wait_for("both subscriptions on the tree", Duration::from_secs(20), || {
        (on_tree(&agents[steady], "news") && on_tree(&agents[restarted], "news")).then_some(())
    });
    agents[publisher].publish("news", "before");
    wait_for("the first message at both", Duration::from_secs(10), || {
        (has_payload(&steady_sub, "before") && has_payload(&first_life, "before")).then_some(())
    });
    const RUNS: usize = 6;
    let mut latencies = Vec::new();
    for run in 0..RUNS {
        agents[restarted].kill();
        let killed = Instant::now();
        for i in 0..10 {
            agents[publisher].publish("news", &format!("while-down-{run}-{i}"));
        }
        if run % 2 == 1 {
            // Back only once a member suspects the old process: the rejoin must refute it.
            wait_for("a member to suspect the killed agent", Duration::from_secs(20), || {
                agents[..4].iter().any(|a| a.members().get("n4").is_some_and(|s| s != "alive")).then_some(())
            });
        }
        agents[restarted].restart();
        let started = Instant::now();
        agents[restarted].wait_ready();
        wait_for("the restarted agent to report the cluster joined", Duration::from_secs(20), || {
            (live_members(&agents[restarted]) == 5).then_some(())
        });
        if run >= RUNS / 2 {
            // Later runs subscribe only once every member lists the new life alive, as a
            // subscriber that comes back a few seconds after the agent would.
            wait_for("every member to list the restarted agent alive", Duration::from_secs(20), || {
                agents.iter().all(|a| sees_alive(a, &["n4"])).then_some(())
            });
        }
        let joined = started.elapsed();
        let sub = agents[restarted].subscribe("news");
        let payload = format!("after-restart-{run}");
        let published = Instant::now();
        agents[publisher].publish("news", &payload);
        let (mut at_restarted, mut at_steady) = (None, None);
        poll_until(Duration::from_secs(30), || {
            if at_restarted.is_none() && has_payload(&sub, &payload) {
                at_restarted = Some(published.elapsed());
            }
            if at_steady.is_none() && has_payload(&steady_sub, &payload) {
                at_steady = Some(published.elapsed());
            }
            at_restarted.is_some() && at_steady.is_some()
        });
        let latency =
            at_restarted.unwrap_or_else(|| panic!("run {run}: the restarted agent never got {payload}"));
        eprintln!(
            "run {run}: down {:?}, rejoined {joined:?} after start; first message after the rejoin in \
             {latency:?} (a steady subscriber: {at_steady:?})",
            started - killed,
        );
        assert!(sub.gaps().is_empty(), "run {run}: a new subscription announced gaps: {:?}", sub.gaps());
        latencies.push(latency);
    }
    let mut sorted = latencies.clone();
    sorted.sort_unstable();
    eprintln!("restart to first delivery: median {:?} over {RUNS} runs: {latencies:?}", sorted[RUNS / 2]);
    assert!(latencies.iter().all(|l| *l <= Duration::from_secs(1)), "{latencies:?}");
}

#[test]
fn a_whole_cluster_killed_and_restarted_reforms_by_itself_and_delivers() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("restart-all");
    let secret = keygen(dir.path(), "cluster.key");
    // n0 is the seed; n1..n4 were started with `--join n0`.
    let mut agents = cluster(dir.path(), &secret, 5);
    wait_for("every store to keep the other four members", Duration::from_secs(30), || {
        agents.iter().all(|a| metric(a, "hearsay_store_members") == 4.0).then_some(())
    });
    for a in agents.iter_mut() {
        a.kill();
    }
    // n1..n4 come back first: their seed is not up, so they can only find each other through
    // the members their stores kept.
    let started = Instant::now();
    for a in agents[1..].iter_mut() {
        a.restart();
    }
    for a in &agents[1..] {
        a.wait_ready();
    }
    let others = ["n1", "n2", "n3", "n4"];
    wait_for("n1..n4 to re-form while their seed is down", Duration::from_secs(30), || {
        agents[1..].iter().all(|a| sees_alive(a, &others)).then_some(())
    });
    let without_seed = started.elapsed();
    agents[0].restart();
    agents[0].wait_ready();
    let all = ["n0", "n1", "n2", "n3", "n4"];
    wait_for("all five alive on every node", Duration::from_secs(45), || {
        agents.iter().all(|a| a.members().len() == 5 && sees_alive(a, &all)).then_some(())
    });
    let reformed = started.elapsed();
    eprintln!(
        "whole-cluster restart: n1..n4 re-formed without their seed in {without_seed:?}, all five in {reformed:?}"
    );
    let dials: f64 = agents.iter().map(|a| metric(a, "hearsay_reconnect_dials_total")).sum();
    assert!(dials > 0.0, "no reconnect dial counted");
    // And it delivers: a publish reaches every subscriber.
    let subs: Vec<Subscription> = agents.iter().map(|a| a.subscribe("after")).collect();
    wait_for("every subscription on the tree", Duration::from_secs(20), || {
        agents.iter().all(|a| on_tree(a, "after")).then_some(())
    });
    agents[3].publish("after", "reformed");
    for (a, s) in agents.iter().zip(&subs) {
        wait_for(&format!("{} to get the message", a.name), Duration::from_secs(10), || {
            has_payload(s, "reformed").then_some(())
        });
    }
}

#[test]
fn sigterm_flushes_closes_every_subscription_and_leaves() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("restart-term");
    let secret = keygen(dir.path(), "cluster.key");
    let mut agents = cluster(dir.path(), &secret, 4);
    let leaving = 3;
    let subs: Vec<Subscription> = agents.iter().map(|a| a.subscribe("news")).collect();
    wait_for("every subscription on the tree", Duration::from_secs(20), || {
        agents.iter().all(|a| on_tree(a, "news")).then_some(())
    });
    // The leaving agent publishes a burst and is told to stop right after the last publish
    // returned: what it has not sent yet is flushed, not dropped.
    const BURST: u64 = 200;
    let mut origin = String::new();
    for i in 1..=BURST {
        origin = agents[leaving].publish("news", &format!("last-words-{i}")).0;
    }
    let asked = Instant::now();
    let status = agents[leaving].terminate().expect("the agent exits after SIGTERM");
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status:?}");
    eprintln!("SIGTERM right after {BURST} publishes: the agent exited after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Its client got the closing line.
    let closed: Vec<serde_json::Value> =
        subs[leaving].lines().into_iter().filter_map(|l| l.get("closed").cloned()).collect();
    assert_eq!(closed.len(), 1, "closing lines: {closed:?}");
    assert!(closed[0]["reason"].as_str().is_some_and(|r| r.contains("shutting down")), "{closed:?}");
    // The others record a leave, never a death.
    wait_for("the others to record n3 as left", Duration::from_secs(10), || {
        agents[..leaving].iter().all(|a| a.members().get("n3").is_some_and(|s| s == "left")).then_some(())
    });
    // Every other subscriber gets the whole burst, in order, with no gap.
    for (k, s) in subs[..leaving].iter().enumerate() {
        wait_for(&format!("n{k} to get all {BURST} messages"), Duration::from_secs(20), || {
            (s.messages().iter().filter(|(o, _, _)| *o == origin).count() as u64 >= BURST).then_some(())
        });
        let seqs: Vec<u64> =
            s.messages().iter().filter(|(o, _, _)| *o == origin).map(|(_, q, _)| *q).collect();
        assert_eq!(seqs, (1..=BURST).collect::<Vec<u64>>(), "n{k}");
        assert!(s.gaps().is_empty(), "n{k}: {:?}", s.gaps());
    }
    for a in &agents[..leaving] {
        let log = a.log_text();
        assert!(
            !log.contains("member=n3 id")
                || !log.lines().any(|l| l.contains("member=n3") && l.contains("Dead")),
            "{} saw n3 dead",
            a.name
        );
    }
}
