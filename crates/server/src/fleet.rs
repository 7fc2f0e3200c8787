//! The fleet model: which instance runs which revision of which bundle, who is behind and
//! for how long, and per publication the measured convergence time (publication until
//! every reporting instance reported the new revision).
//!
//! Kept in memory per replica, fed by the status reports this replica receives and by the
//! activations it learns from the store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::metrics::{BundleLabels, Metrics, RevisionLabels};
use crate::model::{Action, HistoryEvent};
use crate::status::{BundleStatus, StatusReport};

/// Most instances tracked (reports for new ids beyond this are refused).
pub const MAX_INSTANCES: usize = 100_000;
/// Publications remembered per bundle.
const MAX_PUBLICATIONS: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceBundle {
    pub status: BundleStatus,
    /// When this instance first reported its current `active_revision`.
    pub revision_since: DateTime<Utc>,
}

/// One instance's last report, as kept in memory and shared through the store
/// (`fleet/instances/<sha256(id)>.json`) so every replica sees the whole fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default)]
    pub labels: Map<String, Value>,
    pub last_report: DateTime<Utc>,
    #[serde(default)]
    pub bundles: BTreeMap<String, InstanceBundle>,
    #[serde(default)]
    pub plugins: Map<String, Value>,
    /// When and what this replica last wrote to (or read from) the store.
    #[serde(skip)]
    persisted: Option<(DateTime<Utc>, String)>,
}

impl Instance {
    /// What matters for the fleet view apart from the report time: a change of it is
    /// written to the store at once, otherwise only a heartbeat now and then.
    fn fingerprint(&self) -> String {
        let parts: Vec<_> = self
            .bundles
            .iter()
            .map(|(k, b)| {
                (
                    k,
                    &b.status.active_revision,
                    &b.status.code,
                    &b.status.message,
                    &b.status.errors,
                )
            })
            .collect();
        serde_json::to_string(&(&self.partition, parts, &self.plugins)).unwrap_or_default()
    }
}

/// One activation of a revision (publication or rollback) and how the fleet followed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub seq: u64,
    pub action: Action,
    pub revision: String,
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the last reporting instance reported this revision.
    pub converged_at: Option<DateTime<Utc>>,
    pub convergence_seconds: Option<f64>,
    /// A newer publication came before this one converged.
    pub superseded: bool,
}

#[derive(Debug, Default)]
struct Inner {
    instances: BTreeMap<String, Instance>,
    /// Newest last.
    publications: BTreeMap<String, Vec<Publication>>,
}

/// The fleet.
#[derive(Debug)]
pub struct Fleet {
    inner: Mutex<Inner>,
    unreachable_after: Duration,
    /// Instances silent this long are dropped from the view (and the store).
    forget_after: Duration,
    /// Unchanged reports are written to the store at most this often.
    heartbeat: Duration,
    metrics: Arc<Metrics>,
}

/// One instance as `/v1/fleet` shows it for one bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    pub labels: Map<String, Value>,
    pub active_revision: Option<String>,
    /// On the desired revision.
    pub current: bool,
    /// Not current, or unreachable.
    pub drift: bool,
    pub unreachable: bool,
    /// Seconds this instance has been behind the desired revision (0 when current).
    pub lag_seconds: Option<f64>,
    pub last_report: DateTime<Utc>,
    pub seconds_since_report: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_activation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<Value>,
    /// OPA's plugin states (`{"bundle": {"state": "OK"}, ...}`).
    #[serde(skip_serializing_if = "Map::is_empty", default)]
    pub plugins: Map<String, Value>,
}

/// One bundle in `/v1/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleView {
    pub name: String,
    /// Manifest revision every instance should run; `None` for a bundle instances report
    /// but this server does not serve.
    pub desired_revision: Option<String>,
    pub desired_id: Option<String>,
    /// When the desired revision became active (publication or rollback).
    pub desired_since: Option<DateTime<Utc>>,
    pub instances_total: usize,
    pub instances_current: usize,
    pub instances_drifting: usize,
    pub instances_unreachable: usize,
    /// Every instance is current and reachable.
    pub converged: bool,
    pub instances: Vec<InstanceView>,
    /// Newest first.
    pub publications: Vec<Publication>,
}

/// `/v1/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    pub generated_at: DateTime<Utc>,
    pub unreachable_after_seconds: u64,
    pub bundles: Vec<BundleView>,
    /// True when any instance of any bundle drifts or is unreachable.
    pub drift: bool,
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds().max(0) as f64 / 1000.0
}

