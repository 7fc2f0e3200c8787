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

/// An instance seen on a revision for the first time: the switch happened after the
/// probe's previous read of it (`since_us`) and at or before `at_us` (local µs).
#[derive(Debug, Clone)]
pub struct Sighting {
    pub revision: String,
    pub at_us: i64,
    pub since_us: i64,
}

/// Reads every instance's active revision in a tight loop on a thread of its own: per
/// instance, each revision it was seen on and when.
pub struct Probe {
    until: Arc<Mutex<Option<String>>>,
    thread: std::thread::JoinHandle<Vec<Vec<Sighting>>>,
}

impl Probe {
    pub fn start(instances: &[Syncer]) -> Probe {
        let until: Arc<Mutex<Option<String>>> = Arc::default();
        let instances = instances.to_vec();
        let target = until.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: Vec<Vec<Sighting>> = vec![Vec::new(); instances.len()];
            let mut last_read = vec![now_us(); instances.len()];
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                if let Some(rev) = target.lock().unwrap().as_deref()
                    && (seen
                        .iter()
                        .all(|s| s.last().is_some_and(|x| x.revision == rev))
                        || std::time::Instant::now() > deadline)
                {
                    break;
                }
                for (i, s) in instances.iter().enumerate() {
                    let Some(a) = s.active() else { continue };
                    let Some(b) = a.bundles.get("main") else {
                        continue;
                    };
                    let now = now_us();
                    if seen[i].last().is_none_or(|x| x.revision != b.revision) {
                        seen[i].push(Sighting {
                            revision: b.revision.clone(),
                            at_us: now,
                            since_us: last_read[i],
                        });
                    }
                    last_read[i] = now;
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
    pub fn finish_on(self, rev: &str) -> Vec<Vec<Sighting>> {
        *self.until.lock().unwrap() = Some(rev.to_string());
        self.thread.join().unwrap()
    }
}

fn sighting<'a>(seen: &'a [Sighting], rev: &str) -> &'a Sighting {
    seen.iter()
        .find(|x| x.revision == rev)
        .unwrap_or_else(|| panic!("an instance never showed {rev}: {seen:?}"))
}

/// Per instance, when it was first seen on `rev`.
pub fn first_on(seen: &[Vec<Sighting>], rev: &str) -> Vec<i64> {
    seen.iter().map(|s| sighting(s, rev).at_us).collect()
}

/// The probe's resolution for `rev`, in milliseconds: the longest wait between two reads
/// of an instance across its switch. A probe thread that the scheduler set aside sees
/// the instances that switched meanwhile late by up to this much, so a spread seen by
/// the probe can exceed the instances' by as much.
pub fn resolution_ms(seen: &[Vec<Sighting>], rev: &str) -> f64 {
    seen.iter()
        .map(|s| {
            let x = sighting(s, rev);
            x.at_us - x.since_us
        })
        .max()
        .unwrap_or(0) as f64
        / 1e3
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
