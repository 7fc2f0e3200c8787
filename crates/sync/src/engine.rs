//! The sync engine: per-bundle download loops, activation, the active state, the
//! freshness lease, the REST overlay and status reports.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use lockstep_bundle::{BundleError, Module, ReadOptions, read_tar_gz};
use lockstep_policy::{CompileError, DataDocument, EvalError, PolicyHandle, PolicySet, Snapshot};
use serde_json::Value as Json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backoff::{error_backoff, polling_delay};
use crate::config::{OnStale, SyncConfig, Verification};
use crate::download::{FetchError, Fetched, authorize, error_chain, fetch};
use crate::overlay::{Overlay, PatchOp, PathError, display_path, parse_policy, segments_overlap};
use crate::persist;
use crate::status::{BundleStatus, ErrorDetail, Freshness, PluginState, StatusReport};

/// One bundle of the active state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBundle {
    pub name: String,
    pub revision: String,
    /// Effective roots (`[""]` when the manifest names none).
    pub roots: Vec<String>,
    pub etag: Option<String>,
    /// Signed issue time (`iat`), unix seconds; `None` when unsigned.
    pub issued_at: Option<i64>,
    pub activated_at: DateTime<Utc>,
    /// Loaded from the persistence directory rather than downloaded.
    pub from_disk: bool,
}

/// The active state: one compiled policy and the bundles it came from. Handlers load
/// it once per request, so a request is decided entirely by one revision.
#[derive(Debug)]
pub struct Active {
    pub snapshot: Arc<Snapshot>,
    pub bundles: BTreeMap<String, ActiveBundle>,
    /// Increases with every activation or REST write.
    pub generation: u64,
}

impl Active {
    /// The revision decisions report: the bundle's revision for one bundle,
    /// `name=revision` pairs joined by `,` for several, empty for none.
    pub fn revision(&self) -> &str {
        &self.snapshot.revision
    }

    pub fn policy(&self) -> &PolicySet {
        &self.snapshot.policy
    }
}

/// Whether a decision may be made now.
#[derive(Debug, Clone)]
pub enum Gate {
    /// Decide with `active`; `warning` is set when the lease expired and
    /// `on_stale: serve` keeps serving.
    Serve {
        active: Arc<Active>,
        warning: Option<String>,
    },
    /// Fail closed: no bundle yet, or the lease expired with `on_stale: deny`.
    Deny {
        reason: String,
        active: Option<Arc<Active>>,
    },
}

/// Why a REST write was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The path or package belongs to a bundle (400 `invalid_parameter`).
    #[error("{0}")]
    Owned(String),
    #[error(transparent)]
    Path(#[from] PathError),
    /// The modules no longer compile (400).
    #[error("{message}")]
    Compile {
        message: String,
        errors: Vec<ErrorDetail>,
    },
    /// Unknown policy id (404).
    #[error("{0}")]
    NotFound(String),
    /// Unusable request (400 `invalid_parameter`).
    #[error("{0}")]
    BadRequest(String),
}

/// What a data write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// `PUT` with `If-None-Match: *` on an existing document (304).
    NotModified,
}

/// A data write.
#[derive(Debug, Clone)]
pub enum DataWrite {
    Put { value: Json, if_none_match: bool },
    Patch(Vec<PatchOp>),
    Delete,
}

