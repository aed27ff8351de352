//! `hearsay demo`: a whole cluster on loopback in this process, live.
//!
//! N agents start (real QUIC, admission, Engines), form a cluster from one seed, subscribe,
//! and publish a steady stream under injected loss; a third of the way in one subscriber is
//! killed without a goodbye and the others detect it; halfway an aggregation query runs; at
//! the end every surviving subscriber's deliveries are checked (everything, or an explicit
//! gap), the agents leave, and the process exits.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearsay_protocols::aggregate::Func;
use tokio::sync::mpsc;

use crate::agent::Command;
use crate::agent::{self, AgentHandle, AgentOptions};
use crate::api::types::{StreamItem, hex};
use crate::config::Preset;
use crate::message::{AppMessage, TopicName};
use crate::transport::faulty::Faults;
use crate::transport::identity::ClusterSecret;

/// What to show.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Agents to start.
    pub nodes: usize,
    /// Fraction of UDP datagrams each agent drops.
    pub loss: f64,
    /// Seconds of publishing.
    pub duration: Duration,
    /// Messages published per second (spread over the publishers).
    pub rate: u32,
}

#[derive(Default)]
struct Received {
    messages: BTreeMap<(String, u64), String>,
    gaps: u64,
    out_of_order: u64,
    last_seq: BTreeMap<String, u64>,
}

