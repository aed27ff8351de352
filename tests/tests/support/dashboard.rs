//! The dashboard check: a real Prometheus (Debian's `prometheus` package) scrapes the given
//! `/metrics` addresses every second; once each has been scraped successfully twice, every
//! PromQL expression of `dashboards/hearsay.json` (every target of every panel, Grafana
//! variables substituted) goes through Prometheus' `/api/v1/query` and must parse and return
//! at least one series; every `label_values` variable query must return at least one value.
//!
//! Blocking (plain threads and HTTP): from async code, run it in `spawn_blocking`. Bounded by
//! [`BUDGET`]; Prometheus is killed and its temp dir removed on every path (a Drop guard).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::promql;

/// The whole check must finish within this.
pub(crate) const BUDGET: Duration = Duration::from_secs(60);

/// How often Prometheus scrapes the targets.
pub(crate) const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// The scrape job's name (the dashboard's `$job`).
pub(crate) const JOB: &str = "hearsay";

/// Environment variable naming the Prometheus binary (default: `prometheus` on PATH).
pub(crate) const PROMETHEUS_ENV: &str = "HEARSAY_PROMETHEUS";

/// The repository's dashboard.
pub(crate) fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/hearsay.json")
}

/// One expression evaluated.
#[derive(Clone, Debug)]
pub(crate) struct Evaluated {
    /// Where it comes from: a panel title and refId, or `variable NAME`.
    pub(crate) source: String,
    /// The expression sent to Prometheus (variables substituted).
    pub(crate) expr: String,
    /// Series (or label values) it returned.
    pub(crate) series: usize,
}

/// What the check saw.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    /// Prometheus' version.
    pub(crate) prometheus: String,
    /// From starting Prometheus until it was ready.
    pub(crate) ready_after: Duration,
    /// The targets scraped.
    pub(crate) targets: Vec<SocketAddr>,
    /// From starting Prometheus until every target had two successful scrapes.
    pub(crate) scraped_after: Duration,
    /// Every panel expression and variable query, in dashboard order.
    pub(crate) evaluated: Vec<Evaluated>,
    /// The whole check.
    pub(crate) elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: ready after {:.1} s; {} targets scraped twice after {:.1} s; {} expressions \
             evaluated; {:.1} s in all",
            self.prometheus,
            self.ready_after.as_secs_f64(),
            self.targets.len(),
            self.scraped_after.as_secs_f64(),
            self.evaluated.len(),
            self.elapsed.as_secs_f64()
        )?;
        for e in &self.evaluated {
            writeln!(f, "  {:>3} series  {}: {}", e.series, e.source, e.expr)?;
        }
        Ok(())
    }
}

/// Check the repository's dashboard against Prometheus scraping `targets` (`host:port` of
/// `/metrics` servers: agents' API addresses).
pub(crate) fn check_dashboard(targets: &[SocketAddr]) -> Result<Report, String> {
    check_dashboard_file(targets, &dashboard_path(), BUDGET)
}

/// [`check_dashboard`] with another dashboard file and time budget.
pub(crate) fn check_dashboard_file(
    targets: &[SocketAddr],
    dashboard: &Path,
    budget: Duration,
) -> Result<Report, String> {
    let started = Instant::now();
    let deadline = started + budget;
    if targets.is_empty() {
        return Err("no targets to scrape".into());
    }
    let text = fs::read_to_string(dashboard)
        .map_err(|e| format!("cannot read dashboard {}: {e}", dashboard.display()))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| format!("dashboard {} is not JSON: {e}", dashboard.display()))?;
    let queries = promql::panel_queries(&json)?;
    if queries.is_empty() {
        return Err(format!("dashboard {} has no queries", dashboard.display()));
    }
    let variables = promql::variables(&json)?;
    let values = promql::values(&variables);

    let prom = Prometheus::start(targets, deadline)?;
    let ready_after = started.elapsed();
    prom.wait_for_scrapes(targets, 2, deadline).map_err(|e| prom.fail(e))?;
    let scraped_after = started.elapsed();

    let mut evaluated = Vec::new();
    let mut failures = Vec::new();
    for v in &variables {
        let Some(query) = &v.query else { continue };
        if v.kind != "query" {
            continue;
        }
        let source = format!("variable ${}", v.name);
        let outcome = promql::substitute(query, &values)
            .and_then(|q| prom.variable_values(&q, deadline).map(|n| (q, n)));
        match outcome {
            Ok((expr, 0)) => failures.push(format!("{source}: {expr} returned no values")),
            Ok((expr, series)) => evaluated.push(Evaluated { source, expr, series }),
            Err(e) => failures.push(format!("{source}: {e}")),
        }
    }
    for q in &queries {
        let source = format!("panel {:?} {}", q.panel, q.ref_id);
        let outcome = promql::substitute(&q.expr, &values)
            .and_then(|expr| prom.instant_query(&expr, deadline).map(|n| (expr, n)));
        match outcome {
            Ok((expr, 0)) => failures.push(format!("{source}: {expr} returned no series")),
            Ok((expr, series)) => evaluated.push(Evaluated { source, expr, series }),
            Err(e) => failures.push(format!("{source}: {e}")),
        }
    }
    if !failures.is_empty() {
        return Err(prom.fail(format!(
            "{} of {} dashboard queries failed:\n  {}",
            failures.len(),
            failures.len() + evaluated.len(),
            failures.join("\n  ")
        )));
    }
    Ok(Report {
        prometheus: prom.version.clone(),
        ready_after,
        targets: targets.to_vec(),
        scraped_after,
        evaluated,
        elapsed: started.elapsed(),
    })
}

