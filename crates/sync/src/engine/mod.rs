//! The sync engine: per-bundle download loops ([`polling`]), activation
//! ([`activation`]), the freshness lease ([`lease`]), the REST overlay ([`writes`]) and
//! status reports ([`report`]), over one shared [`Inner`].
//!
//! Locks (in `Inner`), in the only order they may be nested: `state` → `trackers` →
//! `plugins`; `tasks` is never held with another. `active` is an `ArcSwapOption` read
//! without locking. Nothing awaits while holding any of them.

mod activation;
mod lease;
mod polling;
mod report;
mod types;
mod writes;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use lockstep_bundle::Module;
use lockstep_policy::{DataDocument, PolicyHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use types::{Active, ActiveBundle, DataWrite, Gate, StartError, WriteError, WriteOutcome};

use crate::config::{SyncConfig, Verification};
use crate::download::error_chain;
use crate::overlay::Overlay;
use crate::status::{BundleStatus, PluginState, StatusReport};

struct Loaded {
    info: ActiveBundle,
    modules: Vec<Module>,
    /// In the engine's values: the next compilation (another bundle, an overlay write)
    /// reuses it without parsing or copying the data again.
    data: DataDocument,
    raw: Arc<Vec<u8>>,
    /// Order of arrival ([`activation::Prepared`]): never replaced by an earlier one.
    arrival: u64,
}

/// A prepared revision waiting for its announced activation instant.
#[derive(Debug, Clone)]
struct Pending {
    /// Which switch timer may swap it in (a newer revision takes the pending place).
    token: u64,
    etag: Option<String>,
    revision: String,
}

#[derive(Default)]
struct State {
    bundles: BTreeMap<String, Loaded>,
    overlay: Overlay,
    generation: u64,
    /// Per bundle: the oldest signed issue time still accepted (rollback protection
    /// beyond the active bundle: remembered across restarts, `lockstep.min_issued_at`).
    floors: BTreeMap<String, Floor>,
}

/// The oldest `iat` a bundle may carry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Floor {
    issued_at: i64,
    /// For refusal messages: "the newest bundle accepted before (revision ..)" or
    /// "lockstep.min_issued_at".
    source: String,
}

/// A bundle refused as a rollback: the bundle server answered, with a bundle signed
/// before the one this agent holds. Requests then carry its ETag, so the server's 304
/// (or the same bytes again) keep confirming freshness for the revision held.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused {
    etag: Option<String>,
    revision: String,
    issued_at: i64,
    /// Length and FNV-1a hash of the refused bytes (a server without ETags sends them
    /// again on every poll; they are not verified again).
    fingerprint: (usize, u64),
}

fn fingerprint(bytes: &[u8]) -> (usize, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (bytes.len(), h)
}

#[derive(Default)]
struct Tracker {
    status: BundleStatus,
    /// ETag for `If-None-Match`: the last activated one (OPA resets to it after errors).
    etag: Option<String>,
    activated_once: bool,
    /// The server serves a bundle older than the one held (see [`Refused`]).
    refused: Option<Refused>,
    /// Prepared, waiting for its activation instant.
    pending: Option<Pending>,
    /// The latest announced cut-over, for status reports.
    cutover: Option<crate::status::Cutover>,
}

