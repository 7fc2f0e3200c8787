//! The gateway between real MCP peers we did not write: the Python `mcp` 2.3 client
//! (both protocol eras) calls through `lockstep gateway` to a Python `mcp` server,
//! with the guide's policies signed and served by a real `lockstep server`.
//!
//! Allowed calls return the upstream's result; denied ones get lockstep's JSON-RPC
//! error naming the reason, layer and revision, and the upstream's own record proves it
//! never saw them; `tools/list` differs per role. The Python venv (`<target>/py-mcp`,
//! pinned in `tests/peers/requirements.txt`) is created on first run; without network
//! the test fails unless `LOCKSTEP_SKIP_MCP_PEERS=1`. One test gets its access tokens from a real
//! authorization server, npm `oidc-provider` (installed by `tests/peers/oidc.sh`;
//! `LOCKSTEP_SKIP_OIDC=1` skips it when that cannot be had).
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

/// A ready gateway in front of the upstream on `port` (config `extra`), and its MCP URL.
async fn gateway_to(
    server: &TestServer,
    dir: &Path,
    port: u16,
    extra: &str,
) -> (lockstep_gateway::RunningGateway, String) {
    let gw = start_gateway(&gateway_yaml(
        server,
        dir,
        &format!("http://127.0.0.1:{port}/mcp"),
        extra,
    ))
    .await;
    wait_gateway_ready(&gw).await;
    let url = format!("http://{}/mcp", gw.addr);
    (gw, url)
}

/// Starts `upstream.py` over HTTP; waits for its READY line.
fn upstream(venv: &Path, dir: &Path, name: &'static str) -> (Proc, u16) {
    let port = free_port();
    let log = dir.join(format!("upstream-{name}.log"));
    let p = spawn(
        name,
        Command::new(venv.join("bin/python"))
            .arg(mcp_peers().join("upstream.py"))
            .args([
                "--transport",
                "http",
                "--port",
                &port.to_string(),
                "--name",
                name,
            ])
            .arg("--record")
            .arg(dir.join(format!("record-{name}.jsonl"))),
        &log,
    );
    wait_for_line(&log, "READY", "upstream", Duration::from_secs(30));
    (p, port)
}

