//! Black-box test harness: real `hearsay agent` processes on loopback.
//!
//! Every agent runs as a child process with its own data directory and free ports, and is
//! killed and reaped when its [`Agent`] is dropped, whatever the test outcome. Every wait is
//! bounded and says what it waited for when it gives up.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `hearsay` binary: `$HEARSAY_BIN`, or the one cargo built beside this test.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("HEARSAY_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> -> target/<profile>/hearsay
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join("hearsay");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p hearsay`, same profile) or set HEARSAY_BIN",
        bin.display()
    );
    // A binary older than the hearsay library this test was built with is stale: testing it
    // would test old code. (`cargo test --workspace` builds both.)
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_lib = std::fs::read_dir(dir.join("deps"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("libhearsay-") && n.ends_with(".rlib")
        })
        .filter_map(|e| modified(&e.path()))
        .max();
    if let (Some(lib), Some(b)) = (newest_lib, modified(&bin)) {
        assert!(
            b >= lib,
            "{} is older than the hearsay library: rebuild it (`cargo build -p hearsay`, same profile) \
             or run the whole suite with `cargo test --workspace`",
            bin.display()
        );
    }
    bin
}

/// A free loopback port for UDP and TCP (bound and released; the OS gives it out again only
/// after the others it has in use).
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(label: &str) -> TempDir {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("hearsay-test-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Make a cluster secret with `hearsay keygen`.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new(binary()).arg("keygen").arg("--out").arg(&path).output().expect("run keygen");
    assert!(out.status.success(), "keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    path
}

/// One agent process.
pub struct Agent {
    /// Its name.
    pub name: String,
    /// Its UDP (QUIC) address.
    pub addr: SocketAddr,
    /// Its API address.
    pub api: SocketAddr,
    /// Its data directory (keeps its identity across restarts).
    pub data_dir: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    secret: PathBuf,
    join: Vec<SocketAddr>,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    /// Start an agent named `name` joining through `join`, with the `local` timing preset.
    pub fn start(dir: &Path, name: &str, secret: &Path, join: &[SocketAddr], extra: &[&str]) -> Agent {
        let port = free_port();
        let api_port = free_port();
        let mut a = Agent {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            data_dir: dir.join(format!("data-{name}")),
            log: dir.join(format!("{name}.log")),
            secret: secret.to_path_buf(),
            join: join.to_vec(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open log");
        let mut cmd = Command::new(binary());
        cmd.arg("--api")
            .arg(self.api.to_string())
            .arg("agent")
            .arg("--name")
            .arg(&self.name)
            .arg("--bind")
            .arg(self.addr.to_string())
            .arg("--secret-file")
            .arg(&self.secret)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--preset")
            .arg("local")
            .args(&self.extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for j in &self.join {
            cmd.arg("--join").arg(j.to_string());
        }
        self.child = Some(cmd.spawn().expect("start hearsay agent"));
    }

    /// Wait until its API answers.
    pub fn wait_ready(&self) {
        wait_for(&format!("{}'s API", self.name), Duration::from_secs(15), || self.get("/v1/status").ok());
    }

    /// SIGKILL it (a crash: no goodbye).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM it and wait (bounded) for it to leave and exit; returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start it again with the same name, ports, identity and seeds.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Wait for the process to exit by itself (bounded); its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// GET a JSON document from its API.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        let mut resp = agent_http().get(&self.url(path)).call().map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
        if status.is_success() { Ok(v) } else { Err(format!("HTTP {status}: {v}")) }
    }

    /// POST JSON to its API.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let mut resp = agent_http().post(&self.url(path)).send_json(body).map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
        if status.is_success() { Ok(v) } else { Err(format!("HTTP {status}: {v}")) }
    }

    /// Its member list as name → state.
    pub fn members(&self) -> BTreeMap<String, String> {
        self.get("/v1/members")
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                (m["name"].as_str().unwrap_or("").to_string(), m["state"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }

    /// Publish a text message; returns (origin, seq).
    pub fn publish(&self, topic: &str, payload: &str) -> (String, u64) {
        let v = self
            .post("/v1/publish", &serde_json::json!({"topic": topic, "payload": payload}))
            .unwrap_or_else(|e| panic!("publish on {}: {e}", self.name));
        (v["origin"].as_str().unwrap_or("").to_string(), v["seq"].as_u64().unwrap_or(0))
    }

    /// Open a subscription; lines are collected in the background until the agent ends it.
    pub fn subscribe(&self, topic: &str) -> Subscription {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let url = format!("{}?topic={topic}", self.url("/v1/subscribe"));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let streaming = ureq::Agent::new_with_config(
                ureq::Agent::config_builder().http_status_as_error(false).timeout_global(None).build(),
            );
            let Ok(mut resp) = streaming.get(&url).call() else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(resp.status().is_success());
            let reader = std::io::BufReader::new(resp.body_mut().as_reader());
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("lines").push(v);
                }
            }
        });
        let ok = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap_or(false);
        assert!(ok, "subscribing to {topic} on {} failed", self.name);
        Subscription { lines }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn agent_http() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(70)))
            .build(),
    )
}

/// A subscription's received lines.
pub struct Subscription {
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Subscription {
    /// Everything received so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lines").clone()
    }

    /// Messages received so far (gap notices excluded): (origin, seq, payload).
    pub fn messages(&self) -> Vec<(String, u64, String)> {
        self.lines()
            .into_iter()
            .filter(|v| v.get("seq").is_some())
            .map(|v| {
                (
                    v["origin"].as_str().unwrap_or("").to_string(),
                    v["seq"].as_u64().unwrap_or(0),
                    v["payload"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Gap notices received so far.
    pub fn gaps(&self) -> Vec<Value> {
        self.lines().into_iter().filter_map(|v| v.get("gap").cloned()).collect()
    }
}

/// Run black-box tests one at a time: each starts several agents, and on a 2-core machine
/// several clusters at once would turn timing bounds into noise. Hold the guard for the test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Poll `probe` every 100 ms until it gives a value, or panic after `within` naming `what`.
pub fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start `n` agents named n0..: n0 first, the others joining through it; wait until every
/// agent lists all `n` alive.
pub fn cluster(dir: &Path, secret: &Path, n: usize) -> Vec<Agent> {
    let seed = Agent::start(dir, "n0", secret, &[], &[]);
    seed.wait_ready();
    let mut agents = vec![seed];
    for i in 1..n {
        let a = Agent::start(dir, &format!("n{i}"), secret, &[agents[0].addr], &[]);
        agents.push(a);
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
