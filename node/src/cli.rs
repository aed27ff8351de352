//! The client side of the CLI: thin commands over the agent's local HTTP API.
//!
//! Every read command prints a table, or with `--json` the API's JSON (one document, or one
//! object per line for streams), so scripts can rely on it.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;

use crate::api::types::*;
use crate::message::TopicName;
use hearsay_protocols::aggregate::Func;

/// Where the agent's API listens when nothing says otherwise.
pub const DEFAULT_API: &str = "127.0.0.1:7070";

/// A connection to one agent's API.
pub struct Client {
    base: String,
    /// Sent as `Authorization: Bearer` on every request when the agent has a token.
    token: Option<String>,
    agent: ureq::Agent,
    /// For streams: no overall timeout.
    streaming: ureq::Agent,
}

impl Client {
    /// A client for the API at `addr` (`host:port` or `http://host:port`).
    pub fn new(addr: &str) -> Client {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let build = |global: Option<Duration>| {
            ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_connect(Some(Duration::from_secs(5)))
                    .timeout_global(global)
                    .build(),
            )
        };
        Client { base, token: None, agent: build(Some(Duration::from_secs(90))), streaming: build(None) }
    }

    /// Send `token` (the agent's `--api-token-file`) with every request.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// The `Authorization` header's value, or `""` for none.
    fn bearer(&self) -> String {
        self.token.as_ref().map_or_else(String::new, |t| format!("Bearer {t}"))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the agent's API at {}: {e}\n(is `hearsay agent` running there? set --api or HEARSAY_API)",
            self.base
        )
    }

    fn finish<T: serde::de::DeserializeOwned>(mut resp: http_response::Response) -> Result<T> {
        let status = resp.status();
        if status.is_success() {
            return resp.body_mut().read_json::<T>().context("the agent answered with unexpected JSON");
        }
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        let msg = serde_json::from_str::<ErrorReply>(&body).map(|e| e.error).unwrap_or(body);
        bail!("{msg} (HTTP {})", status.as_u16())
    }

    /// GET a JSON document.
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let mut req = self.agent.get(&self.url(path));
        if self.token.is_some() {
            req = req.header("authorization", self.bearer());
        }
        let resp = req.call().map_err(|e| self.unreachable(e))?;
        Self::finish(resp)
    }

    /// POST a JSON body, get a JSON document.
    pub fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        // send_json says `Content-Type: application/json`, which the API requires of a POST.
        let mut req = self.agent.post(&self.url(path));
        if self.token.is_some() {
            req = req.header("authorization", self.bearer());
        }
        let resp = req.send_json(body).map_err(|e| self.unreachable(e))?;
        Self::finish(resp)
    }

    /// Open a subscription and call `each` for every item until the stream ends or `each`
    /// returns false.
    pub fn subscribe(
        &self,
        topic: &TopicName,
        filter: Option<&str>,
        expire: Option<f64>,
        mut each: impl FnMut(StreamItem) -> Result<bool>,
    ) -> Result<()> {
        let mut req = self.streaming.get(&self.url("/v1/subscribe")).query("topic", topic.as_str());
        if let Some(f) = filter {
            req = req.query("filter", f);
        }
        if let Some(e) = expire {
            req = req.query("expire", e.to_string());
        }
        if self.token.is_some() {
            req = req.header("authorization", self.bearer());
        }
        let mut resp = req.call().map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Self::finish::<serde_json::Value>(resp).map(|_| ());
        }
        let reader = std::io::BufReader::new(resp.body_mut().as_reader());
        for line in reader.lines() {
            let line = line.context("the subscription stream broke")?;
            if line.trim().is_empty() {
                continue;
            }
            let item: StreamItem =
                serde_json::from_str(&line).context("unexpected line in the subscription stream")?;
            if !each(item)? {
                break;
            }
        }
        Ok(())
    }
}

/// ureq's response type, named once.
mod http_response {
    pub(crate) type Response = ureq::http::Response<ureq::Body>;
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(16)]
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// `hearsay members`.
pub fn members(c: &Client, json: bool) -> Result<()> {
    let members: Vec<Member> = c.get("/v1/members")?;
    if json {
        return print_json(&members);
    }
    println!(
        "{:<16} {:<22} {:<8} {:>11}  {:<16}  {:<16}",
        "NAME", "ADDRESS", "STATE", "INCARNATION", "ID", "RING ID"
    );
    for m in members {
        println!(
            "{:<16} {:<22} {:<8} {:>11}  {:<16}  {:<16}",
            m.name,
            m.addr,
            m.state,
            m.incarnation,
            short(&m.id),
            short(&m.ring_id)
        );
    }
    Ok(())
}

/// `hearsay status`: fails (exit 1) when the agent's API does not answer, so it also serves
/// as a health check (the Dockerfile's `HEALTHCHECK`).
pub fn status(c: &Client, json: bool) -> Result<()> {
    let s: Status = c.get("/v1/status")?;
    if json {
        return print_json(&s);
    }
    println!("name     {}", s.name);
    println!("id       {}", s.id);
    println!("address  {}", s.addr);
    println!("members  {} alive or suspect (this one included)", s.members);
    println!("uptime   {:.0} s", s.uptime_s);
    Ok(())
}

