//! The Streamable HTTP front door (`POST/GET/DELETE /mcp`, `/health`, `/metrics`):
//! origin and host checks, the identity step, strict parsing, the era and session of
//! each request, the policy decision on one revision, and forwarding to the upstream
//! that owns the tool, prompt or resource, with the answer streamed back.
//!
//! Order of checks on every POST, each answered with a JSON-RPC error the client can
//! show: foreign `Origin` or a non-loopback `Host` on a loopback bind (403) →
//! credential (401) → body size (413) → JSON-RPC shape (400) → protocol era, headers
//! and session (400/404) → name routing (-32602) → policy (403, 503 when failing
//! closed) → upstream. Nothing reaches an upstream before the policy allowed it.

// Handlers return early with the answer itself: a refusal *is* a response, built once on
// the error path, where boxing would buy nothing.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use lockstep_auth::jwt::{JwtError, JwtValidator};
use lockstep_decision::Decider;
use serde_json::{Map, Value, json};

use crate::api_keys::{ApiIdentity, ApiKeys};
use crate::audit::{Audit, AuditRecord, UpstreamOutcome, digest};
use crate::config::GatewayConfig;
use crate::denial::{Denial, DenialKind, INSUFFICIENT_SCOPE, UNAUTHENTICATED};
use crate::era::{
    Era, HEADER_PROTOCOL_VERSION, ProtocolVersion, REMOVED_IN_MODERN, RequestEra,
    check_modern_headers, check_modern_meta, check_session_version, classify, modern_only,
};
use crate::input::{Agent, PolicyInput, SessionInfo};
use crate::jsonrpc::{
    ErrorObject, ErrorResponse, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, Message,
    Notification, RawObject, Request, RequestId, methods, parse_message, result_response,
};
use crate::layers::{self, Verdict};
use crate::metrics::{GatewayMetrics, RequestLabels, UpstreamLabels};
use crate::naming::{ListKind, Naming, Route};
use crate::relay::{Rewriter, open_answer, open_position};
use crate::session::{SessionSealer, SessionState};
use crate::subscriptions;
use crate::upstream::{
    Answer, ModernHeaders, Outgoing, OutgoingGrant, SESSION_HEADER, Upstream, UpstreamError,
};

/// JSON-RPC error code for a session the gateway does not know (the Python SDK's).
const SESSION_NOT_FOUND: i64 = INVALID_REQUEST;
/// Upstream failures (transport, timeout): outside the reserved range, like lockstep's
/// other codes.
pub const UPSTREAM_UNAVAILABLE: i64 = -31004;
/// Session-wide in the 2025 era: sent to every upstream of the session.
const LOGGING_SET_LEVEL: &str = "logging/setLevel";
/// Names a prompt or a resource template in `params.ref`: routed like them.
const COMPLETION_COMPLETE: &str = "completion/complete";
/// Pages read from one upstream for one list.
const MAX_LIST_PAGES: usize = 64;

/// Everything a request needs; shared by all handlers.
pub struct Gateway {
    pub cfg: GatewayConfig,
    pub decider: Decider,
    pub naming: Naming,
    pub upstreams: Vec<Upstream>,
    pub api_keys: ApiKeys,
    /// `identity.oauth`: access tokens checked against the issuer's keys.
    pub oauth: Option<Arc<JwtValidator>>,
    /// `identity.oauth.introspection`: opaque tokens asked about at the server.
    pub introspector: Option<Arc<lockstep_auth::introspect::Introspector>>,
    /// `upstream_tokens`: the signer of ephemeral upstream tokens (its JWKS is served).
    pub upstream_tokens: Option<Arc<crate::upstream_token::UpstreamTokens>>,
    /// `identity.anonymous`: who a request without any credential is (loopback only).
    pub anonymous: Option<ApiIdentity>,
    pub sealer: SessionSealer,
    pub audit: Audit,
    pub metrics: GatewayMetrics,
    /// The listener is on a loopback address: `Host` must be a loopback name too.
    pub loopback: bool,
    pub supported: Vec<ProtocolVersion>,
    /// Permits for client GET streams (`limits.max_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
}

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/mcp", post(post_mcp).get(get_mcp).delete(delete_mcp))
        .route("/health", get(health))
        .route(crate::oauth::METADATA_PATH, get(resource_metadata))
        .route("/.well-known/jwks.json", get(upstream_jwks))
        .route(
            &format!("{}/{{*path}}", crate::oauth::METADATA_PATH),
            get(resource_metadata),
        )
        .route("/metrics", get(metrics))
        .with_state(gw)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JSON body with `status`.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(status: StatusCode, e: &ErrorResponse) -> Response {
    json_response(status, &serde_json::to_value(e).unwrap_or_default())
}

fn rpc_error(status: StatusCode, id: Option<&RequestId>, code: i64, message: &str) -> Response {
    error_response(
        status,
        &ErrorResponse::new(id.cloned(), ErrorObject::new(code, message, None)),
    )
}

/// The era's status for "method not found": 404 in 2026-07-28, 200 before.
fn not_found_status(era: Era) -> StatusCode {
    match era {
        Era::Modern => StatusCode::NOT_FOUND,
        Era::Legacy => StatusCode::OK,
    }
}

fn host_is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How one request went, for the audit line and the metrics.
struct Trace {
    t0: Instant,
    identity: Option<String>,
    method: String,
    tool: Option<String>,
    resource: Option<String>,
    arguments_sha256: Option<String>,
    decision: &'static str,
    layer: Option<String>,
    reason: Option<String>,
    decision_id: Option<String>,
    revision: Option<String>,
    upstream: Option<UpstreamOutcome>,
    upstream_label: String,
}

impl Trace {
    fn new(t0: Instant) -> Trace {
        Trace {
            t0,
            identity: None,
            method: String::new(),
            tool: None,
            resource: None,
            arguments_sha256: None,
            decision: "refused",
            layer: None,
            reason: None,
            decision_id: None,
            revision: None,
            upstream: None,
            upstream_label: String::new(),
        }
    }

    fn denied(&mut self, d: &Denial) {
        self.decision = "deny";
        self.layer = d.layer.clone();
        self.reason = Some(d.reason.clone());
        self.decision_id = Some(d.decision_id.clone());
        self.revision = d.revision.clone();
    }

    fn finish(self, gw: &Gateway) {
        let latency = self.t0.elapsed().as_secs_f64();
        let labels = RequestLabels {
            method: if self.method.is_empty() {
                "(unparsed)".into()
            } else {
                self.method.clone()
            },
            decision: self.decision,
            upstream: self.upstream_label.clone(),
        };
        gw.metrics.requests.get_or_create(&labels).inc();
        gw.metrics.latency.get_or_create(&labels).observe(latency);
        gw.audit.record(&AuditRecord {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            identity: self.identity,
            method: self.method,
            tool: self.tool,
            resource: self.resource,
            arguments_sha256: self.arguments_sha256,
            arguments: None,
            decision: self.decision,
            layer: self.layer,
            reason: self.reason,
            decision_id: self.decision_id,
            revision: self.revision,
            upstream: self.upstream,
            latency_ms: latency * 1e3,
        });
    }
}

/// An upstream token's grant for `method` (and the upstream's own `name` of its
/// target) on behalf of `subject`; a decided `tools/call` adds its argument digest and
/// decision (`targeted`).
fn grant_for(subject: &str, method: &str, name: Option<&str>) -> OutgoingGrant {
    OutgoingGrant {
        subject: subject.to_string(),
        scope: match name {
            Some(n) => format!("{method}:{n}"),
            None => method.to_string(),
        },
        ..OutgoingGrant::default()
    }
}

/// The request context once the era and session are known.
struct Ctx<'a> {
    who: &'a ApiIdentity,
    agent: Agent,
    era: Era,
    version: ProtocolVersion,
    session: Option<SessionState>,
    headers: &'a HeaderMap,
}

