//! The bundle server's clock as this instance sees it, for a synchronized cut-over: an
//! NTP-style estimate of the offset between the local wall clock and the server's, from
//! the four times of each bundle request (local send, server receive, server send,
//! local receive), with its uncertainty. The server's wait during a long poll falls
//! between its receive and send times, so it does not count as network delay. Of the
//! recent samples, the one with the smallest round trip is used (NTP's clock filter):
//! its offset is the least disturbed by queueing.
//!
//! The server's times come in [`lockstep_bundle::protocol::SERVER_TIME_HEADER`].
//!
//! Must not: set the system clock, block.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Samples kept (a few minutes of long polls).
const SAMPLES: usize = 8;

/// The local wall clock, microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One request's view of the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Server clock minus local clock.
    pub offset_us: i64,
    /// Network round trip (server time excluded).
    pub delay_us: i64,
}

impl Sample {
    /// From local send `t0`, server receive `t1`, server send `t2`, local receive `t3`.
    /// `None` for times that cannot be (a clock stepped during the request).
    pub fn new(t0: i64, t1: i64, t2: i64, t3: i64) -> Option<Sample> {
        let delay = (t3 - t0) - (t2 - t1);
        if t2 < t1 || t3 < t0 || delay < 0 {
            return None;
        }
        Some(Sample {
            offset_us: ((t1 - t0) + (t2 - t3)) / 2,
            delay_us: delay,
        })
    }

    /// The sample a response carries, given the local send and receive times.
    pub fn from_header(value: &str, t0: i64, t3: i64) -> Option<Sample> {
        let mut parts = value.split_ascii_whitespace();
        let t1 = parts.next()?.parse().ok()?;
        let t2 = parts.next()?.parse().ok()?;
        Sample::new(t0, t1, t2, t3)
    }
}

/// The offset to apply to the local clock to read the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub offset_us: i64,
    /// The true offset is within `offset_us ± uncertainty_us` (half the round trip).
    pub uncertainty_us: i64,
}

impl Estimate {
    /// No sample yet: the local clock as it is, uncertainty unknown (reported as such).
    pub const NONE: Estimate = Estimate {
        offset_us: 0,
        uncertainty_us: i64::MAX,
    };

    /// The local wall-clock time (µs) at which the server's clock reads `server_us`.
    pub fn local_time_of(&self, server_us: i64) -> i64 {
        server_us.saturating_sub(self.offset_us)
    }

    /// The server's clock now, by this estimate.
    pub fn server_now_us(&self) -> i64 {
        now_us().saturating_add(self.offset_us)
    }

    pub fn known(&self) -> bool {
        self.uncertainty_us != i64::MAX
    }
}

/// The recent samples.
#[derive(Debug, Default)]
pub struct ServerClock {
    samples: Mutex<VecDeque<Sample>>,
}

impl ServerClock {
    pub fn add(&self, s: Sample) {
        let mut q = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() == SAMPLES {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The best estimate so far ([`Estimate::NONE`] before any sample).
    pub fn estimate(&self) -> Estimate {
        let q = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.iter()
            .min_by_key(|s| s.delay_us)
            .map_or(Estimate::NONE, |s| Estimate {
                offset_us: s.offset_us,
                uncertainty_us: (s.delay_us + 1) / 2,
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_delay_exclude_the_servers_wait() {
        // Local clock 5 ms behind the server; 2 ms each way; the server held the long
        // poll for 30 s.
        let t0 = 1_000_000;
        let t1 = t0 + 5_000 + 2_000;
        let t2 = t1 + 30_000_000;
        let t3 = t2 - 5_000 + 2_000;
        let s = Sample::new(t0, t1, t2, t3).unwrap();
        assert_eq!(s.offset_us, 5_000);
        assert_eq!(s.delay_us, 4_000);
        assert!(
            Sample::new(t0, t2, t1, t3).is_none(),
            "server sent before it received"
        );
        assert_eq!(Sample::from_header(&format!("{t1} {t2}"), t0, t3), Some(s));
        assert_eq!(Sample::from_header("soon", t0, t3), None);
    }

    #[test]
    fn the_sample_with_the_shortest_round_trip_wins() {
        let c = ServerClock::default();
        assert!(!c.estimate().known());
        c.add(Sample {
            offset_us: 900,
            delay_us: 8_000,
        });
        c.add(Sample {
            offset_us: 100,
            delay_us: 300,
        });
        c.add(Sample {
            offset_us: -700,
            delay_us: 5_000,
        });
        let e = c.estimate();
        assert_eq!((e.offset_us, e.uncertainty_us), (100, 150));
        assert_eq!(e.local_time_of(10_100), 10_000);
        for _ in 0..SAMPLES {
            c.add(Sample {
                offset_us: 7,
                delay_us: 1_000,
            });
        }
        assert_eq!(c.estimate().offset_us, 7, "old samples age out");
    }
}
