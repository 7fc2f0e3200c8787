//! Delays between bundle requests: OPA's polling jitter and error backoff
//! (`v1/util/backoff.go`).

use std::time::Duration;

/// After a success without long polling: `min + rand[0,1) * (max - min)`.
pub fn polling_delay(min: Duration, max: Duration) -> Duration {
    let span = max.saturating_sub(min);
    min + span.mul_f64(fastrand::f64())
}

/// After the `failures`-th consecutive error (1 = first): 0 for the first (immediate
/// retry, as OPA), then `min(100 ms * 1.6^n, max) * (1 ± 0.2)`.
pub fn error_backoff(failures: u32, max: Duration) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let exp = i32::try_from(failures.saturating_sub(1))
        .unwrap_or(i32::MAX)
        .min(64);
    let base = 0.1_f64 * 1.6_f64.powi(exp);
    let capped = base.min(max.as_secs_f64()).max(0.0);
    let jitter = 1.0 + 0.2 * (fastrand::f64() * 2.0 - 1.0);
    Duration::from_secs_f64((capped * jitter).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_stays_in_range() {
        for _ in 0..1000 {
            let d = polling_delay(Duration::from_secs(1), Duration::from_secs(2));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
        }
        assert_eq!(
            polling_delay(Duration::from_secs(3), Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn backoff_grows_to_max_with_jitter() {
        assert_eq!(error_backoff(1, Duration::from_secs(10)), Duration::ZERO);
        let d = error_backoff(2, Duration::from_secs(10));
        assert!(
            d >= Duration::from_millis(127) && d <= Duration::from_millis(193),
            "{d:?}"
        );
        for _ in 0..100 {
            let d = error_backoff(40, Duration::from_secs(2));
            assert!(d >= Duration::from_millis(1600) && d <= Duration::from_millis(2400));
        }
    }
}
