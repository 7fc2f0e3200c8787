//! OPA's REST API (`v1/server/server.go`), the parts lockstep serves.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET/POST | `/v1/data[/{path}]` | `{"result", "decision_id", "metrics"?, "provenance"?, "warning"?}`; fail-closed: 503 |
//! | PUT/PATCH/DELETE | `/v1/data/{path}` | 204 (`?metrics`: 200); 400 when a bundle owns the path |
//! | GET | `/v1/policies` | `{"result": [{"id", "raw"}]}` |
//! | GET/PUT/DELETE | `/v1/policies/{id}` (id may contain `/`) | `{"result": {"id","raw"}}` / 200 `{}` |
//! | GET | `/v1/status` | `{"result": <OPA status report>}` |
//! | GET | `/health` (`?bundles`, `?plugins`, `?exclude-plugin=`, lockstep `?fresh`) | `{}` or 500 `{"error"}` |
//! | GET | `/metrics` | Prometheus text |
//!
//! With no bundle configured, decisions serve whatever the write API stored (OPA
//! without bundles, as driven by OPAL), from the start; with bundles configured, they
//! fail closed until every bundle has activated, whatever was written meanwhile.
//!
//! Fail-closed decisions (no bundle yet, or the freshness lease expired with
//! `on_stale: deny`) answer **503** with OPA's error shape
//! `{"code": "internal_error", "message": "<why>", "decision_id": "..."}`: OPA clients
//! treat any non-200 as an error, and every OPA integration turns an error into a deny,
//! whereas a 200 without `result` would be read as "undefined" and a 200 with a made-up
//! `result` would have to guess the policy's shape. Every decision response carries
//! `X-Lockstep-Revision` (the active revision, when there is one) and, when failing
//! closed or serving stale, `X-Lockstep-Fail-Closed` / `X-Lockstep-Stale` with the reason.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use lockstep_decision::{Decider, DecisionRequest, Outcome, bundle_revisions};
use lockstep_policy::EvalError;
use lockstep_sync::overlay::PatchOp;
use lockstep_sync::status::PluginState;
use lockstep_sync::{Active, DataWrite, Gate, Syncer, WriteError, WriteOutcome};
use serde_json::{Map, Value as JsonValue, json};

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct AppState {
    pub decider: Decider,
    pub metrics: crate::metrics::AgentMetrics,
    /// `lockstep.upstream_tokens`: checked on every Envoy check.
    pub upstream_tokens: Option<crate::upstream_token::TokenCheck>,
}

impl AppState {
    pub fn syncer(&self) -> &Syncer {
        self.decider.syncer()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/data", any(data_root))
        .route("/v1/data/", any(data_root))
        .route("/v1/data/{*path}", any(data_path))
        .route("/v1/policies", get(list_policies))
        .route("/v1/policies/{*id}", any(policy))
        .route("/v1/status", get(status))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// OPA's error body.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

fn error_with(status: StatusCode, code: &str, message: &str, errors: JsonValue) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message, "errors": errors})),
    )
        .into_response()
}

/// Query parameters; a key may repeat.
struct Params(HashMap<String, Vec<String>>);

impl Params {
    fn parse(raw: Option<&str>) -> Params {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            m.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Params(m)
    }

    /// OPA's boolean parameters: present without value, or `true` (any case).
    fn flag(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|vs| {
            vs.iter()
                .any(|v| v.is_empty() || v.eq_ignore_ascii_case("true"))
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.get(name).cloned().unwrap_or_default()
    }
}

/// URL path → unescaped segments (`a/b%2Fc` → `["a", "b/c"]`).
fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `["mcp", "tool-x", "0"]` → `data.mcp["tool-x"][0]`.
pub fn data_ref(segs: &[String]) -> String {
    let mut q = String::from("data");
    for s in segs {
        if is_ident(s) {
            q.push('.');
            q.push_str(s);
        } else if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) && s.len() < 19 {
            q.push('[');
            q.push_str(s);
            q.push(']');
        } else {
            q.push('[');
            q.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
            q.push(']');
        }
    }
    q
}

