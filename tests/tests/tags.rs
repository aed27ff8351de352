//! Issue 15, items 1 to 3, on real agents: member tags (shown, filtered, changed at run time,
//! bounded), tag-scoped aggregation (exact over the members in scope), and the event stream
//! (`hearsay monitor`, `GET /v1/events`, `--event-handler`).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use hearsay_tests::{AgentSpec, CONVERGE_WITHIN, Cluster, binary, wait_for};
use serde_json::{Value, json};

/// A cluster of agents named n0.. with these `hearsay agent` flags each; n0 starts it, the
/// others join through it; returns once all are converged.
fn cluster_with(label: &str, flags: &[&[&str]]) -> Cluster {
    let mut c = Cluster::new(label);
    c.add(AgentSpec::new("n0").args(flags[0]));
    let seed = c[0].addr();
    for (i, f) in flags.iter().enumerate().skip(1) {
        c.launch(AgentSpec::new(&format!("n{i}")).args(f).join(&[seed]));
    }
    for i in 1..flags.len() {
        c[i].wait_ready();
    }
    c.wait_converged();
    c
}

/// `members --json` (with `args`) from agent `i`: the names listed, sorted.
fn names(c: &Cluster, i: usize, args: &[&str]) -> Vec<String> {
    let mut all = vec!["members", "--json"];
    all.extend_from_slice(args);
    let out = c[i].cli(&all);
    assert!(out.status.success(), "members {args:?}: {}", out.stderr);
    let list: Vec<Value> = serde_json::from_str(&out.stdout).expect("a JSON list");
    let mut v: Vec<String> = list.iter().filter_map(|m| m["name"].as_str().map(String::from)).collect();
    v.sort();
    v
}

/// The tags agent `i` lists for the member named `name`.
fn tags_seen(c: &Cluster, i: usize, name: &str) -> Result<BTreeMap<String, String>, String> {
    let list = c[i].get("/v1/members")?;
    let m = list
        .as_array()
        .and_then(|l| l.iter().find(|m| m["name"] == name))
        .ok_or(format!("{} does not list {name}", c[i].name))?;
    serde_json::from_value(m["tags"].clone()).map_err(|e| format!("tags of {m}: {e}"))
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn tags_are_shown_filtered_and_changed_at_run_time_within_their_bounds() {
    let c = cluster_with(
        "tags",
        &[
            &["--tag", "role=web", "--tag", "dc=eu1"],
            &["--tag", "role=db"],
            &["--tag", "role=web", "--tag", "dc=us1"],
        ],
    );
    wait_for("n1 to see every member's tags", CONVERGE_WITHIN, || {
        for (name, want) in [
            ("n0", map(&[("role", "web"), ("dc", "eu1")])),
            ("n1", map(&[("role", "db")])),
            ("n2", map(&[("role", "web"), ("dc", "us1")])),
        ] {
            let seen = tags_seen(&c, 1, name)?;
            if seen != want {
                return Err(format!("{name}: {seen:?}"));
            }
        }
        Ok(())
    });
    // Filters: exact, regex (anchored), several terms, none matching.
    assert_eq!(names(&c, 1, &["--tag", "role=web"]), ["n0", "n2"]);
    assert_eq!(names(&c, 1, &["--tag", "dc=eu.*"]), ["n0"]);
    assert_eq!(names(&c, 1, &["--tag", "role=web|db", "--tag", "dc=.*1"]), ["n0", "n2"]);
    assert_eq!(names(&c, 1, &["--tag", "role=we"]), Vec::<String>::new(), "the pattern is anchored");
    let table = c[1].cli(&["members"]);
    assert!(table.status.success() && table.stdout.contains("dc=eu1,role=web"), "{}", table.stdout);
    let bad = c[1].cli(&["members", "--tag", "role=("]);
    assert!(!bad.status.success() && bad.stderr.contains("role"), "{}", bad.stderr);

    // Changed at run time, by the CLI: re-signed with a higher incarnation, gossiped.
    let before =
        c[0].members().expect("members").into_iter().find(|m| m.name == "n2").expect("n2").incarnation;
    let out = c[2].cli(&["tags", "set", "role=cache", "zone=b", "--json"]);
    assert!(out.status.success(), "{}", out.stderr);
    let now: BTreeMap<String, String> = serde_json::from_str(&out.stdout).expect("the tags after");
    assert_eq!(now, map(&[("role", "cache"), ("dc", "us1"), ("zone", "b")]));
    let out = c[2].cli(&["tags", "delete", "zone"]);
    assert!(out.status.success() && !out.stdout.contains("zone"), "{} {}", out.stdout, out.stderr);
    wait_for("n0 to see n2's new tags", CONVERGE_WITHIN, || {
        let seen = tags_seen(&c, 0, "n2")?;
        if seen == map(&[("role", "cache"), ("dc", "us1")]) { Ok(()) } else { Err(format!("{seen:?}")) }
    });
    let after =
        c[0].members().expect("members").into_iter().find(|m| m.name == "n2").expect("n2").incarnation;
    assert!(after > before, "incarnation {before} -> {after}");
    assert_eq!(names(&c, 0, &["--tag", "role=web"]), ["n0"]);

    // Bounded: a refused update is a 400 that says the limit, and changes nothing.
    let r =
        c[2].call("POST", "/v1/tags", Some(&json!({"set": {"big": "x".repeat(300)}}))).expect("an answer");
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.error().contains("256"), "{}", r.error());
    let many: BTreeMap<String, String> = (0..17).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let r = c[2].call("POST", "/v1/tags", Some(&json!({ "set": many }))).expect("an answer");
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.error().contains("16"), "{}", r.error());
    let r = c[2].call("POST", "/v1/tags", Some(&json!({"set": {"bad key": "v"}}))).expect("an answer");
    assert_eq!(r.status, 400, "{:?}", r.body);
    let out = c[2].cli(&["tags", "set", &format!("big={}", "x".repeat(300))]);
    assert!(!out.status.success() && out.stderr.contains("at most 256"), "{}", out.stderr);
    assert_eq!(c[2].get("/v1/tags").expect("tags"), json!({"dc": "us1", "role": "cache"}));
}

