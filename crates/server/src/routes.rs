//! The HTTP API.
//!
//! | method | path | who | what |
//! |---|---|---|---|
//! | GET/HEAD | `{prefix}/{name}` (also `{name}.tar.gz`) | download token | bundle; ETag, `If-None-Match` → 304, `Prefer: wait=N` long poll |
//! | PUT | `{prefix}/{name}` | publisher token | publish (body: bundle tar.gz); `?rollback=true&reason=..` to accept an older one |
//! | POST | `{prefix}/{name}/rollback` | publisher token | `{"revision","reason","actor"}` re-activates a kept revision |
//! | GET | `{prefix}/{name}/history` | any token (a scoped download token: its bundles) | kept revisions and events |
//! | POST | `/status`, `/status/{partition}` | status or download token | OPA status report (413 over `fleet.max_*`) |
//! | GET | `/v1/fleet` | any token (a scoped download token sees its bundles and their instances) | fleet view JSON |
//! | GET | `/metrics` | any fleet-wide token | Prometheus text |
//! | GET | `/` | none (data via `/v1/fleet`) | dashboard page |
//! | GET | `/health` | none | `{}` |

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::auth::ViewScope;
use crate::error::ApiError;
use crate::fleet::IngestError;
use crate::hub::Active;
use crate::longpoll::{BUNDLE_CONTENT_TYPE, client_has, if_none_match, prefer_wait, wait_for_new};
use crate::metrics::ResponseLabels;
use crate::publish::{PublishRequest, RollbackRequest, clean_actor};
use crate::status::StatusReport;

/// Bundle names: 1-128 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn valid_bundle_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn bundle_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.strip_suffix(".tar.gz").unwrap_or(raw);
    if valid_bundle_name(name) {
        Ok(name.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid bundle name {raw:?}"
        )))
    }
}

pub fn router(app: Arc<AppState>) -> Router {
    let prefix = app.prefix.clone();
    // Bodies are read by the handlers after the credential check (crate::body), so
    // there is no extractor body limit here.
    let bundle_routes = Router::new()
        .route("/{name}", get(get_bundle).put(put_bundle))
        .route("/{name}/rollback", post(post_rollback))
        .route("/{name}/history", get(get_history))
        .route("/{name}/revisions/{id}", get(get_revision));
    let base = Router::new()
        .route("/", get(dashboard))
        .route("/health", get(|| async { Json(json!({})) }))
        .route("/status", post(post_status))
        .route("/status/{partition}", post(post_status_partition))
        .route("/v1/fleet", get(get_fleet))
        .route("/metrics", get(get_metrics));
    let router = if prefix == "/" {
        base.merge(bundle_routes)
    } else {
        base.nest(&prefix, bundle_routes)
    };
    router.with_state(app)
}

fn count(app: &AppState, bundle: &str, code: StatusCode) {
    app.metrics
        .downloads
        .get_or_create(&ResponseLabels {
            bundle: bundle.to_string(),
            code: code.as_u16().to_string(),
        })
        .inc();
}

fn bundle_response(active: &Active) -> Response {
    let mut r = Response::new(Body::from(active.bytes.clone()));
    *r.headers_mut() = active.headers.clone();
    r
}

