//! HTTP to an agent's API: plain requests through ureq, subscriptions over a raw TCP stream
//! (HTTP/1.1, chunked) so a test can stop reading (a slow consumer), hang up (a client that goes
//! away) or read everything, and always closes it on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// An HTTP answer: status and JSON body (a string when the body is not JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Reply {
    /// The body of a 2xx reply, or an error naming the status and body.
    pub fn ok(self) -> Result<Value, String> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            Err(format!("HTTP {}: {}", self.status, self.body))
        }
    }

    /// The `error` of an error reply, or "".
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// A client for one agent's API: keeps its connections alive between requests (a test that
/// publishes thousands of messages must not leave thousands of sockets in TIME_WAIT).
pub(crate) fn client() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build(),
    )
}

/// One request; `Err` only when there was no HTTP answer at all.
pub(crate) fn call(
    http: &ureq::Agent,
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Reply, String> {
    let url = format!("http://{api}{path}");
    let bearer = token.map_or_else(String::new, |t| format!("Bearer {t}"));
    let resp = match (method, body) {
        ("GET", _) => http
            .get(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("authorization", &bearer)
            .call(),
        ("POST", Some(b)) => http
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", "application/json")
            .header("authorization", &bearer)
            .send(b),
        ("POST", None) => http
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("authorization", &bearer)
            .send_empty(),
        ("DELETE", _) => http
            .delete(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("authorization", &bearer)
            .call(),
        (m, _) => return Err(format!("method {m} not supported by the harness")),
    };
    let mut resp = resp.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply { status, body })
}

/// A delivered message as a subscriber sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The publishing stream's origin (hex).
    pub origin: String,
    /// Its seq in (origin, topic).
    pub seq: u64,
    /// The body as text, when UTF-8.
    pub payload: Option<String>,
    /// The body in base64, when not.
    pub payload_b64: Option<String>,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
}

/// A gap notice: seqs `from..=to` of `origin` will never come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The origin (hex).
    pub origin: String,
    /// First missing seq.
    pub from: u64,
    /// Last missing seq.
    pub to: u64,
}

/// How one origin's seqs reached a subscriber ([`Subscription::account`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Seqs delivered.
    pub delivered: u64,
    /// Seqs announced as gaps.
    pub gapped: u64,
    /// The gap notices, `(from, to)`, in arrival order.
    pub gaps: Vec<(u64, u64)>,
    /// Seqs neither delivered nor announced: lost without notice.
    pub silent: Vec<u64>,
    /// Seqs delivered or announced more than once.
    pub duplicates: u64,
    /// Messages or gaps that came after a higher seq.
    pub out_of_order: u64,
}

impl Account {
    /// Every seq accounted for exactly once, in order.
    pub fn is_sound(&self) -> bool {
        self.silent.is_empty() && self.duplicates == 0 && self.out_of_order == 0
    }
}

/// A subscription stream (`GET /v1/subscribe`) read in the background, line by line.
pub struct Subscription {
    stream: TcpStream,
    reader: Option<BufReader<TcpStream>>,
    lines: Arc<Mutex<Vec<Value>>>,
    ended: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("lines", &self.lines().len()).finish_non_exhaustive()
    }
}

impl Subscription {
    /// `GET /v1/subscribe?{query}` and, on 200, read the stream in the background. `Err` is
    /// the error reply; a connection failure panics.
    pub(crate) fn open(api: SocketAddr, query: &str, token: Option<&str>) -> Result<Subscription, Reply> {
        let mut s = Self::open_paused(api, query, token)?;
        s.resume();
        Ok(s)
    }

