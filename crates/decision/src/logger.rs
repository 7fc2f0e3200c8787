//! Decision logs: OPA's event shape (`v1/plugins/logs/plugin.go` `EventV1`) as JSON
//! lines, to a file and/or stdout, written by one background task so a slow disk never
//! delays a decision (events are dropped, and counted, when 10 000 are queued), and/or
//! uploaded to a service as OPA does ([`crate::upload`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value as Json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::log_config::DecisionLogConfig;
use crate::upload::{self, UploadStats};

const QUEUE: usize = 10_000;

/// Sends events to the writer task.
#[derive(Debug, Clone)]
pub struct DecisionLogger {
    local: Option<mpsc::Sender<Vec<u8>>>,
    upload: Option<mpsc::Sender<Vec<u8>>>,
    pub dropped: Arc<AtomicU64>,
    /// Upload counters, when uploading.
    pub upload_stats: Option<Arc<UploadStats>>,
}

impl DecisionLogger {
    /// Starts the writer task; `None` when decision logging is off.
    pub async fn start(
        cfg: &DecisionLogConfig,
    ) -> Result<Option<(DecisionLogger, JoinHandle<()>)>, LogFileError> {
        if !cfg.console && cfg.file.is_none() && cfg.upload.is_none() {
            return Ok(None);
        }
        let mut tasks = Vec::new();
        let local = if cfg.console || cfg.file.is_some() {
            let file = match &cfg.file {
                Some(p) => Some(open(p).await?),
                None => None,
            };
            let (tx, rx) = mpsc::channel(QUEUE);
            tasks.push(tokio::spawn(write_loop(rx, file, cfg.console)));
            Some(tx)
        } else {
            None
        };
        let (upload, upload_stats) = match &cfg.upload {
            Some(u) => {
                let stats = Arc::new(UploadStats::default());
                let (tx, rx) = mpsc::channel(QUEUE);
                tracing::info!(url = %u.url(), "decision logs uploaded");
                tasks.push(tokio::spawn(upload::run(u.clone(), rx, stats.clone())));
                (Some(tx), Some(stats))
            }
            None => (None, None),
        };
        let h = tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        Ok(Some((
            DecisionLogger {
                local,
                upload,
                dropped: Arc::new(AtomicU64::new(0)),
                upload_stats,
            },
            h,
        )))
    }

    /// Events lost so far: queue full, too large, or dropped from the upload buffer.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
            + self
                .upload_stats
                .as_ref()
                .map_or(0, |u| u.dropped_events.load(Ordering::Relaxed))
    }

    pub fn log(&self, event: Json) {
        let Ok(line) = serde_json::to_vec(&event) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(up) = &self.upload
            && up.try_send(line.clone()).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(local) = &self.local
            && local.try_send(line).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The decision-log file cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("decision_logs.file {}: {source}", path.display())]
pub struct LogFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

async fn open(p: &PathBuf) -> Result<tokio::fs::File, LogFileError> {
    let err = |source| LogFileError {
        path: p.clone(),
        source,
    };
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(err)?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .await
        .map_err(err)
}

async fn write_loop(
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut file: Option<tokio::fs::File>,
    console: bool,
) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        let push = |e: &[u8], buf: &mut Vec<u8>| {
            buf.extend_from_slice(e);
            buf.push(b'\n');
        };
        push(&first, &mut buf);
        while let Ok(more) = rx.try_recv() {
            push(&more, &mut buf);
            if buf.len() > 1 << 20 {
                break;
            }
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(&buf).await
        {
            tracing::warn!(error = %e, "decision log write failed");
        }
        if let Some(f) = file.as_mut() {
            let _ = f.flush().await;
        }
        if console {
            let mut out = tokio::io::stdout();
            let _ = out.write_all(&buf).await;
            let _ = out.flush().await;
        }
    }
    if let Some(f) = file.as_mut() {
        let _ = f.sync_all().await;
    }
}
