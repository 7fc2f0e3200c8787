//! The guide's fleet with lockstep: three gateways behind one `lockstep server`. A
//! policy published while clients are calling takes effect on each gateway's next
//! request after its activation, denials name the new revision, no gateway goes back to
//! the old one, and the fleet view (what `lockstep drift` reads) shows all three current.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

/// The analysts lose `run_query` (the guide's patch).
fn v2(server: &TestServer) -> Vec<u8> {
    example_bundle_with("r2", 2000, Some(&server.keys), |dir| {
        let roles = dir.join("mcp/roles/data.json");
        let text = std::fs::read_to_string(&roles).unwrap();
        let patched = text.replace(
            r#""analyst": { "tools": ["read_database", "run_query"] }"#,
            r#""analyst": { "tools": ["read_database"] }"#,
        );
        assert_ne!(text, patched, "the example roles changed shape");
        std::fs::write(roles, patched).unwrap();
    })
}

/// One call as the analyst: (status, revision header, JSON-RPC error if any).
async fn call(http: &reqwest::Client, url: &str) -> (u16, Option<String>, Value) {
    let (body, headers) = modern_call(
        1,
        "run_query",
        json!({"target": "SELECT * FROM orders", "database": "analytics"}),
    );
    let mut r = http.post(url).bearer_auth(ANALYST_KEY).json(&body);
    for (k, v) in headers {
        r = r.header(k, v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let rev = r
        .headers()
        .get("x-lockstep-revision")
        .map(|v| v.to_str().unwrap().to_string());
    let b: Value = r.json().await.unwrap();
    (status, rev, b["error"].clone())
}

struct Three {
    gateways: Vec<lockstep_gateway::RunningGateway>,
    upstreams: Vec<McpUpstream>,
    urls: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Three gateways on `server`, each in front of its own recording upstream, reporting
/// status as `gateway-<i>`.
async fn three_gateways(server: &TestServer) -> Three {
    let mut gateways = Vec::new();
    let mut dirs = Vec::new();
    let mut upstreams = Vec::new();
    for i in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let upstream = McpUpstream::default();
        let (url, _task) = upstream.start().await;
        let mut yaml = gateway_yaml(server, dir.path(), &url, "");
        yaml.push_str(&format!(
            "  status: {{service: bundle-server}}\n  labels: {{id: gateway-{i}}}\n"
        ));
        let gw = start_gateway(&yaml).await;
        wait_gateway_ready(&gw).await;
        gateways.push(gw);
        dirs.push(dir);
        upstreams.push(upstream);
    }
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| format!("http://{}/mcp", g.addr))
        .collect();
    Three {
        gateways,
        upstreams,
        urls,
        _dirs: dirs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_switch_to_a_new_revision_together_and_report_it() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let Three {
        gateways,
        upstreams,
        urls,
        _dirs,
    } = three_gateways(&server).await;

    // Clients call every gateway in a loop while r2 is published.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for url in urls.clone() {
        let stop = stop.clone();
        callers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(call(&http, &url).await);
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.publish_ok("main", v2(&server)).await;
    let published = Instant::now();
    let http = reqwest::Client::new();
    for url in &urls {
        loop {
            let (_, rev, _) = call(&http, url).await;
            if rev.as_deref() == Some("r2") {
                break;
            }
            assert!(
                published.elapsed() < Duration::from_secs(10),
                "{url} never switched"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!(
        "all three on r2 {:?} after the publish",
        published.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (i, c) in callers.into_iter().enumerate() {
        let seen = c.await.unwrap();
        assert!(seen.len() > 5, "gateway {i}: only {} calls", seen.len());
        let mut on_r2 = false;
        for (status, rev, error) in &seen {
            match rev.as_deref() {
                // r1: the analyst may run the query; the upstream answers.
                Some("r1") => {
                    assert!(!on_r2, "gateway {i} went back to r1: {seen:?}");
                    assert_eq!((*status, error), (200, &Value::Null), "gateway {i}");
                }
                // r2: denied, and the denial names r2 and the reason.
                Some("r2") => {
                    on_r2 = true;
                    assert_eq!(*status, 403, "gateway {i}: {error}");
                    assert_eq!(error["data"]["revision"], json!("r2"));
                    assert_eq!(
                        error["message"],
                        json!("role 'analyst' has no access to tool 'run_query'")
                    );
                }
                other => {
                    panic!("gateway {i}: answer without a revision: {other:?} {status} {error}")
                }
            }
        }
        assert!(on_r2, "gateway {i} never answered with r2");
    }
    // Each upstream saw run_query only while r1 decided.
    for u in &upstreams {
        assert!(u.calls().iter().all(|c| c == "tools/call run_query"));
    }

    // The fleet view shows all three gateways on r2.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = server.fleet().await;
        let main = f["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "main")
            .cloned()
            .unwrap_or(Value::Null);
        if main["instances_current"] == json!(3) && main["converged"] == json!(true) {
            assert_eq!(main["desired_revision"], json!("r2"));
            break;
        }
        assert!(Instant::now() < deadline, "fleet never converged: {f}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for g in gateways {
        g.shutdown().await.unwrap();
    }
    server.stop().await;
}

/// With a cut-over announced, the three gateways prepare r2 as soon as it arrives and
/// all switch at the announced instant: none answers by r2 before it, and the instants
/// they report are within 10 ms of each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_switch_at_the_announced_instant() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let three = three_gateways(&server).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for url in three.urls.clone() {
        let stop = stop.clone();
        callers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, rev, _) = call(&http, &url).await;
                seen.push((rev, lockstep_sync::clock::now_us()));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            seen
        }));
    }
    // Generous: this file's other test runs beside it, and both hammer their gateways
    // from the same two cores (the precise figures are tests/cutover.rs's).
    let published = server.publish_cutover("main", v2(&server), 3_000).await;
    let at_us = chrono::DateTime::parse_from_rfc3339(published["activate_at"].as_str().unwrap())
        .unwrap()
        .timestamp_micros();
    let mut summary = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(20);
    while summary.is_null() {
        let f = server.fleet().await;
        if let Some(p) = f["bundles"][0]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["revision"] == "r2")
            && p["cutover"]["activated"] == json!(3)
        {
            summary = p["cutover"].clone();
        }
        assert!(Instant::now() < deadline, "no cut-over summary: {f}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut first_r2 = Vec::new();
    for (i, c) in callers.into_iter().enumerate() {
        let seen = c.await.unwrap();
        let first = seen
            .iter()
            .find(|(rev, _)| rev.as_deref() == Some("r2"))
            .unwrap_or_else(|| panic!("gateway {i} never answered by r2"))
            .1;
        // One machine, one clock: no answer by r2 before the instant (2 ms for the
        // offset estimate's uncertainty).
        assert!(
            first >= at_us - 2_000,
            "gateway {i} answered by r2 {} µs before the instant",
            at_us - first
        );
        first_r2.push(first);
    }
    let observed = (first_r2.iter().max().unwrap() - first_r2.iter().min().unwrap()) as f64 / 1e3;
    eprintln!(
        "three gateways: reported spread {} ms, first r2 answers within {observed:.1} ms",
        summary["spread_ms"]
    );
    assert!(summary["spread_ms"].as_f64().unwrap() <= 10.0, "{summary}");
    assert_eq!(summary["late"], json!([]), "{summary}");
    for g in three.gateways {
        g.shutdown().await.unwrap();
    }
    server.stop().await;
}