/// `X-Lockstep-Revision`, when there is a revision: with no bundle configured (policies
/// and data only from the write API, as with OPAL) there is none, and no header.
fn revision_header(resp: &mut Response, active: Option<&Active>) {
    if let Some(a) = active
        && !a.revision().is_empty()
        && let Ok(v) = HeaderValue::from_str(a.revision())
    {
        resp.headers_mut().insert("x-lockstep-revision", v);
    }
}

fn reason_header(resp: &mut Response, name: &'static str, reason: &str) {
    let clean: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(1024)
        .collect();
    if let Ok(v) = HeaderValue::from_str(&clean) {
        resp.headers_mut().insert(name, v);
    }
}

fn eval_errors(e: &EvalError) -> JsonValue {
    match e.diagnostic() {
        Some(d) => json!([{
            "code": d.code,
            "message": d.message,
            "location": d.location.as_ref().map(|l| json!({"file": l.file, "row": l.row, "col": l.col})),
        }]),
        None => json!([{"code": "eval_error", "message": e.to_string()}]),
    }
}

struct DataRequest {
    path: Vec<String>,
    input: Option<JsonValue>,
    input_missing: bool,
    params: Params,
    remote: Option<SocketAddr>,
}

fn decide(app: &AppState, req: DataRequest) -> Response {
    let t0 = Instant::now();
    let path_text = req.path.join("/");
    let query = data_ref(&req.path);
    let input = req.input.as_ref();
    let d = app.decider.decide(
        DecisionRequest {
            path: &path_text,
            input,
            remote: req.remote,
        },
        |policy| policy.eval_data_path(&query, input),
        |value| Ok::<_, Infallible>(value.cloned()),
    );
    let active = d.active.as_deref();
    let mut resp = match d.outcome {
        Outcome::FailClosed(reason) => {
            let mut resp = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "code": "internal_error",
                    "message": reason,
                    "decision_id": d.id,
                })),
            )
                .into_response();
            reason_header(&mut resp, "x-lockstep-fail-closed", &reason);
            resp
        }
        Outcome::Decided(value) => {
            let mut body = Map::new();
            if let Some(v) = value {
                body.insert("result".into(), v);
            }
            body.insert("decision_id".into(), json!(d.id));
            if req.params.flag("metrics") {
                body.insert(
                    "metrics".into(),
                    json!({
                        "timer_rego_query_eval_ns": d.eval_ns,
                        "timer_server_handler_ns": u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX),
                    }),
                );
            }
            if req.params.flag("provenance") {
                body.insert(
                    "provenance".into(),
                    json!({
                        "version": env!("CARGO_PKG_VERSION"),
                        "build_commit": "",
                        "build_timestamp": "",
                        "build_hostname": "",
                        "bundles": bundle_revisions(active),
                    }),
                );
            }
            if let Some(w) = &d.stale_warning {
                body.insert(
                    "warning".into(),
                    json!({"code": "lockstep_stale_policy", "message": w}),
                );
            } else if req.input_missing {
                body.insert(
                    "warning".into(),
                    json!({"code": "api_usage_warning", "message": "'input' key missing from the request"}),
                );
            }
            let mut resp = (StatusCode::OK, Json(JsonValue::Object(body))).into_response();
            if let Some(w) = &d.stale_warning {
                reason_header(&mut resp, "x-lockstep-stale", w);
            }
            resp
        }
        Outcome::EvalFailed(e) => {
            let (status, code, message) = match &e {
                EvalError::Query(_) => (
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "error(s) occurred while parsing query",
                ),
                _ => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "error(s) occurred while evaluating query",
                ),
            };
            (
                status,
                Json(json!({
                    "code": code,
                    "message": message,
                    "errors": eval_errors(&e),
                    "decision_id": d.id,
                })),
            )
                .into_response()
        }
        Outcome::Rejected(never) => match never {},
    };
    revision_header(&mut resp, active);
    resp
}

/// Parses a POST body for a decision: `{"input": ...}`; empty means no input.
fn post_input(body: &[u8]) -> Result<(Option<JsonValue>, bool), Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, true));
    }
    let v: JsonValue = serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("body contains malformed input document: {e}"),
        ))
    })?;
    match v {
        JsonValue::Object(mut m) => match m.remove("input") {
            Some(i) => Ok((Some(i), false)),
            None => Ok((None, true)),
        },
        _ => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "body contains malformed input document: expected an object",
        ))),
    }
}

