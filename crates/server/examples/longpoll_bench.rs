//! Bundle-server benchmarks against the real `lockstep server` binary (BENCHMARKS.md, C).
//!
//! ```sh
//! cargo build --release -p lockstep -p lockstep-server --example longpoll_bench
//! ulimit -n 65536
//! target/release/examples/longpoll_bench --server-bin target/release/lockstep \
//!     [--polls 1000] [--rounds 5] [--idle 10000] [--mode wake|idle|all]
//! ```
//!
//! This process is the client; the server is a child process on 127.0.0.1 over a temporary
//! folder store, with signed (ES256) bundles of one small policy.
//!
//! - `wake`: each round holds `--polls` long polls (`If-None-Match` + `Prefer: wait=30`, one
//!   connection each, raw HTTP/1.1), waits until `/metrics` shows all of them held, then
//!   PUTs a new revision. Per poll: time from the instant the PUT starts to that poll's full
//!   200 response. Reports p50/p99/max per round and over all rounds.
//! - `idle`: holds `--idle` long polls (`wait=60`) and reads the server's `VmRSS`/`VmHWM`
//!   from `/proc/<pid>/status` before and while they are held; then publishes once and
//!   reports how fast all of them were answered.
//!
//! Both sides need file descriptors: raise `ulimit -n` before (the server inherits it).
// A benchmark program, not library code: it stops at the first failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_testkit::prelude::{DOWNLOAD, KID, Keys, PUBLISHER, STATUS, bundle, keys};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

struct Args {
    server_bin: PathBuf,
    polls: usize,
    rounds: usize,
    idle: usize,
    mode: String,
}

fn args() -> Args {
    let mut a = Args {
        server_bin: PathBuf::from("target/release/lockstep"),
        polls: 1000,
        rounds: 5,
        idle: 10_000,
        mode: "all".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| panic!("{k} needs a value (see the file's documentation)"));
        match k.as_str() {
            "--server-bin" => a.server_bin = v.into(),
            "--polls" => a.polls = v.parse().unwrap(),
            "--rounds" => a.rounds = v.parse().unwrap(),
            "--idle" => a.idle = v.parse().unwrap(),
            "--mode" => a.mode = v,
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

/// The server child; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(bin: &PathBuf, keys: &Keys) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("pub.pem"), &keys.public).unwrap();
        for (f, v) in [
            ("publisher", PUBLISHER),
            ("download", DOWNLOAD),
            ("status", STATUS),
        ] {
            std::fs::write(d.join(f), format!("{v}\n")).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(d.join("server.log")).unwrap();
        let child = Command::new(bin)
            .arg("server")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--store")
            .arg(d.join("store"))
            .arg("--verification-key")
            .arg(d.join("pub.pem"))
            .args(["--verification-key-id", KID])
            .arg("--publisher-token-file")
            .arg(d.join("publisher"))
            .arg("--download-token-file")
            .arg(d.join("download"))
            .arg("--status-token-file")
            .arg(d.join("status"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// (VmRSS, VmHWM) of `pid` in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One long poll: a fresh connection, the request sent; the answer read by [`finish`].
async fn open_poll(addr: SocketAddr, etag: &str, wait: u64) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET /bundles/main HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {DOWNLOAD}\r\n\
         If-None-Match: {etag}\r\nPrefer: modes=snapshot,delta;wait={wait}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    Ok(s)
}

/// A poll's answer: status, ETag, arrival instant, and the connection, still open.
type Finished = (u16, Option<String>, Instant, TcpStream);

/// Reads one whole response (Content-Length framing), then does what OPA does next: sends
/// its next long poll (the new ETag) on the same keep-alive connection, which is handed
/// back open. (The first version of this bench closed each connection as soon as it had
/// its answer; the server's FIN handling then ran inside the measured window, a load no
/// long-polling client creates.)
async fn finish(mut s: TcpStream) -> std::io::Result<Finished> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
        let mut len = 0usize;
        let mut etag = None;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "etag" => etag = Some(v.trim().to_string()),
                "transfer-encoding" => {
                    return Err(std::io::Error::other("unexpected transfer-encoding"));
                }
                _ => {}
            }
        }
        while buf.len() < end + 4 + len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed in the body"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let at = Instant::now();
        if status == 200
            && let Some(tag) = &etag
        {
            let next = format!(
                "GET /bundles/main HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {DOWNLOAD}\r\n\
                 If-None-Match: {tag}\r\nPrefer: modes=snapshot,delta;wait=30\r\n\r\n"
            );
            s.write_all(next.as_bytes()).await?;
        }
        return Ok((status, etag, at, s));
    }
}

