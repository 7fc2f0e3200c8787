//! Activation: read → verify → rollback check → compile with the other bundles and
//! the overlay → evaluate once → install the new active state atomically. Also the
//! persisted bundle loaded at start.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use lockstep_bundle::{Module, ReadOptions, read_tar_gz};
use lockstep_policy::{DataDocument, PolicySet, Snapshot};

use super::types::{ActivationError, Active, ActiveBundle};
use super::{Inner, Loaded, State, lock, root_segments};
use crate::config::Verification;
use crate::overlay::Overlay;
use crate::persist;

/// A verified, compiled revision that is not active yet: it waits for its announced
/// activation instant, or is swapped in at once.
pub(super) struct Prepared {
    info: ActiveBundle,
    modules: Vec<Module>,
    data: DataDocument,
    raw: Arc<Vec<u8>>,
    /// The overlay with this bundle's roots erased, as the policy was compiled with.
    overlay: Overlay,
    policy: PolicySet,
    /// `State::generation` it was compiled against.
    base_generation: u64,
    /// Order of arrival among every bundle this engine received.
    arrival: u64,
}

impl Prepared {
    pub(super) fn info(&self) -> &ActiveBundle {
        &self.info
    }
}

/// What a swap replaced: the previous revision's bundle, and the compiled policy the
/// readers held (its engine owns a copy of the data, as large as the bundle's).
/// Dropping it is the cost of freeing a revision.
pub(super) struct Retired {
    pub(super) bundle: Option<Loaded>,
    #[expect(dead_code, reason = "held to be dropped where the caller chooses")]
    snapshot: Option<Arc<Snapshot>>,
    #[expect(dead_code, reason = "held to be dropped where the caller chooses")]
    active: Option<Arc<Active>>,
}

/// Drops `previous` on the process's freeing thread once `after` has passed. One
/// long-lived thread rather than one per swap: spawning a thread cost about 0.1 ms at
/// the instant of a cut-over, when every instance of a machine swaps at once.
pub(super) fn free_later(previous: Retired, after: Duration) {
    type Queue = std::sync::mpsc::Sender<(Instant, Retired)>;
    static FREER: std::sync::OnceLock<Option<Queue>> = std::sync::OnceLock::new();
    let queue = FREER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, Retired)>();
        std::thread::Builder::new()
            .name("lockstep-free".into())
            .spawn(move || {
                for (at, item) in rx {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    drop(item);
                }
            })
            .map_err(
                |e| tracing::debug!(error = %e, "no freeing thread: revisions are freed in place"),
            )
            .ok()
            .map(|_| tx)
    });
    match queue {
        Some(q) => {
            if let Err(std::sync::mpsc::SendError((_, item))) =
                q.send((Instant::now() + after, previous))
            {
                drop(item);
            }
        }
        None => drop(previous),
    }
}

/// Refuses `info` if it was signed before the active revision of its bundle or before
/// the bundle's floor (rollback protection).
fn check_rollback(st: &State, info: &ActiveBundle) -> Result<(), ActivationError> {
    let name = info.name.as_str();
    if let Some(cur) = st.bundles.get(name)
        && let (Some(old), Some(new)) = (cur.info.issued_at, info.issued_at)
        && new < old
    {
        return Err(ActivationError::Rollback {
            revision: info.revision.clone(),
            new,
            old,
            against: format!("the active revision {:?}", cur.info.revision),
        });
    }
    if let (Some(floor), Some(new)) = (st.floors.get(name), info.issued_at)
        && new < floor.issued_at
    {
        return Err(ActivationError::Rollback {
            revision: info.revision.clone(),
            new,
            old: floor.issued_at,
            against: floor.source.clone(),
        });
    }
    Ok(())
}

/// `overlay` without what lies under `roots` (a bundle owns its roots).
fn overlay_without(overlay: &Overlay, roots: &[String]) -> Overlay {
    let mut overlay = overlay.clone();
    for r in roots {
        overlay.erase_root(&root_segments(r));
    }
    overlay
}