async fn data_root(
    state: State<Arc<AppState>>,
    method: Method,
    connect: ConnectInfo<SocketAddr>,
    raw: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    data(state, method, String::new(), connect, raw, headers, body).await
}

async fn data_path(
    state: State<Arc<AppState>>,
    method: Method,
    Path(path): Path<String>,
    connect: ConnectInfo<SocketAddr>,
    raw: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    data(state, method, path, connect, raw, headers, body).await
}

async fn data(
    State(app): State<Arc<AppState>>,
    method: Method,
    path: String,
    connect: ConnectInfo<SocketAddr>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw.as_deref());
    let path = segments(&path);
    let remote = Some(connect.0);
    match method {
        Method::POST => {
            let (input, input_missing) = match post_input(&body) {
                Ok(x) => x,
                Err(r) => return *r,
            };
            decide(
                &app,
                DataRequest {
                    path,
                    input,
                    input_missing,
                    params,
                    remote,
                },
            )
        }
        Method::GET => {
            let input = match params.get("input") {
                None => None,
                Some(text) => match serde_json::from_str::<JsonValue>(text) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_parameter",
                            format!("parameter contains malformed input document: {e}"),
                        );
                    }
                },
            };
            decide(
                &app,
                DataRequest {
                    path,
                    input,
                    input_missing: false,
                    params,
                    remote,
                },
            )
        }
        Method::PUT | Method::PATCH | Method::DELETE => {
            write_data(&app, method, path, &params, &headers, &body).await
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn write_error(e: WriteError, on_delete_policy: bool) -> Response {
    use lockstep_sync::overlay::PathError;
    match e {
        WriteError::Owned(m) | WriteError::BadRequest(m) => {
            error(StatusCode::BAD_REQUEST, "invalid_parameter", m)
        }
        WriteError::NotFound(m) | WriteError::Path(PathError::NotFound(m)) => {
            error(StatusCode::NOT_FOUND, "resource_not_found", m)
        }
        WriteError::Path(PathError::Conflict(m)) => {
            error(StatusCode::NOT_FOUND, "resource_conflict", m)
        }
        WriteError::Path(PathError::BadPatch(m)) => {
            error(StatusCode::BAD_REQUEST, "invalid_parameter", m)
        }
        WriteError::Compile { message, errors } => error_with(
            StatusCode::BAD_REQUEST,
            if on_delete_policy {
                "invalid_operation"
            } else {
                "invalid_parameter"
            },
            &message,
            serde_json::to_value(errors).unwrap_or_default(),
        ),
    }
}

fn written(params: &Params, t0: Instant) -> Response {
    if params.flag("metrics") {
        (
            StatusCode::OK,
            Json(json!({"metrics": {"timer_server_handler_ns": u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)}})),
        )
            .into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

async fn write_data(
    app: &Arc<AppState>,
    method: Method,
    path: Vec<String>,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let t0 = Instant::now();
    // OPAL sends JSON as text/plain: the body is parsed as JSON whatever its type.
    let op = match method {
        Method::PUT => {
            let value: JsonValue = if body.iter().all(u8::is_ascii_whitespace) {
                JsonValue::Null
            } else {
                match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_parameter",
                            format!("body contains malformed JSON: {e}"),
                        );
                    }
                }
            };
            let if_none_match = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "*");
            DataWrite::Put {
                value,
                if_none_match,
            }
        }
        Method::PATCH => match serde_json::from_slice::<Vec<PatchOp>>(body) {
            Ok(ops) => DataWrite::Patch(ops),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    format!("body contains malformed JSON patch: {e}"),
                );
            }
        },
        _ => DataWrite::Delete,
    };
    let syncer = app.syncer().clone();
    let res = tokio::task::spawn_blocking(move || syncer.write_data(&path, op)).await;
    match res {
        Ok(Ok(WriteOutcome::Written)) => {
            app.metrics.writes.inc();
            written(params, t0)
        }
        Ok(Ok(WriteOutcome::NotModified)) => StatusCode::NOT_MODIFIED.into_response(),
        Ok(Err(e)) => write_error(e, false),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        ),
    }
}

async fn list_policies(State(app): State<Arc<AppState>>) -> Response {
    let list: Vec<JsonValue> = app
        .syncer()
        .policies()
        .into_iter()
        .map(|(id, raw)| json!({"id": id, "raw": raw}))
        .collect();
    Json(json!({"result": list})).into_response()
}