#[derive(Debug, thiserror::Error)]
enum ActivationError {
    #[error("{0}")]
    Read(#[from] BundleError),
    #[error(
        "bundle is not signed; lockstep requires signed bundles (configure bundles.<name>.signing and keys, or set lockstep.skip_verification: true to accept unsigned bundles)"
    )]
    Unsigned,
    #[error(
        "refusing rollback: bundle signed at {new} (iat) is older than the active revision {active_revision:?} signed at {old}"
    )]
    Rollback {
        new: i64,
        old: i64,
        active_revision: String,
    },
    #[error("delta bundles are not supported by lockstep")]
    Delta,
    #[error("detected overlapping roots in bundle manifests: {0}")]
    Roots(String),
    #[error("error(s) occurred while compiling module(s): {0}")]
    Compile(#[from] CompileError),
    #[error("error(s) occurred while evaluating the bundle once after compiling: {0}")]
    Eval(#[from] EvalError),
}

impl ActivationError {
    fn details(&self) -> Vec<ErrorDetail> {
        match self {
            ActivationError::Compile(e) => compile_details(e),
            _ => Vec::new(),
        }
    }
}

fn compile_details(e: &CompileError) -> Vec<ErrorDetail> {
    let diags = e.diagnostics();
    if diags.is_empty() {
        return vec![ErrorDetail {
            code: "rego_compile_error".into(),
            message: e.to_string(),
            location: None,
        }];
    }
    diags
        .iter()
        .map(|d| ErrorDetail {
            code: d.code.clone(),
            message: d.message.clone(),
            location: d
                .location
                .as_ref()
                .map(|l| serde_json::json!({"file": l.file, "row": l.row, "col": l.col})),
        })
        .collect()
}

struct Loaded {
    info: ActiveBundle,
    modules: Vec<Module>,
    /// In the engine's values: the next compilation (another bundle, an overlay write)
    /// reuses it without parsing or copying the data again.
    data: DataDocument,
    raw: Arc<Vec<u8>>,
}

#[derive(Default)]
struct State {
    bundles: BTreeMap<String, Loaded>,
    overlay: Overlay,
    generation: u64,
}

#[derive(Default)]
struct Tracker {
    status: BundleStatus,
    /// ETag for `If-None-Match`: the last activated one (OPA resets to it after errors).
    etag: Option<String>,
    activated_once: bool,
}

struct Inner {
    cfg: SyncConfig,
    http: reqwest::Client,
    handle: PolicyHandle,
    active: ArcSwapOption<Active>,
    state: Mutex<State>,
    trackers: Mutex<BTreeMap<String, Tracker>>,
    /// Per bundle (config order): nanoseconds after `started` of the last proof; 0 = none.
    leases: Vec<AtomicU64>,
    started: Instant,
    report: watch::Sender<u64>,
    generation: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    plugins: Mutex<BTreeMap<String, PluginState>>,
}

/// `(long_polling_timeout, min_delay, max_delay)` bounded by half of `max_staleness`
/// (at least 1 s): a long poll that expires, or a periodic poll, must answer before
/// the freshness lease runs out, or the agent would go stale on every cycle.
fn lease_bounded(
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn root_segments(root: &str) -> Vec<String> {
    root.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The sync engine. Cheap to clone.
#[derive(Clone)]
pub struct Syncer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("bundles", &self.inner.cfg.bundles.len())
            .finish_non_exhaustive()
    }
}

impl Syncer {
    /// Validates the configuration. Nothing runs until [`Syncer::start`].
    pub fn new(cfg: SyncConfig) -> Result<Self, String> {
        let mut names = std::collections::BTreeSet::new();
        for b in &cfg.bundles {
            if !names.insert(b.name.clone()) {
                return Err(format!("bundle {:?} configured twice", b.name));
            }
            if b.polling.max_delay < b.polling.min_delay {
                return Err(format!(
                    "bundle {:?}: max polling delay must be >= min polling delay",
                    b.name
                ));
            }
            if matches!(b.verification, Verification::Skip) {
                tracing::warn!(
                    bundle = %b.name,
                    "signature verification is OFF for this bundle (explicit configuration): any bundle the server sends will be activated"
                );
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {}", error_chain(&e)))?;
        let trackers = cfg
            .bundles
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    Tracker {
                        status: BundleStatus::new(&b.name),
                        ..Tracker::default()
                    },
                )
            })
            .collect();
        let mut plugins = BTreeMap::new();
        if !cfg.bundles.is_empty() {
            plugins.insert("bundle".to_string(), PluginState::not_ready(None));
        }
        if cfg.status.is_some() {
            plugins.insert("status".to_string(), PluginState::ok());
        }
        let leases = cfg.bundles.iter().map(|_| AtomicU64::new(0)).collect();
        let syncer = Syncer {
            inner: Arc::new(Inner {
                http,
                handle: PolicyHandle::empty(),
                active: ArcSwapOption::empty(),
                state: Mutex::new(State::default()),
                trackers: Mutex::new(trackers),
                leases,
                started: Instant::now(),
                report: watch::channel(0).0,
                generation: watch::channel(0).0,
                shutdown: watch::channel(false).0,
                tasks: Mutex::new(Vec::new()),
                plugins: Mutex::new(plugins),
                cfg,
            }),
        };
        if syncer.inner.cfg.bundles.is_empty() {
            // REST-only mode (as OPA driven by OPAL): an empty policy is active at once.
            let mut st = lock(&syncer.inner.state);
            let overlay = st.overlay.clone();
            let policy = syncer
                .inner
                .compile_all(&st, &overlay, None)
                .map_err(|e| e.to_string())?;
            syncer.inner.publish(&mut st, policy);
            drop(st);
        }
        Ok(syncer)
    }

    /// Loads persisted bundles (verified again), then starts one download loop per
    /// bundle and the status reporter.
    pub async fn start(&self) {
        for (idx, src) in self.inner.cfg.bundles.iter().enumerate() {
            if src.persist {
                let inner = self.inner.clone();
                let _ = tokio::task::spawn_blocking(move || inner.load_persisted(idx)).await;
            }
        }
        let mut tasks = Vec::new();
        for idx in 0..self.inner.cfg.bundles.len() {
            let inner = self.inner.clone();
            let shutdown = self.inner.shutdown.subscribe();
            tasks.push(tokio::spawn(inner.run_bundle(idx, shutdown)));
        }
        if let Some(target) = self.inner.cfg.status.clone() {
            let inner = self.inner.clone();
            let rx = self.inner.report.subscribe();
            let shutdown = self.inner.shutdown.subscribe();
            tasks.push(tokio::spawn(inner.run_reporter(target, rx, shutdown)));
            self.inner.trigger_report();
        }
        lock(&self.inner.tasks).extend(tasks);
    }

    /// Stops every task this engine started and waits for them.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let tasks: Vec<_> = lock(&self.inner.tasks).drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    pub fn config(&self) -> &SyncConfig {
        &self.inner.cfg
    }

    /// The active state, if any (without the freshness check: use [`Syncer::gate`]
    /// for decisions).
    pub fn active(&self) -> Option<Arc<Active>> {
        self.inner.active.load_full()
    }

    /// The atomically swapped snapshot holder (for embedders such as the gateway).
    pub fn handle(&self) -> &PolicyHandle {
        &self.inner.handle
    }

    /// Receives the generation number after every activation or REST write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Whether a decision may be made now, and with what.
    pub fn gate(&self) -> Gate {
        self.inner.gate()
    }

    /// True once every configured bundle has activated at least once (OPA's bundle
    /// plugin readiness; never flips back).
    pub fn bundles_ready(&self) -> bool {
        let t = lock(&self.inner.trackers);
        t.values().all(|t| t.activated_once)
    }

    /// Sets a plugin state shown in status reports (e.g. `decision_logs`).
    pub fn set_plugin_state(&self, name: &str, state: PluginState) {
        lock(&self.inner.plugins).insert(name.to_string(), state);
    }

    /// The current status report (OPA's shape).
    pub fn status_report(&self) -> StatusReport {
        self.inner.status_report()
    }

    /// Bundle name -> revision of the active state.
    pub fn revisions(&self) -> BTreeMap<String, String> {
        self.active()
            .map(|a| {
                a.bundles
                    .iter()
                    .map(|(k, v)| (k.clone(), v.revision.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `PUT /v1/policies/{id}`.
    pub fn put_policy(&self, id: &str, raw: String) -> Result<(), WriteError> {
        if raw.trim().is_empty() {
            return Err(WriteError::BadRequest("empty module".into()));
        }
        let inner = &self.inner;
        // Paths as regorus parses them: the text may spell an owned path many ways.
        let policy =
            parse_policy(id, raw, &inner.cfg.compile).map_err(|e| WriteError::Compile {
                message: "error(s) occurred while compiling module(s)".into(),
                errors: compile_details(&e),
            })?;
        let mut st = lock(&inner.state);
        for claim in &policy.claims {
            if let Some(msg) = owner_of(&st, claim, false) {
                return Err(WriteError::Owned(msg));
            }
        }
        if st
            .overlay
            .policies
            .get(id)
            .is_some_and(|p| p.raw == policy.raw)
        {
            return Ok(());
        }
        let mut overlay = st.overlay.clone();
        overlay.policies.insert(id.to_string(), policy);
        inner.recompile(&mut st, overlay)
    }

    /// `DELETE /v1/policies/{id}`.
    pub fn delete_policy(&self, id: &str) -> Result<(), WriteError> {
        let inner = &self.inner;
        let mut st = lock(&inner.state);
        if !st.overlay.policies.contains_key(id) {
            return Err(WriteError::NotFound(format!(
                "storage_not_found_error: policy id {id:?}"
            )));
        }
        let mut overlay = st.overlay.clone();
        overlay.policies.remove(id);
        inner.recompile(&mut st, overlay)
    }

    /// Every module: bundle modules as `<bundle>/<path>`, then REST-written ones.
    pub fn policies(&self) -> Vec<(String, String)> {
        let st = lock(&self.inner.state);
        let mut out: Vec<(String, String)> = st
            .bundles
            .values()
            .flat_map(|l| l.modules.iter().map(|m| (m.path.clone(), m.source.clone())))
            .collect();
        out.extend(
            st.overlay
                .policies
                .iter()
                .map(|(id, p)| (id.clone(), p.raw.clone())),
        );
        out
    }

    /// `PUT/PATCH/DELETE /v1/data/{path}`.
    pub fn write_data(&self, path: &[String], op: DataWrite) -> Result<WriteOutcome, WriteError> {
        let inner = &self.inner;
        let mut st = lock(&inner.state);
        if let Some(msg) = owner_of(&st, path, true) {
            return Err(WriteError::Owned(msg));
        }
        let mut overlay = st.overlay.clone();
        match op {
            DataWrite::Put {
                value,
                if_none_match,
            } => {
                if if_none_match && crate::overlay::get(&overlay.data, path).is_some() {
                    return Ok(WriteOutcome::NotModified);
                }
                crate::overlay::put(&mut overlay.data, path, value)?;
            }
            DataWrite::Patch(ops) => crate::overlay::patch(&mut overlay.data, path, &ops)?,
            DataWrite::Delete => {
                crate::overlay::remove(&mut overlay.data, path)?;
            }
        }
        inner.recompile(&mut st, overlay)?;
        Ok(WriteOutcome::Written)
    }
}

/// Which bundle owns `path` (OPA's `checkPathScope`), as OPA's refusal message.
fn owner_of(st: &State, path: &[String], is_data: bool) -> Option<String> {
    for (name, l) in &st.bundles {
        if l.info.roots.iter().any(|r| r.is_empty()) {
            return Some(format!("all paths owned by bundle {name:?}"));
        }
    }
    if is_data && path.is_empty() && !st.bundles.is_empty() {
        return Some("can't write to document root with bundle roots configured".into());
    }
    for (name, l) in &st.bundles {
        for r in &l.info.roots {
            if segments_overlap(&root_segments(r), path) {
                return Some(format!(
                    "path {} is owned by bundle {name:?}",
                    display_path(path)
                ));
            }
        }
    }
    None
}

impl Inner {
    fn trigger_report(&self) {
        self.report.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn prove(&self, idx: usize) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Some(l) = self.leases.get(idx) {
            l.store(nanos, Ordering::Release);
        }
    }

    /// Time since the last proof for bundle `idx` (since start when none yet).
    fn lease_age(&self, idx: usize, now: Instant) -> Duration {
        let nanos = self
            .leases
            .get(idx)
            .map_or(0, |l| l.load(Ordering::Acquire));
        let proof = self.started + Duration::from_nanos(nanos);
        now.saturating_duration_since(proof)
    }

    fn last_proof_time(&self, idx: usize) -> Option<DateTime<Utc>> {
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

    fn stale_reason(&self, now: Instant) -> Option<String> {
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

    fn gate(&self) -> Gate {
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

    /// Modules and data of every bundle (`replace` standing in for its bundle) plus
    /// `overlay`, compiled and evaluated once.
    fn compile_all(
        &self,
        st: &State,
        overlay: &Overlay,
        replace: Option<(&str, &[Module], &DataDocument)>,
    ) -> Result<PolicySet, ActivationError> {
        let mut modules = Vec::new();
        let mut data = DataDocument::empty();
        for (name, l) in &st.bundles {
            if replace.is_some_and(|(n, _, _)| n == name) {
                continue;
            }
            modules.extend(l.modules.iter().cloned());
            data.merge(&l.data);
        }
        if let Some((_, m, d)) = replace {
            modules.extend(m.iter().cloned());
            data.merge(d);
        }
        for (id, p) in &overlay.policies {
            modules.push(Module {
                path: id.clone(),
                source: p.raw.clone(),
                rego_version: 1,
            });
        }
        data.merge(&DataDocument::from_json(&overlay.data)?);
        let t0 = Instant::now();
        let policy = PolicySet::compile_document(&modules, data, &self.cfg.compile)?;
        let t1 = Instant::now();
        // Evaluate every package once: a bundle that cannot produce its documents is
        // not activated. (Per package rather than all of `data`, so a large data tree
        // beside the rules is not copied into a result for nothing.)
        for package in policy.packages() {
            policy.eval_query(package, None)?;
        }
        tracing::debug!(
            compile_ms = (t1 - t0).as_secs_f64() * 1e3,
            eval_ms = t1.elapsed().as_secs_f64() * 1e3,
            "policy compiled and evaluated"
        );
        Ok(policy)
    }

    /// Swaps in a new active state (caller holds the state lock).
    fn publish(&self, st: &mut State, policy: PolicySet) {
        st.generation = st.generation.wrapping_add(1);
        let revision = match st.bundles.len() {
            0 => String::new(),
            1 => st
                .bundles
                .values()
                .next()
                .map(|l| l.info.revision.clone())
                .unwrap_or_default(),
            _ => st
                .bundles
                .iter()
                .map(|(n, l)| format!("{n}={}", l.info.revision))
                .collect::<Vec<_>>()
                .join(","),
        };
        self.handle
            .swap(Snapshot::new(revision.clone(), policy.clone()));
        let snapshot = self
            .handle
            .load()
            .unwrap_or_else(|| Arc::new(Snapshot::new(revision, policy)));
        let bundles = st
            .bundles
            .iter()
            .map(|(k, l)| (k.clone(), l.info.clone()))
            .collect();
        self.active.store(Some(Arc::new(Active {
            snapshot,
            bundles,
            generation: st.generation,
        })));
        let g = st.generation;
        self.generation.send_replace(g);
    }

    fn recompile(&self, st: &mut State, overlay: Overlay) -> Result<(), WriteError> {
        let policy = self.compile_all(st, &overlay, None).map_err(|e| match e {
            ActivationError::Compile(c) => WriteError::Compile {
                message: "error(s) occurred while compiling module(s)".into(),
                errors: compile_details(&c),
            },
            other => WriteError::Compile {
                message: other.to_string(),
                errors: Vec::new(),
            },
        })?;
        st.overlay = overlay;
        self.publish(st, policy);
        Ok(())
    }

    /// Read → verify → rollback check → compile → evaluate → swap.
    fn activate(
        &self,
        idx: usize,
        raw: Arc<Vec<u8>>,
        etag: Option<String>,
        from_disk: bool,
    ) -> Result<ActiveBundle, ActivationError> {
        let Some(src) = self.cfg.bundles.get(idx) else {
            return Err(ActivationError::Roots("unknown bundle".into()));
        };
        let name = src.name.as_str();
        let opts = ReadOptions {
            limits: self.cfg.limits,
            verification: match &src.verification {
                Verification::Required(v) => Some(v.clone()),
                Verification::Skip => None,
            },
            skip_verify: matches!(src.verification, Verification::Skip),
            // data.json files stay bytes until they are parsed, once, into engine values
            // (no serde_json tree: about 8x the JSON's size).
            lazy_data: true,
            ..ReadOptions::default()
        };
        let t0 = Instant::now();
        let bundle = read_tar_gz(raw.as_slice(), &opts)?;
        tracing::debug!(
            bundle = %name,
            read_ms = t0.elapsed().as_secs_f64() * 1e3,
            "bundle read and verified"
        );
        if matches!(src.verification, Verification::Required(_))
            && bundle.verified_signature.is_none()
        {
            return Err(ActivationError::Unsigned);
        }
        if bundle.is_delta() {
            return Err(ActivationError::Delta);
        }
        let t1 = Instant::now();
        let data = DataDocument::from_bundle(&bundle)?;
        tracing::debug!(
            bundle = %name,
            data_ms = t1.elapsed().as_secs_f64() * 1e3,
            "bundle data parsed"
        );
        let issued_at = bundle.verified_signature.as_ref().and_then(|s| s.issued_at);
        let roots = bundle.manifest.effective_roots();
        let modules: Vec<Module> = bundle
            .modules
            .iter()
            .map(|m| Module {
                path: format!("{name}/{}", m.path),
                ..m.clone()
            })
            .collect();
        let mut st = lock(&self.state);
        if let Some(cur) = st.bundles.get(name)
            && let (Some(old), Some(new)) = (cur.info.issued_at, issued_at)
            && new < old
        {
            return Err(ActivationError::Rollback {
                new,
                old,
                active_revision: cur.info.revision.clone(),
            });
        }
        for (other, l) in &st.bundles {
            if other == name {
                continue;
            }
            for a in &roots {
                for b in &l.info.roots {
                    if lockstep_bundle::roots::root_paths_overlap(a, b) {
                        return Err(ActivationError::Roots(format!("[{name}/{a} {other}/{b}]")));
                    }
                }
            }
        }
        let mut overlay = st.overlay.clone();
        for r in &roots {
            overlay.erase_root(&root_segments(r));
        }
        let policy = self.compile_all(&st, &overlay, Some((name, &modules, &data)))?;
        let info = ActiveBundle {
            name: name.to_string(),
            revision: bundle.manifest.revision.clone(),
            roots,
            etag,
            issued_at,
            activated_at: Utc::now(),
            from_disk,
        };
        st.overlay = overlay;
        let previous = st.bundles.insert(
            name.to_string(),
            Loaded {
                info: info.clone(),
                modules,
                data,
                raw,
            },
        );
        self.publish(&mut st, policy);
        drop(st);
        // Freeing the previous revision's data (seconds for 100 MB) happens after the
        // swap, outside the lock and on its own thread, so it delays neither readers nor
        // the status update that follows this activation.
        if let Some(previous) = previous {
            let freed = std::thread::Builder::new()
                .name("lockstep-free".into())
                .spawn(move || drop(previous));
            if let Err(e) = freed {
                tracing::debug!(error = %e, "freeing the previous revision in place");
            }
        }
        Ok(info)
    }

    fn load_persisted(&self, idx: usize) {
        let Some(src) = self.cfg.bundles.get(idx) else {
            return;
        };
        let (bytes, meta) = match persist::load(&self.cfg.persistence_dir, &src.name) {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(bundle = %src.name, error = %e, "cannot read persisted bundle");
                return;
            }
        };
        let size = bytes.len() as u64;
        match self.activate(idx, Arc::new(bytes), meta.etag.clone(), true) {
            Ok(info) => {
                // The ETag is trusted only if it was saved with this very revision.
                let etag = meta.etag.filter(|_| meta.revision == info.revision);
                tracing::info!(bundle = %src.name, revision = %info.revision, "activated persisted bundle");
                let mut t = lock(&self.trackers);
                if let Some(t) = t.get_mut(&src.name) {
                    t.etag = etag;
                    t.activated_once = true;
                    t.status.active_revision = info.revision.clone();
                    t.status.last_successful_activation = Some(info.activated_at);
                    t.status.kind = "snapshot".into();
                    t.status.size = Some(size);
                }
                drop(t);
                self.update_bundle_plugin();
            }
            Err(e) => {
                tracing::error!(bundle = %src.name, error = %e, "persisted bundle refused");
                let mut t = lock(&self.trackers);
                if let Some(t) = t.get_mut(&src.name) {
                    t.status.set_error(
                        "bundle_error",
                        format!("persisted bundle: {e}"),
                        None,
                        e.details(),
                    );
                }
            }
        }
    }

    fn update_bundle_plugin(&self) {
        let ready = lock(&self.trackers).values().all(|t| t.activated_once);
        if ready {
            lock(&self.plugins).insert("bundle".into(), PluginState::ok());
        }
    }

    async fn run_bundle(self: Arc<Self>, idx: usize, mut shutdown: watch::Receiver<bool>) {
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
            let etag = lock(&self.trackers)
                .get(&src.name)
                .and_then(|t| t.etag.clone());
            let wait = if long_poll { long_poll_timeout } else { None };
            let began = Instant::now();
            if let Some(t) = lock(&self.trackers).get_mut(&src.name) {
                t.status.last_request = Some(Utc::now());
            }
            let res = tokio::select! {
                _ = shutdown.changed() => break,
                r = fetch(&self.http, &src.service, &url, etag.as_deref(), wait, max_bytes) => r,
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
                }) => {
                    if src.polling.long_polling_timeout.is_some() {
                        if long_poll && !long_poll_content_type {
                            tracing::info!(bundle = %src.name, "server did not answer with the bundle content type: falling back to periodic polling");
                        }
                        long_poll = long_poll_content_type;
                    }
                    self.on_bundle(idx, &src, bytes, resp_etag, request_ns)
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

    fn on_not_modified(
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
        let current = sent.is_some() && sent == active_etag;
        if current {
            self.prove(idx);
        }
        let mut t = lock(&self.trackers);
        if let Some(t) = t.get_mut(name) {
            t.status.last_successful_request = Some(Utc::now());
            if current {
                t.status.clear_error();
            } else if let Some(e) = resp_etag {
                tracing::debug!(bundle = %name, etag = %e, "304 for an ETag that is not the active one");
            }
        }
    }

    async fn on_bundle(
        self: &Arc<Self>,
        idx: usize,
        src: &crate::config::BundleSource,
        bytes: Vec<u8>,
        etag: Option<String>,
        request_ns: u128,
    ) -> bool {
        let now = Utc::now();
        let size = bytes.len() as u64;
        {
            let mut t = lock(&self.trackers);
            if let Some(t) = t.get_mut(&src.name) {
                t.status.last_successful_request = Some(now);
                t.status.last_successful_download = Some(now);
                t.status.size = Some(size);
                t.status.kind = "snapshot".into();
                t.status.metrics.insert(
                    "timer_bundle_request_ns".into(),
                    Json::from(u64::try_from(request_ns).unwrap_or(u64::MAX)),
                );
            }
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
            let mut t = lock(&self.trackers);
            if let Some(t) = t.get_mut(&src.name) {
                t.status.clear_error();
                t.etag = etag;
            }
            return true;
        }
        let raw = Arc::new(bytes);
        let inner = self.clone();
        let raw2 = raw.clone();
        let etag2 = etag.clone();
        let began = Instant::now();
        let result =
            tokio::task::spawn_blocking(move || inner.activate(idx, raw2, etag2, false)).await;
        let activate_ns = began.elapsed().as_nanos();
        match result {
            Ok(Ok(info)) => {
                self.prove(idx);
                tracing::info!(bundle = %src.name, revision = %info.revision, "bundle activated");
                {
                    let mut t = lock(&self.trackers);
                    if let Some(t) = t.get_mut(&src.name) {
                        t.etag = etag.clone();
                        t.activated_once = true;
                        t.status.clear_error();
                        t.status.active_revision = info.revision.clone();
                        t.status.last_successful_activation = Some(info.activated_at);
                        t.status.metrics.insert(
                            "timer_rego_load_bundles_ns".into(),
                            Json::from(u64::try_from(activate_ns).unwrap_or(u64::MAX)),
                        );
                    }
                }
                self.update_bundle_plugin();
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
            Ok(Err(e)) => {
                tracing::error!(bundle = %src.name, error = %e, "bundle refused; the active revision stays in place");
                let mut t = lock(&self.trackers);
                if let Some(t) = t.get_mut(&src.name) {
                    let (msg, details) = match &e {
                        ActivationError::Compile(_) => (
                            "error(s) occurred while compiling module(s)".to_string(),
                            e.details(),
                        ),
                        _ => (e.to_string(), Vec::new()),
                    };
                    t.status.set_error("bundle_error", msg, None, details);
                }
                false
            }
            Err(e) => {
                let mut t = lock(&self.trackers);
                if let Some(t) = t.get_mut(&src.name) {
                    t.status.set_error(
                        "bundle_error",
                        format!("activation task: {e}"),
                        None,
                        Vec::new(),
                    );
                }
                false
            }
        }
    }

    fn on_fetch_error(&self, name: &str, e: &FetchError) {
        tracing::warn!(bundle = %name, error = %e, "bundle download failed");
        let mut t = lock(&self.trackers);
        if let Some(t) = t.get_mut(name) {
            t.status
                .set_error("bundle_error", e.to_string(), e.http_code(), Vec::new());
        }
    }

    fn status_report(&self) -> StatusReport {
        let now = Instant::now();
        let active = self.active.load_full();
        let mut bundles = BTreeMap::new();
        {
            let t = lock(&self.trackers);
            for (idx, b) in self.cfg.bundles.iter().enumerate() {
                let mut s = t
                    .get(&b.name)
                    .map(|t| t.status.clone())
                    .unwrap_or_else(|| BundleStatus::new(&b.name));
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

    async fn run_reporter(
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
