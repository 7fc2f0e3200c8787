//! Publication and rollback: verify the signature with the server's public keys (it never
//! holds a signing key), refuse unsigned bundles unless allowed, refuse a bundle signed
//! earlier than the active one unless the publication is an explicit rollback, keep the
//! newest N revisions, record who did what, when and why.

use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use chrono::Utc;
use lockstep_bundle::{BundleError, Limits, ReadOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::error::ApiError;
use crate::metrics::ActionLabels;
use crate::model::{Action, BundleState, HistoryEvent, MAX_HISTORY_EVENTS, RevisionRecord};

/// How often a publish is retried when another replica committed first.
const COMMIT_ATTEMPTS: usize = 8;

/// The answer to a publish or rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishResponse {
    pub bundle: String,
    pub action: Action,
    pub revision: String,
    pub id: String,
    pub etag: String,
    pub seq: u64,
    /// The bundle was already active; nothing changed.
    pub unchanged: bool,
    pub active_since: chrono::DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
    /// Set when a rollback activates a bundle signed before the one it replaces:
    /// lockstep agents refuse it (rollback protection), keep their revision and report
    /// `bundle_rollback_refused`; only vanilla OPA instances follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Synchronized cut-over: when instances switch to this revision (server clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_at: Option<chrono::DateTime<Utc>>,
}

/// The warning of a rollback to a bundle signed at `target` over one signed at `active`.
fn older_signature_warning(target: Option<i64>, active: Option<i64>) -> Option<String> {
    match (target, active) {
        (Some(t), Some(a)) if t < a => Some(format!(
            "the re-activated bundle was signed at {t}, before the one it replaces ({a}): lockstep agents refuse it (rollback protection), keep their current revision and report bundle_rollback_refused; only OPA instances roll back. To roll lockstep agents back, re-sign it: lockstep rollback --signing-key"
        )),
        _ => None,
    }
}

/// `POST /bundles/{name}/rollback` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// Manifest revision, content id, or content-id prefix (8+ hex digits) of a kept revision.
    pub revision: String,
    pub reason: String,
    #[serde(default)]
    pub actor: Option<String>,
}

/// A publication.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub name: String,
    pub bytes: Bytes,
    pub actor: String,
    /// Explicit rollback: accept a bundle signed before the active one.
    pub rollback: bool,
    pub reason: Option<String>,
    /// How far ahead to announce the activation instant; `None`: the bundle's
    /// configured `cutover` delay.
    pub cutover: Option<std::time::Duration>,
}

/// The announced activation instant for a commit at `now` with `delay` (none for 0), in
/// whole milliseconds: the header carries milliseconds, and the stored instant, the
/// publish answer and the fleet view must name the same one.
fn activation_instant(
    now: chrono::DateTime<Utc>,
    delay: std::time::Duration,
) -> Option<chrono::DateTime<Utc>> {
    let d = chrono::TimeDelta::from_std(delay).ok()?;
    if d.is_zero() {
        return None;
    }
    chrono::DateTime::from_timestamp_millis((now + d).timestamp_millis())
}

fn is_signature_error(e: &BundleError) -> bool {
    use BundleError::*;
    matches!(
        e,
        UnsupportedHashAlgorithm(_)
            | MissingHashAlgorithm(_)
            | InvalidDigest { .. }
            | DigestMismatch { .. }
            | UnknownAlgorithm(_)
            | PemParse
            | UnsupportedKeyType(_)
            | UnsupportedPemBlock(_)
            | KeyParse { .. }
            | KeyAlgorithmMismatch { .. }
            | MalformedToken(_)
            | HeaderBase64(_)
            | HeaderJson(_)
            | PayloadBase64(_)
            | PayloadJson(_)
            | SignatureBase64(_)
            | AlgNone
            | MissingAlg
            | AlgMismatch { .. }
            | BadSignature(_)
            | MissingJwt
            | MultipleJwts
            | UnknownVerifierPlugin(_)
            | KeyIdEmpty
            | KeyNotFound(_)
            | ScopeMismatch
            | MissingSignaturesFile
            | VerificationKeyNotProvided
            | FileNotSigned(_)
            | SignedFilesNotFound(_)
            | SignaturesDecode(_)
    )
}