/// A running Prometheus with its own temp dir; killed and cleaned up when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    base: String,
    version: String,
    http: ureq::Agent,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn binary() -> String {
    std::env::var(PROMETHEUS_ENV).unwrap_or_else(|_| "prometheus".into())
}

fn not_installed(bin: &str, e: &io::Error) -> String {
    format!(
        "cannot run `{bin}` ({e}). The dashboard test needs a Prometheus server: install \
         Debian's package (`apt-get install -y prometheus`, as scripts/test does) or set \
         {PROMETHEUS_ENV} to the binary"
    )
}

fn temp_dir() -> Result<PathBuf, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hearsay-dashboard-{}-{nanos}-{n}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The scrape configuration for `targets`.
pub(crate) fn scrape_config(targets: &[SocketAddr]) -> String {
    let secs = SCRAPE_INTERVAL.as_secs().max(1);
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  evaluation_interval: {secs}s\n\
         scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    static_configs:\n      \
         - targets: [{}]\n",
        list.join(", ")
    )
}

impl Prometheus {
    /// Start Prometheus on loopback port 0 and wait until it is ready; the port it got is read
    /// from its log (`msg="Listening on" address=127.0.0.1:PORT`), so nothing can take it first.
    fn start(targets: &[SocketAddr], deadline: Instant) -> Result<Prometheus, String> {
        let mut prom = Prometheus::spawn(targets)?;
        match prom.wait_ready(deadline) {
            Ok(()) => {
                if let Ok(info) = prom.api("/api/v1/status/buildinfo", &[], deadline) {
                    let version = info.get("version").and_then(Value::as_str).unwrap_or("?");
                    prom.version = format!("prometheus {version}");
                }
                Ok(prom)
            }
            Err(e) => Err(prom.fail(e)),
        }
    }

