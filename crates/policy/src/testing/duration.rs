//! Go's `time.Duration.String()`, which `opa test` uses for test timings
//! (`123.456µs`, `1.2ms`, `2m3.5s`).

use std::time::Duration;

pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let secs_total = d.as_secs();
    let hours = secs_total / 3600;
    let minutes = (secs_total % 3600) / 60;
    let secs = secs_total % 60;
    let frac = u128::from(d.subsec_nanos());
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&decimal(
        u128::from(secs) * 1_000_000_000 + frac,
        1_000_000_000,
    ));
    out.push('s');
    out
}

/// `value / unit` with the fraction's trailing zeros removed (Go's formatting).
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    #[test]
    fn matches_go_formatting() {
        let ns = Duration::from_nanos;
        assert_eq!(go_duration(ns(0)), "0s");
        assert_eq!(go_duration(ns(999)), "999ns");
        assert_eq!(go_duration(ns(1_000)), "1µs");
        assert_eq!(go_duration(ns(123_456)), "123.456µs");
        assert_eq!(go_duration(ns(1_200_000)), "1.2ms");
        assert_eq!(go_duration(ns(1_234_567)), "1.234567ms");
        assert_eq!(go_duration(ns(1_500_000_000)), "1.5s");
        assert_eq!(go_duration(ns(61_000_000_000)), "1m1s");
        assert_eq!(go_duration(ns(3_723_500_000_000)), "1h2m3.5s");
        assert_eq!(go_duration(ns(3_600_000_000_000)), "1h0m0s");
    }
}
