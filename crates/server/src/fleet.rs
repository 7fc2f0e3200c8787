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
use crate::routes::valid_bundle_name;
use crate::status::{BundleStatus, StatusReport};

/// The status code a lockstep agent reports while it refuses the bundle it is served as
/// a rollback (`lockstep_sync::ROLLBACK_REFUSED`; the server does not depend on sync).
pub const ROLLBACK_REFUSED_CODE: &str = "bundle_rollback_refused";

/// Most instances tracked (reports for new ids beyond this are refused).
pub const MAX_INSTANCES: usize = 100_000;
/// Publications remembered per bundle.
const MAX_PUBLICATIONS: usize = 50;
/// Longest `labels.id` and partition name.
const MAX_ID_BYTES: usize = 256;
/// Least time between two store listings caused by reports naming bundles this replica
/// does not know (see [`Fleet::relist_due`]).
const RELIST_INTERVAL: Duration = Duration::from_secs(1);

/// What one status report may hold (`fleet.max_*` in the server config). A report over
/// any limit is refused whole ([`IngestError::TooLarge`], 413): the fleet keeps every
/// instance's labels, plugins and bundle statuses in memory, and any status token may
/// report, so nothing in a report may be unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimits {
    /// Bundle statuses in one report (`bundles` plus the legacy `bundle`).
    pub max_bundles: usize,
    /// Entries in `labels`.
    pub max_labels: usize,
    /// Bytes of each label's name, and of its value as JSON text.
    pub max_label_bytes: usize,
    /// Bytes of the whole `plugins` object as JSON text.
    pub max_plugins_bytes: usize,
    /// Bytes of one bundle's status as JSON text.
    pub max_bundle_status_bytes: usize,
}

impl Default for ReportLimits {
    fn default() -> Self {
        ReportLimits {
            max_bundles: 64,
            max_labels: 64,
            max_label_bytes: 4 * 1024,
            max_plugins_bytes: 16 * 1024,
            max_bundle_status_bytes: 16 * 1024,
        }
    }
}

/// Why a status report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// Unusable (no `labels.id`, too many instances...): 400.
    #[error("{0}")]
    Invalid(String),
    /// Over a [`ReportLimits`] limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// The instance id is bound to another credential: 403.
    #[error("{0}")]
    Forbidden(String),
}

/// Length of `v` as compact JSON, without building the text.
fn json_len<T: Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, v) {
        Ok(()) => c.0,
        Err(_) => usize::MAX,
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), for messages.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

impl ReportLimits {
    /// Labels and plugins within the limits.
    fn check_meta(
        &self,
        labels: &Map<String, Value>,
        plugins: &Map<String, Value>,
    ) -> Result<(), IngestError> {
        if labels.len() > self.max_labels {
            return Err(IngestError::TooLarge(format!(
                "status report has {} labels; at most {} are accepted (fleet.max_labels)",
                labels.len(),
                self.max_labels
            )));
        }
        for (k, v) in labels {
            if k.len() > self.max_label_bytes || json_len(v) > self.max_label_bytes {
                return Err(IngestError::TooLarge(format!(
                    "status report label {:?} is longer than {} bytes (fleet.max_label_bytes)",
                    clip(k, 64),
                    self.max_label_bytes
                )));
            }
        }
        let n = json_len(plugins);
        if n > self.max_plugins_bytes {
            return Err(IngestError::TooLarge(format!(
                "status report plugins are {n} bytes; at most {} are accepted (fleet.max_plugins_bytes)",
                self.max_plugins_bytes
            )));
        }
        Ok(())
    }

    fn check_bundle_count(&self, n: usize) -> Result<(), IngestError> {
        if n > self.max_bundles {
            return Err(IngestError::TooLarge(format!(
                "status report has {n} bundles; at most {} are accepted (fleet.max_bundles_per_report)",
                self.max_bundles
            )));
        }
        Ok(())
    }