    /// Like `open`, but nothing is read until [`Subscription::resume`]: a consumer that does not
    /// keep up.
    pub(crate) fn open_paused(
        api: SocketAddr,
        query: &str,
        token: Option<&str>,
    ) -> Result<Subscription, Reply> {
        let stream = TcpStream::connect_timeout(&api, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("cannot connect to the API at {api}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
        let mut w = stream.try_clone().expect("clone the stream");
        write!(
            w,
            "GET /v1/subscribe?{query} HTTP/1.1\r\nHost: {api}\r\nAccept: application/x-ndjson\r\n{}\r\n",
            token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"))
        )
        .unwrap_or_else(|e| panic!("cannot send the subscribe request to {api}: {e}"));
        let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap_or_else(|e| panic!("no answer from {api}: {e}"));
        let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut chunked = false;
        let mut length = None;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap_or_else(|e| panic!("headers from {api}: {e}"));
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        if status != 200 || !chunked {
            let mut body = vec![0u8; length.unwrap_or(0)];
            let _ = reader.read_exact(&mut body);
            let text = String::from_utf8_lossy(&body).into_owned();
            let _ = stream.shutdown(Shutdown::Both);
            return Err(Reply { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) });
        }
        stream.set_read_timeout(None).expect("no read timeout");
        Ok(Subscription {
            stream,
            reader: Some(reader),
            lines: Arc::default(),
            ended: Arc::default(),
            thread: None,
        })
    }

    /// Start (or go on) reading the stream in the background.
    pub fn resume(&mut self) {
        let Some(mut reader) = self.reader.take() else { return };
        let (lines, ended) = (self.lines.clone(), self.ended.clone());
        self.thread = Some(std::thread::spawn(move || {
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    break;
                }
                let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16) else {
                    break;
                };
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0u8; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    break;
                }
                pending.extend_from_slice(&chunk[..n]);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        lines.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                    }
                }
            }
            ended.store(true, Ordering::SeqCst);
        }));
    }

    /// Hang up, as a client that goes away does.
    pub fn disconnect(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The stream has ended (the agent closed it, or the connection broke).
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Messages received so far, in arrival order.
    pub fn messages(&self) -> Vec<Message> {
        self.lines()
            .into_iter()
            .filter(|v| v.get("seq").is_some())
            .map(|v| Message {
                origin: v["origin"].as_str().unwrap_or("").to_string(),
                seq: v["seq"].as_u64().unwrap_or(0),
                payload: v["payload"].as_str().map(str::to_string),
                payload_b64: v["payload_b64"].as_str().map(str::to_string),
                headers: v["headers"]
                    .as_object()
                    .map(|h| {
                        h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The text payloads received so far, in arrival order.
    pub fn payloads(&self) -> Vec<String> {
        self.messages().into_iter().filter_map(|m| m.payload).collect()
    }

    /// Gap notices received so far.
    pub fn gaps(&self) -> Vec<Gap> {
        self.lines()
            .into_iter()
            .filter_map(|v| v.get("gap").cloned())
            .map(|g| Gap {
                origin: g["origin"].as_str().unwrap_or("").to_string(),
                from: g["from_seq"].as_u64().unwrap_or(0),
                to: g["to_seq"].as_u64().unwrap_or(0),
            })
            .collect()
    }

    /// How `origin`'s seqs `first..=last` reached this subscription, judged by seq over the
    /// lines in arrival order (messages and gap notices).
    pub fn account(&self, origin: &str, first: u64, last: u64) -> Account {
        let mut acc = Account::default();
        let mut seen: BTreeMap<u64, bool> = BTreeMap::new(); // seq -> delivered (else gapped)
        let mut position = 0u64;
        for v in self.lines() {
            if v["origin"] == origin {
                let Some(seq) = v["seq"].as_u64() else { continue };
                if seq < first || seq > last {
                    continue;
                }
                if seen.insert(seq, true).is_some() {
                    acc.duplicates += 1;
                }
                if seq <= position {
                    acc.out_of_order += 1;
                }
                position = position.max(seq);
            } else if v.pointer("/gap/origin").is_some_and(|o| o == origin) {
                let (from, to) =
                    (v["gap"]["from_seq"].as_u64().unwrap_or(0), v["gap"]["to_seq"].as_u64().unwrap_or(0));
                acc.gaps.push((from, to));
                if from <= position {
                    acc.out_of_order += 1;
                }
                position = position.max(to);
                for seq in from.max(first)..=to.min(last) {
                    if seen.insert(seq, false).is_some() {
                        acc.duplicates += 1;
                    }
                }
            }
        }
        acc.delivered = seen.values().filter(|d| **d).count() as u64;
        acc.gapped = seen.values().filter(|d| !**d).count() as u64;
        acc.silent = (first..=last).filter(|s| !seen.contains_key(s)).collect();
        acc
    }

    /// The reason of the `{"closed": {reason}}` line, once it came.
    pub fn closed(&self) -> Option<String> {
        self.lines()
            .iter()
            .find_map(|v| v.pointer("/closed/reason").and_then(Value::as_str).map(str::to_string))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.disconnect();
    }
}
