//! The embedding example (`node/examples/embed.rs`) as a test: three agents in this process,
//! driven only through `hearsay::embed`, form a cluster, exchange messages, aggregate a value
//! and see one of them leave.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/embed.rs"]
mod example;

use example::MESSAGES_EACH;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_embedded_agents_exchange_every_message_aggregate_and_see_a_leave() {
    let report =
        example::run(|line| eprintln!("{line}")).await.unwrap_or_else(|e| panic!("the example failed: {e}"));
    let mut expected: Vec<String> =
        ["a", "b", "c"].iter().flat_map(|n| (1..=MESSAGES_EACH).map(move |k| format!("{n}{k}"))).collect();
    expected.sort();
    for (name, bodies) in &report.received {
        let mut got = bodies.clone();
        got.sort();
        assert_eq!(got, expected, "{name} received every message once");
        for publisher in ["a", "b", "c"] {
            let mine: Vec<&String> = bodies.iter().filter(|b| b.starts_with(publisher)).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "{name}: {publisher}'s messages in order: {mine:?}"
            );
        }
    }
    assert_eq!(report.subscribers_known, vec![3, 3, 3], "each publisher knew the three subscribers");
    let avg = report.avg_load.expect("the query found the value");
    assert!((avg - 2.0).abs() < 1e-3, "avg of 1, 2, 3 is {avg}");
    assert!(report.leave_seen, "a saw c leave");
}
