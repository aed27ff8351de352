use std::collections::BTreeMap;

use hearsay_protocols::wire::{DecodeError, Protocol};

use super::*;

/// One sample line: name, labels, value.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse the samples of an OpenMetrics text (enough of the format for what `encode` writes:
/// no escaped quotes or commas in label values).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let value = value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label k=v");
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        out.push(Sample { name, labels, value });
    }
    out
}

/// The value of the one sample with this name and these labels.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let found: Vec<f64> =
        samples(text).into_iter().filter(|s| s.name == name && s.labels == want).map(|s| s.value).collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {} samples in\n{text}", found.len());
    found[0]
}

/// The `# TYPE` of a metric family.
fn family_type(text: &str, family: &str) -> String {
    let prefix = format!("# TYPE {family} ");
    let types: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix(&prefix)).collect();
    assert_eq!(types.len(), 1, "one TYPE line for {family} in\n{text}");
    types[0].to_string()
}

/// The label values a family's samples carry under `label`.
fn label_values(text: &str, name: &str, label: &str) -> Vec<String> {
    let mut values: Vec<String> = samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter_map(|s| s.labels.get(label).cloned())
        .collect();
    values.sort();
    values
}

fn sorted(words: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    v.sort();
    v
}

const COUNTERS: [&str; 16] = [
    "hearsay_messages_sent",
    "hearsay_messages_received",
    "hearsay_bytes_sent",
    "hearsay_bytes_received",
    "hearsay_deliveries",
    "hearsay_duplicates",
    "hearsay_repairs_requested",
    "hearsay_repairs_served",
    "hearsay_gaps",
    "hearsay_gap_messages",
    "hearsay_suspicions",
    "hearsay_refutations",
    "hearsay_queries",
    "hearsay_decode_errors",
    "hearsay_udp_bytes_sent",
    "hearsay_udp_bytes_received",
];

const GAUGES: [&str; 8] = [
    "hearsay_members",
    "hearsay_local_health",
    "hearsay_membership_queued_updates",
    "hearsay_tree_depth",
    "hearsay_tree_children",
    "hearsay_connections",
    "hearsay_subscriptions",
    "hearsay_uptime_seconds",
];

#[test]
fn fresh_metrics_export_every_family_with_help_and_type() {
    let text = Metrics::new().encode();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    for family in COUNTERS.iter().chain(["hearsay_udp_datagrams_sent"].iter()) {
        assert_eq!(family_type(&text, family), "counter", "{family}");
        assert!(text.contains(&format!("# HELP {family} ")), "help for {family}");
    }
    assert_eq!(family_type(&text, "hearsay_udp_datagrams_received"), "counter");
    for family in GAUGES {
        assert_eq!(family_type(&text, family), "gauge", "{family}");
        assert!(text.contains(&format!("# HELP {family} ")), "help for {family}");
    }
    assert_eq!(family_type(&text, "hearsay_query_rounds"), "histogram");
    assert!(text.contains("# UNIT hearsay_uptime_seconds seconds"));
    // prometheus-client ends help texts with a period itself.
    assert!(text.contains("# HELP hearsay_duplicates Payload copies received and dropped as duplicates.\n"));
    assert!(!text.contains(".."), "a help text ends with two periods");
    for s in samples(&text) {
        assert!(s.name.starts_with("hearsay_"), "{} is not hearsay_*", s.name);
    }
}

#[test]
fn fresh_metrics_have_every_closed_label_at_zero() {
    let text = Metrics::new().encode();
    let protocols = sorted(&["membership", "ring", "tree", "pbcast", "rumor", "anti_entropy", "aggregation"]);
    for name in [
        "hearsay_messages_sent_total",
        "hearsay_messages_received_total",
        "hearsay_bytes_sent_total",
        "hearsay_bytes_received_total",
    ] {
        assert_eq!(label_values(&text, name, "protocol"), protocols, "{name}");
        for p in &protocols {
            assert_eq!(value(&text, name, &[("protocol", p)]), 0.0);
        }
    }
    assert_eq!(
        label_values(&text, "hearsay_deliveries_total", "via"),
        sorted(&["local", "first_phase", "repair", "anti_entropy"])
    );
    assert_eq!(
        label_values(&text, "hearsay_members", "state"),
        sorted(&["alive", "suspect", "dead", "left"])
    );
    assert_eq!(
        label_values(&text, "hearsay_decode_errors_total", "kind"),
        sorted(&[
            "too_large",
            "truncated",
            "unsupported_version",
            "unknown_kind",
            "malformed",
            "trailing_bytes",
            "dropped_malformed",
        ])
    );
    // No tree yet: the per-topic gauges have no samples.
    assert!(label_values(&text, "hearsay_tree_depth", "topic").is_empty());
    assert_eq!(value(&text, "hearsay_query_rounds_count", &[]), 0.0);
}

