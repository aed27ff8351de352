//! Durable subscriptions, seen from outside (issue 11 §3): real `hearsay agent` processes on
//! 127.0.0.1, real `hearsay subscribe --durable` clients, SIGKILLs of either, retention.
//!
//! The helpers here (a CLI subscriber process, a raw HTTP subscriber that can hang up, the
//! durable subscriptions of an agent) only use the harness's `Agent`, `wait_for`, `TempDir`
//! and `keygen`, so they move to a new harness as they are.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearsay_tests::{Agent, TempDir, binary, keygen, wait_for};
use serde_json::{Value, json};

type Lines = Arc<Mutex<Vec<Value>>>;

/// (origin, seq, payload) of the message lines, gap lines apart.
fn messages(lines: &Lines) -> Vec<(String, u64, String)> {
    let lines = lines.lock().expect("lines").clone();
    lines
        .into_iter()
        .filter(|v| v.get("seq").is_some())
        .map(|v| {
            let o = v["origin"].as_str().unwrap_or("").to_string();
            (o, v["seq"].as_u64().unwrap_or(0), v["payload"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// The gap notices received.
fn gaps(lines: &Lines) -> Vec<Value> {
    lines.lock().expect("lines").iter().filter_map(|v| v.get("gap").cloned()).collect()
}

/// Seqs of `origin`, in arrival order.
fn seqs_of(msgs: &[(String, u64, String)], origin: &str) -> Vec<u64> {
    msgs.iter().filter(|(o, _, _)| o == origin).map(|(_, s, _)| *s).collect()
}

/// Assert `got` is exactly `want`, saying what differs (missing, repeated, out of order).
fn assert_seqs(got: &[u64], want: std::ops::RangeInclusive<u64>, what: &str) {
    let expected: Vec<u64> = want.clone().collect();
    if got == expected.as_slice() {
        return;
    }
    let missing: Vec<u64> = want.filter(|s| !got.contains(s)).collect();
    let mut seen = std::collections::BTreeSet::new();
    let repeated: Vec<u64> = got.iter().copied().filter(|s| !seen.insert(*s)).collect();
    let disorder = got.windows(2).position(|w| w[0] >= w[1]);
    panic!(
        "{what}: got {} seqs ({:?}..{:?}); missing {missing:?}; repeated {repeated:?}; first out of order at index {disorder:?}: {:?}",
        got.len(),
        got.first(),
        got.last(),
        disorder.map(|i| &got[i.saturating_sub(3)..(i + 4).min(got.len())])
    );
}

/// A `hearsay subscribe ... --json` process; its stdout lines collected by a thread.
struct Cli {
    child: Option<Child>,
    lines: Lines,
}

impl Cli {
    fn start(dir: &Path, agent: &Agent, topic: &str, args: &[&str]) -> Cli {
        let err =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.join("cli.log")).expect("cli log");
        let mut child = Command::new(binary())
            .arg("--api")
            .arg(agent.api.to_string())
            .arg("subscribe")
            .arg(topic)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start hearsay subscribe");
        let lines: Lines = Arc::default();
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("lines").push(v);
                }
            }
        });
        Cli { child: Some(child), lines }
    }

    /// Wait (bounded) for the process to exit by itself; its status.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL: no goodbye, acknowledgements not yet posted are lost.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A subscription over a raw HTTP connection, to hang up at will.
struct Raw {
    stream: TcpStream,
    lines: Lines,
}

impl Raw {
    /// `GET /v1/subscribe?{query}`: the status and, for a 200, the stream.
    fn open(agent: &Agent, query: &str) -> (u16, Option<Raw>) {
        let mut stream = TcpStream::connect(agent.api).expect("connect to the API");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(stream, "GET /v1/subscribe?{query} HTTP/1.1\r\nHost: {}\r\n\r\n", agent.api).expect("request");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        let code: u16 = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code != 200 {
            return (code, None);
        }
        stream.set_read_timeout(None).expect("timeout");
        let lines: Lines = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            // Chunked encoding: every item is one chunk holding one JSON line; the chunk-size
            // lines are not JSON.
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("lines").push(v);
                }
            }
        });
        (code, Some(Raw { stream, lines }))
    }

    fn hang_up(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Status and JSON body of a request (`body`: POST it; `delete`: DELETE; else GET).
fn call(a: &Agent, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(a.api).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        a.api,
        body.len()
    )
    .expect("request");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = text.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b.trim()).ok());
    (code, json.unwrap_or(Value::Null))
}