/// What the upstream received: (method, tool name) of every JSON-RPC request.
fn recorded(dir: &Path, name: &str) -> Vec<(String, Option<String>)> {
    std::fs::read_to_string(dir.join(format!("record-{name}.jsonl")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["source"] == "rpc")
        .map(|v| {
            (
                v["method"].as_str().unwrap_or_default().to_string(),
                v["params"]["name"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Runs `client.py` with `steps`; one JSON value per output line.
fn client(venv: &Path, url: &str, key: Option<&str>, protocol: &str, steps: &Value) -> Vec<Value> {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(mcp_peers().join("client.py"))
        .args(["--url", url, "--protocol", protocol, "--brief"])
        .args(["--steps", &steps.to_string()]);
    if let Some(k) = key {
        cmd.args(["--header", &format!("Authorization: Bearer {k}")]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "client {protocol}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn step(lines: &[Value], n: u64) -> &Value {
    lines
        .iter()
        .find(|l| l["step"] == json!(n))
        .unwrap_or_else(|| panic!("no step {n} in {lines:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_through_the_gateway_get_the_policy_decisions() {
    let Some(venv) = tokio::task::block_in_place(mcp_venv) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let (_upstream, port) = upstream(&venv, dir.path(), "db");
    let (gw, url) = gateway_to(&server, dir.path(), port, "").await;

    let steps = json!([
        "list_tools",
        {"op": "call_tool", "name": "read_database", "args": {"target": "users", "operation": "read", "database": "analytics"}},
        {"op": "call_tool", "name": "write_database", "args": {"target": "users", "operation": "write", "database": "analytics", "data": {"id": 3}}},
        {"op": "call_tool", "name": "run_query", "args": {"target": "DELETE FROM orders", "database": "analytics"}},
        {"op": "call_tool", "name": "read_database", "args": {"target": "users", "operation": "read", "database": "payroll"}},
    ]);
    for protocol in ["2026-07-28", "2025-11-25"] {
        let out = tokio::task::block_in_place(|| {
            client(&venv, &url, Some(ANALYST_KEY), protocol, &steps)
        });
        assert_eq!(
            step(&out, 0)["ok"],
            json!(true),
            "{protocol}: connect {out:?}"
        );
        // The analyst's role lists read_database and run_query; nothing else is shown.
        let names: Vec<&str> = step(&out, 1)["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(names, ["read_database", "run_query"], "{protocol}");
        // Allowed: the upstream's own answer.
        let read = step(&out, 2);
        assert_eq!(read["ok"], json!(true), "{protocol}: {read}");
        assert!(
            read["text"]
                .as_str()
                .unwrap()
                .contains("\"upstream\":\"db\""),
            "{read}"
        );
        // Denied by each layer, with the reason, layer and revision.
        for (n, layer, reason) in [
            (
                3,
                "mcp/tool_access",
                "role 'analyst' has no access to tool 'write_database'",
            ),
            (
                4,
                "mcp/command_scope",
                "target 'DELETE FROM orders' does not match the allowed pattern for tool 'run_query'",
            ),
            (
                5,
                "mcp/resource_access",
                "role 'analyst' may not access database 'payroll'",
            ),
        ] {
            let s = step(&out, n);
            assert_eq!(s["ok"], json!(false), "{protocol} step {n}: {s}");
            assert_eq!(s["error"]["code"], json!(-31001), "{s}");
            assert_eq!(s["error"]["message"], json!(reason), "{s}");
            assert_eq!(s["error"]["data"]["layer"], json!(layer), "{s}");
            assert_eq!(s["error"]["data"]["revision"], json!("r1"), "{s}");
            assert!(
                s["error"]["data"]["decision_id"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty())
            );
        }
    }
    // The upstream saw the allowed calls only.
    let calls: Vec<String> = recorded(dir.path(), "db")
        .into_iter()
        .filter(|(m, _)| m == "tools/call")
        .filter_map(|(_, t)| t)
        .collect();
    assert_eq!(calls, ["read_database", "read_database"], "{calls:?}");

    // Another role, another list.
    let out = tokio::task::block_in_place(|| {
        client(&venv, &url, Some(ADMIN_KEY), "auto", &json!(["list_tools"]))
    });
    let names = step(&out, 1)["names"].clone();
    assert_eq!(
        names,
        json!(["read_database", "write_database", "run_query"]),
        "{out:?}"
    );

    // No credential: 401, and nothing reaches the upstream.
    let before = recorded(dir.path(), "db").len();
    let out = tokio::task::block_in_place(|| {
        client(&venv, &url, None, "2025-11-25", &json!(["list_tools"]))
    });
    assert_eq!(step(&out, 0)["ok"], json!(false), "{out:?}");
    assert!(out.iter().any(|l| l.to_string().contains("401")), "{out:?}");
    assert_eq!(recorded(dir.path(), "db").len(), before);

    gw.shutdown().await.unwrap();
    // The audit names every decision's revision.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let denied: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 6, "{audit}");
    assert!(
        denied
            .iter()
            .all(|v| v["revision"] == "r1" && v["arguments_sha256"].is_string()),
        "{audit}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_stdio_upstreams_under_one_endpoint() {
    let Some(venv) = tokio::task::block_in_place(mcp_venv) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let (_db, port) = upstream(&venv, dir.path(), "db");
    // The stdio upstream is the same server program, started by the gateway itself.
    let files = format!(
        "  - name: files\n    command: {}\n    args: [{}, --transport, stdio, --name, files, --record, {}]\n",
        venv.join("bin/python").display(),
        mcp_peers().join("upstream.py").display(),
        dir.path().join("record-files.jsonl").display(),
    );
    let mut yaml = gateway_yaml(
        &server,
        dir.path(),
        &format!("http://127.0.0.1:{port}/mcp"),
        "",
    );
    yaml = yaml.replacen("identity:", &format!("{files}identity:"), 1);
    let gw = start_gateway(&yaml).await;
    wait_gateway_ready(&gw).await;
    let url = format!("http://{}/mcp", gw.addr);
    let steps = json!([
        "list_tools",
        {"op": "call_tool", "name": "files__read_database", "args": {"target": "orders", "operation": "read", "database": "analytics"}},
        {"op": "call_tool", "name": "db__read_database", "args": {"target": "orders", "operation": "read", "database": "analytics"}},
        {"op": "call_tool", "name": "files__write_database", "args": {"target": "orders", "operation": "write"}},
    ]);
    for protocol in ["2025-11-25", "2026-07-28"] {
        let out = tokio::task::block_in_place(|| {
            client(&venv, &url, Some(ANALYST_KEY), protocol, &steps)
        });
        assert_eq!(
            step(&out, 1)["names"],
            json!([
                "db__read_database",
                "db__run_query",
                "files__read_database",
                "files__run_query"
            ]),
            "{protocol}"
        );
        let via_stdio = step(&out, 2);
        assert!(
            via_stdio["text"]
                .as_str()
                .unwrap_or_default()
                .contains("\"upstream\":\"files\""),
            "{protocol}: {via_stdio}"
        );
        let via_http = step(&out, 3);
        assert!(
            via_http["text"]
                .as_str()
                .unwrap_or_default()
                .contains("\"upstream\":\"db\""),
            "{protocol}: {via_http}"
        );
        assert_eq!(step(&out, 4)["error"]["code"], json!(-31001), "{protocol}");
    }
    let calls: Vec<String> = recorded(dir.path(), "files")
        .into_iter()
        .filter(|(m, _)| m == "tools/call")
        .filter_map(|(_, t)| t)
        .collect();
    assert_eq!(calls, ["read_database", "read_database"]);
    gw.shutdown().await.unwrap();
    server.stop().await;
}

/// Lists are filtered by the layers that decide their entries' own method: with the
/// default layers (tool access filters tools/call), prompts and resources are shown; a
/// `filter_lists` layer on `prompts/get` filters `prompts/list` the way it decides
/// `prompts/get`, and leaves the tools list to the tool-access layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_list_is_filtered_by_the_layers_of_its_entries_method() {
    let Some(venv) = tokio::task::block_in_place(mcp_venv) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start().await;
    let bundle = example_bundle_with("r1", 1000, Some(&server.keys), |d| {
        std::fs::write(
            d.join("mcp/prompt_access.rego"),
            "package mcp.prompt_access\n\ndefault allow := false\n\nallow if input.agent.role == \"admin\"\n\nallow if input.request.prompt == \"analyze_table\"\n",
        )
        .unwrap();
    });
    server.publish_ok("main", bundle).await;
    let (_db, port) = upstream(&venv, dir.path(), "db");
    let names = |out: &[Value], n: u64| -> Vec<String> {
        step(out, n)["names"]
            .as_array()
            .unwrap_or_else(|| panic!("step {n}: {out:?}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let lists = json!(["list_tools", "list_prompts", "list_resources"]);

    // Default layers: only the tools list is filtered.
    let (gw, url) = gateway_to(&server, dir.path(), port, "").await;
    let out =
        tokio::task::block_in_place(|| client(&venv, &url, Some(ANALYST_KEY), "auto", &lists));
    assert_eq!(names(&out, 1), ["read_database", "run_query"]);
    assert_eq!(names(&out, 2), ["analyze_table", "admin_maintenance"]);
    assert!(
        names(&out, 3).contains(&"db://schema".to_string()),
        "{out:?}"
    );
    gw.shutdown().await.unwrap();

    // A prompt filter beside the tool filter.
    let layers = "layers:\n  - path: mcp/tool_access\n    filter_lists: true\n  - path: mcp/prompt_access\n    methods: [prompts/get]\n    filter_lists: true\n";
    let (gw, url) = gateway_to(&server, dir.path(), port, layers).await;
    let steps = json!([
        "list_tools",
        "list_prompts",
        "list_resources",
        {"op": "get_prompt", "name": "analyze_table", "args": {"table": "users"}},
        {"op": "get_prompt", "name": "admin_maintenance"},
    ]);
    let out =
        tokio::task::block_in_place(|| client(&venv, &url, Some(ANALYST_KEY), "auto", &steps));
    assert_eq!(names(&out, 1), ["read_database", "run_query"]);
    assert_eq!(names(&out, 2), ["analyze_table"]);
    assert!(
        names(&out, 3).contains(&"db://schema".to_string()),
        "{out:?}"
    );
    assert!(
        step(&out, 4)["text"]
            .as_str()
            .is_some_and(|t| t.contains("users")),
        "{out:?}"
    );
    // What the list hides, the request is refused: the same layer decides both.
    assert_eq!(step(&out, 5)["error"]["code"], json!(-31001), "{out:?}");
    assert_eq!(
        step(&out, 5)["error"]["data"]["layer"],
        json!("mcp/prompt_access")
    );
    let out = tokio::task::block_in_place(|| client(&venv, &url, Some(ADMIN_KEY), "auto", &lists));
    assert_eq!(
        names(&out, 1),
        ["read_database", "write_database", "run_query"]
    );
    assert_eq!(names(&out, 2), ["analyze_table", "admin_maintenance"]);
    gw.shutdown().await.unwrap();
    server.stop().await;
}

/// A client that goes away during a streamed answer makes the gateway send
/// `notifications/cancelled` for that request to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_cancels_the_upstream_request() {
    let Some(venv) = tokio::task::block_in_place(mcp_venv) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let (_db, port) = upstream(&venv, dir.path(), "db");
    // A layer that lets the admin call the helper tool `sleep`.
    let layers = "layers:\n  - path: mcp/tool_access\n    methods: [prompts/get]\n";
    let (gw, url) = gateway_to(&server, dir.path(), port, layers).await;
    let http = reqwest::Client::new();
    let post = |body: Value, sid: Option<&str>| {
        let mut r = http
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if let Some(s) = sid {
            r = r.header("mcp-session-id", s);
        }
        r.send()
    };
    let r = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        None,
    )
    .await
    .unwrap();
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let r = post(
        json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 5}}}),
        Some(&sid),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let cancelled = std::fs::read_to_string(dir.path().join("record-db.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| {
                v["method"] == "notifications/cancelled" && v["params"]["requestId"] == json!(42)
            });
        if cancelled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no notifications/cancelled reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.shutdown().await.unwrap();
    server.stop().await;
}

/// `oidc.sh`: Node and the `oidc-provider` prefix, or `None` when they cannot be had
/// and `LOCKSTEP_SKIP_OIDC=1`.
fn oidc_install() -> Option<(String, String)> {
    let out = Command::new("bash")
        .arg(mcp_peers().join("oidc.sh"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    match (out.status.success(), field("node:"), field("modules:")) {
        (true, Some(node), Some(modules)) => Some((node, modules)),
        _ if std::env::var("LOCKSTEP_SKIP_OIDC").as_deref() == Ok("1") => {
            eprintln!("LOCKSTEP_SKIP_OIDC=1: skipping, oidc-provider could not be installed");
            None
        }
        _ => panic!(
            "could not install oidc-provider (npm missing or no registry?); set LOCKSTEP_SKIP_OIDC=1 to skip.\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// npm oidc-provider on a free port, issuing `format` ("jwt" or "opaque") access tokens
/// for `resource`; the process and its issuer URL.
fn oidc_issuer(
    node: &str,
    modules: &str,
    dir: &Path,
    resource: &str,
    format: &str,
) -> (Proc, String) {
    let port = free_port();
    let log = dir.join("oidc.log");
    let p = spawn(
        "oidc-provider",
        Command::new(node)
            .arg(mcp_peers().join("oidc_issuer.mjs"))
            .args(["--modules", modules, "--port", &port.to_string()])
            .args(["--resource", resource, "--format", format]),
        &log,
    );
    wait_for_line(&log, "READY", "oidc-provider", Duration::from_secs(30));
    (p, format!("http://127.0.0.1:{port}"))
}

/// The analyst's and the intern's tokens for `resource`, and the analyst's token the
/// same server issued for another resource.
async fn role_tokens(issuer: &str, resource: &str) -> (String, String, String) {
    let analyst = client_token(
        issuer,
        "agent-analyst",
        "secret-analyst-0123456789",
        resource,
    )
    .await;
    let intern = client_token(issuer, "agent-intern", "secret-intern-0123456789", resource).await;
    let elsewhere = client_token(
        issuer,
        "agent-analyst",
        "secret-analyst-0123456789",
        "http://127.0.0.1:1/mcp",
    )
    .await;
    (analyst, intern, elsewhere)
}

/// A client-credentials access token for `resource` from the issuer at `issuer`.
async fn client_token(issuer: &str, client: &str, secret: &str, resource: &str) -> String {
    let body = format!(
        "grant_type=client_credentials&scope=mcp%3Atools&resource={}",
        resource.replace(':', "%3A").replace('/', "%2F")
    );
    let r: Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(client, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {r}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_real_authorization_server_decide_through_the_gateway() {
    let Some(venv) = tokio::task::block_in_place(mcp_venv) else {
        return;
    };
    let Some((node, modules)) = tokio::task::block_in_place(oidc_install) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let (_upstream, upstream_port) = upstream(&venv, dir.path(), "db");
    let gw_port = free_port();
    let resource = format!("http://127.0.0.1:{gw_port}/mcp");

    // npm oidc-provider: resource indicators on, ES256 JWT access tokens.
    let (_issuer, issuer) =
        tokio::task::block_in_place(|| oidc_issuer(&node, &modules, dir.path(), &resource, "jwt"));

    let yaml = gateway_yaml(
        &server,
        dir.path(),
        &format!("http://127.0.0.1:{upstream_port}/mcp"),
        "",
    )
    .replacen("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{gw_port}"), 1)
    .replacen(
        "identity:\n",
        &format!(
            "identity:\n  oauth:\n    issuer: {issuer}\n    jwks_uri: {issuer}/jwks\n    resource: {resource}\n",
        ),
        1,
    );
    let gw = start_gateway(&yaml).await;
    wait_gateway_ready(&gw).await;

    let (analyst, intern, elsewhere) = role_tokens(&issuer, &resource).await;

    let read = json!({"op": "call_tool", "name": "read_database",
                      "args": {"target": "users", "operation": "read", "database": "analytics"}});
    let steps = json!(["list_tools", read]);
    let out =
        tokio::task::block_in_place(|| client(&venv, &resource, Some(&analyst), "auto", &steps));
    assert_eq!(step(&out, 0)["ok"], json!(true), "connect {out:?}");
    assert_eq!(
        step(&out, 2)["ok"],
        json!(true),
        "the analyst's call: {out:?}"
    );
    let out =
        tokio::task::block_in_place(|| client(&venv, &resource, Some(&intern), "auto", &steps));
    let denied = step(&out, 2);
    assert_eq!(denied["ok"], json!(false), "the intern's call: {out:?}");
    assert_eq!(
        denied["error"]["data"]["layer"],
        json!("mcp/tool_access"),
        "{denied}"
    );
    let out = tokio::task::block_in_place(|| {
        client(
            &venv,
            &resource,
            Some(&elsewhere),
            "2025-11-25",
            &json!(["list_tools"]),
        )
    });
    assert_ne!(
        step(&out, 0)["ok"],
        json!(true),
        "a token for another resource: {out:?}"
    );
    let calls: Vec<String> = recorded(dir.path(), "db")
        .into_iter()
        .filter(|(m, _)| m == "tools/call")
        .filter_map(|(_, t)| t)
        .collect();
    assert_eq!(
        calls,
        ["read_database"],
        "only the analyst's call reached the upstream"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected_at_the_authorization_server() {
    let Some((node, modules)) = tokio::task::block_in_place(oidc_install) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let upstream = McpUpstream::default();
    let (upstream_url, _task) = upstream.start().await;
    let gw_port = free_port();
    let resource = format!("http://127.0.0.1:{gw_port}/mcp");
    let (_issuer, issuer) = tokio::task::block_in_place(|| {
        oidc_issuer(&node, &modules, dir.path(), &resource, "opaque")
    });
    let secret = dir.path().join("gateway-secret");
    std::fs::write(&secret, "secret-gateway-0123456789\n").unwrap();
    let yaml = gateway_yaml(&server, dir.path(), &upstream_url, "")
        .replacen("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{gw_port}"), 1)
        .replacen(
            "identity:\n",
            &format!(
                "identity:\n  oauth:\n    issuer: {issuer}\n    jwks_uri: {issuer}/jwks\n    resource: {resource}\n    introspection: {{endpoint: {issuer}/token/introspection, client_id: lockstep-gateway, client_secret_file: {}}}\n",
                secret.display()
            ),
            1,
        );
    let gw = start_gateway(&yaml).await;
    wait_gateway_ready(&gw).await;
    let call = |token: String| {
        let resource = resource.clone();
        async move {
            let (body, headers) = modern_call(
                1,
                "read_database",
                json!({"target": "users", "operation": "read", "database": "analytics"}),
            );
            let mut r = reqwest::Client::new()
                .post(&resource)
                .bearer_auth(token)
                .json(&body);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (analyst, intern, elsewhere) = role_tokens(&issuer, &resource).await;
    assert!(!analyst.contains('.'), "an opaque token: {analyst}");
    let (status, body) = call(analyst.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(analyst).await;
    assert_eq!(status, 200, "again, from the cache: {body}");
    let (status, body) = call(intern).await;
    assert_eq!(status, 403, "the intern's role: {body}");
    let (status, body) = call(elsewhere).await;
    assert_eq!(status, 401, "a token for another resource: {body}");
    let (status, body) = call("made-up-opaque-token-0123456789".into()).await;
    assert_eq!(status, 401, "not active: {body}");
    assert_eq!(
        upstream
            .calls()
            .iter()
            .filter(|c| c.starts_with("tools/call"))
            .count(),
        2,
        "only the analyst's calls reached the upstream"
    );
    gw.shutdown().await.unwrap();
}
