//! Prometheus text for `/metrics`, from the Engine's and the transport's counters.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hearsay_overlay::swim::State;

use crate::engine::{Engine, Protocol};
use crate::transport::Transport;

/// The node's metrics in the Prometheus text format.
pub fn metrics_text(engine: &Engine, transport: &Transport, subscriptions: usize, uptime: Duration) -> String {
    let mut out = String::new();
    let t = &engine.stats().traffic;
    let _ = writeln!(out, "# HELP hearsay_messages_sent_total Frames sent, by protocol.\n# TYPE hearsay_messages_sent_total counter");
    for p in Protocol::ALL {
        let i = p as usize;
        let _ = writeln!(out, "hearsay_messages_sent_total{{protocol=\"{}\"}} {}", p.label(), t.sent[i]);
    }
    let _ = writeln!(out, "# HELP hearsay_messages_received_total Frames received, by protocol.\n# TYPE hearsay_messages_received_total counter");
    for p in Protocol::ALL {
        let _ = writeln!(out, "hearsay_messages_received_total{{protocol=\"{}\"}} {}", p.label(), t.received[p as usize]);
    }
    let _ = writeln!(out, "# HELP hearsay_members Members by state.\n# TYPE hearsay_members gauge");
    let members = engine.members();
    for (label, st) in [("alive", State::Alive), ("suspect", State::Suspect), ("dead", State::Dead), ("left", State::Left)] {
        let _ = writeln!(out, "hearsay_members{{state=\"{label}\"}} {}", members.iter().filter(|m| m.state == st).count());
    }
    let _ = writeln!(out, "# HELP hearsay_decode_errors_total Frames that did not decode.\n# TYPE hearsay_decode_errors_total counter");
    let _ = writeln!(out, "hearsay_decode_errors_total {}", engine.stats().decode_errors.total());
    let _ = writeln!(out, "# HELP hearsay_connections Live QUIC connections.\n# TYPE hearsay_connections gauge");
    let _ = writeln!(out, "hearsay_connections {}", transport.connections());
    let _ = writeln!(out, "# HELP hearsay_udp_bytes_sent_total UDP payload bytes sent.\n# TYPE hearsay_udp_bytes_sent_total counter");
    let _ = writeln!(out, "hearsay_udp_bytes_sent_total {}", transport.wire().bytes_sent.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP hearsay_udp_datagrams_received_total UDP datagrams received (QUIC or not).\n# TYPE hearsay_udp_datagrams_received_total counter");
    let _ = writeln!(out, "hearsay_udp_datagrams_received_total {}", transport.wire().datagrams_received.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP hearsay_subscriptions Local API subscriptions.\n# TYPE hearsay_subscriptions gauge");
    let _ = writeln!(out, "hearsay_subscriptions {subscriptions}");
    let _ = writeln!(out, "# HELP hearsay_uptime_seconds Seconds since the agent started.\n# TYPE hearsay_uptime_seconds gauge");
    let _ = writeln!(out, "hearsay_uptime_seconds {:.3}", uptime.as_secs_f64());
    out.push_str("# EOF\n");
    out
}
