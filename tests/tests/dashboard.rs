//! The Grafana dashboard (`dashboards/hearsay.json`) against the metrics the node exports:
//! statically (every metric it names is exported by a real agent, every exported metric is
//! shown, every panel reads the `${DS_PROMETHEUS}` datasource), and through a real Prometheus
//! scraping the `/metrics` of three real agent processes that formed a cluster and carry
//! traffic (every expression parses and returns at least one series).

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hearsay_tests::{AgentSpec, Cluster, Subscription, metric_sample, wait_for};
use serde_json::{Value, json};
use support::dashboard::{check_dashboard_file, dashboard_path};
use support::promql::{self, metric_names, substitute};

/// Each test that runs agents and Prometheus finishes within this, or fails.
const TEST_BUDGET: Duration = Duration::from_secs(60);

/// The topics the busy cluster uses: one tree-multicast topic, one `gossip`-mode topic
/// (rumor mongering as the first phase).
const TOPICS: [&str; 2] = ["news", "gossip/chat"];

fn dashboard() -> Value {
    let path = dashboard_path();
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Sample names a real agent exports once it is on a topic's tree (histogram series
/// included), read from its `/metrics`.
fn exported_names() -> BTreeSet<String> {
    let mut agent = Cluster::new("names");
    agent.add(AgentSpec::new("solo"));
    let _sub = agent[0].subscribe("news");
    let text = wait_for("the agent's tree gauges for `news`", TEST_BUDGET, || {
        let text = agent[0].metrics()?;
        if text.contains("hearsay_tree_depth{topic=\"news\"}") {
            Ok(text)
        } else {
            Err("no tree gauges".into())
        }
    });
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
        .collect()
}

/// Metric families: sample names without `_total`, `_bucket`, `_sum`, `_count`.
fn family(name: &str) -> &str {
    ["_total", "_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

#[test]
fn dashboard_names_only_exported_metrics_and_shows_them_all() {
    let dash = dashboard();
    let exported = exported_names();
    let queries = promql::panel_queries(&dash).expect("panel queries");
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    let mut used = BTreeSet::new();
    for q in &queries {
        let names = metric_names(&q.expr).unwrap_or_else(|e| panic!("panel {:?}: {e}", q.panel));
        assert!(!names.is_empty(), "panel {:?} {} reads no metric: {}", q.panel, q.ref_id, q.expr);
        for n in names {
            assert!(exported.contains(&n), "panel {:?} reads `{n}`, which the node does not export", q.panel);
            used.insert(family(&n).to_string());
        }
    }
    let families: BTreeSet<String> = exported.iter().map(|n| family(n).to_string()).collect();
    let unshown: Vec<&String> = families.difference(&used).collect();
    assert!(unshown.is_empty(), "metrics no panel shows: {unshown:?}");
    // Variables resolve, and their queries also name exported metrics only.
    let vars = promql::variables(&dash).expect("variables");
    let values = promql::values(&vars);
    for q in &queries {
        substitute(&q.expr, &values).unwrap_or_else(|e| panic!("panel {:?}: {e}", q.panel));
    }
    for v in vars.iter().filter(|v| v.kind == "query") {
        let query = v.query.as_deref().expect("a query variable has a query");
        let inner = query.trim_start_matches("label_values(");
        for n in metric_names(inner.rsplit_once(',').map_or(inner, |(s, _)| s)).expect("names") {
            assert!(exported.contains(&n), "variable ${} reads `{n}`", v.name);
        }
    }
}

#[test]
fn dashboard_is_importable_with_a_datasource_variable() {
    let dash = dashboard();
    let schema = dash.get("schemaVersion").and_then(Value::as_u64).expect("schemaVersion");
    assert!(schema >= 36, "schemaVersion {schema} predates datasource uids");
    let vars = promql::variables(&dash).expect("variables");
    assert!(
        vars.iter().any(|v| v.name == "DS_PROMETHEUS" && v.kind == "datasource"),
        "a datasource variable DS_PROMETHEUS: {vars:?}"
    );
    let mut ids = BTreeSet::new();
    let panels = dash.get("panels").and_then(Value::as_array).expect("panels");
    for p in panels {
        let title = p.get("title").and_then(Value::as_str).unwrap_or("?");
        let id = p.get("id").and_then(Value::as_u64).expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(p.pointer("/gridPos/w").is_some(), "panel {title:?} has no gridPos");
        if p.get("type").and_then(Value::as_str) == Some("row") {
            continue;
        }
        assert_eq!(p.pointer("/datasource/uid").and_then(Value::as_str), Some("${DS_PROMETHEUS}"), "{title}");
        for t in p.get("targets").and_then(Value::as_array).expect("targets") {
            assert_eq!(
                t.pointer("/datasource/uid").and_then(Value::as_str),
                Some("${DS_PROMETHEUS}"),
                "{title}"
            );
        }
    }
}

/// `dashboards/prometheus.yml` is a valid Prometheus config (`promtool check config`, from
/// the same Debian package) that scrapes loopback agents' `/metrics` as job `hearsay`.
#[test]
fn example_scrape_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/prometheus.yml");
    let promtool = std::env::var("HEARSAY_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&promtool).args(["check", "config"]).arg(&path).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{promtool}` ({e}): install Debian's prometheus package (`apt-get install -y \
             prometheus`, as scripts/test does) or set HEARSAY_PROMTOOL"
        )
    });
    assert!(
        out.status.success(),
        "promtool check config {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&path).expect("config");
    assert!(text.contains("job_name: hearsay") && text.contains("metrics_path: /metrics"));
    assert!(text.contains("- 127.0.0.1:7071"), "loopback targets in the example");
}

#[test]
fn metric_names_skips_labels_strings_ranges_and_functions() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{x=~"b|c", y="d{e}"}[1m]))) / on(instance) group_left(z) max without (q) (b_total offset 5m) > bool 2"#,
    )
    .expect("parses");
    assert_eq!(names, vec!["a_bucket".to_string(), "b_total".to_string()]);
    assert!(metric_names("ratee(a[1m])").unwrap_err().contains("ratee"));
    assert_eq!(metric_names("count(up)").expect("parses"), vec!["up".to_string()]);
}