impl Ctx<'_> {
    fn session_info(&self) -> SessionInfo {
        SessionInfo {
            id: self.session.as_ref().map(|s| s.id.clone()),
            protocol_version: self.version,
        }
    }

    fn outgoing(&self, upstream: &str, method: &str, name: Option<&str>) -> Outgoing {
        let modern = (self.era == Era::Modern).then(|| ModernHeaders {
            method: method.to_string(),
            name: name.map(str::to_string),
            params: self
                .headers
                .iter()
                .filter(|(k, _)| k.as_str().starts_with("mcp-param-"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
        Outgoing {
            session: self
                .session
                .as_ref()
                .and_then(|s| s.upstream_sessions.get(upstream).cloned()),
            protocol_version: Some(self.version),
            modern,
            grant: Some(grant_for(&self.who.id, method, name)),
        }
    }
}

impl Gateway {
    fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Origin and DNS-rebinding checks.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Response> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let ok = origin
                .to_str()
                .is_ok_and(|o| self.cfg.origin_allowed(o) || self.same_loopback_origin(o, headers));
            if !ok {
                return Err(rpc_error(
                    StatusCode::FORBIDDEN,
                    None,
                    INVALID_REQUEST,
                    "Origin not allowed",
                ));
            }
        }
        if self.loopback
            && let Some(host) = headers.get(header::HOST)
            && !host.to_str().is_ok_and(host_is_loopback)
        {
            return Err(rpc_error(
                StatusCode::FORBIDDEN,
                None,
                INVALID_REQUEST,
                "Host not allowed: this gateway listens on a loopback address",
            ));
        }
        Ok(())
    }

    /// A page served by this very loopback listener (`Origin` = `http://` + its loopback
    /// `Host`): not a DNS-rebinding attempt, whose `Host` or `Origin` names another host.
    fn same_loopback_origin(&self, origin: &str, headers: &HeaderMap) -> bool {
        self.loopback
            && headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .is_some_and(|host| {
                    host_is_loopback(host)
                        && origin
                            .strip_prefix("http://")
                            .is_some_and(|o| o.eq_ignore_ascii_case(host))
                })
    }

    /// Who the request is: an OAuth access token (a JWT, when `identity.oauth` is
    /// set), an API key, or with no credential at all the anonymous identity (loopback
    /// only). Anything else is 401, whose challenge points OAuth clients to the
    /// protected resource metadata.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Cow<'_, ApiIdentity>, Response> {
        if !headers.contains_key(header::AUTHORIZATION)
            && let Some(anon) = &self.anonymous
        {
            return Ok(Cow::Borrowed(anon));
        }
        let token = lockstep_auth::bearer(headers);
        if let (Some(t), Some(v)) = (token, &self.oauth)
            && JwtValidator::looks_like_jwt(t)
        {
            return self.token_identity(v.validate(t).await);
        }
        if let Some(who) = token.and_then(|t| self.api_keys.authenticate(t)) {
            return Ok(Cow::Borrowed(who));
        }
        if let (Some(t), Some(i)) = (token, &self.introspector) {
            return self.token_identity(i.introspect(t).await);
        }
        Err(self.unauthorized(None))
    }

    /// The identity an access token's checked claims name, or the 401 for a refused
    /// token (counted, logged without the token).
    fn token_identity(
        &self,
        checked: Result<Map<String, Value>, JwtError>,
    ) -> Result<Cow<'_, ApiIdentity>, Response> {
        let refused = match checked {
            Ok(claims) => match crate::oauth::identity(claims, &self.cfg.identity.claims_mapping) {
                Ok(who) => return Ok(Cow::Owned(who)),
                Err(e) => JwtError::MissingClaim(e.0),
            },
            Err(e) => e,
        };
        self.metrics.token_refusals.inc();
        tracing::info!(reason = %refused, "access token refused");
        Err(self.unauthorized(Some(&refused)))
    }

    /// 403 with an `insufficient_scope` challenge when `who` lacks a scope that
    /// `identity.required_scopes` names for `method`: a token with more scopes would
    /// pass, so the client may ask its authorization server for one.
    fn scope_challenge(&self, who: &ApiIdentity, method: &str, id: &RequestId) -> Option<Response> {
        let missing = self.cfg.identity.missing_scopes(method, &who.scopes);
        if missing.is_empty() {
            return None;
        }
        let message = format!(
            "Forbidden: {method} needs the scope {}, which this credential does not carry",
            missing.join(" ")
        );
        let mut r = rpc_error(
            StatusCode::FORBIDDEN,
            Some(id),
            INSUFFICIENT_SCOPE,
            &message,
        );
        let needed = self.cfg.identity.missing_scopes(method, &[]);
        let challenge = crate::oauth::scope_challenge(self.cfg.identity.oauth.as_ref(), &needed);
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        Some(r)
    }

    fn unauthorized(&self, refused: Option<&JwtError>) -> Response {
        let message = match (refused, &self.oauth) {
            (Some(e), _) => format!("Unauthorized: {e}"),
            (None, Some(_)) => {
                "Unauthorized: an access token for this resource or a valid API key is required (Authorization: Bearer <token>)".to_string()
            }
            (None, None) => {
                "Unauthorized: a valid API key is required (Authorization: Bearer <key>)".to_string()
            }
        };
        let mut r = rpc_error(StatusCode::UNAUTHORIZED, None, UNAUTHENTICATED, &message);
        let challenge = match &self.cfg.identity.oauth {
            Some(o) => crate::oauth::challenge(o, refused),
            None => "Bearer realm=\"lockstep-gateway\"".to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

fn agent_of(who: &ApiIdentity) -> Agent {
    Agent {
        id: who.id.clone(),
        role: who.role.clone(),
        scopes: who.scopes.clone(),
        claims: who.claims.clone(),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(_) => Err(rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            INVALID_REQUEST,
            &format!("request body larger than {limit} bytes (limits.max_body_bytes)"),
        )),
    }
}

async fn post_mcp(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    let mut trace = Trace::new(Instant::now());
    let resp = post_inner(&gw, &headers, body, &mut trace).await;
    match resp {
        Handled::Done(r) => {
            let r = with_revision(r, trace.revision.as_deref());
            trace.finish(&gw);
            r
        }
        Handled::Streaming(r) => r,
    }
}

/// `X-Lockstep-Revision` on every answer a revision decided, allowed or denied.
fn with_revision(mut r: Response, revision: Option<&str>) -> Response {
    if let Some(rev) = revision
        && let Ok(v) = HeaderValue::from_str(rev)
    {
        r.headers_mut().insert("x-lockstep-revision", v);
    }
    r
}

/// A response, and whether its trace was already handed to a stream that finishes it.
enum Handled {
    Done(Response),
    Streaming(Response),
}

impl From<Response> for Handled {
    fn from(r: Response) -> Self {
        Handled::Done(r)
    }
}

async fn post_inner(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    body: Body,
    trace: &mut Trace,
) -> Handled {
    if let Err(r) = gw.check_origin(headers) {
        return r.into();
    }
    let who = match gw.authenticate(headers).await {
        Ok(w) => w,
        Err(r) => return r.into(),
    };
    let who = &*who;
    trace.identity = Some(who.id.clone());
    let bytes = match read_body(body, gw.cfg.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r.into(),
    };
    let msg = match parse_message(&bytes, &gw.cfg.limits.parse_limits()) {
        Ok(m) => m,
        Err(e) => return error_response(e.http_status(), &e.to_response()).into(),
    };
    match msg {
        Message::Request(req) => {
            trace.method = req.method.clone();
            request(gw, who, headers, req, trace).await
        }
        Message::Notification(n) => {
            trace.method = n.method.clone();
            notification(gw, who, headers, n, trace).await.into()
        }
        Message::Response(resp) => answer(gw, who, headers, resp, trace).await.into(),
    }
}

/// Era, headers and session of a request.
fn context<'a>(
    gw: &Gateway,
    who: &'a ApiIdentity,
    headers: &'a HeaderMap,
    req: &Request,
) -> Result<Ctx<'a>, Response> {
    let id = Some(&req.id);
    let header_version = headers
        .get(HEADER_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok());
    let era = classify(
        &req.method,
        req.params.as_ref(),
        header_version,
        &gw.supported,
    )
    .map_err(|e| error_response(e.http_status(), &e.to_response(id)))?;
    let agent = agent_of(who);
    match era {
        RequestEra::Initialize { negotiated, .. } => Ok(Ctx {
            who,
            agent,
            era: Era::Legacy,
            version: negotiated,
            session: None,
            headers,
        }),
        RequestEra::Modern(v) => {
            check_modern_headers(headers, v, &req.method, req.params.as_ref(), true)
                .and_then(|()| check_modern_meta(req.params.as_ref()))
                .map_err(|e| error_response(e.http_status(), &e.to_response(id)))?;
            Ok(Ctx {
                who,
                agent,
                era: Era::Modern,
                version: v,
                session: None,
                headers,
            })
        }
        RequestEra::InSession => {
            let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
                return Err(rpc_error(
                    StatusCode::BAD_REQUEST,
                    id,
                    INVALID_REQUEST,
                    "Bad Request: Missing session ID",
                ));
            };
            let state = gw.sealer.open_for(sid, now_secs(), &who.id).map_err(|_| {
                rpc_error(
                    StatusCode::NOT_FOUND,
                    id,
                    SESSION_NOT_FOUND,
                    "Session not found",
                )
            })?;
            check_session_version(headers, state.protocol_version)
                .map_err(|e| error_response(e.http_status(), &e.to_response(id)))?;
            Ok(Ctx {
                who,
                agent,
                era: Era::Legacy,
                version: state.protocol_version,
                session: Some(state),
                headers,
            })
        }
    }
}

