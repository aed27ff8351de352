//! Subscriptions seen from a client: headers and filters on delivery, expiry, a client that
//! hangs up, a consumer that does not keep up. Real `hearsay agent` processes on 127.0.0.1.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hearsay_tests::{AgentSpec, Cluster, metric_sample, wait_for};
use serde_json::json;

fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn headers_travel_with_messages_and_filters_pick_by_them() {
    let c = Cluster::start("filters", 2);
    let all = c[1].subscribe("alerts");
    let urgent_eu = c[1]
        .subscribe_query("topic=alerts&filter=priority%20%3E%3D%203%20%26%26%20region%20%3D%3D%20eu")
        .expect("priority >= 3 && region == eu");
    let untested_or_alert = c[1]
        .subscribe_query("topic=alerts&filter=%21exists%28test%29%20%7C%7C%20kind%20~%20%22alert%22")
        .expect("!exists(test) || kind ~ \"alert\"");
    c.wait_tree("alerts", &[1]);
    let origin = c.warm_up("alerts", &[0], &[&all]).remove(0);
    let published: Vec<(&str, BTreeMap<String, String>)> = vec![
        ("m1", headers(&[("priority", "5"), ("region", "eu")])),
        ("m2", headers(&[("priority", "2"), ("region", "eu")])),
        ("m3", headers(&[("priority", "10"), ("region", "us")])),
        ("m4", headers(&[("priority", "3"), ("region", "eu"), ("test", "1"), ("kind", "alert-high")])),
        ("m5", headers(&[("test", "yes"), ("kind", "info")])),
        ("m6", headers(&[("priority", "12"), ("region", "eu")])),
    ];
    let mut first = 0;
    for (payload, h) in &published {
        let id = c[0].publish_json(&json!({"topic": "alerts", "payload": payload, "headers": h}));
        if first == 0 {
            first = id.seq;
        }
    }
    // A binary body travels as base64.
    let binary = c[0].publish_json(
        &json!({"topic": "alerts", "payload_b64": "/wA=", "headers": {"priority": "9", "region": "eu"}}),
    );
    let last = binary.seq;
    wait_for("every message at the unfiltered subscription", Duration::from_secs(30), || {
        let acc = all.account(&origin, first, last);
        if acc.delivered == 7 { Ok(()) } else { Err(format!("{acc:?}")) }
    });
    let received = |s: &hearsay_tests::Subscription| -> Vec<(String, BTreeMap<String, String>)> {
        s.messages()
            .into_iter()
            .filter(|m| m.origin == origin && m.seq >= first)
            .map(|m| (m.payload.or(m.payload_b64).unwrap_or_default(), m.headers))
            .collect()
    };
    let expected = |names: &[&str]| -> Vec<(String, BTreeMap<String, String>)> {
        let mut v: Vec<_> = published
            .iter()
            .filter(|(p, _)| names.contains(p))
            .map(|(p, h)| (p.to_string(), h.clone()))
            .collect();
        if names.contains(&"binary") {
            v.push(("/wA=".to_string(), headers(&[("priority", "9"), ("region", "eu")])));
        }
        v
    };
    let want_urgent = expected(&["m1", "m4", "m6", "binary"]);
    let want_alert = expected(&["m1", "m2", "m3", "m4", "m6", "binary"]);
    wait_for("the filtered subscriptions to get theirs", Duration::from_secs(10), || {
        let (u, a) = (received(&urgent_eu), received(&untested_or_alert));
        if u.len() == want_urgent.len() && a.len() == want_alert.len() {
            Ok(())
        } else {
            Err(format!("{u:?} / {a:?}"))
        }
    });
    assert_eq!(
        received(&all),
        expected(&["m1", "m2", "m3", "m4", "m5", "m6", "binary"]),
        "everything, with its headers"
    );
    assert_eq!(received(&urgent_eu), want_urgent, "priority >= 3 && region == eu (numeric: 10 and 12 >= 3)");
    assert_eq!(received(&untested_or_alert), want_alert, "!exists(test) || kind ~ \"alert\"");
    let b = all.messages().into_iter().find(|m| m.seq == last).expect("the binary message");
    assert_eq!((b.payload, b.payload_b64.as_deref()), (None, Some("/wA=")));
    // What a filter leaves out is not a gap.
    for s in [&all, &urgent_eu, &untested_or_alert] {
        assert!(s.gaps().is_empty(), "{:?}", s.gaps());
    }
    // The published headers must be valid: a bad one is refused before anything is sent.
    let r = c[0]
        .call("POST", "/v1/publish", Some(&json!({"topic": "alerts", "headers": {"a b": "1"}})))
        .expect("answer");
    assert_eq!(r.status, 400, "{r:?}");
}

