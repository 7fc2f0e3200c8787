//! The engine's public types: the active state, the decision gate, REST-write
//! outcomes and errors, and why an activation failed.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lockstep_bundle::BundleError;
use lockstep_policy::{CompileError, EvalError, PolicySet, Snapshot};
use serde_json::Value as Json;

use crate::overlay::{PatchOp, PathError};
use crate::status::ErrorDetail;

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

/// Why [`super::Syncer::new`] refused a configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    #[error("bundle {0:?} configured twice")]
    DuplicateBundle(String),
    #[error("bundle {0:?}: max polling delay must be >= min polling delay")]
    PollingDelays(String),
    #[error("HTTP client: {0}")]
    HttpClient(String),
    #[error("the empty policy does not compile: {0}")]
    EmptyPolicy(String),
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
pub(crate) enum ActivationError {
    #[error("{0}")]
    Read(#[from] BundleError),
    #[error(
        "bundle is not signed; lockstep requires signed bundles (configure bundles.<name>.signing and keys, or set lockstep.skip_verification: true to accept unsigned bundles)"
    )]
    Unsigned,
    #[error(
        "refusing rollback: bundle revision {revision:?} was signed at {new} (iat), before {against} (signed at {old}); the newer revision stays active (rollback protection: to roll back, re-sign the older revision with a fresh issue time, e.g. lockstep rollback --signing-key)"
    )]
    Rollback {
        /// Revision of the refused bundle.
        revision: String,
        new: i64,
        old: i64,
        /// What it is older than: the active revision, the newest bundle accepted
        /// before a restart, or `lockstep.min_issued_at`.
        against: String,
    },
    #[error("delta bundles are not supported by lockstep")]
    Delta,
    /// OPA's refusal, first: with `persist` a delta bundle is refused by OPA too.
    #[error(
        "'persist' property is true in config. persisting delta bundle to disk is not supported"
    )]
    DeltaPersist,
    #[error("detected overlapping roots in bundle manifests: {0}")]
    Roots(String),
    #[error("error(s) occurred while compiling module(s): {0}")]
    Compile(#[from] CompileError),
    #[error("error(s) occurred while evaluating the bundle once after compiling: {0}")]
    Eval(#[from] EvalError),
    /// A prepared revision whose bundle received a newer one before it could switch.
    #[error("revision {0:?} was superseded by a newer one before its activation instant")]
    Superseded(String),
}

impl ActivationError {
    pub(crate) fn details(&self) -> Vec<ErrorDetail> {
        match self {
            ActivationError::Compile(e) => compile_details(e),
            _ => Vec::new(),
        }
    }
}

pub(crate) fn compile_details(e: &CompileError) -> Vec<ErrorDetail> {
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