async fn request(
    gw: &Arc<Gateway>,
    who: &ApiIdentity,
    headers: &HeaderMap,
    req: Request,
    trace: &mut Trace,
) -> Handled {
    let ctx = match context(gw, who, headers, &req) {
        Ok(c) => c,
        Err(r) => return r.into(),
    };
    if let Some(r) = gw.scope_challenge(who, &req.method, &req.id) {
        trace.reason = Some("insufficient_scope".into());
        return r.into();
    }
    let list = match req.method.as_str() {
        methods::TOOLS_LIST => Some(ListKind::Tools),
        methods::PROMPTS_LIST => Some(ListKind::Prompts),
        methods::RESOURCES_LIST => Some(ListKind::Resources),
        methods::RESOURCES_TEMPLATES_LIST => Some(ListKind::ResourceTemplates),
        _ => None,
    };
    if ctx.era == Era::Modern && REMOVED_IN_MODERN.contains(&req.method.as_str()) {
        return rpc_error(
            StatusCode::NOT_FOUND,
            Some(&req.id),
            METHOD_NOT_FOUND,
            &format!(
                "Method not found: {} was removed in protocol version {}",
                req.method, ctx.version
            ),
        )
        .into();
    }
    if let Some(kind) = list {
        return list_request(gw, &ctx, &req, kind, trace).await.into();
    }
    match req.method.as_str() {
        methods::INITIALIZE => initialize(gw, &ctx, &req, trace).await.into(),
        methods::SERVER_DISCOVER => discover(gw, &ctx, &req, trace).await.into(),
        "ping" if ctx.era == Era::Legacy => match decide_plain(gw, &ctx, &req, None, trace) {
            Ok(()) => json_response(StatusCode::OK, &result_response(&req.id, json!({}))).into(),
            Err(r) => r.into(),
        },
        LOGGING_SET_LEVEL if ctx.era == Era::Legacy => {
            set_level(gw, &ctx, &req, trace).await.into()
        }
        COMPLETION_COMPLETE => completion(gw, &ctx, req, trace).await,
        subscriptions::LISTEN if ctx.era == Era::Modern => {
            subscriptions_listen(gw, &ctx, req, trace).await
        }
        _ if req.target().is_some() => targeted(gw, &ctx, req, trace).await,
        _ => rpc_error(
            not_found_status(ctx.era),
            Some(&req.id),
            METHOD_NOT_FOUND,
            &format!(
                "Method not found: {} (not served through this gateway)",
                req.method
            ),
        )
        .into(),
    }
}

/// The answer to a denial: a JSON-RPC error (403, or 503 when failing closed), or for
/// a `tools/call` denied by a layer configured so, an `isError` result (200).
fn denial_response(d: &Denial, id: &RequestId, era: Era, as_tool_error: bool) -> Response {
    if as_tool_error {
        return json_response(StatusCode::OK, &d.tool_result_response(id, era));
    }
    let status = match d.kind {
        DenialKind::PolicyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        DenialKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        DenialKind::Policy => StatusCode::FORBIDDEN,
    };
    error_response(status, &d.error_response(Some(id)))
}

/// The layers' decision on a request, routed to one upstream (`route`) or to none
/// (ping, initialize, discover); `Err` is the answer to a denial (a `tools/call` denied
/// by a layer configured so: an `isError` result) or to a request the policy input
/// cannot be made from.
fn decide_plain(
    gw: &Gateway,
    ctx: &Ctx<'_>,
    req: &Request,
    route: Option<&Route>,
    trace: &mut Trace,
) -> Result<(), Response> {
    let input = match PolicyInput::for_request(&ctx.agent, &ctx.session_info(), req, route) {
        Ok(i) => i.to_value(),
        Err(e) => {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                Some(&req.id),
                INVALID_PARAMS,
                &e.to_string(),
            ));
        }
    };
    let decided = layers::decide(
        &gw.decider,
        &gw.cfg.layers,
        &req.method,
        &input,
        &format!("mcp/{}", req.method),
    );
    trace.decision_id = Some(decided.decision_id.clone());
    trace.revision = decided.revision.clone();
    match decided.denial() {
        None => {
            trace.decision = "allow";
            Ok(())
        }
        Some(d) => {
            trace.denied(&d);
            let as_tool_error = req.method == methods::TOOLS_CALL
                && matches!(
                    &decided.verdict,
                    Ok(Verdict::Deny {
                        as_tool_error: true,
                        ..
                    })
                );
            Err(denial_response(&d, &req.id, ctx.era, as_tool_error))
        }
    }
}

/// `logging/setLevel` (2025 era): decided, then passed to every upstream of the
/// session; an upstream that refuses or is down is logged, not fatal.
async fn set_level(gw: &Arc<Gateway>, ctx: &Ctx<'_>, req: &Request, trace: &mut Trace) -> Response {
    if let Err(r) = decide_plain(gw, ctx, req, None, trace) {
        return r;
    }
    trace.upstream_label = "*".into();
    let body = req.encode();
    for (u, _, v) in fan_out(gw, ctx, LOGGING_SET_LEVEL, &req.id, |_| body.clone()).await {
        if let Err(e) = result_of(&v) {
            tracing::debug!(upstream = %u.name, error = %e, "logging/setLevel refused by upstream");
        }
    }
    json_response(StatusCode::OK, &result_response(&req.id, json!({})))
}

/// `completion/complete`: `params.ref` names a prompt (`ref/prompt`, `name`) or a
/// resource template (`ref/resource`, `uri`); routed, decided and forwarded like a
/// request for that prompt or resource, with the upstream's own name in `ref`.
async fn completion(gw: &Arc<Gateway>, ctx: &Ctx<'_>, req: Request, trace: &mut Trace) -> Handled {
    let reference = req.param("ref").and_then(Value::as_object);
    let kind = reference
        .and_then(|r| r.get("type"))
        .and_then(Value::as_str);
    let (member, target) = match (kind, reference) {
        (Some("ref/prompt"), Some(r)) => (
            "name",
            r.get("name")
                .and_then(Value::as_str)
                .map(crate::jsonrpc::Target::Prompt),
        ),
        (Some("ref/resource"), Some(r)) => (
            "uri",
            r.get("uri")
                .and_then(Value::as_str)
                .map(crate::jsonrpc::Target::Resource),
        ),
        _ => ("", None),
    };
    let Some(target) = target else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Some(&req.id),
            INVALID_PARAMS,
            "completion/complete needs params.ref: {type: \"ref/prompt\", name} or {type: \"ref/resource\", uri}",
        )
        .into();
    };
    let route = match route_of(gw, &req.id, target) {
        Ok(r) => r,
        Err(r) => return r.into(),
    };
    trace.upstream_label = route.upstream.clone();
    if let Err(r) = decide_plain(gw, ctx, &req, Some(&route), trace) {
        return r.into();
    }
    let Some(upstream) = gw.upstream(&route.upstream) else {
        return rpc_error(
            StatusCode::BAD_GATEWAY,
            Some(&req.id),
            UPSTREAM_UNAVAILABLE,
            "unknown upstream",
        )
        .into();
    };
    let mut new_ref = reference.cloned().unwrap_or_default();
    new_ref.insert(member.into(), Value::String(route.name.clone()));
    let forwarded = Request {
        id: req.id.clone(),
        method: req.method.clone(),
        params: req
            .params
            .as_ref()
            .map(|p| p.with_member("ref", &Value::Object(new_ref))),
    };
    let out = ctx.outgoing(&route.upstream, &req.method, None);
    let rewriter = post_rewriter(ctx);
    forward(gw, upstream, forwarded, out, rewriter, trace).await
}

/// The upstream and its own name for a client-visible tool, prompt or resource.
fn route_of(
    gw: &Gateway,
    id: &RequestId,
    target: crate::jsonrpc::Target<'_>,
) -> Result<Route, Response> {
    gw.naming
        .resolve_target(target)
        .map_err(|e| rpc_error(StatusCode::BAD_REQUEST, Some(id), e.code(), &e.to_string()))
}

/// 2025 era: a forwarded request's stream has its event ids and the upstream's
/// requests to the client rewritten, so the client's answers and resumptions find
/// their way back.
fn post_rewriter(ctx: &Ctx<'_>) -> Option<Rewriter> {
    ctx.session
        .as_ref()
        .filter(|_| ctx.era == Era::Legacy)
        .map(|s| Rewriter::for_post(&s.id))
}

