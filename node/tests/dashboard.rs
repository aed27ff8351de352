//! The Grafana dashboard (`dashboards/hearsay.json`) against the metrics the node exports:
//! statically (every metric it names exists, every metric is shown, every panel reads the
//! `${DS_PROMETHEUS}` datasource), and through a real Prometheus scraping three stand-in
//! agents (every expression parses and returns at least one series).

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use hearsay::metrics::Metrics;
use serde_json::Value;
use support::dashboard::{BUDGET, check_dashboard, check_dashboard_file, dashboard_path};
use support::promql::{self, metric_names, substitute};
use support::standin::{MetricsServer, busy_agent, populate};

fn dashboard() -> Value {
    let path = dashboard_path();
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Sample names a busy node exports (histogram series included).
fn exported_names() -> BTreeSet<String> {
    let m = Metrics::new();
    populate(&m, 1, 1);
    m.encode()
        .lines()
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
             prometheus`, as .ci/run does) or set HEARSAY_PROMTOOL"
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

/// Three stand-in agents, a real Prometheus scraping them every second: every dashboard
/// expression parses and returns at least one series. Needs `prometheus` on PATH (Debian's
/// package; .ci/run installs it) and fails with a clear message without it.
#[test]
fn dashboard_queries_return_series_from_a_real_prometheus() {
    let agents: Vec<_> = (0..3).map(|i| busy_agent(i).expect("stand-in agent")).collect();
    let targets: Vec<_> = agents.iter().map(|a| a.addr()).collect();
    let report = check_dashboard(&targets).unwrap_or_else(|e| panic!("dashboard check failed: {e}"));
    println!("{report}");
    let queries = promql::panel_queries(&dashboard()).expect("queries").len();
    let variables =
        promql::variables(&dashboard()).expect("variables").iter().filter(|v| v.kind == "query").count();
    assert_eq!(report.evaluated.len(), queries + variables, "every expression evaluated");
    assert!(report.evaluated.iter().all(|e| e.series >= 1));
    for a in &agents {
        assert!(a.served() >= 2, "{} served {} scrapes", a.addr(), a.served());
    }
    // Per-protocol panels see every protocol of every agent.
    let per_protocol = report
        .evaluated
        .iter()
        .find(|e| e.expr.starts_with("sum by (protocol) (rate(hearsay_messages_sent_total"))
        .expect("the messages-sent panel");
    assert_eq!(per_protocol.series, 7, "{per_protocol:?}");
}

/// The check is not vacuous: against quiet agents (nothing happened yet, so no topic trees)
/// and with three broken expressions added, it fails and names exactly the failing ones: the
/// per-topic tree expressions (no series until a node joins a tree), a metric nobody
/// exports, an expression that does not parse, and an unknown variable.
#[test]
fn dashboard_check_names_every_failing_expression() {
    let quiet: Vec<_> = (0..2)
        .map(|_| {
            let m = Metrics::new();
            MetricsServer::start(move || m.encode()).expect("stand-in agent")
        })
        .collect();
    let targets: Vec<_> = quiet.iter().map(|a| a.addr()).collect();
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
    let dir = std::env::temp_dir().join(format!("hearsay-broken-dashboard-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broken.json");
    fs::write(&path, serde_json::to_string(&dash).expect("json")).expect("write");
    let result = check_dashboard_file(&targets, &path, BUDGET);
    let _ = fs::remove_dir_all(&dir);
    let error = match result {
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
