//! stdio upstreams: an MCP server the gateway starts as a child process and talks to
//! in newline-delimited JSON-RPC, supervised (restarted with backoff when it exits, its
//! stderr in the gateway's log).
//!
//! One child serves every client session: the gateway initializes it once itself
//! (2025-11-25 handshake) and answers clients' `initialize` and `server/discover` for
//! it from that result. Request ids are the gateway's own on the child's stdin (clients'
//! ids could collide) and are put back on the way out. A 2026-07-28 client's requests
//! lose their `_meta` protocol version on the way in and gain `resultType` on the way
//! out, since the child speaks the handshake era.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use crate::era::PROTOCOL_VERSION_META_KEY;

/// The protocol version the gateway speaks to stdio children.
const CHILD_PROTOCOL: &str = "2025-11-25";
/// Longest line read from a child.
const MAX_LINE: usize = 16 * 1024 * 1024;

type Pending = Arc<Mutex<HashMap<i64, oneshot::Sender<Value>>>>;

/// Why a stdio exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StdioError {
    #[error("the child process is not running ({0})")]
    NotRunning(String),
    #[error("no answer within {0:.1}s")]
    Timeout(f64),
    #[error("the child process exited before answering")]
    Exited,
}

/// A supervised child: cheap to clone. When the last clone is dropped (the gateway
/// stops), the supervisor stops the child and does not restart it.
#[derive(Clone)]
pub struct StdioChild {
    inner: Inner,
    _owner: Arc<Owner>,
}

/// Dropped with the last [`StdioChild`]: tells the supervisor to stop.
struct Owner(watch::Sender<bool>);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// What the handles and the supervisor share.
#[derive(Clone)]
struct Inner {
    name: String,
    /// Lines to the current child's stdin; `None` while it is (re)starting.
    tx: Arc<Mutex<Option<mpsc::Sender<String>>>>,
    pending: Pending,
    next_id: Arc<AtomicI64>,
    /// The child's `initialize` result, once it has answered.
    init: watch::Receiver<Option<Value>>,
    last_error: Arc<Mutex<String>>,
}

impl std::fmt::Debug for StdioChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioChild")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl StdioChild {
    /// Starts the supervisor, which starts the child.
    pub fn start(
        name: &str,
        command: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> StdioChild {
        let (init_tx, init) = watch::channel(None);
        let (stop_tx, stop) = watch::channel(false);
        let inner = Inner {
            name: name.to_string(),
            tx: Arc::new(Mutex::new(None)),
            pending: Arc::new(Mutex::new(HashMap::new())),
            next_id: Arc::new(AtomicI64::new(1)),
            init,
            last_error: Arc::new(Mutex::new("starting".into())),
        };
        let me = inner.clone();
        let command = command.to_string();
        let args = args.to_vec();
        let env = env.clone();
        tokio::spawn(async move { me.supervise(command, args, env, init_tx, stop).await });
        StdioChild {
            inner,
            _owner: Arc::new(Owner(stop_tx)),
        }
    }

    /// One client message: the answer with the client's own id (requests), `None` for
    /// notifications. `modern`: the client speaks 2026-07-28.
    pub async fn exchange(
        &self,
        msg: &Value,
        modern: bool,
        timeout: Duration,
    ) -> Result<Option<Value>, StdioError> {
        self.inner.exchange(msg, modern, timeout).await
    }
}

