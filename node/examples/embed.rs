//! Three hearsay agents in one program, through the embedding API (`hearsay::embed`), no HTTP:
//! they form a cluster over QUIC on loopback, subscribe to a topic, each publishes three
//! messages and receives all nine, they aggregate a value, and one leaves while another
//! watches it go.
//!
//! ```sh
//! cargo run --example embed
//! ```
//!
//! `node/tests/embed.rs` runs [`run`] and checks its [`Report`].

use std::collections::BTreeSet;
use std::error::Error;
use std::time::Duration;

use hearsay::embed::{Agent, ClusterSecret, Event, Func, Item, MemberChange, Preset};

/// Messages each agent publishes.
pub const MESSAGES_EACH: usize = 3;

/// What happened, for the test to check.
#[derive(Debug)]
pub struct Report {
    /// Per agent: the bodies it received, in the order they came.
    pub received: Vec<(String, Vec<String>)>,
    /// Subscribers the last publish of each agent knew of.
    pub subscribers_known: Vec<usize>,
    /// The cluster's average of `load` (1, 2 and 3): 2.
    pub avg_load: Option<f64>,
    /// The first agent saw the third one leave (an event).
    pub leave_seen: bool,
}

/// A bounded wait: `what` must happen within `secs` seconds.
async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(secs), f).await.map_err(|_| format!("timed out: {what}"))
}

/// Run the whole story, narrating with `say`.
pub async fn run(say: impl Fn(&str)) -> Result<Report, Box<dyn Error>> {
    // One secret for the cluster; `Agent::builder(..).secret_file(path)` reads one that
    // `hearsay keygen` wrote.
    let secret = ClusterSecret::generate()?;
    let start = |name: &str| Agent::builder(name).secret(secret.clone()).preset(Preset::Local);
    let a = start("a").start().await?;
    let mut events = a.events();
    let b = start("b").join(a.addr()).start().await?;
    let c = start("c").join(a.addr()).start().await?;
    say(&format!("started a on {}, b on {}, c on {} (b and c join through a)", a.addr(), b.addr(), c.addr()));

    // The cluster forms: a sees each member join (itself first).
    let mut joined = BTreeSet::new();
    within(30, "a to see three members", async {
        while joined.len() < 3 {
            match events.next().await {
                Some(Event::Member { change: MemberChange::Join, member }) => {
                    say(&format!("a: {} joined ({})", member.name, member.addr));
                    joined.insert(member.name);
                }
                Some(_) => {}
                None => break,
            }
        }
    })
    .await?;

    let agents = [("a", &a), ("b", &b), ("c", &c)];
    let mut subs = Vec::new();
    for (_, agent) in &agents {
        subs.push(agent.subscribe("chat").await?);
    }
    // Membership carries subscriptions: wait until every agent knows of all three.
    within(30, "every agent to know the three subscribers", async {
        loop {
            let mut all = true;
            for (_, agent) in &agents {
                all &= agent.subscribers("chat").await.is_ok_and(|n| n == 3);
            }
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?;

    let mut subscribers_known = Vec::new();
    for (name, agent) in &agents {
        let mut last = None;
        for k in 1..=MESSAGES_EACH {
            last = Some(agent.publish("chat", format!("{name}{k}")).await?);
        }
        subscribers_known.push(last.map_or(0, |p| p.subscribers));
    }
    say(&format!(
        "each published {MESSAGES_EACH} messages on `chat`; subscribers known: {subscribers_known:?}"
    ));

    let total = agents.len() * MESSAGES_EACH;
    let mut received = Vec::new();
    for ((name, _), sub) in agents.iter().zip(subs.iter_mut()) {
        let mut bodies = Vec::new();
        within(30, &format!("{name} to receive {total} messages"), async {
            while bodies.len() < total {
                match sub.next().await {
                    Some(Item::Message(m)) => bodies.push(String::from_utf8_lossy(&m.body).into_owned()),
                    Some(Item::Gap { origin, from_seq, to_seq }) => {
                        say(&format!("{name}: gap {from_seq}..={to_seq} from {origin}"));
                    }
                    Some(Item::Closed { reason }) => {
                        say(&format!("{name}: subscription closed: {reason}"));
                        break;
                    }
                    Some(_) | None => break,
                }
            }
        })
        .await?;
        say(&format!("{name} received {}", bodies.join(" ")));
        received.push((name.to_string(), bodies));
    }

    for (i, (_, agent)) in agents.iter().enumerate() {
        agent.set_value("load", (i + 1) as f64).await?;
    }
    let answer = within(60, "the avg query", a.query(Func::Avg, "load")).await??;
    say(&format!(
        "avg load = {:?} ({} after {} rounds over {} nodes)",
        answer.value,
        if answer.converged { "converged" } else { "not converged" },
        answer.rounds,
        answer.nodes
    ));

    c.shutdown().await?;
    let leave_seen = within(30, "a to see c leave", async {
        while let Some(e) = events.next().await {
            if let Event::Member { change: MemberChange::Leave, member } = e {
                say(&format!("a: {} left", member.name));
                if member.name == "c" {
                    return true;
                }
            }
        }
        false
    })
    .await?;
    b.shutdown().await?;
    a.shutdown().await?;
    Ok(Report { received, subscribers_known, avg_load: answer.value, leave_seen })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let report = run(|line| println!("{line}")).await?;
    let complete = report.received.iter().all(|(_, r)| r.len() == 3 * MESSAGES_EACH);
    println!("every agent received every message: {complete}");
    Ok(())
}
