//! One `hearsay agent` process: started with port 0 for QUIC and the API, ready once it has
//! written `ready.json`, killed and reaped on drop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{self, Reply, Subscription};
use crate::{Output, binary, run, run_with_input, wait_for};

/// How long an agent may take to bind and write its ready file.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long a plain API request may take (a query waits for convergence: see [`Agent::query`]).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start an agent. Every agent binds port 0 on `bind_ip` (QUIC) and `api_ip` (API) and
/// uses the `local` timing preset and the test control unless told otherwise.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// Its name.
    pub name: String,
    /// Seeds to join through (none: it starts a cluster).
    pub join: Vec<SocketAddr>,
    /// IP for QUIC.
    pub bind_ip: IpAddr,
    /// IP for the API.
    pub api_ip: IpAddr,
    /// Another secret than the cluster's.
    pub secret: Option<PathBuf>,
    /// Serve `/v1/test/control` (`--test-control`).
    pub test_control: bool,
    /// More `hearsay agent` flags.
    pub args: Vec<String>,
    /// Run it in this network namespace (`ip netns exec NS`).
    pub netns: Option<String>,
    /// A restart binds the ports of the previous life again (as a daemon with a configured
    /// `--bind` and `--api` does) instead of fresh ones.
    pub keep_ports: bool,
    /// Give an API bound beyond loopback a token (`--api-token-file`, which the agent requires
    /// there) and send it with every request. Default on; off to see the agent refuse.
    pub auto_token: bool,
}

impl AgentSpec {
    /// An agent named `name` on 127.0.0.1.
    pub fn new(name: &str) -> AgentSpec {
        AgentSpec {
            name: name.to_string(),
            join: Vec::new(),
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secret: None,
            test_control: true,
            args: Vec::new(),
            netns: None,
            keep_ports: false,
            auto_token: true,
        }
    }

    /// Join through `seeds`.
    pub fn join(mut self, seeds: &[SocketAddr]) -> Self {
        self.join = seeds.to_vec();
        self
    }

    /// Add `hearsay agent` flags.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Restart on the same ports (see [`AgentSpec::keep_ports`]).
    pub fn keep_ports(mut self) -> Self {
        self.keep_ports = true;
        self
    }

    /// Use another secret file.
    pub fn secret(mut self, path: &Path) -> Self {
        self.secret = Some(path.to_path_buf());
        self
    }
}

/// What an agent reported in `ready.json` once bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// Its name.
    pub name: String,
    /// Its NodeId (hex).
    pub id: String,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its API address.
    pub api: SocketAddr,
    /// The process that wrote it.
    pub pid: u32,
}

impl Ready {
    /// Parse a ready line; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<Ready, String> {
        let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("not JSON ({e}): {text}"))?;
        let field = |k: &str| v[k].as_str().map(str::to_string).ok_or_else(|| format!("no `{k}` in {v}"));
        let addr = |k: &str| field(k)?.parse::<SocketAddr>().map_err(|e| format!("`{k}` in {v}: {e}"));
        Ok(Ready {
            name: field("name")?,
            id: field("id")?,
            addr: addr("addr")?,
            api: addr("api")?,
            pid: v["pid"].as_u64().ok_or_else(|| format!("no `pid` in {v}"))? as u32,
        })
    }
}

/// A member as `GET /v1/members` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its NodeId (hex).
    pub id: String,
    /// Its address.
    pub addr: String,
    /// alive, suspect, dead or left.
    pub state: String,
    /// Its incarnation.
    pub incarnation: u64,
}

/// A publish's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The stream's origin (hex).
    pub origin: String,
    /// The message's seq.
    pub seq: u64,
}

/// One `hearsay agent` process (and its later lives after [`Agent::restart`]).
#[derive(Debug)]
pub struct Agent {
    /// Its name.
    pub name: String,
    /// How it is started.
    pub spec: AgentSpec,
    /// Its data directory (its identity across restarts, its ready file).
    pub data_dir: PathBuf,
    /// Where its stderr goes, every life appended.
    pub log: PathBuf,
    secret: PathBuf,
    child: Option<Child>,
    ready: Option<Ready>,
    /// What the last life reported (its ports, for [`AgentSpec::keep_ports`]).
    last_ready: Option<Ready>,
    lives: u32,
    http: ureq::Agent,
    /// The API token file and token, when the API needs one.
    token: Option<(PathBuf, String)>,
}

