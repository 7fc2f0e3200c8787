//! Decision logs POSTed to a log service as OPA's logs plugin does: gzip'd JSON arrays
//! of events on `<service>/logs`, with the service's credentials, re-sent after a
//! failed upload, and flushed on shutdown. The log service here is a small axum server
//! on 127.0.0.1 that fails its first two uploads.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post as route_post;
use lockstep_agent::DecisionUpload;
use serde_json::{Value, json};

#[derive(Default)]
struct Collected {
    attempts: usize,
    fail_first: usize,
    events: Vec<Value>,
    bodies: Vec<usize>,
    bad: Vec<String>,
}

async fn logs(
    State(c): State<Arc<Mutex<Collected>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut c = c.lock().unwrap();
    c.attempts += 1;
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    if h("authorization") != "Bearer log-token"
        || h("content-encoding") != "gzip"
        || h("content-type") != "application/json"
    {
        c.bad.push(format!("{headers:?}"));
        return StatusCode::UNAUTHORIZED;
    }
    if c.attempts <= c.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    let arr: Vec<Value> = serde_json::from_str(&text).unwrap();
    c.bodies.push(body.len());
    c.events.extend(arr);
    StatusCode::NO_CONTENT
}

async fn log_service(fail_first: usize) -> (String, Arc<Mutex<Collected>>) {
    let c = Arc::new(Mutex::new(Collected {
        fail_first,
        ..Collected::default()
    }));
    let app = Router::new()
        .route("/logs/eu", route_post(logs))
        .with_state(c.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}"), c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_logs_are_uploaded_retried_and_flushed() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let (log_url, collected) = log_service(2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sync = sync_config(
        server.service(),
        server.verification(),
        dir.path(),
        Some(20),
    );
    sync.labels.insert("id".into(), "upload-agent".into());
    let mut cfg = agent_config(sync, None);
    cfg.decision_logs.upload = Some(DecisionUpload {
        service: service(&log_url, Some("log-token")),
        resource: "/logs/eu".into(),
        min_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
        upload_size_limit: 2048,
        buffer_size_limit_events: 10_000,
    });
    let a = lockstep_agent::start(cfg).await.unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while serving(&http, &a).await.as_deref() != Some("r1") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 200 decisions: more than one 2 KiB chunk, first two uploads refused.
    let mut ids = Vec::new();
    for i in 0..200 {
        let user = if i % 2 == 0 { "alice" } else { "mallory" };
        let (status, _, b) = post(
            &http,
            &a,
            "/v1/data/mcp/allow",
            json!({"input": {"user": user, "n": i}}),
        )
        .await;
        assert_eq!(status, 200);
        ids.push(b["decision_id"].as_str().unwrap().to_string());
    }
    // Delivered after the failures, without shutting down.
    let deadline = Instant::now() + Duration::from_secs(20);
    // (The readiness probe above made decisions too; they are logged like any other.)
    fn ours(events: &[Value], ids: &[String]) -> Vec<String> {
        events
            .iter()
            .map(|e| e["decision_id"].as_str().unwrap().to_string())
            .filter(|id| ids.contains(id))
            .collect()
    }
    let uploaded = loop {
        let (n, total) = {
            let c = collected.lock().unwrap();
            (ours(&c.events, &ids).len(), c.events.len())
        };
        if n >= 200 {
            break total;
        }
        assert!(Instant::now() < deadline, "only {n} events uploaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let metrics = scrape(&http, &url(&a, "/metrics")).await;
    assert!(
        metrics.contains(&format!(
            "lockstep_decision_logs_uploaded_total {uploaded}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockstep_decision_log_upload_failures_total 2"),
        "{metrics}"
    );

    // One more decision, then shutdown: flushed without waiting for the timer.
    let (_, _, last) = post(
        &http,
        &a,
        "/v1/data/mcp/allow",
        json!({"input": {"user": "alice"}}),
    )
    .await;
    a.shutdown().await.unwrap();
    server.stop().await;

    let c = collected.lock().unwrap();
    assert!(c.bad.is_empty(), "{:?}", c.bad);
    assert_eq!(c.events.len(), uploaded + 1);
    assert!(c.bodies.len() >= 2, "{:?}", c.bodies);
    assert!(c.bodies.iter().all(|b| *b <= 2048), "{:?}", c.bodies);
    // Every decision exactly once, in order, with OPA's event fields and the revision.
    ids.push(last["decision_id"].as_str().unwrap().to_string());
    assert_eq!(ours(&c.events, &ids), ids);
    let e = c
        .events
        .iter()
        .find(|e| e["decision_id"] == ids[1].as_str())
        .unwrap();
    assert_eq!(e["path"], "mcp/allow");
    assert_eq!(e["input"]["user"], "mallory");
    assert_eq!(e["result"], false);
    assert_eq!(e["bundles"]["main"]["revision"], "r1");
    assert!(e["timestamp"].is_string());
    assert_eq!(e["labels"]["id"], "upload-agent");
}