/// tools/call, prompts/get, resources/read …: route by name, decide, forward.
async fn targeted(gw: &Arc<Gateway>, ctx: &Ctx<'_>, req: Request, trace: &mut Trace) -> Handled {
    let Some(target) = req.target() else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Some(&req.id),
            INVALID_PARAMS,
            "no target",
        )
        .into();
    };
    let route = match route_of(gw, &req.id, target) {
        Ok(r) => r,
        Err(r) => return r.into(),
    };
    match req.method.as_str() {
        methods::TOOLS_CALL => {
            trace.tool = Some(route.name.clone());
            trace.arguments_sha256 = req
                .params
                .as_ref()
                .and_then(|p| p.raw_member("arguments"))
                .map(digest);
        }
        methods::RESOURCES_READ | methods::RESOURCES_SUBSCRIBE | methods::RESOURCES_UNSUBSCRIBE => {
            trace.resource = Some(route.name.clone());
        }
        _ => trace.tool = Some(route.name.clone()),
    }
    trace.upstream_label = route.upstream.clone();
    if let Err(r) = decide_plain(gw, ctx, &req, Some(&route), trace) {
        return r.into();
    }
    let Some(upstream) = gw.upstream(&route.upstream) else {
        return rpc_error(
            StatusCode::BAD_GATEWAY,
            Some(&req.id),
            UPSTREAM_UNAVAILABLE,
            "unknown upstream",
        )
        .into();
    };
    if ctx.era == Era::Legacy
        && !ctx
            .session
            .as_ref()
            .is_some_and(|s| s.upstream_sessions.contains_key(&route.upstream))
    {
        return rpc_error(
            StatusCode::BAD_GATEWAY,
            Some(&req.id),
            UPSTREAM_UNAVAILABLE,
            &format!(
                "upstream {:?} was not reachable when this session started; initialize again",
                route.upstream
            ),
        )
        .into();
    }
    let member = target.member();
    let forwarded = match &req.params {
        Some(p) if p.get(member).and_then(Value::as_str) != Some(route.name.as_str()) => Request {
            id: req.id.clone(),
            method: req.method.clone(),
            params: Some(p.with_member(member, &Value::String(route.name.clone()))),
        },
        _ => req.clone(),
    };
    let mut out = ctx.outgoing(&route.upstream, &req.method, Some(&route.name));
    if let Some(g) = &mut out.grant {
        if req.method == methods::TOOLS_CALL {
            let empty = Value::Object(Map::new());
            let args = req.param("arguments").unwrap_or(&empty);
            g.arguments_sha256 = Some(crate::upstream_token::arguments_sha256(args));
        }
        g.decision_id = trace.decision_id.clone();
        g.revision = trace.revision.clone();
    }
    // 2025 era: the stream's event ids and the upstream's requests to the client are
    // rewritten so the client's answers and resumptions find their way back.
    let rewriter = post_rewriter(ctx);
    forward(gw, upstream, forwarded, out, rewriter, trace).await
}

/// At most this many URIs in one `subscriptions/listen` filter (each is decided).
const MAX_LISTEN_URIS: usize = 256;

/// 2026-07-28 `subscriptions/listen`: decided as itself and, for each resource URI it
/// names, as a `resources/read` of that URI (a caller hears of changes only to what it
/// may read); then sent to the upstreams its filter concerns, and their streams merged
/// into one (`subscriptions.rs`), counted against `limits.max_streams`.
async fn subscriptions_listen(
    gw: &Arc<Gateway>,
    ctx: &Ctx<'_>,
    req: Request,
    trace: &mut Trace,
) -> Handled {
    let bad = |msg: &str| -> Handled {
        rpc_error(StatusCode::BAD_REQUEST, Some(&req.id), INVALID_PARAMS, msg).into()
    };
    let Some(filter) = req
        .param("notifications")
        .and_then(Value::as_object)
        .cloned()
    else {
        return bad("subscriptions/listen needs params.notifications (an object)");
    };
    let uris: Vec<String> = match filter.get(subscriptions::RESOURCE_SUBSCRIPTIONS) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_LISTEN_URIS => {
            match a.iter().map(|v| v.as_str().map(str::to_string)).collect() {
                Some(v) => v,
                None => return bad("params.notifications.resourceSubscriptions must list URIs"),
            }
        }
        Some(Value::Array(_)) => {
            return bad(&format!(
                "params.notifications.resourceSubscriptions: at most {MAX_LISTEN_URIS} URIs"
            ));
        }
        Some(_) => return bad("params.notifications.resourceSubscriptions must list URIs"),
    };
    if let Err(r) = decide_plain(gw, ctx, &req, None, trace) {
        return r.into();
    }
    let mut routes = Vec::new();
    for uri in &uris {
        let route = match route_of(gw, &req.id, crate::jsonrpc::Target::Resource(uri)) {
            Ok(r) => r,
            Err(r) => return r.into(),
        };
        let read = Request {
            id: req.id.clone(),
            method: methods::RESOURCES_READ.into(),
            params: req
                .params
                .as_ref()
                .map(|p| p.with_member("uri", &Value::String(uri.clone()))),
        };
        trace.resource = Some(route.name.clone());
        if let Err(r) = decide_plain(gw, ctx, &read, Some(&route), trace) {
            return r.into();
        }
        routes.push(route);
    }
    let names: Vec<&str> = gw.upstreams.iter().map(|u| u.name.as_str()).collect();
    let plan = subscriptions::split(&filter, &routes, &names);
    if plan.is_empty() {
        return bad("subscriptions/listen asks for no notifications");
    }
    let Ok(permit) = gw.streams.clone().try_acquire_owned() else {
        return rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&req.id),
            INVALID_REQUEST,
            &format!(
                "too many open streams (limits.max_streams = {})",
                gw.cfg.limits.max_streams
            ),
        )
        .into();
    };
    let opens = plan.iter().filter_map(|(name, f)| {
        let u = gw.upstream(name)?;
        let body = Request {
            id: req.id.clone(),
            method: req.method.clone(),
            params: req
                .params
                .as_ref()
                .map(|p| p.with_member("notifications", &Value::Object(f.clone()))),
        }
        .encode();
        let out = ctx.outgoing(name, subscriptions::LISTEN, None);
        Some(async move { (u, u.post(body, &out, u.request_timeout).await) })
    });
    let mut streams = Vec::new();
    let mut refusal = None;
    for (u, answer) in futures_util::future::join_all(opens).await {
        match answer {
            Ok(Answer::Stream { events, .. }) => streams.push((u.name.clone(), events)),
            Ok(Answer::Json { status, body, .. }) => {
                let why = serde_json::from_slice::<Value>(&body)
                    .map_or_else(LeftOut::NotJson, LeftOut::Rpc);
                omitted(gw, u, subscriptions::LISTEN, &why);
                refusal.get_or_insert((status, body));
            }
            Ok(Answer::Accepted) => omitted(gw, u, subscriptions::LISTEN, &LeftOut::NoAnswer),
            Err(e) => omitted(gw, u, subscriptions::LISTEN, &LeftOut::Upstream(e)),
        }
    }
    trace.upstream_label = match plan.as_slice() {
        [(only, _)] => only.clone(),
        _ => "*".into(),
    };
    if streams.is_empty() {
        // No upstream listens: its own answer when there was one (e.g. -32601).
        return match refusal {
            Some((status, body)) => upstream_json(status, body).into(),
            None => rpc_error(
                StatusCode::BAD_GATEWAY,
                Some(&req.id),
                UPSTREAM_UNAVAILABLE,
                "no upstream could open the subscription",
            )
            .into(),
        };
    }
    gw.metrics.open_streams.inc();
    let open = OpenStream {
        gw: gw.clone(),
        _permit: permit,
    };
    let tagged: Vec<_> = streams
        .into_iter()
        .map(|(name, events)| {
            let end = name.clone();
            events
                .map(move |ev| (name.clone(), Some(ev)))
                .chain(futures_util::stream::once(async move { (end, None) }))
                .boxed()
        })
        .collect();
    let acks = subscriptions::AckMerger::new(tagged_names(&plan));
    let state = ListenState {
        merged: futures_util::stream::select_all(tagged),
        acks,
        held: Vec::new(),
        graceful: false,
        done: false,
        id: req.id.to_value(),
        open,
    };
    trace.decision = "allow";
    Handled::Done(sse_response(futures_util::stream::unfold(
        state,
        listen_step,
    )))
}

fn tagged_names(plan: &[(String, Map<String, Value>)]) -> impl Iterator<Item = &str> {
    plan.iter().map(|(n, _)| n.as_str())
}

type Tagged = futures_util::stream::BoxStream<
    'static,
    (String, Option<Result<crate::sse::Event, UpstreamError>>),