    fn check_bundle(&self, name: &str, status: &BundleStatus) -> Result<(), IngestError> {
        let n = json_len(status);
        if n > self.max_bundle_status_bytes {
            return Err(IngestError::TooLarge(format!(
                "status of bundle {:?} is {n} bytes; at most {} are accepted (fleet.max_bundle_status_bytes)",
                clip(name, 64),
                self.max_bundle_status_bytes
            )));
        }
        Ok(())
    }
}

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
    /// Which credential reported this id first ([`crate::auth::Auth::status_identity`],
    /// a hash, never the token): only it may report for the id while the record lives.
    /// `None`: first reported without a credential (`allow_anonymous_status`), unbound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
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
                    // Prepared and switched instants matter at once to the fleet view
                    // (every replica shows the cut-over spread).
                    b.status
                        .cutover()
                        .map(|c| (c.revision, c.prepared_at, c.activated_at)),
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
    /// The announced activation instant (synchronized cut-over); `None`: on arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_at: Option<DateTime<Utc>>,
    /// How the instances followed the announced instant (until convergence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<CutoverSummary>,
}

/// A synchronized cut-over as the instances report it. Their instants are by the
/// server's clock as each estimates it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CutoverSummary {
    /// Instances that reported switching to the revision at an instant.
    pub activated: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_activation: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activation: Option<DateTime<Utc>>,
    /// Last minus first activation, milliseconds: the fleet's drift window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_ms: Option<f64>,
    /// Prepared and waiting for the instant.
    #[serde(default)]
    pub prepared: Vec<String>,
    /// Ready only after the instant: switched as soon as ready.
    #[serde(default)]
    pub late: Vec<String>,
    /// Reachable instances reporting the bundle that have neither prepared nor switched
    /// to the revision, once the instant has passed.
    #[serde(default)]
    pub never_prepared: Vec<String>,
    /// Instances whose clock offset to the server is more uncertain than they accept.
    #[serde(default)]
    pub clock_uncertain: Vec<String>,
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
    limits: ReportLimits,
    last_relist: Mutex<Option<std::time::Instant>>,
    metrics: Arc<Metrics>,
}

/// One instance in `/v1/fleet`: what it says about itself, once (not per bundle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default)]
    pub labels: Map<String, Value>,
    /// OPA's plugin states (`{"bundle": {"state": "OK"}, ...}`).
    #[serde(skip_serializing_if = "Map::is_empty", default)]
    pub plugins: Map<String, Value>,
    pub last_report: DateTime<Utc>,
    pub seconds_since_report: f64,
    pub unreachable: bool,
    /// The id is bound to the credential that first reported it; `false` when it was
    /// first reported anonymously, so anyone who may report status can report for it.
    #[serde(default)]
    pub identity_bound: bool,
}

/// One instance as `/v1/fleet` shows it for one bundle (its labels, plugins and
/// partition are in [`FleetView::instances`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: String,
    pub active_revision: Option<String>,
    /// On the desired revision.
    pub current: bool,
    /// Not current, or unreachable.
    pub drift: bool,
    /// Not current because it refuses the desired revision as a rollback: it was signed
    /// before the revision the instance runs (a lockstep agent reports
    /// `bundle_rollback_refused`). Re-sign the revision to roll such instances back.
    #[serde(default)]
    pub refusing_rollback: bool,
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
    /// Its part in the latest announced cut-over of this bundle.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cutover: Option<crate::status::CutoverReport>,
    /// It says its clock offset to the server is too uncertain for a cut-over.
    #[serde(default)]
    pub clock_uncertain: bool,
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
    /// Instances that refuse the desired revision as a rollback (also drifting).
    #[serde(default)]
    pub instances_refusing_rollback: usize,
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
    /// Every reporting instance, once, by id.
    #[serde(default)]
    pub instances: Vec<InstanceInfo>,
    pub bundles: Vec<BundleView>,
    /// True when any instance of any bundle drifts or is unreachable.
    pub drift: bool,
}

fn any_drift(bundles: &[BundleView]) -> bool {
    bundles
        .iter()
        .any(|b| b.instances_drifting > 0 || b.instances_unreachable > 0)
}

