//! The local API's answers to mistakes, and the agent's answer to a bad config, seen from
//! outside: real `hearsay agent` processes on 127.0.0.1.

use std::io::{Read, Write};
use std::time::Duration;

use hearsay_tests::{Agent, AgentSpec, Cluster, Reply, wait_for};
use serde_json::{Value, json};

/// Status and body of a request to `a`'s API (`body`: POST it, else GET); panics if no answer.
fn call(a: &Agent, path: &str, body: Option<&Value>) -> Reply {
    let method = if body.is_some() { "POST" } else { "GET" };
    a.call(method, path, body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Status line and body of a raw HTTP/1.1 request (for what a client library will not send).
fn raw(a: &Agent, request: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(a.api()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

#[test]
fn every_mistake_gets_its_status_and_a_json_error_that_says_what_is_wrong() {
    let mut c = Cluster::new("api");
    c.add(AgentSpec::new("solo"));
    let a = &c[0];

    let r = call(a, "/v1/publish", Some(&json!({"topic": "news", "payload": "hi"})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((r.body["topic"].as_str(), r.body["seq"].as_u64()), (Some("news"), Some(1)), "{r:?}");

    let cases: Vec<(&str, Option<Value>, u16, &str)> = vec![
        ("/v1/publish", Some(json!({"topic": "", "payload": "x"})), 400, "topic name must be 1 to 256 bytes"),
        (
            "/v1/publish",
            Some(json!({"topic": "t".repeat(257), "payload": "x"})),
            400,
            "topic name must be 1 to 256 bytes",
        ),
        (
            "/v1/publish",
            Some(json!({"topic": "t", "payload": "x", "payload_b64": "eA=="})),
            400,
            "give either payload or payload_b64, not both",
        ),
        ("/v1/publish", Some(json!({"topic": "t", "payload_b64": "%%%"})), 400, "payload_b64 is not base64"),
        ("/v1/publish", Some(json!({"topic": "t", "headers": {"9x": "1"}})), 400, "header name `9x`"),
        ("/v1/publish", Some(json!({"payload": "x"})), 400, "bad publish request: missing field `topic`"),
        (
            "/v1/publish",
            Some(json!({"topic": "t", "payload": "x".repeat(300 * 1024)})),
            413,
            "message body of 307200 bytes exceeds the maximum message size of 262144 bytes",
        ),
        (
            "/v1/query",
            Some(json!({"fn": "median", "name": "load"})),
            400,
            "bad query request: unknown variant `median`, expected one of `avg`, `sum`, `count`, `min`, `max`",
        ),
        ("/v1/query", Some(json!({"fn": "avg"})), 400, "bad query request: missing field `name`"),
        ("/v1/query", Some(json!({"fn": "avg", "name": ""})), 400, "attribute name is empty"),
        ("/v1/values", Some(json!({"name": "", "value": 1.0})), 400, "attribute name"),
        (
            "/v1/values",
            Some(json!({"name": "load", "value": "high"})),
            400,
            "bad value request: invalid type: string \"high\", expected f64",
        ),
        ("/v1/subscribe?topic=", None, 400, "topic name must be"),
        (
            "/v1/subscribe",
            None,
            400,
            "bad subscribe query: Failed to deserialize query string: missing field `topic` (expected ?topic=NAME[&filter=EXPR][&expire=SECS][&durable=NAME][&from=new|all|TIME])",
        ),
        ("/v1/subscribe?topic=t&filter=a%20%3D%3D", None, 400, "filter error"),
        ("/v1/subscribe?topic=t&filter=priority%20%3E%3D%20%28", None, 400, "filter error"),
        ("/v1/subscribe?topic=t&expire=-1", None, 400, "expire must be a positive number of seconds, got -1"),
        ("/v1/subscribe?topic=t&expire=0", None, 400, "expire must be a positive number of seconds, got 0"),
        ("/v1/subscribe?topic=t&expire=soon", None, 400, "bad subscribe query"),
        ("/v1/nothing", None, 404, "no such endpoint; see the README's API table"),
    ];
    for (path, body, expected, says) in cases {
        let r = match path {
            p if p.starts_with("/v1/subscribe") => a
                .subscribe_query(p.trim_start_matches("/v1/subscribe").trim_start_matches('?'))
                .expect_err("refused"),
            _ => call(a, path, body.as_ref()),
        };
        assert_eq!(r.status, expected, "{path}: {r:?}");
        assert!(r.error().contains(says), "{path}: {r:?} does not say {says:?}");
    }

    // A body that is not JSON at all, and a number JSON cannot carry as a finite f64.
    for (path, body, says) in [
        ("/v1/publish", &b"{\"topic\": "[..], "bad publish request: EOF while parsing a value"),
        (
            "/v1/values",
            &b"{\"name\": \"load\", \"value\": 1e999}"[..],
            "bad value request: number out of range",
        ),
        ("/v1/query", &b"avg(load)"[..], "bad query request: expected value"),
    ] {
        let r = a.post_raw(path, body).expect("an answer");
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert!(r.error().starts_with(says), "{path}: {r:?} does not say {says:?}");
    }

    // A request body one byte over the server's 2 MiB limit (all of it sent, so the client
    // reads the answer rather than a reset).
    let over = (2 << 20) + 1;
    let (status, body) = raw(
        a,
        &format!(
            "POST /v1/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {over}\r\n\r\n{}",
            a.api(),
            "x".repeat(over)
        ),
    );
    assert!(status.starts_with("HTTP/1.1 413"), "{status}: {body}");
    let v: Value = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    assert!(v["error"].as_str().is_some_and(|e| e.starts_with("cannot read the request body")), "{body}");
    assert!(body.contains("at most 2097152 bytes"), "413 names the limit: {body}");

    // 504: a query that does not answer within the API's timeout (set to 1 ms by the test
    // control; 60 s otherwise).
    a.post("/v1/values", &json!({"name": "load", "value": 2.0})).expect("set a value");
    a.control(&json!({"query_timeout_ms": 1}));
    let r = a.query("avg", "load").expect("an answer");
    assert_eq!((r.status, r.error()), (504, "the query did not converge in time"), "{r:?}");
    let settings = a.control(&json!({"query_timeout_ms": 60_000}));
    assert_eq!(settings, json!({"blocked": [], "loss": 0.0, "delay_ms": 0, "query_timeout_ms": 60_000}));
    let r = a.query("avg", "load").expect("an answer");
    assert_eq!((r.status, r.body["value"].as_f64()), (200, Some(2.0)), "{r:?}");

    // The test control refuses what it cannot apply.
    let r = call(a, "/v1/test/control", Some(&json!({"loss": 2.0})));
    assert_eq!((r.status, r.error()), (400, "test control: loss must be in [0, 1], got 2"), "{r:?}");
    let r = call(a, "/v1/test/control", Some(&json!({"cut": []})));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("unknown field `cut`"), "{r:?}");

    // 409: more topics than a member can advertise.
    let subs: Vec<_> = (0..64).map(|i| a.subscribe(&format!("topic-{i}"))).collect();
    let r = a.subscribe_query("topic=one-too-many").expect_err("refused");
    assert_eq!((r.status, r.error()), (409, "at most 64 topics can be subscribed at once"), "{r:?}");
    // A second subscription to a topic already subscribed is not a new topic.
    let again = a.subscribe("topic-0");
    drop((subs, again));

    // Without --test-control the control is not there.
    let plain = c.add(AgentSpec { test_control: false, ..AgentSpec::new("plain") });
    let r = call(&c[plain], "/v1/test/control", Some(&json!({"blocked": []})));
    assert_eq!((r.status, r.error()), (404, "no such endpoint; see the README's API table"), "{r:?}");
}

#[test]
fn a_request_to_an_agent_that_is_leaving_is_answered_503() {
    let mut c = Cluster::start("stopping", 2);
    // n1 cannot reach n0: its leave is never acknowledged, so it stays `leaving` for its
    // leave timeout (5 s) and takes no more commands.
    c[1].control(&json!({"blocked": [c[0].addr()]}));
    let api = c[1].api();
    c[1].signal_term();
    let r = wait_for("a publish to n1 to be refused", Duration::from_secs(20), || {
        let r = hearsay_tests::Agent::call(
            &c[1],
            "POST",
            "/v1/publish",
            Some(&json!({"topic": "t", "payload": "x"})),
        )?;
        if r.status == 200 { Err("still accepted".into()) } else { Ok(r) }
    });
    assert_eq!((r.status, r.error()), (503, "the node is stopping"), "{api}: {r:?}");
    let status = c[1].wait_exit(Duration::from_secs(20)).expect("n1 exits after its leave timeout");
    assert!(status.success(), "{status:?}");
}

#[test]
fn an_agent_with_a_bad_setting_refuses_to_start_naming_the_key() {
    let mut c = Cluster::new("config");
    let i = c.launch(AgentSpec::new("bad").args(&["--advertise", "0.0.0.0:7946"]));
    let status = c[i].wait_exit(Duration::from_secs(20)).expect("the agent exits by itself");
    assert_eq!(status.code(), Some(1));
    let log = c[i].log_text();
    assert!(log.contains("error: `advertise` (--advertise): 0.0.0.0:7946 cannot be dialled"), "{log}");

    let file = c.dir().join("agent.toml");
    std::fs::write(&file, "preset = \"lan\"\nlog = \"hearsay=loud\"\n").expect("write config");
    let i = c.launch(AgentSpec::new("bad2").args(&["--config", file.to_str().expect("path")]));
    let status = c[i].wait_exit(Duration::from_secs(20)).expect("the agent exits by itself");
    assert_eq!(status.code(), Some(1));
    let log = c[i].log_text();
    assert!(log.contains("error: `log` (--log): `hearsay=loud` is not a log filter"), "{log}");

    // A key the file does not know: refused, naming it and the file.
    let file = c.dir().join("typo.toml");
    std::fs::write(&file, "preset = \"local\"\nnmae = \"x\"\n").expect("write config");
    let i = c.launch(AgentSpec::new("bad3").args(&["--config", file.to_str().expect("path")]));
    let status = c[i].wait_exit(Duration::from_secs(20)).expect("the agent exits by itself");
    assert_eq!(status.code(), Some(1));
    let log = c[i].log_text();
    assert!(log.contains(&format!("error: config file {}", file.display())), "{log}");
    assert!(log.contains("unknown field `nmae`"), "{log}");

    // A file that is not there.
    let missing = c.dir().join("missing.toml");
    let i = c.launch(AgentSpec::new("bad4").args(&["--config", missing.to_str().expect("path")]));
    let status = c[i].wait_exit(Duration::from_secs(20)).expect("the agent exits by itself");
    assert_eq!(status.code(), Some(1));
    let log = c[i].log_text();
    assert!(log.contains(&format!("error: config file {}", missing.display())), "{log}");
}