>;

/// The merged `subscriptions/listen` stream between two frames.
struct ListenState {
    merged: futures_util::stream::SelectAll<Tagged>,
    acks: subscriptions::AckMerger,
    /// Frames that arrived before the merged acknowledgement went out.
    held: Vec<Bytes>,
    /// Some upstream ended its listen with a result: the client gets one at the end.
    graceful: bool,
    done: bool,
    id: Value,
    open: OpenStream,
}

impl ListenState {
    /// The acknowledgement (when due, or `force`d) and the frames held for it.
    fn flush(&mut self, force: bool) -> Option<Bytes> {
        let ack = self.acks.ready(&self.id, force)?;
        let mut out = crate::sse::Event::message(&ack.to_string())
            .to_bytes()
            .to_vec();
        for f in self.held.drain(..) {
            out.extend_from_slice(&f);
        }
        Some(Bytes::from(out))
    }
}

async fn listen_step(mut st: ListenState) -> Option<(Result<Bytes, std::io::Error>, ListenState)> {
    loop {
        if st.done {
            return None;
        }
        let Some((upstream, item)) = st.merged.next().await else {
            st.done = true;
            let mut out = st.flush(true).map(|b| b.to_vec()).unwrap_or_default();
            if st.graceful {
                let end = subscriptions::listen_result(&st.id).to_string();
                out.extend_from_slice(&crate::sse::Event::message(&end).to_bytes());
            }
            return (!out.is_empty()).then(|| (Ok(Bytes::from(out)), st));
        };
        let ev = match item {
            None => {
                st.acks.gone(&upstream);
                match st.flush(false) {
                    Some(b) => return Some((Ok(b), st)),
                    None => continue,
                }
            }
            Some(Err(e)) => {
                tracing::warn!(upstream = %upstream, error = %e, "subscriptions/listen stream broke");
                continue;
            }
            Some(Ok(ev)) => ev,
        };
        // Primers and comments carry nothing for the client; listen streams are not
        // resumable, so their ids are dropped too.
        let Ok(msg) = serde_json::from_str::<Value>(&ev.data) else {
            continue;
        };
        let method = msg.get("method").and_then(Value::as_str);
        if method == Some(subscriptions::ACKNOWLEDGED) {
            let acked = msg
                .pointer("/params/notifications")
                .and_then(Value::as_object);
            st.acks.add(&st.open.gw.naming, &upstream, acked);
            match st.flush(false) {
                Some(b) => return Some((Ok(b), st)),
                None => continue,
            }
        }
        if msg.get("id").is_some() {
            // The upstream's graceful end (its result), or a request the modern era
            // does not send on this stream: neither is relayed as is.
            if msg.get("id") == Some(&st.id) && method.is_none() {
                st.graceful = true;
            }
            continue;
        }
        let Some(msg) = subscriptions::expose_notification(&st.open.gw.naming, &upstream, msg)
        else {
            continue;
        };
        let frame = crate::sse::Event::message(&msg.to_string()).to_bytes();
        if !st.acks.sent() {
            st.held.push(frame);
            if st.held.len() >= subscriptions::MAX_HELD_FRAMES
                && let Some(b) = st.flush(true)
            {
                return Some((Ok(b), st));
            }
            continue;
        }
        return Some((Ok(frame), st));
    }
}

/// Sends an allowed request upstream and relays the answer: JSON as it came, SSE
/// event by event. A client that goes away before the answer makes the gateway send
/// `notifications/cancelled` upstream.
async fn forward(
    gw: &Arc<Gateway>,
    upstream: &Upstream,
    req: Request,
    out: Outgoing,
    rewriter: Option<Rewriter>,
    trace: &mut Trace,
) -> Handled {
    let mut outcome = UpstreamOutcome {
        upstream: upstream.name.clone(),
        ..UpstreamOutcome::default()
    };
    let mut cancel = Cancel {
        upstream: upstream.clone(),
        out: out.clone(),
        id: req.id.clone(),
        armed: true,
    };
    let answer = upstream
        .post(req.encode(), &out, upstream.request_timeout)
        .await;
    if !matches!(answer, Ok(Answer::Stream { .. })) {
        // Answered (or failed): nothing to cancel.
        cancel.armed = false;
    }
    match answer {
        Err(e) => {
            gw.metrics
                .upstream_failures
                .get_or_create(&UpstreamLabels {
                    upstream: upstream.name.clone(),
                })
                .inc();
            let status_404 = matches!(
                e,
                crate::upstream::UpstreamError::Status { status: 404, .. }
            );
            outcome.failure = Some(e.to_string());
            trace.upstream = Some(outcome);
            if status_404 && out.session.is_some() {
                // The upstream forgot its session: the client must initialize again.
                return rpc_error(
                    StatusCode::NOT_FOUND,
                    Some(&req.id),
                    SESSION_NOT_FOUND,
                    "Session not found",
                )
                .into();
            }
            rpc_error(
                StatusCode::BAD_GATEWAY,
                Some(&req.id),
                UPSTREAM_UNAVAILABLE,
                &e.to_string(),
            )
            .into()
        }
        Ok(Answer::Accepted) => {
            outcome.status = 202;
            outcome.failure = Some("upstream accepted a request without answering it".into());
            trace.upstream = Some(outcome);
            rpc_error(
                StatusCode::BAD_GATEWAY,
                Some(&req.id),
                UPSTREAM_UNAVAILABLE,
                "upstream gave no answer",
            )
            .into()
        }
        Ok(Answer::Json { status, body, .. }) => {
            outcome.status = status;
            observe(&body, &mut outcome);
            trace.upstream = Some(outcome);
            upstream_json(status, body).into()
        }
        Ok(Answer::Stream { events, .. }) => {
            outcome.status = 200;
            let finished = std::mem::replace(trace, Trace::new(trace.t0));
            let revision = finished.revision.clone();
            let relay = Relay {
                gw: gw.clone(),
                trace: Some(finished),
                outcome,
                cancel,
                rewriter,
            };
            let body = relay_stream(events, relay);
            Handled::Streaming(with_revision(sse_response(body), revision.as_deref()))
        }
    }
}

/// An upstream's JSON answer passed on as it came: its status and body.
fn upstream_json(status: u16, body: Bytes) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Records the JSON-RPC error code or `isError` of an upstream answer.
fn observe(body: &[u8], outcome: &mut UpstreamOutcome) {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        outcome.error_code = v.pointer("/error/code").and_then(Value::as_i64);
        outcome.is_error = v.pointer("/result/isError") == Some(&Value::Bool(true));
    }
}

/// Sends `notifications/cancelled` for a forwarded request when dropped while armed:
/// the client went away (its request future or its SSE stream was dropped) before the
/// upstream answered, so the upstream should stop working on it.
struct Cancel {
    upstream: Upstream,
    out: Outgoing,
    id: RequestId,
    armed: bool,
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let cancel = Notification {
            method: "notifications/cancelled".into(),
            params: Some(RawObject::from_map(
                json!({"requestId": self.id.to_value(), "reason": "client disconnected"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            )),
        };
        let upstream = self.upstream.clone();
        let mut out = self.out.clone();
        if let Some(m) = &mut out.modern {
            m.method = "notifications/cancelled".into();
            m.name = None;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = upstream
                    .post(cancel.encode(), &out, std::time::Duration::from_secs(5))
                    .await;
            });
        }
    }
}

/// What an SSE relay finishes when its stream ends or is dropped.
struct Relay {
    gw: Arc<Gateway>,
    trace: Option<Trace>,
    outcome: UpstreamOutcome,
    cancel: Cancel,
    rewriter: Option<Rewriter>,
}

/// A streamed `text/event-stream` answer.
fn sse_response(
    body: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    let mut r = Response::new(Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.cancel.armed {
            self.outcome
                .failure
                .get_or_insert_with(|| "client disconnected before the answer".into());
        }
        if let Some(mut t) = self.trace.take() {
            t.upstream = Some(std::mem::take(&mut self.outcome));
            t.finish(&self.gw);
        }
    }
}

