//! The per-bundle download loop: long polling or periodic polling with jitter,
//! backoff after errors, and what each answer does to the tracker and the lease.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value as Json;
use tokio::sync::watch;

use super::types::{ActivationError, ActiveBundle};
use super::{Inner, lease::lease_bounded, lock};
use crate::backoff::{error_backoff, polling_delay};
use crate::download::{FetchError, Fetched, fetch, sample_clock};
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
                    .or_else(|| t.pending.as_ref().and_then(|p| p.etag.clone()))
                    .or_else(|| t.etag.clone())
            });
            let wait = if long_poll { long_poll_timeout } else { None };
            let began = Instant::now();
            self.with_tracker(&src.name, |t| t.status.last_request = Some(Utc::now()));
            let res = tokio::select! {
                _ = shutdown.changed() => break,
                r = fetch(&self.http, &src.service, &url, etag.as_deref(), wait, max_bytes, &self.clock) => r,
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
                    activate_at_ms,
                }) => {
                    if src.polling.long_polling_timeout.is_some() {
                        if long_poll && !long_poll_content_type {
                            tracing::info!(bundle = %src.name, "server did not answer with the bundle content type: falling back to periodic polling");
                        }
                        long_poll = long_poll_content_type;
                    }
                    self.on_bundle(idx, &src, bytes, resp_etag, activate_at_ms, request_ns)
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
        let pending_etag = lock(&self.trackers)
            .get(name)
            .and_then(|t| t.pending.as_ref().and_then(|p| p.etag.clone()));
        let current = sent.is_some() && (sent == active_etag || sent == pending_etag);
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
        activate_at_ms: Option<i64>,
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
        // A newer revision supersedes one still waiting for its activation instant.
        if let Some(Some(old)) = self.with_tracker(&src.name, |t| t.pending.take()) {
            tracing::info!(bundle = %src.name, revision = %old.revision, "a newer revision arrived before the prepared one's activation instant: it will not be activated");
        }
        let inner = self.clone();
        let raw2 = raw.clone();
        let etag2 = etag.clone();
        let began = Instant::now();
        let prepared =
            tokio::task::spawn_blocking(move || inner.prepare(idx, raw2, etag2, false)).await;
        let max_hold_us = i64::try_from(self.cfg.cutover.max_hold.as_micros()).unwrap_or(i64::MAX);
        let announced = activate_at_ms
            .filter(|_| self.cfg.cutover.enabled)
            .filter(|at| {
                let ahead = at.saturating_mul(1000) - self.clock.estimate().server_now_us();
                let held = ahead <= max_hold_us;
                if !held {
                    tracing::warn!(bundle = %src.name, ahead_ms = ahead / 1000, "announced activation instant is further ahead than lockstep.cutover.max_hold: activating on arrival");
                }
                held
            });
        let result = match prepared {
            Ok(Ok(p)) => {
                let clock = self.clock.estimate();
                let ready_us = clock.server_now_us();
                match announced {
                    Some(at_ms) if ready_us < at_ms.saturating_mul(1000) => {
                        self.hold(idx, src, p, etag, raw, size, at_ms, ready_us, began);
                        return true;
                    }
                    _ => {
                        if let Some(at_ms) = announced {
                            self.record_cutover(&src.name, p.info(), at_ms, ready_us);
                        }
                        let inner = self.clone();
                        tokio::task::spawn_blocking(move || inner.commit(p, Duration::ZERO)).await
                    }
                }
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(e) => Err(e),
        };
        let activate_ns = began.elapsed().as_nanos();
        self.on_activated(idx, src, result, etag, raw, size, print, activate_ns)
            .await
    }

    /// Holds a prepared revision until the server's clock reads `at_ms`, then swaps it
    /// in on a thread of its own (a timer thread wakes within a millisecond; a busy
    /// async runtime might not), unless a newer revision arrived meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn hold(
        self: &Arc<Self>,
        idx: usize,
        src: &crate::config::BundleSource,
        p: super::activation::Prepared,
        etag: Option<String>,
        raw: Arc<Vec<u8>>,
        size: u64,
        at_ms: i64,
        ready_us: i64,
        began: Instant,
    ) {
        let token = self.switches.fetch_add(1, Ordering::Relaxed) + 1;
        let revision = p.info().revision.clone();
        self.record_cutover(&src.name, p.info(), at_ms, ready_us);
        self.with_tracker(&src.name, |t| {
            t.pending = Some(super::Pending {
                token,
                etag: etag.clone(),
                revision: revision.clone(),
            });
            t.refused = None;
            t.status.clear_error();
        });
        // The server sent the revision it wants: this instance holds it, signed and
        // compiled, and will switch at the announced instant.
        self.prove(idx);
        self.trigger_report();
        tracing::info!(bundle = %src.name, %revision, activate_at_ms = at_ms, "revision prepared; switching at the announced instant");
        let refine = self.clone();
        let (source, tag) = (src.clone(), etag.clone());
        tokio::spawn(async move { refine.refine_clock(&source, tag.as_deref(), at_ms).await });
        let inner = self.clone();
        let name = src.name.clone();
        let src = src.clone();
        let runtime = tokio::runtime::Handle::current();
        let print = super::fingerprint(raw.as_slice());
        let spawned = std::thread::Builder::new()
            .name("lockstep-cutover".into())
            .spawn(move || {
                wait_until_server_time(&inner.clock, at_ms.saturating_mul(1000));
                // Claim the switch: a newer revision may have taken its place.
                let claimed = inner
                    .with_tracker(&src.name, |t| {
                        if t.pending.as_ref().is_some_and(|p| p.token == token) {
                            t.pending.take()
                        } else {
                            None
                        }
                    })
                    .flatten();
                if claimed.is_none() {
                    return;
                }
                let result = inner.commit(p, SWITCH_GRACE);
                let activate_ns = began.elapsed().as_nanos();
                // The instant belongs to the swaps: bookkeeping (status, persistence,
                // freeing the old revision) waits a little, so on a shared machine it
                // does not delay the instances still waking for the same instant.
                std::thread::sleep(SWITCH_GRACE);
                runtime.spawn(async move {
                    inner
                        .on_activated(idx, &src, Ok(result), etag, raw, size, print, activate_ns)
                        .await;
                    inner.trigger_report();
                });
            });
        if let Err(e) = spawned {
            tracing::error!(bundle = %name, error = %e, "cannot start the cut-over timer");
        }
    }

    /// Takes a few more samples of the server's clock before the instant `at_ms`: the
    /// instant is read by the offset estimate, and the samples it has come from long
    /// polls, among them the one the server answered while sending this revision to
    /// every waiting instance at once. On one busy machine those were off by up to
    /// 11 ms (CI: 13 instances' swaps spread by their estimates' errors, not by their
    /// timers); an immediate, bodiless request in a quiet moment of the window is off by
    /// a fraction of its round trip, and the shortest round trip wins
    /// ([`crate::clock::ServerClock`]). Spread over the window with jitter, so a fleet
    /// does not ask at the same moments; none in the last [`REFINE_GUARD`].
    async fn refine_clock(
        self: Arc<Self>,
        src: &crate::config::BundleSource,
        etag: Option<&str>,
        at_ms: i64,
    ) {
        let mut shutdown = self.shutdown.subscribe();
        let url = src.url();
        let last_us = at_ms.saturating_mul(1000) - micros(REFINE_GUARD);
        let window_us = last_us - self.clock.estimate().server_now_us();
        if window_us <= 0 {
            return;
        }
        let step_us = window_us / (REFINE_SAMPLES as i64 + 1);
        for k in 1..=REFINE_SAMPLES as i64 {
            let target = last_us - window_us + k * step_us + jitter_us(step_us / 3);
            let left = target - self.clock.estimate().server_now_us();
            if left > 0 {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = tokio::time::sleep(Duration::from_micros(u64::try_from(left).unwrap_or(0))) => {}
                }
            }
            if self.clock.estimate().server_now_us() >= last_us
                || self.with_tracker(&src.name, |t| t.pending.is_none()) != Some(false)
            {
                return;
            }
            match sample_clock(&self.http, &src.service, &url, etag, &self.clock).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::debug!(bundle = %src.name, error = %e, "clock sample failed");
                    return;
                }
            }
        }
    }

    /// Notes a revision announced for `at_ms`, prepared when the server's clock read
    /// `ready_us`: late when that is after the instant.
    fn record_cutover(&self, name: &str, info: &ActiveBundle, at_ms: i64, ready_us: i64) {
        let clock = self.clock.estimate();
        self.with_tracker(name, |t| {
            t.cutover = Some(crate::status::Cutover {
                revision: info.revision.clone(),
                activate_at: server_time(at_ms.saturating_mul(1000)),
                prepared_at: server_time(ready_us),
                activated_at: None,
                late: ready_us > at_ms.saturating_mul(1000),
                clock_offset_ms: clock.offset_us as f64 / 1e3,
                clock_uncertainty_ms: clock.known().then(|| clock.uncertainty_us as f64 / 1e3),
            });
        });
    }

    /// What follows an activation attempt: tracker, status, persistence.
    #[allow(clippy::too_many_arguments)]
    async fn on_activated(
        self: &Arc<Self>,
        idx: usize,
        src: &crate::config::BundleSource,
        result: Result<Result<ActiveBundle, ActivationError>, tokio::task::JoinError>,
        etag: Option<String>,
        raw: Arc<Vec<u8>>,
        size: u64,
        print: (usize, u64),
        activate_ns: u128,
    ) -> bool {
        match result {
            Ok(Ok(info)) => {
                self.prove(idx);
                let clock = self.clock.estimate();
                // The swap's own instant (taken just before it), on the server's clock.
                let switched_us = info
                    .activated_at
                    .timestamp_micros()
                    .saturating_add(clock.offset_us);
                self.with_tracker(&src.name, |t| {
                    if let Some(c) = t.cutover.as_mut().filter(|c| c.revision == info.revision) {
                        // The estimate the switch was timed by.
                        c.activated_at = server_time(switched_us);
                        c.clock_offset_ms = clock.offset_us as f64 / 1e3;
                        c.clock_uncertainty_ms =
                            clock.known().then(|| clock.uncertainty_us as f64 / 1e3);
                    }
                });
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
            Ok(Err(ActivationError::Superseded(revision))) => {
                tracing::info!(bundle = %src.name, %revision, "prepared revision not activated: a newer one is active");
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

/// How long a cut-over's follow-up work waits after the swap: longer than a hundred
/// instances on two cores take to wake for the same instant (BENCHMARKS I).
const SWITCH_GRACE: Duration = Duration::from_millis(100);

/// Extra clock samples taken in a cut-over's window ([`Inner::refine_clock`]).
const REFINE_SAMPLES: usize = 6;
/// None this close to the instant: the timer's last sleep is then read by the final
/// estimate.
const REFINE_GUARD: Duration = Duration::from_millis(30);
/// The timer sleeps at most this long at once, so a refined estimate moves it.
const TIMER_STEP: Duration = Duration::from_millis(20);

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Uniform in `-span..=span` (µs).
fn jitter_us(span: i64) -> i64 {
    if span <= 0 {
        return 0;
    }
    fastrand::i64(-span..=span)
}

/// `server_us` (µs since the epoch, server clock) as a time.
fn server_time(server_us: i64) -> Option<chrono::DateTime<Utc>> {
    chrono::DateTime::from_timestamp_micros(server_us)
}

/// Blocks until the server's clock, as `clock` estimates it, reads `server_us`, in
/// sleeps of at most [`TIMER_STEP`] so that refinements of the estimate count. A plain
/// sleep: Linux wakes a sleeping thread within about 0.1 ms, while spinning through the
/// last millisecond (tried) made every waiting instance of a busy machine compete for
/// the cores right at the instant and spread the swaps over 10 ms.
fn wait_until_server_time(clock: &crate::clock::ServerClock, server_us: i64) {
    loop {
        let left = clock.estimate().local_time_of(server_us) - crate::clock::now_us();
        if left <= 0 {
            return;
        }
        std::thread::sleep(Duration::from_micros(u64::try_from(left).unwrap_or(0)).min(TIMER_STEP));
    }
}