/// Agent `a`'s durable subscription `name`: (connected, cursor per origin).
fn durable(a: &Agent, name: &str) -> Option<(bool, BTreeMap<String, u64>)> {
    let list = a.get("/v1/durable").ok()?;
    let d = list.as_array()?.iter().find(|d| d["name"] == name)?.clone();
    let cursors = d["cursors"]
        .as_array()?
        .iter()
        .map(|c| (c["origin"].as_str().unwrap_or("").to_string(), c["seq"].as_u64().unwrap_or(0)))
        .collect();
    Some((d["connected"].as_bool().unwrap_or(false), cursors))
}

/// Publish on `p` until `lines` shows one of its messages (the subscription is established
/// end to end); its origin.
fn warm_up(p: &Agent, topic: &str, lines: &Lines) -> String {
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut origin = String::new();
    wait_for("a first message to reach the subscriber", Duration::from_secs(30), || {
        if last.elapsed() >= Duration::from_millis(300) {
            origin = p.publish(topic, "warm-up").0;
            last = Instant::now();
        }
        messages(lines).iter().any(|(o, _, _)| *o == origin).then_some(())
    });
    origin
}

/// Publish `n` messages on `p`, named `{tag}{i}`; the last seq.
fn publish(p: &Agent, topic: &str, tag: &str, n: usize) -> u64 {
    let mut last = 0;
    for i in 0..n {
        last = p.publish(topic, &format!("{tag}{i}")).1;
    }
    last
}

/// Wait until `lines` has `origin`'s message `seq`.
fn wait_seq(what: &str, within: Duration, lines: &Lines, origin: &str, seq: u64) {
    wait_for(what, within, || messages(lines).iter().any(|(o, s, _)| o == origin && *s >= seq).then_some(()));
}

/// Start `n` agents (n0 the seed) with `extra` flags; wait until all see all alive.
fn cluster_with(dir: &Path, secret: &Path, n: usize, extra: &[&str]) -> Vec<Agent> {
    let seed = Agent::start(dir, "n0", secret, &[], extra);
    seed.wait_ready();
    let mut agents = vec![seed];
    for i in 1..n {
        agents.push(Agent::start(dir, &format!("n{i}"), secret, &[agents[0].addr], extra));
    }
    for a in &agents {
        a.wait_ready();
    }
    wait_for("every agent to see the whole cluster alive", Duration::from_secs(30), || {
        agents
            .iter()
            .all(|a| {
                let m = a.members();
                m.len() == n && m.values().all(|s| s == "alive")
            })
            .then_some(())
    });
    agents
}

#[test]
fn a_killed_durable_client_comes_back_to_everything_after_its_last_acknowledgement() {
    let _serial = hearsay_tests::serial();
    let started = Instant::now();
    let dir = TempDir::new("durable-client");
    let secret = keygen(dir.path(), "cluster.key");
    let agents = cluster_with(dir.path(), &secret, 2, &[]);
    let (p, s) = (&agents[0], &agents[1]);
    let mut first = Cli::start(dir.path(), s, "orders", &["--durable", "d1"]);
    let origin = warm_up(p, "orders", &first.lines);
    // One client per durable name: a second one is refused at once, and says why.
    let mut second = Cli::start(dir.path(), s, "orders", &["--durable", "d1"]);
    let status = second.wait_exit(Duration::from_secs(10)).expect("a second client ends by itself");
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("cli.log")).unwrap_or_default();
    assert!(log.contains("already has a client") && log.contains("HTTP 409"), "{log}");
    let last = publish(p, "orders", "a", 50);
    wait_seq("the first client to get 50 messages", Duration::from_secs(30), &first.lines, &origin, last);
    // Its acknowledgements reach the agent within 100 ms of each line.
    wait_for("the acknowledgements of what it printed", Duration::from_secs(10), || {
        durable(s, "d1").and_then(|(_, c)| c.get(&origin).copied()).filter(|c| *c >= last)
    });
    first.kill();
    wait_for("the agent to notice the client is gone", Duration::from_secs(10), || {
        durable(s, "d1").filter(|(connected, _)| !connected)
    });
    let last = publish(p, "orders", "b", 200);
    let (_, cursors) = durable(s, "d1").expect("d1 exists");
    let acked = cursors.get(&origin).copied().unwrap_or(0);
    let back = Instant::now();
    let second = Cli::start(dir.path(), s, "orders", &["--durable", "d1"]);
    wait_seq(
        "the client to get the 200 published while it was away",
        Duration::from_secs(30),
        &second.lines,
        &origin,
        last,
    );
    let caught_up = back.elapsed();
    let got = seqs_of(&messages(&second.lines), &origin);
    assert_eq!(
        got,
        (acked + 1..=last).collect::<Vec<u64>>(),
        "after the last acknowledged one, in order, each once"
    );
    assert!(gaps(&second.lines).is_empty(), "{:?}", gaps(&second.lines));
    // Nothing between the two clients is missing.
    let before = seqs_of(&messages(&first.lines), &origin);
    let first_seen = before[0];
    let mut all: Vec<u64> = before.into_iter().chain(got).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (first_seen..=last).collect::<Vec<u64>>());
    eprintln!(
        "durable client SIGKILLed, 200 published meanwhile: the second client had all {} after seq {acked} \
         {caught_up:?} after it started (test {:?})",
        last - acked,
        started.elapsed()
    );
}

