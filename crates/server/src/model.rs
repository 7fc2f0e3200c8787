//! What the store holds about one bundle: the kept revisions, which one is active, and the
//! history of publications and rollbacks. One JSON document per change (see `store`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most history events kept in the state document.
pub const MAX_HISTORY_EVENTS: usize = 1000;

/// One published bundle, kept for download and rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// Content id: lowercase hex SHA-256 of the tar.gz bytes (the ETag, quoted).
    pub id: String,
    /// The manifest's `revision` (what instances report as `active_revision`).
    pub revision: String,
    pub size: u64,
    /// Signed issue time (`iat`), unix seconds; `None` for unsigned bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
    /// Key id that verified the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub published_at: DateTime<Utc>,
    pub actor: String,
}

/// `publish` or `rollback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Publish,
    Rollback,
}

/// One change of the active revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// State sequence number this event produced.
    pub seq: u64,
    pub action: Action,
    /// Content id now active.
    pub id: String,
    /// Manifest revision now active.
    pub revision: String,
    /// Manifest revision active before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<String>,
    pub at: DateTime<Utc>,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Synchronized cut-over: the instant (server clock) at which instances switch to
    /// this revision, announced with every download of it. `None`: on arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_at: Option<DateTime<Utc>>,
}

/// The whole state of one bundle at one sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleState {
    pub name: String,
    pub seq: u64,
    /// Content id of the active revision.
    pub active: String,
    /// When the active revision became active (publication or rollback).
    pub active_since: DateTime<Utc>,
    /// Kept revisions, newest publication first.
    pub revisions: Vec<RevisionRecord>,
    /// Newest first.
    pub history: Vec<HistoryEvent>,
}

impl BundleState {
    /// The announced activation instant of the active revision (its commit's event).
    pub fn activate_at(&self) -> Option<DateTime<Utc>> {
        self.history
            .first()
            .filter(|h| h.id == self.active)
            .and_then(|h| h.activate_at)
    }

    pub fn active_record(&self) -> Option<&RevisionRecord> {
        self.revisions.iter().find(|r| r.id == self.active)
    }

    /// A kept revision named by manifest revision, content id, or a content-id prefix of
    /// at least 8 hex digits (newest publication first).
    pub fn find(&self, wanted: &str) -> Option<&RevisionRecord> {
        self.revisions
            .iter()
            .find(|r| r.revision == wanted || r.id == wanted)
            .or_else(|| {
                (wanted.len() >= 8)
                    .then(|| self.revisions.iter().find(|r| r.id.starts_with(wanted)))
                    .flatten()
            })
    }
}