/// Parse `--header k=v` flags.
pub fn parse_headers(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("header `{p}` is not NAME=VALUE"))?;
            Ok((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// `hearsay publish TOPIC [MSG]` (stdin lines when MSG is absent).
pub fn publish(
    c: &Client,
    topic: TopicName,
    msg: Option<&str>,
    headers: &[String],
    json: bool,
) -> Result<()> {
    let headers = parse_headers(headers)?;
    let send = |text: &str| -> Result<()> {
        let req = PublishRequest {
            topic: topic.clone(),
            payload: Some(text.to_string()),
            payload_b64: None,
            headers: headers.clone(),
        };
        let p: Published = c.post("/v1/publish", &req)?;
        if let Some(w) = &p.warning {
            eprintln!("warning: {w}");
        }
        if json {
            return print_json(&p);
        }
        println!("{} {} seq {} ({} subscribers known)", p.topic, short(&p.origin), p.seq, p.subscribers);
        Ok(())
    };
    match msg {
        Some(m) => send(m),
        None => {
            for line in std::io::stdin().lock().lines() {
                send(&line.context("reading stdin")?)?;
            }
            Ok(())
        }
    }
}

/// `hearsay subscribe TOPIC`.
pub fn subscribe(
    c: &Client,
    topic: &TopicName,
    filter: Option<&str>,
    expire: Option<f64>,
    json: bool,
) -> Result<()> {
    c.subscribe(topic, filter, expire, |item| {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer(&mut out, &item)?;
            writeln!(out)?;
        } else {
            match item {
                StreamItem::Message(d) => {
                    let body = match (&d.payload, &d.payload_b64) {
                        (Some(t), _) => t.clone(),
                        (None, Some(b)) => format!(
                            "<{} bytes, base64 {b}>",
                            base64::engine::general_purpose::STANDARD.decode(b).map_or(0, |v| v.len())
                        ),
                        (None, None) => String::new(),
                    };
                    writeln!(out, "{} {}:{} {body}", d.topic, short(&d.origin), d.seq)?;
                }
                StreamItem::Gap { gap } => {
                    writeln!(
                        out,
                        "{} {} GAP seq {}..={} (no longer available)",
                        gap.topic,
                        short(&gap.origin),
                        gap.from_seq,
                        gap.to_seq
                    )?;
                }
                StreamItem::Closed { closed } => {
                    eprintln!("subscription closed by the agent: {}", closed.reason);
                }
            }
        }
        out.flush()?;
        Ok(true)
    })
}

/// `hearsay query FN NAME`.
pub fn query(c: &Client, func: Func, name: &str, json: bool) -> Result<()> {
    let r: QueryResult = c.post("/v1/query", &QueryRequest { func, name: name.to_string() })?;
    if json {
        return print_json(&r);
    }
    let value = r.value.map_or("none (no node has this value)".to_string(), |v| format!("{v}"));
    let how = if r.converged { "converged" } else { "did NOT converge" };
    let func = r.func.name();
    println!("{func} {} = {value}  ({how} after {} rounds, {} nodes in view)", r.name, r.rounds, r.nodes);
    Ok(())
}

/// `hearsay value set NAME X`.
pub fn set_value(c: &Client, name: &str, value: f64) -> Result<()> {
    if !value.is_finite() {
        bail!("the value must be a finite number");
    }
    let _: serde_json::Value = c.post("/v1/values", &SetValue { name: name.to_string(), value })?;
    Ok(())
}

/// `hearsay topics`.
pub fn topics(c: &Client, json: bool) -> Result<()> {
    let topics: Vec<TopicInfo> = c.get("/v1/topics")?;
    if json {
        return print_json(&topics);
    }
    println!(
        "{:<24} {:<10} {:>5} {:>7} {:>6}  {:<16} {:>8}",
        "TOPIC", "ROLE", "SUBS", "MEMBERS", "DEPTH", "PARENT", "CHILDREN"
    );
    for t in topics {
        println!(
            "{:<24} {:<10} {:>5} {:>7} {:>6}  {:<16} {:>8}",
            t.topic,
            t.role,
            t.subscribers,
            t.members,
            t.depth.map_or("-".into(), |d| d.to_string()),
            t.parent.as_deref().map_or("-", short),
            t.children.len()
        );
    }
    Ok(())
}

/// `hearsay ring`.
pub fn ring(c: &Client, json: bool) -> Result<()> {
    let r: RingInfo = c.get("/v1/ring")?;
    if json {
        return print_json(&r);
    }
    let show = |p: &RingPeer| format!("{} (node {})", short(&p.ring_id), short(&p.id));
    println!("me           {}", show(&r.me));
    println!("predecessor  {}", r.predecessor.as_ref().map_or("-".into(), show));
    for (i, s) in r.successors.iter().enumerate() {
        println!("successor {i:<2} {}", show(s));
    }
    for (i, f) in r.fingers.iter().enumerate() {
        println!("finger {i:<5} {}", show(f));
    }
    Ok(())
}