#[test]
fn a_durable_subscriber_whose_agent_was_killed_gets_the_1000_messages_published_while_it_was_down() {
    let _serial = hearsay_tests::serial();
    let started = Instant::now();
    let dir = TempDir::new("durable-agent");
    let secret = keygen(dir.path(), "cluster.key");
    let mut agents = cluster_with(dir.path(), &secret, 3, &[]);
    // n0 is on the topic too (a plain subscription), as topics have members: what n1
    // publishes while n2 is down is held by a member for n2 to fetch when it comes back. (A
    // publisher that is not subscribed to its topic serves its old messages only while they
    // are in its pbcast gossip buffer, about 4 s: its digests advertise no more, and its
    // anti-entropy does not reconcile topics it only publishes. Without n0, this test loses
    // the oldest messages to a gap notice when the outage outlasts that.)
    let member = Cli::start(dir.path(), &agents[0], "orders", &[]);
    let mut cli = Cli::start(dir.path(), &agents[2], "orders", &["--durable", "d2"]);
    let origin = warm_up(&agents[1], "orders", &cli.lines);
    warm_up(&agents[1], "orders", &member.lines);
    let before = publish(&agents[1], "orders", "a", 10);
    wait_seq("the subscriber to get 10 messages", Duration::from_secs(30), &cli.lines, &origin, before);
    wait_for("their acknowledgements", Duration::from_secs(10), || {
        durable(&agents[2], "d2").and_then(|(_, c)| c.get(&origin).copied()).filter(|c| *c >= before)
    });
    agents[2].kill();
    cli.kill();
    let published = Instant::now();
    let last = publish(&agents[1], "orders", "b", 1000);
    eprintln!("1000 messages published in {:?} while the subscriber's agent was down", published.elapsed());
    agents[2].restart();
    agents[2].wait_ready();
    let restarted = Instant::now();
    let (_, cursors) = durable(&agents[2], "d2").expect("d2 survived the restart");
    let acked = cursors.get(&origin).copied().unwrap_or(0);
    assert!(acked >= before, "the cursor was kept: {acked} < {before}");
    let back = Cli::start(dir.path(), &agents[2], "orders", &["--durable", "d2"]);
    wait_seq("the 1000 messages after the restart", Duration::from_secs(90), &back.lines, &origin, last);
    let all_in = restarted.elapsed();
    let newer = publish(&agents[1], "orders", "c", 10);
    wait_seq("new messages after the catch-up", Duration::from_secs(30), &back.lines, &origin, newer);
    let got = seqs_of(&messages(&back.lines), &origin);
    let context = format!(
        "all of them, in order, each once, then new ones (gaps {:?}; the agent's log:\n{})",
        gaps(&back.lines),
        agents[2].log_text().lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert_seqs(&got, acked + 1..=newer, &context);
    assert!(gaps(&back.lines).is_empty(), "{:?}", gaps(&back.lines));
    eprintln!(
        "subscriber agent SIGKILLed, 1000 published meanwhile, restarted: all 1000 at the durable client {all_in:?} \
         after the restart (test {:?})",
        started.elapsed()
    );
}

#[test]
fn a_client_that_stops_acknowledging_and_comes_back_loses_nothing() {
    let _serial = hearsay_tests::serial();
    let started = Instant::now();
    let dir = TempDir::new("durable-acks");
    let secret = keygen(dir.path(), "cluster.key");
    let agents = cluster_with(dir.path(), &secret, 2, &[]);
    let (p, s) = (&agents[0], &agents[1]);
    let (status, raw) = Raw::open(s, "topic=orders&durable=d3");
    assert_eq!(status, 200);
    let raw = raw.expect("stream");
    let origin = warm_up(p, "orders", &raw.lines);
    let mid = publish(p, "orders", "a", 20);
    wait_seq("the first 20", Duration::from_secs(30), &raw.lines, &origin, mid);
    // One client at a time; acknowledgements are checked.
    assert_eq!(Raw::open(s, "topic=orders&durable=d3").0, 409);
    assert_eq!(call(s, "POST", "/v1/ack", Some(&json!({"durable": "nope", "acks": []}))).0, 404);
    assert_eq!(
        call(s, "POST", "/v1/ack", Some(&json!({"durable": "d3", "acks": [{"origin": "zz", "seq": 1}]}))).0,
        400
    );
    assert_eq!(call(s, "POST", "/v1/ack", Some(&json!({"durable": "d3"}))).0, 400);
    // Acknowledge up to the 10th of them, then stop acknowledging while 30 more come.
    let acked = mid - 10;
    let (status, v) = call(
        s,
        "POST",
        "/v1/ack",
        Some(&json!({"durable": "d3", "acks": [{"origin": origin, "seq": acked}]})),
    );
    assert_eq!(status, 200, "{v}");
    let last = publish(p, "orders", "b", 30);
    wait_seq("30 more, unacknowledged", Duration::from_secs(30), &raw.lines, &origin, last);
    let first_copy: BTreeMap<u64, String> =
        messages(&raw.lines).into_iter().filter(|(o, _, _)| *o == origin).map(|(_, s, p)| (s, p)).collect();
    raw.hang_up();
    wait_for("the agent to notice the client is gone", Duration::from_secs(10), || {
        durable(s, "d3").filter(|(connected, _)| !connected)
    });
    let last = publish(p, "orders", "c", 20);
    let (status, again) = Raw::open(s, "topic=orders&durable=d3&from=all");
    assert_eq!(status, 200);
    let again = again.expect("stream");
    wait_seq(
        "everything after the last acknowledgement",
        Duration::from_secs(30),
        &again.lines,
        &origin,
        last,
    );
    let got = messages(&again.lines);
    assert_eq!(
        seqs_of(&got, &origin),
        (acked + 1..=last).collect::<Vec<u64>>(),
        "`from` is ignored for an existing one"
    );
    for (o, seq, payload) in &got {
        if let Some(before) = first_copy.get(seq).filter(|_| o == &origin) {
            assert_eq!(payload, before, "a redelivery carries the same (origin, seq) and payload");
        }
    }
    assert!(gaps(&again.lines).is_empty());
    again.hang_up();
    wait_for("the second client to be gone", Duration::from_secs(10), || {
        durable(s, "d3").filter(|(connected, _)| !connected)
    });
    assert_eq!(call(s, "DELETE", "/v1/durable/d3", None).0, 200);
    assert_eq!(call(s, "DELETE", "/v1/durable/d3", None).0, 404);
    assert!(durable(s, "d3").is_none());
    eprintln!("client stopped acknowledging, came back: nothing lost (test {:?})", started.elapsed());
}

#[test]
fn past_retention_a_durable_subscriber_gets_exactly_one_gap_then_the_rest() {
    let _serial = hearsay_tests::serial();
    let started = Instant::now();
    let dir = TempDir::new("durable-retention");
    let secret = keygen(dir.path(), "cluster.key");
    let mut agents = cluster_with(dir.path(), &secret, 3, &["--retain-messages", "50"]);
    let mut cli = Cli::start(dir.path(), &agents[2], "orders", &["--durable", "d4"]);
    let origin = warm_up(&agents[1], "orders", &cli.lines);
    let before = publish(&agents[1], "orders", "a", 10);
    wait_seq("10 messages", Duration::from_secs(30), &cli.lines, &origin, before);
    wait_for("their acknowledgements", Duration::from_secs(10), || {
        durable(&agents[2], "d4").and_then(|(_, c)| c.get(&origin).copied()).filter(|c| *c >= before)
    });
    agents[2].kill();
    cli.kill();
    let last = publish(&agents[1], "orders", "b", 200);
    // The publisher restarts too: afterwards no member holds more of its stream than its
    // store kept (the last 50).
    agents[1].restart();
    agents[1].wait_ready();
    agents[2].restart();
    agents[2].wait_ready();
    let restarted = Instant::now();
    let back = Cli::start(dir.path(), &agents[2], "orders", &["--durable", "d4"]);
    wait_seq("the retained messages", Duration::from_secs(90), &back.lines, &origin, last);
    let all_in = restarted.elapsed();
    let newer = publish(&agents[1], "orders", "c", 5);
    wait_seq("new messages", Duration::from_secs(30), &back.lines, &origin, newer);
    let lines = back.lines.lock().expect("lines").clone();
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|v| v["origin"] == origin.as_str() || v["gap"]["origin"] == origin.as_str())
        .collect();
    let first_kept = last - 49;
    assert!(!mine.is_empty() && mine[0].get("gap").is_some(), "a gap notice first: {:?}", mine.first());
    let gap = &mine[0]["gap"];
    assert_eq!(gap["from_seq"].as_u64(), Some(before + 1), "{gap}");
    assert_eq!(gap["to_seq"].as_u64(), Some(first_kept - 1), "{gap}");
    assert_eq!(gaps(&back.lines).len(), 1, "exactly one gap notice: {:?}", gaps(&back.lines));
    let got = seqs_of(&messages(&back.lines), &origin);
    assert_eq!(got, (first_kept..=newer).collect::<Vec<u64>>(), "then the rest, in order");
    eprintln!(
        "retention 50 < outage of 200: one gap {}..={}, then {first_kept}..={newer}; retained ones in {all_in:?} \
         (test {:?})",
        before + 1,
        first_kept - 1,
        started.elapsed()
    );
}