impl Agent {
    /// Start an agent in `dir` (data dir and log there); not waiting for it to be ready.
    pub fn launch(dir: &Path, spec: AgentSpec, cluster_secret: &Path) -> Agent {
        let mut a = Agent {
            name: spec.name.clone(),
            data_dir: dir.join(format!("data-{}", spec.name)),
            log: dir.join(format!("{}.log", spec.name)),
            secret: spec.secret.clone().unwrap_or_else(|| cluster_secret.to_path_buf()),
            spec,
            child: None,
            ready: None,
            last_ready: None,
            lives: 0,
            http: http::client(),
            token: None,
        };
        if a.spec.auto_token && !a.spec.api_ip.is_loopback() {
            let path = dir.join(format!("api-{}.token", a.name));
            let token = format!("harness-token-for-{}", a.name);
            std::fs::write(&path, &token).expect("write the API token");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod the token");
            }
            a.spec.args.extend(["--api-token-file".to_string(), path.display().to_string()]);
            a.token = Some((path, token));
        }
        a.spawn();
        a
    }

    fn ready_file(&self) -> PathBuf {
        self.data_dir.join("ready.json")
    }

    fn spawn(&mut self) {
        use std::io::Write;
        self.lives += 1;
        let mut log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open log");
        let _ = writeln!(log, "=== harness: life {} of {} ===", self.lives, self.name);
        let _ = std::fs::remove_file(self.ready_file());
        let mut cmd = match &self.spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let (port, api_port) = match &self.last_ready {
            Some(r) if self.spec.keep_ports => (r.addr.port(), r.api.port()),
            _ => (0, 0),
        };
        cmd.arg("--api")
            .arg(SocketAddr::new(self.spec.api_ip, api_port).to_string())
            .arg("agent")
            .arg("--name")
            .arg(&self.spec.name)
            .arg("--bind")
            .arg(SocketAddr::new(self.spec.bind_ip, port).to_string())
            .arg("--secret-file")
            .arg(&self.secret)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--preset")
            .arg("local");
        if self.spec.test_control {
            cmd.arg("--test-control");
        }
        for j in &self.spec.join {
            cmd.arg("--join").arg(j.to_string());
        }
        cmd.args(&self.spec.args).env("NO_COLOR", "1").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("start hearsay agent"));
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Wait (bounded) until it has bound its ports and written `ready.json`; what it reported.
    /// Panics, with its log, if it exits first or takes too long.
    pub fn wait_ready(&mut self) -> Ready {
        if let Some(r) = &self.ready {
            return r.clone();
        }
        let pid = self.pid().unwrap_or_else(|| panic!("{} is not running", self.name));
        let file = self.ready_file();
        let started = Instant::now();
        let ready = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let r = Ready::parse(&text).unwrap_or_else(|e| panic!("{}'s ready file: {e}", self.name));
                if r.pid == pid {
                    break r;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("{} exited ({status}) before it was ready; its log:\n{}", self.name, self.log_text());
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "{} wrote no ready file within {READY_WITHIN:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(ready.name, self.name, "ready file of another agent");
        self.ready = Some(ready.clone());
        self.last_ready = Some(ready.clone());
        ready
    }

    fn reported(&self) -> &Ready {
        self.ready.as_ref().unwrap_or_else(|| panic!("{} is not ready: call wait_ready first", self.name))
    }

    /// Its QUIC address (as reported when ready).
    pub fn addr(&self) -> SocketAddr {
        self.reported().addr
    }

    /// Its API address (as reported when ready).
    pub fn api(&self) -> SocketAddr {
        self.reported().api
    }

    /// Its NodeId in hex (as reported when ready).
    pub fn id(&self) -> String {
        self.reported().id.clone()
    }

    /// SIGKILL it (a crash: no goodbye) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.ready = None;
    }

    /// Send SIGTERM (a graceful leave) without waiting.
    pub fn signal_term(&self) {
        if let Some(pid) = self.pid() {
            crate::sigterm(pid);
        }
    }

    /// SIGTERM it and wait (bounded) for it to leave and exit; its exit status, or `None` if it
    /// had to be killed.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.signal_term();
        let status = self.wait_exit(Duration::from_secs(15));
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// Wait (bounded) for the process to exit by itself; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                self.ready = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Start it again (killing this life if it runs) with the same name, data dir (identity)
    /// and seeds, on fresh ports (the same ones with [`AgentSpec::keep_ports`]); waits until it
    /// is ready.
    pub fn restart(&mut self) -> Ready {
        self.kill();
        self.spawn();
        self.wait_ready()
    }

    /// Its log so far, every life.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request to its API (GET, POST or DELETE); `Err` only when there was no HTTP answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        http::call(&self.http, self.api(), method, path, bytes.as_deref(), REQUEST_TIMEOUT, self.token())
    }

    /// POST these raw bytes as the body.
    pub fn post_raw(&self, path: &str, body: &[u8]) -> Result<Reply, String> {
        http::call(&self.http, self.api(), "POST", path, Some(body), REQUEST_TIMEOUT, self.token())
    }

    /// GET a JSON document; any failure (no answer, a non-2xx status) is an error.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        self.call("GET", path, None)?.ok().map_err(|e| format!("{}: GET {path}: {e}", self.name))
    }

    /// POST JSON; any failure is an error.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.call("POST", path, Some(body))?.ok().map_err(|e| format!("{}: POST {path}: {e}", self.name))
    }

    /// Its member table; an error if the API does not answer 200 with a list of members.
    pub fn members(&self) -> Result<Vec<Member>, String> {
        let v = self.get("/v1/members")?;
        let list = v.as_array().ok_or_else(|| format!("{}: /v1/members is not a list: {v}", self.name))?;
        list.iter()
            .map(|m| {
                let s = |k: &str| {
                    m[k].as_str().map(str::to_string).ok_or_else(|| format!("member without `{k}`: {m}"))
                };
                Ok(Member {
                    name: s("name")?,
                    id: s("id")?,
                    addr: s("addr")?,
                    state: s("state")?,
                    incarnation: m["incarnation"].as_u64().ok_or_else(|| format!("no incarnation: {m}"))?,
                })
            })
            .collect()
    }

    /// The state it gives the member named `name` (an error if the API fails or lists no such
    /// member).
    pub fn state_of(&self, name: &str) -> Result<String, String> {
        let members = self.members()?;
        members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.state.clone())
            .ok_or_else(|| format!("{} does not list {name}: {members:?}", self.name))
    }

    /// Its `/v1/topics` entry for `topic`, if it takes part in it.
    pub fn topic(&self, topic: &str) -> Result<Option<Value>, String> {
        let v = self.get("/v1/topics")?;
        let list = v.as_array().ok_or_else(|| format!("/v1/topics is not a list: {v}"))?;
        Ok(list.iter().find(|t| t["topic"] == topic).cloned())
    }

    /// Its `/metrics` text.
    pub fn metrics(&self) -> Result<String, String> {
        let r = self.call("GET", "/metrics", None)?;
        match r.body {
            Value::String(text) if r.status == 200 => Ok(text),
            other => Err(format!("{}: /metrics: HTTP {}: {other}", self.name, r.status)),
        }
    }

    /// Publish a text message; panics if refused.
    pub fn publish(&self, topic: &str, payload: &str) -> Published {
        self.publish_json(&json!({"topic": topic, "payload": payload}))
    }

    /// Publish this request body; panics if refused.
    pub fn publish_json(&self, body: &Value) -> Published {
        let v = self.post("/v1/publish", body).unwrap_or_else(|e| panic!("publish: {e}"));
        Published {
            origin: v["origin"].as_str().unwrap_or_else(|| panic!("no origin in {v}")).to_string(),
            seq: v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}")),
        }
    }

    /// Subscribe to `topic`, read in the background; panics if refused.
    pub fn subscribe(&self, topic: &str) -> Subscription {
        self.subscribe_query(&format!("topic={topic}"))
            .unwrap_or_else(|r| panic!("{}: subscribe to {topic}: HTTP {}: {}", self.name, r.status, r.body))
    }

    /// `GET /v1/subscribe?{query}`: the stream, or the error reply.
    pub fn subscribe_query(&self, query: &str) -> Result<Subscription, Reply> {
        Subscription::open(self.api(), query, self.token())
    }

    /// `GET /v1/subscribe?{query}` without reading the stream (a consumer that does not keep
    /// up) until [`Subscription::resume`].
    pub fn subscribe_paused(&self, query: &str) -> Result<Subscription, Reply> {
        Subscription::open_paused(self.api(), query, self.token())
    }

    /// Set its test control (`/v1/test/control`); its settings after the change.
    pub fn control(&self, settings: &Value) -> Value {
        self.post("/v1/test/control", settings).unwrap_or_else(|e| panic!("test control: {e}"))
    }

    /// Run the aggregation query `func(name)` from this agent: the whole reply.
    pub fn query(&self, func: &str, name: &str) -> Result<Reply, String> {
        let body = serde_json::to_vec(&json!({"fn": func, "name": name})).expect("JSON");
        http::call(
            &self.http,
            self.api(),
            "POST",
            "/v1/query",
            Some(&body),
            Duration::from_secs(90),
            self.token(),
        )
    }

    /// The API token, when the API needs one.
    fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|(_, t)| t.as_str())
    }

    /// `--api-token-file FILE` for the CLI, when the API needs a token.
    fn token_args(&self) -> Vec<String> {
        self.token
            .iter()
            .flat_map(|(p, _)| ["--api-token-file".to_string(), p.display().to_string()])
            .collect()
    }

    /// Run `hearsay --api <its API> ARGS` (bounded).
    pub fn cli(&self, args: &[&str]) -> Output {
        run(
            Command::new(binary())
                .arg("--api")
                .arg(self.api().to_string())
                .args(self.token_args())
                .args(args),
            Duration::from_secs(60),
        )
    }

    /// Run `hearsay --api <its API> ARGS` with `input` on stdin (bounded).
    pub fn cli_with_input(&self, args: &[&str], input: &str) -> Output {
        run_with_input(
            Command::new(binary())
                .arg("--api")
                .arg(self.api().to_string())
                .args(self.token_args())
                .args(args),
            Some(input),
            Duration::from_secs(60),
        )
    }

    /// Wait (bounded) until this agent gives the member named `name` the state `state`.
    pub fn wait_state(&self, name: &str, state: &str, within: Duration) {
        wait_for(&format!("{} to see {name} {state}", self.name), within, || {
            let s = self.state_of(name)?;
            if s == state { Ok(()) } else { Err(format!("{name} is {s}")) }
        });
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
