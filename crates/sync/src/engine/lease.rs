//! The freshness lease: every answer from the bundle server proves the instance
//! current; without proof for `max_staleness` the gate denies (or serves and says so).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::types::Gate;
use super::{Inner, lock};
use crate::config::OnStale;

/// `(long_polling_timeout, min_delay, max_delay)` bounded by half of `max_staleness`
/// (at least 1 s): a long poll that expires, or a periodic poll, must answer before
/// the freshness lease runs out, or the agent would go stale on every cycle.
pub(super) fn lease_bounded(
    p: &crate::config::Polling,
    max_staleness: Duration,
) -> (Option<Duration>, Duration, Duration) {
    let bound = (max_staleness / 2).max(Duration::from_secs(1));
    let max_delay = p.max_delay.min(bound);
    (
        p.long_polling_timeout.map(|t| t.min(bound)),
        p.min_delay.min(max_delay),
        max_delay,
    )
}

impl Inner {
    pub(super) fn prove(&self, idx: usize) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Some(l) = self.leases.get(idx) {
            l.store(nanos, Ordering::Release);
        }
    }

    /// Time since the last proof for bundle `idx` (since start when none yet).
    pub(super) fn lease_age(&self, idx: usize, now: Instant) -> Duration {
        let nanos = self
            .leases
            .get(idx)
            .map_or(0, |l| l.load(Ordering::Acquire));
        let proof = self.started + Duration::from_nanos(nanos);
        now.saturating_duration_since(proof)
    }

    pub(super) fn last_proof_time(&self, idx: usize) -> Option<DateTime<Utc>> {
        let nanos = self.leases.get(idx)?.load(Ordering::Acquire);
        if nanos == 0 {
            return None;
        }
        let age = self
            .started
            .elapsed()
            .saturating_sub(Duration::from_nanos(nanos));
        Some(Utc::now() - chrono::Duration::from_std(age).unwrap_or_default())
    }

    pub(super) fn stale_reason(&self, now: Instant) -> Option<String> {
        let max = self.cfg.max_staleness;
        let mut reasons = Vec::new();
        for (idx, b) in self.cfg.bundles.iter().enumerate() {
            let age = self.lease_age(idx, now);
            if age > max {
                let last_error = lock(&self.trackers)
                    .get(&b.name)
                    .and_then(|t| t.status.message.clone())
                    .map(|m| format!("; last error: {m}"))
                    .unwrap_or_default();
                let since = if self
                    .leases
                    .get(idx)
                    .is_some_and(|l| l.load(Ordering::Acquire) != 0)
                {
                    "no confirmation from the bundle server"
                } else {
                    "no confirmation from the bundle server since start"
                };
                reasons.push(format!(
                    "bundle {:?}: {since} for {:.1}s (max_staleness {}s){last_error}",
                    b.name,
                    age.as_secs_f64(),
                    max.as_secs_f64()
                ));
            }
        }
        (!reasons.is_empty()).then(|| format!("policy is stale: {}", reasons.join("; ")))
    }

    pub(super) fn gate(&self) -> Gate {
        let active = self.active.load_full();
        if self.cfg.bundles.is_empty() {
            return match active {
                Some(active) => Gate::Serve {
                    active,
                    warning: None,
                },
                None => Gate::Deny {
                    reason: "no policy loaded".into(),
                    active: None,
                },
            };
        }
        let missing: Vec<&str> = self
            .cfg
            .bundles
            .iter()
            .filter(|b| {
                active
                    .as_ref()
                    .is_none_or(|a| !a.bundles.contains_key(&b.name))
            })
            .map(|b| b.name.as_str())
            .collect();
        if !missing.is_empty() {
            let t = lock(&self.trackers);
            let why: Vec<String> = missing
                .iter()
                .map(|n| {
                    let err = t
                        .get(*n)
                        .and_then(|t| t.status.message.clone())
                        .unwrap_or_else(|| "no download has succeeded yet".into());
                    format!("bundle {n:?} not activated yet ({err})")
                })
                .collect();
            return Gate::Deny {
                reason: format!("no policy active, failing closed: {}", why.join("; ")),
                active,
            };
        }
        let Some(active) = active else {
            return Gate::Deny {
                reason: "no policy active, failing closed".into(),
                active: None,
            };
        };
        match self.stale_reason(Instant::now()) {
            None => Gate::Serve {
                active,
                warning: None,
            },
            Some(reason) => match self.cfg.on_stale {
                OnStale::Deny => Gate::Deny {
                    reason: format!("{reason}; failing closed (lockstep.on_stale: deny)"),
                    active: Some(active),
                },
                OnStale::Serve => Gate::Serve {
                    active,
                    warning: Some(format!(
                        "{reason}; serving the last activated revision (lockstep.on_stale: serve)"
                    )),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Polling;

    #[test]
    fn polling_is_bounded_by_the_lease() {
        let s = Duration::from_secs;
        let p = Polling {
            min_delay: s(60),
            max_delay: s(120),
            long_polling_timeout: Some(s(60)),
        };
        assert_eq!(lease_bounded(&p, s(300)), (Some(s(60)), s(60), s(120)));
        assert_eq!(lease_bounded(&p, s(60)), (Some(s(30)), s(30), s(30)));
        assert_eq!(lease_bounded(&p, s(100)), (Some(s(50)), s(50), s(50)));
        // Never below a second, whatever the lease.
        assert_eq!(
            lease_bounded(&p, Duration::from_millis(500)),
            (Some(s(1)), s(1), s(1))
        );
        let short = Polling {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(200),
            long_polling_timeout: None,
        };
        assert_eq!(
            lease_bounded(&short, s(10)),
            (None, Duration::from_millis(100), Duration::from_millis(200))
        );
    }
}