fn relay_stream(
    events: crate::upstream::EventStream,
    relay: Relay,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(Some((events, relay)), |state| async move {
        let (mut events, mut relay) = state?;
        match events.next().await {
            Some(Ok(ev)) => {
                let msg = serde_json::from_str::<Value>(&ev.data).ok();
                if let Some(v) = &msg
                    && v.get("id") == Some(&relay.cancel.id.to_value())
                    && (v.get("result").is_some() || v.get("error").is_some())
                {
                    relay.cancel.armed = false;
                    relay.outcome.error_code = v.pointer("/error/code").and_then(Value::as_i64);
                    relay.outcome.is_error =
                        v.pointer("/result/isError") == Some(&Value::Bool(true));
                }
                let ev = match &mut relay.rewriter {
                    Some(rw) => rw.rewrite(
                        &relay.gw.sealer,
                        &relay.cancel.upstream.name,
                        ev,
                        msg.as_ref(),
                    ),
                    None => ev,
                };
                Some((Ok(ev.to_bytes()), Some((events, relay))))
            }
            Some(Err(e)) => {
                relay.outcome.failure = Some(e.to_string());
                // The upstream's stream broke: nobody to cancel for.
                relay.cancel.armed = false;
                Some((Err(std::io::Error::other(e.to_string())), None))
            }
            None => {
                // The upstream ended the stream. Without the answer, it closed early
                // (SSE polling): the client resumes with GET and Last-Event-ID, so this
                // is no cancellation.
                if relay.cancel.armed {
                    relay.cancel.armed = false;
                    relay.outcome.failure = Some(
                        "upstream closed the stream before the answer (client may resume)".into(),
                    );
                }
                None
            }
        }
    })
}

/// Why an upstream is left out of an answer the gateway merges (initialize,
/// discover, lists).
#[derive(Debug, thiserror::Error)]
enum LeftOut {
    /// The upstream is not part of this session: nothing worth logging.
    #[error("not part of this session")]
    NotInSession,
    /// 404 to a request in its session: the upstream forgot it.
    #[error("the upstream no longer knows this session (404)")]
    SessionGone,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("no answer (202)")]
    NoAnswer,
    #[error("answer is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("stream ended without an answer")]
    StreamEnded,
    #[error("no answer within {0:.1}s")]
    Late(f64),
    #[error("error {0}")]
    Rpc(Value),
    #[error("answer without result")]
    NoResult,
}

/// The one message an upstream answered with (JSON, or the response event of a
/// stream), with the stream's other events dropped: used where the gateway merges
/// answers (initialize, discover, lists).
async fn collect(answer: Answer, id: &RequestId) -> Result<(Option<String>, Value), LeftOut> {
    match answer {
        Answer::Accepted => Err(LeftOut::NoAnswer),
        Answer::Json { session, body, .. } => Ok((session, serde_json::from_slice(&body)?)),
        Answer::Stream {
            session,
            mut events,
        } => {
            while let Some(ev) = events.next().await {
                let ev = ev?;
                if let Ok(v) = serde_json::from_str::<Value>(&ev.data)
                    && v.get("id") == Some(&id.to_value())
                {
                    return Ok((session, v));
                }
            }
            Err(LeftOut::StreamEnded)
        }
    }
}

/// The result of an upstream's answer, or why there is none.
fn result_of(v: &Value) -> Result<&Value, LeftOut> {
    if let Some(e) = v.get("error") {
        return Err(LeftOut::Rpc(e.clone()));
    }
    v.get("result").ok_or(LeftOut::NoResult)
}

/// Sends `body_for` to every upstream (in parallel, each within the list deadline);
/// an upstream that fails or is late is left out, logged and counted.
async fn fan_out<'a>(
    gw: &'a Gateway,
    ctx: &Ctx<'_>,
    method: &str,
    id: &RequestId,
    body_for: impl Fn(&Upstream) -> String,
) -> Vec<(&'a Upstream, Option<String>, Value)> {
    let calls = gw.upstreams.iter().map(|u| {
        let body = body_for(u);
        async move { (u, exchange(gw, ctx, u, method, id, body).await) }
    });
    let mut out = Vec::new();
    for (u, r) in futures_util::future::join_all(calls).await {
        match r {
            Ok((session, v)) => out.push((u, session, v)),
            Err(e) => omitted(gw, u, method, &e),
        }
    }
    out
}

fn omitted(gw: &Gateway, u: &Upstream, method: &str, why: &LeftOut) {
    if matches!(why, LeftOut::NotInSession) {
        return;
    }
    tracing::warn!(upstream = %u.name, method, error = %why, "upstream left out");
    gw.metrics
        .list_omissions
        .get_or_create(&UpstreamLabels {
            upstream: u.name.clone(),
        })
        .inc();
}

/// One exchange with one upstream where the gateway merges answers, within the list
/// deadline: the upstream's session id and its answer.
async fn exchange(
    gw: &Gateway,
    ctx: &Ctx<'_>,
    u: &Upstream,
    method: &str,
    id: &RequestId,
    body: String,
) -> Result<(Option<String>, Value), LeftOut> {
    if ctx.era == Era::Legacy
        && method != methods::INITIALIZE
        && !ctx
            .session
            .as_ref()
            .is_some_and(|s| s.upstream_sessions.contains_key(&u.name))
    {
        return Err(LeftOut::NotInSession);
    }
    let deadline = gw.cfg.limits.list_deadline;
    let out = ctx.outgoing(&u.name, method, None);
    let in_session = out.session.is_some();
    tokio::time::timeout(deadline, async {
        let a = u.post(body, &out, deadline).await?;
        if in_session && matches!(a, Answer::Json { status: 404, .. }) {
            return Err(LeftOut::SessionGone);
        }
        collect(a, id).await
    })
    .await
    .unwrap_or(Err(LeftOut::Late(deadline.as_secs_f64())))
}

/// A 2025-era session that every one of its upstreams has forgotten (each answered
/// 404: it was deleted, or the upstreams restarted): the client must initialize again
/// rather than be shown an empty list.
fn session_gone<T>(ctx: &Ctx<'_>, answers: &[Result<T, LeftOut>]) -> bool {
    let mut asked = 0;
    let mut gone = 0;
    for a in answers {
        match a {
            Err(LeftOut::NotInSession) => {}
            Err(
                LeftOut::SessionGone | LeftOut::Upstream(UpstreamError::Status { status: 404, .. }),
            ) => {
                asked += 1;
                gone += 1;
            }
            _ => asked += 1,
        }
    }
    ctx.session.is_some() && asked > 0 && gone == asked
}