async fn metric(http: &reqwest::Client, srv: &Server, name: &str) -> Option<f64> {
    let m = http
        .get(srv.url("/metrics"))
        .bearer_auth(STATUS)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_held(http: &reqwest::Client, srv: &Server, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let held = metric(http, srv, "lockstep_long_polls_waiting").await;
        if held == Some(n as f64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {held:?} of {n} long polls held after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish(http: &reqwest::Client, srv: &Server, body: Vec<u8>) -> Duration {
    let t = Instant::now();
    let r = http
        .put(srv.url("/bundles/main"))
        .bearer_auth(PUBLISHER)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    t.elapsed()
}

async fn current_etag(http: &reqwest::Client, srv: &Server) -> String {
    let r = http
        .get(srv.url("/bundles/main"))
        .bearer_auth(DOWNLOAD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// User + system CPU time of `pid` so far, in ms (clock ticks of 10 ms).
fn cpu_ms(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime is the 12th, stime the 13th.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f[11] + f[12]) * 10.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50, p99, max (nearest rank) in ms.
fn quantiles(v: &mut [Duration]) -> (f64, f64, f64) {
    v.sort();
    let rank = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        ms(v[i])
    };
    (rank(0.50), rank(0.99), ms(v[v.len() - 1]))
}

/// A held long poll's eventual answer: status, ETag, arrival instant.
type Answer = tokio::task::JoinHandle<std::io::Result<Finished>>;

/// Opens `n` long polls (at most 256 connects in flight), returns their answers' tasks.
async fn hold(srv: &Server, n: usize, etag: &str, wait: u64) -> Vec<Answer> {
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (addr, etag) = (srv.addr, etag.to_string());
        tasks.push(tokio::spawn(async move {
            let s = open_poll(addr, &etag, wait).await;
            drop(permit);
            finish(s?).await
        }));
    }
    tasks
}

async fn collect(tasks: Vec<Answer>, t0: Instant) -> (Vec<Duration>, Option<String>) {
    let mut lat = Vec::with_capacity(tasks.len());
    let mut etag = None;
    let mut open = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (status, tag, at, conn) = t.await.unwrap().unwrap();
        assert_eq!(
            status, 200,
            "a long poll was not answered with the new bundle"
        );
        etag = tag.or(etag);
        lat.push(at.saturating_duration_since(t0));
        open.push(conn);
    }
    // Every answer is in: now the connections may close.
    drop(open);
    (lat, etag)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let keys = keys();
    let srv = Server::start(&a.server_bin, &keys);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(srv.url("/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rev = 1i64;
    let first = bundle("r1", 1000, Some(&keys));
    println!(
        "server: {} (pid {}), bundle: {} bytes (tar.gz, one policy, signed ES256)",
        a.server_bin.display(),
        srv.pid(),
        first.len()
    );
    publish(&http, &srv, first).await;
    let mut etag = current_etag(&http, &srv).await;

    if a.mode == "wake" || a.mode == "all" {
        let mut all = Vec::new();
        println!(
            "\n(a) {} held long polls, one PUT; latency = PUT start -> full 200 response of each poll",
            a.polls
        );
        println!("round   PUT round trip   p50        p99        max        server CPU   load avg");
        for round in 1..=a.rounds {
            let tasks = hold(&srv, a.polls, &etag, 30).await;
            wait_held(&http, &srv, a.polls, Duration::from_secs(30)).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            rev += 1;
            let body = bundle(&format!("r{rev}"), 1000 * rev, Some(&keys));
            let cpu0 = cpu_ms(srv.pid());
            let t0 = Instant::now();
            let put = publish(&http, &srv, body).await;
            let (mut lat, tag) = collect(tasks, t0).await;
            let cpu = cpu_ms(srv.pid()) - cpu0;
            etag = tag.unwrap();
            let (p50, p99, max) = quantiles(&mut lat);
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            println!(
                "{round:>5}   {:>9.2} ms   {p50:>7.2} ms {p99:>7.2} ms {max:>7.2} ms {cpu:>7.0} ms   {}",
                ms(put),
                load.split(' ').next().unwrap_or("?")
            );
            all.extend(lat);
        }
        let (p50, p99, max) = quantiles(&mut all);
        println!(
            "  all   ({} polls)       {p50:>7.2} ms {p99:>7.2} ms {max:>7.2} ms   target p99 <= 50 ms: {}",
            all.len(),
            if p99 <= 50.0 { "met" } else { "MISSED" }
        );
    }

    if a.mode == "idle" || a.mode == "all" {
        println!("\n(b) {} idle long polls held (wait=60)", a.idle);
        let (before, _) = rss(srv.pid());
        let t = Instant::now();
        let tasks = hold(&srv, a.idle, &etag, 60).await;
        wait_held(&http, &srv, a.idle, Duration::from_secs(50)).await;
        let opened = t.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (held, hwm) = rss(srv.pid());
        println!(
            "server VmRSS before: {before:.1} MiB; with {} held: {held:.1} MiB (VmHWM {hwm:.1} MiB); \
             {:.1} KiB per held poll; all held after {opened:.2?}; target <= 256 MB: {}",
            a.idle,
            (held - before) * 1024.0 / a.idle as f64,
            if held * 1.048_576 <= 256.0 {
                "met"
            } else {
                "MISSED"
            }
        );
        rev += 1;
        let body = bundle(&format!("r{rev}"), 1000 * rev, Some(&keys));
        let t0 = Instant::now();
        let put = publish(&http, &srv, body).await;
        let (mut lat, _) = collect(tasks, t0).await;
        let (_, hwm_after) = rss(srv.pid());
        let (p50, p99, max) = quantiles(&mut lat);
        println!(
            "then one PUT (round trip {:.2} ms) woke all {}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; \
             server VmHWM after answering: {hwm_after:.1} MiB",
            ms(put),
            lat.len()
        );
    }
}
