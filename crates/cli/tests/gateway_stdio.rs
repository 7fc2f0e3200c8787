//! `lockstep gateway --stdio` launched by a real MCP client (PyPI `mcp` 2.3, both
//! protocol eras), in front of a recording upstream, with the guide's policies from a
//! real `lockstep server`: the same decisions as over HTTP, and the upstream never sees
//! a denied call. Uses the shared MCP venv (`lockstep_testkit::python::mcp_venv`)
//! (`LOCKSTEP_SKIP_MCP_PEERS=1` skips when it cannot be made).
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_mcp_client_launches_the_stdio_gateway() {
    let Some(venv) = tokio::task::block_in_place(mcp_venv) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let upstream = McpUpstream::default();
    let (url, _task) = upstream.start().await;
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, gateway_yaml(&server, dir.path(), &url, "")).unwrap();
    let cmd = format!(
        "{} gateway --stdio --config {}",
        env!("CARGO_BIN_EXE_lockstep"),
        cfg.display()
    );
    let steps = json!([
        "list_tools",
        {"op": "call_tool", "name": "read_database", "args": {"target": "users", "operation": "read", "database": "analytics"}},
        {"op": "call_tool", "name": "write_database", "args": {"target": "users", "operation": "write"}},
    ]);
    for protocol in ["2025-11-25", "2026-07-28"] {
        let out = tokio::task::block_in_place(|| {
            Command::new(venv.join("bin/python"))
                .arg(mcp_peers().join("client.py"))
                .args(["--stdio-cmd", &cmd])
                .args([
                    "--stdio-env",
                    &format!("LOCKSTEP_GATEWAY_KEY={ANALYST_KEY}"),
                ])
                .args([
                    "--protocol",
                    protocol,
                    "--brief",
                    "--steps",
                    &steps.to_string(),
                ])
                .output()
                .unwrap()
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "{protocol}:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let step = |n: u64| {
            lines
                .iter()
                .find(|l| l["step"] == json!(n))
                .unwrap()
                .clone()
        };
        assert_eq!(step(0)["ok"], json!(true), "{protocol}");
        assert_eq!(
            step(1)["names"],
            json!(["read_database", "run_query"]),
            "{protocol}"
        );
        assert_eq!(step(2)["ok"], json!(true), "{protocol}: {}", step(2));
        let denied = step(3);
        assert_eq!(
            denied["error"]["code"],
            json!(-31001),
            "{protocol}: {denied}"
        );
        assert_eq!(denied["error"]["data"]["revision"], json!("r1"));
        assert_eq!(
            denied["error"]["message"],
            json!("role 'analyst' has no access to tool 'write_database'")
        );
    }
    let calls: Vec<String> = upstream
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("tools/call"))
        .collect();
    assert_eq!(
        calls,
        ["tools/call read_database", "tools/call read_database"]
    );
    server.stop().await;
}