impl Inner {
    /// Modules and data of every bundle (`replace` standing in for its bundle) plus
    /// `overlay`, compiled and evaluated once.
    pub(super) fn compile_all(
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
        // The active set's modules, when these are the same, are not compiled again.
        let policy = match self.active.load().as_ref() {
            Some(active) => PolicySet::compile_document_after(
                &active.snapshot.policy,
                &modules,
                data,
                &self.cfg.compile,
            )?,
            None => PolicySet::compile_document(&modules, data, &self.cfg.compile)?,
        };
        let t1 = Instant::now();
        // Evaluate every package once: a bundle that cannot produce its documents is
        // not activated. (Per package rather than all of `data`, so a large data tree
        // beside the rules is not copied into a result for nothing; test packages are
        // left to `lockstep test`: evaluating them runs the tests.)
        for package in policy.packages_outside_tests() {
            policy.eval_query(package, None)?;
        }
        tracing::debug!(
            compile_ms = (t1 - t0).as_secs_f64() * 1e3,
            eval_ms = t1.elapsed().as_secs_f64() * 1e3,
            "policy compiled and evaluated"
        );
        Ok(policy)
    }

    /// Swaps in a new active state (caller holds the state lock). Returns what it
    /// replaced, for the caller to free where it does no harm.
    #[must_use = "dropping the retired revision frees it here, in the swap's thread"]
    pub(super) fn install(&self, st: &mut State, policy: PolicySet) -> Retired {
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
        let old_snapshot = self
            .handle
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
        let old_active = self.active.swap(Some(Arc::new(Active {
            snapshot,
            bundles,
            generation: st.generation,
        })));
        let g = st.generation;
        self.generation.send_replace(g);
        Retired {
            bundle: None,
            snapshot: old_snapshot,
            active: old_active,
        }
    }

    /// Read → verify → rollback check → compile → evaluate → swap.
    pub(super) fn activate(
        &self,
        idx: usize,
        raw: Arc<Vec<u8>>,
        etag: Option<String>,
        from_disk: bool,
    ) -> Result<ActiveBundle, ActivationError> {
        let prepared = self.prepare(idx, raw, etag, from_disk)?;
        self.commit(prepared, Duration::ZERO)
    }