#[test]
fn an_expiring_subscription_ends_with_a_closing_line_and_leaves_the_topic() {
    let mut c = Cluster::new("expire");
    c.add(AgentSpec::new("solo"));
    let a = &c[0];
    let keep = a.subscribe("kept");
    let opened = Instant::now();
    let brief = a.subscribe_query("topic=brief&expire=1").expect("expire=1 accepted");
    a.publish("brief", "before the end");
    wait_for("the subscription to expire", Duration::from_secs(20), || {
        if brief.ended() { Ok(()) } else { Err("still open".into()) }
    });
    let lasted = opened.elapsed();
    assert!(lasted >= Duration::from_secs(1), "ended after {lasted:?}, before its expiry");
    let lines = brief.lines();
    assert_eq!(lines.last(), Some(&json!({"closed": {"reason": "the subscription expired"}})), "{lines:?}");
    assert_eq!(brief.payloads(), ["before the end"]);
    wait_for("the agent to leave `brief`", Duration::from_secs(10), || {
        let t = a.topic("brief")?;
        let subs = a.metrics().map(|m| metric_sample(&m, "hearsay_subscriptions"))?;
        // It published on `brief`, so it may still list it, as a publisher with no subscriber.
        match (t.as_ref().map(|t| (t["subscribers"].as_u64(), t["role"].as_str())), subs) {
            (None | Some((Some(0), Some("publisher"))), Some(1.0)) => Ok(()),
            _ => Err(format!("{t:?}, {subs:?} subscriptions")),
        }
    });
    assert!(a.topic("kept").expect("topics").is_some_and(|t| t["subscribers"] == 1));
    drop(keep);
}

#[test]
fn a_client_that_hangs_up_is_unsubscribed_and_the_cluster_learns_it() {
    let c = Cluster::start("hangup", 2);
    let _s0 = c[0].subscribe("room");
    let mut s1 = c[1].subscribe("room");
    c.wait_tree("room", &[0, 1]);
    assert_eq!(metric_sample(&c[1].metrics().expect("metrics"), "hearsay_subscriptions"), Some(1.0));
    s1.disconnect();
    wait_for("n1 to drop the subscription", Duration::from_secs(10), || {
        let subs = metric_sample(&c[1].metrics()?, "hearsay_subscriptions");
        let t = c[1].topic("room")?;
        let subscribed = t.as_ref().map(|t| t["subscribers"].clone());
        if subs == Some(0.0) && subscribed.as_ref().is_none_or(|s| *s == 0) {
            Ok(())
        } else {
            Err(format!("{subs:?} {t:?}"))
        }
    });
    wait_for("n0 to learn that n1 left the topic", Duration::from_secs(30), || {
        let t = c[0].topic("room")?.ok_or("n0 left the topic")?;
        if t["members"] == 0 { Ok(()) } else { Err(format!("{t}")) }
    });
}

#[test]
fn a_consumer_that_does_not_keep_up_is_closed_and_told_why() {
    let mut c = Cluster::new("slow");
    c.add(AgentSpec::new("solo"));
    let a = &c[0];
    let mut slow = a.subscribe_paused("topic=flood").expect("subscribed");
    // 2 KiB messages, 1,000 per `hearsay publish` run (one message per stdin line), until the
    // agent gives up on the subscriber: its queue (8,192 items) and the sockets' buffers full.
    let line = format!("{}\n", "x".repeat(2048));
    let batch = line.repeat(1000);
    let mut published = 0u64;
    wait_for("the agent to close the subscription", Duration::from_secs(120), || {
        if a.topic("flood")?.is_none_or(|t| t["subscribers"] == 0) {
            return Ok(());
        }
        assert!(published < 40_000, "40,000 messages and the subscription is still open");
        let out = a.cli_with_input(&["publish", "flood"], &batch);
        assert!(out.status.success(), "{out:?}");
        published += 1000;
        Err(format!("{published} published"))
    });
    slow.resume();
    wait_for("the stream to end", Duration::from_secs(60), || {
        if slow.ended() { Ok(()) } else { Err(format!("{} lines", slow.lines().len())) }
    });
    let lines = slow.lines();
    let reason = "the subscriber did not keep up (its queue of 8192 messages was full)";
    assert_eq!(lines.last(), Some(&json!({"closed": {"reason": reason}})));
    let seqs: Vec<u64> = slow.messages().iter().map(|m| m.seq).collect();
    assert!(seqs.len() >= 8192, "closed after {} messages", seqs.len());
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "what it got, it got in order");
    assert!((seqs.len() as u64) < published, "it did not get everything: {} of {published}", seqs.len());
    assert!(slow.gaps().is_empty());
    // The agent is fine: a new subscriber gets new messages.
    let fresh = a.subscribe("flood");
    let id = a.publish("flood", "after");
    wait_for("a new subscriber's message", Duration::from_secs(10), || {
        if fresh.messages().iter().any(|m| m.seq == id.seq) { Ok(()) } else { Err("not yet".into()) }
    });
}
