//! `hearsay bench` at small scale: five real agents over QUIC on loopback, 50 messages at a
//! high rate. Every message reaches every node, the per-delivery figures are finite and
//! sane, and the JSON line has every field the README documents.

use std::time::Duration;

use hearsay::bench::{BenchOptions, run};

#[test]
fn a_small_bench_delivers_everything_and_reports_every_field() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut opts = BenchOptions::new(5, 50, 256, 200.0);
    opts.drain = Duration::from_millis(500);
    opts.publishers = 2;
    let report = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), run(opts)).await })
        .expect("the bench finished within 60 s")
        .expect("the bench ran");
    assert_eq!(report.delivery_ratio, 1.0, "{report:?}");
    assert_eq!(report.deliveries, 50 * 4);
    assert_eq!(report.complete_messages, 50);
    // Every delivery carries a 256-byte payload in at least one datagram; background
    // protocol traffic over a 0.75 s window cannot cost more than a few kB per delivery.
    assert!(report.bytes_per_delivery.is_finite(), "{report:?}");
    assert!((256.0..20_000.0).contains(&report.bytes_per_delivery), "{report:?}");
    assert!(report.dup_per_delivery.is_finite() && report.dup_per_delivery >= 0.0, "{report:?}");
    assert!(report.dup_per_delivery < 1.0, "{report:?}");
    assert!(report.cpu_us_per_delivery.is_finite() && report.cpu_us_per_delivery > 0.0, "{report:?}");
    assert!(report.peak_rss_mib > 1.0, "{report:?}");
    assert!(report.last_node_ms.p50 <= report.last_node_ms.p99);
    assert!(report.last_node_ms.p99 <= report.last_node_ms.max);
    assert!(report.per_delivery_ms.p50 <= report.last_node_ms.max);

    let json: serde_json::Value = serde_json::to_value(&report).expect("json");
    for field in [
        "nodes",
        "messages",
        "size",
        "rate",
        "publishers",
        "topics",
        "seed",
        "delivery_ratio",
        "cpu_s",
        "cpu_us_per_delivery",
        "peak_rss_mib",
        "bytes_per_delivery",
        "dup_per_delivery",
    ] {
        assert!(json.get(field).is_some_and(|v| v.is_number()), "missing {field}: {json}");
    }
    for field in ["last_node_ms", "per_delivery_ms"] {
        for p in ["p50", "p99", "max"] {
            assert!(json[field][p].is_number(), "missing {field}.{p}: {json}");
        }
    }
    assert_eq!(json["nodes"], 5);
    assert_eq!(json["messages"], 50);
    assert_eq!(json["publishers"], 2);
}
