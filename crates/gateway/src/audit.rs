//! The audit trail: one JSON line per request (who, what, the decision and the
//! revision that made it, what the upstream answered, how long it took), written by one
//! background task so a slow disk never delays a request, to stdout, stderr or a file
//! rotated by size (`<file>.1` is the previous one). Arguments appear only as a
//! SHA-256 digest of their exact text.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::AuditConfig;

const QUEUE: usize = 10_000;

/// What the upstream did with an allowed request.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct UpstreamOutcome {
    pub upstream: String,
    /// HTTP status, 0 when the exchange failed before one arrived.
    pub status: u16,
    /// The JSON-RPC error code the upstream answered with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// A `tools/call` result with `isError: true`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
    /// Why the exchange failed (transport errors, timeouts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub time: String,
    pub identity: Option<String>,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// `allow`, `deny`, or `refused` (refused before any decision: bad input, no
    /// credential).
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamOutcome>,
    pub latency_ms: f64,
}

/// The SHA-256 (hex) of an argument object's exact text.
pub fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Sends records to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: mpsc::Sender<Vec<u8>>,
    pub dropped: Arc<AtomicU64>,
}

impl Audit {
    /// Starts the writer. The task ends when every `Audit` is dropped.
    pub async fn start(cfg: &AuditConfig) -> std::io::Result<(Audit, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = match cfg {
            AuditConfig::Stdout => Sink::Stdout,
            AuditConfig::Stderr => Sink::Stderr,
            AuditConfig::File { path, rotate_bytes } => {
                let file = open(path).await?;
                let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
                Sink::File {
                    path: path.clone(),
                    file,
                    size,
                    rotate_bytes: *rotate_bytes,
                }
            }
        };
        let h = tokio::spawn(write_loop(rx, sink));
        Ok((
            Audit {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            h,
        ))
    }

    pub fn record(&self, r: &AuditRecord) {
        match serde_json::to_vec(r) {
            Ok(mut line) => {
                line.push(b'\n');
                if self.tx.try_send(line).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

enum Sink {
    Stdout,
    Stderr,
    File {
        path: PathBuf,
        file: tokio::fs::File,
        size: u64,
        rotate_bytes: u64,
    },
}

async fn open(path: &PathBuf) -> std::io::Result<tokio::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

async fn write_loop(mut rx: mpsc::Receiver<Vec<u8>>, mut sink: Sink) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < 1 << 20
            && let Ok(more) = rx.try_recv()
        {
            buf.extend_from_slice(&more);
        }
        match &mut sink {
            Sink::Stdout => {
                let mut out = tokio::io::stdout();
                let _ = out.write_all(&buf).await;
                let _ = out.flush().await;
            }
            Sink::Stderr => {
                let mut out = tokio::io::stderr();
                let _ = out.write_all(&buf).await;
                let _ = out.flush().await;
            }
            Sink::File {
                path,
                file,
                size,
                rotate_bytes,
            } => {
                if *size > 0 && *size + buf.len() as u64 > *rotate_bytes {
                    let _ = file.sync_all().await;
                    let rotated = path.with_extension(match path.extension() {
                        Some(e) => format!("{}.1", e.to_string_lossy()),
                        None => "1".to_string(),
                    });
                    if let Err(e) = tokio::fs::rename(&*path, &rotated).await {
                        tracing::warn!(error = %e, "audit log rotation failed");
                    }
                    match open(path).await {
                        Ok(f) => {
                            *file = f;
                            *size = 0;
                        }
                        Err(e) => tracing::error!(error = %e, "audit log reopen failed"),
                    }
                }
                match file.write_all(&buf).await {
                    Ok(()) => *size += buf.len() as u64,
                    Err(e) => tracing::warn!(error = %e, "audit log write failed"),
                }
                let _ = file.flush().await;
            }
        }
    }
    if let Sink::File { file, .. } = &mut sink {
        let _ = file.sync_all().await;
    }
}