    /// Start Prometheus with a fresh temp dir and config; not yet ready.
    fn spawn(targets: &[SocketAddr]) -> Result<Prometheus, String> {
        let bin = binary();
        let dir = temp_dir()?;
        let config = dir.join("prometheus.yml");
        fs::write(&config, scrape_config(targets)).map_err(|e| format!("cannot write config: {e}"))?;
        let log = fs::File::create(dir.join("prometheus.log")).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(not_installed(&bin, &e));
            }
        };
        let http: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        Ok(Prometheus { child, dir, base: String::new(), version: bin, http })
    }

    /// The address Prometheus says it listens on, once it has said it.
    fn listening(&self) -> Option<SocketAddr> {
        let log = fs::read_to_string(self.dir.join("prometheus.log")).ok()?;
        log.lines()
            .filter(|l| l.contains("msg=\"Listening on\""))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("address=")?.parse().ok()))
    }

    /// `message` with the tail of Prometheus' log.
    fn fail(&self, message: String) -> String {
        let log = fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
        format!("{message}\n  prometheus at {} ({}), last log lines:\n    {tail}", self.base, self.version)
    }

    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("prometheus exited at start ({status})"));
            }
            if self.base.is_empty() {
                if let Some(addr) = self.listening() {
                    self.base = format!("http://{addr}");
                }
            }
            if self.base.is_empty() {
                if Instant::now() >= deadline {
                    return Err(
                        "prometheus did not say where it listens within the check's time budget".into()
                    );
                }
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            if let Ok(mut r) = self.http.get(format!("{}/-/ready", self.base)).call() {
                if r.status() == 200 {
                    return Ok(());
                }
                let _ = r.body_mut().read_to_string();
            }
            if Instant::now() >= deadline {
                return Err("prometheus did not become ready within the check's time budget (a \
                            heavily loaded machine?)"
                    .into());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` with `params`; the `data` of a successful API answer.
    fn api(&self, path: &str, params: &[(&str, &str)], deadline: Instant) -> Result<Value, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("out of time".into());
        }
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .config()
            .timeout_global(Some(left.min(Duration::from_secs(10))))
            .build();
        for (k, v) in params {
            request = request.query(*k, *v);
        }
        let mut response = request.call().map_err(|e| format!("GET {path}: {e}"))?;
        let body = response.body_mut().read_to_string().map_err(|e| format!("GET {path}: reading: {e}"))?;
        let json: Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {path}: not JSON ({e}): {body}"))?;
        if json.get("status").and_then(Value::as_str) != Some("success") {
            let kind = json.get("errorType").and_then(Value::as_str).unwrap_or("?");
            let error = json.get("error").and_then(Value::as_str).unwrap_or(&body);
            return Err(format!("{kind}: {error}"));
        }
        json.get("data").cloned().ok_or_else(|| format!("GET {path}: no data in {body}"))
    }

    /// Evaluate `expr` now; the number of series (1 for a scalar or string).
    fn instant_query(&self, expr: &str, deadline: Instant) -> Result<usize, String> {
        let data = self.api("/api/v1/query", &[("query", expr)], deadline)?;
        match data.get("resultType").and_then(Value::as_str) {
            Some("vector") | Some("matrix") => {
                Ok(data.get("result").and_then(Value::as_array).map_or(0, Vec::len))
            }
            Some("scalar") | Some("string") => Ok(1),
            other => Err(format!("unexpected resultType {other:?}")),
        }
    }

    /// Values of a Grafana `label_values(...)` or `query_result(...)` variable query.
    fn variable_values(&self, query: &str, deadline: Instant) -> Result<usize, String> {
        let q = query.trim();
        if let Some(inner) = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')) {
            let (selector, label) = match inner.rsplit_once(',') {
                Some((s, l)) => (Some(s.trim()), l.trim()),
                None => (None, inner.trim()),
            };
            let path = format!("/api/v1/label/{label}/values");
            let params: Vec<(&str, &str)> = selector.map(|s| vec![("match[]", s)]).unwrap_or_default();
            let data = self.api(&path, &params, deadline)?;
            return Ok(data.as_array().map_or(0, Vec::len));
        }
        if let Some(inner) = q.strip_prefix("query_result(").and_then(|s| s.strip_suffix(')')) {
            return self.instant_query(inner, deadline);
        }
        Err(format!("variable query {q:?} is neither label_values(...) nor query_result(...)"))
    }

    /// Wait until every target has `scrapes` successful scrapes.
    fn wait_for_scrapes(
        &self,
        targets: &[SocketAddr],
        scrapes: u32,
        deadline: Instant,
    ) -> Result<(), String> {
        let expr = format!("sum_over_time(up{{job=\"{JOB}\"}}[10m])");
        let mut seen: BTreeMap<String, f64> = BTreeMap::new();
        loop {
            if let Ok(data) = self.api("/api/v1/query", &[("query", &expr)], deadline) {
                seen = data
                    .get("result")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| {
                        let instance = s.pointer("/metric/instance")?.as_str()?.to_string();
                        let value = s.pointer("/value/1")?.as_str()?.parse::<f64>().ok()?;
                        Some((instance, value))
                    })
                    .collect();
                let done = targets
                    .iter()
                    .all(|t| seen.get(&t.to_string()).is_some_and(|&n| n >= f64::from(scrapes)));
                if done {
                    return Ok(());
                }
            }
            if Instant::now() + Duration::from_millis(250) >= deadline {
                return Err(format!(
                    "not every target was scraped successfully {scrapes} times in time; successful \
                     scrapes per target: {seen:?}; targets: {}",
                    self.target_health(deadline + Duration::from_secs(2))
                ));
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Each target's health and last error, for error messages.
    fn target_health(&self, deadline: Instant) -> String {
        match self.api("/api/v1/targets", &[], deadline) {
            Ok(data) => data
                .get("activeTargets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| {
                    let url = t.get("scrapeUrl").and_then(Value::as_str).unwrap_or("?");
                    let health = t.get("health").and_then(Value::as_str).unwrap_or("?");
                    let error = t.get("lastError").and_then(Value::as_str).unwrap_or("");
                    format!("{url} {health} {error}")
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("(targets API failed: {e})"),
        }
    }
}
