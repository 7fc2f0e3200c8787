//! What the server refuses before reading a request body (security review finding 3)
//! and what its listener tolerates from slow or idle clients (finding 4), over raw TCP.

use std::time::{Duration, Instant};

use lockstep_testkit::prelude::*;
use tokio::io::AsyncWriteExt;

const MIB: usize = 1024 * 1024;

/// Before the fix the body was read in full before the token was looked at: twelve
/// unauthenticated 63 MiB PUTs took the server from 16 MB to 717 MB. Now the 401
/// arrives while the declared body has not been sent at all.
#[tokio::test]
async fn finding3_unauthenticated_put_is_refused_before_its_body_is_sent() {
    let h = TestServer::start().await;
    let big = format!("Content-Length: {}", 63 * MIB);
    for (path, extra) in [
        ("/bundles/main", None),
        ("/bundles/main?rollback=true&reason=x", None),
        (
            "/bundles/main/rollback",
            Some("Content-Type: application/json"),
        ),
        ("/status", Some("Authorization: Bearer wrong")),
    ] {
        let method = if path.ends_with("rollback") || path == "/status" {
            "POST"
        } else {
            "PUT"
        };
        let mut headers = vec![big.as_str()];
        headers.extend(extra);
        let mut s = send_raw(h.addr, &request_head(method, path, &headers)).await;
        // A few body bytes, then nothing: a slow upload.
        s.write_all(&[0u8; 1024]).await.unwrap();
        let t0 = Instant::now();
        let code = status_within(&mut s, Duration::from_secs(3)).await;
        assert_eq!(code, Some(401), "{method} {path}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    // The refusals are counted.
    let m = h.metrics(PUBLISHER).await;
    assert!(m.contains("reason=\"unauthorized\""), "{m}");
    h.shutdown().await;
}

/// A declared body over `publish.max_bundle_bytes` is refused with 413 before it is sent.
#[tokio::test]
async fn finding3_content_length_over_the_limit_is_refused_before_upload() {
    let h = TestServer::with(|c| c.publish.max_bundle_bytes = Some(MIB)).await;
    let auth = format!("Authorization: Bearer {PUBLISHER}");
    let len = format!("Content-Length: {}", 2 * MIB);
    let mut s = send_raw(
        h.addr,
        &request_head("PUT", "/bundles/main", &[&auth, &len]),
    )
    .await;
    let t0 = Instant::now();
    assert_eq!(
        status_within(&mut s, Duration::from_secs(3)).await,
        Some(413)
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // Status reports: 4 MiB.
    let auth = format!("Authorization: Bearer {STATUS}");
    let len = format!("Content-Length: {}", 5 * MIB);
    let mut s = send_raw(h.addr, &request_head("POST", "/status", &[&auth, &len])).await;
    assert_eq!(
        status_within(&mut s, Duration::from_secs(3)).await,
        Some(413)
    );
    // A body without a declared length that grows past the limit is cut off too.
    let r = h
        .http
        .put(h.url("/bundles/main"))
        .bearer_auth(PUBLISHER)
        .body(reqwest::Body::wrap_stream(futures_stream(3 * MIB)))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Within the limit, publishing works as before.
    h.publish_ok("main", bundle("r1", 1000, Some(&h.keys)))
        .await;
    h.shutdown().await;
}

/// A body stream of `n` zero bytes in 64 KiB chunks, with no declared length.
fn futures_stream(
    n: usize,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks = n.div_ceil(64 * 1024);
    futures::stream::iter((0..chunks).map(|_| Ok(vec![0u8; 64 * 1024])))
}

/// Uploads are read a bounded number at a time: the next one waits briefly, then
/// gets 503 with `Retry-After`.
#[tokio::test]
async fn finding3_concurrent_uploads_are_bounded() {
    let h = TestServer::with(|c| c.publish.max_concurrent_uploads = Some(1)).await;
    let auth = format!("Authorization: Bearer {PUBLISHER}");
    let len = format!("Content-Length: {}", MIB);
    // One authenticated upload that sends a little and then stalls holds the permit.
    let mut slow = send_raw(
        h.addr,
        &request_head("PUT", "/bundles/main", &[&auth, &len]),
    )
    .await;
    slow.write_all(&[0u8; 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let r = h
        .http
        .put(h.url("/bundles/main"))
        .bearer_auth(PUBLISHER)
        .body(bundle("r1", 1000, Some(&h.keys)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    // Once the stalled upload is gone, the next one is read.
    drop(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.publish_ok("main", bundle("r1", 1000, Some(&h.keys)))
        .await;
    h.shutdown().await;
}

/// Before the fix `axum::serve` ran without a timer: 300 connections with unfinished
/// headers stayed open past 70 s.
#[tokio::test]
async fn finding4_unfinished_headers_are_closed_after_the_header_timeout() {
    let h = TestServer::with(|c| c.listener.header_read_timeout_seconds = Some(0.3)).await;
    let mut s = send_raw(h.addr, b"GET /bundles/ma").await;
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    h.shutdown().await;
}

/// A long poll is a request in flight: the idle timeout never cuts it.
#[tokio::test]
async fn finding4_long_polls_outlive_the_idle_timeout() {
    let h = TestServer::with(|c| {
        c.listener.idle_timeout_seconds = Some(0.3);
        c.listener.header_read_timeout_seconds = Some(0.3);
        c.long_poll.max_wait_seconds = Some(2);
    })
    .await;
    h.publish_ok("main", bundle("r1", 1000, Some(&h.keys)))
        .await;
    let first = h.get("/bundles/main").await;
    let tag = etag(&first);
    let t0 = Instant::now();
    let r = h
        .http
        .get(h.url("/bundles/main"))
        .bearer_auth(DOWNLOAD)
        .header("if-none-match", &tag)
        .header("prefer", "wait=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
    h.shutdown().await;
}

/// Beyond `listener.max_connections` connections are not served until one closes.
#[tokio::test]
async fn finding4_connections_beyond_the_limit_are_not_served() {
    let h = TestServer::with(|c| c.listener.max_connections = Some(2)).await;
    let _a = send_raw(h.addr, b"").await;
    let b = send_raw(h.addr, b"").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = send_raw(h.addr, &request_head("GET", "/health", &[])).await;
    assert_eq!(
        status_within(&mut c, Duration::from_millis(700)).await,
        None
    );
    drop(b);
    assert_eq!(
        status_within(&mut c, Duration::from_secs(3)).await,
        Some(200)
    );
    h.shutdown().await;
}

#[test]
fn listener_limits_are_validated() {
    let mut c = lockstep_server::Config::default();
    assert_eq!(
        c.listen_limits().unwrap(),
        lockstep_listen::Limits::default()
    );
    c.listener.max_connections = Some(0);
    assert!(c.listen_limits().is_err());
    c.listener.max_connections = None;
    c.listener.header_read_timeout_seconds = Some(-1.0);
    assert!(c.listen_limits().is_err());
}
