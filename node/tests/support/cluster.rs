//! Real agents in this process: [`hearsay::agent::spawn`] on loopback (QUIC under one cluster
//! secret, the `local` timing preset), each with its real HTTP API on its own ephemeral
//! 127.0.0.1 port, so `/metrics` is served exactly as a deployment serves it.
//!
//! A [`Cluster`] owns its tokio runtime, so the blocking test thread can drive it with
//! `block_on` while the runtime's workers keep the agents (and their API servers) running.
//! Dropping it, on every path including a panic, stops the traffic driver, asks every agent
//! to leave (bounded), and shuts the runtime down, which ends the API servers too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hearsay::agent::{self, AgentHandle, AgentOptions, Command};
use hearsay::api::types::{QueryResult, StreamItem};
use hearsay::config::Preset;
use hearsay::message::{AppMessage, TopicName};
use hearsay::transport::identity::ClusterSecret;
use hearsay_protocols::aggregate::Func;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a single command to an agent may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long dropping a [`Cluster`] waits for graceful leaves before crashing the rest.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(4);

/// Agents running in this process; stopped when dropped.
pub(crate) struct Cluster {
    runtime: Option<Runtime>,
    agents: Vec<AgentHandle>,
    /// Messages each agent's subscriptions received (all its topics together).
    received: Vec<Arc<AtomicU64>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Send `make(reply)` to an agent and await the reply.
async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    let exchange = async {
        commands.send(make(tx)).await.map_err(|_| "agent stopped".to_string())?;
        rx.await.map_err(|_| "agent stopped without replying".to_string())
    };
    tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("agent did not answer within {COMMAND_TIMEOUT:?}"))?
}

