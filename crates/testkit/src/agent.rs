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
        decision_logs: DecisionLogConfig {
            console: false,
            file: log.map(Path::to_path_buf),
            upload: None,
        },
        envoy: None,
        envoy_http: None,
        ignored: Vec::new(),
    }
}

pub async fn start_agent(server: &TestServer, dir: &Path, long_poll: Option<u64>) -> RunningAgent {
    let mut sync = sync_config(server.service(), server.verification(), dir, long_poll);
    sync.labels
        .insert("id".into(), format!("agent-{}", dir.display()));
    lockstep_agent::start(agent_config(sync, Some(&dir.join("decisions.jsonl"))))
        .await
        .unwrap()
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
