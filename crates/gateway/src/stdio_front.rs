//! The stdio front door (`lockstep gateway --stdio`), for desktop MCP clients that only
//! launch local commands: newline-delimited JSON-RPC on stdin/stdout, each message
//! handed to the same Streamable HTTP front door in process (same identity step,
//! policy, audit and metrics), with the headers a stdio message cannot carry derived
//! from the message itself. Logs and audit go to stderr; stdout carries only MCP.
//!
//! The caller is the local user who launched the process: its API key comes from the
//! environment (`LOCKSTEP_GATEWAY_KEY`), as the MCP spec asks of stdio servers, and is
//! checked like any other key.

use std::sync::Arc;

use axum::body::Body;
use futures_util::StreamExt;
use http::{HeaderValue, Request};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;
use tower::ServiceExt;

use crate::config::{AuditConfig, GatewayConfig};
use crate::era::PROTOCOL_VERSION_META_KEY;
use crate::front::router;
use crate::run::{Built, StartError, build};
use crate::sse::Splitter;
use crate::upstream::{MAX_UPSTREAM_MESSAGE, PROTOCOL_HEADER, SESSION_HEADER};

/// How long the stdio front door waits for the first revision before it reads stdin
/// (requests then fail closed until one is active).
const FIRST_ACTIVATION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The environment variable holding the stdio caller's API key.
pub const KEY_ENV: &str = "LOCKSTEP_GATEWAY_KEY";

/// What the stdio loop remembers between messages: the session the gateway gave at
/// `initialize`, and its protocol version.
#[derive(Default)]
struct Session {
    id: Option<String>,
    version: Option<String>,
}

/// The headers an HTTP client would have sent with `line`.
fn request_for(line: &str, key: &str, session: &Session) -> Request<Body> {
    let mut b = Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {key}"));
    let msg: Option<Value> = serde_json::from_str(line).ok();
    let modern = msg
        .as_ref()
        .and_then(|m| m.pointer("/params/_meta"))
        .and_then(|m| m.get(PROTOCOL_VERSION_META_KEY))
        .and_then(Value::as_str);
    if let Some(v) = modern {
        b = b.header(PROTOCOL_HEADER, v);
        if let Some(m) = msg
            .as_ref()
            .and_then(|m| m.get("method"))
            .and_then(Value::as_str)
        {
            b = b.header("mcp-method", m);
        }
        let name = msg.as_ref().and_then(|m| {
            m.pointer("/params/name")
                .or_else(|| m.pointer("/params/uri"))
                .and_then(Value::as_str)
        });
        if let Some(n) = name.and_then(|n| crate::era::encode_header_value(n).ok()) {
            b = b.header("mcp-name", n);
        }
    } else {
        if let Some(s) = session
            .id
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            b = b.header(SESSION_HEADER, s);
        }
        if let Some(v) = &session.version {
            b = b.header(PROTOCOL_HEADER, v.as_str());
        }
    }
    b.body(Body::from(line.to_string()))
        .unwrap_or_else(|_| Request::new(Body::empty()))
}

fn is_event_stream(resp: &axum::response::Response) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"))
}

/// Writes one message as one line (re-encoded: JSON text must not span lines).
async fn write_line<W: AsyncWrite + Unpin>(out: &Mutex<W>, data: &[u8]) {
    let line = match serde_json::from_slice::<Value>(data) {
        Ok(v) => v.to_string(),
        Err(_) => return,
    };
    let mut out = out.lock().await;
    let _ = out.write_all(line.as_bytes()).await;
    let _ = out.write_all(b"\n").await;
    let _ = out.flush().await;
}

/// One message through the front door; every message of its answer to `out`. Returns
/// the session id and protocol version an `initialize` answer carries.
async fn handle<W: AsyncWrite + Unpin>(
    app: axum::Router,
    req: Request<Body>,
    out: &Mutex<W>,
) -> Option<(String, Option<String>)> {
    let resp = app.oneshot(req).await.ok()?;
    let sid = resp
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_sse = is_event_stream(&resp);
    let mut body = resp.into_body().into_data_stream();
    let mut version = None;
    if is_sse {
        pipe_events(&mut body, out).await;
    } else {
        let mut bytes = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_UPSTREAM_MESSAGE {
                return None;
            }
        }
        if !bytes.is_empty() {
            if sid.is_some() {
                version = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.pointer("/result/protocolVersion").cloned())
                    .and_then(|v| v.as_str().map(str::to_string));
            }
            write_line(out, &bytes).await;
        }
    }
    sid.map(|s| (s, version))
}

