//! The in-memory view of every bundle's active revision, one `watch` channel per bundle,
//! kept up to date from the store: by this replica's own publishes (at once) and by a
//! watcher task that reads each bundle's `current.json` conditionally (other replicas'
//! publishes, within one watch interval).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::fleet::Fleet;
use crate::longpoll::BUNDLE_CONTENT_TYPE;
use crate::model::BundleState;
use crate::store::{PointerRead, Store, StoreResult};

/// The revision a bundle's clients should have, with its bytes.
#[derive(Debug)]
pub struct Active {
    /// Content id (SHA-256 hex).
    pub id: String,
    /// `"<id>"`, the strong ETag.
    pub etag: String,
    /// Manifest revision.
    pub revision: String,
    pub bytes: Bytes,
    pub seq: u64,
    pub active_since: DateTime<Utc>,
    /// The response headers every download of this revision carries, built once: a
    /// publication answers every held long poll at the same moment.
    pub headers: HeaderMap,
}

impl Active {
    fn download_headers(
        etag: &str,
        revision: &str,
        activate_at: Option<DateTime<Utc>>,
    ) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(5);
        if let Some(at) = activate_at
            && let Ok(v) = HeaderValue::from_str(&at.timestamp_millis().to_string())
        {
            h.insert(lockstep_bundle::protocol::ACTIVATE_AT_HEADER, v);
        }
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(BUNDLE_CONTENT_TYPE),
        );
        if let Ok(v) = HeaderValue::from_str(etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(revision) {
            h.insert("x-lockstep-revision", v);
        }
        h
    }
}

/// One bundle.
#[derive(Debug)]
pub struct Slot {
    tx: watch::Sender<Option<Arc<Active>>>,
    state: Mutex<Option<BundleState>>,
    pointer_etag: Mutex<Option<String>>,
    /// Serialises this replica's publishes and rollbacks of the bundle.
    pub publish_lock: tokio::sync::Mutex<()>,
    /// The last state whose bytes failed the read-back check (not tried again).
    rejected_seq: std::sync::atomic::AtomicU64,
}

impl Slot {
    fn new() -> Self {
        Slot {
            tx: watch::channel(None).0,
            state: Mutex::new(None),
            pointer_etag: Mutex::new(None),
            publish_lock: tokio::sync::Mutex::new(()),
            rejected_seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Active>>> {
        self.tx.subscribe()
    }

    pub fn active(&self) -> Option<Arc<Active>> {
        self.tx.borrow().clone()
    }

    /// The newest state this replica knows.
    pub fn state(&self) -> Option<BundleState> {
        self.state.lock().ok().and_then(|s| s.clone())
    }

    fn seq(&self) -> u64 {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.seq))
            .unwrap_or(0)
    }
}

/// What bytes read back from the store must pass before they are served (security
/// review finding 11): the store is shared with other replicas and whoever else can
/// write it, so its bytes are checked as a publication is.
#[derive(Debug, Clone)]
pub struct ReadBackCheck {
    pub verification: crate::config::Verifications,
    pub allow_unsigned: bool,
    pub max_bundle_bytes: usize,
}

/// Every bundle this replica serves.
#[derive(Debug)]
pub struct Hub {
    pub store: Store,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    fleet: Arc<Fleet>,
    read_back: Option<ReadBackCheck>,
}

impl Hub {
    pub fn new(store: Store, fleet: Arc<Fleet>) -> Self {
        Hub {
            store,
            slots: RwLock::new(BTreeMap::new()),
            fleet,
            read_back: None,
        }
    }

    /// Checks every bundle read back from the store before serving it.
    pub fn with_read_back_check(mut self, check: ReadBackCheck) -> Self {
        self.read_back = Some(check);
        self
    }

