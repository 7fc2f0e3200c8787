//! Status reports in OPA's status-plugin format: built from the trackers and the
//! lease, and sent to the configured service after every change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::types::Gate;
use super::{Inner, lock};
use crate::download::{authorize, error_chain};
use crate::status::{BundleStatus, Freshness, PluginState, StatusReport};

impl Inner {
    pub(super) fn status_report(&self) -> StatusReport {
        let now = Instant::now();
        let active = self.active.load_full();
        let mut bundles = BTreeMap::new();
        let clock = self.clock.estimate();
        let bound =
            i64::try_from(self.cfg.cutover.max_clock_uncertainty.as_micros()).unwrap_or(i64::MAX);
        {
            let t = lock(&self.trackers);
            let announced = t.values().any(|t| t.cutover.is_some());
            let uncertain = if clock.known() {
                clock.uncertainty_us > bound
            } else {
                announced
            };
            for (idx, b) in self.cfg.bundles.iter().enumerate() {
                let tracker = t.get(&b.name);
                let mut s = tracker
                    .map(|t| t.status.clone())
                    .unwrap_or_else(|| BundleStatus::new(&b.name));
                let refused_rollback = tracker.and_then(|t| t.refused.as_ref()).map(|r| {
                    crate::status::RefusedRollback {
                        revision: r.revision.clone(),
                        issued_at: r.issued_at,
                    }
                });
                let ab = active.as_ref().and_then(|a| a.bundles.get(&b.name));
                let age = self.lease_age(idx, now);
                let fresh = age <= self.cfg.max_staleness && ab.is_some();
                s.lockstep = Freshness {
                    fresh,
                    last_confirmed: self.last_proof_time(idx),
                    max_staleness_seconds: self.cfg.max_staleness.as_secs_f64(),
                    on_stale: self.cfg.on_stale.as_str().into(),
                    stale_reason: None,
                    etag: ab.and_then(|a| a.etag.clone()),
                    issued_at: ab.and_then(|a| a.issued_at),
                    from_disk: ab.is_some_and(|a| a.from_disk),
                    refused_rollback,
                    cutover: tracker.and_then(|t| t.cutover.clone()),
                    clock_offset_ms: clock.offset_us as f64 / 1e3,
                    clock_uncertainty_ms: clock.known().then(|| clock.uncertainty_us as f64 / 1e3),
                    clock_uncertain: uncertain,
                };
                bundles.insert(b.name.clone(), s);
            }
        }
        if let Gate::Deny { reason, .. }
        | Gate::Serve {
            warning: Some(reason),
            ..
        } = self.gate()
        {
            for s in bundles.values_mut() {
                if !s.lockstep.fresh {
                    s.lockstep.stale_reason = Some(reason.clone());
                }
            }
        }
        StatusReport {
            labels: self.cfg.labels.clone(),
            bundles,
            plugins: lock(&self.plugins).clone(),
        }
    }

    pub(super) async fn run_reporter(
        self: Arc<Self>,
        target: crate::config::StatusTarget,
        mut rx: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let url = target.url();
        let mut failing = false;
        loop {
            let last = tokio::select! {
                _ = shutdown.changed() => true,
                r = rx.changed() => r.is_err(),
            };
            let report = self.status_report();
            let req = match authorize(self.http.post(&url), &target.service) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "status report not sent");
                    if last {
                        break;
                    }
                    continue;
                }
            };
            let res = req
                .json(&report)
                .timeout(target.service.response_header_timeout)
                .send()
                .await;
            let outcome = match res {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!(
                    "status update failed, server replied with HTTP {} {}",
                    r.status().as_u16(),
                    r.status().canonical_reason().unwrap_or_default()
                )),
                Err(e) => Err(format!("status update failed: {}", error_chain(&e))),
            };
            match outcome {
                Ok(()) => {
                    if failing {
                        tracing::info!("status reports delivered again");
                    }
                    failing = false;
                    lock(&self.plugins).insert("status".into(), PluginState::ok());
                }
                Err(msg) => {
                    if !failing {
                        tracing::warn!(error = %msg, "status report failed");
                    }
                    failing = true;
                    lock(&self.plugins).insert(
                        "status".into(),
                        PluginState {
                            state: "ERROR".into(),
                            message: Some(msg),
                        },
                    );
                }
            }
            if last {
                break;
            }
        }
    }
}