    /// Everything of an activation but the swap: read, verify, rollback check, data into
    /// engine values, compile with the other bundles and the overlay, evaluate once.
    /// The result can wait for its activation instant ([`Inner::commit`]).
    pub(super) fn prepare(
        &self,
        idx: usize,
        raw: Arc<Vec<u8>>,
        etag: Option<String>,
        from_disk: bool,
    ) -> Result<Prepared, ActivationError> {
        let Some(src) = self.cfg.bundles.get(idx) else {
            return Err(ActivationError::Roots("unknown bundle".into()));
        };
        let name = src.name.as_str();
        let arrival = self.arrivals.fetch_add(1, Ordering::Relaxed) + 1;
        let mut limits = self.cfg.limits;
        if let Some(per_file) = src.size_limit_bytes {
            limits.max_file_bytes = per_file;
        }
        let opts = ReadOptions {
            limits,
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
            return Err(if src.persist {
                ActivationError::DeltaPersist
            } else {
                ActivationError::Delta
            });
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
        let info = ActiveBundle {
            name: name.to_string(),
            revision: bundle.manifest.revision.clone(),
            roots,
            etag,
            issued_at,
            activated_at: Utc::now(),
            from_disk,
        };
        let st = lock(&self.state);
        check_rollback(&st, &info)?;
        for (other, l) in &st.bundles {
            if other == name {
                continue;
            }
            for a in &info.roots {
                for b in &l.info.roots {
                    if lockstep_bundle::roots::root_paths_overlap(a, b) {
                        return Err(ActivationError::Roots(format!("[{name}/{a} {other}/{b}]")));
                    }
                }
            }
        }
        let overlay = overlay_without(&st.overlay, &info.roots);
        let policy = self.compile_all(&st, &overlay, Some((name, &modules, &data)))?;
        // Warm up what the active revision's decisions made lazily (memo analyses,
        // bytecode VMs), so the swap does not leave that to the first requests.
        if let Some(active) = self.active.load().as_ref() {
            policy.warm(&active.snapshot.policy.entrypoints_used());
        }
        Ok(Prepared {
            base_generation: st.generation,
            info,
            modules,
            data,
            raw,
            overlay,
            policy,
            arrival,
        })
    }

    /// Swaps a prepared revision in. Compiles again first if anything changed since it
    /// was prepared (an overlay write, another bundle); refuses one that a revision
    /// received after it has already replaced, or that rollback protection now refuses.
    ///
    /// The previous revision is freed on a thread of its own after `free_after`: a
    /// cut-over gives the other instances of the machine their instant first.
    pub(super) fn commit(
        &self,
        p: Prepared,
        free_after: Duration,
    ) -> Result<ActiveBundle, ActivationError> {
        let Prepared {
            mut info,
            modules,
            data,
            raw,
            overlay,
            policy,
            base_generation,
            arrival,
        } = p;
        let name = info.name.clone();
        let mut st = lock(&self.state);
        if st.bundles.get(&name).is_some_and(|l| l.arrival > arrival) {
            return Err(ActivationError::Superseded(info.revision));
        }
        check_rollback(&st, &info)?;
        let (policy, overlay) = if st.generation == base_generation {
            (policy, overlay)
        } else {
            let overlay = overlay_without(&st.overlay, &info.roots);
            let policy = self.compile_all(&st, &overlay, Some((&name, &modules, &data)))?;
            (policy, overlay)
        };
        info.activated_at = Utc::now();
        st.overlay = overlay;
        let issued_at = info.issued_at;
        let newer = issued_at.filter(|iat| st.floors.get(&name).is_none_or(|f| *iat > f.issued_at));
        if let Some(iat) = newer {
            st.floors.insert(
                name.clone(),
                super::Floor {
                    issued_at: iat,
                    source: format!(
                        "the newest bundle this agent accepted (revision {:?})",
                        info.revision
                    ),
                },
            );
        }
        let previous = st.bundles.insert(
            name,
            Loaded {
                info: info.clone(),
                modules,
                data,
                raw,
                arrival,
            },
        );
        let mut retired = self.install(&mut st, policy);
        drop(st);
        // Freeing the previous revision (its bundle data and its compiled engine's copy:
        // seconds for 100 MB, a few ms for 1 MB in a debug build) happens after the swap,
        // outside the lock and on another thread, so it delays neither readers, nor the
        // status update that follows, nor the other instances of a machine swapping at
        // the same announced instant.
        retired.bundle = previous;
        free_later(retired, free_after);
        Ok(info)
    }

    /// Records the activated bundle's signed issue time in the persistence directory,
    /// whether bundles are persisted or not, so a restart does not forget rollback
    /// protection (a small atomic write; blocking, and after the status update so it
    /// does not delay what status reports see).
    pub(super) fn remember_newest_iat(&self, info: &ActiveBundle) {
        let Some(iat) = info.issued_at else {
            return;
        };
        let dir = &self.cfg.persistence_dir;
        if persist::load_newest_iat(dir, &info.name)
            .ok()
            .flatten()
            .is_some_and(|n| n.issued_at >= iat)
        {
            return;
        }
        let newest = persist::NewestIat {
            issued_at: iat,
            revision: info.revision.clone(),
        };
        if let Err(e) = persist::save_newest_iat(dir, &info.name, &newest) {
            tracing::warn!(
                bundle = %info.name,
                dir = %dir.display(),
                error = %e,
                "cannot record the newest accepted issue time: a restart would accept older signed bundles again"
            );
        }
    }

    pub(super) fn load_persisted(&self, idx: usize) {
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
                self.remember_newest_iat(&info);
                // The ETag is trusted only if it was saved with this very revision.
                let etag = meta.etag.filter(|_| meta.revision == info.revision);
                tracing::info!(bundle = %src.name, revision = %info.revision, "activated persisted bundle");
                self.with_tracker(&src.name, |t| {
                    t.etag = etag;
                    t.activated_once = true;
                    t.status.active_revision = info.revision.clone();
                    t.status.last_successful_activation = Some(info.activated_at);
                    t.status.kind = "snapshot".into();
                    t.status.size = Some(size);
                });
                self.update_bundle_plugin();
            }
            Err(e) => {
                tracing::error!(bundle = %src.name, error = %e, "persisted bundle refused");
                self.with_tracker(&src.name, |t| {
                    t.status.set_error(
                        "bundle_error",
                        format!("persisted bundle: {e}"),
                        None,
                        e.details(),
                    );
                });
            }
        }
    }
}
