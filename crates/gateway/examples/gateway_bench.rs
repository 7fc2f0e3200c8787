//! The gateway's cost over calling the upstream directly, and the same for IBM's
//! ContextForge, in one run (BENCHMARKS.md G; `scripts/bench.sh gateway`).
//!
//! Processes, all on 127.0.0.1, each stopped at the end:
//! - fixtures (this program again, `--child fixtures`): a `lockstep server` with the
//!   guide's three layers signed and published, and a small MCP upstream written in
//!   Rust (`lockstep_testkit::McpUpstream`, JSON answers) so that the upstream's own
//!   time is small against what is measured;
//! - `lockstep gateway` (the release binary given with `--lockstep-bin`) in front of it;
//! - with `--contextforge`, ContextForge in front of the same upstream
//!   (`scripts/contextforge.sh`, Python 3.12 and PyPI `mcp-contextforge-gateway`).
//!
//! Measured from this process (one client runtime, HTTP/1.1 keep-alive, 2025-11-25
//! sessions, a `tools/call` of `read_database` that all three layers allow):
//! 1. latency, interleaved (direct, gateway, ContextForge, direct, …), p50 and p99 per
//!    path and the gateway's added p50/p99 (its percentile minus direct's);
//! 2. throughput with 16 concurrent sessions, each calling in a loop, per path;
//! 3. RSS of the gateway (and of ContextForge's process tree) with 1,000 sessions
//!    open, each with its keep-alive connection and one call made.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ARGS_OK: &str = r#"{"target": "users", "operation": "read", "database": "analytics"}"#;

struct Opts {
    lockstep_bin: PathBuf,
    contextforge: bool,
    n: usize,
    seconds: u64,
    sessions: usize,
    concurrency: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        lockstep_bin: PathBuf::from("target/release/lockstep"),
        contextforge: false,
        n: 2000,
        seconds: 8,
        sessions: 1000,
        concurrency: 16,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("missing value");
        match a.as_str() {
            "--lockstep-bin" => o.lockstep_bin = PathBuf::from(val()),
            "--contextforge" => o.contextforge = true,
            "--n" => o.n = val().parse().unwrap(),
            "--seconds" => o.seconds = val().parse().unwrap(),
            "--sessions" => o.sessions = val().parse().unwrap(),
            "--concurrency" => o.concurrency = val().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// A child process killed (and reaped) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fixtures child: bundle server + upstream; writes `gateway.yaml` into `dir`,
/// prints `READY <upstream url>`, and serves until its stdin closes.
fn fixtures(dir: &Path) {
    use lockstep_testkit::prelude::*;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = TestServer::start().await;
        server
            .publish_ok("main", example_bundle("bench-1", 1000, Some(&server.keys)))
            .await;
        let upstream = McpUpstream::default();
        let (url, _task) = upstream.start().await;
        let yaml = gateway_yaml(&server, dir, &url, "");
        std::fs::write(dir.join("gateway.yaml"), yaml).unwrap();
        println!("READY {url}");
        // The upstream keeps every message: drop them as the benchmark runs.
        let received = upstream.received.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                received.lock().unwrap().clear();
            }
        });
        let _ = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await;
        drop(server);
    });
}

/// One MCP path under test: where to POST, which key, the tool name it exposes.
#[derive(Clone)]
struct Path_ {
    label: String,
    url: String,
    bearer: Option<String>,
    tool: String,
}

