//! The local API guarded (issue 12 case 9) and secrets kept private (case 10), seen from
//! outside: what a web page in a browser on the same host can send is refused, a token is
//! required when the agent has one (and the CLI sends it), subscriptions are capped, and a
//! secret file others can read stops the agent at start.

use std::io::{Read, Write};
use std::time::Duration;

use hearsay_tests::{Agent, AgentSpec, Cluster, wait_for};

/// Status line and body of a raw HTTP/1.1 request (for headers a client library sets itself).
fn raw(a: &Agent, request: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(a.api()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// A POST of `body` to `path` with these extra header lines.
fn post(a: &Agent, path: &str, host: &str, headers: &str, body: &str) -> (String, String) {
    raw(
        a,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A GET of `path` with these extra header lines.
fn get(a: &Agent, path: &str, host: &str, headers: &str) -> (String, String) {
    raw(a, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"))
}

#[test]
fn a_web_page_on_the_same_host_can_neither_publish_nor_read() {
    let mut c = Cluster::new("guard");
    c.add(AgentSpec::new("solo"));
    let a = &c[0];
    let host = a.api().to_string();
    let publish = r#"{"topic": "news", "payload": "forged"}"#;

    // A form or fetch with no preflight: text/plain (or no type at all).
    let (status, body) = post(a, "/v1/publish", &host, "Content-Type: text/plain\r\n", publish);
    assert!(status.starts_with("HTTP/1.1 415"), "{status}: {body}");
    assert!(body.contains("Content-Type: application/json"), "{body}");
    let (status, body) = post(a, "/v1/values", &host, "", r#"{"name": "load", "value": 1}"#);
    assert!(status.starts_with("HTTP/1.1 415"), "{status}: {body}");

    // A page of another origin, even with the right type.
    let evil = "Content-Type: application/json\r\nOrigin: http://evil.example\r\n";
    let (status, body) = post(a, "/v1/publish", &host, evil, publish);
    assert!(status.starts_with("HTTP/1.1 403"), "{status}: {body}");

    // DNS rebinding: the browser sends the page's own name as Host.
    let (status, body) = get(a, "/v1/members", &format!("evil.example:{}", a.api().port()), "");
    assert!(status.starts_with("HTTP/1.1 421"), "{status}: {body}");
    let (status, _) = get(a, "/v1/members", &format!("localhost:{}", a.api().port()), "");
    assert!(status.starts_with("HTTP/1.1 200"), "localhost is fine: {status}");

    // Nothing forged got through: the first real publish is seq 1.
    let (status, body) = post(a, "/v1/publish", &host, "Content-Type: application/json\r\n", publish);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}: {body}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON");
    assert_eq!(v["seq"].as_u64(), Some(1), "{body}");
}

#[test]
fn an_agent_with_a_token_answers_only_requests_that_carry_it_and_the_cli_sends_it() {
    let mut c = Cluster::new("token");
    let token = c.dir().join("api.token");
    std::fs::write(&token, "correct-horse-battery-staple\n").expect("write token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let file = token.to_str().expect("path");

    // Beyond loopback without a token: refused at start, saying what to do.
    let mut open = AgentSpec::new("open");
    open.api_ip = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    open.auto_token = false;
    let i = c.launch(open);
    let status = c[i].wait_exit(Duration::from_secs(20)).expect("the agent exits by itself");
    assert_eq!(status.code(), Some(1));
    let log = c[i].log_text();
    assert!(log.contains("is reachable beyond this host") && log.contains("--api-token-file"), "{log}");

    let mut guarded = AgentSpec::new("guarded").args(&["--api-token-file", file]);
    guarded.api_ip = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    guarded.auto_token = false;
    let g = c.add(guarded);
    let a = &c[g];
    let host = format!("127.0.0.1:{}", a.api().port());
    let (status, body) = get(a, "/v1/status", &host, "");
    assert!(status.starts_with("HTTP/1.1 401"), "{status}: {body}");
    let (status, _) = get(a, "/v1/status", &host, "Authorization: Bearer not-the-token-at-all\r\n");
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let (status, body) =
        get(a, "/v1/status", &host, "Authorization: Bearer correct-horse-battery-staple\r\n");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}: {body}");

    let out = a.cli(&["publish", "news", "no token"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    let out = a.cli(&["--api-token-file", file, "publish", "news", "with token"]);
    assert!(out.status.success(), "{}", out.stderr);
    let out = a.cli(&["--api-token-file", file, "status", "--json"]);
    assert!(out.status.success() && out.stdout.contains("\"name\":\"guarded\""), "{out:?}");
}

#[test]
fn subscriptions_beyond_the_cap_are_refused_with_503_naming_the_limit() {
    let mut c = Cluster::new("subcap");
    c.add(AgentSpec::new("solo").args(&["--max-subscriptions", "2"]));
    let a = &c[0];
    let first = a.subscribe("news");
    let _second = a.subscribe("other");
    let Err(refused) = a.subscribe_query("topic=news") else { panic!("a third subscription was served") };
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.error().contains("at most 2"), "{refused:?}");

    // A subscriber that hangs up gives its slot back (noticed at the next write to it).
    let mut first = first;
    first.disconnect();
    let mut again = None;
    wait_for("a slot to free", Duration::from_secs(20), || {
        a.publish("news", "nudge");
        match a.subscribe_query("topic=news") {
            Ok(s) => {
                again = Some(s);
                Ok(())
            }
            Err(r) => Err(format!("HTTP {}: {}", r.status, r.body)),
        }
    });
}

#[cfg(unix)]
#[test]
fn a_cluster_secret_others_can_read_stops_the_agent_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut c = Cluster::new("secretmode");
    let loose = c.dir().join("loose.key");
    std::fs::copy(c.secret(), &loose).expect("copy the secret");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let i = c.launch(AgentSpec::new("loose").secret(&loose));
    let status = c[i].wait_exit(Duration::from_secs(20)).expect("the agent exits by itself");
    assert_eq!(status.code(), Some(1));
    let log = c[i].log_text();
    assert!(log.contains("is readable by others (mode 644)") && log.contains("chmod 600"), "{log}");
}
