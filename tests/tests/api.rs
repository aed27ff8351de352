//! The local API's answers to mistakes, and the agent's answer to a bad config, seen from
//! outside: a real `hearsay agent` process on 127.0.0.1.

use std::time::Duration;

use hearsay_tests::{Agent, TempDir, keygen};
use serde_json::{Value, json};

/// Status and JSON body of a request to `a`'s API (`body`: POST it, else GET).
fn call(a: &Agent, path: &str, body: Option<&Value>) -> (u16, Value) {
    let http = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build(),
    );
    let url = format!("http://{}{path}", a.api);
    let mut resp = match body {
        Some(b) => http.post(&url).send_json(b),
        None => http.get(&url).call(),
    }
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The `error` of a reply, or an empty string.
fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

#[test]
fn every_mistake_gets_its_status_and_a_json_error_that_says_what_is_wrong() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("api");
    let secret = keygen(dir.path(), "cluster.key");
    let a = Agent::start(dir.path(), "solo", &secret, &[], &[]);
    a.wait_ready();

    let (status, v) = call(&a, "/v1/publish", Some(&json!({"topic": "news", "payload": "hi"})));
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["topic"].as_str(), v["seq"].as_u64()), (Some("news"), Some(1)), "{v}");

    // (A request body over the server's 2 MiB limit is a JSON 413 too, but the server answers
    // before reading it all, so the client may see a broken pipe first: a unit test in
    // node/src/api/error.rs covers it.)
    let cases: Vec<(&str, Option<Value>, u16, &str)> = vec![
        ("/v1/publish", Some(json!({"topic": "", "payload": "x"})), 400, "topic name must be 1 to 256 bytes"),
        ("/v1/publish", Some(json!({"topic": "t", "payload": "x", "payload_b64": "eA=="})), 400, "not both"),
        ("/v1/publish", Some(json!({"topic": "t", "payload_b64": "%%%"})), 400, "payload_b64 is not base64"),
        ("/v1/publish", Some(json!({"topic": "t", "headers": {"9x": "1"}})), 400, "header name `9x`"),
        ("/v1/publish", Some(json!({"topic": "t", "payload": "x".repeat(300 * 1024)})), 413, "exceeds"),
        (
            "/v1/query",
            Some(json!({"fn": "median", "name": "load"})),
            400,
            "`avg`, `sum`, `count`, `min`, `max`",
        ),
        ("/v1/query", Some(json!({"fn": "avg", "name": ""})), 400, "attribute name is empty"),
        ("/v1/values", Some(json!({"name": "", "value": 1.0})), 400, "attribute name"),
        ("/v1/subscribe?topic=", None, 400, "topic name must be"),
        ("/v1/subscribe?topic=t&filter=a%20%3D%3D", None, 400, "filter error"),
        ("/v1/subscribe?topic=t&expire=-1", None, 400, "expire must be a positive number"),
        ("/v1/nothing", None, 404, "no such endpoint"),
    ];
    for (path, body, expected, says) in cases {
        let (status, v) = call(&a, path, body.as_ref());
        assert_eq!(status, expected, "{path}: {v}");
        assert!(error(&v).contains(says), "{path}: {status} {v} does not say {says:?}");
    }
}

#[test]
fn an_agent_with_a_bad_setting_refuses_to_start_naming_the_key() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("config");
    let secret = keygen(dir.path(), "cluster.key");
    let mut a = Agent::start(dir.path(), "bad", &secret, &[], &["--advertise", "0.0.0.0:7946"]);
    let status = a.wait_exit(Duration::from_secs(10)).expect("the agent exits by itself");
    assert!(!status.success());
    let log = a.log_text();
    assert!(log.contains("`advertise` (--advertise): 0.0.0.0:7946 cannot be dialled"), "{log}");

    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "preset = \"lan\"\nlog = \"hearsay=loud\"\n").expect("write config");
    let mut a = Agent::start(dir.path(), "bad2", &secret, &[], &["--config", file.to_str().unwrap_or("")]);
    let status = a.wait_exit(Duration::from_secs(10)).expect("the agent exits by itself");
    assert!(!status.success());
    let log = a.log_text();
    assert!(log.contains("`log` (--log): `hearsay=loud` is not a log filter"), "{log}");
}
