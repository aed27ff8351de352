//! The client side of the CLI: thin commands over the agent's local HTTP API.
//!
//! Every read command prints a table, or with `--json` the API's JSON (one document, or one
//! object per line for streams), so scripts can rely on it.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;

use crate::agent::DurableName;
use crate::agent::keys::{KeyList, KeyOpReport};
use crate::api::types::*;
use crate::message::TopicName;
use hearsay_protocols::aggregate::Func;

/// Where the agent's API listens when nothing says otherwise.
pub const DEFAULT_API: &str = "127.0.0.1:7070";

/// A connection to one agent's API.
#[derive(Clone)]
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

    /// DELETE a resource, get a JSON document.
    pub fn delete<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.agent.delete(&self.url(path)).call().map_err(|e| self.unreachable(e))?;
        Self::finish(resp)
    }

    /// Open a subscription and call `each` for every item until the stream ends or `each`
    /// returns false.
    pub fn subscribe(
        &self,
        topic: &TopicName,
        how: &SubscribeArgs<'_>,
        each: impl FnMut(StreamItem) -> Result<bool>,
    ) -> Result<()> {
        let mut req = self.streaming.get(&self.url("/v1/subscribe")).query("topic", topic.as_str());
        if let Some(f) = how.filter {
            req = req.query("filter", f);
        }
        if let Some(e) = how.expire {
            req = req.query("expire", e.to_string());
        }
        if let Some(d) = how.durable {
            req = req.query("durable", d.as_str());
        }
        if let Some(f) = how.from {
            req = req.query("from", f);
        }
        self.read_lines(req, "the subscription stream", each)
    }

    /// Read the JSON lines of the stream at `path`, handing each to `each` until it returns
    /// false or the stream ends.
    pub fn stream<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        each: impl FnMut(T) -> Result<bool>,
    ) -> Result<()> {
        self.read_lines(self.streaming.get(&self.url(path)), "the stream", each)
    }

    /// Send `req` (with the token, if any) and hand each JSON line of the answer to `each`
    /// until it returns false or the stream ends; `what` names the stream in errors.
    fn read_lines<T: serde::de::DeserializeOwned>(
        &self,
        mut req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        what: &str,
        mut each: impl FnMut(T) -> Result<bool>,
    ) -> Result<()> {
        if self.token.is_some() {
            req = req.header("authorization", self.bearer());
        }
        let mut resp = req.call().map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Self::finish::<serde_json::Value>(resp).map(|_| ());
        }
        let reader = std::io::BufReader::new(resp.body_mut().as_reader());
        for line in reader.lines() {
            let line = line.with_context(|| format!("{what} broke"))?;
            if line.trim().is_empty() {
                continue;
            }
            let item: T =
                serde_json::from_str(&line).with_context(|| format!("unexpected line in {what}"))?;
            if !each(item)? {
                break;
            }
        }
        Ok(())
    }
}

/// How to subscribe: the query parameters of `GET /v1/subscribe` beside the topic.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubscribeArgs<'a> {
    /// Only messages whose headers match.
    pub filter: Option<&'a str>,
    /// End after this many seconds.
    pub expire: Option<f64>,
    /// A durable subscription's name.
    pub durable: Option<&'a DurableName>,
    /// Where to start: new, all or an RFC 3339 time.
    pub from: Option<&'a str>,
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
pub fn members(c: &Client, json: bool, tags: &[String]) -> Result<()> {
    let scope = hearsay_protocols::tags::TagScope::parse(tags)?.matcher()?;
    let mut members: Vec<Member> = c.get("/v1/members")?;
    if !tags.is_empty() {
        members
            .retain(|m| hearsay_protocols::tags::Tags::new(m.tags.clone()).is_ok_and(|t| scope.matches(&t)));
    }
    if json {
        return print_json(&members);
    }
    println!(
        "{:<16} {:<22} {:<8} {:>11}  {:<16}  {:<16}  TAGS",
        "NAME", "ADDRESS", "STATE", "INCARNATION", "ID", "RING ID"
    );
    for m in members {
        println!(
            "{:<16} {:<22} {:<8} {:>11}  {:<16}  {:<16}  {}",
            m.name,
            m.addr,
            m.state,
            m.incarnation,
            short(&m.id),
            short(&m.ring_id),
            tag_list(&m.tags)
        );
    }
    Ok(())
}