impl Fleet {
    pub fn new(unreachable_after: Duration, forget_after: Duration, metrics: Arc<Metrics>) -> Self {
        Fleet {
            inner: Mutex::new(Inner::default()),
            unreachable_after,
            forget_after: forget_after.max(unreachable_after),
            heartbeat: (unreachable_after / 3).max(Duration::from_secs(1)),
            metrics,
        }
    }

    /// How long a silent instance stays in the view.
    pub fn forget_after(&self) -> Duration {
        self.forget_after
    }

    fn forgotten(&self, last_report: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        (now - last_report).to_std().unwrap_or_default() > self.forget_after
    }

    fn unreachable(&self, inst: &Instance, now: DateTime<Utc>) -> bool {
        (now - inst.last_report).to_std().unwrap_or_default() > self.unreachable_after
    }

    /// A revision became active (from this replica's publish or from the store).
    pub fn on_activation(&self, bundle: &str, revision: &str, event: &HistoryEvent) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let pubs = inner.publications.entry(bundle.to_string()).or_default();
        if pubs.iter().any(|p| p.seq >= event.seq) {
            return;
        }
        for p in pubs.iter_mut() {
            if p.converged_at.is_none() {
                p.superseded = true;
            }
        }
        pubs.push(Publication {
            seq: event.seq,
            action: event.action,
            revision: revision.to_string(),
            id: event.id.clone(),
            at: event.at,
            actor: event.actor.clone(),
            reason: event.reason.clone(),
            converged_at: None,
            convergence_seconds: None,
            superseded: false,
        });
        if pubs.len() > MAX_PUBLICATIONS {
            let extra = pubs.len() - MAX_PUBLICATIONS;
            pubs.drain(..extra);
        }
        self.check_convergence(&mut inner, Utc::now());
    }

    /// Records a status report. `Ok(Some(instance))` when it should be written to the
    /// store (changed, or the last write is older than the heartbeat); `Err` with a
    /// message when the report is unusable.
    pub fn ingest(
        &self,
        report: &StatusReport,
        partition: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Instance>, String> {
        let id = report
            .instance_id()
            .ok_or("status report has no labels.id")?
            .to_string();
        if id.len() > 256 {
            return Err("labels.id is longer than 256 bytes".into());
        }
        let mut inner = self.inner.lock().map_err(|_| "fleet state poisoned")?;
        if !inner.instances.contains_key(&id) && inner.instances.len() >= MAX_INSTANCES {
            return Err(format!("more than {MAX_INSTANCES} instances"));
        }
        let previous = inner.instances.get(&id).cloned();
        let mut bundles = BTreeMap::new();
        for (name, status) in report.all_bundles() {
            let prev = previous.as_ref().and_then(|p| p.bundles.get(&name));
            let revision_since = match prev {
                Some(p) if p.status.active_revision == status.active_revision => p.revision_since,
                _ => now,
            };
            bundles.insert(
                name,
                InstanceBundle {
                    status,
                    revision_since,
                },
            );
        }
        let mut inst = Instance {
            id: id.clone(),
            partition: partition.map(str::to_string),
            labels: report.labels.clone(),
            last_report: now,
            bundles,
            plugins: report.plugins.clone(),
            persisted: previous.and_then(|p| p.persisted),
        };
        let fp = inst.fingerprint();
        let write = match &inst.persisted {
            Some((at, old)) => {
                *old != fp || (now - *at).to_std().unwrap_or_default() >= self.heartbeat
            }
            None => true,
        };
        if write {
            inst.persisted = Some((now, fp));
        }
        let out = write.then(|| inst.clone());
        inner.instances.insert(id, inst);
        self.check_convergence(&mut inner, now);
        Ok(out)
    }

    /// Merges an instance record read from the store (written by any replica); the
    /// newer report wins.
    pub fn merge(&self, mut record: Instance) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if self.forgotten(record.last_report, Utc::now()) {
            return;
        }
        if let Some(cur) = inner.instances.get(&record.id) {
            if cur.last_report >= record.last_report {
                return;
            }
            // Keep the earliest sighting of an unchanged revision.
            for (name, b) in record.bundles.iter_mut() {
                if let Some(c) = cur.bundles.get(name)
                    && c.status.active_revision == b.status.active_revision
                {
                    b.revision_since = b.revision_since.min(c.revision_since);
                }
            }
        } else if inner.instances.len() >= MAX_INSTANCES {
            return;
        }
        record.persisted = Some((record.last_report, record.fingerprint()));
        inner.instances.insert(record.id.clone(), record);
        self.check_convergence(&mut inner, Utc::now());
    }

    /// Marks the newest publication of each bundle converged once every reachable
    /// instance reporting that bundle runs its revision.
    fn check_convergence(&self, inner: &mut Inner, now: DateTime<Utc>) {
        let Inner {
            instances,
            publications,
        } = inner;
        for (bundle, pubs) in publications.iter_mut() {
            let Some(p) = pubs.last_mut() else { continue };
            if p.converged_at.is_some() {
                continue;
            }
            let mut any = false;
            let mut all = true;
            let mut latest = p.at;
            for inst in instances.values() {
                if self.unreachable(inst, now) {
                    continue;
                }
                let Some(b) = inst.bundles.get(bundle) else {
                    continue;
                };
                any = true;
                if b.status.active_revision.as_deref() == Some(p.revision.as_str()) {
                    latest = latest.max(b.revision_since);
                } else {
                    all = false;
                }
            }
            if any && all {
                let s = secs(latest - p.at);
                p.converged_at = Some(latest);
                p.convergence_seconds = Some(s);
                self.metrics
                    .convergence
                    .get_or_create(&BundleLabels {
                        bundle: bundle.clone(),
                    })
                    .observe(s);
            }
        }
    }

    /// The whole view at `now`.
    pub fn view(&self, now: DateTime<Utc>) -> FleetView {
        let mut bundles = Vec::new();
        if let Ok(mut inner) = self.inner.lock() {
            inner
                .instances
                .retain(|_, i| !self.forgotten(i.last_report, now));
            self.check_convergence(&mut inner, now);
            let mut names: Vec<String> = inner.publications.keys().cloned().collect();
            for inst in inner.instances.values() {
                names.extend(inst.bundles.keys().cloned());
            }
            names.sort();
            names.dedup();
            for name in names {
                bundles.push(self.bundle_view(&inner, &name, now));
            }
        }
        let drift = bundles
            .iter()
            .any(|b| b.instances_drifting > 0 || b.instances_unreachable > 0);
        FleetView {
            generated_at: now,
            unreachable_after_seconds: self.unreachable_after.as_secs(),
            bundles,
            drift,
        }
    }

    fn bundle_view(&self, inner: &Inner, name: &str, now: DateTime<Utc>) -> BundleView {
        let pubs = inner.publications.get(name);
        let desired = pubs.and_then(|p| p.last());
        let mut instances = Vec::new();
        for (id, inst) in &inner.instances {
            let Some(b) = inst.bundles.get(name) else {
                continue;
            };
            let unreachable = self.unreachable(inst, now);
            let current = match desired {
                Some(d) => b.status.active_revision.as_deref() == Some(d.revision.as_str()),
                None => true,
            };
            let lag_seconds = desired.map(|d| if current { 0.0 } else { secs(now - d.at) });
            instances.push(InstanceView {
                id: id.clone(),
                partition: inst.partition.clone(),
                labels: inst.labels.clone(),
                active_revision: b.status.active_revision.clone(),
                current,
                drift: !current || unreachable,
                unreachable,
                lag_seconds,
                last_report: inst.last_report,
                seconds_since_report: secs(now - inst.last_report),
                last_successful_activation: b.status.last_successful_activation.clone(),
                last_successful_request: b.status.last_successful_request.clone(),
                code: b.status.code.clone(),
                message: b.status.message.clone(),
                errors: b.status.errors.clone(),
                plugins: inst.plugins.clone(),
            });
        }
        let total = instances.len();
        let cur = instances
            .iter()
            .filter(|i| i.current && !i.unreachable)
            .count();
        let drifting = instances.iter().filter(|i| i.drift).count();
        let unreachable = instances.iter().filter(|i| i.unreachable).count();
        BundleView {
            name: name.to_string(),
            desired_revision: desired.map(|d| d.revision.clone()),
            desired_id: desired.map(|d| d.id.clone()),
            desired_since: desired.map(|d| d.at),
            instances_total: total,
            instances_current: cur,
            instances_drifting: drifting,
            instances_unreachable: unreachable,
            converged: drifting == 0,
            instances,
            publications: pubs
                .map(|p| p.iter().rev().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Sets the fleet gauges from the current view (called on each scrape).
    pub fn update_gauges(&self) {
        let view = self.view(Utc::now());
        let m = &self.metrics;
        m.instances.clear();
        m.drifting.clear();
        m.unreachable.clear();
        for b in &view.bundles {
            let labels = BundleLabels {
                bundle: b.name.clone(),
            };
            m.drifting
                .get_or_create(&labels)
                .set(b.instances_drifting as i64);
            m.unreachable
                .get_or_create(&labels)
                .set(b.instances_unreachable as i64);
            for i in b.instances.iter().filter(|i| !i.unreachable) {
                m.instances
                    .get_or_create(&RevisionLabels {
                        bundle: b.name.clone(),
                        revision: i.active_revision.clone().unwrap_or_default(),
                    })
                    .inc();
            }
        }
    }
}