async fn policy(
    State(app): State<Arc<AppState>>,
    method: Method,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw.as_deref());
    let id = percent_encoding::percent_decode_str(&id)
        .decode_utf8_lossy()
        .into_owned();
    match method {
        Method::GET => match app.syncer().policies().into_iter().find(|(i, _)| *i == id) {
            Some((id, raw)) => Json(json!({"result": {"id": id, "raw": raw}})).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "resource_not_found",
                format!("storage_not_found_error: policy id {id:?}"),
            ),
        },
        Method::PUT => {
            let text = match String::from_utf8(body.to_vec()) {
                Ok(t) => t,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_parameter",
                        "policy is not UTF-8 text",
                    );
                }
            };
            let syncer = app.syncer().clone();
            let res = tokio::task::spawn_blocking(move || syncer.put_policy(&id, text)).await;
            match res {
                Ok(Ok(())) => {
                    app.metrics.writes.inc();
                    policy_ok(&params)
                }
                Ok(Err(e)) => write_error(e, false),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    e.to_string(),
                ),
            }
        }
        Method::DELETE => {
            let syncer = app.syncer().clone();
            let res = tokio::task::spawn_blocking(move || syncer.delete_policy(&id)).await;
            match res {
                Ok(Ok(())) => {
                    app.metrics.writes.inc();
                    policy_ok(&params)
                }
                Ok(Err(e)) => write_error(e, true),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    e.to_string(),
                ),
            }
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn policy_ok(params: &Params) -> Response {
    if params.flag("metrics") {
        Json(json!({"metrics": {}})).into_response()
    } else {
        Json(json!({})).into_response()
    }
}

fn report(app: &AppState) -> JsonValue {
    if let Some(l) = app.decider.logger() {
        let dropped = l.dropped_total();
        app.syncer().set_plugin_state(
            "decision_logs",
            if dropped == 0 {
                PluginState::ok()
            } else {
                PluginState {
                    state: "WARN".into(),
                    message: Some(format!(
                        "{dropped} decision log events dropped (queue or upload buffer full, or too large)"
                    )),
                }
            },
        );
    }
    serde_json::to_value(app.syncer().status_report()).unwrap_or_default()
}

async fn status(State(app): State<Arc<AppState>>) -> Response {
    Json(json!({"result": report(&app)})).into_response()
}

async fn health(State(app): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    if (params.flag("bundles") || params.flag("bundle")) && !app.syncer().bundles_ready() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "one or more bundles are not activated"})),
        )
            .into_response();
    }
    if params.flag("plugins") {
        let excluded = params.all("exclude-plugin");
        let rep = report(&app);
        let down = rep
            .get("plugins")
            .and_then(JsonValue::as_object)
            .is_some_and(|m| {
                m.iter().any(|(name, st)| {
                    !excluded.contains(name)
                        && st.get("state").and_then(JsonValue::as_str) != Some("OK")
                })
            });
        if down {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "one or more plugins are not up"})),
            )
                .into_response();
        }
    }
    if params.flag("fresh") {
        match app.syncer().gate() {
            Gate::Deny { reason, .. }
            | Gate::Serve {
                warning: Some(reason),
                ..
            } => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": reason})),
                )
                    .into_response();
            }
            Gate::Serve { .. } => {}
        }
    }
    Json(json!({})).into_response()
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let mut r = app.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<_>>();
        assert_eq!(data_ref(&[]), "data");
        assert_eq!(data_ref(&s(&["mcp", "allow"])), "data.mcp.allow");
        assert_eq!(
            data_ref(&s(&["a-b", "0", "x\"y"])),
            "data[\"a-b\"][0][\"x\\\"y\"]"
        );
        assert_eq!(segments("/a/b%2Fc//d"), s(&["a", "b/c", "d"]));
    }

    #[test]
    fn params() {
        let p = Params::parse(Some("metrics&provenance=TRUE&pretty=false&x=1&x=2"));
        assert!(p.flag("metrics") && p.flag("provenance") && !p.flag("pretty") && !p.flag("y"));
        assert_eq!(p.all("x"), vec!["1", "2"]);
    }
}
