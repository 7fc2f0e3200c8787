//! Agent benchmarks recorded in BENCHMARKS.md (section D); measured, never asserted.
//!
//!     cargo run --release -p lockstep-agent --example agent_bench -- [decisions|activation|all]
//!
//! Both parts run a real lockstep server and a real agent on 127.0.0.1 in this process,
//! with the three-layer MCP policy of `examples/policies`, signed (ES256).
//!
//! - `decisions`: `POST /v1/data/mcp/decision` over loopback HTTP/1.1 keep-alive from
//!   C concurrent clients for D seconds (allowed and denied requests alternate);
//!   prints decisions per second and the latency distribution seen by the clients.
//!   `BENCH_CONCURRENCY` (default 1,8,32) and `BENCH_SECONDS` (default 10);
//!   `BENCH_MODES` (default interpreter,rvm,memo): one agent per mode, in turn —
//!   regorus's interpreter alone (before issue 10), the shadow-verified RVM with the
//!   memo off (every decision evaluated), and the default (memo in front of the RVM).
//! - `activation`: the same bundle plus a `mcp/inventory/data.json` of 1 MB and of
//!   100 MB; for each publication, the time of the `PUT` (the server verifies and stores
//!   it) and from the server's acknowledgement until the agent serves the new revision
//!   (long-poll wake-up, download, signature check, parse, compile, swap).
// A benchmark program, not library code: it stops at the first failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lockstep_bundle::{BuildOptions, BundleFile, build_bundle};
use serde_json::json;

const ALLOWED: &str = r#"{"input":{"agent":{"role":"analyst"},"request":{"tool":"read_database","params":{"target":"orders","operation":"read","database":"analytics"}}}}"#;
const DENIED: &str = r#"{"input":{"agent":{"role":"analyst"},"request":{"tool":"write_database","params":{"target":"orders","operation":"write","database":"payroll"}}}}"#;

/// `examples/policies` with an optional inventory of about `inventory_bytes`, signed.
fn policy_bundle(rev: &str, iat: i64, keys: &Keys, inventory_bytes: usize) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    let mut b = build_bundle(
        &[dir],
        &BuildOptions {
            revision: Some(rev.into()),
            lazy_data: true,
            ..BuildOptions::default()
        },
    )
    .unwrap();
    if inventory_bytes > 0 {
        b.files.push(BundleFile {
            path: "mcp/inventory/data.json".into(),
            bytes: inventory(inventory_bytes),
        });
    }
    seal(b, Some(keys), iat)
}