impl Inner {
    async fn supervise(
        self,
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        init_tx: watch::Sender<Option<Value>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let spawned = Command::new(&command)
                .args(&args)
                .envs(&env)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            match spawned {
                Ok(child) => {
                    let ran = self.run(child, &init_tx, &mut stop).await;
                    if *stop.borrow() {
                        return;
                    }
                    tracing::warn!(upstream = %self.name, outcome = %ran, "stdio upstream stopped; restarting");
                    *self.last_error.lock().await = ran;
                }
                Err(e) => {
                    let msg = format!("{command}: {e}");
                    tracing::error!(upstream = %self.name, error = %msg, "stdio upstream did not start");
                    *self.last_error.lock().await = msg;
                }
            }
            init_tx.send_replace(None);
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Runs one child until it exits; says how it ended.
    async fn run(
        &self,
        mut child: Child,
        init_tx: &watch::Sender<Option<Value>>,
        stop: &mut watch::Receiver<bool>,
    ) -> String {
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return "no pipes".into();
        };
        let (tx, mut rx) = mpsc::channel::<String>(1024);
        *self.tx.lock().await = Some(tx);
        let writer = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if stdin.write_all(line.as_bytes()).await.is_err()
                    || stdin.write_all(b"\n").await.is_err()
                    || stdin.flush().await.is_err()
                {
                    break;
                }
            }
        });
        let name = self.name.clone();
        let logs = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::info!(upstream = %name, "{l}");
            }
        });
        let pending = self.pending.clone();
        let name = self.name.clone();
        let reader = tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if n > MAX_LINE => {
                        tracing::warn!(upstream = %name, "line over the limit dropped");
                        continue;
                    }
                    Ok(_) => {}
                }
                let Ok(msg) = serde_json::from_str::<Value>(line.trim()) else {
                    tracing::warn!(upstream = %name, "not JSON-RPC on stdout: dropped");
                    continue;
                };
                let id = msg.get("id").and_then(Value::as_i64);
                let is_response = msg.get("result").is_some() || msg.get("error").is_some();
                match (id, is_response) {
                    (Some(id), true) => {
                        if let Some(tx) = pending.lock().await.remove(&id) {
                            let _ = tx.send(msg);
                        }
                    }
                    // Server-to-client requests and notifications have no client to go
                    // to on a shared child: logged.
                    _ => {
                        tracing::debug!(upstream = %name, message = %msg, "message from the child not relayed")
                    }
                }
            }
        });
        // The gateway initializes the child itself, once.
        let init = self
            .request_raw(
                "initialize",
                json!({
                    "protocolVersion": CHILD_PROTOCOL,
                    "capabilities": {},
                    "clientInfo": {"name": "lockstep-gateway", "version": env!("CARGO_PKG_VERSION")},
                }),
                Duration::from_secs(30),
            )
            .await;
        match init {
            Ok(v) => {
                self.notify_raw("notifications/initialized").await;
                init_tx.send_replace(v.get("result").cloned());
                tracing::info!(upstream = %self.name, "stdio upstream initialized");
            }
            Err(e) => {
                tracing::warn!(upstream = %self.name, error = %e, "stdio upstream did not initialize")
            }
        }
        let status = tokio::select! {
            s = child.wait() => s,
            _ = stop.changed() => {
                // The gateway stops: close stdin (the writer), then end the child.
                writer.abort();
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                let _ = child.kill().await;
                child.wait().await
            }
        };
        *self.tx.lock().await = None;
        writer.abort();
        let _ = reader.await;
        logs.abort();
        // Whoever waits for an answer from the dead child gets an error now.
        self.pending.lock().await.clear();
        match status {
            Ok(s) => format!("exited with {s}"),
            Err(e) => format!("wait failed: {e}"),
        }
    }

    async fn send_line(&self, line: String) -> Result<(), StdioError> {
        let tx = self.tx.lock().await.clone();
        match tx {
            Some(tx) => tx.send(line).await.map_err(|_| StdioError::Exited),
            None => Err(StdioError::NotRunning(self.last_error.lock().await.clone())),
        }
    }

    async fn request_raw(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, StdioError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        let line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        if let Err(e) = self.send_line(line).await {
            self.pending.lock().await.remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(StdioError::Exited),
            Err(_) => {
                self.pending.lock().await.remove(&id);
                Err(StdioError::Timeout(timeout.as_secs_f64()))
            }
        }
    }

    async fn notify_raw(&self, method: &str) {
        let _ = self
            .send_line(json!({"jsonrpc": "2.0", "method": method}).to_string())
            .await;
    }

    /// The child's `initialize` result, waiting up to `timeout` for it.
    pub async fn initialized(&self, timeout: Duration) -> Result<Value, StdioError> {
        let mut init = self.init.clone();
        let wait = async {
            loop {
                if let Some(v) = init.borrow().clone() {
                    return Ok(v);
                }
                if init.changed().await.is_err() {
                    return Err(StdioError::Exited);
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(StdioError::NotRunning(self.last_error.lock().await.clone())),
        }
    }

    /// One client message: the answer with the client's own id (requests), `None` for
    /// notifications. `modern`: the client speaks 2026-07-28.
    pub async fn exchange(
        &self,
        msg: &Value,
        modern: bool,
        timeout: Duration,
    ) -> Result<Option<Value>, StdioError> {
        let method = msg
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let client_id = msg.get("id").cloned();
        let Some(client_id) = client_id else {
            if method != "notifications/initialized" {
                let mut m = msg.clone();
                strip_modern(&mut m);
                self.send_line(m.to_string()).await?;
            }
            return Ok(None);
        };
        let answer = match method {
            "initialize" | "server/discover" => {
                let init = self.initialized(timeout).await?;
                let result = if method == "initialize" {
                    init
                } else {
                    json!({
                        "supportedVersions": ["2026-07-28"],
                        "capabilities": init.get("capabilities").cloned().unwrap_or(json!({})),
                        "resultType": "complete",
                    })
                };
                json!({"jsonrpc": "2.0", "id": client_id, "result": result})
            }
            _ => {
                self.initialized(timeout).await?;
                let mut params = msg.get("params").cloned().unwrap_or(json!({}));
                strip_params(&mut params);
                let mut v = self.request_raw(method, params, timeout).await?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("id".into(), client_id);
                }
                if modern && let Some(r) = v.get_mut("result").and_then(Value::as_object_mut) {
                    r.entry("resultType").or_insert(json!("complete"));
                }
                v
            }
        };
        Ok(Some(answer))
    }
}

fn strip_params(params: &mut Value) {
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        meta.remove(PROTOCOL_VERSION_META_KEY);
        meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty()
            && let Some(p) = params.as_object_mut()
        {
            p.remove("_meta");
        }
    }
}

fn strip_modern(msg: &mut Value) {
    if let Some(p) = msg.get_mut("params") {
        strip_params(p);
    }
}
