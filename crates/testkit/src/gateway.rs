//! Gateways started on 127.0.0.1 against a test server, and a small recording MCP
//! upstream written here (Streamable HTTP, both eras, JSON answers) for tests that
//! must prove what reached an upstream without starting a Python peer.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use lockstep_gateway::RunningGateway;
use lockstep_gateway::config::GatewayConfig;
use serde_json::{Value, json};

use crate::server::{DOWNLOAD, KID, TestServer};

pub const ANALYST_KEY: &str = "lsk_analyst_0123456789abcdef0123456789";
pub const ADMIN_KEY: &str = "lsk_admin_0123456789abcdef0123456789ab";

/// The API key file for [`ANALYST_KEY`] (alice, analyst) and [`ADMIN_KEY`] (root, admin).
pub fn write_api_keys(dir: &Path) -> std::path::PathBuf {
    let keys = dir.join("api-keys.yaml");
    std::fs::write(
        &keys,
        format!(
            "keys:\n  - key: {ANALYST_KEY}\n    id: alice\n    role: analyst\n  - key: {ADMIN_KEY}\n    id: root\n    role: admin\n"
        ),
    )
    .unwrap();
    keys
}

/// The `policy:` section for one bundle `main` of `server` (long polling, signed),
/// plus `extra` lines (e.g. `status: {service: bundle-server}`), indented for YAML.
pub fn policy_section(server: &TestServer, dir: &Path, extra: &str) -> String {
    format!(
        r#"policy:
  services:
    bundle-server:
      url: {base}
      credentials: {{bearer: {{token: {DOWNLOAD}}}}}
  bundles:
    main:
      service: bundle-server
      resource: bundles/main
      polling: {{long_polling_timeout_seconds: 10}}
      signing: {{keyid: {KID}}}
  keys:
    {KID}: {{key: {pem}, algorithm: ES256}}
  persistence_directory: {persist}
{extra}"#,
        base = server.base,
        pem = serde_json::to_string(&server.keys.public).unwrap(),
        persist = dir.join("opa").display(),
    )
}

/// A gateway configuration in front of `upstream_url` (one upstream `db`), API keys
/// and audit in `dir`, then `extra` top-level YAML.
pub fn gateway_yaml(server: &TestServer, dir: &Path, upstream_url: &str, extra: &str) -> String {
    let keys = write_api_keys(dir);
    format!(
        "listen: 127.0.0.1:0\nupstreams:\n  - name: db\n    url: {upstream_url}\nidentity:\n  api_keys_file: {}\naudit:\n  output: {}\n{extra}\n{}",
        keys.display(),
        dir.join("audit.jsonl").display(),
        policy_section(server, dir, ""),
    )
}

/// `yaml` from [`gateway_yaml`] with `identity.anonymous` (id `id`, role `role`): for
/// harnesses that cannot send a credential, such as the MCP conformance suite.
pub fn with_anonymous(yaml: &str, id: &str, role: &str) -> String {
    yaml.replacen(
        "identity:\n",
        &format!("identity:\n  anonymous: {{id: {id}, role: {role}}}\n"),
        1,
    )
}

/// Starts a gateway from `yaml`.
pub async fn start_gateway(yaml: &str) -> RunningGateway {
    let cfg = GatewayConfig::parse(yaml).unwrap();
    assert!(cfg.unknown_keys.is_empty(), "{:?}", cfg.unknown_keys);
    lockstep_gateway::start(cfg).await.unwrap()
}

/// Waits until `/health` says a fresh revision decides (at most 10 s).
pub async fn wait_gateway_ready(gw: &RunningGateway) {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ok = http
            .get(format!("http://{}/health", gw.addr))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway never got a fresh revision"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A modern-era (2026-07-28) request body and its required headers.
pub fn modern_call(id: i64, tool: &str, args: Value) -> (Value, Vec<(&'static str, String)>) {
    let body = json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": args,
                   "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                             "io.modelcontextprotocol/clientCapabilities": {}}},
    });
    let headers = vec![
        ("mcp-protocol-version", "2026-07-28".to_string()),
        ("mcp-method", "tools/call".to_string()),
        ("mcp-name", tool.to_string()),
    ];
    (body, headers)
}

/// A recording MCP upstream: the gateway's tool server (`initialize` with a session
/// id, `server/discover`, `tools/list` with the guide's tools, `tools/call` echoing the
/// call, 202 to notifications) that keeps every message it received.
#[derive(Clone, Default)]
pub struct McpUpstream {
    pub received: Arc<Mutex<Vec<Value>>>,
}

impl McpUpstream {
    /// Methods (and tool names) received so far.
    pub fn calls(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|m| match m["params"]["name"].as_str() {
                Some(n) => format!("{} {n}", m["method"].as_str().unwrap_or_default()),
                None => m["method"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// Serves on 127.0.0.1; returns `http://…/mcp` and the task.
    pub async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move { me.answer(&headers, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/mcp"), h)
    }

    /// The answer to one POST (for tests that put a check in front of it): the
    /// message is recorded, then answered by the gateway's tool server.
    pub fn answer(&self, _headers: &HeaderMap, body: &[u8]) -> Response {
        if let Ok(msg) = serde_json::from_slice::<Value>(body) {
            self.received.lock().unwrap().push(msg);
        }
        lockstep_gateway::tool_server::answer("recording", body)
    }
}