#[test]
fn from_all_gets_the_topic_history_and_from_a_time_what_was_published_after_it() {
    let _serial = hearsay_tests::serial();
    let started = Instant::now();
    let dir = TempDir::new("durable-from");
    let secret = keygen(dir.path(), "cluster.key");
    let agents = cluster_with(dir.path(), &secret, 3, &[]);
    // A member on the topic, as topics usually have; n2 is not on it yet.
    let watcher = Cli::start(dir.path(), &agents[0], "news", &[]);
    let origin = warm_up(&agents[1], "news", &watcher.lines);
    let early = publish(&agents[1], "news", "a", 20);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    let cut = hearsay::agent::rfc3339(now.as_micros() as u64);
    let last = publish(&agents[1], "news", "b", 20);
    wait_seq("the member to hold them", Duration::from_secs(30), &watcher.lines, &origin, last);
    let all = Cli::start(dir.path(), &agents[2], "news", &["--from", "all"]);
    // The member's store has each message with its publish time. (A message fetched by
    // anti-entropy catch-up, as n2 gets its history, carries the time it arrived instead:
    // anti-entropy entries have no publish time.)
    let since = Cli::start(dir.path(), &agents[0], "news", &["--from", &cut]);
    wait_seq("the history from the members", Duration::from_secs(60), &all.lines, &origin, last);
    wait_seq("what was published after the cut", Duration::from_secs(60), &since.lines, &origin, last);
    let newer = publish(&agents[1], "news", "c", 5);
    wait_seq("new ones", Duration::from_secs(30), &all.lines, &origin, newer);
    wait_seq("new ones", Duration::from_secs(30), &since.lines, &origin, newer);
    assert_eq!(seqs_of(&messages(&all.lines), &origin), (1..=newer).collect::<Vec<u64>>());
    assert!(gaps(&all.lines).is_empty(), "{:?}", gaps(&all.lines));
    assert_eq!(
        seqs_of(&messages(&since.lines), &origin),
        (early + 1..=newer).collect::<Vec<u64>>(),
        "from {cut}"
    );
    eprintln!(
        "--from all on an agent new to the topic, --from TIME on a member (test {:?})",
        started.elapsed()
    );
}

