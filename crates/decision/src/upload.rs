//! Decision log upload, as OPA's logs plugin does it (`v1/plugins/logs`): events are
//! buffered (the oldest dropped beyond `buffer_size_limit_events`) and, every
//! `min_delay..max_delay` (jittered), POSTed to `<service><resource>` as gzip'd JSON
//! arrays (`Content-Encoding: gzip`) no larger than `upload_size_limit_bytes`. A chunk
//! that is not answered 2xx goes back to the front of the buffer and the next attempt
//! backs off; nothing is lost unless the buffer overflows. On shutdown the buffer is
//! flushed once.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use lockstep_sync::backoff::{error_backoff, polling_delay};
use lockstep_sync::download::authorize;
use tokio::sync::mpsc;

use crate::log_config::DecisionUpload;

/// Why a chunk was not accepted (it goes back to the buffer).
#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Authorize(#[from] lockstep_sync::download::FetchError),
    #[error("{}", lockstep_sync::download::error_chain(.0))]
    Send(#[from] reqwest::Error),
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
}

/// Counters shown in status and `/metrics`.
#[derive(Debug, Default)]
pub struct UploadStats {
    pub uploaded_events: AtomicU64,
    pub uploaded_chunks: AtomicU64,
    pub failed_uploads: AtomicU64,
    pub dropped_events: AtomicU64,
    pub buffered_events: AtomicU64,
}

/// The gzip'd JSON array of `events`.
fn encode(events: &[Vec<u8>]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let mut write = || -> std::io::Result<()> {
        gz.write_all(b"[")?;
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                gz.write_all(b",")?;
            }
            gz.write_all(e)?;
        }
        gz.write_all(b"]")
    };
    // Writing into a Vec cannot fail.
    let _ = write();
    gz.finish().unwrap_or_default()
}

/// Splits the front of `buf` into one chunk whose gzip'd form fits `limit`. Returns
/// `(body, events in it)`; events too large on their own are dropped and counted.
fn next_chunk(
    buf: &mut VecDeque<Vec<u8>>,
    limit: usize,
    ratio: &mut f64,
    stats: &UploadStats,
) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    loop {
        if buf.is_empty() {
            return None;
        }
        // Take what should compress to about the limit, from the last ratio seen.
        let budget = (limit as f64 * *ratio * 0.9) as usize;
        let mut take = Vec::new();
        let mut size = 2;
        while let Some(e) = buf.front() {
            if !take.is_empty() && size + e.len() + 1 > budget {
                break;
            }
            size += e.len() + 1;
            if let Some(e) = buf.pop_front() {
                take.push(e);
            }
        }
        loop {
            let body = encode(&take);
            if body.len() <= limit {
                *ratio = (size as f64 / body.len().max(1) as f64).clamp(1.0, 50.0);
                return Some((body, take));
            }
            if take.len() == 1 {
                stats.dropped_events.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    bytes = body.len(),
                    limit,
                    "decision log event larger than upload_size_limit_bytes: dropped"
                );
                break;
            }
            // Too big: keep the first half, put the rest back.
            let rest = take.split_off(take.len() / 2);
            for e in rest.into_iter().rev() {
                buf.push_front(e);
            }
            *ratio = (*ratio / 2.0).max(1.0);
            size = take.iter().map(|e| e.len() + 1).sum::<usize>() + 2;
        }
    }
}

/// POSTs one chunk; `Err` says why it was not accepted.
async fn post(
    http: &reqwest::Client,
    cfg: &DecisionUpload,
    body: Vec<u8>,
) -> Result<(), UploadError> {
    let req = http
        .post(cfg.url())
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .timeout(cfg.service.response_header_timeout)
        .body(body);
    let resp = authorize(req, &cfg.service)?.send().await?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(UploadError::Status {
            url: cfg.url(),
            status: resp.status(),
        })
    }
}

