//! regorus's bytecode VM on the production path, verified on the requests it serves.
//!
//! The RVM is 5–6× faster than the interpreter on the guide's decision, but it is a
//! second implementation of Rego: where the two disagree, the interpreter (OPA's
//! semantics, differential-tested) is right. A probe set chosen in advance cannot
//! cover what agents will send, so an entrypoint's RVM earns its place on real
//! inputs instead:
//!
//! - **shadow**: for its first [`RvmOptions::verify_first`] decisions both evaluators
//!   run and the interpreter's answer is served;
//! - **serving**: after that the RVM answers alone, except one decision in
//!   [`RvmOptions::recheck_every`], which is again evaluated both ways;
//! - **retired**: one disagreement (a different value, or a value where the
//!   interpreter fails) retires the RVM for that entrypoint for the rest of the
//!   compiled set's life, with a warning naming the entrypoint; the interpreter's
//!   answer is the one served.
//!
//! An RVM error never decides: the interpreter answers instead. Entrypoints the RVM
//! cannot compile (functions, packages with sub-packages, constructs in
//! `rvm_blockers`) are interpreted, and why is kept ([`crate::PolicySet::backend`]).
//! It owns no policy state: the [`crate::PolicySet`] holds one slot per entrypoint
//! and drops them with the set on a revision swap.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::Value as Json;

use crate::decision::Rvm;
use crate::error::EvalError;

/// How decisions use the bytecode VM ([`crate::CompileOptions::rvm`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RvmOptions {
    /// Off: the interpreter decides everything.
    pub enabled: bool,
    /// Decisions evaluated by both before the RVM serves alone.
    pub verify_first: u64,
    /// While serving, one decision in this many is evaluated by both again.
    pub recheck_every: u64,
}

impl Default for RvmOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            verify_first: 64,
            recheck_every: 64,
        }
    }
}

/// One entrypoint's RVM and its verification state.
pub(crate) struct RvmSlot {
    rvm: Option<Rvm>,
    /// Why the interpreter decides (no RVM, or retired).
    reason: std::sync::Mutex<Option<String>>,
    /// Verified in advance on the caller's probes ([`crate::PolicySet::use_rvm`]):
    /// no shadow phase.
    probed: bool,
    served: AtomicU64,
    retired: AtomicBool,
}

impl std::fmt::Debug for RvmSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RvmSlot")
            .field("compiled", &self.rvm.is_some())
            .field("served", &self.served.load(Ordering::Relaxed))
            .field("retired", &self.retired.load(Ordering::Relaxed))
            .finish()
    }
}

/// What a slot says about one decision.
pub(crate) enum Plan<'a> {
    /// The RVM answers; on an RVM error the interpreter does.
    Serve(&'a Rvm),
    /// Both evaluate; [`RvmSlot::compare`] gets the answers.
    Check(&'a Rvm),
    /// The interpreter answers.
    Interpret,
}

impl RvmSlot {
    pub fn compiled(rvm: Rvm, probed: bool) -> Self {
        Self {
            rvm: Some(rvm),
            reason: std::sync::Mutex::new(None),
            probed,
            served: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    pub fn refused(reason: String) -> Self {
        Self {
            rvm: None,
            reason: std::sync::Mutex::new(Some(reason)),
            probed: false,
            served: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    pub fn plan(&self, opts: &RvmOptions) -> Plan<'_> {
        let Some(rvm) = &self.rvm else {
            return Plan::Interpret;
        };
        if self.retired.load(Ordering::Relaxed) {
            return Plan::Interpret;
        }
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        let shadow = !self.probed && n < opts.verify_first;
        if shadow || n.is_multiple_of(opts.recheck_every.max(1)) {
            Plan::Check(rvm)
        } else {
            Plan::Serve(rvm)
        }
    }

    /// Compares a checked decision (`fast` is `None` when the RVM failed); a
    /// divergence retires the RVM.
    pub fn compare(
        &self,
        entrypoint: &str,
        fast: Option<&Option<Json>>,
        slow: &Result<Option<Json>, EvalError>,
    ) {
        let diverged = match (fast, slow) {
            (Some(a), Ok(b)) => a != b,
            // The RVM would have served a value where OPA's semantics fail.
            (Some(_), Err(_)) => true,
            // An RVM failure is never served.
            (None, _) => false,
        };
        if diverged && !self.retired.swap(true, Ordering::Relaxed) {
            let show = |r: Option<&Option<Json>>| match r {
                Some(Some(v)) => v.to_string(),
                Some(None) => "undefined".to_string(),
                None => "error".to_string(),
            };
            let reason = format!(
                "the RVM disagreed with the interpreter on a request (RVM {}, interpreter {}); \
                 the interpreter decides from now on",
                show(fast),
                match slow {
                    Ok(v) => show(Some(v)),
                    Err(e) => format!("error ({e})"),
                }
            );
            tracing::warn!(entrypoint, reason = reason.as_str(), "bytecode VM retired");
            *self
                .reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
        }
    }

    /// The interpreter's reason, or `None` while the RVM is in use.
    pub fn interpreter_reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Decisions planned so far (shadowed, served or checked).
    pub fn decisions(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether the RVM has passed its shadow phase.
    pub fn verified(&self, opts: &RvmOptions) -> bool {
        self.rvm.is_some()
            && !self.retired.load(Ordering::Relaxed)
            && (self.probed || self.decisions() >= opts.verify_first)
    }
}