fn refuse(
    app: &AppState,
    bundle: &str,
    reason: &'static str,
    status: StatusCode,
    msg: String,
) -> ApiError {
    app.metrics.refuse(bundle, reason);
    tracing::warn!(bundle, reason, message = %msg, "publication refused");
    ApiError::new(status, reason, msg)
}

/// Normalises an actor name (free text, bounded).
pub fn clean_actor(actor: Option<&str>) -> String {
    let a: String = actor
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let a = a.trim();
    if a.is_empty() {
        "publisher".to_string()
    } else {
        a.to_string()
    }
}

/// Verifies and activates a new bundle.
pub async fn publish(
    app: &Arc<AppState>,
    req: PublishRequest,
) -> Result<PublishResponse, ApiError> {
    let name = req.name.clone();
    if req.rollback && req.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(ApiError::bad_request("a rollback needs a reason"));
    }
    let cutover = req.cutover.unwrap_or_else(|| app.cutover.delay_for(&name));
    if cutover > std::time::Duration::from_millis(crate::config::MAX_CUTOVER_MS) {
        return Err(ApiError::bad_request(format!(
            "cutover: {} ms is longer than the {} ms limit",
            cutover.as_millis(),
            crate::config::MAX_CUTOVER_MS
        )));
    }
    // 1. Read and verify, off the async threads.
    let opts = ReadOptions {
        limits: Limits {
            max_compressed_bytes: app.max_bundle_bytes as u64,
            ..Limits::default()
        },
        verification: app.verification.for_bundle(&name),
        lazy_data: true,
        ..ReadOptions::default()
    };
    let bytes = req.bytes.clone();
    let t0 = std::time::Instant::now();
    let read = tokio::task::spawn_blocking(move || lockstep_bundle::read_tar_gz(&bytes[..], &opts))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "bundle verification task failed");
            ApiError::internal("bundle verification failed unexpectedly; see the server log")
        })?;
    let bundle = match read {
        Ok(b) => b,
        Err(e) if is_signature_error(&e) => {
            return Err(refuse(
                app,
                &name,
                "bad_signature",
                StatusCode::BAD_REQUEST,
                format!("signature verification failed: {e}"),
            ));
        }
        Err(e) => {
            return Err(refuse(
                app,
                &name,
                "invalid_bundle",
                StatusCode::BAD_REQUEST,
                format!("invalid bundle: {e}"),
            ));
        }
    };
    if bundle.is_delta() {
        return Err(refuse(
            app,
            &name,
            "delta_bundle",
            StatusCode::UNPROCESSABLE_ENTITY,
            "delta bundles are not served; publish a snapshot bundle".into(),
        ));
    }
    let signature = bundle.verified_signature.clone();
    if signature.is_none() && !app.allow_unsigned {
        return Err(refuse(
            app,
            &name,
            "unsigned",
            StatusCode::BAD_REQUEST,
            "bundle is not signed (.signatures.json missing) and publish.allow_unsigned is false"
                .into(),
        ));
    }
    let issued_at = signature.as_ref().and_then(|s| s.issued_at);
    let key_id = signature.as_ref().map(|s| s.key_id.clone());
    let id = hex::encode(Sha256::digest(&req.bytes));
    let revision = bundle.manifest.revision.clone();

    // 2. Check against the newest state, store the bytes, commit a new state.
    let verified_at = t0.elapsed();
    let slot = app.hub.slot_or_create(&name);
    let _lock = slot.publish_lock.lock().await;
    let mut blob_written = false;
    for _ in 0..COMMIT_ATTEMPTS {
        let current = app.hub.store.latest_state(&name).await?;
        if let Some(cur) = &current
            && cur.active == id
        {
            app.hub.apply(cur.clone()).await?;
            return Ok(response(cur, Action::Publish, true, None));
        }
        let active_record = current.as_ref().and_then(|c| c.active_record().cloned());
        if !req.rollback
            && let (Some(new_iat), Some(active)) = (issued_at, active_record.as_ref())
            && let Some(active_iat) = active.issued_at
            && new_iat < active_iat
        {
            return Err(refuse(
                app,
                &name,
                "older_revision",
                StatusCode::CONFLICT,
                format!(
                    "bundle revision {revision:?} was signed at {new_iat}, before the active revision {:?} (signed at {active_iat}); publish it as an explicit rollback to activate it",
                    active.revision
                ),
            ));
        }
        // Finding 9: an unsigned bundle has no iat to order it by, so it could replace any
        // signed one; only an explicit rollback may do that.
        if !req.rollback
            && issued_at.is_none()
            && let Some(active) = active_record.as_ref()
            && active.key_id.is_some()
        {
            return Err(refuse(
                app,
                &name,
                "unsigned_over_signed",
                StatusCode::CONFLICT,
                format!(
                    "bundle revision {revision:?} is not signed and the active revision {:?} is: publish it as an explicit rollback to replace a signed revision with an unsigned one",
                    active.revision
                ),
            ));
        }
        // Only accepted bundles are stored (content-addressed: a retry writes nothing new).
        if !blob_written {
            app.hub
                .store
                .put_blob(&name, &id, req.bytes.clone())
                .await?;
            blob_written = true;
        }
        let now = Utc::now();
        let record = RevisionRecord {
            id: id.clone(),
            revision: revision.clone(),
            size: req.bytes.len() as u64,
            issued_at,
            key_id: key_id.clone(),
            published_at: now,
            actor: req.actor.clone(),
        };
        let seq = current.as_ref().map_or(1, |c| c.seq + 1);
        let mut revisions = vec![record];
        let mut history = Vec::new();
        if let Some(c) = &current {
            revisions.extend(c.revisions.iter().filter(|r| r.id != id).cloned());
            history = c.history.clone();
        }
        let dropped: Vec<String> = revisions
            .iter()
            .skip(app.keep_revisions)
            .map(|r| r.id.clone())
            .collect();
        revisions.truncate(app.keep_revisions);
        let action = if req.rollback {
            Action::Rollback
        } else {
            Action::Publish
        };
        history.insert(
            0,
            HistoryEvent {
                seq,
                action,
                id: id.clone(),
                revision: revision.clone(),
                previous_revision: active_record.as_ref().map(|r| r.revision.clone()),
                at: now,
                actor: req.actor.clone(),
                reason: req.reason.clone(),
                activate_at: activation_instant(now, cutover),
            },
        );
        history.truncate(MAX_HISTORY_EVENTS);
        let state = BundleState {
            name: name.clone(),
            seq,
            active: id.clone(),
            active_since: now,
            revisions,
            history,
        };
        if !app.hub.store.create_state(&state).await? {
            continue;
        }
        // Committed: wake the waiting clients first, then tidy up the store.
        let committed_at = t0.elapsed();
        app.hub
            .apply_with(state.clone(), Some(req.bytes.clone()))
            .await?;
        tracing::debug!(
            bundle = %name,
            verify_ms = verified_at.as_secs_f64() * 1e3,
            commit_ms = committed_at.as_secs_f64() * 1e3,
            wake_ms = t0.elapsed().as_secs_f64() * 1e3,
            "publish timings (from the start of verification)"
        );
        app.hub.store.after_commit(&name, seq).await?;
        for old in dropped {
            if let Err(e) = app.hub.store.delete_blob(&name, &old).await {
                tracing::warn!(bundle = %name, id = %old, error = %e, "deleting an old revision");
            }
        }
        app.metrics
            .publishes
            .get_or_create(&ActionLabels {
                bundle: name.clone(),
                action: if req.rollback { "rollback" } else { "publish" }.into(),
            })
            .inc();
        tracing::info!(bundle = %name, %revision, seq, actor = %req.actor, "published");
        let warning = if req.rollback {
            older_signature_warning(issued_at, active_record.as_ref().and_then(|r| r.issued_at))
        } else {
            None
        };
        let mut resp = response(&state, action, false, active_record.map(|r| r.revision));
        resp.warning = warning;
        return Ok(resp);
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        "too many concurrent publications; retry",
    ))
}