impl Cluster {
    /// Start `n` agents named `{prefix}0..`; with `join`, every agent after the first joins
    /// the first, and this returns once every agent sees all `n` alive (or fails at
    /// `deadline`). Without `join`, each agent is a cluster of one.
    pub(crate) fn start(prefix: &str, n: usize, join: bool, deadline: Instant) -> Result<Cluster, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("{prefix}-agents"))
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let mut cluster =
            Cluster { runtime: None, agents: Vec::new(), received: Vec::new(), tasks: Vec::new() };
        let secret = ClusterSecret::generate().map_err(|e| format!("cluster secret: {e}"))?;
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        for i in 0..n {
            let mut o = AgentOptions::new(&format!("{prefix}{i}"), loopback(0), secret.clone());
            o.preset = Preset::Local;
            o.api = Some(loopback(0));
            if join {
                o.join = cluster.agents.first().map(|a| a.addr).into_iter().collect();
            }
            let spawned = runtime.block_on(agent::spawn(o));
            match spawned {
                Ok(h) => {
                    cluster.agents.push(h);
                    cluster.received.push(Arc::default());
                }
                Err(e) => {
                    cluster.runtime = Some(runtime);
                    return Err(format!("agent {prefix}{i} did not start: {e:#}"));
                }
            }
        }
        cluster.runtime = Some(runtime);
        if join {
            cluster.wait("every agent to see all agents alive", deadline, |c| {
                let mut full = 0;
                for a in &c.agents {
                    let members = c.block_on(ask(&a.commands, Command::Members))?;
                    full += usize::from(members.iter().filter(|m| m.state == "alive").count() == n);
                }
                Ok(full == n)
            })?;
        }
        Ok(cluster)
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("the runtime lives until the cluster is dropped")
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime().block_on(f)
    }

    /// The agents' API addresses (where `/metrics` is served), in agent order.
    pub(crate) fn api_addrs(&self) -> Vec<SocketAddr> {
        self.agents.iter().filter_map(|a| a.api).collect()
    }

    /// Poll `done` every 100 ms until it holds; an error naming `what` at `deadline`.
    pub(crate) fn wait(
        &self,
        what: &str,
        deadline: Instant,
        mut done: impl FnMut(&Cluster) -> Result<bool, String>,
    ) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let last = done(self);
            if let Ok(true) = last {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let why = match last {
                    Err(e) => format!(" (last try: {e})"),
                    _ => String::new(),
                };
                return Err(format!(
                    "timed out after {:.1} s waiting for {what}{why}",
                    started.elapsed().as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Subscribe agent `i` to `topic`; deliveries are counted in [`Cluster::received`].
    pub(crate) fn subscribe(&mut self, i: usize, topic: &str) -> Result<(), String> {
        let (sink, mut items) = mpsc::channel(4096);
        let commands = self.agents[i].commands.clone();
        let topic = TopicName::new(topic).map_err(|e| e.to_string())?;
        self.block_on(ask(&commands, |reply| Command::Subscribe {
            topic,
            options: Default::default(),
            sink,
            reply,
        }))?
        .map_err(|e| e.to_string())?;
        let count = self.received[i].clone();
        let drain = self.runtime().spawn(async move {
            while let Some(item) = items.recv().await {
                match item {
                    StreamItem::Message(_) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    StreamItem::Closed { .. } => break,
                    StreamItem::Gap { .. } => {}
                }
            }
        });
        self.tasks.push(drain);
        Ok(())
    }

    /// Messages agent `i`'s subscriptions have received.
    pub(crate) fn received(&self, i: usize) -> u64 {
        self.received[i].load(Ordering::Relaxed)
    }

    /// Publish `payload` on `topic` from agent `i`.
    pub(crate) fn publish(&self, i: usize, topic: &str, payload: &str) -> Result<(), String> {
        let topic = TopicName::new(topic).map_err(|e| e.to_string())?;
        let payload = AppMessage::new(payload.to_string()).encode().map_err(|e| e.to_string())?;
        let published =
            self.block_on(ask(&self.agents[i].commands, |reply| Command::Publish { topic, payload, reply }))?;
        published.map(drop).map_err(|e| e.to_string())
    }

    /// Set agent `i`'s value of `name`.
    pub(crate) fn set_value(&self, i: usize, name: &str, value: f64) -> Result<(), String> {
        let name = name.to_string();
        let set =
            self.block_on(ask(&self.agents[i].commands, |reply| Command::SetValue { name, value, reply }))?;
        set.map_err(|e| e.to_string())
    }

    /// Run the aggregation query `func(name)` from agent `i` and wait for its answer.
    pub(crate) fn query(&self, i: usize, func: Func, name: &str) -> Result<QueryResult, String> {
        let name = name.to_string();
        let answer =
            self.block_on(ask(&self.agents[i].commands, |reply| Command::Query { func, name, reply }))?;
        answer.map_err(|e| e.to_string())
    }

    /// Agent `i`'s metrics text, as `/metrics` serves it.
    pub(crate) fn metrics(&self, i: usize) -> Result<String, String> {
        self.block_on(ask(&self.agents[i].commands, Command::Metrics))
    }

    /// Keep traffic flowing until the cluster is dropped: every `every`, agent `k mod
    /// publishers` publishes on each of `topics`; every tenth time, the last agent runs
    /// `avg(name)` (not awaited by the publishing loop).
    pub(crate) fn keep_busy(&mut self, publishers: usize, topics: &[&str], name: &str, every: Duration) {
        let commands: Vec<_> = self.agents.iter().map(|a| a.commands.clone()).collect();
        let topics: Vec<TopicName> = topics.iter().filter_map(|t| TopicName::new(*t).ok()).collect();
        let name = name.to_string();
        let driver = self.runtime().spawn(async move {
            let Some(querier) = commands.last().cloned() else { return };
            let mut tick = tokio::time::interval(every);
            for k in 0u64.. {
                tick.tick().await;
                let from = &commands[(k as usize) % publishers.clamp(1, commands.len())];
                for topic in &topics {
                    let Ok(payload) = AppMessage::new(format!("busy {k}")).encode() else { continue };
                    let _ =
                        ask(from, |reply| Command::Publish { topic: topic.clone(), payload, reply }).await;
                }
                if k % 10 == 0 {
                    let (querier, name) = (querier.clone(), name.clone());
                    tokio::spawn(async move {
                        let _ = ask(&querier, |reply| Command::Query { func: Func::Avg, name, reply }).await;
                    });
                }
            }
        });
        self.tasks.push(driver);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else { return };
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let agents: Vec<AgentHandle> = self.agents.drain(..).collect();
        let started = Instant::now();
        runtime.block_on(async move {
            // One at a time, so each leave is acknowledged by peers still running; bounded,
            // and a crash for whatever does not leave in time.
            for mut a in agents {
                if started.elapsed() < LEAVE_TIMEOUT {
                    a.request_leave();
                    let per_agent =
                        LEAVE_TIMEOUT.saturating_sub(started.elapsed()).min(Duration::from_secs(2));
                    if tokio::time::timeout(per_agent, a.stopped()).await.is_ok() {
                        continue;
                    }
                }
                a.crash().await;
            }
        });
        // Ends whatever is left: API servers, subscription drains, a leave that hung.
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
}