/// Writes each event of an SSE body to `out` as it arrives; the id of the last event
/// that had one (to resume the stream from).
async fn pipe_events<W: AsyncWrite + Unpin>(
    body: &mut axum::body::BodyDataStream,
    out: &Mutex<W>,
) -> Option<String> {
    let mut splitter = Splitter::new(MAX_UPSTREAM_MESSAGE);
    let mut last = None;
    loop {
        let (events, ended) = match body.next().await {
            Some(Ok(chunk)) => match splitter.push(&chunk) {
                Ok(events) => (events, false),
                Err(_) => (Vec::new(), true),
            },
            _ => (splitter.finish().into_iter().collect(), true),
        };
        for ev in events {
            if let Some(id) = ev.id() {
                last = Some(id.to_string());
            }
            if !ev.data.is_empty() {
                write_line(out, ev.data.as_bytes()).await;
            }
        }
        if ended {
            return last;
        }
    }
}

/// How long the GET stream waits before it is opened again after it ended.
const LISTEN_REOPEN: std::time::Duration = std::time::Duration::from_secs(1);

/// The 2025-11-25 GET stream of `session`: what upstreams send outside any request
/// (list changes, log messages, their own requests to the client) goes to `out` for as
/// long as the session lasts. Opened again with `Last-Event-ID` when it ends, so
/// nothing sent in between is lost; given up when the gateway refuses it (no upstream
/// offers one, or the session is gone).
async fn listen<W: AsyncWrite + Unpin>(
    app: axum::Router,
    key: String,
    session: String,
    version: Option<String>,
    out: Arc<Mutex<W>>,
) {
    let mut last: Option<String> = None;
    loop {
        let mut b = Request::get("/mcp")
            .header("accept", "text/event-stream")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {key}"))
            .header(SESSION_HEADER, session.as_str());
        if let Some(v) = &version {
            b = b.header(PROTOCOL_HEADER, v.as_str());
        }
        if let Some(id) = &last {
            b = b.header("last-event-id", id.as_str());
        }
        let Ok(req) = b.body(Body::empty()) else {
            return;
        };
        let Ok(resp) = app.clone().oneshot(req).await;
        let is_sse = is_event_stream(&resp);
        if !resp.status().is_success() || !is_sse {
            tracing::debug!(status = %resp.status(), "stdio: no GET stream for this session");
            return;
        }
        let mut body = resp.into_body().into_data_stream();
        if let Some(id) = pipe_events(&mut body, &out).await {
            last = Some(id);
        }
        tokio::time::sleep(LISTEN_REOPEN).await;
    }
}

/// Serves MCP on `input`/`output` until `input` ends, then waits for the answers
/// still on their way and stops the sync engine.
pub async fn serve_stdio<R, W>(
    mut cfg: GatewayConfig,
    key: String,
    input: R,
    output: W,
) -> Result<(), StartError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    if cfg.audit == AuditConfig::Stdout {
        cfg.audit = AuditConfig::Stderr;
    }
    let Built { gw, syncer, tasks } = build(cfg, true).await?;
    // A desktop client sends its first message right after launching the process: give
    // the first activation a moment (bounded) rather than fail that message closed.
    // (Readiness is recorded just after the swap that notifies `generation`, so the
    // wait also looks again every 20 ms.)
    let mut generation = syncer.subscribe();
    let _ = tokio::time::timeout(FIRST_ACTIVATION_WAIT, async {
        while !syncer.bundles_ready() {
            tokio::select! {
                _ = generation.changed() => {}
                () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
        }
    })
    .await;
    let app = router(gw.clone());
    drop(gw);
    let out = Arc::new(Mutex::new(output));
    let mut session = Session::default();
    let mut lines = BufReader::new(input).lines();
    let mut inflight = Vec::new();
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let is_initialize = serde_json::from_str::<Value>(&line)
            .ok()
            .is_some_and(|v| v.get("method").and_then(Value::as_str) == Some("initialize"));
        let req = request_for(&line, &key, &session);
        if is_initialize {
            // Later messages need the session it creates: answer it first.
            if let Some((sid, version)) = handle(app.clone(), req, &out).await {
                if let Some(t) = listener.take() {
                    t.abort();
                }
                listener = Some(tokio::spawn(listen(
                    app.clone(),
                    key.clone(),
                    sid.clone(),
                    version.clone(),
                    out.clone(),
                )));
                session.id = Some(sid);
                session.version = version;
            }
        } else {
            let app = app.clone();
            let out = out.clone();
            inflight.push(tokio::spawn(async move {
                handle(app, req, &out).await;
            }));
            inflight.retain(|t| !t.is_finished());
        }
    }
    // stdin closed: answer what is in flight before stopping (a client that closes
    // its end right after a request still gets the answer).
    for t in inflight {
        let _ = t.await;
    }
    if let Some(t) = listener {
        t.abort();
    }
    drop(app);
    syncer.shutdown().await;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