/// A 2025-11-25 session on `p`: its id (if any) and a client with its own connection.
struct Session {
    http: reqwest::Client,
    id: Option<String>,
    path: Path_,
    call: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

impl Session {
    async fn open(path: &Path_, http: reqwest::Client) -> Session {
        let mut s = Session {
            http,
            id: None,
            path: path.clone(),
            call: json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                          "params": {"name": path.tool, "arguments": serde_json::from_str::<Value>(ARGS_OK).unwrap()}})
            .to_string(),
        };
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "gateway_bench", "version": "1"}}});
        let r = s.post(&init.to_string()).send().await.unwrap();
        assert!(
            r.status().is_success(),
            "{}: initialize {}",
            path.label,
            r.status()
        );
        s.id = r
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_string());
        let _ = r.bytes().await;
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let r = s.post(&done.to_string()).send().await.unwrap();
        let _ = r.bytes().await;
        s
    }

    fn post(&self, body: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.path.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(body.to_string());
        if let Some(id) = &self.id {
            r = r.header("mcp-session-id", id);
        }
        if let Some(b) = &self.path.bearer {
            r = r.bearer_auth(b);
        }
        r
    }

    /// One allowed `tools/call`; panics unless the upstream's answer came back.
    async fn call(&self) -> Duration {
        let t0 = Instant::now();
        let r = self.post(&self.call).send().await.unwrap();
        let status = r.status();
        let body = r.bytes().await.unwrap();
        let took = t0.elapsed();
        let text = String::from_utf8_lossy(&body);
        assert!(
            status.is_success() && text.contains("read_database") && !text.contains("\"error\""),
            "{}: {status} {text}",
            self.path.label
        );
        took
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Resident and peak-resident memory (kB) of `pid` and all its descendants.
fn rss_tree(pid: u32) -> (u64, u64) {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if ppid == Some(parent) && !pids.contains(&p) {
                pids.push(p);
            }
        }
        i += 1;
    }
    let field = |p: u32, name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        pids.iter().map(|p| field(*p, "VmRSS:")).sum(),
        pids.iter().map(|p| field(*p, "VmHWM:")).sum(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_http(url: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// ContextForge via `scripts/contextforge.sh`: its path and the pid to measure.
fn start_contextforge(upstream: &str, dir: &Path) -> Result<(Path_, u32), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/contextforge.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["start", upstream])
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("READY "))
        .ok_or_else(|| format!("contextforge.sh start: exit {}, no READY line", out.status))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let pid = std::fs::read_to_string(dir.join("pids"))
        .map_err(|e| e.to_string())?
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("no pid in pids")?;
    Ok((
        Path_ {
            label: "ContextForge".into(),
            url: f[1].into(),
            bearer: Some(f[2].into()),
            tool: f[3].into(),
        },
        pid,
    ))
}

fn stop_contextforge(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/contextforge.sh");
    let _ = Command::new("bash")
        .arg(&script)
        .arg("stop")
        .arg(dir)
        .status();
}

