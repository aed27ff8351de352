//! `hearsay demo`: a whole cluster on loopback in this process, live.
//!
//! N agents start (real QUIC, admission, Engines), form a cluster from one seed, subscribe,
//! and publish a steady stream under injected loss; a third of the way in one subscriber is
//! killed without a goodbye and the others detect it; halfway an aggregation query runs; at
//! the end every surviving subscriber's deliveries are checked by seq against what was
//! published (each message delivered or announced as a gap, once, in order; anything else is
//! counted as out of order, duplicated or missing without notice), the agents leave, and the
//! process exits: with status 1 when that check failed.

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

/// What one subscriber received, by origin and seq, in arrival order.
#[derive(Debug, Default)]
struct Tally {
    /// Per origin: seqs delivered, seqs announced as gaps, the highest seq seen so far.
    streams: BTreeMap<String, Stream>,
    /// Messages or gaps that came after a higher seq of their origin.
    out_of_order: u64,
    /// Seqs delivered (or announced) more than once.
    duplicates: u64,
}

#[derive(Debug, Default)]
struct Stream {
    delivered: std::collections::BTreeSet<u64>,
    gapped: std::collections::BTreeSet<u64>,
    position: u64,
}

impl Tally {
    /// Record one stream item.
    fn record(&mut self, item: &StreamItem) {
        let (origin, from, to, delivered) = match item {
            StreamItem::Message(d) => (&d.origin, d.seq, d.seq, true),
            StreamItem::Gap { gap } => (&gap.origin, gap.from_seq, gap.to_seq, false),
            StreamItem::Closed { .. } => return,
        };
        let s = self.streams.entry(origin.clone()).or_default();
        if from <= s.position {
            self.out_of_order += 1;
        }
        s.position = s.position.max(to);
        for seq in from..=to {
            let again = s.delivered.contains(&seq) || s.gapped.contains(&seq);
            self.duplicates += u64::from(again);
            if delivered {
                s.delivered.insert(seq);
            } else {
                s.gapped.insert(seq);
            }
        }
    }

    /// Every seq `1..=max` of every publisher in `published` (origin → last seq), accounted.
    fn account(&self, published: &BTreeMap<String, u64>) -> Account {
        let mut a =
            Account { out_of_order: self.out_of_order, duplicates: self.duplicates, ..Account::default() };
        let empty = Stream::default();
        for (origin, max) in published {
            let s = self.streams.get(origin).unwrap_or(&empty);
            for seq in 1..=*max {
                if s.delivered.contains(&seq) {
                    a.delivered += 1;
                } else if s.gapped.contains(&seq) {
                    a.gapped += 1;
                } else {
                    a.silent += 1;
                }
            }
            a.expected += max;
        }
        a
    }
}

/// How one subscriber's deliveries measure against what was published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Account {
    /// Messages published (the sum of the publishers' last seqs).
    expected: u64,
    /// Of those, delivered.
    delivered: u64,
    /// Of those, announced as gaps.
    gapped: u64,
    /// Of those, neither: lost without notice.
    silent: u64,
    /// Items that came after a higher seq of their origin.
    out_of_order: u64,
    /// Seqs delivered or announced more than once.
    duplicates: u64,
}

impl Account {
    /// What the demo promises: every message delivered or announced, once, in order.
    fn holds(&self) -> bool {
        self.silent == 0 && self.out_of_order == 0 && self.duplicates == 0
    }
}