#[test]
fn uptime_is_the_time_since_the_metrics_were_made() {
    let before = std::time::Instant::now();
    let m = Metrics::new();
    let made = std::time::Instant::now();
    let first = value(&m.encode(), "hearsay_uptime_seconds", &[]);
    assert!(first > 0.0 && first <= before.elapsed().as_secs_f64(), "{first}");
    // Once at least 10 ms have passed since it was made (a clock read, no sleep), a scrape
    // says so.
    while made.elapsed() < std::time::Duration::from_millis(10) {
        std::hint::spin_loop();
    }
    let second = value(&m.encode(), "hearsay_uptime_seconds", &[]);
    assert!(
        second >= 0.010 && second <= before.elapsed().as_secs_f64() && second > first,
        "{first} then {second}"
    );
}

#[test]
fn populated_metrics_encode_the_values_set() {
    let m = Metrics::new();
    m.set_traffic(
        Protocol::Pbcast,
        Traffic { messages_sent: 10, messages_received: 12, bytes_sent: 3000, bytes_received: 3600 },
    );
    m.set_traffic(Protocol::AntiEntropy, Traffic { messages_sent: 1, ..Traffic::default() });
    m.set_deliveries(Via::FirstPhase, 40);
    m.set_deliveries(Via::Repair, 2);
    m.set_duplicates(3);
    m.set_repairs(5, 6);
    m.set_gaps(1, 4);
    m.set_members(MemberState::Alive, 9);
    m.set_members(MemberState::Suspect, 1);
    m.set_suspicions(7, 2);
    m.set_local_health(3);
    m.set_membership_queued(11);
    m.set_trees([
        TreePosition { topic: "news".into(), depth: Some(2), children: 3 },
        TreePosition { topic: "0a1b".into(), depth: Some(0), children: 5 },
    ]);
    m.set_queries(2);
    m.observe_query_rounds(3);
    m.observe_query_rounds(20);
    m.set_decode_errors(DecodeErrorKind::Truncated, 8);
    m.set_decode_errors(DecodeErrorKind::DroppedMalformed, 1);
    m.set_connections(4);
    m.set_udp(Udp { bytes_sent: 1000, bytes_received: 2000, datagrams_sent: 5, datagrams_received: 9 });
    m.set_subscriptions(2);
    let text = m.encode();

    let pb = [("protocol", "pbcast")];
    assert_eq!(value(&text, "hearsay_messages_sent_total", &pb), 10.0);
    assert_eq!(value(&text, "hearsay_messages_received_total", &pb), 12.0);
    assert_eq!(value(&text, "hearsay_bytes_sent_total", &pb), 3000.0);
    assert_eq!(value(&text, "hearsay_bytes_received_total", &pb), 3600.0);
    assert_eq!(value(&text, "hearsay_messages_sent_total", &[("protocol", "anti_entropy")]), 1.0);
    assert_eq!(value(&text, "hearsay_messages_sent_total", &[("protocol", "ring")]), 0.0);
    assert_eq!(value(&text, "hearsay_deliveries_total", &[("via", "first_phase")]), 40.0);
    assert_eq!(value(&text, "hearsay_deliveries_total", &[("via", "repair")]), 2.0);
    assert_eq!(value(&text, "hearsay_deliveries_total", &[("via", "local")]), 0.0);
    assert_eq!(value(&text, "hearsay_duplicates_total", &[]), 3.0);
    assert_eq!(value(&text, "hearsay_repairs_requested_total", &[]), 5.0);
    assert_eq!(value(&text, "hearsay_repairs_served_total", &[]), 6.0);
    assert_eq!(value(&text, "hearsay_gaps_total", &[]), 1.0);
    assert_eq!(value(&text, "hearsay_gap_messages_total", &[]), 4.0);
    assert_eq!(value(&text, "hearsay_members", &[("state", "alive")]), 9.0);
    assert_eq!(value(&text, "hearsay_members", &[("state", "suspect")]), 1.0);
    assert_eq!(value(&text, "hearsay_members", &[("state", "dead")]), 0.0);
    assert_eq!(value(&text, "hearsay_suspicions_total", &[]), 7.0);
    assert_eq!(value(&text, "hearsay_refutations_total", &[]), 2.0);
    assert_eq!(value(&text, "hearsay_local_health", &[]), 3.0);
    assert_eq!(value(&text, "hearsay_membership_queued_updates", &[]), 11.0);
    assert_eq!(value(&text, "hearsay_tree_depth", &[("topic", "news")]), 2.0);
    assert_eq!(value(&text, "hearsay_tree_children", &[("topic", "news")]), 3.0);
    assert_eq!(value(&text, "hearsay_tree_depth", &[("topic", "0a1b")]), 0.0);
    assert_eq!(value(&text, "hearsay_tree_children", &[("topic", "0a1b")]), 5.0);
    assert_eq!(value(&text, "hearsay_queries_total", &[]), 2.0);
    assert_eq!(value(&text, "hearsay_query_rounds_count", &[]), 2.0);
    assert_eq!(value(&text, "hearsay_query_rounds_sum", &[]), 23.0);
    assert_eq!(value(&text, "hearsay_query_rounds_bucket", &[("le", "2.0")]), 0.0);
    assert_eq!(value(&text, "hearsay_query_rounds_bucket", &[("le", "3.0")]), 1.0);
    assert_eq!(value(&text, "hearsay_query_rounds_bucket", &[("le", "16.0")]), 1.0);
    assert_eq!(value(&text, "hearsay_query_rounds_bucket", &[("le", "24.0")]), 2.0);
    assert_eq!(value(&text, "hearsay_query_rounds_bucket", &[("le", "+Inf")]), 2.0);
    assert_eq!(value(&text, "hearsay_decode_errors_total", &[("kind", "truncated")]), 8.0);
    assert_eq!(value(&text, "hearsay_decode_errors_total", &[("kind", "dropped_malformed")]), 1.0);
    assert_eq!(value(&text, "hearsay_decode_errors_total", &[("kind", "malformed")]), 0.0);
    assert_eq!(value(&text, "hearsay_connections", &[]), 4.0);
    assert_eq!(value(&text, "hearsay_udp_bytes_sent_total", &[]), 1000.0);
    assert_eq!(value(&text, "hearsay_udp_bytes_received_total", &[]), 2000.0);
    assert_eq!(value(&text, "hearsay_udp_datagrams_sent_total", &[]), 5.0);
    assert_eq!(value(&text, "hearsay_udp_datagrams_received_total", &[]), 9.0);
    assert_eq!(value(&text, "hearsay_subscriptions", &[]), 2.0);
}