#[test]
fn substitute_replaces_grafana_variables_and_refuses_unknown_ones() {
    let vars = promql::values(&[promql::Variable {
        name: "instance".into(),
        kind: "query".into(),
        query: Some("label_values(up, instance)".into()),
    }]);
    assert_eq!(
        substitute(r#"rate(a{instance=~"$instance"}[$__rate_interval]) + ${instance:regex}"#, &vars)
            .expect("known"),
        r#"rate(a{instance=~".*"}[1m]) + .*"#
    );
    assert!(substitute("rate(a[$nope])", &vars).unwrap_err().contains("$nope"));
}

/// The value of one sample in metrics text (`name{labels}` exactly as encoded, or `name`);
/// 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    metric_sample(text, series).unwrap_or(0.0)
}

/// Messages a subscription received whose origin is not `own` (what came from peers).
fn from_peers(sub: &Subscription, own: &str) -> usize {
    sub.messages().iter().filter(|m| m.origin != own).count()
}

/// Three real agents form a cluster; all subscribe to a tree topic and a gossip topic, two
/// publish, every agent sets a value and one runs an aggregation query; traffic keeps flowing
/// while a real Prometheus scrapes the agents' `/metrics` every second. Once every agent has
/// been scraped twice, every dashboard expression parses and returns at least one series.
/// Needs `prometheus` on PATH (Debian's package; scripts/test installs it) and fails with a
/// clear message without it.
#[test]
fn dashboard_queries_return_series_from_a_real_prometheus() {
    let started = Instant::now();
    let cluster = Cluster::start("dash", 3);
    let formed = started.elapsed();
    let subs: Vec<Vec<Subscription>> =
        (0..3).map(|i| TOPICS.iter().map(|t| cluster[i].subscribe(t)).collect()).collect();
    cluster.wait_tree("news", &[0, 1, 2]);
    // Agents 0 and 1 publish 10 messages on each topic; each subscriber gets the others'.
    const EACH: usize = 10;
    let mut origins = vec![String::new(); 3];
    for k in 0..EACH {
        for p in 0..2 {
            for topic in TOPICS {
                origins[p] = cluster[p].publish(topic, &format!("m{k}")).origin;
            }
        }
    }
    let expected = [EACH, EACH, 2 * EACH];
    wait_for("every subscriber to receive the other publishers' messages", TEST_BUDGET, || {
        let got: Vec<Vec<usize>> =
            (0..3).map(|i| subs[i].iter().map(|s| from_peers(s, &origins[i])).collect()).collect();
        let done = (0..3).all(|i| got[i].iter().all(|n| *n >= expected[i]));
        if done { Ok(()) } else { Err(format!("from peers, per agent and topic: {got:?}")) }
    });
    for i in 0..3 {
        cluster[i].post("/v1/values", &json!({"name": "load", "value": i as f64})).expect("set value");
    }
    let answer = cluster[2].query("avg", "load").expect("query").ok().expect("query answered");
    let avg = answer["value"].as_f64().unwrap_or(f64::NAN);
    assert!((avg - 1.0).abs() < 1e-3, "avg(load) over 0, 1, 2: {answer}");
    assert_eq!(answer["converged"], true, "{answer}");
    let before: Vec<String> = (0..3).map(|i| cluster[i].metrics().expect("metrics")).collect();
    let traffic = started.elapsed();

    let targets: Vec<_> = cluster.agents().iter().map(|a| a.api()).collect();
    let busy = AtomicBool::new(true);
    let report = std::thread::scope(|scope| {
        // Keep traffic flowing while Prometheus scrapes: every 100 ms agent k mod 2 publishes
        // on each topic; every tenth time agent 2 runs avg(load).
        scope.spawn(|| {
            let mut k = 0u64;
            while busy.load(Ordering::Relaxed) {
                for topic in TOPICS {
                    let _ = cluster[(k % 2) as usize]
                        .post("/v1/publish", &json!({"topic": topic, "payload": format!("busy {k}")}));
                }
                if k % 10 == 0 {
                    let _ = cluster[2].query("avg", "load");
                }
                k += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let budget = TEST_BUDGET.saturating_sub(started.elapsed()).max(Duration::from_secs(30));
        let report = check_dashboard_file(&targets, &dashboard_path(), budget);
        busy.store(false, Ordering::Relaxed);
        report
    })
    .unwrap_or_else(|e| panic!("dashboard check failed: {e}"));
    println!(
        "cluster formed after {:.1} s, traffic and query done after {:.1} s; {report}",
        formed.as_secs_f64(),
        traffic.as_secs_f64()
    );
    let dash = dashboard();
    let queries = promql::panel_queries(&dash).expect("queries").len();
    let variables = promql::variables(&dash).expect("variables").iter().filter(|v| v.kind == "query").count();
    assert_eq!(report.evaluated.len(), queries + variables, "every expression evaluated");
    assert!(report.evaluated.iter().all(|e| e.series >= 1));
    let panel = |prefix: &str| {
        report
            .evaluated
            .iter()
            .find(|e| e.expr.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}`"))
    };
    assert_eq!(panel("count(hearsay_uptime_seconds").series, 1);
    assert_eq!(panel("sum by (protocol) (rate(hearsay_messages_sent_total").series, 7);
    assert!(panel("max by (topic) (hearsay_tree_depth").series >= 1);

    // The agents really did what the dashboard shows, before Prometheus started.
    for (i, text) in before.iter().enumerate() {
        assert_eq!(sample(text, "hearsay_members{state=\"alive\"}"), 3.0, "agent {i}:\n{text}");
        assert_eq!(sample(text, "hearsay_subscriptions"), 2.0, "agent {i}");
        assert!(sample(text, "hearsay_connections") >= 1.0, "agent {i}");
        assert!(sample(text, "hearsay_udp_datagrams_sent_total") > 0.0, "agent {i}");
        // Anti-entropy stays quiet in a healthy cluster (its series are there, at 0).
        for protocol in ["membership", "ring", "tree", "pbcast", "rumor", "aggregation"] {
            let series = format!("hearsay_messages_sent_total{{protocol=\"{protocol}\"}}");
            assert!(sample(text, &series) > 0.0, "agent {i}: no {protocol} traffic");
        }
    }
    // Deliveries from peers, at most once each: agents 0 and 1 got 10 per topic from the
    // other, agent 2 got 20 per topic.
    let received: f64 = before
        .iter()
        .map(|t| {
            sample(t, "hearsay_deliveries_total{via=\"first_phase\"}")
                + sample(t, "hearsay_deliveries_total{via=\"repair\"}")
                + sample(t, "hearsay_deliveries_total{via=\"anti_entropy\"}")
        })
        .sum();
    assert_eq!(received, (2 * (EACH + EACH + 2 * EACH)) as f64, "deliveries from peers, all agents");
    assert_eq!(sample(&before[2], "hearsay_query_rounds_count"), 1.0);
    assert_eq!(sample(&before[2], "hearsay_queries_total"), 1.0);
    let elapsed = started.elapsed();
    drop(subs);
    drop(cluster);
    println!(
        "test done in {:.1} s ({:.1} s with the cluster stopped)",
        elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The check is not vacuous: against quiet agents (real ones that joined no cluster and no
/// topic, so no trees) and with three broken expressions added, it fails and names exactly
/// the failing ones: the per-topic tree expressions (no series until a node joins a tree), a
/// metric nobody exports, an expression that does not parse, and an unknown variable.
#[test]
fn dashboard_check_names_every_failing_expression() {
    let mut quiet = Cluster::new("quiet");
    quiet.add(AgentSpec::new("q0"));
    quiet.add(AgentSpec::new("q1"));
    let targets: Vec<_> = quiet.agents().iter().map(|a| a.api()).collect();
    let mut dash = dashboard();
    let broken = serde_json::json!({
        "type": "timeseries", "id": 999, "title": "Broken",
        "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
        "gridPos": {"h": 8, "w": 24, "x": 0, "y": 200},
        "targets": [
            {"refId": "A", "expr": "sum(rate(hearsay_not_exported_total[$__rate_interval]))"},
            {"refId": "B", "expr": "sum(rate(hearsay_duplicates_total[1m]"},
            {"refId": "C", "expr": "sum(rate(hearsay_duplicates_total[$nope]))"},
        ],
    });
    dash["panels"].as_array_mut().expect("panels").push(broken);
    let dir = quiet.dir().join("broken-dashboard");
    fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broken.json");
    fs::write(&path, serde_json::to_string(&dash).expect("json")).expect("write");
    let error = match check_dashboard_file(&targets, &path, TEST_BUDGET) {
        Ok(report) => panic!("a broken dashboard passed:\n{report}"),
        Err(e) => e,
    };
    let first = error.lines().next().unwrap_or("");
    let failing: Vec<&str> = error.lines().filter(|l| l.starts_with("  panel ")).collect();
    assert!(first.starts_with("6 of "), "{error}");
    for needle in [
        "panel \"Tree depth per topic\" A:",
        "panel \"Tree children per topic\" A:",
        "panel \"Tree children per topic\" B:",
        "hearsay_not_exported_total[1m])) returned no series",
        "panel \"Broken\" B: bad_data:",
        "unknown variable `$nope`",
    ] {
        assert!(failing.iter().any(|l| l.contains(needle)), "`{needle}` missing from:\n{error}");
    }
    assert_eq!(failing.len(), 6, "{error}");
}