#[test]
fn sigterm_ends_a_durable_client_with_its_closing_line_and_keeps_its_acknowledgements() {
    let _serial = hearsay_tests::serial();
    let started = Instant::now();
    let dir = TempDir::new("durable-sigterm");
    let secret = keygen(dir.path(), "cluster.key");
    let mut agents = cluster_with(dir.path(), &secret, 2, &[]);
    let mut cli = Cli::start(dir.path(), &agents[1], "orders", &["--durable", "d5"]);
    let origin = warm_up(&agents[0], "orders", &cli.lines);
    let last = publish(&agents[0], "orders", "a", 20);
    wait_seq("20 messages", Duration::from_secs(30), &cli.lines, &origin, last);
    let status = agents[1].terminate().expect("the agent leaves and exits within 10 s");
    assert!(status.success(), "{status:?}");
    let status = cli.wait_exit(Duration::from_secs(10)).expect("the client ends with the subscription");
    assert!(status.success(), "{status:?}");
    let closed =
        cli.lines.lock().expect("lines").iter().filter_map(|v| v.get("closed").cloned()).collect::<Vec<_>>();
    assert_eq!(closed.len(), 1, "one closing line: {closed:?}");
    assert_eq!(closed[0]["reason"], "the agent stopped");
    agents[1].restart();
    agents[1].wait_ready();
    let (_, cursors) = durable(&agents[1], "d5").expect("d5 survived the restart");
    assert_eq!(
        cursors.get(&origin).copied(),
        Some(last),
        "every printed line was acknowledged before the client exited"
    );
    eprintln!("SIGTERM: closing line, acknowledgements kept (test {:?})", started.elapsed());
}
