//! lockstep-decision: the one decision path every decision point shares.
//!
//! Owns:
//! - [`Decider::decide`]: the freshness gate of `lockstep-sync`, evaluation on exactly
//!   one active revision, the caller's interpretation, the decision metrics
//!   ([`DecisionMetrics`]) and the decision-log event ([`DecisionEvent`], OPA's shape);
//! - decision logs: JSON lines to a file and/or stdout, and upload to a log service as
//!   OPA's logs plugin does ([`DecisionLogger`]), with the `decision_logs` config
//!   section ([`log_config`]).
//!
//! Must not: serve or parse any wire protocol (REST, Envoy, MCP are the callers'),
//! download bundles, or know MCP.
#![forbid(unsafe_code)]

mod decider;
mod event;
pub mod log_config;
mod logger;
mod metrics;
mod upload;

pub use decider::{Decider, Decision, DecisionRequest, Outcome};
pub use event::{BundleRevision, DecisionEvent, EventError, bundle_revisions};
pub use log_config::{DecisionLogConfig, DecisionUpload, parse_decision_logs};
pub use logger::{DecisionLogger, LogFileError};
pub use metrics::{DecisionMetrics, OutcomeLabels};
pub use upload::UploadStats;