async fn alive_count(h: &AgentHandle) -> usize {
    h.ask(Command::Members).await.map_or(0, |m| m.iter().filter(|m| m.state == "alive").count())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Screen {
    live: bool,
    start: Instant,
}

impl Screen {
    fn say(&self, line: &str) {
        let t = self.start.elapsed().as_secs_f64();
        if self.live {
            print!("\r\x1b[2K");
        }
        println!("[{t:5.1}s] {line}");
    }

    fn status(&self, line: &str) {
        if self.live {
            print!("\r\x1b[2K        {line}");
            let _ = std::io::stdout().flush();
        }
    }
}

/// Run the demo; returns an error if a surviving subscriber lost a message silently.
pub async fn run(opts: DemoOptions) -> Result<()> {
    if opts.nodes < 3 {
        bail!("the demo needs at least 3 nodes (--nodes)");
    }
    if !(0.0..0.5).contains(&opts.loss) {
        bail!("--loss must be in [0, 0.5)");
    }
    let screen = Screen { live: std::io::stdout().is_terminal(), start: Instant::now() };
    let n = opts.nodes;
    screen.say(&format!(
        "starting {n} agents on 127.0.0.1 (QUIC, mutual TLS under one cluster secret, {:.0}% datagram loss injected)",
        opts.loss * 100.0
    ));
    let secret = ClusterSecret::generate()?;
    let mut agents: Vec<Option<AgentHandle>> = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for i in 0..n {
        let faults = Faults::none();
        faults.set_loss(opts.loss);
        let mut o = AgentOptions::new(&format!("n{i}"), "127.0.0.1:0".parse()?, secret.clone());
        o.preset = Preset::Local;
        o.faults = faults;
        o.join = seed.into_iter().collect();
        let h = agent::spawn(o).await?;
        seed.get_or_insert(h.addr);
        agents.push(Some(h));
    }
    // Formation.
    let formed = loop {
        let mut full = 0;
        for h in agents.iter().flatten() {
            if alive_count(h).await == n {
                full += 1;
            }
        }
        screen.status(&format!("membership: {full}/{n} agents see all {n} alive"));
        if full == n {
            break screen.start.elapsed();
        }
        if screen.start.elapsed() > Duration::from_secs(30) {
            bail!("the cluster did not form within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    screen.say(&format!(
        "cluster formed: every agent sees {n} members alive after {:.2} s",
        formed.as_secs_f64()
    ));

    // Subscribers: every other node; publishers: n0 and n1.
    let topic = TopicName::new("news")?;
    let received: Vec<Arc<Mutex<Received>>> = (0..n).map(|_| Arc::default()).collect();
    let mut subscribers = Vec::new();
    for i in (0..n).filter(|i| i % 2 == 0 || *i == n - 1) {
        let h = agents[i].as_ref().context("agent")?;
        let (sink, mut items) = mpsc::channel(8192);
        h.ask(|reply| Command::Subscribe { topic: topic.clone(), options: Default::default(), sink, reply })
            .await??;
        let store = received[i].clone();
        tokio::spawn(async move {
            while let Some(item) = items.recv().await {
                let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
                let r = &mut *guard;
                match item {
                    StreamItem::Message(d) => {
                        let last = r.last_seq.entry(d.origin.clone()).or_insert(0);
                        if d.seq <= *last {
                            r.out_of_order += 1;
                        }
                        *last = d.seq;
                        r.messages.insert((d.origin, d.seq), d.payload.unwrap_or_default());
                    }
                    StreamItem::Gap { gap } => {
                        r.gaps += gap.to_seq - gap.from_seq + 1;
                        let last = r.last_seq.entry(gap.origin).or_insert(0);
                        *last = gap.to_seq;
                    }
                    StreamItem::Closed { .. } => break,
                }
            }
        });
        subscribers.push(i);
    }
    screen.say(&format!(
        "{} agents subscribed to `{topic}`; n0 and n1 publish {} messages/s",
        subscribers.len(),
        opts.rate
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let victim = *subscribers.last().context("a subscriber")?;
    let crash_at = opts.duration / 3;
    let query_at = opts.duration / 2;
    let publish_start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
    let mut published: BTreeMap<String, u64> = BTreeMap::new();
    let mut crashed_at: Option<Instant> = None;
    let mut detected = false;
    let mut queried = false;
    let mut k = 0u64;
    let mut next_status = Instant::now();
    while publish_start.elapsed() < opts.duration {
        let p = (k % 2) as usize;
        if let Some(h) = agents[p].as_ref() {
            let payload = AppMessage::new(format!("message {k}")).encode()?;
            if let Ok(Ok(id)) = h.ask(|reply| Command::Publish { topic: topic.clone(), payload, reply }).await
            {
                published.insert(hex(&id.origin), id.seq);
            }
        }
        k += 1;
        if crashed_at.is_none() && publish_start.elapsed() >= crash_at {
            if let Some(h) = agents[victim].take() {
                h.crash().await;
            }
            crashed_at = Some(Instant::now());
            screen.say(&format!("killed n{victim} (a subscriber) without a goodbye"));
        }
        if let (Some(t), false) = (crashed_at, detected) {
            if let Some(h) = agents[0].as_ref() {
                let m = h.ask(Command::Members).await.unwrap_or_default();
                if m.iter().any(|m| m.name == format!("n{victim}") && m.state == "dead") {
                    detected = true;
                    screen.say(&format!(
                        "n0 marks n{victim} dead, {:.2} s after the crash (suspicion, then confirmation)",
                        t.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        if !queried && publish_start.elapsed() >= query_at {
            queried = true;
            for (i, h) in agents.iter().enumerate() {
                if let Some(h) = h {
                    let value = (i % 10) as f64 / 10.0;
                    let _ = h.ask(|reply| Command::SetValue { name: "load".into(), value, reply }).await;
                }
            }
            let expected: f64 =
                (0..n).filter(|i| *i != victim).map(|i| (i % 10) as f64 / 10.0).sum::<f64>() / (n - 1) as f64;
            screen.say("query: avg(load) across the cluster, by acknowledged push-sum gossip...");
            let h3 = agents[3 % n].as_ref().context("agent")?;
            let t = Instant::now();
            match h3.ask(|reply| Command::Query { func: Func::Avg, name: "load".into(), reply }).await? {
                Ok(r) => screen.say(&format!(
                    "avg(load) = {:.4} (exact {expected:.4}) over {} nodes in {} rounds, {:.2} s",
                    r.value.unwrap_or(f64::NAN),
                    r.nodes,
                    r.rounds,
                    t.elapsed().as_secs_f64()
                )),
                Err(e) => screen.say(&format!("query failed: {e}")),
            }
        }
        if Instant::now() >= next_status {
            next_status = Instant::now() + Duration::from_millis(250);
            let total: u64 = published.values().sum();
            let got: usize = subscribers
                .iter()
                .filter(|i| **i != victim || crashed_at.is_none())
                .map(|i| received[*i].lock().map_or(0, |r| r.messages.len()))
                .sum();
            let expect =
                total as usize * subscribers.iter().filter(|i| **i != victim || crashed_at.is_none()).count();
            let repairs = match agents[0].as_ref() {
                Some(h) => {
                    h.ask(Command::Metrics).await.map_or(0.0, |t| metric(&t, "hearsay_repairs_served_total"))
                }
                None => 0.0,
            };
            screen.status(&format!(
                "published {total} | delivered {got}/{expect} | repairs served by n0 {repairs:.0} | t {:.0}/{:.0} s",
                publish_start.elapsed().as_secs_f64(),
                opts.duration.as_secs_f64()
            ));
        }
        tokio::time::sleep(interval).await;
    }

    // Drain: repair rounds bring in what loss took.
    let total: u64 = published.values().sum();
    screen.say(&format!("published {total} messages; waiting for repair to finish..."));
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    let survivors: Vec<usize> = subscribers.iter().copied().filter(|i| *i != victim).collect();
    loop {
        let done = survivors.iter().all(|i| {
            let r = received[*i].lock().unwrap_or_else(|p| p.into_inner());
            published.iter().all(|(o, max)| r.last_seq.get(o).copied().unwrap_or(0) >= *max)
        });
        if done || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut silent_loss = 0u64;
    for i in &survivors {
        let r = received[*i].lock().unwrap_or_else(|p| p.into_inner());
        let missing: u64 = published
            .iter()
            .map(|(o, max)| (1..=*max).filter(|s| !r.messages.contains_key(&(o.clone(), *s))).count() as u64)
            .sum();
        let unexplained = missing.saturating_sub(r.gaps);
        silent_loss += unexplained;
        screen.say(&format!(
            "n{i}: {} of {total} delivered, {} announced as gaps, {} out of order, {unexplained} missing without notice",
            r.messages.len(),
            r.gaps,
            r.out_of_order
        ));
    }
    if let Some(h) = agents[0].as_ref() {
        let text = h.ask(Command::Metrics).await.unwrap_or_default();
        screen.say(&format!(
            "n0 sent {:.0} UDP bytes, served {:.0} repairs, dropped {:.0} duplicates",
            metric(&text, "hearsay_udp_bytes_sent_total"),
            metric(&text, "hearsay_repairs_served_total"),
            metric(&text, "hearsay_duplicates_total")
        ));
    }
    screen.say("agents leaving the cluster...");
    let leaving: Vec<_> = agents.into_iter().flatten().map(|h| tokio::spawn(h.shutdown())).collect();
    for l in leaving {
        l.await.context("agent task")??;
    }
    if silent_loss > 0 {
        bail!("{silent_loss} messages were neither delivered nor announced as gaps");
    }
    screen.say("done: every surviving subscriber got every message, in order per publisher");
    Ok(())
}
