//! The node's Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Every metric is named `hearsay_*` and exists from the start, at 0 for every value of its
//! closed labels (protocol, delivery path, member state, decode error kind), so a quiet node
//! already exports every series a dashboard asks for and `rate()` starts from a real zero.
//! Only the per-topic tree gauges appear when the node is on a topic's tree.
//!
//! **Counters are set, not incremented.** Protocol machines keep their own monotonic stats
//! structs (plain `u64`s, sans-IO); at scrape time the node copies those totals in with the
//! `set_*` methods and calls [`Metrics::encode`]. A total that goes backwards (a machine was
//! rebuilt) reads to Prometheus as a counter reset, which `rate()` and `increase()` handle.
//! Gauges are set directly; the query-rounds histogram is observed once per finished query.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `hearsay_messages_sent_total` | counter | `protocol` | protocol messages sent |
//! | `hearsay_messages_received_total` | counter | `protocol` | protocol messages received and decoded |
//! | `hearsay_bytes_sent_total` | counter | `protocol` | frame bytes of those messages |
//! | `hearsay_bytes_received_total` | counter | `protocol` | frame bytes of those messages |
//! | `hearsay_deliveries_total` | counter | `via` | messages delivered to local subscribers, by how the first copy came |
//! | `hearsay_duplicates_total` | counter | | payload copies received and dropped as duplicates |
//! | `hearsay_repairs_requested_total` | counter | | messages this node asked a peer to retransmit |
//! | `hearsay_repairs_served_total` | counter | | retransmissions this node sent |
//! | `hearsay_gaps_total` | counter | | gap notices (PROTOCOLS.md §4.7) |
//! | `hearsay_gap_messages_total` | counter | | messages covered by those gaps |
//! | `hearsay_members` | gauge | `state` | members in this node's view |
//! | `hearsay_suspicions_total` | counter | | suspicions this node raised |
//! | `hearsay_refutations_total` | counter | | suspicions of this node that it refuted |
//! | `hearsay_local_health` | gauge | | Lifeguard's local health multiplier (§6.9) |
//! | `hearsay_membership_queued_updates` | gauge | | membership updates still waiting to be piggybacked (memberlist's broadcast queue) |
//! | `hearsay_tree_depth` | gauge | `topic` | hops from this node to the topic's tree root (absent while joining) |
//! | `hearsay_tree_children` | gauge | `topic` | this node's children in the topic's tree |
//! | `hearsay_queries_total` | counter | | aggregation queries answered |
//! | `hearsay_query_rounds` | histogram | | rounds a query took to answer |
//! | `hearsay_decode_errors_total` | counter | `kind` | inbound frames dropped, by why |
//! | `hearsay_connections` | gauge | | live QUIC connections in the cache |
//! | `hearsay_udp_{bytes,datagrams}_{sent,received}_total` | counter | | UDP payload on the wire |
//! | `hearsay_subscriptions` | gauge | | open local API subscriptions |
//! | `hearsay_store_messages` | gauge | | messages the durable store retains (0 without a store) |
//! | `hearsay_store_file_bytes` | gauge | | bytes of the store's file on disk |
//! | `hearsay_store_writes_total` | counter | | writes the store made durable |
//! | `hearsay_store_commits_total` | counter | | group commits (fsyncs) that carried them |
//! | `hearsay_store_trimmed_total` | counter | | messages retention removed |
//! | `hearsay_store_members` | gauge | | members in the last-known list the store keeps (what a restart dials) |
//! | `hearsay_reconnect_dials_total` | counter | | dials to find the cluster again: seeds and kept members at start, members not live in reconnect rounds |
//! | `hearsay_reconnects_total` | counter | | joins through a member that answered a reconnect dial while not live in this node's view |
//! | `hearsay_uptime_seconds` | gauge | | time since the metrics were created |
//! | `hearsay_events_total` | counter | | events on this node's event stream (`/v1/events`) |
//! | `hearsay_event_handler_runs_total` | counter | | runs of the `--event-handler` command |
//! | `hearsay_event_handler_failures_total` | counter | | runs that failed: non-zero exit, timeout, could not start |
//! | `hearsay_event_handler_dropped_total` | counter | | events the handler fell too far behind to run for |
//! | `hearsay_refused_total` | counter | `reason` | hostile or excess input dropped at a bound or a check ([`RefusedReason`]) |
//! | `hearsay_proofs_total` | counter | `event` | pbcast stream proofs: `wanted` (asked), `sent`, `received` (checked, proved a seq) |
//! | `hearsay_quic_retries_total` | counter | | stateless QUIC Retries sent to unvalidated handshakes |
//!
//! The event counters are incremented where the events happen (the actor, the handler's
//! task), through [`Metrics::events`], rather than set from a machine's totals.
//!
//! Label values are fixed words (`anti_entropy`, `first_phase`, ...) except `topic`, which is
//! the topic's name (or its id in hex when the node does not know the name). Lines within one
//! labelled family come out in no fixed order (prometheus-client keeps families in a hash
//! map); Prometheus does not care.
//!
//! Decode error kinds: the variants of [`hearsay_protocols::wire::DecodeError`] (with
//! `KindMismatch` counted as `malformed`, see [`DecodeErrorKind::of`]), plus
//! `dropped_malformed` for messages that decoded but a machine dropped as out of bounds.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hearsay_protocols::pbcast::Via;
use hearsay_protocols::wire::{DecodeError, Protocol};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::transport::Transport;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the `hearsay_query_rounds` buckets. Push-sum answers in O(log N + log 1/ε)
/// rounds (Kempe et al. 2003, Theorem 3.1): a handful for ten nodes, 20–40 for 10^4.
pub const QUERY_ROUND_BUCKETS: [f64; 14] =
    [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0];

