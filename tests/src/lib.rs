//! The one test harness for real hearsay agents: [`Cluster`], a set of `hearsay agent`
//! processes, used by every test that runs agents (the black-box tests in `tests/tests/`, the
//! dashboard check and the bench's).
//!
//! How it avoids races:
//!
//! - **No guessed ports.** Every agent binds port 0 for QUIC and for its API and reports what it
//!   got: `hearsay agent` writes `DATA_DIR/ready.json` (`{name, id, addr, api, pid}`) atomically
//!   once both are bound. [`Agent::wait_ready`] reads it (checking `pid`, so a file left by an
//!   earlier life of the agent is not taken for this one); a restarted agent gets fresh ports the
//!   same way.
//! - **No fixed sleeps.** Every wait polls observable state with a bound and says what it saw
//!   last when it gives up ([`wait_for`]): members alive by NodeId ([`Cluster::wait_converged`]),
//!   a topic tree joined with one root where the ring puts it ([`Cluster::wait_tree`]), a
//!   publisher's stream registered at every subscriber ([`Cluster::warm_up`]).
//! - **One cluster at a time.** A [`Cluster`] holds a process-wide lock ([`serial`]) for its
//!   whole life, so tests that start agents never overlap in one test binary (cargo runs the
//!   test binaries one after another); they share nothing else (temp dirs, port 0).
//! - **Nothing left behind.** Agents are killed and reaped on drop (a panicking test included),
//!   subscriptions closed, temp dirs removed, network namespaces deleted ([`netns`]).
//!
//! Faults come from the agents' own test control (`hearsay agent --test-control`, the API's
//! `/v1/test/control`): [`Cluster::partition`] cuts every link between groups at the sending
//! socket, [`Cluster::heal`] restores them. [`netns`] puts agents in network namespaces for
//! partitions made by taking links down.

mod agent;
mod cluster;
mod http;
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use agent::{Agent, AgentSpec, Member, Published, Ready};
pub use cluster::CONVERGE_WITHIN;
pub use cluster::Cluster;
pub use http::{Account, Gap, Message, Reply, Subscription};

/// The `hearsay` binary: `$HEARSAY_BIN`, or the one cargo built beside this test.
pub fn binary() -> PathBuf {
    built_binary("hearsay", "HEARSAY_BIN", "hearsay")
}

/// A binary of this workspace, checked to be newer than the sources it is built from (testing
/// a stale binary would test old code).
fn built_binary(name: &str, env: &str, package: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p {package}`, same profile) or set {env}",
        bin.display()
    );
    // Cargo's dep-info next to the binary lists every source file it was built from.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let deps = std::fs::read_to_string(dir.join(format!("{name}.d"))).unwrap_or_default();
    let sources = deps.split_once(": ").map_or("", |(_, s)| s);
    let newest = sources
        .split_whitespace()
        .filter(|f| f.ends_with(".rs"))
        .filter_map(|f| modified(Path::new(f)).map(|m| (m, f)))
        .max();
    if let (Some((src, file)), Some(b)) = (newest, modified(&bin)) {
        assert!(
            b >= src,
            "{} is older than {file}: rebuild it (`cargo build -p {package}`, same profile) or run the \
             whole suite with `cargo test --workspace`",
            bin.display()
        );
    }
    bin
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(label: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("hearsay-test-{label}-{}-{nanos}-{n}", std::process::id()));
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
        if std::thread::panicking() {
            // A failed test's agents' logs and data dirs are what tells why: kept, and said where.
            eprintln!("kept for a look: {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Make a cluster secret with `hearsay keygen`.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = run(Command::new(binary()).arg("keygen").arg("--out").arg(&path), Duration::from_secs(20));
    assert!(out.status.success(), "keygen failed: {}", out.stderr);
    path
}

/// Tests that start agents (or other heavy processes) run one at a time: on a 2-core machine
/// several clusters at once would turn every timing bound into noise. [`Cluster`] holds this
/// for its life; a test that runs `hearsay demo`, `bench` or `hearsay-sim` holds it itself.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Poll `probe` every 50 ms until it gives `Ok`; panic after `within` naming `what` and the
/// last reason `probe` gave for not being done.
pub fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        let why = match probe() {
            Ok(v) => return v,
            Err(why) => why,
        };
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for {what}; last seen: {why}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout (lossy UTF-8).
    pub stdout: String,
    /// Its stderr (lossy UTF-8).
    pub stderr: String,
}

/// Run `cmd` to completion with stdin closed; kill it and panic if it takes longer than
/// `within`.
pub fn run(cmd: &mut Command, within: Duration) -> Output {
    run_with_input(cmd, None, within)
}

/// [`run`], writing `input` to the command's stdin first.
pub fn run_with_input(cmd: &mut Command, input: Option<&str>, within: Duration) -> Output {
    use std::io::{Read, Write};
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let text = text.to_string();
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = pipe(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!("{shown} did not finish within {within:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// The lines of a metrics text whose series is `name` (with any labels), summed.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of one series of a metrics text, `name{labels}` exactly as encoded (or `name`);
/// `None` when absent.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

/// A long-running command (`hearsay subscribe`, an agent started by hand) whose stdout lines
/// and stderr are collected in the background; killed and reaped on drop.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Background {
    /// Start `cmd` with stdin closed.
    pub fn spawn(cmd: &mut Command) -> Background {
        use std::io::{BufRead, Read};
        let shown = format!("{cmd:?}");
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
        let stdout: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        if let Some(out) = child.stdout.take() {
            let sink = stdout.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        if let Some(mut err) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Background { child: Some(child), stdout, stderr }
    }

    /// Its stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Wait (bounded) for it to exit by itself; its status, or `None` if it still runs.
    pub fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Send SIGTERM to process `pid` (an agent leaves gracefully on it).
pub fn sigterm(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
}
