//! The MCP conformance suite (npm `@modelcontextprotocol/conformance`, server
//! scenarios of both spec revisions) against lockstep's conformance fixture
//! (`tests/peers/conformance_fixture.py`, PyPI `mcp` 2.3) directly, then through
//! `lockstep gateway` in front of it: every scored scenario that passes directly
//! passes through the gateway too, and the gateway passes at least as many.
//!
//! The gateway runs an allow-all bundle signed and served by a real `lockstep server`
//! (the suite tests the protocol, not a policy), with prefixing off (one upstream: the
//! suite calls fixed tool names) and an anonymous identity (the suite sends no
//! credential). Both results tables go to stderr; `BENCHMARKS.md` keeps the last one.
//!
//! Needs `npm` and network access to the npm registry on first run (Node 22 and the
//! suite are installed under `<target>/mcp-conformance` by `tests/peers/conformance.sh`);
//! `LOCKSTEP_SKIP_CONFORMANCE=1` skips when they cannot be had, and
//! `LOCKSTEP_SKIP_MCP_PEERS=1` when the Python venv cannot be made.
//! `LOCKSTEP_CONFORMANCE_OUT=DIR` keeps the suite's per-check results in `DIR`.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lockstep_testkit::prelude::*;

const ALLOW_ALL: &str = "package mcp.allow_all\n\nallow := true\n";
const LAYERS: &str = "layers:\n  - path: mcp/allow_all\n    methods: [\"*\"]\n";

/// One row of `conformance.sh`'s table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    scored: bool,
    passed: bool,
    failed_checks: String,
}

/// The suite's results at `url`: (scenario, requirement set) -> row, and the table.
fn run_suite(url: &str, out: &Path) -> (BTreeMap<(String, String), Row>, String) {
    let t0 = Instant::now();
    let output = Command::new("bash")
        .arg(mcp_peers().join("conformance.sh"))
        .arg("--out")
        .arg(out)
        .arg(url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    eprintln!(
        "conformance.sh {url} ({:.0} s, {}):\n{stdout}{}",
        t0.elapsed().as_secs_f64(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: BTreeMap<_, _> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario") && !l.starts_with("| --"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 7, "unexpected table row {l:?}");
            (
                (cells[0].to_string(), cells[1].to_string()),
                Row {
                    scored: cells[5] == "yes",
                    passed: cells[6] == "PASS",
                    failed_checks: cells.get(7).unwrap_or(&"").to_string(),
                },
            )
        })
        .collect();
    assert!(
        !rows.is_empty(),
        "conformance.sh produced no results for {url} (status {})",
        output.status
    );
    (rows, stdout)
}

fn scored_passes(rows: &BTreeMap<(String, String), Row>) -> usize {
    rows.values().filter(|r| r.scored && r.passed).count()
}

/// Whether Node and the suite are installed; `false` only when they cannot be had and
/// the skip switch is set (else the test fails with the reason).
fn suite_installed() -> bool {
    let ok = Command::new("bash")
        .arg(mcp_peers().join("conformance.sh"))
        .arg("--install-only")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("LOCKSTEP_SKIP_CONFORMANCE").as_deref() == Ok("1"),
            "could not install Node 22 and the conformance suite (npm missing or no registry?); \
             set LOCKSTEP_SKIP_CONFORMANCE=1 to skip"
        );
        eprintln!("LOCKSTEP_SKIP_CONFORMANCE=1: skipping, the conformance suite is not installed");
    }
    ok
}

/// Starts the fixture on a free port; its `/mcp` URL once it accepts.
fn fixture(venv: &Path, dir: &Path) -> (Proc, String) {
    let log = dir.join("fixture.log");
    let p = spawn(
        "conformance fixture",
        Command::new(venv.join("bin/python"))
            .arg(mcp_peers().join("conformance_fixture.py"))
            .args(["--port", "0"]),
        &log,
    );
    let line = wait_for_line(&log, "READY ", "fixture", Duration::from_secs(30));
    let url = line.split_whitespace().nth(2).expect("READY <port> <url>");
    (p, url.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_through_the_gateway_as_it_does_directly() {
    let Some(venv) = tokio::task::block_in_place(mcp_venv) else {
        return;
    };
    if !tokio::task::block_in_place(suite_installed) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_fixture, upstream_url) = tokio::task::block_in_place(|| fixture(&venv, dir.path()));

    // LOCKSTEP_CONFORMANCE_OUT keeps the suite's checks.json files for a look afterwards.
    let out = std::env::var_os("LOCKSTEP_CONFORMANCE_OUT")
        .map_or_else(|| dir.path().to_path_buf(), std::path::PathBuf::from);
    let (direct, direct_table) =
        tokio::task::block_in_place(|| run_suite(&upstream_url, &out.join("direct")));

    let server = TestServer::start().await;
    server
        .publish_ok(
            "main",
            bundle_with("allow-all-1", 1000, Some(&server.keys), ALLOW_ALL),
        )
        .await;
    let yaml = with_anonymous(
        &gateway_yaml(&server, dir.path(), &upstream_url, LAYERS),
        "conformance-suite",
        "tester",
    );
    let gw = start_gateway(&yaml).await;
    wait_gateway_ready(&gw).await;
    let gateway_url = format!("http://{}/mcp", gw.addr);
    let (through, through_table) =
        tokio::task::block_in_place(|| run_suite(&gateway_url, &out.join("gateway")));

    eprintln!("## directly\n{direct_table}\n## through the gateway\n{through_table}");
    let lost: Vec<_> = direct
        .iter()
        .filter(|(_, r)| r.scored && r.passed)
        .filter(|(k, _)| !through.get(*k).is_some_and(|r| r.passed))
        .map(|((name, req), _)| {
            let why = through
                .get(&(name.clone(), req.clone()))
                .map_or("not run", |r| r.failed_checks.as_str());
            format!("{name} ({req}): {why}")
        })
        .collect();
    assert!(
        lost.is_empty(),
        "scenarios that pass directly but not through the gateway:\n{}",
        lost.join("\n")
    );
    assert!(
        scored_passes(&through) >= scored_passes(&direct),
        "through the gateway {} scored passes, directly {}",
        scored_passes(&through),
        scored_passes(&direct)
    );
    // The suite's requests were decided, not waved through: the audit names the revision.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"allow-all-1\"")),
        "no audit line names the revision"
    );
}