/// A closed set of label values: an enum with its wire words.
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value with this label.
            pub fn from_label(label: &str) -> Option<$name> {
                match label {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}

label_values! {
    /// The `state` label: a member's state in the SWIM view (PROTOCOLS.md §6).
    MemberState {
        /// Alive.
        Alive => "alive",
        /// Suspected, not yet confirmed dead.
        Suspect => "suspect",
        /// Confirmed dead.
        Dead => "dead",
        /// Left gracefully.
        Left => "left",
    }
}

label_values! {
    /// The `kind` label of `hearsay_decode_errors_total`: why an inbound frame was dropped.
    DecodeErrorKind {
        /// Larger than the frame limit.
        TooLarge => "too_large",
        /// Ends inside its header.
        Truncated => "truncated",
        /// Another protocol version.
        UnsupportedVersion => "unsupported_version",
        /// A kind byte no protocol has.
        UnknownKind => "unknown_kind",
        /// Not a valid message of its kind.
        Malformed => "malformed",
        /// Bytes left after the body.
        TrailingBytes => "trailing_bytes",
        /// Decoded, but a machine dropped it as malformed or out of bounds.
        DroppedMalformed => "dropped_malformed",
    }
}

impl DecodeErrorKind {
    /// The label of a typed decode error. `KindMismatch` (a body read as another kind than
    /// its envelope says, which a node that dispatches on the envelope never does) and any
    /// variant added to `DecodeError` later read as `malformed`.
    pub fn of(error: &DecodeError) -> DecodeErrorKind {
        match error {
            DecodeError::TooLarge { .. } => DecodeErrorKind::TooLarge,
            DecodeError::Truncated => DecodeErrorKind::Truncated,
            DecodeError::UnsupportedVersion { .. } => DecodeErrorKind::UnsupportedVersion,
            DecodeError::UnknownKind(_) => DecodeErrorKind::UnknownKind,
            DecodeError::TrailingBytes(_) => DecodeErrorKind::TrailingBytes,
            _ => DecodeErrorKind::Malformed,
        }
    }
}

label_values! {
    /// The `reason` label of `hearsay_refused_total`: which bound or check dropped input a peer
    /// (or a stranger) sent.
    RefusedReason {
        /// pbcast messages whose seal is not their origin's signature.
        PbcastForged => "pbcast_forged",
        /// pbcast entries, digest lines and heads beyond `streams_max` per topic.
        PbcastStreamsFull => "pbcast_streams_full",
        /// pbcast entries waiting for earlier seqs refused at a full history.
        PbcastHoldFull => "pbcast_hold_full",
        /// pbcast streams whose unproven hints nobody proved in time, forgotten.
        PbcastUnprovenForgotten => "pbcast_unproven_forgotten",
        /// Anti-entropy entries whose seal did not check.
        AeForged => "ae_forged",
        /// Anti-entropy entries refused at the store's caps.
        AeStoreFull => "ae_store_full",
        /// Anti-entropy deltas that answered nothing asked.
        AeUnsolicited => "ae_unsolicited",
        /// SWIM updates and records whose signature did not verify.
        SwimForged => "swim_forged",
        /// SWIM suspicions naming an incarnation above the highest signed, clamped.
        SwimClamped => "swim_clamped",
        /// New members refused at the table's caps.
        SwimMembersFull => "swim_members_full",
        /// Push-pull records dropped past the caps.
        SwimRecordsDropped => "swim_records_dropped",
        /// Ping-reqs refused (unknown target, relay caps).
        SwimPingReqsRefused => "swim_ping_reqs_refused",
        /// Anti-entropy `Syn`s over their per-peer rate, unanswered.
        LimitedAeSyn => "limited_ae_syn",
        /// Rumor pulls over their per-peer rate, unanswered.
        LimitedRumorPull => "limited_rumor_pull",
        /// SWIM push-pulls over their per-peer rate, unanswered.
        LimitedSwimPushPull => "limited_swim_push_pull",
        /// Received datagrams dropped at a full frame queue.
        QueueFull => "queue_full",
        /// Received datagrams dropped at a spent byte budget.
        QueueBytesFull => "queue_bytes_full",
        /// Received streams over the frame limit.
        OversizeStream => "oversize_stream",
        /// Received streams not ended within the read timeout.
        ReadTimeout => "read_timeout",
        /// Sent streams not written within the write timeout (a peer granting no credit).
        WriteTimeout => "write_timeout",
        /// Frames not sent at the bound on sent streams in progress.
        StreamsOutFull => "streams_out_full",
        /// Handshakes ignored over the rate or in-flight bound.
        HandshakesLimited => "handshakes_limited",
        /// Handshakes refused (not admitted, either side).
        HandshakesRefused => "handshakes_refused",
        /// Second connections from a connected peer, closed.
        DuplicateConnection => "duplicate_connection",
    }
}

label_values! {
    /// The `event` label of `hearsay_proofs_total`.
    ProofEvent {
        /// `ProofWanted` requests sent.
        Wanted => "wanted",
        /// Proofs sent in answer.
        Sent => "sent",
        /// Proofs received that checked and proved a new seq.
        Received => "received",
    }
}

/// One protocol's traffic totals since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received (decoded and handed to the machine).
    pub messages_received: u64,
    /// Frame bytes sent.
    pub bytes_sent: u64,
    /// Frame bytes received.
    pub bytes_received: u64,
}

