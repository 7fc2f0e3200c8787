//! The front door against bad input, missing credentials, foreign origins and stale
//! policy (issue 11, points 1, 4, 6 and 10): each refusal is a JSON-RPC error with the
//! right HTTP status, nothing reaches the upstream, and the next good request works.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

struct Setup {
    server: TestServer,
    upstream: McpUpstream,
    gw: lockstep_gateway::RunningGateway,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn setup(extra: &str, publish: bool) -> Setup {
    setup_edited(extra, publish, |y| y).await
}

/// [`setup`] with the gateway's YAML passed through `edit`.
async fn setup_edited(extra: &str, publish: bool, edit: fn(String) -> String) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    if publish {
        server
            .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
            .await;
    }
    let upstream = McpUpstream::default();
    let (url, _task) = upstream.start().await;
    let gw = start_gateway(&edit(gateway_yaml(&server, dir.path(), &url, extra))).await;
    if publish {
        wait_gateway_ready(&gw).await;
    }
    Setup {
        server,
        upstream,
        gw,
        _dir: dir,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    fn url(&self) -> String {
        format!("http://{}/mcp", self.gw.addr)
    }

    /// POSTs `body` with the analyst's key and `headers`; (status, JSON body).
    async fn post(&self, body: Vec<u8>, headers: &[(&str, String)]) -> (u16, Value) {
        let mut r = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(ANALYST_KEY);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let r = r.body(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn good_call(&self) -> (u16, Value) {
        let (body, headers) = modern_call(
            7,
            "read_database",
            json!({"target": "users", "operation": "read", "database": "analytics"}),
        );
        self.post(body.to_string().into_bytes(), &headers).await
    }

    async fn stop(mut self) {
        self.gw.shutdown().await.unwrap();
        self.server.stop().await;
    }
}

/// (what, body, headers, expected HTTP status, expected JSON-RPC code).
type Case<'a> = (&'a str, String, Vec<(&'a str, String)>, u16, i64);

fn modern_headers(name: &str) -> Vec<(&'static str, String)> {
    modern_call(1, name, json!({})).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_reaches_the_upstream_and_the_next_request_works() {
    let s = setup("limits:\n  max_body_bytes: 4096\n  max_depth: 32\n", true).await;
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_database","arguments":{{"a":{}1{}}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;
    let cases: Vec<Case<'_>> = vec![
        ("truncated JSON", r#"{"jsonrpc":"2.0","id":1,"method":"#.into(), modern_headers("x"), 400, -32700),
        (
            "duplicate key",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_database","name":"write_database","arguments":{{}},{meta}}}}}"#),
            modern_headers("read_database"),
            400,
            -32700,
        ),
        (
            "batch",
            format!(r#"[{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_database",{meta}}}}}]"#),
            modern_headers("read_database"),
            400,
            -32600,
        ),
        (
            "modern _meta without client capabilities",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_database","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#.into(),
            modern_headers("read_database"),
            400,
            -32602,
        ),
        (
            "modern header over a body without _meta",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_database","arguments":{}}}"#.into(),
            modern_headers("read_database"),
            400,
            -32602,
        ),
        (
            "removed method in the modern era",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{{{meta}}}}}"#),
            [modern_headers("x")[..1].to_vec(), vec![("mcp-method", "resources/subscribe".into())]].concat(),
            404,
            -32601,
        ),
        (
            "name not a string",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":7,"arguments":{{}},{meta}}}}}"#),
            modern_headers("7"),
            400,
            -32602,
        ),
        (
            "arguments not an object",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_database","arguments":[1],{meta}}}}}"#),
            modern_headers("read_database"),
            400,
            -32602,
        ),
        ("too deep", deep, modern_headers("read_database"), 400, -32700),
        (
            "too large",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_database","arguments":{{"x":"{}"}},{meta}}}}}"#, "a".repeat(5000)),
            modern_headers("read_database"),
            413,
            -32600,
        ),
        (
            "header disagrees with body",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"write_database","arguments":{{}},{meta}}}}}"#),
            modern_headers("read_database"),
            400,
            -32020,
        ),
        (
            "unknown method",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/destroy","params":{{{meta}}}}}"#),
            vec![("mcp-protocol-version", "2026-07-28".into()), ("mcp-method", "tools/destroy".into())],
            404,
            -32601,
        ),
        (
            "no session (2025 era)",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_database","arguments":{}}}"#.into(),
            vec![],
            400,
            -32600,
        ),
        (
            "foreign session id",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_database","arguments":{}}}"#.into(),
            vec![("mcp-session-id", "bm90LWEtc2Vzc2lvbg".into())],
            404,
            -32600,
        ),
        (
            "foreign origin",
            s.good_call_body(),
            [modern_headers("read_database"), vec![("origin", "http://evil.example".into())]].concat(),
            403,
            -32600,
        ),
        (
            "non-loopback Host on a loopback bind",
            s.good_call_body(),
            [modern_headers("read_database"), vec![("host", "evil.example".into())]].concat(),
            403,
            -32600,
        ),
    ];
    for (what, body, headers, status, code) in cases {
        let (got, b) = s.post(body.into_bytes(), &headers).await;
        assert_eq!(
            (got, &b["error"]["code"]),
            (status, &json!(code)),
            "{what}: {b}"
        );
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {b}"
        );
        // The next good request still works.
        let (ok, b) = s.good_call().await;
        assert_eq!(ok, 200, "after {what}: {b}");
        assert_eq!(b["result"]["isError"], json!(false), "after {what}: {b}");
    }
    // The upstream saw only the good calls.
    assert!(
        s.upstream
            .calls()
            .iter()
            .all(|c| c == "tools/call read_database"),
        "{:?}",
        s.upstream.calls()
    );
    s.stop().await;
}