/// Resource objects (~150 bytes each) as in scripts/bench.sh, from a fixed LCG.
fn inventory(bytes: usize) -> Vec<u8> {
    let mut x: u64 = 7;
    let mut next = |m: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % m
    };
    let mut out = Vec::with_capacity(bytes + 256);
    out.push(b'{');
    let mut i = 0u64;
    while out.len() < bytes {
        if i > 0 {
            out.push(b',');
        }
        let item = json!({
            "owner": format!("team-{}", next(1000)),
            "tags": [format!("t{}", next(100)), format!("t{}", next(100)), format!("t{}", next(100)), format!("t{}", next(100))],
            "size": next(1_000_000_000),
            "path": format!("/srv/data/{}/{i}.parquet", next(100_000)),
            "readonly": next(2) == 0,
        });
        out.extend_from_slice(format!("\"res-{i:07}\":").as_bytes());
        serde_json::to_writer(&mut out, &item).unwrap();
        i += 1;
    }
    out.push(b'}');
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn wait_active(a: &lockstep_agent::RunningAgent, rev: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while a
        .syncer
        .active()
        .map(|x| x.revision().to_string())
        .as_deref()
        != Some(rev)
    {
        assert!(Instant::now() < deadline, "{rev} never became active");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// How the agent evaluates, per `BENCH_MODES` entry.
fn fast_path(mode: &str) -> lockstep_policy::CompileOptions {
    let mut c = lockstep_policy::CompileOptions::default();
    match mode {
        // Before issue 10's fast path: regorus's interpreter on every request.
        "interpreter" => {
            c.memo.enabled = false;
            c.rvm.enabled = false;
        }
        // Every decision evaluated (memo off), on the shadow-verified RVM.
        "rvm" => c.memo.enabled = false,
        // The default: the memo in front of the RVM.
        "memo" => {}
        other => panic!("BENCH_MODES: unknown mode {other} (interpreter, rvm, memo)"),
    }
    c
}

async fn decisions(server: &TestServer, dir: &Path) {
    server
        .publish_ok("main", policy_bundle("d1", 1000, &server.keys, 0))
        .await;
    let modes = std::env::var("BENCH_MODES").unwrap_or_else(|_| "interpreter,rvm,memo".into());
    for mode in modes.split(',').map(str::trim) {
        decisions_with(server, &dir.join(mode), mode).await;
    }
}

async fn decisions_with(server: &TestServer, dir: &Path, mode: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut sync = sync_config(server.service(), server.verification(), dir, Some(30));
    sync.labels
        .insert("id".into(), format!("bench-agent-{mode}"));
    sync.compile = fast_path(mode);
    let a = lockstep_agent::start(agent_config(sync, None))
        .await
        .unwrap();
    wait_active(&a, "d1").await;
    let url = format!("http://{}/v1/data/mcp/decision", a.addr);
    // Sanity: the decision is the three-layer one, allowed and denied; then past the
    // RVM's shadow phase.
    let http = reqwest::Client::new();
    for i in 0..200 {
        let (body, want) = if i % 2 == 0 {
            (ALLOWED, true)
        } else {
            (DENIED, false)
        };
        let v: serde_json::Value = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["result"]["allow"], want, "{v}");
    }
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "decisions ({mode}): POST /v1/data/mcp/decision, three-layer policy, {secs} s per level"
    );
    for c in levels {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..c {
            let (stop, url) = (stop.clone(), url.clone());
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    let body = if n % 2 == 0 { ALLOWED } else { DENIED };
                    n += 1;
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let wall = t0.elapsed();
        all.sort_unstable();
        println!(
            "  concurrency {c:>3}: {:>8.0} decisions/s  p50 {}  p90 {}  p99 {}  max {}  (n={})",
            all.len() as f64 / wall.as_secs_f64(),
            ms(pct(&all, 0.50)),
            ms(pct(&all, 0.90)),
            ms(pct(&all, 0.99)),
            ms(all.last().copied().unwrap_or_default()),
            all.len()
        );
    }
    a.shutdown().await.unwrap();
}

async fn activation(server: &TestServer, dir: &Path) {
    let mut sync = sync_config(server.service(), server.verification(), dir, Some(30));
    sync.labels.insert("id".into(), "bench-agent-2".into());
    sync.bundles[0].name = "big".into();
    sync.bundles[0].resource = "bundles/big".into();
    server
        .publish_ok("big", policy_bundle("a0", 2000, &server.keys, 0))
        .await;
    let a = lockstep_agent::start(agent_config(sync, None))
        .await
        .unwrap();
    wait_active(&a, "a0").await;
    println!("activation: PUT, then acknowledgement -> agent serving the new revision");
    let mut iat = 2000;
    for (label, size, rounds) in [("1 MB", 1usize << 20, 5), ("100 MB", 100usize << 20, 3)] {
        for round in 0..rounds {
            iat += 1;
            let rev = format!("a{iat}");
            let body = policy_bundle(&rev, iat, &server.keys, size);
            let gz = body.len();
            let t0 = Instant::now();
            server.publish_ok("big", body).await;
            let acked = t0.elapsed();
            let t1 = Instant::now();
            wait_active(&a, &rev).await;
            let active = t1.elapsed();
            println!(
                "  {label:>6} data.json (tar.gz {:.1} MB) round {round}: PUT {}  ack->active {}  total {}",
                gz as f64 / 1_048_576.0,
                ms(acked),
                ms(active),
                ms(acked + active)
            );
        }
    }
    a.shutdown().await.unwrap();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // RUST_LOG=lockstep_sync=debug shows where an activation spends its time.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    if what == "decisions" || what == "all" {
        decisions(&server, &dir.path().join("d")).await;
    }
    if what == "activation" || what == "all" {
        activation(&server, &dir.path().join("a")).await;
    }
    server.stop().await;
}
