//! Restarts and shutdowns lose nothing (issue 11 §4, §5): real agents SIGKILLed or SIGTERMed
//! and started again with the same data dir (the same identity and store; the agent binds its
//! previous life's port again when it is free).

use std::time::{Duration, Instant};

use hearsay_tests::{Agent, AgentSpec, Cluster, Subscription, wait_for};

/// Poll `probe` every 5 ms until it is true; false after `within`. (Finer than [`wait_for`]:
/// these tests measure latencies of a few milliseconds.)
fn poll_until(within: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn has_payload(sub: &Subscription, payload: &str) -> bool {
    sub.messages().iter().any(|m| m.payload.as_deref() == Some(payload))
}

/// Members alive or suspect in `a`'s own view, self included (`GET /v1/status`).
fn live_members(a: &Agent) -> Result<u64, String> {
    a.get("/v1/status")?["members"].as_u64().ok_or_else(|| "no `members` in /v1/status".to_string())
}

/// The sum of a metric's samples in `a`'s `/metrics` (0 if it cannot be read).
fn metric(a: &Agent, name: &str) -> f64 {
    let text = a.metrics().unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `Ok` when `a` lists the member named `name` alive.
fn sees_alive(a: &Agent, name: &str) -> Result<(), String> {
    match a.state_of(name)?.as_str() {
        "alive" => Ok(()),
        other => Err(format!("{} lists {name} {other}", a.name)),
    }
}

/// [`Cluster::start`], with `--log $DEBUG_LOG` when set.
fn start(label: &str, n: usize) -> Cluster {
    let log = std::env::var("DEBUG_LOG").ok();
    let extra: Vec<&str> = log.as_deref().map(|l| vec!["--log", l]).unwrap_or_default();
    let mut c = Cluster::new(label);
    c.add(AgentSpec::new("n0").args(&extra));
    let seed = c[0].addr();
    for i in 1..n {
        c.add(AgentSpec::new(&format!("n{i}")).join(&[seed]).args(&extra));
    }
    c.wait_converged();
    c
}

/// Restart the subscriber n4 of a 5-node cluster `RUNS` times (SIGKILL, 10 messages published
/// while it is down, same data dir) and subscribe again once it has rejoined: for each run, how
/// long the first message published after the new subscription took to reach it (`None`: not
/// within `within`). Odd runs restart it only once a member suspects the old process (the
/// rejoin must refute it); later runs subscribe only once every member lists the new life
/// alive, as a subscriber that comes back a few seconds after the agent would.
fn restart_runs(label: &str, within: Duration) -> Vec<Option<Duration>> {
    const RUNS: usize = 6;
    let mut c = start(label, 5);
    let (publisher, steady, restarted) = (1, 2, 4);
    let steady_sub = c[steady].subscribe("news");
    let first_life = c[restarted].subscribe("news");
    c.wait_tree("news", &[steady, restarted]);
    c.warm_up("news", &[publisher], &[&steady_sub, &first_life]);
    let mut latencies = Vec::new();
    for run in 0..RUNS {
        c[restarted].kill();
        let killed = Instant::now();
        for i in 0..10 {
            c[publisher].publish("news", &format!("while-down-{run}-{i}"));
        }
        if run % 2 == 1 {
            wait_for("a member to suspect the killed agent", Duration::from_secs(20), || {
                let states: Vec<String> = (0..4).map(|i| c[i].state_of("n4")).collect::<Result<_, _>>()?;
                if states.iter().any(|s| s != "alive") { Ok(()) } else { Err(format!("{states:?}")) }
            });
        }
        let started = Instant::now();
        c[restarted].restart();
        wait_for("the restarted agent to report the cluster joined", Duration::from_secs(20), || {
            match live_members(&c[restarted])? {
                5 => Ok(()),
                n => Err(format!("{n} live members")),
            }
        });
        if run >= RUNS / 2 {
            wait_for("every member to list the restarted agent alive", Duration::from_secs(20), || {
                c.agents().iter().try_for_each(|a| sees_alive(a, "n4"))
            });
        }
        let joined = started.elapsed();
        let sub = c[restarted].subscribe("news");
        let payload = format!("after-restart-{run}");
        let published = Instant::now();
        c[publisher].publish("news", &payload);
        let (mut at_restarted, mut at_steady) = (None, None);
        poll_until(within, || {
            if at_restarted.is_none() && has_payload(&sub, &payload) {
                at_restarted = Some(published.elapsed());
            }
            if at_steady.is_none() && has_payload(&steady_sub, &payload) {
                at_steady = Some(published.elapsed());
            }
            at_restarted.is_some() && at_steady.is_some()
        });
        if at_restarted.is_none() {
            eprintln!(
                "run {run}: the restarted agent did not get {payload} within {within:?}; its subscription's \
                 lines: {:?}; its topic: {:?}",
                sub.lines(),
                c[restarted].topic("news")
            );
            if let Ok(keep) = std::env::var("KEEP_LOGS") {
                for a in c.agents() {
                    let _ =
                        std::fs::copy(&a.log, std::path::Path::new(&keep).join(format!("{}.log", a.name)));
                }
            }
        }
        eprintln!(
            "run {run}: down {:?}, joined {joined:?} after the restart; first new message {at_restarted:?} \
             after its publish (at a steady subscriber: {at_steady:?})",
            started - killed,
        );
        assert!(sub.gaps().is_empty(), "run {run}: a new subscription announced gaps: {:?}", sub.gaps());
        latencies.push(at_restarted);
    }
    latencies
}

/// Issue 11 §4: the median, over 6 restarts, of the time from a publish to its delivery at the
/// restarted agent's new subscription is under a second (a run whose message never came
/// counts as infinitely slow).
#[test]
fn a_restarted_subscriber_gets_the_first_message_after_rejoining_within_a_second() {
    let latencies = restart_runs("restart-first", Duration::from_secs(5));
    let mut sorted: Vec<Duration> = latencies.iter().map(|l| l.unwrap_or(Duration::MAX)).collect();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let missed = latencies.iter().filter(|l| l.is_none()).count();
    eprintln!(
        "restart to first delivery: median {median:?} over {} runs ({missed} not delivered within 5 s): \
         {latencies:?}",
        latencies.len()
    );
    assert!(median <= Duration::from_secs(1), "median over 1 s: {latencies:?}");
}

/// No message published after the restarted agent subscribed again is lost (6 restarts, 30 s
/// each). It used to be, about once in six: the new subscription's heads request waited for a
/// connection, the member it asked got the message first and named it as the head, and the
/// subscription started after it. A head published about when the heads were asked for is
/// now delivered (pbcast's `HEADS_RECENT`). Run with `KEEP_LOGS=DIR` (and `DEBUG_LOG=filter`
/// for `--log`) to keep the agents' logs of a failing run.
#[test]
fn no_message_is_lost_right_after_a_restart() {
    let latencies = restart_runs("restart-lost", Duration::from_secs(30));
    assert!(latencies.iter().all(Option::is_some), "{latencies:?}");
}

#[test]
fn a_publisher_killed_right_after_a_publish_continues_its_stream_after_a_restart() {
    let mut c = Cluster::start("restart-publisher", 4);
    let publisher = 3;
    let subs: Vec<Subscription> = (0..3).map(|i| c[i].subscribe("ledger")).collect();
    c.wait_tree("ledger", &[0, 1, 2]);
    let refs: Vec<&Subscription> = subs.iter().collect();
    let origin = c.warm_up("ledger", &[publisher], &refs).remove(0);
    let first = c[publisher].publish("ledger", "entry first").seq;
    let mut k = first;
    for i in 1..50 {
        k = c[publisher].publish("ledger", &format!("entry {i}")).seq;
    }
    // Killed right after publish k returned: k is durable, perhaps not sent yet.
    c[publisher].kill();
    c[publisher].restart();
    let mut last = k;
    for i in 0..20 {
        let p = c[publisher].publish("ledger", &format!("after {i}"));
        assert_eq!(p.origin, origin, "the restarted publisher continues its stream");
        assert_eq!(p.seq, last + 1, "seqs continue after {last}");
        last = p.seq;
    }
    for (i, s) in subs.iter().enumerate() {
        wait_for(&format!("n{i} to get seqs {first}..={last}"), Duration::from_secs(30), || {
            let acc = s.account(&origin, first, last);
            if acc.delivered == last - first + 1 { Ok(()) } else { Err(format!("{acc:?}")) }
        });
        let acc = s.account(&origin, first, last);
        assert!(acc.is_sound() && acc.gaps.is_empty(), "n{i}: {acc:?}");
    }
    eprintln!("publisher killed after seq {k}: every subscriber has {first}..={last} in order, same origin");
}

#[test]
fn a_whole_cluster_killed_and_restarted_reforms_by_itself_and_publishers_continue() {
    // n0 is the seed; n1..n4 were started with `--join n0`.
    let mut c = Cluster::start("restart-all", 5);
    wait_for("every store to keep the other four members", Duration::from_secs(30), || {
        let kept: Vec<f64> = c.agents().iter().map(|a| metric(a, "hearsay_store_members")).collect();
        if kept.iter().all(|k| *k == 4.0) { Ok(()) } else { Err(format!("{kept:?}")) }
    });
    let publisher = 2;
    let before = c[publisher].publish("after", "before the restart");
    for i in c.all() {
        c[i].kill();
    }
    // n1..n4 come back first: their seed is down, so they can only find each other through
    // the members their stores kept.
    let started = Instant::now();
    for i in 1..5 {
        c[i].restart();
    }
    c.wait_alive(&[1, 2, 3, 4], &[1, 2, 3, 4]);
    let without_seed = started.elapsed();
    c[0].restart();
    c.wait_converged();
    let reformed = started.elapsed();
    eprintln!(
        "whole-cluster restart: n1..n4 re-formed without their seed in {without_seed:.1?}, all five in \
         {reformed:.1?}"
    );
    let dials: f64 = c.agents().iter().map(|a| metric(a, "hearsay_reconnect_dials_total")).sum();
    assert!(dials > 0.0, "no reconnect dial counted");
    // The publisher continues its stream, and it reaches every new subscription.
    let subs: Vec<Subscription> = c.agents().iter().map(|a| a.subscribe("after")).collect();
    c.wait_tree("after", &c.all());
    let refs: Vec<&Subscription> = subs.iter().collect();
    let origin = c.warm_up("after", &[publisher], &refs).remove(0);
    assert_eq!(origin, before.origin, "the publisher's stream is the one it had before");
    let first = c[publisher].publish("after", "reformed").seq;
    assert!(first > before.seq + 1, "{first} after {}", before.seq);
    let last = c[publisher].publish("after", "reformed again").seq;
    for (i, s) in subs.iter().enumerate() {
        wait_for(&format!("n{i} to get seqs {first}..={last}"), Duration::from_secs(20), || {
            let acc = s.account(&origin, first, last);
            if acc.delivered == 2 { Ok(()) } else { Err(format!("{acc:?}")) }
        });
    }
}

#[test]
fn sigterm_flushes_closes_every_subscription_and_leaves() {
    let mut c = Cluster::start("restart-term", 4);
    let leaving = 3;
    let subs: Vec<Subscription> = c.agents().iter().map(|a| a.subscribe("news")).collect();
    c.wait_tree("news", &c.all());
    let refs: Vec<&Subscription> = subs.iter().collect();
    let origin = c.warm_up("news", &[leaving], &refs).remove(0);
    // The leaving agent publishes a burst and is told to stop right after the last publish
    // returned: what it has not sent yet is flushed, not dropped.
    const BURST: u64 = 200;
    let first = c[leaving].publish("news", "last-words 0").seq;
    let mut last = first;
    for i in 1..BURST {
        last = c[leaving].publish("news", &format!("last-words {i}")).seq;
    }
    let asked = Instant::now();
    let status = c[leaving].terminate().expect("the agent exits after SIGTERM");
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status:?}");
    eprintln!("SIGTERM right after {BURST} publishes: the agent exited after {took:.2?}");
    assert!(took < Duration::from_secs(5), "took {took:?}; its log:\n{}", c[leaving].log_text());
    // Its client got the closing line, once.
    let closed = subs[leaving].lines().iter().filter(|l| l.get("closed").is_some()).count();
    assert_eq!(closed, 1, "closing lines: {:?}", subs[leaving].lines());
    let reason = subs[leaving].closed().unwrap_or_default();
    assert_eq!(reason, "the agent stopped");
    // The others record a leave, never a death.
    wait_for("the others to record n3 as left", Duration::from_secs(10), || {
        for a in &c.agents()[..leaving] {
            let s = a.state_of("n3")?;
            if s != "left" {
                return Err(format!("{} lists n3 {s}", a.name));
            }
        }
        Ok(())
    });
    // Every other subscriber gets the whole burst, in order, with no gap.
    for (k, s) in subs[..leaving].iter().enumerate() {
        wait_for(&format!("n{k} to get all {BURST} messages"), Duration::from_secs(20), || {
            let acc = s.account(&origin, first, last);
            if acc.delivered == BURST { Ok(()) } else { Err(format!("{acc:?}")) }
        });
        let acc = s.account(&origin, first, last);
        assert!(acc.is_sound() && acc.gaps.is_empty(), "n{k}: {acc:?}");
    }
}

#[test]
fn an_unusable_store_stops_the_agent_with_a_clear_error_not_a_panic() {
    let mut c = Cluster::new("restart-store");
    // A store file that is not a store.
    let garbage = c.dir().join("data-garbage");
    std::fs::create_dir_all(&garbage).expect("mkdir");
    std::fs::write(garbage.join("store.redb"), vec![0x5a; 64 * 1024]).expect("write");
    // A data dir that is a plain file (no permission bits involved: this holds as root too).
    std::fs::write(c.dir().join("data-file"), b"not a directory").expect("write");
    for name in ["garbage", "file"] {
        let i = c.launch(AgentSpec::new(name));
        let status = c[i].wait_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("{name} did not stop"));
        assert!(!status.success(), "{name}: {status:?}");
        let log = c[i].log_text();
        assert!(!log.contains("panicked"), "{name} panicked:\n{log}");
        let named = if name == "garbage" { "store.redb" } else { "data-file" };
        assert!(log.contains(named), "{name}: the error names {named}:\n{log}");
    }
}