fn not_modified(etag: &str) -> Response {
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

async fn get_bundle(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let received = now_us();
    let mut r = answer_bundle(&app, &raw, &headers).await?;
    // NTP-style: with the client's own send and receive times these give its clock's
    // offset to this one, a long poll's wait excluded (synchronized cut-over).
    if let Ok(v) = HeaderValue::from_str(&format!("{received} {}", now_us())) {
        r.headers_mut()
            .insert(lockstep_bundle::protocol::SERVER_TIME_HEADER, v);
    }
    Ok(r)
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn answer_bundle(
    app: &Arc<AppState>,
    raw: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let name = bundle_name(raw)?;
    if !app.auth.may_download(headers, &name) {
        count(app, &name, StatusCode::UNAUTHORIZED);
        return Err(ApiError::unauthorized());
    }
    let Some(slot) = app.hub.get_or_load(&name).await? else {
        count(app, &name, StatusCode::NOT_FOUND);
        return Err(ApiError::not_found(format!("bundle {name} not found")));
    };
    let mut rx = slot.subscribe();
    let Some(active) = rx.borrow_and_update().clone() else {
        return Err(ApiError::not_found(format!("bundle {name} not found")));
    };
    let tags = if_none_match(headers);
    if !client_has(&tags, &active.etag) {
        count(app, &name, StatusCode::OK);
        return Ok(bundle_response(&active));
    }
    let wait = prefer_wait(headers)
        .map(|w| w.min(app.max_wait.as_secs()))
        .unwrap_or(0);
    if wait == 0 {
        count(app, &name, StatusCode::NOT_MODIFIED);
        return Ok(not_modified(&active.etag));
    }
    match wait_for_new(
        &mut rx,
        &tags,
        Duration::from_secs(wait),
        app.shutdown.clone(),
        app.metrics.long_polls_waiting.clone(),
    )
    .await
    {
        Some(newer) => {
            count(app, &name, StatusCode::OK);
            Ok(bundle_response(&newer))
        }
        None => {
            count(app, &name, StatusCode::NOT_MODIFIED);
            let etag = slot
                .active()
                .map_or(active.etag.clone(), |a| a.etag.clone());
            Ok(not_modified(&etag))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct PutQuery {
    #[serde(default)]
    rollback: Option<bool>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    actor: Option<String>,
    /// Milliseconds ahead to announce the activation instant (synchronized cut-over);
    /// absent: the bundle's configured delay.
    #[serde(default)]
    cutover_ms: Option<u64>,
}

fn header_actor(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-lockstep-actor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn put_bundle(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<PutQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = bundle_name(&raw)?;
    if !app.auth.may_publish(&headers) {
        app.metrics.refuse(&name, "unauthorized");
        return Err(ApiError::unauthorized());
    }
    let body = read_upload(&app, &name, &headers, body).await?;
    let actor = clean_actor(q.actor.or_else(|| header_actor(&headers)).as_deref());
    let resp = crate::publish::publish(
        &app,
        PublishRequest {
            name,
            bytes: body,
            actor,
            rollback: q.rollback.unwrap_or(false),
            reason: q.reason.filter(|r| !r.trim().is_empty()),
            cutover: q.cutover_ms.map(Duration::from_millis),
        },
    )
    .await?;
    let status = if resp.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(resp)).into_response())
}

/// A publish or rollback body, counted in the refusal metrics when refused.
async fn read_upload(
    app: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
    app.uploads.read(headers, body).await.inspect_err(|e| {
        app.metrics.refuse(name, e.code);
    })
}

async fn post_rollback(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = bundle_name(&raw)?;
    if !app.auth.may_publish(&headers) {
        app.metrics.refuse(&name, "unauthorized");
        return Err(ApiError::unauthorized());
    }
    let body = read_upload(&app, &name, &headers, body).await?;
    let req: RollbackRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("rollback body: {e}")))?;
    let actor = clean_actor(
        req.actor
            .clone()
            .or_else(|| header_actor(&headers))
            .as_deref(),
    );
    let resp = crate::publish::rollback(&app, &name, req, actor).await?;
    Ok(Json(resp).into_response())
}

/// The exact bytes of a kept revision, for a client-side rollback that re-signs them
/// with a fresh issue time (so agents' rollback protection accepts the re-activation).
/// Publisher credential: this is part of the write path, not of distribution.
async fn get_revision(
    State(app): State<Arc<AppState>>,
    Path((raw, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = bundle_name(&raw)?;
    if !app.auth.may_publish(&headers) {
        return Err(ApiError::unauthorized());
    }
    let Some(state) = app.hub.store.latest_state(&name).await? else {
        return Err(ApiError::not_found(format!("bundle {name} not found")));
    };
    let Some(target) = state.find(&id).cloned() else {
        return Err(ApiError::not_found(format!(
            "revision {id:?} is not among the {} kept revisions of bundle {name}",
            state.revisions.len()
        )));
    };
    let bytes = app.hub.store.get_blob(&name, &target.id).await?;
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(BUNDLE_CONTENT_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(&target.revision) {
        r.headers_mut().insert("x-lockstep-revision", v);
    }
    Ok(r)
}

async fn get_history(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = bundle_name(&raw)?;
    let Some(scope) = app.auth.view_scope(&headers) else {
        return Err(ApiError::unauthorized());
    };
    if !scope.covers(&name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token is scoped to other bundles than {name}"),
        ));
    }
    let Some(state) = app.hub.store.latest_state(&name).await? else {
        return Err(ApiError::not_found(format!("bundle {name} not found")));
    };
    let active = state.active_record().cloned();
    let revisions: Vec<_> = state
        .revisions
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("active".into(), json!(r.id == state.active));
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "bundle": name,
        "seq": state.seq,
        "active": active,
        "active_since": state.active_since,
        "revisions": revisions,
        "events": state.history,
    }))
    .into_response())
}