/// Uploads everything buffered; stops at the first failure (the chunk goes back).
async fn flush(
    http: &reqwest::Client,
    cfg: &DecisionUpload,
    buf: &mut VecDeque<Vec<u8>>,
    ratio: &mut f64,
    stats: &UploadStats,
) -> Result<(), UploadError> {
    while let Some((body, events)) = next_chunk(buf, cfg.upload_size_limit, ratio, stats) {
        match post(http, cfg, body).await {
            Ok(()) => {
                stats
                    .uploaded_events
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                stats.uploaded_chunks.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                for ev in events.into_iter().rev() {
                    buf.push_front(ev);
                }
                stats.failed_uploads.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn push(buf: &mut VecDeque<Vec<u8>>, ev: Vec<u8>, cap: usize, stats: &UploadStats) {
    if buf.len() >= cap {
        buf.pop_front();
        stats.dropped_events.fetch_add(1, Ordering::Relaxed);
    }
    buf.push_back(ev);
}

/// The upload task: runs until the sender side is dropped, then flushes once.
pub async fn run(cfg: DecisionUpload, mut rx: mpsc::Receiver<Vec<u8>>, stats: Arc<UploadStats>) {
    let http = match reqwest::Client::builder()
        .user_agent(concat!("lockstep-agent/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "decision log upload disabled: no HTTP client");
            return;
        }
    };
    let mut buf: VecDeque<Vec<u8>> = VecDeque::new();
    let mut ratio = 8.0;
    let mut failures = 0u32;
    let mut next = tokio::time::Instant::now() + polling_delay(cfg.min_delay, cfg.max_delay);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => push(&mut buf, ev, cfg.buffer_size_limit_events, &stats),
                None => break,
            },
            () = tokio::time::sleep_until(next) => {
                let delay = match flush(&http, &cfg, &mut buf, &mut ratio, &stats).await {
                    Ok(()) => {
                        failures = 0;
                        polling_delay(cfg.min_delay, cfg.max_delay)
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %e, buffered = buf.len(), "decision log upload failed");
                        error_backoff(failures.saturating_add(1), cfg.max_delay.max(Duration::from_secs(1)))
                    }
                };
                next = tokio::time::Instant::now() + delay;
            }
        }
        stats
            .buffered_events
            .store(buf.len() as u64, Ordering::Relaxed);
    }
    while let Ok(ev) = rx.try_recv() {
        push(&mut buf, ev, cfg.buffer_size_limit_events, &stats);
    }
    if let Err(e) = flush(&http, &cfg, &mut buf, &mut ratio, &stats).await {
        tracing::warn!(error = %e, lost = buf.len(), "decision log upload at shutdown failed");
    }
    stats
        .buffered_events
        .store(buf.len() as u64, Ordering::Relaxed);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn decode(body: &[u8]) -> serde_json::Value {
        let mut s = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut s)
            .unwrap();
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn chunks_fit_the_limit_and_keep_order() {
        let stats = UploadStats::default();
        let mut buf: VecDeque<Vec<u8>> = (0..2000)
            .map(|i| {
                // Poorly compressible: a different pseudo-random string per event.
                let noise: String = (0..40)
                    .map(|j| char::from(b'a' + ((i * 31 + j * 17) % 26) as u8))
                    .collect();
                serde_json::to_vec(&serde_json::json!({"n": i, "noise": noise})).unwrap()
            })
            .collect();
        let mut ratio = 8.0;
        let mut seen = Vec::new();
        while let Some((body, events)) = next_chunk(&mut buf, 1024, &mut ratio, &stats) {
            assert!(body.len() <= 1024, "{} bytes", body.len());
            let arr = decode(&body);
            assert_eq!(arr.as_array().unwrap().len(), events.len());
            seen.extend(
                arr.as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["n"].as_u64().unwrap()),
            );
        }
        assert_eq!(seen, (0..2000).collect::<Vec<u64>>());
        assert_eq!(stats.dropped_events.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_event_larger_than_the_limit_is_dropped() {
        let stats = UploadStats::default();
        // An LCG's letters: gzip cannot shrink 5000 of them below 300 bytes.
        let mut x: u64 = 42;
        let big: String = (0..5000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + ((x >> 33) % 26) as u8)
            })
            .collect();
        let mut buf = VecDeque::from(vec![
            serde_json::to_vec(&serde_json::json!({"n": 1})).unwrap(),
            serde_json::to_vec(&serde_json::json!({"big": big})).unwrap(),
            serde_json::to_vec(&serde_json::json!({"n": 3})).unwrap(),
        ]);
        let mut ratio = 1.0;
        let mut seen = Vec::new();
        while let Some((body, _)) = next_chunk(&mut buf, 300, &mut ratio, &stats) {
            seen.extend(decode(&body).as_array().unwrap().clone());
        }
        assert_eq!(
            seen,
            vec![serde_json::json!({"n": 1}), serde_json::json!({"n": 3})]
        );
        assert_eq!(stats.dropped_events.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest() {
        let stats = UploadStats::default();
        let mut buf = VecDeque::new();
        for i in 0..5u8 {
            push(&mut buf, vec![b'0' + i], 3, &stats);
        }
        assert_eq!(
            buf,
            VecDeque::from(vec![vec![b'2'], vec![b'3'], vec![b'4']])
        );
        assert_eq!(stats.dropped_events.load(Ordering::Relaxed), 2);
    }
}