/// Capabilities of several upstreams as one: a capability is offered when any
/// upstream offers it.
fn merge_capabilities<'a>(results: impl Iterator<Item = &'a Value>) -> Value {
    let mut caps = Map::new();
    for r in results {
        if let Some(Value::Object(c)) = r.get("capabilities") {
            for (k, v) in c {
                if matches!(
                    k.as_str(),
                    "tools" | "prompts" | "resources" | "completions" | "logging"
                ) {
                    caps.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    Value::Object(caps)
}

fn server_info() -> Value {
    json!({"name": "lockstep-gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// 2025 era: initialize every upstream, then answer with one session that carries
/// their session ids, sealed.
async fn initialize(
    gw: &Arc<Gateway>,
    ctx: &Ctx<'_>,
    req: &Request,
    trace: &mut Trace,
) -> Response {
    if let Err(r) = decide_plain(gw, ctx, req, None, trace) {
        return r;
    }
    let mut params = req
        .params
        .as_ref()
        .map(|p| p.as_map().clone())
        .unwrap_or_default();
    params.insert("protocolVersion".into(), json!(ctx.version.as_str()));
    let body = Request {
        id: req.id.clone(),
        method: req.method.clone(),
        params: Some(RawObject::from_map(params)),
    }
    .encode();
    let answers = fan_out(gw, ctx, methods::INITIALIZE, &req.id, |_| body.clone()).await;
    let mut state =
        match SessionState::new(&ctx.who.id, ctx.version, now_secs(), gw.cfg.session.ttl) {
            Ok(s) => s,
            Err(e) => {
                return rpc_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Some(&req.id),
                    INVALID_REQUEST,
                    &e.to_string(),
                );
            }
        };
    let mut results = Vec::new();
    for (u, session, v) in answers {
        match result_of(&v) {
            Ok(r) => {
                if let Some(s) = session {
                    state.upstream_sessions.insert(u.name.clone(), s);
                } else {
                    // A stateless upstream: an empty id means "no session header".
                    state
                        .upstream_sessions
                        .insert(u.name.clone(), String::new());
                }
                results.push(r.clone());
            }
            Err(e) => {
                tracing::warn!(upstream = %u.name, error = %e, "initialize refused by upstream")
            }
        }
    }
    // The gateway is the upstreams' client: it confirms initialization itself.
    let initialized = Notification {
        method: "notifications/initialized".into(),
        params: None,
    }
    .encode();
    for u in &gw.upstreams {
        if let Some(s) = state.upstream_sessions.get(&u.name) {
            let out = Outgoing {
                session: (!s.is_empty()).then(|| s.clone()),
                protocol_version: Some(ctx.version),
                modern: None,
                grant: Some(grant_for(&ctx.who.id, "notifications/initialized", None)),
            };
            if let Err(e) = u
                .post(initialized.clone(), &out, gw.cfg.limits.list_deadline)
                .await
            {
                tracing::warn!(upstream = %u.name, error = %e, "notifications/initialized not delivered");
            }
        }
    }
    let sid = match gw.sealer.seal(&state) {
        Ok(s) => s,
        Err(e) => {
            return rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(&req.id),
                INVALID_REQUEST,
                &e.to_string(),
            );
        }
    };
    let result = json!({
        "protocolVersion": ctx.version.as_str(),
        "capabilities": merge_capabilities(results.iter()),
        "serverInfo": server_info(),
    });
    let mut r = json_response(StatusCode::OK, &result_response(&req.id, result));
    if let Ok(v) = HeaderValue::from_str(&sid) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

/// 2026-07-28 `server/discover`: the upstreams' capabilities merged.
async fn discover(gw: &Arc<Gateway>, ctx: &Ctx<'_>, req: &Request, trace: &mut Trace) -> Response {
    if let Err(r) = decide_plain(gw, ctx, req, None, trace) {
        return r;
    }
    let body = req.encode();
    let answers = fan_out(gw, ctx, methods::SERVER_DISCOVER, &req.id, |_| body.clone()).await;
    let results: Vec<Value> = answers
        .iter()
        .filter_map(|(_, _, v)| result_of(v).ok().cloned())
        .collect();
    let result = json!({
        "supportedVersions": modern_only(&gw.supported),
        "capabilities": merge_capabilities(results.iter()),
        "_meta": {"io.modelcontextprotocol/serverInfo": server_info()},
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
    });
    json_response(StatusCode::OK, &result_response(&req.id, result))
}

/// A list: every upstream's pages (in parallel), renamed, then the list and each
/// entry decided on one revision; only what the caller may use is shown, on one page.
async fn list_request(
    gw: &Arc<Gateway>,
    ctx: &Ctx<'_>,
    req: &Request,
    kind: ListKind,
    trace: &mut Trace,
) -> Response {
    if req.params.as_ref().and_then(|p| p.get("cursor")).is_some() {
        // The gateway answers every list on one page and never hands out a cursor.
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Some(&req.id),
            INVALID_PARAMS,
            "Invalid cursor",
        );
    }
    trace.upstream_label = "*".into();
    let (array, member, _) = kind.members();
    let mut entries: Vec<(Route, Value)> = Vec::new();
    // Upstreams in parallel; the pages of one upstream in order.
    let per_upstream = futures_util::future::join_all(gw.upstreams.iter().map(|u| async move {
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut params = req
                .params
                .as_ref()
                .map(|p| p.as_map().clone())
                .unwrap_or_default();
            if let Some(c) = &cursor {
                params.insert("cursor".into(), c.clone());
            }
            let body = Request {
                id: req.id.clone(),
                method: req.method.clone(),
                params: (!params.is_empty()).then(|| RawObject::from_map(params)),
            }
            .encode();
            let (_, page) = exchange(gw, ctx, u, &req.method, &req.id, body).await?;
            let result = result_of(&page)?.clone();
            if let Some(Value::Array(a)) = result.get(array) {
                items.extend(a.iter().cloned());
            }
            match result.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => return Ok::<_, LeftOut>(items),
            }
        }
        Ok(items)
    }))
    .await;
    if session_gone(ctx, &per_upstream) {
        return rpc_error(
            StatusCode::NOT_FOUND,
            Some(&req.id),
            SESSION_NOT_FOUND,
            "Session not found",
        );
    }
    for (u, r) in gw.upstreams.iter().zip(per_upstream) {
        match r {
            Ok(items) => {
                for mut item in items {
                    let Some(name) = item.get(member).and_then(Value::as_str).map(str::to_string)
                    else {
                        continue;
                    };
                    let Ok(visible) = gw.naming.expose(&u.name, kind.members().2, &name) else {
                        continue;
                    };
                    if let Some(obj) = item.as_object_mut() {
                        obj.insert(member.to_string(), Value::String(visible));
                    }
                    entries.push((
                        Route {
                            upstream: u.name.clone(),
                            name,
                        },
                        item,
                    ));
                }
            }
            Err(e) => omitted(gw, u, &req.method, &e),
        }
    }
    let info = ctx.session_info();
    let list_input = match PolicyInput::for_request(&ctx.agent, &info, req, None) {
        Ok(i) => i.to_value(),
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Some(&req.id),
                INVALID_PARAMS,
                &e.to_string(),
            );
        }
    };
    let entry_inputs: Vec<Value> = entries
        .iter()
        .map(|(route, _)| PolicyInput::for_list_entry(&ctx.agent, &info, kind, route).to_value())
        .collect();
    let (decided, visible) = layers::decide_list(
        &gw.decider,
        &gw.cfg.layers,
        &req.method,
        &list_input,
        kind,
        &entry_inputs,
        &format!("mcp/{}", req.method),
    );
    trace.decision_id = Some(decided.decision_id.clone());
    trace.revision = decided.revision.clone();
    if let Some(d) = decided.denial() {
        trace.denied(&d);
        return denial_response(&d, &req.id, ctx.era, false);
    }
    trace.decision = "allow";
    let shown: Vec<Value> = entries
        .into_iter()
        .enumerate()
        .filter(|(i, _)| visible.get(*i).copied().unwrap_or(false))
        .map(|(_, (_, item))| item)
        .collect();
    let mut result = Map::new();
    result.insert(array.to_string(), Value::Array(shown));
    if ctx.era == Era::Modern {
        // Filtered per caller: never shared by caches.
        result.insert("resultType".into(), json!("complete"));
        result.insert("ttlMs".into(), json!(0));
        result.insert("cacheScope".into(), json!("private"));
    }
    json_response(
        StatusCode::OK,
        &result_response(&req.id, Value::Object(result)),
    )
}

/// Client notifications: accepted (202) and passed to the session's upstreams;
/// `notifications/initialized` the gateway already sent itself.
async fn notification(
    gw: &Arc<Gateway>,
    who: &ApiIdentity,
    headers: &HeaderMap,
    n: Notification,
    trace: &mut Trace,
) -> Response {
    trace.decision = "allow";
    if n.method == "notifications/initialized" {
        return StatusCode::ACCEPTED.into_response();
    }
    let session = match headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
        Some(sid) => match gw.sealer.open_for(sid, now_secs(), &who.id) {
            Ok(s) => Some(s),
            Err(_) => {
                return rpc_error(
                    StatusCode::NOT_FOUND,
                    None,
                    SESSION_NOT_FOUND,
                    "Session not found",
                );
            }
        },
        None => None,
    };
    let body = n.encode();
    for u in &gw.upstreams {
        let upstream_session = session
            .as_ref()
            .and_then(|s| s.upstream_sessions.get(&u.name));
        if session.is_some() && upstream_session.is_none() {
            continue;
        }
        let out = Outgoing {
            session: upstream_session.filter(|s| !s.is_empty()).cloned(),
            protocol_version: session.as_ref().map(|s| s.protocol_version),
            modern: session.is_none().then(|| ModernHeaders {
                method: n.method.clone(),
                name: None,
                params: Vec::new(),
            }),
            grant: Some(grant_for(&who.id, &n.method, None)),
        };
        if let Err(e) = u
            .post(body.clone(), &out, gw.cfg.limits.list_deadline)
            .await
        {
            tracing::debug!(upstream = %u.name, error = %e, "notification not delivered");
        }
    }
    StatusCode::ACCEPTED.into_response()
}

