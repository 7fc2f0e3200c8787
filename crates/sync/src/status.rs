//! OPA's status objects (`v1/plugins/bundle/status.go`, `v1/plugins/status/plugin.go`),
//! plus a `lockstep` object per bundle with the freshness lease.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

fn opa_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Nanos, true)),
        // Go's zero time, as OPA reports a never-happened event.
        None => s.serialize_str("0001-01-01T00:00:00Z"),
    }
}

/// One compile/parse error in `errors[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Value>,
}

/// The status `code` of a bundle whose server serves a bundle signed before the one
/// held (refused by rollback protection). The agent stays fresh; the fleet view shows
/// it as refusing a rollback.
pub const ROLLBACK_REFUSED: &str = "bundle_rollback_refused";

/// The bundle refused as a rollback (in [`Freshness::refused_rollback`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefusedRollback {
    /// Revision the server serves.
    pub revision: String,
    /// Its signed issue time (unix seconds), older than the one held.
    pub issued_at: i64,
}

fn micros_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true)),
        None => s.serialize_none(),
    }
}

/// The latest revision announced with an activation instant, as this instance followed
/// it (synchronized cut-over). Instants are by the bundle server's clock as this
/// instance estimates it, with microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cutover {
    pub revision: String,
    #[serde(serialize_with = "micros_time")]
    pub activate_at: Option<DateTime<Utc>>,
    /// Verified and compiled, ready to switch.
    #[serde(serialize_with = "micros_time")]
    pub prepared_at: Option<DateTime<Utc>>,
    /// Swapped in; null while it waits for `activate_at`.
    #[serde(serialize_with = "micros_time")]
    pub activated_at: Option<DateTime<Utc>>,
    /// Ready only after `activate_at`: switched as soon as it was ready.
    pub late: bool,
    /// The clock estimate it switched by: server minus local clock.
    pub clock_offset_ms: f64,
    /// Its uncertainty (half the best round trip); null before any estimate.
    pub clock_uncertainty_ms: Option<f64>,
}

/// lockstep's additions to a bundle status (ignored by OPA tooling).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Freshness {
    /// True while the lease holds.
    pub fresh: bool,
    /// Last proof from the bundle server (200 activated or 304 on the active ETag).
    #[serde(serialize_with = "opa_time")]
    pub last_confirmed: Option<DateTime<Utc>>,
    pub max_staleness_seconds: f64,
    pub on_stale: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Signed issue time of the active bundle (unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
    /// Whether the active bundle came from the persistence directory.
    pub from_disk: bool,
    /// Set while the server serves an older bundle than the one held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_rollback: Option<RefusedRollback>,
    /// The latest announced cut-over of this bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutover: Option<Cutover>,
    /// The current estimate of the server's clock: server minus local, and its
    /// uncertainty (null before any answer carried the server's times).
    pub clock_offset_ms: f64,
    pub clock_uncertainty_ms: Option<f64>,
    /// The uncertainty is over `lockstep.cutover.max_clock_uncertainty` (or unknown while
    /// a cut-over is announced): this instance's switch instant may be off by that much.
    pub clock_uncertain: bool,
}

/// The per-bundle status object, OPA's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BundleStatus {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub active_revision: String,
    #[serde(serialize_with = "opa_time")]
    pub last_request: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opa_time")]
    pub last_successful_request: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opa_time")]
    pub last_successful_download: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opa_time")]
    pub last_successful_activation: Option<DateTime<Utc>>,
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metrics: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_code: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorDetail>,
    pub lockstep: Freshness,
}

impl BundleStatus {
    pub fn new(name: &str) -> Self {
        BundleStatus {
            name: name.to_string(),
            ..BundleStatus::default()
        }
    }

    pub fn set_error(
        &mut self,
        code: &str,
        message: String,
        http_code: Option<u16>,
        errors: Vec<ErrorDetail>,
    ) {
        self.code = Some(code.to_string());
        self.message = Some(message);
        self.http_code = http_code;
        self.errors = errors;
    }

    pub fn clear_error(&mut self) {
        self.code = None;
        self.message = None;
        self.http_code = None;
        self.errors.clear();
    }
}

/// A plugin's state (`NOT_READY`, `OK`, `ERROR`, `WARN`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginState {
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PluginState {
    pub fn ok() -> Self {
        PluginState {
            state: "OK".into(),
            message: None,
        }
    }

    pub fn not_ready(message: Option<String>) -> Self {
        PluginState {
            state: "NOT_READY".into(),
            message,
        }
    }
}

/// The status report: what `GET /v1/status` returns under `result` and what is POSTed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusReport {
    pub labels: BTreeMap<String, String>,
    pub bundles: BTreeMap<String, BundleStatus>,
    pub plugins: BTreeMap<String, PluginState>,
}
