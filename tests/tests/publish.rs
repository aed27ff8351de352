//! What a publisher is told, seen from outside (real `hearsay agent` processes on 127.0.0.1):
//! the publish reply counts the subscribers the agent knows of and warns when there are none
//! (the CLI prints the warning on stderr); the maximum message size is a setting
//! (`--max-message-bytes`, config key `max_message_bytes`), a larger publish gets 413 naming
//! the limit, and a receiver takes what a publisher's larger setting allows.

use std::time::Duration;

use hearsay_tests::{Agent, AgentSpec, Cluster, wait_for};
use serde_json::{Value, json};

/// Status and JSON body of a publish of `payload` on `topic` through `a`'s API.
fn publish(a: &Agent, topic: &str, payload: &str) -> (u16, Value) {
    let body = json!({"topic": topic, "payload": payload});
    let reply = a.call("POST", "/v1/publish", Some(&body)).unwrap_or_else(|e| panic!("publish: {e}"));
    (reply.status, reply.body)
}

/// Start `a` (with `extra` flags) and `b` joining it; wait until both see both alive.
fn pair(label: &str, extra: &[&str]) -> Cluster {
    let mut c = Cluster::new(label);
    c.add(AgentSpec::new("a").args(extra));
    let seed = c[0].addr();
    c.add(AgentSpec::new("b").join(&[seed]));
    c.wait_converged();
    c
}

#[test]
fn a_publish_counts_the_known_subscribers_and_warns_when_there_are_none() {
    let c = pair("publish-subscribers", &[]);
    let (a, b) = (&c[0], &c[1]);

    let (status, v) = publish(a, "news", "to nobody");
    assert_eq!(status, 200, "not an error: {v}");
    assert_eq!(v["subscribers"], 0, "{v}");
    let warning = v["warning"].as_str().unwrap_or_default();
    assert!(warning.starts_with("no subscriber known for topic `news`"), "{v}");

    let out = a.cli(&["publish", "news", "still nobody"]);
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "the CLI publish succeeds: {stderr}");
    assert!(stderr.contains("warning: no subscriber known for topic `news`"), "{stderr}");
    assert!(stdout.starts_with("news ") && stdout.contains("seq 2 (0 subscribers known)"), "{stdout}");

    // b subscribes: a learns it through membership, and stops warning.
    let sub = b.subscribe("news");
    let v = wait_for("a to know of b's subscription", Duration::from_secs(30), || {
        let (_, v) = publish(a, "news", "to b");
        if v["subscribers"] == 1 { Ok(v) } else { Err(format!("publish said {v}")) }
    });
    assert!(v.get("warning").is_none(), "no warning with a subscriber: {v}");
    wait_for("b to receive a message", Duration::from_secs(30), || {
        if sub.messages().is_empty() { Err("nothing yet".to_string()) } else { Ok(()) }
    });

    // A local subscription counts too.
    let _mine = a.subscribe("news");
    let (_, v) = publish(a, "news", "to both");
    assert_eq!(v["subscribers"], 2, "{v}");
}

#[test]
fn the_maximum_message_size_is_a_setting_and_an_oversized_publish_gets_413_naming_it() {
    let c = pair("publish-size", &["--max-message-bytes", "600000"]);
    let (a, b) = (&c[0], &c[1]);

    // b keeps the default, 256 KiB: over it is 413 with the limit in the error.
    let (status, v) = publish(b, "big", &"x".repeat(256 * 1024 + 1));
    assert_eq!(status, 413, "{v}");
    let e = v["error"].as_str().unwrap_or_default();
    assert!(e.contains("262145 bytes exceeds the maximum message size of 262144 bytes"), "{e}");
    assert!(e.contains("--max-message-bytes"), "the error names the setting: {e}");
    let (status, v) = publish(a, "big", &"x".repeat(600_001));
    assert_eq!(status, 413, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("maximum message size of 600000 bytes"), "{v}");

    // a's 500 KB message reaches b, whose own setting is smaller: receivers take what any
    // publisher's setting allows.
    let sub = b.subscribe("big");
    wait_for("a to know of b's subscription", Duration::from_secs(30), || {
        let (_, v) = publish(a, "big", "small");
        if v["subscribers"] == 1 { Ok(()) } else { Err(format!("publish said {v}")) }
    });
    let body = "y".repeat(500_000);
    let (status, v) = publish(a, "big", &body);
    assert_eq!(status, 200, "{v}");
    let got = wait_for("b to receive a's 500 KB message", Duration::from_secs(30), || {
        let got = sub.messages().into_iter().find_map(|m| m.payload.filter(|p| p.len() == body.len()));
        got.ok_or_else(|| "not yet".to_string())
    });
    assert!(got == body, "the body arrives whole");
}

#[test]
fn a_maximum_message_size_beyond_what_a_frame_can_carry_is_refused_at_start() {
    let mut c = Cluster::new("publish-bound");
    let file = c.dir().join("agent.toml");
    std::fs::write(&file, "max_message_bytes = 2000000\n").expect("write config");
    let i = c.launch(AgentSpec::new("big").args(&["--config", file.to_str().unwrap_or("")]));
    let a = &mut c[i];
    let status = a.wait_exit(Duration::from_secs(10)).expect("the agent exits by itself");
    assert!(!status.success());
    let log = a.log_text();
    assert!(
        log.contains("`max_message_bytes` (--max-message-bytes): 2000000 bytes: must be 1 to 1032192 bytes"),
        "{log}"
    );
}