#[test]
fn a_tag_scoped_average_is_exact_over_the_matching_members_of_five() {
    let web = ["--tag", "role=web"];
    let db = ["--tag", "role=db"];
    let c = cluster_with("scoped", &[&db, &web, &web, &db, &web]);
    // In scope: n1, n2, n4 (10, 20, 60); out of scope, with far larger values: n0, n3.
    for (i, load) in [(0, 1000.0), (1, 10.0), (2, 20.0), (3, 5000.0), (4, 60.0)] {
        c[i].post("/v1/values", &json!({"name": "load", "value": load})).expect("set value");
    }
    for (func, tags, expected) in [
        ("avg", vec!["role=web"], 30.0),
        ("sum", vec!["role=web"], 90.0),
        ("count", vec!["role=web"], 3.0),
        ("avg", vec!["role=db"], 3000.0),
        ("avg", vec![], 1218.0),
    ] {
        // From n0, itself out of the role=web scope.
        let body = json!({"fn": func, "name": "load", "tags": tags});
        let r = c[0].post("/v1/query", &body).expect("an answer");
        let value = r["value"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (value - expected).abs() <= 1e-3 * expected,
            "{func}(load) {tags:?} = {value}, expected {expected}: {r}"
        );
        assert_eq!(r["converged"], true, "{r}");
        assert_eq!(r["nodes"], 5, "{r}");
    }
    // The CLI: `--tag`, and the convergence report in its line.
    let out = c[3].cli(&["query", "avg", "load", "--tag", "role=w.b"]);
    assert!(out.status.success(), "{}", out.stderr);
    let value: f64 = out
        .stdout
        .strip_prefix("avg load = ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!((value - 30.0).abs() <= 0.03 && out.stdout.contains("(converged"), "{}", out.stdout);
    // A scope beyond its bounds is refused before anything starts.
    let r = c[0]
        .call(
            "POST",
            "/v1/query",
            Some(&json!({"fn": "avg", "name": "load", "tags": ["a=1", "b=1", "c=1", "d=1", "e=1"]})),
        )
        .expect("an answer");
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.error().contains("at most 4"), "{}", r.error());
}

/// `hearsay monitor --json` on an agent, read in the background; killed on drop.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Monitor {
    fn start(api: std::net::SocketAddr) -> Monitor {
        let mut child = Command::new(binary())
            .args(["--api", &api.to_string(), "monitor", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hearsay monitor");
        let out = child.stdout.take().expect("stdout");
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                }
            }
        });
        Monitor { child, lines }
    }

    fn events(&self) -> Vec<Value> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `events()` holds `event` about the member with id `id`.
