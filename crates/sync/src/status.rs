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