/// The closing line over every surviving subscriber's account, and whether the check held.
fn verdict(accounts: &[(usize, Account)]) -> (String, bool) {
    let sum = accounts.iter().fold(Account::default(), |t, (_, a)| Account {
        expected: t.expected + a.expected,
        delivered: t.delivered + a.delivered,
        gapped: t.gapped + a.gapped,
        silent: t.silent + a.silent,
        out_of_order: t.out_of_order + a.out_of_order,
        duplicates: t.duplicates + a.duplicates,
    });
    let ok = accounts.iter().all(|(_, a)| a.holds());
    let line = format!(
        "{}: {} surviving subscribers, {} (subscriber, message) pairs by seq: {} delivered, {} announced as gaps, \
         {} out of order, {} duplicated, {} missing without notice",
        if ok { "done" } else { "check FAILED" },
        accounts.len(),
        sum.expected,
        sum.delivered,
        sum.gapped,
        sum.out_of_order,
        sum.duplicates,
        sum.silent
    );
    (line, ok)
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

#[derive(Clone, Copy)]
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

/// Run the demo; an error if the cluster did not form or the closing check failed.
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
    let received: Vec<Arc<Mutex<Tally>>> = (0..n).map(|_| Arc::default()).collect();
    let mut subscribers = Vec::new();
    for i in (0..n).filter(|i| i % 2 == 0 || *i == n - 1) {
        let h = agents[i].as_ref().context("agent")?;
        let (sink, mut items) = mpsc::channel(8192);
        h.ask(|reply| Command::Subscribe { topic: topic.clone(), options: Default::default(), sink, reply })
            .await??;
        let store = received[i].clone();
        tokio::spawn(async move {
            while let Some(item) = items.recv().await {
                if matches!(item, StreamItem::Closed { .. }) {
                    break;
                }
                store.lock().unwrap_or_else(|p| p.into_inner()).record(&item);
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
    let mut query: Option<tokio::task::JoinHandle<()>> = None;
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
            // n3 asks (n1 when n3 is the subscriber that was killed, with 4 nodes).
            let querier = if 3 % n == victim { 1 } else { 3 % n };
            let commands =
                agents[querier].as_ref().context("the querying agent is running")?.commands.clone();
            // Answered while the publishing goes on.
            query = Some(tokio::spawn(async move {
                let t = Instant::now();
                let (reply, answer) = tokio::sync::oneshot::channel();
                let asked =
                    Command::Query { func: Func::Avg, name: "load".into(), scope: Default::default(), reply };
                if commands.send(asked).await.is_err() {
                    return;
                }
                match answer.await {
                    Ok(Ok(r)) => screen.say(&format!(
                        "avg(load) = {:.4} (exact {expected:.4}) over {} nodes in {} rounds, {:.2} s",
                        r.value.unwrap_or(f64::NAN),
                        r.nodes,
                        r.rounds,
                        t.elapsed().as_secs_f64()
                    )),
                    Ok(Err(e)) => screen.say(&format!("query failed: {e}")),
                    Err(_) => screen.say("query failed: the agent stopped"),
                }
            }));
        }
        if Instant::now() >= next_status {
            next_status = Instant::now() + Duration::from_millis(250);
            let total: u64 = published.values().sum();
            let got: usize = subscribers
                .iter()
                .filter(|i| **i != victim || crashed_at.is_none())
                .map(|i| received[*i].lock().map_or(0, |r| r.account(&published).delivered as usize))
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
        // On a fixed schedule: after a slow step (the query waits for its answer) the loop
        // catches up, so the rate announced is the rate published.
        tokio::time::sleep_until((publish_start + interval * (k as u32)).into()).await;
    }

    // Drain: repair rounds bring in what loss took.
    let total: u64 = published.values().sum();
    screen.say(&format!("published {total} messages; waiting for repair to finish..."));
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    let survivors: Vec<usize> = subscribers.iter().copied().filter(|i| *i != victim).collect();
    loop {
        let done = survivors.iter().all(|i| {
            let a = received[*i].lock().unwrap_or_else(|p| p.into_inner()).account(&published);
            a.delivered + a.gapped >= a.expected
        });
        if done || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(q) = query {
        // Bounded: a query answers within its round cap (200 rounds of 200 ms).
        let _ = tokio::time::timeout(Duration::from_secs(60), q).await;
    }
    let mut accounts = Vec::new();
    for i in &survivors {
        let a = received[*i].lock().unwrap_or_else(|p| p.into_inner()).account(&published);
        screen.say(&format!(
            "n{i}: {} of {} delivered, {} announced as gaps, {} out of order, {} duplicated, {} missing without notice",
            a.delivered, a.expected, a.gapped, a.out_of_order, a.duplicates, a.silent
        ));
        accounts.push((*i, a));
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
    let (line, ok) = verdict(&accounts);
    screen.say(&line);
    if !ok {
        bail!(
            "the demo's own check failed: every message must be delivered or announced as a gap, once, in order"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{Delivery, Gap};

    fn msg(origin: &str, seq: u64) -> StreamItem {
        StreamItem::Message(Delivery {
            topic: "news".into(),
            origin: origin.into(),
            seq,
            payload: Some(format!("m{seq}")),
            payload_b64: None,
            headers: BTreeMap::new(),
        })
    }

    fn gap(origin: &str, from_seq: u64, to_seq: u64) -> StreamItem {
        StreamItem::Gap { gap: Gap { topic: "news".into(), origin: origin.into(), from_seq, to_seq } }
    }

    fn tally(items: &[StreamItem]) -> Tally {
        let mut t = Tally::default();
        for i in items {
            t.record(i);
        }
        t
    }

    #[test]
    fn every_seq_is_delivered_announced_or_counted_as_silent_loss() {
        let published = BTreeMap::from([("a".to_string(), 6), ("b".to_string(), 2)]);
        let t = tally(&[msg("a", 1), gap("a", 2, 3), msg("b", 1), msg("a", 4), msg("a", 6)]);
        let a = t.account(&published);
        // a: 1, 4, 6 delivered, 2-3 announced, 5 missing; b: 1 delivered, 2 missing.
        assert_eq!(
            a,
            Account { expected: 8, delivered: 4, gapped: 2, silent: 2, out_of_order: 0, duplicates: 0 }
        );
        assert!(!a.holds(), "silent loss fails the check");
        let (line, ok) = verdict(&[(0, a)]);
        assert!(!ok && line.starts_with("check FAILED: 1 surviving subscribers"), "{line}");
        assert!(line.ends_with("2 missing without notice"), "{line}");
    }

    #[test]
    fn late_and_repeated_items_fail_the_check() {
        let published = BTreeMap::from([("a".to_string(), 3)]);
        let late = tally(&[msg("a", 2), msg("a", 1), msg("a", 3)]).account(&published);
        assert_eq!((late.delivered, late.out_of_order, late.holds()), (3, 1, false));
        let twice = tally(&[msg("a", 1), msg("a", 2), gap("a", 2, 3)]).account(&published);
        assert_eq!((twice.duplicates, twice.out_of_order, twice.holds()), (1, 1, false));
        let fine = tally(&[msg("a", 1), gap("a", 2, 2), msg("a", 3)]).account(&published);
        assert!(fine.holds(), "{fine:?}");
        let (line, ok) = verdict(&[(0, fine), (2, fine)]);
        assert!(ok, "{line}");
        assert_eq!(
            line,
            "done: 2 surviving subscribers, 6 (subscriber, message) pairs by seq: 4 delivered, 2 announced as gaps, \
             0 out of order, 0 duplicated, 0 missing without notice"
        );
    }
}
