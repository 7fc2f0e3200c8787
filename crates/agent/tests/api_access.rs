//! Who may use the agent's REST API (issue 9, finding 1): the write API is off beside
//! bundles unless turned on, and with `lockstep.authentication` every endpoint but
//! `/health` needs a read or write token, and writes need a write token.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use lockstep_agent::{ApiTokens, WriteApi};
use lockstep_auth::Secret;
use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

const READ: &str = "read-token";
const WRITE: &str = "write-token";

async fn wait_for(
    http: &reqwest::Client,
    a: &lockstep_agent::RunningAgent,
    token: &str,
    rev: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http
            .post(url(a, "/v1/data/mcp/revision"))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if r.status() == 200 && r.json::<Value>().await.unwrap()["result"] == json!(rev) {
            return;
        }
        assert!(Instant::now() < deadline, "{rev} never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn put_policy(
    http: &reqwest::Client,
    a: &lockstep_agent::RunningAgent,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let r = http
        .put(url(a, "/v1/policies/extra.rego"))
        .body("package extra\n\nallow := true\n");
    match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding1_write_api_is_off_beside_bundles_by_default() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let a = start_agent(&server, dir.path(), Some(20)).await;
    let http = reqwest::Client::new();
    wait_for(&http, &a, "", "r1").await;
    for r in [
        put_policy(&http, &a, None),
        http.put(url(&a, "/v1/data/extra"))
            .body("{\"allow\": true}"),
        http.patch(url(&a, "/v1/data/extra")).body("[]"),
        http.delete(url(&a, "/v1/policies/main/mcp/policy.rego")),
    ] {
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 403);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["code"], "write_api_disabled", "{b}");
    }
    // Nothing was written.
    let (s, _, b) = post(&http, &a, "/v1/data/extra", json!({"input": {}})).await;
    assert_eq!((s, b.get("result")), (200, None), "{b}");
    assert_eq!(
        get_json(&http, &a, "/v1/policies").await["result"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    a.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding1_api_tokens_separate_readers_from_writers() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let a = start_agent_with(&server, dir.path(), Some(20), |c| {
        c.tokens = ApiTokens {
            read: vec![Secret::new(READ)],
            write: vec![Secret::new(WRITE)],
        };
        c.write_api = WriteApi::On;
    })
    .await;
    let http = reqwest::Client::new();
    wait_for(&http, &a, READ, "r1").await;

    // No token, a wrong one: 401 with a challenge, for decisions and reads alike.
    for path in [
        "/v1/data/mcp/allow",
        "/v1/status",
        "/v1/policies",
        "/metrics",
    ] {
        let r = http.get(url(&a, path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.headers().contains_key("www-authenticate"), "{path}");
        let r = http
            .get(url(&a, path))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(url(&a, path))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Probes need no token.
    assert_eq!(
        http.get(url(&a, "/health")).send().await.unwrap().status(),
        200
    );
    // A read token cannot write; a write token can.
    let r = put_policy(&http, &a, None).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = put_policy(&http, &a, Some(READ)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = put_policy(&http, &a, Some(WRITE)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = http
        .post(url(&a, "/v1/data/extra/allow"))
        .bearer_auth(WRITE)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["result"], json!(true));
    a.shutdown().await.unwrap();
    server.stop().await;
}

#[test]
fn finding1_authentication_config_loads_tokens_from_files_and_refuses_inline_ones() {
    let dir = tempfile::tempdir().unwrap();
    let read = dir.path().join("read");
    std::fs::write(&read, format!("{READ}\n")).unwrap();
    let base = "services: {s: {url: \"http://127.0.0.1:1/\"}}\nbundles: {b: {service: s}}\n";
    let text = format!(
        "{base}lockstep:\n  skip_verification: true\n  write_api: on\n  authentication:\n    read_tokens: [{{file: {}}}]\n",
        read.display()
    );
    let c = lockstep_agent::config::parse(&text, &|_| None, &Default::default()).unwrap();
    assert!(c.tokens.read[0].matches(READ) && c.tokens.write.is_empty());
    assert_eq!(c.write_api, WriteApi::On);
    assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    for (bad, says) in [
        (
            "read_tokens: [{value: x}]",
            "expected {file: …} or {env: …}",
        ),
        (
            "read_tokens: [{file: /nonexistent/t}]",
            "cannot read token file",
        ),
        ("write_tokens: []", "no tokens"),
        ("read_tokens: x", "expected a list"),
    ] {
        let text =
            format!("{base}lockstep:\n  skip_verification: true\n  authentication: {{{bad}}}\n");
        let e = lockstep_agent::config::parse(&text, &|_| None, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    let text = format!("{base}lockstep: {{skip_verification: true, write_api: maybe}}\n");
    assert!(
        lockstep_agent::config::parse(&text, &|_| None, &Default::default())
            .unwrap_err()
            .to_string()
            .contains("lockstep.write_api")
    );
}
