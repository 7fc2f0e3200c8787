//! The accept loop's limits over real TCP on 127.0.0.1 (security review finding 4).
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use lockstep_listen::{Limits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let router = Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            "slow"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, None, router, limits, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn limits(header_ms: u64, idle_ms: u64, max: usize) -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections: max,
        ..Limits::default()
    }
}

/// True when the peer closes the connection within `within` (EOF or reset).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends one GET and reads one whole (small) response; `None` if none came in time.
async fn get_on(s: &mut TcpStream, path: &str, within: Duration) -> Option<String> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if out.len() >= head_end + 4 + len {
                return Some(text);
            }
        }
    }
}

#[tokio::test]
async fn finding4_half_a_request_line_is_closed_after_the_header_timeout() {
    let (addr, _stop) = start(limits(300, 60_000, 100)).await;
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /he").await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    // A connection that sends nothing at all is closed the same way.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    // Trickling bytes does not extend the deadline.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    let mut closed = false;
    for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if trickle.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed || closed_within(&mut trickle, Duration::from_secs(3)).await);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn finding4_keep_alive_lasts_the_idle_timeout_not_the_header_timeout() {
    let (addr, _stop) = start(limits(200, 900, 100)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r = get_on(&mut s, "/", Duration::from_secs(2)).await.unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Idle for longer than the header timeout: still open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = get_on(&mut s, "/", Duration::from_secs(2)).await.unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Idle for longer than the idle timeout: closed.
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn finding4_a_request_in_flight_is_never_idle() {
    // The handler takes 1.2 s, four idle timeouts: it must still be answered.
    let (addr, _stop) = start(limits(200, 300, 100)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r = get_on(&mut s, "/slow", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("slow"), "{r}");
}

#[tokio::test]
async fn finding4_connections_beyond_the_limit_are_not_served() {
    let (addr, _stop) = start(limits(10_000, 60_000, 2)).await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let r = get_on(&mut a, "/", Duration::from_secs(2)).await.unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let _b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The third connection completes in the kernel's backlog but is not served.
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(
        get_on(&mut c, "/", Duration::from_millis(700))
            .await
            .is_none()
    );
    // Once one closes, the waiting one is served.
    drop(a);
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !String::from_utf8_lossy(&buf).contains("\r\n\r\nok") && Instant::now() < deadline {
        let mut chunk = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), c.read(&mut chunk)).await
        {
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let (addr, stop) = start(limits(10_000, 60_000, 100)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r = get_on(&mut s, "/", Duration::from_secs(2)).await.unwrap();
    assert!(r.starts_with("HTTP/1.1 200"));
    stop.send(()).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn zero_limits_are_refused() {
    assert!(Limits::default().validate().is_ok());
    assert!(limits(0, 1, 1).validate().is_err());
    assert!(limits(1, 0, 1).validate().is_err());
    assert!(limits(1, 1, 0).validate().is_err());
}