fn wait_event(what: &str, id: &str, event: &str, mut events: impl FnMut() -> Vec<Value>) -> Value {
    wait_for(&format!("{what}: {event} of {id}"), CONVERGE_WITHIN, || {
        let all = events();
        all.iter().find(|e| e["event"] == event && e["member"]["id"] == id).cloned().ok_or(format!(
            "{} events: {:?}",
            all.len(),
            all.iter().map(|e| e["event"].clone()).collect::<Vec<_>>()
        ))
    })
}

#[test]
fn a_join_and_a_failure_are_seen_on_monitor_and_by_the_event_handler() {
    let mut c = Cluster::new("events");
    let file = c.dir().join("handled.ndjson");
    let handler = format!("cat >> '{}'", file.display());
    let n0 = c.add(AgentSpec::new("n0").args(&["--event-handler", &handler, "--tag", "role=seed"]));
    let monitor = Monitor::start(c[n0].api());
    // The stream is open once it shows something: this agent's own tag change (made again
    // while none shows, since one made before the monitor connected is not on its stream).
    let own = c[n0].id();
    let mut round = 0;
    wait_event("monitor open", &own, "member-update", || {
        round += 1;
        c[n0].post("/v1/tags", &json!({"set": {"ready": round.to_string()}})).expect("set a tag");
        monitor.events()
    });

    // A join, seen on the monitor and by the handler (which also got the update above).
    let handled = || -> Vec<Value> {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let seed = c[n0].addr();
    let n1 =
        c.add(AgentSpec::new("n1").join(&[seed]).args(&["--tag", "role=web", "--event-handler", "exit 3"]));
    let joiner = c[n1].id();
    let joined = wait_event("monitor", &joiner, "member-join", || monitor.events());
    assert_eq!(joined["member"]["name"], "n1", "{joined}");
    assert_eq!(joined["member"]["tags"]["role"], "web", "{joined}");
    wait_event("event handler", &joiner, "member-join", handled);
    // The same over HTTP, for a reader that starts now: the next event it sees is a tag update.
    let out = c[n1].cli(&["tags", "set", "role=api"]);
    assert!(out.status.success(), "{}", out.stderr);
    let updated = wait_event("monitor", &joiner, "member-update", || monitor.events());
    assert_eq!(updated["member"]["tags"]["role"], "api", "{updated}");
    // n1's handler fails on every event it runs for (it saw n0 join): counted, not fatal.
    wait_for("n1 to count its handler's failures", CONVERGE_WITHIN, || {
        let m = c[n1].metrics()?;
        let failures = metric(&m, "hearsay_event_handler_failures_total");
        if failures >= 1.0 { Ok(()) } else { Err(format!("failures {failures}")) }
    });

    // A failure: n1 crashes; n0 suspects it, then declares it failed.
    c[n1].kill();
    wait_event("monitor", &joiner, "member-suspect", || monitor.events());
    let failed = wait_event("monitor", &joiner, "member-failed", || monitor.events());
    assert_eq!(failed["member"]["state"], "dead", "{failed}");
    wait_event("event handler", &joiner, "member-failed", handled);
    // Events are numbered in order, and the handler ran each (none failed at n0).
    let seqs: Vec<u64> = monitor.events().iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let m = c[n0].metrics().expect("metrics");
    assert!(metric(&m, "hearsay_event_handler_runs_total") >= 4.0, "{m}");
    assert_eq!(metric(&m, "hearsay_event_handler_failures_total"), 0.0);
    assert!(c[n0].log_text().contains("event handler ran"), "the handler's runs are logged");
}

/// The value of an unlabelled sample in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}