/// `k=v,k2=v2`.
fn tag_list(tags: &BTreeMap<String, String>) -> String {
    tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
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
        let plural = if p.subscribers == 1 { "" } else { "s" };
        println!(
            "{} {} seq {} ({} subscriber{plural} known)",
            p.topic,
            short(&p.origin),
            p.seq,
            p.subscribers
        );
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

/// A durable subscription's acknowledgements are posted after this many lines...
pub const ACK_EVERY: usize = 64;

/// ...or this long after the first one not yet posted, and when the command ends.
pub const ACK_AFTER: Duration = Duration::from_millis(100);

/// What the acknowledging thread is told.
enum AckNote {
    /// This line (origin hex, seq) was written to stdout.
    Written(String, u64),
    /// Post what is pending now, then say so.
    Flush(mpsc::Sender<()>),
    /// Post what is pending and end.
    Stop,
}

/// The acknowledgements of a durable subscription, posted in batches by a thread (cumulative
/// per origin: the highest seq written covers the earlier ones).
struct Acker {
    tx: mpsc::Sender<AckNote>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acker {
    fn start(c: &Client, durable: &DurableName) -> Acker {
        let (tx, rx) = mpsc::channel();
        let (c, name) = (c.clone(), durable.to_string());
        let thread = std::thread::spawn(move || {
            let mut pending: BTreeMap<String, u64> = BTreeMap::new();
            let mut lines = 0usize;
            let mut oldest: Option<Instant> = None;
            let post = |pending: &mut BTreeMap<String, u64>| {
                if pending.is_empty() {
                    return;
                }
                let acks =
                    std::mem::take(pending).into_iter().map(|(origin, seq)| Cursor { origin, seq }).collect();
                let req = AckRequest { durable: name.clone(), acks };
                if let Err(e) = c.post::<_, serde_json::Value>("/v1/ack", &req) {
                    eprintln!("acknowledgements not taken (they will be delivered again): {e:#}");
                }
            };
            loop {
                let wait =
                    oldest.map_or(Duration::from_secs(3600), |t| ACK_AFTER.saturating_sub(t.elapsed()));
                match rx.recv_timeout(wait) {
                    Ok(AckNote::Written(origin, seq)) => {
                        let s = pending.entry(origin).or_insert(0);
                        *s = (*s).max(seq);
                        lines += 1;
                        oldest.get_or_insert_with(Instant::now);
                        if lines < ACK_EVERY {
                            continue;
                        }
                    }
                    Ok(AckNote::Flush(done)) => {
                        post(&mut pending);
                        let _ = done.send(());
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Ok(AckNote::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                        post(&mut pending);
                        return;
                    }
                }
                post(&mut pending);
                lines = 0;
                oldest = None;
            }
        });
        Acker { tx, thread: Some(thread) }
    }

    /// Post everything pending, from a signal handler's thread: bounded.
    fn flush_from(tx: &mpsc::Sender<AckNote>) {
        let (done, wait) = mpsc::channel();
        if tx.send(AckNote::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
    }

    fn written(&self, origin: &str, seq: u64) {
        let _ = self.tx.send(AckNote::Written(origin.to_string(), seq));
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        // (The signal thread holds a sender too: the channel does not close by itself.)
        let _ = self.tx.send(AckNote::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// On Ctrl-C or SIGTERM: post the pending acknowledgements, then exit (status 130).
fn ack_on_signal(tx: mpsc::Sender<AckNote>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            #[cfg(unix)]
            {
                let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        });
        Acker::flush_from(&tx);
        std::process::exit(130);
    });
}

/// `hearsay subscribe TOPIC`. With a durable name, each line is acknowledged once it has been
/// written to stdout (in batches: [`ACK_EVERY`] lines or [`ACK_AFTER`], and at exit).
pub fn subscribe(c: &Client, topic: &TopicName, how: &SubscribeArgs<'_>, json: bool) -> Result<()> {
    let acker = how.durable.map(|d| Acker::start(c, d));
    if let Some(a) = &acker {
        ack_on_signal(a.tx.clone());
    }
    c.subscribe(topic, how, |item| {
        let mut out = std::io::stdout().lock();
        let written = match &item {
            StreamItem::Message(d) => Some((d.origin.clone(), d.seq)),
            StreamItem::Gap { gap } => Some((gap.origin.clone(), gap.to_seq)),
            StreamItem::Closed { .. } => None,
        };
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
        // Written: only now may it be acknowledged.
        if let (Some(a), Some((origin, seq))) = (&acker, written) {
            a.written(&origin, seq);
        }
        Ok(true)
    })
}

/// `hearsay durable list`.
pub fn durable_list(c: &Client, json: bool) -> Result<()> {
    let list: Vec<DurableInfo> = c.get("/v1/durable")?;
    if json {
        return print_json(&list);
    }
    println!("{:<24} {:<24} {:<9} {:<8}  CURSORS (origin:seq)", "NAME", "TOPIC", "CONNECTED", "SINCE");
    for d in list {
        let cursors: Vec<String> =
            d.cursors.iter().map(|k| format!("{}:{}", short(&k.origin), k.seq)).collect();
        println!(
            "{:<24} {:<24} {:<9} {:<8}  {}",
            d.name,
            d.topic,
            if d.connected { "yes" } else { "no" },
            d.since.as_deref().unwrap_or("-"),
            if cursors.is_empty() { "-".to_string() } else { cursors.join(" ") }
        );
    }
    Ok(())
}

/// `hearsay durable delete NAME`.
pub fn durable_delete(c: &Client, name: &DurableName) -> Result<()> {
    let _: serde_json::Value = c.delete(&format!("/v1/durable/{name}"))?;
    println!("deleted durable subscription {name}");
    Ok(())
}

/// `hearsay query FN NAME [--tag KEY=PATTERN]...`.
pub fn query(c: &Client, func: Func, name: &str, tags: &[String], json: bool) -> Result<()> {
    hearsay_protocols::tags::TagScope::parse(tags)?;
    let req = QueryRequest { func, name: name.to_string(), tags: tags.to_vec() };
    let r: QueryResult = c.post("/v1/query", &req)?;
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

/// `hearsay tags` (list), `hearsay tags set KEY=VALUE...`, `hearsay tags delete KEY...`:
/// prints the node's tags after the change.
pub fn tags(c: &Client, set: &[String], delete: &[String], json: bool) -> Result<()> {
    let mut req = TagsRequest { set: BTreeMap::new(), delete: delete.to_vec() };
    for s in set {
        let (k, v) = hearsay_protocols::tags::split_key_value(s)?;
        req.set.insert(k, v);
    }
    let tags: BTreeMap<String, String> =
        if set.is_empty() && delete.is_empty() { c.get("/v1/tags")? } else { c.post("/v1/tags", &req)? };
    if json {
        return print_json(&tags);
    }
    for (k, v) in &tags {
        println!("{k}={v}");
    }
    Ok(())
}

/// Whether the API at `base` (`http://host:port`) is on this host's loopback.
fn loopback(base: &str) -> bool {
    let host = base.split("://").nth(1).unwrap_or(base);
    let host = host.split('/').next().unwrap_or(host);
    if let Ok(a) = host.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h) == "localhost"
}

/// `hearsay keys install|use|remove FILE`: prints how many members acknowledged; an error
/// (exit 1) when some did not.
pub fn keys_op(c: &Client, op: &str, file: &std::path::Path, json: bool) -> Result<()> {
    use crate::transport::identity::ClusterSecret;
    use crate::transport::keyring::Fingerprint;
    let as_fingerprint = || file.to_str().and_then(|t| t.parse::<Fingerprint>().ok());
    let req = if op != "install" && !file.exists() && as_fingerprint().is_some() {
        KeyOpRequest { secret: None, fingerprint: as_fingerprint().map(|f| f.to_string()) }
    } else {
        let secret = ClusterSecret::load(file)?;
        if op == "install" {
            if !loopback(&c.base) {
                bail!(
                    "keys install sends the secret to the agent's API, which has no TLS: run it on the                      agent's host against its loopback API (--api 127.0.0.1:PORT)"
                );
            }
            KeyOpRequest { secret: Some(secret.to_file_text().trim().to_string()), fingerprint: None }
        } else {
            KeyOpRequest { secret: None, fingerprint: Some(secret.fingerprint().to_string()) }
        }
    };
    let report: KeyOpReport = c.post(&format!("/v1/keys/{op}"), &req)?;
    if json {
        print_json(&report)?;
    } else {
        let done = match op {
            "install" => "installed",
            "use" => "made primary",
            _ => "removed",
        };
        println!(
            "key {} {done}: {} of {} members acknowledged",
            report.key, report.acknowledged, report.members
        );
        for f in &report.failed {
            println!("  {} ({}): {}", f.name, short(&f.id), f.error);
        }
    }
    if !report.failed.is_empty() {
        bail!("{} of {} members did not acknowledge", report.failed.len(), report.members);
    }
    Ok(())
}

/// `hearsay keys list`: the keys the alive members hold.
pub fn keys_list(c: &Client, json: bool) -> Result<()> {
    let list: KeyList = c.get("/v1/keys")?;
    if json {
        return print_json(&list);
    }
    println!("{:<18} {:<8} {:>8} {:>11}", "KEY", "PRIMARY", "MEMBERS", "PRIMARY ON");
    for k in &list.keys {
        let primary = if k.primary { "*" } else { "" };
        let members = format!("{}/{}", k.members, list.responded);
        println!("{:<18} {:<8} {:>8} {:>11}", k.fingerprint, primary, members, k.primary_on);
    }
    println!("{} of {} members answered", list.responded, list.members);
    for f in &list.failed {
        println!("  {} ({}): {}", f.name, short(&f.id), f.error);
    }
    Ok(())
}

/// `hearsay monitor`: this agent's events as they happen, one per line, until interrupted.
pub fn monitor(c: &Client, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    c.stream("/v1/events", |e: Event| {
        if json {
            serde_json::to_writer(&mut out, &e)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", event_line(&e))?;
        }
        out.flush()?;
        Ok(true)
    })
}

/// One event as `hearsay monitor` prints it.
pub fn event_line(e: &Event) -> String {
    let secs = e.time_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let when = format!("{h:02}:{m:02}:{s:02}.{:03}Z", e.time_ms % 1000);
    let what = if let Some(m) = &e.member {
        format!(
            "{} {} {} {} inc={} {}",
            m.name,
            short(&m.id),
            m.addr,
            m.state,
            m.incarnation,
            tag_list(&m.tags)
        )
    } else if let Some(n) = e.dropped {
        format!("{n} events missed (this reader fell behind)")
    } else {
        let topic = e.topic.as_deref().unwrap_or("?");
        match (&e.parent, &e.cause) {
            (Some(p), _) => format!("topic {topic} parent {}", short(p)),
            (_, Some(c)) => format!("topic {topic} ({c})"),
            _ => format!("topic {topic}"),
        }
    };
    format!("{when} #{:<5} {:<15} {what}", e.seq, e.event)
}