async fn throughput(path: &Path_, concurrency: usize, seconds: u64) -> f64 {
    let mut sessions = Vec::new();
    for _ in 0..concurrency {
        sessions.push(Session::open(path, client()).await);
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let t0 = Instant::now();
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    s.call().await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / t0.elapsed().as_secs_f64()
}

/// `count` sessions on `path`, each with its own kept-alive connection and one call.
async fn open_many(path: &Path_, count: usize) -> Vec<Session> {
    let mut out = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(50) {
        let opened = futures_util::future::join_all(chunk.iter().map(|_| async {
            let s = Session::open(path, client()).await;
            s.call().await;
            s
        }))
        .await;
        out.extend(opened);
    }
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--child") {
        assert_eq!(args.next().as_deref(), Some("fixtures"));
        let dir = PathBuf::from(args.next().expect("dir"));
        fixtures(&dir);
        return;
    }
    let o = opts();
    let dir = tempfile::tempdir().unwrap();
    let mut fx = Command::new(std::env::current_exe().unwrap())
        .args(["--child", "fixtures"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(fx.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _fixtures = Guard(fx);
    let upstream_url = line
        .strip_prefix("READY ")
        .expect("fixtures not ready")
        .trim()
        .to_string();

    let port = free_port();
    let gw = Command::new(&o.lockstep_bin)
        .args(["gateway", "--config"])
        .arg(dir.path().join("gateway.yaml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", o.lockstep_bin.display()));
    let gw_pid = gw.id();
    let _gateway = Guard(gw);

    let cf_dir = dir.path().join("contextforge");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        wait_http(&format!("http://127.0.0.1:{port}/health")).await;
        let mut paths = vec![
            Path_ {
                label: "direct".into(),
                url: upstream_url.clone(),
                bearer: None,
                tool: "read_database".into(),
            },
            Path_ {
                label: "lockstep gateway".into(),
                url: format!("http://127.0.0.1:{port}/mcp"),
                bearer: Some(lockstep_testkit::prelude::ANALYST_KEY.into()),
                tool: "read_database".into(),
            },
        ];
        let mut cf_pid = None;
        if o.contextforge {
            std::fs::create_dir_all(&cf_dir).unwrap();
            match start_contextforge(&upstream_url, &cf_dir) {
                Ok((p, pid)) => {
                    paths.push(p);
                    cf_pid = Some(pid);
                }
                Err(e) => eprintln!("ContextForge not measured: {e}"),
            }
        }
        let (gw_rss0, _) = rss_tree(gw_pid);

        // 1. Latency, interleaved so that the machine's drift hits every path alike.
        let sessions: Vec<Session> = {
            let mut v = Vec::new();
            for p in &paths {
                v.push(Session::open(p, client()).await);
            }
            v
        };
        let warm = o.n / 10;
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
        // ContextForge is ~100x slower: it gets one call per `cf_every` rounds.
        let cf_every = 20;
        for i in 0..(o.n + warm) {
            for (k, s) in sessions.iter().enumerate() {
                if s.path.label == "ContextForge" && i % cf_every != 0 {
                    continue;
                }
                let t = s.call().await;
                if i >= warm {
                    times[k].push(t);
                }
            }
        }
        drop(sessions);
        println!(
            "\n## latency, sequential, interleaved ({} calls per path after {warm} warm-up; ContextForge every {cf_every}th round)\n",
            o.n
        );
        println!("| path | calls | p50 µs | p99 µs | added p50 µs | added p99 µs |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        let mut base = (0.0, 0.0);
        for (k, p) in paths.iter().enumerate() {
            let mut t = times[k].clone();
            t.sort();
            let (p50, p99) = (us(pct(&t, 0.5)), us(pct(&t, 0.99)));
            if k == 0 {
                base = (p50, p99);
                println!("| {} | {} | {p50:.0} | {p99:.0} | – | – |", p.label, t.len());
            } else {
                println!(
                    "| {} | {} | {p50:.0} | {p99:.0} | {:.0} | {:.0} |",
                    p.label,
                    t.len(),
                    p50 - base.0,
                    p99 - base.1
                );
            }
        }

        // 2. Throughput.
        println!(
            "\n## tools/call throughput, {} concurrent sessions, {} s per path\n",
            o.concurrency, o.seconds
        );
        println!("| path | calls/s |");
        println!("| --- | ---: |");
        for p in &paths {
            let rate = throughput(p, o.concurrency, o.seconds).await;
            println!("| {} | {rate:.0} |", p.label);
        }

        // 3. Memory with many sessions open.
        println!("\n## memory with {} sessions open\n", o.sessions);
        println!("| process | RSS idle MB | RSS with sessions MB | peak RSS MB |");
        println!("| --- | ---: | ---: | ---: |");
        let t0 = Instant::now();
        let held = open_many(&paths[1], o.sessions).await;
        let opened_in = t0.elapsed();
        let (rss, hwm) = rss_tree(gw_pid);
        println!(
            "| lockstep gateway | {:.1} | {:.1} | {:.1} |",
            gw_rss0 as f64 / 1024.0,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        drop(held);
        if let (Some(pid), Some(cf)) = (cf_pid, paths.get(2)) {
            let (cf0, _) = rss_tree(pid);
            let held = open_many(cf, o.sessions).await;
            let (rss, hwm) = rss_tree(pid);
            println!(
                "| ContextForge (process tree) | {:.1} | {:.1} | {:.1} |",
                cf0 as f64 / 1024.0,
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            );
            drop(held);
        }
        println!(
            "\n({} gateway sessions opened, each initialize + notifications/initialized + one call, in {:.1} s)",
            o.sessions,
            opened_in.as_secs_f64()
        );
    });
    if o.contextforge {
        stop_contextforge(&cf_dir);
    }
}
