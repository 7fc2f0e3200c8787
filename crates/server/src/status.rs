//! OPA's status-plugin report (`POST /status[/<partition>]`), as OPA sends it
//! (`v1/plugins/status/plugin.go` `UpdateRequestV1`). Unknown fields are ignored, every
//! field is optional except `labels.id`, which names the instance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The per-bundle status object (`v1/plugins/bundle/status.go` `Status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BundleStatus {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_download: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_activation: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_code: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Value>,
    /// lockstep's additions (freshness, cut-over); absent from OPA's reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lockstep: Option<Value>,
}

/// What an instance says about an announced cut-over (`lockstep.cutover` of a bundle
/// status, written by lockstep-sync).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CutoverReport {
    pub revision: String,
    pub activate_at: Option<chrono::DateTime<chrono::Utc>>,
    pub prepared_at: Option<chrono::DateTime<chrono::Utc>>,
    pub activated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub late: bool,
}

impl BundleStatus {
    /// The instance's cut-over record, if it sent a readable one.
    pub fn cutover(&self) -> Option<CutoverReport> {
        let v = self.lockstep.as_ref()?.get("cutover")?;
        serde_json::from_value(v.clone()).ok()
    }

    /// Whether the instance says its clock offset to the server is too uncertain for a
    /// synchronized cut-over.
    pub fn clock_uncertain(&self) -> bool {
        self.lockstep
            .as_ref()
            .and_then(|l| l.get("clock_uncertain"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// True while the instance reports an error for this bundle.
    pub fn in_error(&self) -> bool {
        self.code.as_deref().is_some_and(|c| !c.is_empty()) || !self.errors.is_empty()
    }
}

/// The report body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StatusReport {
    pub labels: Map<String, Value>,
    pub bundles: BTreeMap<String, BundleStatus>,
    /// Deprecated single-bundle form.
    pub bundle: Option<BundleStatus>,
    pub discovery: Option<BundleStatus>,
    pub decision_logs: Option<Value>,
    pub plugins: Map<String, Value>,
}

impl StatusReport {
    /// `labels.id`, if it is a non-empty string.
    pub fn instance_id(&self) -> Option<&str> {
        self.labels
            .get("id")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Every bundle status, the legacy `bundle` field folded in under its name.
    pub fn all_bundles(&self) -> BTreeMap<String, BundleStatus> {
        let mut out = self.bundles.clone();
        if let Some(b) = &self.bundle
            && !b.name.is_empty()
        {
            out.entry(b.name.clone()).or_insert_with(|| b.clone());
        }
        for (k, v) in out.iter_mut() {
            if v.name.is_empty() {
                v.name = k.clone();
            }
        }
        out
    }
}