/// UDP totals on the wire (what `transport::faulty::WireStats` counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Udp {
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
}

/// Where this node sits on one topic's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreePosition {
    /// The topic's name, or its id in hex.
    pub topic: String,
    /// Hops to the root (0 at the root); `None` while the node is (re)joining the tree and
    /// does not know its place, so a joining node is not shown at depth 0 like a root.
    pub depth: Option<u32>,
    /// Children in the tree.
    pub children: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProtocolLabel {
    /// [`Protocol::label`].
    protocol: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ViaLabel {
    /// [`Via::label`].
    via: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: MemberState,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: DecodeErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: RefusedReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabel {
    event: ProofEvent,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

/// Copy a monotonic total into a counter (the caller's stats are monotonic, as prometheus-
/// client asks of `Counter::inner`).
fn set_total(counter: &Counter, total: u64) {
    counter.inner().store(total, Ordering::Relaxed);
}

/// Add a fresh metric to the registry and return it. `name` is without the `hearsay_`
/// prefix and, for counters, without the `_total` suffix (the encoder adds both).
fn add<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// The node's metrics and their registry. Setters take `&self` (the values are atomics), so
/// the node actor can own it and the API task can share it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: Instant,
    messages_sent: Family<ProtocolLabel, Counter>,
    messages_received: Family<ProtocolLabel, Counter>,
    bytes_sent: Family<ProtocolLabel, Counter>,
    bytes_received: Family<ProtocolLabel, Counter>,
    deliveries: Family<ViaLabel, Counter>,
    duplicates: Counter,
    repairs_requested: Counter,
    repairs_served: Counter,
    gaps: Counter,
    gap_messages: Counter,
    members: Family<StateLabel, Gauge>,
    suspicions: Counter,
    refutations: Counter,
    local_health: Gauge,
    membership_queued: Gauge,
    tree_depth: Family<TopicLabel, Gauge>,
    tree_children: Family<TopicLabel, Gauge>,
    queries: Counter,
    query_rounds: Histogram,
    decode_errors: Family<KindLabel, Counter>,
    connections: Gauge,
    udp_bytes_sent: Counter,
    udp_bytes_received: Counter,
    udp_datagrams_sent: Counter,
    udp_datagrams_received: Counter,
    subscriptions: Gauge,
    store_messages: Gauge,
    store_file_bytes: Gauge,
    store_writes: Counter,
    store_commits: Counter,
    store_trimmed: Counter,
    store_members: Gauge,
    reconnect_dials: Counter,
    reconnects: Counter,
    uptime: Gauge<f64, AtomicU64>,
    events: EventCounters,
    refused: Family<ReasonLabel, Counter>,
    proofs: Family<EventLabel, Counter>,
    quic_retries: Counter,
}

/// The event stream's counters, shared with the tasks that count them (cloning shares).
#[derive(Clone, Debug, Default)]
pub struct EventCounters {
    /// Events emitted on the stream.
    pub emitted: Counter,
    /// Event handler runs.
    pub handler_runs: Counter,
    /// Event handler runs that failed.
    pub handler_failures: Counter,
    /// Events the handler skipped because it fell behind.
    pub handler_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero; uptime counts from now.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("hearsay");
        let reg = &mut r;
        let per_protocol = |reg: &mut Registry, name: &str, help: &str| {
            let family = add(reg, name, help, Family::<ProtocolLabel, Counter>::default());
            for protocol in Protocol::NODE {
                drop(family.get_or_create(&ProtocolLabel { protocol: protocol.label() }));
            }
            family
        };
        let messages_sent = per_protocol(reg, "messages_sent", "Protocol messages sent");
        let messages_received = per_protocol(
            reg,
            "messages_received",
            "Protocol messages received, decoded and handed to their machine",
        );
        let bytes_sent = per_protocol(reg, "bytes_sent", "Frame bytes of protocol messages sent");
        let bytes_received = per_protocol(reg, "bytes_received", "Frame bytes of protocol messages received");
        let deliveries = add(
            reg,
            "deliveries",
            "Messages delivered to local subscribers, by how the first copy reached this node",
            Family::<ViaLabel, Counter>::default(),
        );
        for via in Via::ALL {
            drop(deliveries.get_or_create(&ViaLabel { via: via.label() }));
        }
        let duplicates =
            add(reg, "duplicates", "Payload copies received and dropped as duplicates", Counter::default());
        let repairs_requested = add(
            reg,
            "repairs_requested",
            "Messages this node asked a peer to retransmit (pbcast solicitations)",
            Counter::default(),
        );
        let repairs_served = add(
            reg,
            "repairs_served",
            "Retransmissions this node sent in answer to solicitations",
            Counter::default(),
        );
        let gaps = add(
            reg,
            "gaps",
            "Gap notices: runs of messages declared lost to local subscribers",
            Counter::default(),
        );
        let gap_messages = add(reg, "gap_messages", "Messages covered by gap notices", Counter::default());
        let members = add(
            reg,
            "members",
            "Members in this node's view, by SWIM state",
            Family::<StateLabel, Gauge>::default(),
        );
        for &state in MemberState::ALL {
            drop(members.get_or_create(&StateLabel { state }));
        }
        let suspicions =
            add(reg, "suspicions", "Suspicions this node raised (failed probes)", Counter::default());
        let refutations = add(
            reg,
            "refutations",
            "Suspicions or death notices about this node that it refuted (false suspicions)",
            Counter::default(),
        );
        let local_health = add(
            reg,
            "local_health",
            "Lifeguard local health multiplier: 0 is healthy, higher stretches probe timeouts",
            Gauge::default(),
        );
        let membership_queued = add(
            reg,
            "membership_queued_updates",
            "Membership updates still waiting to be piggybacked on probes and gossip",
            Gauge::default(),
        );
        let tree_depth = add(
            reg,
            "tree_depth",
            "Hops from this node to the root of the topic's tree",
            Family::<TopicLabel, Gauge>::default(),
        );
        let tree_children = add(
            reg,
            "tree_children",
            "This node's children in the topic's tree",
            Family::<TopicLabel, Gauge>::default(),
        );
        let queries = add(reg, "queries", "Aggregation queries answered", Counter::default());
        let query_rounds = add(
            reg,
            "query_rounds",
            "Gossip rounds an aggregation query took to answer",
            Histogram::new(QUERY_ROUND_BUCKETS),
        );
        let decode_errors = add(
            reg,
            "decode_errors",
            "Inbound frames dropped as undecodable or malformed, by reason",
            Family::<KindLabel, Counter>::default(),
        );
        for &kind in DecodeErrorKind::ALL {
            drop(decode_errors.get_or_create(&KindLabel { kind }));
        }
        let connections = add(reg, "connections", "Live QUIC connections in the cache", Gauge::default());
        let udp_bytes_sent = add(reg, "udp_bytes_sent", "UDP payload bytes sent", Counter::default());
        let udp_bytes_received =
            add(reg, "udp_bytes_received", "UDP payload bytes received", Counter::default());
        let udp_datagrams_sent = add(reg, "udp_datagrams_sent", "UDP datagrams sent", Counter::default());
        let udp_datagrams_received =
            add(reg, "udp_datagrams_received", "UDP datagrams received", Counter::default());
        let subscriptions = add(reg, "subscriptions", "Open local API subscriptions", Gauge::default());
        let store_messages = add(
            reg,
            "store_messages",
            "Messages the durable store retains (0 without a store)",
            Gauge::default(),
        );
        let store_file_bytes =
            add(reg, "store_file_bytes", "Bytes of the store's file on disk", Gauge::default());
        let store_writes = add(reg, "store_writes", "Writes the store made durable", Counter::default());
        let store_commits =
            add(reg, "store_commits", "Group commits (fsyncs) that carried the writes", Counter::default());
        let store_trimmed =
            add(reg, "store_trimmed", "Messages retention removed from the store", Counter::default());
        let store_members = add(
            reg,
            "store_members",
            "Members in the last-known list the store keeps (what a restart dials)",
            Gauge::default(),
        );
        let reconnect_dials = add(
            reg,
            "reconnect_dials",
            "Dials to find the cluster again: seeds and kept members at start, members not live in reconnect rounds",
            Counter::default(),
        );
        let reconnects = add(
            reg,
            "reconnects",
            "Joins through a member that answered a reconnect dial while not live here",
            Counter::default(),
        );
        let events = EventCounters {
            emitted: add(reg, "events", "Events on this node's event stream", Counter::default()),
            handler_runs: add(
                reg,
                "event_handler_runs",
                "Runs of the event handler command",
                Counter::default(),
            ),
            handler_failures: add(
                reg,
                "event_handler_failures",
                "Event handler runs that failed (non-zero exit, timeout, could not start)",
                Counter::default(),
            ),
            handler_dropped: add(
                reg,
                "event_handler_dropped",
                "Events the event handler fell too far behind to run for",
                Counter::default(),
            ),
        };
        let refused = add(
            reg,
            "refused",
            "Hostile or excess input dropped at a bound or a check, by reason",
            Family::<ReasonLabel, Counter>::default(),
        );
        for &reason in RefusedReason::ALL {
            drop(refused.get_or_create(&ReasonLabel { reason }));
        }
        let proofs = add(
            reg,
            "proofs",
            "pbcast stream proofs wanted, sent and received",
            Family::<EventLabel, Counter>::default(),
        );
        for &event in ProofEvent::ALL {
            drop(proofs.get_or_create(&EventLabel { event }));
        }
        let quic_retries = add(
            reg,
            "quic_retries",
            "Stateless QUIC Retries sent to unvalidated handshakes",
            Counter::default(),
        );
        let uptime = Gauge::<f64, AtomicU64>::default();
        reg.register_with_unit("uptime", "Time since the node started", Unit::Seconds, uptime.clone());
        Metrics {
            registry: r,
            started: Instant::now(),
            messages_sent,
            messages_received,
            bytes_sent,
            bytes_received,
            deliveries,
            duplicates,
            repairs_requested,
            repairs_served,
            gaps,
            gap_messages,
            members,
            suspicions,
            refutations,
            local_health,
            membership_queued,
            tree_depth,
            tree_children,
            queries,
            query_rounds,
            decode_errors,
            connections,
            udp_bytes_sent,
            udp_bytes_received,
            udp_datagrams_sent,
            udp_datagrams_received,
            subscriptions,
            store_messages,
            store_file_bytes,
            store_writes,
            store_commits,
            store_trimmed,
            store_members,
            reconnect_dials,
            reconnects,
            uptime,
            events,
            refused,
            proofs,
            quic_retries,
        }
    }

    /// The event stream's counters (clones share the values).
    pub fn events(&self) -> EventCounters {
        self.events.clone()
    }

    /// The OpenMetrics text of every metric (serve it with [`CONTENT_TYPE`]). Sets
    /// `hearsay_uptime_seconds` first.
    pub fn encode(&self) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut text = String::new();
        // Writing into a String cannot fail; an error here would mean a bug in the encoder.
        let written = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        debug_assert!(written.is_ok(), "encoding metrics into a String failed");
        text
    }

    /// One protocol's message and byte totals.
    pub fn set_traffic(&self, protocol: Protocol, traffic: Traffic) {
        let label = ProtocolLabel { protocol: protocol.label() };
        set_total(&self.messages_sent.get_or_create(&label), traffic.messages_sent);
        set_total(&self.messages_received.get_or_create(&label), traffic.messages_received);
        set_total(&self.bytes_sent.get_or_create(&label), traffic.bytes_sent);
        set_total(&self.bytes_received.get_or_create(&label), traffic.bytes_received);
    }

    /// Messages delivered locally whose first copy came `via`.
    pub fn set_deliveries(&self, via: Via, total: u64) {
        set_total(&self.deliveries.get_or_create(&ViaLabel { via: via.label() }), total);
    }

    /// Payload copies dropped as duplicates.
    pub fn set_duplicates(&self, total: u64) {
        set_total(&self.duplicates, total);
    }

    /// Repairs this node requested and served.
    pub fn set_repairs(&self, requested: u64, served: u64) {
        set_total(&self.repairs_requested, requested);
        set_total(&self.repairs_served, served);
    }

    /// Gap notices and the messages they cover.
    pub fn set_gaps(&self, gaps: u64, messages: u64) {
        set_total(&self.gaps, gaps);
        set_total(&self.gap_messages, messages);
    }

    /// Members in `state` in this node's view now.
    pub fn set_members(&self, state: MemberState, count: u64) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.members.get_or_create(&StateLabel { state }).set(count);
    }

    /// Suspicions raised and refuted.
    pub fn set_suspicions(&self, suspicions: u64, refutations: u64) {
        set_total(&self.suspicions, suspicions);
        set_total(&self.refutations, refutations);
    }

    /// Lifeguard's local health multiplier now.
    pub fn set_local_health(&self, score: u32) {
        self.local_health.set(i64::from(score));
    }

    /// Membership updates waiting to be piggybacked now.
    pub fn set_membership_queued(&self, updates: usize) {
        self.membership_queued.set(i64::try_from(updates).unwrap_or(i64::MAX));
    }

    /// The trees this node is on now: replaces the per-topic gauges, so topics it left
    /// disappear from the next scrape.
    pub fn set_trees(&self, trees: impl IntoIterator<Item = TreePosition>) {
        self.tree_depth.clear();
        self.tree_children.clear();
        for tree in trees {
            let label = TopicLabel { topic: tree.topic };
            if let Some(depth) = tree.depth {
                self.tree_depth.get_or_create(&label).set(i64::from(depth));
            }
            self.tree_children.get_or_create(&label).set(i64::from(tree.children));
        }
    }

    /// Aggregation queries answered.
    pub fn set_queries(&self, total: u64) {
        set_total(&self.queries, total);
    }

    /// A query finished after `rounds` rounds.
    pub fn observe_query_rounds(&self, rounds: u32) {
        self.query_rounds.observe(f64::from(rounds));
    }

    /// Inbound frames dropped for `kind`.
    pub fn set_decode_errors(&self, kind: DecodeErrorKind, total: u64) {
        set_total(&self.decode_errors.get_or_create(&KindLabel { kind }), total);
    }

    /// Live connections in the cache now.
    pub fn set_connections(&self, count: usize) {
        self.connections.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// UDP totals on the wire.
    pub fn set_udp(&self, udp: Udp) {
        set_total(&self.udp_bytes_sent, udp.bytes_sent);
        set_total(&self.udp_bytes_received, udp.bytes_received);
        set_total(&self.udp_datagrams_sent, udp.datagrams_sent);
        set_total(&self.udp_datagrams_received, udp.datagrams_received);
    }

    /// Input dropped for `reason`.
    pub fn set_refused(&self, reason: RefusedReason, total: u64) {
        set_total(&self.refused.get_or_create(&ReasonLabel { reason }), total);
    }

    /// Stream proofs by event.
    pub fn set_proofs(&self, event: ProofEvent, total: u64) {
        set_total(&self.proofs.get_or_create(&EventLabel { event }), total);
    }

    /// Connections, UDP totals and the transport's refusals.
    pub fn set_transport(&self, transport: &Transport) {
        let s = transport.stats();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (reason, n) in [
            (RefusedReason::QueueFull, get(&s.dropped_queue_full)),
            (RefusedReason::QueueBytesFull, get(&s.dropped_bytes_full)),
            (RefusedReason::OversizeStream, get(&s.oversize)),
            (RefusedReason::ReadTimeout, get(&s.read_timeouts)),
            (RefusedReason::WriteTimeout, get(&s.write_timeouts)),
            (RefusedReason::StreamsOutFull, get(&s.dropped_streams_out)),
            (RefusedReason::HandshakesLimited, get(&s.handshakes_limited)),
            (RefusedReason::HandshakesRefused, get(&s.refused)),
            (RefusedReason::DuplicateConnection, get(&s.duplicates_closed)),
        ] {
            self.set_refused(reason, n);
        }
        set_total(&self.quic_retries, get(&s.retries));
        let wire = transport.wire();
        self.set_udp(Udp {
            bytes_sent: wire.bytes_sent.load(Ordering::Relaxed),
            bytes_received: wire.bytes_received.load(Ordering::Relaxed),
            datagrams_sent: wire.datagrams_sent.load(Ordering::Relaxed),
            datagrams_received: wire.datagrams_received.load(Ordering::Relaxed),
        });
        self.set_connections(transport.connections());
    }

    /// Open local API subscriptions now.
    pub fn set_subscriptions(&self, count: usize) {
        self.subscriptions.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Members in the last-known list the store keeps.
    pub fn set_members_kept(&self, n: usize) {
        self.store_members.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Reconnection totals: addresses dialled, joins through a member not live here.
    pub fn set_reconnects(&self, dials: u64, joins: u64) {
        set_total(&self.reconnect_dials, dials);
        set_total(&self.reconnects, joins);
    }

    /// The durable store's figures.
    pub fn set_store(&self, s: &crate::store::StoreStats) {
        self.store_messages.set(i64::try_from(s.messages).unwrap_or(i64::MAX));
        self.store_file_bytes.set(i64::try_from(s.file_bytes).unwrap_or(i64::MAX));
        set_total(&self.store_writes, s.writes);
        set_total(&self.store_commits, s.commits);
        set_total(&self.store_trimmed, s.trimmed);
    }
}

#[cfg(test)]
mod tests;