impl Setup {
    fn good_call_body(&self) -> String {
        modern_call(
            7,
            "read_database",
            json!({"target": "users", "operation": "read", "database": "analytics"}),
        )
        .0
        .to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_key_get_401_and_reach_nothing() {
    let s = setup("", true).await;
    for key in [None, Some("lsk_wrong_0123456789abcdef0123456789ab")] {
        let mut r = s
            .http
            .post(s.url())
            .header("content-type", "application/json")
            .body(s.good_call_body());
        for (k, v) in modern_headers("read_database") {
            r = r.header(k, v);
        }
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], json!(-31003), "{b}");
    }
    assert!(s.upstream.calls().is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_identity_serves_requests_without_a_credential_but_not_wrong_ones() {
    // The example policy lets an analyst read analytics: the anonymous identity is one.
    let s = setup_edited("", true, |y| with_anonymous(&y, "harness", "analyst")).await;
    let send = |key: Option<&'static str>| {
        let mut r = s
            .http
            .post(s.url())
            .header("content-type", "application/json")
            .body(s.good_call_body());
        for (k, v) in modern_headers("read_database") {
            r = r.header(k, v);
        }
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let r = send(None).await.unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["result"]["isError"], json!(false), "{b}");
    let r = send(Some("lsk_wrong_0123456789abcdef0123456789ab"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a wrong credential is not anonymous");
    assert_eq!(s.upstream.calls(), vec!["tools/call read_database"]);
    // The audit is written by a background task: wait for the line.
    let path = s._dir.path().join("audit.jsonl");
    let written = eventually(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(&path).is_ok_and(|a| a.contains(r#""identity":"harness""#))
    })
    .await;
    assert!(
        written,
        "{}",
        std::fs::read_to_string(&path).unwrap_or_default()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_revision_every_request_fails_closed() {
    let s = setup("", false).await;
    let (status, b) = s.good_call().await;
    assert_eq!(status, 503, "{b}");
    assert_eq!(b["error"]["code"], json!(-31002), "{b}");
    assert!(b["error"]["data"]["revision"].is_null(), "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not activated yet"),
        "{b}"
    );
    assert!(s.upstream.calls().is_empty());
    // Once a revision is active, the same request is decided by it.
    s.server
        .publish_ok("main", example_bundle("r1", 1000, Some(&s.server.keys)))
        .await;
    wait_gateway_ready(&s.gw).await;
    let (status, b) = s.good_call().await;
    assert_eq!(status, 200, "{b}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_can_answer_denials_as_tool_errors_the_model_reads() {
    let layers = "layers:\n  - path: mcp/tool_access\n    filter_lists: true\n  - path: mcp/command_scope\n    deny_as_tool_error: true\n  - path: mcp/resource_access\n";
    let s = setup(layers, true).await;
    let (body, headers) = modern_call(
        3,
        "run_query",
        json!({"target": "DELETE FROM orders", "database": "analytics"}),
    );
    let (status, b) = s.post(body.to_string().into_bytes(), &headers).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["result"]["isError"], json!(true), "{b}");
    assert!(
        b["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("does not match the allowed pattern"),
        "{b}"
    );
    assert_eq!(
        b["result"]["_meta"]["lockstep/denial"]["revision"],
        json!("r1"),
        "{b}"
    );
    // The tool-access layer still answers with a JSON-RPC error.
    let (body, headers) = modern_call(4, "write_database", json!({"target": "users"}));
    let (status, b) = s.post(body.to_string().into_bytes(), &headers).await;
    assert_eq!((status, &b["error"]["code"]), (403, &json!(-31001)), "{b}");
    assert!(s.upstream.calls().is_empty(), "{:?}", s.upstream.calls());
    s.stop().await;
}

/// A 2025-era session opened on one replica is served by another that holds the same
/// session key: the upstream session travels sealed in the gateway's session id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_on_one_replica_works_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let upstream = McpUpstream::default();
    let (url, _task) = upstream.start().await;
    let key = dir.path().join("session.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    let extra = format!("session:\n  key_file: {}\n", key.display());
    let mut replicas = Vec::new();
    for i in 0..2 {
        let d = dir.path().join(format!("r{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let gw = start_gateway(&gateway_yaml(&server, &d, &url, &extra)).await;
        wait_gateway_ready(&gw).await;
        replicas.push(gw);
    }
    let http = reqwest::Client::new();
    let post = |gw: &lockstep_gateway::RunningGateway, body: Value, sid: Option<&str>| {
        let mut r = http
            .post(format!("http://{}/mcp", gw.addr))
            .bearer_auth(ANALYST_KEY)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if let Some(s) = sid {
            r = r.header("mcp-session-id", s);
        }
        r.send()
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = post(&replicas[0], init, None).await.unwrap();
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    assert!(
        !sid.contains(lockstep_gateway::tool_server::SESSION_ID),
        "the upstream session is sealed, not visible"
    );
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "read_database", "arguments": {"target": "users", "operation": "read", "database": "analytics"}}});
    let r = post(&replicas[1], call.clone(), Some(&sid)).await.unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["result"]["isError"], json!(false), "{b}");
    // A tampered id is refused by both.
    let mut bad = sid.clone().into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    for gw in &replicas {
        let r = post(gw, call.clone(), Some(&bad)).await.unwrap();
        assert_eq!(r.status(), 404);
    }
    // The call on the second replica reached the upstream with the upstream's session.
    let received = upstream.received.lock().unwrap().clone();
    assert_eq!(
        received
            .iter()
            .filter(|m| m["method"] == "tools/call")
            .count(),
        1,
        "{received:?}"
    );
    for gw in replicas {
        gw.shutdown().await.unwrap();
    }
    let mut server = server;
    server.stop().await;
}

/// An upstream that is down is left out of lists (and counted); the others still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_is_left_out_of_lists() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let upstream = McpUpstream::default();
    let (url, _task) = upstream.start().await;
    let down = format!("http://127.0.0.1:{}/mcp", free_port());
    let yaml = gateway_yaml(&server, dir.path(), &url, "limits:\n  list_deadline: 2s\n").replacen(
        "identity:",
        &format!("  - name: down\n    url: {down}\nidentity:"),
        1,
    );
    let gw = start_gateway(&yaml).await;
    wait_gateway_ready(&gw).await;
    let http = reqwest::Client::new();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let r = http
        .post(format!("http://{}/mcp", gw.addr))
        .bearer_auth(ANALYST_KEY)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    let names: Vec<&str> = b["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db__read_database", "db__run_query"], "{b}");
    assert_eq!(b["result"]["cacheScope"], json!("private"));
    let metrics = scrape(&http, &format!("http://{}/metrics", gw.addr)).await;
    assert_eq!(
        sample(
            &metrics,
            "lockstep_gateway_list_omissions_total{upstream=\"down\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    gw.shutdown().await.unwrap();
    server.stop().await;
}
