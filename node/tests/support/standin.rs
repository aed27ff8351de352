//! Stand-ins for agents: HTTP servers on 127.0.0.1 ephemeral ports whose `/metrics` serves
//! [`Metrics::encode`] of a node that looks busy (every counter grows with each scrape, every
//! gauge and the query-rounds histogram have values, two topics have trees).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hearsay::metrics::{
    CONTENT_TYPE, DecodeErrorKind, MemberState, Metrics, Protocol, Traffic, TreePosition, Udp, Via,
};

/// An HTTP server answering `GET /metrics` with a body made per request; stops when dropped.
pub(crate) struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listen on 127.0.0.1 at an ephemeral port; `body` makes each response.
    pub(crate) fn start(body: impl Fn() -> String + Send + 'static) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, served) = (stop.clone(), served.clone());
            thread::Builder::new().name(format!("metrics-{}", addr.port())).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if answer(stream, &body).unwrap_or(false) {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(10))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?
        };
        Ok(MetricsServer { addr, stop, served, thread: Some(thread) })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `/metrics` responses served so far.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serve one request; true if it was `GET /metrics`.
fn answer(mut stream: TcpStream, body: &dyn Fn() -> String) -> io::Result<bool> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let line = line.lines().next().unwrap_or("");
    let is_metrics = line.starts_with("GET /metrics ") || line.starts_with("GET /metrics?");
    let (status, content_type, text) = if is_metrics {
        ("200 OK", CONTENT_TYPE, body())
    } else {
        ("404 Not Found", "text/plain", "not found\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()?;
    Ok(is_metrics)
}

/// Fill `m` as a busy node `node` would be after `scrape` scrapes: every counter grows, two
/// topics have trees, a query finished with a few rounds.
pub(crate) fn populate(m: &Metrics, node: u64, scrape: u64) {
    let k = scrape + 1;
    for (i, &protocol) in Protocol::ALL.iter().enumerate() {
        let base = (i as u64 + 1) * k * (node + 1);
        m.set_traffic(
            protocol,
            Traffic {
                messages_sent: 10 * base,
                messages_received: 11 * base,
                bytes_sent: 1200 * base,
                bytes_received: 1300 * base,
            },
        );
    }
    for (i, &via) in Via::ALL.iter().enumerate() {
        m.set_deliveries(via, (i as u64 + 1) * 20 * k);
    }
    m.set_duplicates(k);
    m.set_repairs(3 * k, 2 * k);
    m.set_gaps(k / 2, k);
    m.set_members(MemberState::Alive, 3);
    m.set_members(MemberState::Suspect, node % 2);
    m.set_suspicions(k, k / 2);
    m.set_local_health(u32::try_from(node).unwrap_or(0));
    m.set_trees([
        TreePosition { topic: "news".into(), depth: u32::try_from(node).unwrap_or(0), children: 1 },
        TreePosition { topic: "0a1b2c3d".into(), depth: 1, children: 2 },
    ]);
    m.set_queries(k);
    m.observe_query_rounds(u32::try_from(4 + (scrape + node) % 9).unwrap_or(4));
    for (i, &kind) in DecodeErrorKind::ALL.iter().enumerate() {
        m.set_decode_errors(kind, i as u64 * k);
    }
    m.set_connections(2);
    m.set_udp(Udp {
        bytes_sent: 9000 * k,
        bytes_received: 9500 * k,
        datagrams_sent: 8 * k,
        datagrams_received: 9 * k,
    });
    m.set_subscriptions(1);
}

/// A stand-in agent: a [`MetricsServer`] over a [`Metrics`] repopulated before every scrape.
pub(crate) fn busy_agent(node: u64) -> io::Result<MetricsServer> {
    let metrics = Metrics::new();
    let scrapes = AtomicU64::new(0);
    MetricsServer::start(move || {
        populate(&metrics, node, scrapes.fetch_add(1, Ordering::Relaxed));
        metrics.encode()
    })
}
