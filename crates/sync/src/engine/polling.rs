//! The per-bundle download loop: long polling or periodic polling with jitter,
//! backoff after errors, and what each answer does to the tracker and the lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value as Json;
use tokio::sync::watch;

use super::types::ActivationError;
use super::{Inner, lease::lease_bounded, lock};
use crate::backoff::{error_backoff, polling_delay};
use crate::download::{FetchError, Fetched, fetch};
use crate::persist;

impl Inner {
    pub(super) async fn run_bundle(
        self: Arc<Self>,
        idx: usize,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(src) = self.cfg.bundles.get(idx).cloned() else {
            return;
        };
        let url = src.url();
        let max_bytes = self.cfg.limits.max_compressed_bytes;
        let (long_poll_timeout, min_delay, max_delay) =
            lease_bounded(&src.polling, self.cfg.max_staleness);
        if long_poll_timeout != src.polling.long_polling_timeout
            || max_delay != src.polling.max_delay
        {
            tracing::warn!(
                bundle = %src.name,
                max_staleness_s = self.cfg.max_staleness.as_secs_f64(),
                "polling delays or long_polling_timeout_seconds reach max_staleness: shortened to half of it, so a proof of freshness always arrives in time"
            );
        }
        let mut long_poll = src.polling.long_polling_timeout.is_some();
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // While the server serves a bundle refused as a rollback, ask with its ETag:
            // a 304 then confirms the server still answers (freshness for the revision
            // held), and a long poll waits for the next publication.
            let etag = lock(&self.trackers).get(&src.name).and_then(|t| {
                t.refused
                    .as_ref()
                    .and_then(|r| r.etag.clone())
                    .or_else(|| t.etag.clone())
            });
            let wait = if long_poll { long_poll_timeout } else { None };
            let began = Instant::now();
            self.with_tracker(&src.name, |t| t.status.last_request = Some(Utc::now()));
            let res = tokio::select! {
                _ = shutdown.changed() => break,
                r = fetch(&self.http, &src.service, &url, etag.as_deref(), wait, max_bytes) => r,
            };
            let request_ns = began.elapsed().as_nanos();
            let mut quick_304 = false;
            let ok = match res {
                Ok(Fetched::NotModified { etag: resp_etag }) => {
                    quick_304 = wait.is_some() && began.elapsed() < Duration::from_millis(50);
                    self.on_not_modified(idx, &src.name, etag, resp_etag);
                    true
                }
                Ok(Fetched::Bundle {
                    bytes,
                    etag: resp_etag,
                    long_poll_content_type,
                }) => {
                    if src.polling.long_polling_timeout.is_some() {
                        if long_poll && !long_poll_content_type {
                            tracing::info!(bundle = %src.name, "server did not answer with the bundle content type: falling back to periodic polling");
                        }
                        long_poll = long_poll_content_type;
                    }
                    self.on_bundle(idx, &src, bytes, resp_etag, request_ns)
                        .await
                }
                Err(e) => {
                    self.on_fetch_error(&src.name, &e);
                    false
                }
            };
            self.trigger_report();
            let delay = if ok {
                failures = 0;
                if long_poll && !quick_304 {
                    Duration::ZERO
                } else {
                    polling_delay(min_delay, max_delay)
                }
            } else {
                failures = failures.saturating_add(1);
                error_backoff(failures, max_delay)
            };
            if delay > Duration::ZERO {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    pub(super) fn on_not_modified(
        &self,
        idx: usize,
        name: &str,
        sent: Option<String>,
        resp_etag: Option<String>,
    ) {
        let active_etag = self
            .active
            .load()
            .as_ref()
            .and_then(|a| a.bundles.get(name).and_then(|b| b.etag.clone()));
        let current = sent.is_some() && sent == active_etag;
        let still_refused = !current
            && sent.is_some()
            && lock(&self.trackers).get(name).is_some_and(|t| {
                t.refused
                    .as_ref()
                    .is_some_and(|r| r.etag.is_some() && r.etag == sent)
            });
        if current || still_refused {
            self.prove(idx);
        }
        self.with_tracker(name, |t| {
            t.status.last_successful_request = Some(Utc::now());
            if current {
                t.status.clear_error();
                t.refused = None;
            } else if still_refused {
                // The refusal (and its status) stands; the server is answering.
            } else if let Some(e) = resp_etag {
                tracing::debug!(bundle = %name, etag = %e, "304 for an ETag that is not the active one");
            }
        });
    }

    pub(super) async fn on_bundle(
        self: &Arc<Self>,
        idx: usize,
        src: &crate::config::BundleSource,
        bytes: Vec<u8>,
        etag: Option<String>,
        request_ns: u128,
    ) -> bool {
        let now = Utc::now();
        let size = bytes.len() as u64;
        {
            self.with_tracker(&src.name, |t| {
                t.status.last_successful_request = Some(now);
                t.status.last_successful_download = Some(now);
                t.status.size = Some(size);
                t.status.kind = "snapshot".into();
                t.status.metrics.insert(
                    "timer_bundle_request_ns".into(),
                    Json::from(u64::try_from(request_ns).unwrap_or(u64::MAX)),
                );
            });
        }
        // A server without ETags answers 200 every time: the same bytes are not
        // activated again (OPA would), but they do prove the instance current.
        let same = {
            let st = lock(&self.state);
            st.bundles
                .get(&src.name)
                .is_some_and(|l| l.raw.as_slice() == bytes.as_slice())
        };
        if same {
            self.prove(idx);
            self.with_tracker(&src.name, |t| {
                t.status.clear_error();
                t.etag = etag;
                t.refused = None;
            });
            return true;
        }
        // The bundle refused as a rollback, sent again (a server without ETags):
        // the server answers, the revision held stays, nothing to verify again.
        let print = super::fingerprint(&bytes);
        let again = lock(&self.trackers)
            .get(&src.name)
            .and_then(|t| t.refused.as_ref())
            .is_some_and(|r| r.fingerprint == print);
        if again {
            self.prove(idx);
            return true;
        }
        let raw = Arc::new(bytes);
        let inner = self.clone();
        let raw2 = raw.clone();
        let etag2 = etag.clone();
        let began = Instant::now();
        let result =
            tokio::task::spawn_blocking(move || inner.activate(idx, raw2, etag2, false)).await;
        let activate_ns = began.elapsed().as_nanos();
        match result {
            Ok(Ok(info)) => {
                self.prove(idx);
                tracing::info!(bundle = %src.name, revision = %info.revision, "bundle activated");
                {
                    self.with_tracker(&src.name, |t| {
                        t.etag = etag.clone();
                        t.activated_once = true;
                        t.refused = None;
                        t.status.clear_error();
                        t.status.active_revision = info.revision.clone();
                        t.status.last_successful_activation = Some(info.activated_at);
                        t.status.metrics.insert(
                            "timer_rego_load_bundles_ns".into(),
                            Json::from(u64::try_from(activate_ns).unwrap_or(u64::MAX)),
                        );
                    });
                }
                self.update_bundle_plugin();
                let inner = self.clone();
                let remembered = info.clone();
                let _ = tokio::task::spawn_blocking(move || inner.remember_newest_iat(&remembered))
                    .await;
                if src.persist {
                    let meta = persist::Meta {
                        etag,
                        revision: info.revision.clone(),
                        size,
                    };
                    let dir = self.cfg.persistence_dir.clone();
                    let name = src.name.clone();
                    let saved = tokio::task::spawn_blocking(move || {
                        persist::save(&dir, &name, raw.as_slice(), &meta)
                    })
                    .await;
                    match saved {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(bundle = %src.name, error = %e, "could not persist bundle");
                        }
                        Err(e) => {
                            tracing::warn!(bundle = %src.name, error = %e, "could not persist bundle");
                        }
                    }
                }
                true
            }
            Ok(Err(ActivationError::Rollback {
                revision,
                new,
                old,
                against,
            })) => {
                // A verified bundle signed before the one held: the server answered and
                // this agent is current with respect to what it accepts, so freshness
                // is confirmed; the refusal is reported (bundle_rollback_refused).
                let e = ActivationError::Rollback {
                    revision: revision.clone(),
                    new,
                    old,
                    against,
                };
                self.prove(idx);
                tracing::warn!(bundle = %src.name, error = %e, "older bundle refused; the active revision stays in place");
                self.with_tracker(&src.name, |t| {
                    t.refused = Some(super::Refused {
                        etag: etag.clone(),
                        revision,
                        issued_at: new,
                        fingerprint: print,
                    });
                    t.status.set_error(
                        crate::status::ROLLBACK_REFUSED,
                        e.to_string(),
                        None,
                        Vec::new(),
                    );
                });
                true
            }
            Ok(Err(e)) => {
                tracing::error!(bundle = %src.name, error = %e, "bundle refused; the active revision stays in place");
                self.with_tracker(&src.name, |t| {
                    // The server no longer serves the bundle refused as a rollback.
                    t.refused = None;
                    let (msg, details) = match &e {
                        ActivationError::Compile(_) => (
                            "error(s) occurred while compiling module(s)".to_string(),
                            e.details(),
                        ),
                        _ => (e.to_string(), Vec::new()),
                    };
                    t.status.set_error("bundle_error", msg, None, details);
                });
                false
            }
            Err(e) => {
                self.with_tracker(&src.name, |t| {
                    t.status.set_error(
                        "bundle_error",
                        format!("activation task: {e}"),
                        None,
                        Vec::new(),
                    );
                });
                false
            }
        }
    }

    pub(super) fn on_fetch_error(&self, name: &str, e: &FetchError) {
        tracing::warn!(bundle = %name, error = %e, "bundle download failed");
        self.with_tracker(name, |t| {
            t.status
                .set_error("bundle_error", e.to_string(), e.http_code(), Vec::new());
        });
    }
}