/// A client's answer to a request an upstream sent it (2025 era: sampling,
/// elicitation, roots, ping): to that upstream, in its session, with its own id. The
/// id the client answers names the upstream, sealed; an id this gateway did not hand
/// out in this session is refused.
async fn answer(
    gw: &Arc<Gateway>,
    who: &ApiIdentity,
    headers: &HeaderMap,
    resp: crate::jsonrpc::Response,
    trace: &mut Trace,
) -> Response {
    trace.method = "(response)".into();
    let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            INVALID_REQUEST,
            "Bad Request: Missing session ID (a response answers a request sent in a session)",
        );
    };
    let Ok(state) = gw.sealer.open_for(sid, now_secs(), &who.id) else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            None,
            SESSION_NOT_FOUND,
            "Session not found",
        );
    };
    let asked = match resp
        .id
        .as_ref()
        .map(|id| open_answer(&gw.sealer, id, &state.id))
    {
        Some(Ok(a)) => a,
        _ => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                INVALID_REQUEST,
                "response to an unknown request: its id is not one this gateway sent in this session",
            );
        }
    };
    trace.method = format!("{} (response)", asked.method);
    trace.upstream_label = asked.upstream.clone();
    trace.decision = "relay";
    let (Some(u), Some(upstream_session)) = (
        gw.upstream(&asked.upstream),
        state.upstream_sessions.get(&asked.upstream),
    ) else {
        return rpc_error(
            StatusCode::BAD_GATEWAY,
            None,
            UPSTREAM_UNAVAILABLE,
            &format!("upstream {:?} is not in this session", asked.upstream),
        );
    };
    let forwarded = crate::jsonrpc::Response {
        id: Some(asked.id),
        payload: resp.payload,
    };
    let out = Outgoing {
        session: (!upstream_session.is_empty()).then(|| upstream_session.clone()),
        protocol_version: Some(state.protocol_version),
        modern: None,
        grant: Some(grant_for(&who.id, "response", None)),
    };
    let mut outcome = UpstreamOutcome {
        upstream: u.name.clone(),
        ..UpstreamOutcome::default()
    };
    let result = u
        .post(forwarded.encode(), &out, gw.cfg.limits.list_deadline)
        .await;
    let accepted = match &result {
        Ok(Answer::Accepted) => {
            outcome.status = 202;
            true
        }
        Ok(Answer::Json { status, .. }) => {
            outcome.status = *status;
            (200..300).contains(status)
        }
        Ok(Answer::Stream { .. }) => {
            outcome.status = 200;
            true
        }
        Err(e) => {
            outcome.failure = Some(e.to_string());
            false
        }
    };
    trace.upstream = Some(outcome);
    if accepted {
        StatusCode::ACCEPTED.into_response()
    } else {
        rpc_error(
            StatusCode::BAD_GATEWAY,
            None,
            UPSTREAM_UNAVAILABLE,
            &format!("upstream {:?} did not accept the answer", asked.upstream),
        )
    }
}

/// The 2025 era's GET stream: one client stream that merges the GET streams of the
/// session's upstreams (messages they send outside any request: notifications,
/// requests to the client), with event ids that resume every upstream's stream, or,
/// resuming a POST stream that its upstream closed early (SSE polling), that one
/// upstream's. 405 when no upstream offers one, and always in the 2026-07-28 era.
async fn get_mcp(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let mut trace = Trace::new(Instant::now());
    trace.method = "GET /mcp".into();
    let r = listen(&gw, &headers, &mut trace).await;
    trace.finish(&gw);
    r
}

fn no_get_stream() -> Response {
    let mut r = rpc_error(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        INVALID_REQUEST,
        "Method Not Allowed: no upstream of this session offers a GET stream",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    r
}

async fn listen(gw: &Arc<Gateway>, headers: &HeaderMap, trace: &mut Trace) -> Response {
    if let Err(r) = gw.check_origin(headers) {
        return r;
    }
    let who = match gw.authenticate(headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let who = &*who;
    trace.identity = Some(who.id.clone());
    let modern_header = headers
        .get(crate::upstream::PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<ProtocolVersion>().ok())
        .is_some_and(|v| v.era() == Era::Modern);
    let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        if modern_header {
            // 2026-07-28 has no GET stream.
            return no_get_stream();
        }
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            INVALID_REQUEST,
            "Bad Request: Missing session ID",
        );
    };
    let Ok(state) = gw.sealer.open_for(sid, now_secs(), &who.id) else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            None,
            SESSION_NOT_FOUND,
            "Session not found",
        );
    };
    if let Err(e) = check_session_version(headers, state.protocol_version) {
        return error_response(e.http_status(), &e.to_response(None));
    }
    let accepts_sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream") || v.contains("*/*"));
    if !accepts_sse {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            INVALID_REQUEST,
            "Not Acceptable: Client must accept text/event-stream",
        );
    }
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => match v
            .to_str()
            .ok()
            .map(|v| open_position(&gw.sealer, v, &state.id))
        {
            Some(Ok(p)) => Some(p),
            _ => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    INVALID_REQUEST,
                    "Last-Event-ID is not an event id this gateway sent in this session",
                );
            }
        },
    };
    let Ok(permit) = gw.streams.clone().try_acquire_owned() else {
        return rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            INVALID_REQUEST,
            &format!(
                "too many open streams (limits.max_streams = {})",
                gw.cfg.limits.max_streams
            ),
        );
    };
    trace.decision = "allow";
    trace.upstream_label = "*".into();
    let (merged, last) = match resume {
        Some(p) => (p.merged, p.last),
        None => (true, std::collections::BTreeMap::new()),
    };
    let wanted: Vec<(&Upstream, &String, Option<&str>)> = gw
        .upstreams
        .iter()
        .filter(|u| merged || last.contains_key(&u.name))
        .filter_map(|u| {
            let s = state
                .upstream_sessions
                .get(&u.name)
                .filter(|s| !s.is_empty())?;
            Some((u, s, last.get(&u.name).map(String::as_str)))
        })
        .collect();
    let opened = futures_util::future::join_all(
        wanted
            .iter()
            .map(|(u, s, last)| u.listen(s, state.protocol_version, *last)),
    )
    .await;
    let mut streams = Vec::new();
    let mut failed = false;
    for ((u, _, _), r) in wanted.iter().zip(opened) {
        match r {
            Ok(Some(events)) => {
                let name = u.name.clone();
                streams.push(events.map(move |e| (name.clone(), e)).boxed());
            }
            Ok(None) => {}
            Err(e) => {
                failed = true;
                tracing::warn!(upstream = %u.name, error = %e, "upstream GET stream not opened");
                gw.metrics
                    .upstream_failures
                    .get_or_create(&UpstreamLabels {
                        upstream: u.name.clone(),
                    })
                    .inc();
            }
        }
    }
    if streams.is_empty() {
        if failed {
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                None,
                UPSTREAM_UNAVAILABLE,
                "no upstream GET stream could be opened",
            );
        }
        return no_get_stream();
    }
    let mut rewriter = if merged {
        Rewriter::for_get(&state.id, last)
    } else {
        Rewriter::for_post(&state.id)
    };
    gw.metrics.open_streams.inc();
    let open = OpenStream {
        gw: gw.clone(),
        _permit: permit,
    };
    let body = futures_util::stream::select_all(streams).filter_map(move |(upstream, ev)| {
        let out = match ev {
            Ok(ev) => {
                let msg = serde_json::from_str::<Value>(&ev.data).ok();
                let ev = rewriter.rewrite(&open.gw.sealer, &upstream, ev, msg.as_ref());
                Some(Ok::<_, std::io::Error>(ev.to_bytes()))
            }
            Err(e) => {
                // One upstream's stream broke; the others go on.
                tracing::warn!(upstream = %upstream, error = %e, "upstream GET stream ended");
                None
            }
        };
        std::future::ready(out)
    });
    sse_response(body)
}

/// Holds a client GET stream's permit and keeps the open-streams gauge true.
struct OpenStream {
    gw: Arc<Gateway>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gw.metrics.open_streams.dec();
    }
}

/// Ends a session: the upstreams' sessions are deleted.
async fn delete_mcp(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(r) = gw.check_origin(&headers) {
        return r;
    }
    let who = match gw.authenticate(&headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let who = &*who;
    let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            INVALID_REQUEST,
            "Bad Request: Missing session ID",
        );
    };
    let Ok(state) = gw.sealer.open_for(sid, now_secs(), &who.id) else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            None,
            SESSION_NOT_FOUND,
            "Session not found",
        );
    };
    let ends = gw.upstreams.iter().filter_map(|u| {
        let s = state
            .upstream_sessions
            .get(&u.name)
            .filter(|s| !s.is_empty())?;
        Some(u.end_session(s))
    });
    futures_util::future::join_all(ends).await;
    StatusCode::OK.into_response()
}

/// The public keys of the ephemeral upstream tokens; 404 without `upstream_tokens`.
async fn upstream_jwks(State(gw): State<Arc<Gateway>>) -> Response {
    match &gw.upstream_tokens {
        Some(t) => json_response(StatusCode::OK, &t.jwks()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// RFC 9728 protected resource metadata (root and path forms); 404 without OAuth.
async fn resource_metadata(State(gw): State<Arc<Gateway>>) -> Response {
    match &gw.cfg.identity.oauth {
        Some(o) => json_response(StatusCode::OK, &crate::oauth::metadata(o)),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn health(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.decider.syncer().gate() {
        lockstep_sync::Gate::Serve {
            active,
            warning: None,
        } => json_response(StatusCode::OK, &json!({"revision": active.revision()})),
        lockstep_sync::Gate::Serve {
            warning: Some(w), ..
        } => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": w})),
        lockstep_sync::Gate::Deny { reason, .. } => {
            json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": reason}))
        }
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut r = gw.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
