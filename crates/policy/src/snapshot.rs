//! The active policy of a running agent or gateway, swapped atomically.
//!
//! Request handlers `load()` the current [`Snapshot`] (a lock-free `Arc` clone) and
//! keep using it for the whole request, even if a new bundle is activated
//! meanwhile; activation builds the next snapshot off to the side and `swap`s it
//! in. Until the first activation there is no snapshot, and callers must deny:
//! fail-closed, like OPA without a bundle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::decision::DecisionFn;
use crate::policy::PolicySet;

/// One activated bundle revision.
#[derive(Debug)]
pub struct Snapshot {
    /// The bundle manifest's revision (may be empty, as in OPA).
    pub revision: String,
    pub policy: PolicySet,
    pub activated_at: SystemTime,
    /// Decision functions prepared at activation, by entrypoint.
    decisions: HashMap<String, DecisionFn>,
}

impl Snapshot {
    pub fn new(revision: impl Into<String>, policy: PolicySet) -> Self {
        Self {
            revision: revision.into(),
            policy,
            activated_at: SystemTime::now(),
            decisions: HashMap::new(),
        }
    }

    /// Also prepare a [`DecisionFn`] for each entrypoint, so the first request
    /// after activation does not pay for compiling it.
    pub fn with_entrypoints(mut self, entrypoints: &[&str]) -> Self {
        for e in entrypoints {
            self.decisions
                .insert((*e).to_string(), self.policy.decision_fn(e));
        }
        self
    }

    /// Add a decision function built by the caller (e.g. with
    /// [`PolicySet::decision_fn_rvm`] and recorded requests as probes).
    pub fn with_decision(mut self, decision: DecisionFn) -> Self {
        self.decisions
            .insert(decision.entrypoint().to_string(), decision);
        self
    }

    /// The prepared decision function for `entrypoint`, if any.
    pub fn decision(&self, entrypoint: &str) -> Option<&DecisionFn> {
        self.decisions.get(entrypoint)
    }
}

/// The swappable slot holding the active snapshot.
#[derive(Debug, Default)]
pub struct PolicyHandle {
    current: ArcSwapOption<Snapshot>,
}

impl PolicyHandle {
    /// A handle with nothing active yet.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwapOption::from_pointee(snapshot),
        }
    }

    /// The active snapshot, or `None` before the first activation.
    pub fn load(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Activate `next`; returns the snapshot it replaces.
    pub fn swap(&self, next: Snapshot) -> Option<Arc<Snapshot>> {
        self.current.swap(Some(Arc::new(next)))
    }

    /// The active revision, if any.
    pub fn revision(&self) -> Option<String> {
        self.current.load().as_ref().map(|s| s.revision.clone())
    }
}
