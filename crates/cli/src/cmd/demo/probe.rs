//! The demo's MCP client: one stateless 2026-07-28 `tools/call` through a gateway, as
//! an agent sends it, and what the answer says (allowed or not, by which revision, why).

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

/// What one call got back.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Answer {
    pub allowed: bool,
    /// The revision that decided (`X-Lockstep-Revision`), if one did.
    pub revision: Option<String>,
    /// The JSON-RPC error code of a refusal.
    pub code: Option<i64>,
    pub reason: Option<String>,
}

impl Answer {
    pub fn verdict(&self) -> &'static str {
        if self.allowed { "ALLOW" } else { "DENY" }
    }

    /// `ALLOW` or `DENY (reason)`, for the story.
    pub fn summary(&self) -> String {
        match &self.reason {
            Some(r) if !self.allowed => format!("DENY  {r}"),
            _ => self.verdict().to_string(),
        }
    }
}

#[derive(Clone)]
pub struct Caller {
    http: reqwest::Client,
    key: String,
}

/// A tool call the demo makes, with the arguments the example policies expect.
#[derive(Debug, Clone, Copy)]
pub enum Call {
    ReadDatabase,
    WriteDatabase,
    RunQuery,
}

impl Call {
    pub const ALL: [Call; 3] = [Call::ReadDatabase, Call::WriteDatabase, Call::RunQuery];

    pub fn tool(self) -> &'static str {
        match self {
            Call::ReadDatabase => "read_database",
            Call::WriteDatabase => "write_database",
            Call::RunQuery => "run_query",
        }
    }

    fn arguments(self) -> Value {
        match self {
            Call::ReadDatabase => json!({"target": "orders", "database": "analytics"}),
            Call::WriteDatabase => {
                json!({"target": "orders", "operation": "write", "database": "analytics"})
            }
            Call::RunQuery => {
                json!({"target": "SELECT * FROM orders", "database": "analytics"})
            }
        }
    }
}

impl Caller {
    pub fn new(key: &str) -> anyhow::Result<Caller> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the MCP client")?;
        Ok(Caller {
            http,
            key: key.to_string(),
        })
    }

    /// `tools/call` of `call` at `url` (a gateway's `/mcp`).
    pub async fn call(&self, url: &str, call: Call) -> anyhow::Result<Answer> {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": call.tool(), "arguments": call.arguments(),
                       "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                 "io.modelcontextprotocol/clientCapabilities": {}}},
        });
        let r = self
            .http
            .post(url)
            .bearer_auth(&self.key)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", call.tool())
            .header("accept", "application/json, text/event-stream")
            .json(&body)
            .send()
            .await
            .with_context(|| format!("calling {} at {url}", call.tool()))?;
        let revision = r
            .headers()
            .get("x-lockstep-revision")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let answer: Value = r
            .json()
            .await
            .with_context(|| format!("reading the answer from {url}"))?;
        let error = answer.get("error");
        let allowed = error.is_none()
            && answer.pointer("/result/isError").and_then(Value::as_bool) != Some(true);
        Ok(Answer {
            allowed,
            revision,
            code: error.and_then(|e| e.get("code")).and_then(Value::as_i64),
            reason: error
                .and_then(|e| e.pointer("/data/reason").or_else(|| e.get("message")))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}