/// Re-activates a kept revision.
pub async fn rollback(
    app: &Arc<AppState>,
    name: &str,
    req: RollbackRequest,
    actor: String,
) -> Result<PublishResponse, ApiError> {
    if req.reason.trim().is_empty() {
        return Err(ApiError::bad_request("a rollback needs a reason"));
    }
    let slot = app.hub.slot_or_create(name);
    let _lock = slot.publish_lock.lock().await;
    for _ in 0..COMMIT_ATTEMPTS {
        let Some(current) = app.hub.store.latest_state(name).await? else {
            return Err(ApiError::not_found(format!(
                "bundle {name} was never published"
            )));
        };
        let Some(target) = current.find(&req.revision).cloned() else {
            return Err(ApiError::not_found(format!(
                "revision {:?} is not among the {} kept revisions of bundle {name}",
                req.revision,
                current.revisions.len()
            )));
        };
        if target.id == current.active {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_active",
                format!("revision {:?} is already active", target.revision),
            ));
        }
        let now = Utc::now();
        let seq = current.seq + 1;
        let previous = current.active_record().map(|r| r.revision.clone());
        let warning = older_signature_warning(
            target.issued_at,
            current.active_record().and_then(|r| r.issued_at),
        );
        let mut history = current.history.clone();
        history.insert(
            0,
            HistoryEvent {
                seq,
                action: Action::Rollback,
                id: target.id.clone(),
                revision: target.revision.clone(),
                previous_revision: previous.clone(),
                at: now,
                actor: actor.clone(),
                reason: Some(req.reason.trim().to_string()),
                activate_at: activation_instant(now, app.cutover.delay_for(name)),
            },
        );
        history.truncate(MAX_HISTORY_EVENTS);
        let state = BundleState {
            name: name.to_string(),
            seq,
            active: target.id.clone(),
            active_since: now,
            revisions: current.revisions.clone(),
            history,
        };
        if !app.hub.store.commit_state(&state).await? {
            continue;
        }
        app.hub.apply(state.clone()).await?;
        app.metrics
            .publishes
            .get_or_create(&ActionLabels {
                bundle: name.to_string(),
                action: "rollback".into(),
            })
            .inc();
        tracing::info!(bundle = %name, revision = %target.revision, seq, %actor, "rolled back");
        if let Some(w) = &warning {
            tracing::warn!(bundle = %name, "{w}");
        }
        let mut resp = response(&state, Action::Rollback, false, previous);
        resp.warning = warning;
        return Ok(resp);
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        "too many concurrent publications; retry",
    ))
}

fn response(
    state: &BundleState,
    action: Action,
    unchanged: bool,
    previous_revision: Option<String>,
) -> PublishResponse {
    let rec = state.active_record();
    PublishResponse {
        bundle: state.name.clone(),
        action,
        revision: rec.map(|r| r.revision.clone()).unwrap_or_default(),
        id: state.active.clone(),
        etag: format!("\"{}\"", state.active),
        seq: state.seq,
        unchanged,
        active_since: state.active_since,
        previous_revision,
        issued_at: rec.and_then(|r| r.issued_at),
        warning: None,
        activate_at: state.activate_at(),
    }
}
