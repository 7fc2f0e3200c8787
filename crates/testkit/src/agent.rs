//! Agents started on 127.0.0.1 against a test server, and the requests tests make.

use std::path::Path;

use lockstep_agent::{AgentConfig, RunningAgent};
use lockstep_decision::DecisionLogConfig;
use lockstep_sync::SyncConfig;
use serde_json::{Value, json};

use crate::server::TestServer;
use crate::sync::sync_config;
use crate::wait::json_of;

pub fn agent_config(sync: SyncConfig, log: Option<&Path>) -> AgentConfig {
    AgentConfig {
        sync,
        listen: "127.0.0.1:0".into(),
        tokens: Default::default(),
        write_api: Default::default(),
        listener: Default::default(),
        decision_logs: DecisionLogConfig {
            console: false,
            file: log.map(Path::to_path_buf),
            upload: None,
        },
        envoy: None,
        envoy_http: None,
        upstream_tokens: None,
        ignored: Vec::new(),
    }
}

/// An agent on one bundle `main` of `server`, logging decisions to
/// `dir/decisions.jsonl`, with the production defaults (no API tokens, write API off
/// beside bundles).
pub async fn start_agent(server: &TestServer, dir: &Path, long_poll: Option<u64>) -> RunningAgent {
    start_agent_with(server, dir, long_poll, |_| {}).await
}

/// [`start_agent`] after `edit` of the configuration.
pub async fn start_agent_with(
    server: &TestServer,
    dir: &Path,
    long_poll: Option<u64>,
    edit: impl FnOnce(&mut AgentConfig),
) -> RunningAgent {
    let mut sync = sync_config(server.service(), server.verification(), dir, long_poll);
    sync.labels
        .insert("id".into(), format!("agent-{}", dir.display()));
    let mut cfg = agent_config(sync, Some(&dir.join("decisions.jsonl")));
    edit(&mut cfg);
    lockstep_agent::start(cfg).await.unwrap()
}

pub fn url(a: &RunningAgent, path: &str) -> String {
    format!("http://{}{path}", a.addr)
}

pub async fn post(
    http: &reqwest::Client,
    a: &RunningAgent,
    path: &str,
    body: Value,
) -> (u16, Option<String>, Value) {
    let r = http.post(url(a, path)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let rev = r
        .headers()
        .get("x-lockstep-revision")
        .map(|v| v.to_str().unwrap().to_string());
    (status, rev, r.json().await.unwrap_or(Value::Null))
}

/// `GET` a JSON document from the agent.
pub async fn get_json(http: &reqwest::Client, a: &RunningAgent, path: &str) -> Value {
    json_of(http.get(url(a, path))).await
}

pub async fn serving(http: &reqwest::Client, a: &RunningAgent) -> Option<String> {
    let (s, _, b) = post(http, a, "/v1/data/mcp/revision", json!({})).await;
    (s == 200).then(|| b["result"].as_str().unwrap_or_default().to_string())
}
