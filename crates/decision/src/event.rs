//! One decision-log event in OPA's shape (`v1/plugins/logs/plugin.go` `EventV1`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use lockstep_sync::Active;
use serde::Serialize;
use serde_json::{Value as Json, json};

/// `bundles.<name>.revision` of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleRevision {
    pub revision: String,
}

/// What OPA logs for one decision; lockstep's extras go to `error.code`.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionEvent {
    pub labels: BTreeMap<String, String>,
    pub decision_id: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bundles: BTreeMap<String, BundleRevision>,
    /// The decision's path under `data`, slash-separated.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(serialize_with = "rfc3339_nanos")]
    pub timestamp: DateTime<Utc>,
}

/// `error` of an event: OPA's `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventError {
    pub code: &'static str,
    pub message: String,
}

fn rfc3339_nanos<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// The bundle revisions an active state was built from.
pub fn bundle_revisions(active: Option<&Active>) -> BTreeMap<String, BundleRevision> {
    active
        .map(|a| {
            a.bundles
                .iter()
                .map(|(k, b)| {
                    (
                        k.clone(),
                        BundleRevision {
                            revision: b.revision.clone(),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl DecisionEvent {
    /// The event as JSON (what the log writers send).
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or_else(|_| json!({"decision_id": self.decision_id}))
    }

    pub(crate) fn requested_by(remote: Option<SocketAddr>) -> Option<String> {
        remote.map(|r| r.to_string())
    }
}
