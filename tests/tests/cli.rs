//! Every `hearsay` command as a user types it, against real agents: what it prints (tables and
//! `--json`), its exit status, and its errors. `demo` and `bench` have their own files.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use hearsay_tests::{Background, Cluster, Ready, TempDir, binary, run, wait_for};
use serde_json::Value;

/// A `hearsay --api API ARGS` running in the background.
fn background(api: std::net::SocketAddr, args: &[&str]) -> Background {
    Background::spawn(Command::new(binary()).arg("--api").arg(api.to_string()).args(args))
}

/// The JSON lines a background command printed.
fn json_lines(b: &Background) -> Vec<Value> {
    b.lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn parse(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn every_command_talks_to_a_real_agent_and_prints_what_the_readme_says() {
    let c = Cluster::start("cli", 3);
    let ids: Vec<String> = c.agents().iter().map(|a| a.id()).collect();

    // members: every member once, alive, with the id and address its agent reported.
    let out = c[0].cli(&["members", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let members = parse(&out.stdout);
    let list = members.as_array().expect("an array");
    assert_eq!(list.len(), 3, "{members}");
    for (i, a) in c.agents().iter().enumerate() {
        let m =
            list.iter().find(|m| m["name"] == a.name.as_str()).unwrap_or_else(|| panic!("n{i} in {members}"));
        assert_eq!(m["id"], a.id().as_str());
        assert_eq!(m["addr"], a.addr().to_string().as_str());
        assert_eq!(m["state"], "alive");
        assert!(m["incarnation"].is_u64() && m["ring_id"].as_str().is_some_and(|r| r.len() == 16), "{m}");
    }
    let out = c[0].cli(&["members"]);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<&str> = out.stdout.lines().collect();
    assert!(
        rows[0].starts_with("NAME") && rows[0].contains("STATE") && rows[0].contains("RING ID"),
        "{}",
        out.stdout
    );
    assert_eq!(rows.len(), 4, "a header and three members: {}", out.stdout);
    for (i, id) in ids.iter().enumerate() {
        assert!(
            rows.iter()
                .any(|r| r.starts_with(&format!("n{i} ")) && r.contains("alive") && r.contains(&id[..16])),
            "{}",
            out.stdout
        );
    }
    // HEARSAY_API names the agent when --api does not.
    let out = run(
        Command::new(binary()).args(["members", "--json"]).env("HEARSAY_API", c[1].api().to_string()),
        Duration::from_secs(30),
    );
    assert!(out.status.success() && parse(&out.stdout).as_array().is_some_and(|l| l.len() == 3), "{out:?}");

    // subscribe: as JSON, as text, and with a filter; all on n2.
    let json_sub = background(c[2].api(), &["subscribe", "news", "--json"]);
    let text_sub = background(c[2].api(), &["subscribe", "news"]);
    let urgent = background(c[2].api(), &["subscribe", "news", "--filter", "priority >= 3", "--json"]);
    wait_for("n2's three subscriptions", Duration::from_secs(20), || {
        let t = c[2].topic("news")?.ok_or("not subscribed yet")?;
        if t["subscribers"] == 3 { Ok(()) } else { Err(format!("{t}")) }
    });
    c.wait_tree("news", &[2]);
    // Until n0's stream reaches n2 (observable: a line on the JSON subscription).
    wait_for("n0's stream to reach n2", Duration::from_secs(30), || {
        let out = c[0].cli(&["publish", "news", "warm-up"]);
        assert!(out.status.success(), "{out:?}");
        if json_lines(&json_sub).is_empty() { Err("nothing yet".into()) } else { Ok(()) }
    });

    // publish: one message with headers (JSON), then stdin lines (text).
    let out = c[0].cli(&["publish", "news", "hello", "-H", "priority=5", "-H", "region=eu", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let id = parse(&out.stdout);
    assert_eq!(id["topic"], "news");
    let origin = id["origin"].as_str().expect("origin").to_string();
    let seq = id["seq"].as_u64().expect("seq");
    let out = c[0].cli_with_input(&["publish", "news", "-H", "priority=1"], "one\ntwo\nthree\n");
    assert!(out.status.success(), "{out:?}");
    // One id per line, with the subscribers the agent knew of at that moment (n2's
    // subscription may reach n0 between two lines: 0, then 1).
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one id per line: {lines:?}");
    for (k, line) in lines.iter().enumerate() {
        let id = format!("news {} seq {} (", &origin[..16], seq + 1 + k as u64);
        let count = line.strip_prefix(&id).unwrap_or_else(|| panic!("{line:?} starts with {id:?}"));
        assert!(["0 subscribers known)", "1 subscriber known)"].contains(&count), "{line:?}");
    }
    wait_for("the four messages at n2", Duration::from_secs(30), || {
        let got =
            json_lines(&json_sub).iter().filter(|v| v["seq"].as_u64().is_some_and(|s| s >= seq)).count();
        if got == 4 { Ok(()) } else { Err(format!("{got} of 4")) }
    });
    let got: Vec<Value> =
        json_lines(&json_sub).into_iter().filter(|v| v["seq"].as_u64().is_some_and(|s| s >= seq)).collect();
    assert_eq!(
        got[0],
        serde_json::json!({"topic": "news", "origin": origin, "seq": seq, "payload": "hello", "headers": {"priority": "5", "region": "eu"}})
    );
    let payloads: Vec<&str> = got.iter().filter_map(|v| v["payload"].as_str()).collect();
    assert_eq!(payloads, ["hello", "one", "two", "three"]);
    wait_for("the filtered and text subscriptions", Duration::from_secs(10), || {
        let u: Vec<Value> = json_lines(&urgent);
        let t = text_sub.lines();
        if u.len() == 1 && t.iter().any(|l| l.ends_with(" three")) {
            Ok(())
        } else {
            Err(format!("{u:?} / {t:?}"))
        }
    });
    assert_eq!(json_lines(&urgent)[0]["payload"], "hello", "only priority 5 passes `priority >= 3`");
    assert!(
        text_sub.lines().contains(&format!("news {}:{seq} hello", &origin[..16])),
        "{:?}",
        text_sub.lines()
    );

    // value set and query.
    for (i, a) in c.agents().iter().enumerate() {
        let out = a.cli(&["value", "set", "load", &(i + 1).to_string()]);
        assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    }
    let out = c[1].cli(&["query", "avg", "load", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let q = parse(&out.stdout);
    assert!((q["value"].as_f64().unwrap_or(0.0) - 2.0).abs() < 1e-3, "{q}");
    assert_eq!(
        (&q["fn"], &q["name"], &q["nodes"], &q["converged"]),
        (&"avg".into(), &"load".into(), &3.into(), &true.into())
    );
    let out = c[1].cli(&["query", "sum", "load"]);
    assert!(out.status.success(), "{out:?}");
    // `sum load = 6.000001  (converged after 12 rounds, 3 nodes in view)`
    let sum: f64 = out
        .stdout
        .strip_prefix("sum load = ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!((sum - 6.0).abs() < 6e-3, "{out:?}");
    assert!(
        out.stdout.contains("(converged after ") && out.stdout.contains(" rounds, 3 nodes in view)"),
        "{out:?}"
    );
    let out = c[1].cli(&["value", "set", "load", "inf"]);
    assert_eq!((out.status.code(), out.stderr.trim()), (Some(1), "error: the value must be a finite number"));
    let out = c[1].cli(&["query", "median", "load"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("invalid value 'median'") && out.stderr.contains("avg, sum, count, min, max"),
        "{}",
        out.stderr
    );

    // topics.
    let out = c[2].cli(&["topics", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let topics = parse(&out.stdout);
    let news = topics.as_array().and_then(|l| l.iter().find(|t| t["topic"] == "news")).expect("news");
    assert_eq!(news["subscribers"], 3, "{news}");
    // The topic's id on the wire, pinned: the first 8 bytes of SHA-256("hearsay/topic/news"),
    // computed once outside hearsay; if it changes, agents of two versions no longer meet.
    assert_eq!(news["topic_id"], "f272838904bb48eb", "{news}");
    assert!(
        news["depth"].is_u64() && ["root", "member"].contains(&news["role"].as_str().unwrap_or("")),
        "{news}"
    );
    let out = c[2].cli(&["topics"]);
    let header = out.stdout.lines().next().unwrap_or("");
    for col in ["TOPIC", "ROLE", "SUBS", "MEMBERS", "DEPTH", "PARENT", "CHILDREN"] {
        assert!(header.contains(col), "{}", out.stdout);
    }
    assert!(out.stdout.lines().any(|l| l.starts_with("news ")), "{}", out.stdout);

    // ring: every peer it names is a member.
    let out = c[0].cli(&["ring", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let ring = parse(&out.stdout);
    assert_eq!(ring["me"]["id"], ids[0].as_str(), "{ring}");
    let known: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let successors = ring["successors"].as_array().expect("successors");
    assert!(!successors.is_empty(), "{ring}");
    for p in
        successors.iter().chain(ring["fingers"].as_array().expect("fingers")).chain([&ring["predecessor"]])
    {
        assert!(known.contains(p["id"].as_str().unwrap_or("")), "{p} is not a member: {ring}");
    }
    let out = c[0].cli(&["ring"]);
    assert!(
        out.stdout.starts_with("me ")
            && out.stdout.contains("\npredecessor ")
            && out.stdout.contains("\nsuccessor 0"),
        "{}",
        out.stdout
    );

    // subscribe --expire ends by itself, exit 0, saying why.
    let started = Instant::now();
    let out = c[2].cli(&["subscribe", "news", "--expire", "1", "--json"]);
    assert!(out.status.success() && started.elapsed() >= Duration::from_secs(1), "{out:?}");
    assert_eq!(out.stdout.lines().last(), Some(r#"{"closed":{"reason":"the subscription expired"}}"#));
    let out = c[2].cli(&["subscribe", "news", "--expire", "0.5"]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.contains("subscription closed by the agent: the subscription expired"), "{out:?}");

    // Mistakes: the message says what to do, the status is not 0.
    let out = run(Command::new(binary()).args(["--api", "127.0.0.1:1", "members"]), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.starts_with("error: cannot reach the agent's API at http://127.0.0.1:1"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("is `hearsay agent` running there? set --api or HEARSAY_API"),
        "{}",
        out.stderr
    );
    let out = c[0].cli(&["publish", "news", "x", "-H", "novalue"]);
    assert_eq!(
        (out.status.code(), out.stderr.trim()),
        (Some(1), "error: header `novalue` is not NAME=VALUE")
    );
    let out = c[2].cli(&["subscribe", "news", "--filter", "priority >="]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("filter error") && out.stderr.contains("(HTTP 400)"), "{}", out.stderr);
    let out = c[0].cli(&["publish", "", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("topic name must be 1 to 256 bytes"), "{}", out.stderr);
}

#[test]
fn keygen_writes_a_private_secret_and_refuses_to_overwrite_it() {
    let dir = TempDir::new("keygen");
    let path = dir.path().join("cluster.key");
    let keygen =
        || run(Command::new(binary()).arg("keygen").arg("--out").arg(&path), Duration::from_secs(20));
    let out = keygen();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains(&format!("wrote a new cluster secret to {}", path.display())), "{out:?}");
    let secret = std::fs::read_to_string(&path).expect("the secret");
    assert_eq!(secret.len(), 65, "64 hex digits and a newline: {secret:?}");
    assert!(secret.trim_end().chars().all(|c| c.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "readable by its owner only");
    }
    let out = keygen();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{} exists: keygen refuses to overwrite a cluster secret", path.display())),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&path).expect("the secret"), secret, "unchanged");
    // Two secrets are different.
    let other = dir.path().join("other.key");
    let out = run(Command::new(binary()).arg("keygen").arg("--out").arg(&other), Duration::from_secs(20));
    assert!(out.status.success(), "{out:?}");
    assert_ne!(std::fs::read_to_string(&other).expect("other"), secret);
}

#[test]
fn an_agent_reports_its_bound_ports_on_stdout_and_in_its_ready_file() {
    let _serial = hearsay_tests::serial();
    let dir = TempDir::new("ready");
    let secret = hearsay_tests::keygen(dir.path(), "cluster.key");
    let data = dir.path().join("data");
    let mut agent = Background::spawn(
        Command::new(binary())
            .args([
                "--api",
                "127.0.0.1:0",
                "agent",
                "--name",
                "solo",
                "--bind",
                "127.0.0.1:0",
                "--preset",
                "local",
            ])
            .arg("--secret-file")
            .arg(&secret)
            .arg("--data-dir")
            .arg(&data),
    );
    let line = wait_for("the agent's ready line", Duration::from_secs(30), || {
        agent.lines().first().cloned().ok_or(agent.stderr())
    });
    let ready = Ready::parse(&line).expect("a ready line");
    let file = std::fs::read_to_string(data.join("ready.json")).expect("ready.json");
    assert_eq!(file, format!("{line}\n"), "the same object on stdout and in the file");
    assert_eq!(ready.name, "solo");
    assert_eq!(Some(ready.pid), agent.pid());
    assert!(ready.addr.port() != 0 && ready.api.port() != 0, "{ready:?}");
    assert_eq!(ready.addr.ip().to_string(), "127.0.0.1");
    let v: Value = ureq::get(&format!("http://{}/v1/status", ready.api))
        .call()
        .expect("the API answers where it said")
        .body_mut()
        .read_json()
        .expect("JSON");
    assert_eq!(
        (v["id"].as_str(), v["addr"].as_str()),
        (Some(ready.id.as_str()), Some(ready.addr.to_string().as_str())),
        "{v}"
    );
    assert_eq!(v["members"], 1);
    assert!(!data.join("ready.json.tmp").exists());
    hearsay_tests::sigterm(ready.pid);
    let status = agent.wait(Duration::from_secs(15)).expect("it exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!data.join("ready.json").exists(), "removed on a clean exit");
    // --help documents it.
    let out = run(Command::new(binary()).args(["agent", "--help"]), Duration::from_secs(20));
    assert!(out.stdout.contains("DATA_DIR/ready.json") && out.stdout.contains("\"pid\""), "{}", out.stdout);
}

#[test]
fn a_config_file_sets_every_key_and_flags_win_over_it() {
    // A cluster with no agents: its temp dir, secret and lock; the agents here are started by
    // hand, with nothing but what the test gives them.
    let c = Cluster::new("config-file");
    let write = |name: &str, extra: &str| {
        let path = c.dir().join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\nbind = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\nsecret_file = \"{}\"\ndata_dir = \"{}\"\npreset = \"local\"\nlog = \"hearsay=debug\"\n{extra}",
            c.secret().display(),
            c.dir().join(format!("data-{name}")).display()
        );
        std::fs::write(&path, text).expect("write config");
        path
    };
    let first = write("from-file", "");
    // The harness gives an agent its name, ports, secret, data dir and preset as flags; here
    // only the file does, except the name, given as a flag too: the flag wins.
    let mut a = Background::spawn(
        Command::new(binary()).arg("agent").arg("--config").arg(&first).args(["--name", "from-flag"]),
    );
    let line = wait_for("the first agent's ready line", Duration::from_secs(30), || {
        a.lines().first().cloned().ok_or(a.stderr())
    });
    let ready = Ready::parse(&line).expect("ready");
    assert_eq!(ready.name, "from-flag", "--name wins over the file");
    assert!(c.dir().join("data-from-file").join("ready.json").exists(), "data_dir from the file");
    assert!(ready.api.port() != 0 && ready.addr.ip().is_loopback(), "api and bind from the file: {ready:?}");
    // The second agent joins through `join` in its file, and logs at debug level.
    let second = write("second", &format!("join = [\"{}\"]\n", ready.addr));
    let mut b = Background::spawn(Command::new(binary()).arg("agent").arg("--config").arg(&second));
    let line = wait_for("the second agent's ready line", Duration::from_secs(30), || {
        b.lines().first().cloned().ok_or(b.stderr())
    });
    let ready2 = Ready::parse(&line).expect("ready");
    wait_for("both agents to see each other alive", Duration::from_secs(30), || {
        let members: Value = ureq::get(&format!("http://{}/v1/members", ready2.api))
            .call()
            .map_err(|e| e.to_string())?
            .body_mut()
            .read_json()
            .map_err(|e| e.to_string())?;
        let alive = members.as_array().map_or(0, |l| l.iter().filter(|m| m["state"] == "alive").count());
        if alive == 2 { Ok(()) } else { Err(format!("{members}")) }
    });
    assert!(b.stderr().contains("DEBUG"), "log = \"hearsay=debug\" from the file: {}", b.stderr());
    for (p, r) in [(&mut a, &ready), (&mut b, &ready2)] {
        hearsay_tests::sigterm(r.pid);
        assert!(p.wait(Duration::from_secs(15)).is_some_and(|s| s.success()));
    }
}
