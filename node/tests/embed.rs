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

/// A durable subscription through the embedding API: what was acknowledged is not sent again,
/// what was not (or was published while no reader was there) is, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_durable_subscription_resumes_after_its_last_acknowledgement() {
    use std::time::Duration;

    use hearsay::embed::{Agent, ClusterSecret, DurableError, Error, Item, SubscribeOptions};

    let dir = std::env::temp_dir().join(format!("hearsay-embed-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let secret = ClusterSecret::generate().expect("a secret");
    let agent = Agent::builder("d").secret(secret).data_dir(&dir).start().await.expect("the agent starts");
    let durable = || SubscribeOptions::default().durable("orders-reader");
    let mut sub = agent.subscribe_with("orders", durable()).await.expect("a new durable subscription");
    for k in 1..=3 {
        agent.publish("orders", format!("m{k}")).await.expect("publish");
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(Item::Message(m))) => got.push(m),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    let origin = got[0].origin;
    agent.ack("orders-reader", origin, got[1].seq).await.expect("ack");
    assert!(matches!(agent.ack("nobody", origin, 1).await, Err(Error::Durable(DurableError::Unknown(_)))));
    drop(sub);
    agent.publish("orders", "m4").await.expect("publish");
    // The dropped reader is let go at the agent's next housekeeping (0.5 s): until then the name
    // is in use.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut again = loop {
        match agent.subscribe_with("orders", durable()).await {
            Ok(s) => break s,
            Err(Error::Durable(DurableError::InUse(_))) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("resubscribing: {e}"),
        }
    };
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), again.next()).await {
            Ok(Some(Item::Message(m))) => {
                assert_eq!(m.origin, origin);
                bodies.push((m.seq, String::from_utf8_lossy(&m.body).into_owned()));
            }
            other => panic!("expected a message, got {other:?} after {bodies:?}"),
        }
    }
    assert_eq!(bodies, vec![(got[2].seq, "m3".to_string()), (got[2].seq + 1, "m4".to_string())]);
    drop(again);
    agent.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