struct Inner {
    cfg: SyncConfig,
    http: reqwest::Client,
    handle: PolicyHandle,
    /// What decisions read: swapped whole, never locked.
    active: ArcSwapOption<Active>,
    /// Lock order 1: bundles and overlay; held across a compilation, so writers and
    /// activations are serialised (decisions never take it).
    state: Mutex<State>,
    /// Lock order 2: per-bundle download status; may be taken while `state` is held,
    /// never the other way round.
    trackers: Mutex<BTreeMap<String, Tracker>>,
    /// Per bundle (config order): nanoseconds after `started` of the last proof; 0 = none.
    leases: Vec<AtomicU64>,
    started: Instant,
    report: watch::Sender<u64>,
    generation: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    /// Held alone (start and shutdown only).
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Lock order 3 (a leaf): plugin states for status reports.
    plugins: Mutex<BTreeMap<String, PluginState>>,
    /// The bundle server's clock, from its answers (a leaf lock of its own).
    clock: crate::clock::ServerClock,
    /// Bundles received so far (their arrival order).
    arrivals: AtomicU64,
    /// Switch timers started so far.
    switches: AtomicU64,
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
    pub fn new(cfg: SyncConfig) -> Result<Self, StartError> {
        let mut names = std::collections::BTreeSet::new();
        for b in &cfg.bundles {
            if !names.insert(b.name.clone()) {
                return Err(StartError::DuplicateBundle(b.name.clone()));
            }
            if b.polling.max_delay < b.polling.min_delay {
                return Err(StartError::PollingDelays(b.name.clone()));
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
            .map_err(|e| StartError::HttpClient(error_chain(&e)))?;
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
        for s in cfg.services_sending_tokens_in_clear() {
            tracing::warn!(service = %s, "this service sends a bearer token over plain http:// to a host that is not loopback: anyone on the path can read it (use https://)");
        }
        let floors = load_floors(&cfg);
        let syncer = Syncer {
            inner: Arc::new(Inner {
                http,
                handle: PolicyHandle::empty(),
                active: ArcSwapOption::empty(),
                state: Mutex::new(State {
                    floors,
                    ..State::default()
                }),
                trackers: Mutex::new(trackers),
                leases,
                started: Instant::now(),
                report: watch::channel(0).0,
                generation: watch::channel(0).0,
                shutdown: watch::channel(false).0,
                tasks: Mutex::new(Vec::new()),
                plugins: Mutex::new(plugins),
                clock: crate::clock::ServerClock::default(),
                arrivals: AtomicU64::new(0),
                switches: AtomicU64::new(0),
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
                .map_err(|e| StartError::EmptyPolicy(e.to_string()))?;
            drop(syncer.inner.install(&mut st, policy));
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
}

/// Each bundle's floor: the newest `iat` remembered in the persistence directory, or
/// `lockstep.min_issued_at` when that is newer.
fn load_floors(cfg: &SyncConfig) -> BTreeMap<String, Floor> {
    let mut floors = BTreeMap::new();
    for b in &cfg.bundles {
        let remembered = match crate::persist::load_newest_iat(&cfg.persistence_dir, &b.name) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    bundle = %b.name,
                    path = %crate::persist::newest_iat_path(&cfg.persistence_dir, &b.name).display(),
                    error = %e,
                    "cannot read the newest accepted issue time: rollback protection starts from the first bundle activated"
                );
                None
            }
        };
        let configured = cfg.min_issued_at.get(&b.name).map(|iat| Floor {
            issued_at: *iat,
            source: "lockstep.min_issued_at".into(),
        });
        let remembered = remembered.map(|r| Floor {
            issued_at: r.issued_at,
            source: format!(
                "the newest bundle this agent accepted before (revision {:?})",
                r.revision
            ),
        });
        let floor = match (configured, remembered) {
            (Some(c), Some(r)) => Some(if r.issued_at > c.issued_at { r } else { c }),
            (c, r) => c.or(r),
        };
        if let Some(f) = floor {
            floors.insert(b.name.clone(), f);
        }
    }
    floors
}

impl Inner {
    /// Runs `f` on the tracker of bundle `name` under the trackers lock (nothing for a
    /// name that is not configured).
    fn with_tracker<R>(&self, name: &str, f: impl FnOnce(&mut Tracker) -> R) -> Option<R> {
        lock(&self.trackers).get_mut(name).map(f)
    }

    pub(super) fn trigger_report(&self) {
        self.report.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub(super) fn update_bundle_plugin(&self) {
        let ready = lock(&self.trackers).values().all(|t| t.activated_once);
        if ready {
            lock(&self.plugins).insert("bundle".into(), PluginState::ok());
        }
    }
}
