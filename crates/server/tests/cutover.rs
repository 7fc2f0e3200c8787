//! The server's side of a synchronized cut-over: the announced instant (per publish and
//! per bundle configuration) on every download of the revision, its own receive and send
//! times on every bundle answer, and limits on the delay.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use lockstep_testkit::prelude::*;

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_announced_instant_travels_with_every_download() {
    let mut server = TestServer::with(|c| {
        c.cutover.bundles.insert("main".into(), 750);
    })
    .await;
    let keys = server.keys.clone();

    // The bundle's configured delay.
    let before = chrono::Utc::now();
    let resp = server
        .publish_json("main", bundle("r1", 1000, Some(&keys)), None)
        .await;
    let at = chrono::DateTime::parse_from_rfc3339(resp["activate_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let ahead = (at - before).num_milliseconds();
    assert!((740..1_500).contains(&ahead), "announced {ahead} ms ahead");
    let r = server.get("/bundles/main").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-lockstep-activate-at"),
        Some(at.timestamp_millis().to_string())
    );

    // A publish overrides it; 0 announces nothing.
    let resp = server
        .publish_cutover("main", bundle("r2", 2000, Some(&keys)), 0)
        .await;
    assert!(resp.get("activate_at").is_none(), "{resp}");
    let r = server.get("/bundles/main").await;
    assert_eq!(header(&r, "x-lockstep-activate-at"), None);

    // Every answer carries the server's receive and send times, a long poll's wait
    // between them; a 304 too.
    let etag = etag(&r);
    let t0 = chrono::Utc::now().timestamp_micros();
    let r = server
        .http()
        .get(server.url("/bundles/main"))
        .bearer_auth(DOWNLOAD)
        .header("if-none-match", &etag)
        .header("prefer", "modes=snapshot,delta;wait=1")
        .send()
        .await
        .unwrap();
    let t3 = chrono::Utc::now().timestamp_micros();
    assert_eq!(r.status(), 304);
    let times = header(&r, "x-lockstep-server-time").unwrap();
    let (received, sent) = times.split_once(' ').unwrap();
    let (received, sent): (i64, i64) = (received.parse().unwrap(), sent.parse().unwrap());
    assert!(
        t0 <= received && received <= sent && sent <= t3,
        "{t0} {times} {t3}"
    );
    assert!(sent - received >= 900_000, "the long poll's wait: {times}");

    // Over the limit: refused, nothing published.
    let r = server
        .http()
        .put(format!("{}/bundles/main?cutover_ms=600001", server.base()))
        .bearer_auth(PUBLISHER)
        .body(bundle("r3", 3000, Some(&keys)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("600000 ms limit"));
    let r = server.get("/bundles/main").await;
    assert_eq!(header(&r, "x-lockstep-revision").as_deref(), Some("r2"));
    tokio::time::sleep(Duration::from_millis(1)).await;
    server.stop().await;
}

#[test]
fn a_configured_delay_over_the_limit_is_refused() {
    let mut c = lockstep_server::config::Config::default();
    c.cutover.delay_ms = 600_001;
    let e = c.cutover().unwrap_err().to_string();
    assert!(e.contains("cutover.delay_ms"), "{e}");
    c.cutover.delay_ms = 500;
    assert_eq!(
        c.cutover().unwrap().delay_for("main"),
        Duration::from_millis(500)
    );
}

/// A replica that learns a publication from the store announces the same instant: it is
/// in the stored state, not in the memory of the replica that took the publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_announce_the_same_instant() {
    let a = TestServer::start().await;
    let mut cfg_b = config(&a.store(), a.dir.path(), &a.keys);
    cfg_b.store.watch_interval_ms = Some(50);
    let b = lockstep_server::start(&cfg_b).await.unwrap();
    let base_b = format!("http://{}", b.addr);
    let resp = a
        .publish_cutover("main", bundle("r1", 1000, Some(&a.keys)), 5_000)
        .await;
    let at = chrono::DateTime::parse_from_rfc3339(resp["activate_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
        .to_string();
    let from_a = a.get("/bundles/main").await;
    assert_eq!(
        header(&from_a, "x-lockstep-activate-at").as_deref(),
        Some(at.as_str())
    );
    let mut from_b = None;
    for _ in 0..100 {
        let r = a
            .http()
            .get(format!("{base_b}/bundles/main"))
            .bearer_auth(DOWNLOAD)
            .send()
            .await
            .unwrap();
        if header(&r, "x-lockstep-revision").as_deref() == Some("r1") {
            from_b = header(&r, "x-lockstep-activate-at");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(from_b.as_deref(), Some(at.as_str()), "replica B");
    b.shutdown().await.unwrap();
    a.shutdown().await;
}
