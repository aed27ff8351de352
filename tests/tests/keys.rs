//! Issue 15, item 4, on real agents: cluster key rotation without downtime (`hearsay keys`).
//! A full rotation on a 4-node cluster, after which an agent with only the old secret is
//! refused and one with only the new secret joins; the keyring survives a restart.

use std::path::Path;
use std::time::Duration;

use hearsay_tests::{AgentSpec, Cluster, keygen};
use serde_json::{Value, json};

/// Run `hearsay keys ARGS --json` against agent `i`; its exit status and JSON reply.
fn keys(c: &Cluster, i: usize, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = c[i].cli(&all);
    let v = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("keys {args:?}: not JSON ({e}): {}\n{}", out.stdout, out.stderr));
    (out.status.success(), v)
}

/// `keys OP FILE` from agent `i`, which must be acknowledged by all `n` members.
fn everywhere(c: &Cluster, i: usize, op: &str, file: &Path, n: u64) -> Value {
    let (ok, r) = keys(c, i, &[op, file.to_str().expect("a UTF-8 path")]);
    assert!(ok, "keys {op}: {r}");
    assert_eq!((r["acknowledged"].as_u64(), r["members"].as_u64()), (Some(n), Some(n)), "keys {op}: {r}");
    assert_eq!(r["failed"], serde_json::json!([]), "{r}");
    r
}

/// `keys list` from agent `i`: (fingerprint, members holding it, members whose primary it is)
/// per key, and the primary of agent `i`.
fn list(c: &Cluster, i: usize, n: u64) -> (Vec<(String, u64, u64)>, String) {
    let (ok, l) = keys(c, i, &["list"]);
    assert!(ok, "keys list: {l}");
    assert_eq!((l["responded"].as_u64(), l["members"].as_u64()), (Some(n), Some(n)), "{l}");
    let keys = l["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {l}"))
        .iter()
        .map(|k| {
            let fp = k["fingerprint"].as_str().unwrap_or_default().to_string();
            (fp, k["members"].as_u64().unwrap_or(0), k["primary_on"].as_u64().unwrap_or(0))
        })
        .collect();
    (keys, l["primary"].as_str().unwrap_or_default().to_string())
}

#[test]
fn a_full_rotation_refuses_the_old_secret_and_admits_the_new_one() {
    let mut c = Cluster::start("keys", 4);
    let old = c.secret().to_path_buf();
    let new = keygen(c.dir(), "new.key");
    let (before, old_fp) = list(&c, 0, 4);
    assert_eq!(before, [(old_fp.clone(), 4, 4)], "one key, everyone's primary");
    // Never a secret in a reply.
    let old_hex = std::fs::read_to_string(&old).expect("the old secret");
    assert!(!serde_json::to_string(&before).unwrap_or_default().contains(old_hex.trim()));

    // The API says what is wrong with a request, and changes nothing then.
    for (path, body, status, says) in [
        ("/v1/keys/install", json!({"secret": "zz"}), 400, "64 hex digits"),
        ("/v1/keys/install", json!({}), 400, "install needs `secret`"),
        ("/v1/keys/use", json!({"fingerprint": "abc"}), 400, "not a key fingerprint"),
        ("/v1/keys/remove", json!({"fingerprint": old_fp}), 409, "is the primary"),
        ("/v1/keys/rotate", json!({"fingerprint": old_fp}), 404, "no such endpoint"),
    ] {
        let r = c[0].call("POST", path, Some(&body)).expect("the API answers");
        assert_eq!(r.status, status, "{path} {body}: {r:?}");
        assert!(r.error().contains(says), "{path} {body}: {r:?}");
    }
    assert_eq!(list(&c, 0, 4).0, [(old_fp.clone(), 4, 4)], "nothing changed");

    let r = everywhere(&c, 1, "install", &new, 4);
    let new_fp = r["key"].as_str().expect("the key's fingerprint").to_string();
    assert_ne!(new_fp, old_fp);
    let (installed, primary) = list(&c, 2, 4);
    assert_eq!(installed, [(old_fp.clone(), 4, 4), (new_fp.clone(), 4, 0)]);
    assert_eq!(primary, old_fp);

    // Using a key that is not installed is refused here, before anything is sent.
    let stray = keygen(c.dir(), "stray.key");
    let out = c[0].cli(&["keys", "use", stray.to_str().unwrap_or_default()]);
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("is not installed") && out.stderr.contains("409"), "{}", out.stderr);

    everywhere(&c, 2, "use", &new, 4);
    let (used, primary) = list(&c, 3, 4);
    assert_eq!(used, [(new_fp.clone(), 4, 4), (old_fp.clone(), 4, 0)]);
    assert_eq!(primary, new_fp);
    // The primary cannot be removed (409, and the CLI exits 1 saying why).
    let out = c[0].cli(&["keys", "remove", new.to_str().unwrap_or_default()]);
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stderr.contains("is the primary") && out.stderr.contains("409"), "{}", out.stderr);

    everywhere(&c, 3, "remove", &old, 4);
    let (after, primary) = list(&c, 0, 4);
    assert_eq!(after, [(new_fp.clone(), 4, 4)], "only the new key is left, everywhere");
    assert_eq!(primary, new_fp);
    // The cluster never stopped: every member still sees every other alive.
    c.wait_converged();
    // Every keyring file holds the new key only, owner-only.
    let new_hex = std::fs::read_to_string(&new).expect("the new secret");
    for a in c.agents() {
        let path = a.data_dir.join("keyring");
        let text = std::fs::read_to_string(&path).expect("a keyring in the data dir");
        assert!(text.contains(new_hex.trim()) && !text.contains(old_hex.trim()), "{}: {text}", a.name);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
            assert_eq!(mode, 0o600, "{}", a.name);
        }
    }

    // An agent holding only the old secret is refused and gives up; nobody lists it.
    let seed = c[0].addr();
    let stale = c.launch(AgentSpec::new("stale").secret(&old).join(&[seed]));
    let status = c[stale].wait_exit(Duration::from_secs(30)).expect("the stale agent gives up by itself");
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(
        c[stale].log_text().contains("every seed refused this node's certificate"),
        "{}",
        c[stale].log_text()
    );
    for a in &c.agents()[..4] {
        let names: Vec<String> = a.members().expect("the API answers").into_iter().map(|m| m.name).collect();
        assert!(!names.contains(&"stale".to_string()), "{} lists {names:?}", a.name);
    }

    // One holding only the new secret joins.
    let fresh = c.launch(AgentSpec::new("fresh").secret(&new).join(&[seed]));
    c[fresh].wait_ready();
    let members = [0, 1, 2, 3, fresh];
    c.wait_alive(&members, &members);

    // The keyring survives a restart: n1, still started with the old --secret-file, comes
    // back with the new key as its only key, rejoins, and says its keyring won.
    c[1].restart();
    c.wait_alive(&members, &members);
    let (kept, primary) = list(&c, 1, 5);
    assert_eq!((kept, primary), (vec![(new_fp.clone(), 5, 5)], new_fp));
    assert!(c[1].log_text().contains("is not in the keyring, which wins"), "{}", c[1].log_text());
}