impl FleetView {
    /// The view as a token scoped to `allowed` bundles may see it (security review
    /// finding 10): those bundles, and only the instances that report one of them.
    pub fn only_bundles(mut self, allowed: &[String]) -> FleetView {
        self.bundles.retain(|b| allowed.contains(&b.name));
        let seen: std::collections::BTreeSet<&str> = self
            .bundles
            .iter()
            .flat_map(|b| b.instances.iter().map(|i| i.id.as_str()))
            .collect();
        self.instances.retain(|i| seen.contains(i.id.as_str()));
        self.drift = any_drift(&self.bundles);
        self
    }
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
            limits: ReportLimits::default(),
            last_relist: Mutex::new(None),
            metrics,
        }
    }

    /// Whether `report` (within the bundle limit) names a bundle this replica knows no
    /// activation of: one published through another replica a moment ago, or made up.
    pub fn names_unknown_bundle(&self, report: &StatusReport) -> bool {
        let n = report.bundles.len() + usize::from(report.bundle.is_some());
        if n > self.limits.max_bundles {
            return false;
        }
        let Ok(inner) = self.inner.lock() else {
            return false;
        };
        let legacy = report.bundle.as_ref().map(|b| &b.name);
        report
            .bundles
            .keys()
            .chain(legacy)
            .any(|name| valid_bundle_name(name) && !inner.publications.contains_key(name))
    }

    /// True at most once per second: whether a report naming an unknown bundle may make
    /// this replica list the store for new bundles before the report is taken. Made-up
    /// names therefore cost at most one listing a second, however many reports carry them.
    pub fn relist_due(&self, now: std::time::Instant) -> bool {
        let Ok(mut last) = self.last_relist.lock() else {
            return false;
        };
        if last.is_some_and(|t| now.saturating_duration_since(t) < RELIST_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The same fleet with other report limits.
    pub fn with_limits(mut self, limits: ReportLimits) -> Self {
        self.limits = limits;
        self
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
            activate_at: event.activate_at,
            cutover: None,
        });
        if pubs.len() > MAX_PUBLICATIONS {
            let extra = pubs.len() - MAX_PUBLICATIONS;
            pubs.drain(..extra);
        }
        self.check_convergence(&mut inner, Utc::now());
    }

    /// Records a status report. `Ok(Some(instance))` when it should be written to the
    /// store (changed, or the last write is older than the heartbeat); `Err` when the
    /// report is unusable or over the [`ReportLimits`]. Statuses of bundles this server
    /// does not serve (no activation known) are dropped.
    pub fn ingest(
        &self,
        report: &StatusReport,
        partition: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Instance>, IngestError> {
        self.ingest_as(report, partition, None, now)
    }

    /// [`Fleet::ingest`] for a report made with credential `owner`: the first
    /// credential that reports an id owns it while the record lives (until forgotten);
    /// a report for it with another credential, or none, is refused
    /// ([`IngestError::Forbidden`]). An id first reported without a credential stays
    /// unbound.
    pub fn ingest_as(
        &self,
        report: &StatusReport,
        partition: Option<&str>,
        owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Instance>, IngestError> {
        let id = report
            .instance_id()
            .ok_or_else(|| IngestError::Invalid("status report has no labels.id".into()))?
            .to_string();
        if id.len() > MAX_ID_BYTES {
            return Err(IngestError::Invalid(format!(
                "labels.id is longer than {MAX_ID_BYTES} bytes"
            )));
        }
        if partition.is_some_and(|p| p.len() > MAX_ID_BYTES) {
            return Err(IngestError::Invalid(format!(
                "partition is longer than {MAX_ID_BYTES} bytes"
            )));
        }
        let limits = &self.limits;
        limits.check_bundle_count(report.bundles.len() + usize::from(report.bundle.is_some()))?;
        limits.check_meta(&report.labels, &report.plugins)?;
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| IngestError::Invalid("fleet state poisoned".into()))?;
        if !inner.instances.contains_key(&id) && inner.instances.len() >= MAX_INSTANCES {
            return Err(IngestError::Invalid(format!(
                "more than {MAX_INSTANCES} instances"
            )));
        }
        let mut served = BTreeMap::new();
        for (name, status) in report.all_bundles() {
            if inner.publications.contains_key(&name) {
                limits.check_bundle(&name, &status)?;
                served.insert(name, status);
            }
        }
        let previous = inner.instances.get(&id).cloned();
        if let Some(bound) = previous.as_ref().and_then(|p| p.owner.as_deref())
            && owner != Some(bound)
        {
            return Err(IngestError::Forbidden(format!(
                "instance id {:?} is bound to the credential that first reported it; report with that credential or another labels.id",
                clip(&id, 64)
            )));
        }
        let owner = match &previous {
            Some(p) => p.owner.clone(),
            None => owner.map(str::to_string),
        };
        let mut bundles = BTreeMap::new();
        for (name, status) in served {
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
            owner,
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
        // Records come from replicas, which check reports on ingest; one over the limits
        // (written before they existed) is not let into the view.
        let limits = &self.limits;
        let checked = limits
            .check_bundle_count(record.bundles.len())
            .and_then(|()| limits.check_meta(&record.labels, &record.plugins))
            .and_then(|()| {
                record
                    .bundles
                    .iter()
                    .try_for_each(|(name, b)| limits.check_bundle(name, &b.status))
            });
        if let Err(e) = checked {
            tracing::warn!(instance = %clip(&record.id, 256), error = %e, "ignoring a stored instance record");
            return;
        }
        if let Some(cur) = inner.instances.get(&record.id) {
            if cur.last_report >= record.last_report {
                return;
            }
            // A binding is never dropped by a record that lacks one.
            if record.owner.is_none() {
                record.owner = cur.owner.clone();
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
            if let Some(at) = p.activate_at {
                p.cutover = Some(self.cutover_summary(instances, bundle, &p.revision, at, now));
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

    /// How the reachable instances reporting `bundle` followed the cut-over to
    /// `revision` announced for `at`.
    fn cutover_summary(
        &self,
        instances: &BTreeMap<String, Instance>,
        bundle: &str,
        revision: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> CutoverSummary {
        let mut s = CutoverSummary::default();
        for inst in instances.values() {
            if self.unreachable(inst, now) {
                continue;
            }
            let Some(b) = inst.bundles.get(bundle) else {
                continue;
            };
            if b.status.clock_uncertain() {
                s.clock_uncertain.push(inst.id.clone());
            }
            let c = b.status.cutover().filter(|c| c.revision == revision);
            let switched = c.as_ref().and_then(|c| c.activated_at);
            if let Some(t) = switched {
                s.activated += 1;
                s.first_activation = Some(s.first_activation.map_or(t, |f| f.min(t)));
                s.last_activation = Some(s.last_activation.map_or(t, |l| l.max(t)));
            }
            match &c {
                Some(c) if c.late => s.late.push(inst.id.clone()),
                Some(c) if switched.is_none() && c.prepared_at.is_some() => {
                    s.prepared.push(inst.id.clone());
                }
                Some(_) => {}
                None => {
                    let on_it = b.status.active_revision.as_deref() == Some(revision);
                    if now > at && !on_it {
                        s.never_prepared.push(inst.id.clone());
                    }
                }
            }
        }
        if let (Some(f), Some(l)) = (s.first_activation, s.last_activation) {
            // Microseconds: a cut-over's spread is well under a millisecond.
            s.spread_ms = (l - f).num_microseconds().map(|us| us.max(0) as f64 / 1e3);
        }
        s
    }

    /// The whole view at `now`.
    pub fn view(&self, now: DateTime<Utc>) -> FleetView {
        let mut bundles = Vec::new();
        let mut instances = Vec::new();
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
            instances = inner
                .instances
                .values()
                .map(|i| InstanceInfo {
                    id: i.id.clone(),
                    partition: i.partition.clone(),
                    labels: i.labels.clone(),
                    plugins: i.plugins.clone(),
                    last_report: i.last_report,
                    seconds_since_report: secs(now - i.last_report),
                    unreachable: self.unreachable(i, now),
                    identity_bound: i.owner.is_some(),
                })
                .collect();
        }
        let drift = any_drift(&bundles);
        FleetView {
            generated_at: now,
            unreachable_after_seconds: self.unreachable_after.as_secs(),
            instances,
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
            let refusing_rollback =
                !current && b.status.code.as_deref() == Some(ROLLBACK_REFUSED_CODE);
            instances.push(InstanceView {
                id: id.clone(),
                active_revision: b.status.active_revision.clone(),
                current,
                drift: !current || unreachable,
                refusing_rollback,
                unreachable,
                lag_seconds,
                last_report: inst.last_report,
                seconds_since_report: secs(now - inst.last_report),
                last_successful_activation: b.status.last_successful_activation.clone(),
                last_successful_request: b.status.last_successful_request.clone(),
                code: b.status.code.clone(),
                message: b.status.message.clone(),
                errors: b.status.errors.clone(),
                cutover: b.status.cutover(),
                clock_uncertain: b.status.clock_uncertain(),
            });
        }
        let total = instances.len();
        let cur = instances
            .iter()
            .filter(|i| i.current && !i.unreachable)
            .count();
        let drifting = instances.iter().filter(|i| i.drift).count();
        let unreachable = instances.iter().filter(|i| i.unreachable).count();
        let refusing = instances.iter().filter(|i| i.refusing_rollback).count();
        BundleView {
            name: name.to_string(),
            desired_revision: desired.map(|d| d.revision.clone()),
            desired_id: desired.map(|d| d.id.clone()),
            desired_since: desired.map(|d| d.at),
            instances_total: total,
            instances_current: cur,
            instances_drifting: drifting,
            instances_unreachable: unreachable,
            instances_refusing_rollback: refusing,
            converged: drifting == 0,
            instances,
            publications: pubs
                .map(|p| p.iter().rev().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Sets the fleet gauges (called on each scrape): counted from the instances in
    /// place, without building the view.
    pub fn update_gauges(&self) {
        let now = Utc::now();
        let mut drifting: BTreeMap<String, i64> = BTreeMap::new();
        let mut unreachable: BTreeMap<String, i64> = BTreeMap::new();
        let mut on_revision: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut cutovers: BTreeMap<String, CutoverSummary> = BTreeMap::new();
        {
            let Ok(mut inner) = self.inner.lock() else {
                return;
            };
            inner
                .instances
                .retain(|_, i| !self.forgotten(i.last_report, now));
            self.check_convergence(&mut inner, now);
            for (name, pubs) in &inner.publications {
                drifting.insert(name.clone(), 0);
                unreachable.insert(name.clone(), 0);
                if let Some(c) = pubs.iter().rev().find_map(|p| p.cutover.clone()) {
                    cutovers.insert(name.clone(), c);
                }
            }
            for inst in inner.instances.values() {
                let gone = self.unreachable(inst, now);
                for (name, b) in &inst.bundles {
                    let desired = inner.publications.get(name).and_then(|p| p.last());
                    let current = desired.is_none_or(|d| {
                        b.status.active_revision.as_deref() == Some(d.revision.as_str())
                    });
                    *drifting.entry(name.clone()).or_insert(0) += i64::from(!current || gone);
                    *unreachable.entry(name.clone()).or_insert(0) += i64::from(gone);
                    if !gone {
                        let rev = b.status.active_revision.clone().unwrap_or_default();
                        *on_revision.entry((name.clone(), rev)).or_insert(0) += 1;
                    }
                }
            }
        }
        let m = &self.metrics;
        m.instances.clear();
        m.drifting.clear();
        m.unreachable.clear();
        for (bundle, n) in drifting {
            m.drifting.get_or_create(&BundleLabels { bundle }).set(n);
        }
        for (bundle, n) in unreachable {
            m.unreachable.get_or_create(&BundleLabels { bundle }).set(n);
        }
        for (bundle, c) in cutovers {
            let labels = BundleLabels { bundle };
            m.cutover_spread
                .get_or_create(&labels)
                .set(c.spread_ms.unwrap_or(0.0) / 1e3);
            m.cutover_late
                .get_or_create(&labels)
                .set(i64::try_from(c.late.len()).unwrap_or(i64::MAX));
            m.cutover_unprepared
                .get_or_create(&labels)
                .set(i64::try_from(c.never_prepared.len()).unwrap_or(i64::MAX));
        }
        for ((bundle, revision), n) in on_revision {
            m.instances
                .get_or_create(&RevisionLabels { bundle, revision })
                .set(n);
        }
    }
}