async fn ingest(
    app: &AppState,
    partition: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !app.auth.may_report_status(headers) {
        return Err(ApiError::unauthorized());
    }
    let body = app.reports.read(headers, body).await?;
    let report: StatusReport = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("status report: {e}")))?;
    app.metrics.status_reports.inc();
    // Statuses of bundles this replica does not know are dropped; one just published
    // through another replica is looked for first (at most one listing a second).
    if app.fleet.names_unknown_bundle(&report)
        && app.fleet.relist_due(std::time::Instant::now())
        && let Err(e) = app.hub.load_all().await
    {
        tracing::warn!(error = %e, "listing bundles for a status report");
    }
    let owner = app.auth.status_identity(headers);
    let to_store = app
        .fleet
        .ingest_as(&report, partition, owner.as_deref(), Utc::now())
        .map_err(|e| match e {
            IngestError::Invalid(m) => ApiError::bad_request(m),
            IngestError::Forbidden(m) => {
                tracing::warn!(message = %m, "status report refused");
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", m)
            }
            IngestError::TooLarge(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", m)
            }
        })?;
    if let Some(inst) = to_store
        && let Err(e) = app.hub.store.put_instance(&inst).await
    {
        // The report is in this replica's view; the others see it after the next write.
        tracing::warn!(instance = %inst.id, error = %e, "sharing a status report through the store");
    }
    Ok(StatusCode::OK.into_response())
}

async fn post_status(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest(&app, None, &headers, body).await
}

async fn post_status_partition(
    State(app): State<Arc<AppState>>,
    Path(partition): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest(&app, Some(&partition), &headers, body).await
}

async fn get_fleet(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(scope) = app.auth.view_scope(&headers) else {
        return Err(ApiError::unauthorized());
    };
    let view = app.fleet.view(Utc::now());
    // Bundles that instances report but this replica has not loaded yet (published
    // through another replica since the last listing): look them up once.
    let mut loaded = false;
    for b in view.bundles.iter().filter(|b| b.desired_revision.is_none()) {
        if valid_bundle_name(&b.name) && app.hub.get_or_load(&b.name).await?.is_some() {
            loaded = true;
        }
    }
    let view = if loaded {
        app.fleet.view(Utc::now())
    } else {
        view
    };
    let view = match scope {
        ViewScope::All => view,
        ViewScope::Bundles(allowed) => view.only_bundles(&allowed),
    };
    Ok(Json(view).into_response())
}

async fn get_metrics(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match app.auth.view_scope(&headers) {
        None => return Err(ApiError::unauthorized()),
        // Series of every bundle and instance: fleet-wide credentials only.
        Some(ViewScope::Bundles(_)) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "/metrics covers every bundle: use a fleet-wide token",
            ));
        }
        Some(ViewScope::All) => {}
    }
    app.fleet.update_gauges();
    let mut r = Response::new(Body::from(app.metrics.encode()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(r)
}

async fn dashboard() -> Html<&'static str> {
    Html(crate::dashboard::PAGE)
}