#[test]
fn totals_replace_rather_than_add() {
    let m = Metrics::new();
    m.set_duplicates(5);
    m.set_duplicates(8);
    m.set_deliveries(Via::Repair, 3);
    m.set_deliveries(Via::Repair, 4);
    let text = m.encode();
    assert_eq!(value(&text, "hearsay_duplicates_total", &[]), 8.0);
    assert_eq!(value(&text, "hearsay_deliveries_total", &[("via", "repair")]), 4.0);
}

#[test]
fn set_trees_drops_topics_left() {
    let m = Metrics::new();
    m.set_trees([
        TreePosition { topic: "a".into(), depth: Some(1), children: 0 },
        TreePosition { topic: "b".into(), depth: Some(2), children: 1 },
    ]);
    m.set_trees([TreePosition { topic: "b".into(), depth: Some(1), children: 4 }]);
    let text = m.encode();
    assert_eq!(label_values(&text, "hearsay_tree_depth", "topic"), vec!["b".to_string()]);
    assert_eq!(label_values(&text, "hearsay_tree_children", "topic"), vec!["b".to_string()]);
    assert_eq!(value(&text, "hearsay_tree_children", &[("topic", "b")]), 4.0);
}

#[test]
fn a_joining_tree_has_children_but_no_depth() {
    let m = Metrics::new();
    m.set_trees([TreePosition { topic: "j".into(), depth: None, children: 2 }]);
    let text = m.encode();
    assert!(label_values(&text, "hearsay_tree_depth", "topic").is_empty());
    assert_eq!(value(&text, "hearsay_tree_children", &[("topic", "j")]), 2.0);
}

#[test]
fn decode_errors_map_to_their_labels() {
    let cases = [
        (DecodeError::TooLarge { len: 9, limit: 8 }, "too_large"),
        (DecodeError::Truncated, "truncated"),
        (DecodeError::UnsupportedVersion { got: 9, supported: 1 }, "unsupported_version"),
        (DecodeError::UnknownKind(200), "unknown_kind"),
        (DecodeError::KindMismatch { expected: Protocol::Pbcast, got: Protocol::Ring }, "malformed"),
        (DecodeError::Malformed(postcard::Error::DeserializeUnexpectedEnd), "malformed"),
        (DecodeError::TrailingBytes(3), "trailing_bytes"),
    ];
    for (error, label) in cases {
        assert_eq!(DecodeErrorKind::of(&error).as_str(), label, "{error}");
    }
}

#[test]
fn labels_read_back() {
    for &s in MemberState::ALL {
        assert_eq!(MemberState::from_label(s.as_str()), Some(s));
    }
    for &k in DecodeErrorKind::ALL {
        assert_eq!(DecodeErrorKind::from_label(k.as_str()), Some(k));
    }
    assert_eq!(MemberState::from_label("Alive"), None);
}

#[test]
fn every_protocol_a_node_speaks_has_its_own_series() {
    let text = Metrics::new().encode();
    let mut labels = label_values(&text, "hearsay_messages_sent_total", "protocol");
    labels.sort();
    let mut expected: Vec<String> = Protocol::NODE.iter().map(|p| p.label().to_string()).collect();
    expected.sort();
    expected.dedup();
    assert_eq!(labels, expected);
    assert_eq!(labels.len(), 7, "seven distinct labels: {labels:?}");
    assert!(!labels.iter().any(|l| l == "flood"), "flooding is simulator-only");
    let mut via = label_values(&text, "hearsay_deliveries_total", "via");
    via.sort();
    assert_eq!(via, ["anti_entropy", "first_phase", "local", "repair"]);
}
