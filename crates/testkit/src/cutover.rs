//! Cut-over harness shared by the synchronized cut-over test and benchmark: a fleet of
//! in-process sync engines on one server, and a probe that reads each one's active
//! revision in a tight loop (what a decision reads), so switch instants are the swaps
//! themselves.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_sync::Syncer;
use lockstep_sync::clock::now_us;
use serde_json::Value;

use crate::bundles::bundle_with_data;
use crate::server::TestServer;
use crate::sync::reporting_sync_config;
use crate::wait::eventually;

/// `n` sync engines (the agent's and the gateway's) on one test server, long polling,
/// each reporting its status as `instance-<i>`; all on revision `r0` (`data_bytes`
/// of data) once started.
pub struct Fleet {
    pub server: TestServer,
    pub instances: Vec<Syncer>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Fleet {
    pub async fn start(n: usize, data_bytes: usize) -> Fleet {
        let server = TestServer::start().await;
        server
            .publish_ok(
                "main",
                bundle_with_data("r0", 1000, Some(&server.keys), data_bytes),
            )
            .await;
        let mut instances = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let cfg =
                reporting_sync_config(&server, dir.path(), &format!("instance-{i}"), Some(20));
            let s = Syncer::new(cfg).unwrap();
            s.start().await;
            instances.push(s);
            dirs.push(dir);
        }
        let f = Fleet {
            server,
            instances,
            _dirs: dirs,
        };
        f.wait_all_on("r0", Duration::from_secs(60)).await;
        f
    }

    /// Waits until every instance is on `rev`.
    pub async fn wait_all_on(&self, rev: &str, within: Duration) {
        let ok = eventually(within, || {
            self.instances
                .iter()
                .all(|s| revision(s).as_deref() == Some(rev))
        })
        .await;
        assert!(
            ok,
            "not every instance on {rev}: {:?}",
            self.instances.iter().map(revision).collect::<Vec<_>>()
        );
    }

    /// Waits until every instance's status records its switch to `rev` (a moment after
    /// the swap decisions see).
    pub async fn wait_all_recorded(&self, rev: &str, within: Duration) {
        let ok = eventually(within, || {
            self.instances.iter().all(|s| {
                let c = &cutover_of(s);
                c["revision"] == rev && c["activated_at"].is_string()
            })
        })
        .await;
        assert!(ok, "not every instance recorded its switch to {rev}");
    }

    /// Waits until every instance's status says it prepared `rev` (not yet switched).
    pub async fn wait_all_prepared(&self, rev: &str, within: Duration) {
        let ok = eventually(within, || {
            self.instances.iter().all(|s| {
                let c = &cutover_of(s);
                c["revision"] == rev && c["prepared_at"].is_string()
            })
        })
        .await;
        assert!(ok, "not every instance prepared {rev}");
    }

    pub async fn stop(mut self) {
        for s in &self.instances {
            s.shutdown().await;
        }
        self.server.stop().await;
    }
}

/// The active revision of bundle `main`.
pub fn revision(s: &Syncer) -> Option<String> {
    s.active()
        .and_then(|a| a.bundles.get("main").map(|b| b.revision.clone()))
}

/// `lockstep.cutover` of bundle `main` in the status report.
pub fn cutover_of(s: &Syncer) -> Value {
    serde_json::to_value(s.status_report()).unwrap()["bundles"]["main"]["lockstep"]["cutover"]
        .clone()
}

/// Reads every instance's active revision in a tight loop on a thread of its own: per
/// instance, the local time (µs) it was first seen on each revision.
pub struct Probe {
    until: Arc<Mutex<Option<String>>>,
    thread: std::thread::JoinHandle<Vec<Vec<(String, i64)>>>,
}

impl Probe {
    pub fn start(instances: &[Syncer]) -> Probe {
        let until: Arc<Mutex<Option<String>>> = Arc::default();
        let instances = instances.to_vec();
        let target = until.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: Vec<Vec<(String, i64)>> = vec![Vec::new(); instances.len()];
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                if let Some(rev) = target.lock().unwrap().as_deref()
                    && (seen.iter().all(|s| s.last().is_some_and(|(r, _)| r == rev))
                        || std::time::Instant::now() > deadline)
                {
                    break;
                }
                for (i, s) in instances.iter().enumerate() {
                    let Some(a) = s.active() else { continue };
                    let Some(b) = a.bundles.get("main") else {
                        continue;
                    };
                    if seen[i].last().is_none_or(|(r, _)| *r != b.revision) {
                        seen[i].push((b.revision.clone(), now_us()));
                    }
                }
                // Tight (a pass every ~0.1 ms), but not a spinning thread competing with
                // the instances for the two cores.
                std::thread::sleep(Duration::from_micros(100));
            }
            seen
        });
        Probe { until, thread }
    }

    /// Stops once every instance was seen on `rev` (the probe may trail the last
    /// swap by a pass).
    pub fn finish_on(self, rev: &str) -> Vec<Vec<(String, i64)>> {
        *self.until.lock().unwrap() = Some(rev.to_string());
        self.thread.join().unwrap()
    }
}

/// Per instance, when it was first seen on `rev`.
pub fn first_on(seen: &[Vec<(String, i64)>], rev: &str) -> Vec<i64> {
    seen.iter()
        .map(|s| {
            s.iter()
                .find(|(r, _)| r == rev)
                .unwrap_or_else(|| panic!("an instance never showed {rev}: {s:?}"))
                .1
        })
        .collect()
}

/// Last minus first of `t` (µs), in milliseconds.
pub fn spread_ms(t: &[i64]) -> f64 {
    (t.iter().max().unwrap() - t.iter().min().unwrap()) as f64 / 1e3
}

/// An RFC 3339 time, µs since the epoch.
pub fn micros(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_micros()
}