    /// Whether `bytes` read from the store may be served as `state`'s active revision:
    /// they hash to its content id and verify as a publication would.
    async fn check_read_back(
        &self,
        state: &BundleState,
        bytes: &Bytes,
    ) -> Result<(), ReadBackError> {
        let Some(check) = self.read_back.clone() else {
            return Ok(());
        };
        use sha2::{Digest, Sha256};
        let id = hex::encode(Sha256::digest(bytes));
        if id != state.active {
            return Err(ReadBackError::Hash {
                got: id,
                want: state.active.clone(),
            });
        }
        let bytes = bytes.clone();
        let name = state.name.clone();
        tokio::task::spawn_blocking(move || {
            let opts = lockstep_bundle::ReadOptions {
                limits: lockstep_bundle::Limits {
                    max_compressed_bytes: check.max_bundle_bytes as u64,
                    ..lockstep_bundle::Limits::default()
                },
                verification: check.verification.for_bundle(&name),
                lazy_data: true,
                ..lockstep_bundle::ReadOptions::default()
            };
            let b = lockstep_bundle::read_tar_gz(&bytes[..], &opts)?;
            if b.verified_signature.is_none() && !check.allow_unsigned {
                return Err(ReadBackError::Unsigned);
            }
            Ok(())
        })
        .await
        .map_err(|e| ReadBackError::Task(e.to_string()))?
    }

    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.read().ok().and_then(|m| m.get(name).cloned())
    }

    pub fn slot_or_create(&self, name: &str) -> Arc<Slot> {
        if let Some(s) = self.slot(name) {
            return s;
        }
        match self.slots.write() {
            Ok(mut m) => m
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(Slot::new()))
                .clone(),
            Err(_) => Arc::new(Slot::new()),
        }
    }

    /// Names of the bundles with a known state.
    pub fn names(&self) -> Vec<String> {
        self.slots
            .read()
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| s.seq() > 0)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The slot of a published bundle, loading it from the store on first use.
    pub async fn get_or_load(&self, name: &str) -> StoreResult<Option<Arc<Slot>>> {
        if let Some(s) = self.slot(name)
            && s.seq() > 0
        {
            return Ok(Some(s));
        }
        match self.store.latest_state(name).await? {
            Some(state) => {
                self.apply(state).await?;
                Ok(self.slot(name))
            }
            None => Ok(None),
        }
    }

    /// Makes `state` current if it is newer than what this replica has, and wakes waiters
    /// when the active revision changed.
    pub async fn apply(&self, state: BundleState) -> StoreResult<()> {
        self.apply_with(state, None).await
    }

    /// [`Self::apply`] with the active revision's bytes when the caller has them (its own
    /// publish), so waking the long polls does not wait for a read of what was just written.
    pub async fn apply_with(&self, state: BundleState, known: Option<Bytes>) -> StoreResult<()> {
        let slot = self.slot_or_create(&state.name);
        if slot.seq() >= state.seq {
            return Ok(());
        }
        let rejected = &slot.rejected_seq;
        if rejected.load(std::sync::atomic::Ordering::Relaxed) == state.seq {
            return Ok(());
        }
        let current = slot.active();
        let bytes = match (&current, known) {
            (Some(a), _) if a.id == state.active => a.bytes.clone(),
            (_, Some(b)) => b,
            _ => {
                let bytes = self.store.get_blob(&state.name, &state.active).await?;
                if let Err(why) = self.check_read_back(&state, &bytes).await {
                    tracing::error!(
                        bundle = %state.name,
                        seq = state.seq,
                        id = %state.active,
                        error = %why,
                        "bundle read back from the store failed verification: not served"
                    );
                    rejected.store(state.seq, std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
                bytes
            }
        };
        let record = state.active_record().cloned();
        let etag = format!("\"{}\"", state.active);
        let revision = record
            .as_ref()
            .map(|r| r.revision.clone())
            .unwrap_or_default();
        let active = Arc::new(Active {
            id: state.active.clone(),
            headers: Active::download_headers(&etag, &revision, state.activate_at()),
            etag,
            revision,
            bytes,
            seq: state.seq,
            active_since: state.active_since,
        });
        {
            // State and channel change together under the lock, so a concurrent apply of
            // an older state can never publish its bundle after a newer one.
            let Ok(mut guard) = slot.state.lock() else {
                return Ok(());
            };
            if guard.as_ref().is_some_and(|s| s.seq >= state.seq) {
                return Ok(());
            }
            *guard = Some(state.clone());
            let changed = slot
                .tx
                .borrow()
                .as_ref()
                .is_none_or(|a| a.id != state.active);
            if changed {
                tracing::info!(bundle = %state.name, revision = %active.revision, seq = state.seq, "active revision changed");
                slot.tx.send_replace(Some(active.clone()));
            } else {
                // Same bytes: update the record without waking anyone.
                slot.tx.send_if_modified(|v| {
                    *v = Some(active.clone());
                    false
                });
            }
        }
        if let Some(last) = state.history.first() {
            self.fleet
                .on_activation(&state.name, &active.revision, last);
        }
        Ok(())
    }

    /// Looks at one bundle's pointer and applies a newer state, if any.
    pub async fn refresh(&self, name: &str) -> StoreResult<()> {
        let Some(slot) = self.slot(name) else {
            return Ok(());
        };
        let etag = slot.pointer_etag.lock().ok().and_then(|e| e.clone());
        match self.store.read_pointer(name, etag.as_deref()).await? {
            PointerRead::NotModified | PointerRead::Missing => Ok(()),
            PointerRead::Found { seq, etag } => {
                let from = seq.max(slot.seq());
                if let Some(state) = self.store.latest_state_from(name, from).await? {
                    self.apply(state).await?;
                }
                if let Ok(mut e) = slot.pointer_etag.lock() {
                    *e = etag;
                }
                Ok(())
            }
        }
    }

    /// Loads every bundle in the store.
    pub async fn load_all(&self) -> StoreResult<()> {
        for name in self.store.list_bundles().await? {
            self.get_or_load(&name).await?;
        }
        Ok(())
    }

    /// The watcher: every `interval`, refresh each bundle; every 5 intervals, look for
    /// bundles published for the first time through another replica.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            n = n.wrapping_add(1);
            if n.is_multiple_of(5)
                && let Err(e) = self.load_all().await
            {
                tracing::warn!(error = %e, "listing bundles in the store");
            }
            let names: Vec<String> = self
                .slots
                .read()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for name in names {
                if let Err(e) = self.refresh(&name).await {
                    tracing::warn!(bundle = %name, error = %e, "watching the store");
                }
            }
        }
    }
}

/// Why bytes read back from the store are not served.
#[derive(Debug, thiserror::Error)]
enum ReadBackError {
    #[error("stored bytes hash to {got}, not to the content id {want}")]
    Hash { got: String, want: String },
    #[error(transparent)]
    Bundle(#[from] lockstep_bundle::BundleError),
    #[error("not signed, and publish.allow_unsigned is false")]
    Unsigned,
    #[error("verification task failed: {0}")]
    Task(String),
}
