//! Envoy external authorization (`envoy.service.auth.v3.Authorization/Check`), the
//! gRPC service opa-envoy-plugin serves, over the agent's active policy.
//!
//! The `input` is opa-envoy-plugin's (`envoyauth/request.go`): the CheckRequest with
//! protobuf JSON names (`attributes.request.http.rawBody`, `socketAddress.portValue`,
//! `metadataContext`), `time` as `{seconds, nanos}`, plus `version`, `parsed_path`,
//! `parsed_query`, `parsed_body`, `truncated_body` and `source_principal`.
//!
//! The decision at the configured path may be a boolean or an object with `allowed`
//! (bool), `headers`, `response_headers_to_add`, `request_headers_to_remove`,
//! `query_parameters_to_remove`, `query_parameters_to_set`, `http_status`, `body` and
//! `dynamic_metadata`. An undefined or badly typed decision, or an evaluation error,
//! is a gRPC error (Envoy then applies `status_on_error` / `failure_mode_allow`).
//! Failing closed (no bundle yet, or the freshness lease expired with
//! `on_stale: deny`) is a denial: 403 with the reason as body and
//! `x-lockstep-fail-closed`. Every evaluated answer carries `decision_id` (and
//! lockstep's `revision`) in `dynamic_metadata`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderValueOption, HttpResponse, HttpStatusCode,
    OkHttpResponse,
};
use envoy_types::ext_authz::v3::{DeniedHttpResponseBuilder, OkHttpResponseBuilder};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, Metadata, QueryParameter};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;
use lockstep_decision::{DecisionRequest, Outcome};
use lockstep_sync::Active;
use serde_json::{Map, Value as Json, json};
use tonic::{Request, Response, Status};

use crate::api::{AppState, data_ref};
use crate::config::EnvoyConfig;

/// google.rpc codes.
const CODE_OK: i32 = 0;
const CODE_PERMISSION_DENIED: i32 = 7;

/// The Authorization service.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    state: Arc<AppState>,
    query: String,
    path_text: String,
    dry_run: bool,
    skip_body: bool,
}

impl ExtAuthz {
    pub fn new(state: Arc<AppState>, cfg: &EnvoyConfig) -> Self {
        let segs = cfg.path_segments();
        ExtAuthz {
            state,
            query: data_ref(&segs),
            path_text: segs.join("/"),
            dry_run: cfg.dry_run,
            skip_body: cfg.skip_request_body_parse,
        }
    }
}

fn peer(p: &Peer) -> Json {
    let mut m = Map::new();
    if let Some(a) = &p.address {
        m.insert("address".into(), address(a));
    }
    if !p.service.is_empty() {
        m.insert("service".into(), json!(p.service));
    }
    if !p.labels.is_empty() {
        m.insert("labels".into(), json!(p.labels));
    }
    if !p.principal.is_empty() {
        m.insert("principal".into(), json!(p.principal));
    }
    if !p.certificate.is_empty() {
        m.insert("certificate".into(), json!(p.certificate));
    }
    Json::Object(m)
}

fn address(a: &Address) -> Json {
    match &a.address {
        Some(AddressKind::SocketAddress(s)) => {
            let mut m = Map::new();
            if s.protocol != 0 {
                m.insert("protocol".into(), json!(s.protocol));
            }
            if !s.address.is_empty() {
                m.insert("address".into(), json!(s.address));
            }
            match &s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => {
                    m.insert("portValue".into(), json!(p));
                }
                Some(PortSpecifier::NamedPort(n)) => {
                    m.insert("namedPort".into(), json!(n));
                }
                None => {}
            }
            if !s.resolver_name.is_empty() {
                m.insert("resolverName".into(), json!(s.resolver_name));
            }
            if s.ipv4_compat {
                m.insert("ipv4Compat".into(), json!(true));
            }
            json!({"socketAddress": m})
        }
        Some(AddressKind::Pipe(p)) => {
            let mut m = Map::new();
            if !p.path.is_empty() {
                m.insert("path".into(), json!(p.path));
            }
            if p.mode != 0 {
                m.insert("mode".into(), json!(p.mode));
            }
            json!({"pipe": m})
        }
        Some(AddressKind::EnvoyInternalAddress(_)) => json!({"envoyInternalAddress": {}}),
        None => json!({}),
    }
}

fn pb_value(v: &PbValue) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => pb_struct(s),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(pb_value).collect()),
    }
}

fn pb_struct(s: &Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), pb_value(v)))
            .collect(),
    )
}

fn to_pb_value(v: &Json) -> PbValue {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_pb_value).collect(),
        }),
        Json::Object(m) => Kind::StructValue(to_pb_struct(m)),
    };
    PbValue { kind: Some(kind) }
}

fn to_pb_struct(m: &Map<String, Json>) -> Struct {
    Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), to_pb_value(v))).collect(),
    }
}

fn metadata(m: &Metadata) -> Json {
    let mut out = Map::new();
    if !m.filter_metadata.is_empty() {
        out.insert(
            "filterMetadata".into(),
            Json::Object(
                m.filter_metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), pb_struct(v)))
                    .collect(),
            ),
        );
    }
    Json::Object(out)
}

fn http(h: &HttpRequest) -> Json {
    let mut m = Map::new();
    let strings = [
        ("id", &h.id),
        ("method", &h.method),
        ("path", &h.path),
        ("host", &h.host),
        ("scheme", &h.scheme),
        ("query", &h.query),
        ("fragment", &h.fragment),
        ("protocol", &h.protocol),
        ("body", &h.body),
    ];
    for (k, v) in strings {
        if !v.is_empty() {
            m.insert(k.into(), json!(v));
        }
    }
    if !h.headers.is_empty() {
        m.insert("headers".into(), json!(h.headers));
    }
    if h.size != 0 {
        m.insert("size".into(), json!(h.size));
    }
    if !h.raw_body.is_empty() {
        m.insert(
            "rawBody".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&h.raw_body)),
        );
    }
    if let Some(hm) = &h.header_map {
        let headers: Vec<Json> = hm
            .headers
            .iter()
            .map(|hv| {
                let mut o = Map::new();
                o.insert("key".into(), json!(hv.key));
                if !hv.value.is_empty() {
                    o.insert("value".into(), json!(hv.value));
                }
                if !hv.raw_value.is_empty() {
                    o.insert(
                        "rawValue".into(),
                        json!(base64::engine::general_purpose::STANDARD.encode(&hv.raw_value)),
                    );
                }
                Json::Object(o)
            })
            .collect();
        m.insert("headerMap".into(), json!({"headers": headers}));
    }
    Json::Object(m)
}

/// `attributes` with protobuf JSON names, only populated fields (opa-envoy-plugin's protomap).
fn attributes(req: &CheckRequest) -> Json {
    let mut m = Map::new();
    let Some(a) = &req.attributes else {
        return Json::Object(m);
    };
    if let Some(p) = &a.source {
        m.insert("source".into(), peer(p));
    }
    if let Some(p) = &a.destination {
        m.insert("destination".into(), peer(p));
    }
    if let Some(r) = &a.request {
        let mut rm = Map::new();
        if let Some(t) = &r.time {
            rm.insert(
                "time".into(),
                json!({"seconds": t.seconds, "nanos": t.nanos}),
            );
        }
        if let Some(h) = &r.http {
            rm.insert("http".into(), http(h));
        }
        m.insert("request".into(), Json::Object(rm));
    }
    if !a.context_extensions.is_empty() {
        m.insert("contextExtensions".into(), json!(a.context_extensions));
    }
    if let Some(md) = &a.metadata_context {
        m.insert("metadataContext".into(), metadata(md));
    }
    if let Some(md) = &a.route_metadata_context {
        m.insert("routeMetadataContext".into(), metadata(md));
    }
    if let Some(t) = &a.tls_session {
        let mut tm = Map::new();
        if !t.sni.is_empty() {
            tm.insert("sni".into(), json!(t.sni));
        }
        m.insert("tlsSession".into(), Json::Object(tm));
    }
    Json::Object(m)
}

fn query_map(raw: &[u8]) -> Map<String, Json> {
    let mut out: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw) {
        out.entry(k.into_owned())
            .or_default()
            .push(json!(v.into_owned()));
    }
    out.into_iter().map(|(k, v)| (k, Json::Array(v))).collect()
}

/// Why a CheckRequest has no input document (opa-envoy-plugin's texts); Envoy's
/// client is answered 400 with this text.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("invalid path {path:?}: {source}")]
    Path {
        path: String,
        source: std::str::Utf8Error,
    },
    #[error("request_parse_error: {0}")]
    Body(serde_json::Error),
}

/// Why a decision value is not an ext_authz answer (opa-envoy-plugin's texts).
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("undefined decision")]
    Undefined,
    #[error("illegal value for policy evaluation result")]
    Illegal,
    #[error("unable to determine evaluation result: missing \"allowed\"")]
    MissingAllowed,
    /// A field of the result has the wrong type: what it must be.
    #[error("type conversion error: {0}")]
    Type(String),
    #[error("invalid HTTP status code {0}")]
    Status(serde_json::Number),
}

/// `(parsed_path, parsed_query)` of a request path.
pub fn parsed_path_and_query(path: &str) -> Result<(Json, Json), InputError> {
    let (raw_path, raw_query) = path.split_once('?').unwrap_or((path, ""));
    let decoded = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|source| InputError::Path {
            path: raw_path.to_string(),
            source,
        })?;
    let segs: Vec<Json> = decoded
        .trim_start_matches('/')
        .split('/')
        .map(|s| json!(s))
        .collect();
    Ok((
        Json::Array(segs),
        Json::Object(query_map(raw_query.as_bytes())),
    ))
}

/// `(parsed_body, truncated_body)` following opa-envoy-plugin's `getParsedBody`
/// for JSON and form bodies; other content types give `null`.
fn parsed_body(h: &HttpRequest) -> Result<(Json, bool), InputError> {
    if h.headers
        .get("x-envoy-auth-partial-body")
        .is_some_and(|v| v == "true")
    {
        return Ok((Json::Null, true));
    }
    let Some(ctype) = h.headers.get("content-type") else {
        return Ok((Json::Null, false));
    };
    let is_json = ctype.contains("application/json");
    let is_form = ctype.contains("application/x-www-form-urlencoded");
    if !is_json && !is_form {
        return Ok((Json::Null, false));
    }
    let body: Vec<u8> = if !h.body.is_empty() {
        h.body.as_bytes().to_vec()
    } else if !h.raw_body.is_empty() {
        h.raw_body.clone()
    } else {
        return Ok((Json::Null, false));
    };
    if let Some(cl) = h.headers.get("content-length")
        && let Ok(n) = cl.trim().parse::<i64>()
        && n != -1
        && usize::try_from(n).is_ok_and(|n| n > body.len())
    {
        return Ok((Json::Null, true));
    }
    if is_json {
        serde_json::from_slice(&body)
            .map(|v| (v, false))
            .map_err(InputError::Body)
    } else {
        Ok((Json::Object(query_map(&body)), false))
    }
}

/// The `input` document opa-envoy-plugin evaluates for a v3 CheckRequest.
pub fn input(req: &CheckRequest, skip_body: bool) -> Result<Json, InputError> {
    let mut m = Map::new();
    m.insert("attributes".into(), attributes(req));
    m.insert(
        "version".into(),
        json!({"ext_authz": "v3", "encoding": "protojson"}),
    );
    let attrs = req.attributes.as_ref();
    let http = attrs
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let (pp, pq) = parsed_path_and_query(http.map_or("", |h| h.path.as_str()))?;
    m.insert("parsed_path".into(), pp);
    m.insert("parsed_query".into(), pq);
    if !skip_body {
        let (pb, truncated) = match http {
            Some(h) => parsed_body(h)?,
            None => (Json::Null, false),
        };
        m.insert("parsed_body".into(), pb);
        m.insert("truncated_body".into(), json!(truncated));
    }
    if let Some(p) = attrs
        .and_then(|a| a.source.as_ref())
        .map(|s| &s.principal)
        .filter(|p| !p.is_empty())
    {
        m.insert("source_principal".into(), json!(p));
    }
    Ok(Json::Object(m))
}

fn status(code: i32, message: &str) -> Option<rpc::Status> {
    Some(rpc::Status {
        code,
        message: message.to_string(),
        details: Vec::new(),
    })
}

/// `{name: string | [string]}` or a list of such objects.
fn header_pairs(v: &Json, what: &str) -> Result<Vec<(String, String)>, ResultError> {
    let mut out = Vec::new();
    let objs: Vec<&Json> = match v {
        Json::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for o in objs {
        let Json::Object(m) = o else {
            return Err(ResultError::Type(format!("{what} must be an object")));
        };
        for (k, val) in m {
            match val {
                Json::String(s) => out.push((k.clone(), s.clone())),
                Json::Array(vals) => {
                    for x in vals {
                        let Json::String(s) = x else {
                            return Err(ResultError::Type(format!(
                                "{what}.{k} must be a string or a list of strings"
                            )));
                        };
                        out.push((k.clone(), s.clone()));
                    }
                }
                _ => {
                    return Err(ResultError::Type(format!(
                        "{what}.{k} must be a string or a list of strings"
                    )));
                }
            }
        }
    }
    Ok(out)
}

fn headers(d: &Map<String, Json>, key: &str) -> Result<Vec<HeaderValueOption>, ResultError> {
    let mut b = DeniedHttpResponseBuilder::new();
    if let Some(v) = d.get(key) {
        for (k, val) in header_pairs(v, key)? {
            b.add_header(k, val, None, true);
        }
    }
    Ok(b.build().headers)
}

fn strings(d: &Map<String, Json>, key: &str) -> Result<Vec<String>, ResultError> {
    let wrong = || ResultError::Type(format!("{key} must be a list of strings"));
    match d.get(key) {
        None => Ok(Vec::new()),
        Some(Json::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(wrong))
            .collect(),
        Some(_) => Err(wrong()),
    }
}

/// `(allowed, http_response, policy dynamic_metadata)`.
type Decided = (bool, Option<HttpResponse>, Map<String, Json>);

/// The answer for a decision value.
fn response(value: &Json) -> Result<Decided, ResultError> {
    let d = match value {
        Json::Bool(b) => return Ok((*b, None, Map::new())),
        Json::Object(d) => d,
        _ => return Err(ResultError::Illegal),
    };
    let allowed = match d.get("allowed") {
        Some(Json::Bool(b)) => *b,
        Some(_) => return Err(ResultError::Type("allowed must be a boolean".into())),
        None => return Err(ResultError::MissingAllowed),
    };
    let meta = match d.get("dynamic_metadata") {
        None => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(_) => {
            return Err(ResultError::Type(
                "dynamic_metadata must be an object".into(),
            ));
        }
    };
    if allowed {
        let mut ok = OkHttpResponseBuilder::new().build();
        ok.headers = headers(d, "headers")?;
        ok.response_headers_to_add = headers(d, "response_headers_to_add")?;
        ok.headers_to_remove = strings(d, "request_headers_to_remove")?;
        ok.query_parameters_to_remove = strings(d, "query_parameters_to_remove")?;
        if let Some(q) = d.get("query_parameters_to_set") {
            ok.query_parameters_to_set = header_pairs(q, "query_parameters_to_set")?
                .into_iter()
                .map(|(key, value)| QueryParameter { key, value })
                .collect();
        }
        Ok((true, Some(HttpResponse::OkResponse(ok)), meta))
    } else {
        let mut denied = DeniedHttpResponseBuilder::new().build();
        denied.headers = headers(d, "headers")?;
        let code = match d.get("http_status") {
            None => HttpStatusCode::Forbidden,
            Some(Json::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .and_then(|n| HttpStatusCode::try_from(n).ok())
                .filter(|c| *c != HttpStatusCode::Empty)
                .ok_or_else(|| ResultError::Status(n.clone()))?,
            Some(_) => return Err(ResultError::Type("http_status must be a number".into())),
        };
        let mut b = DeniedHttpResponseBuilder::new();
        b.set_http_status(code);
        denied.status = b.build().status;
        denied.body = match d.get("body") {
            None => String::new(),
            Some(Json::String(s)) => s.clone(),
            Some(_) => return Err(ResultError::Type("body must be a string".into())),
        };
        Ok((false, Some(HttpResponse::DeniedResponse(denied)), meta))
    }
}

fn with_metadata(
    mut meta: Map<String, Json>,
    decision_id: &str,
    active: Option<&Active>,
) -> Option<Struct> {
    meta.insert("decision_id".into(), json!(decision_id));
    if let Some(a) = active {
        meta.insert("revision".into(), json!(a.revision()));
    }
    Some(to_pb_struct(&meta))
}

impl ExtAuthz {
    /// Decides one CheckRequest (the gRPC handler without the transport), with the
    /// gateway's upstream token checked first when `lockstep.upstream_tokens` is set.
    pub async fn check_request(
        &self,
        req: &CheckRequest,
        remote: Option<SocketAddr>,
    ) -> Result<CheckResponse, Status> {
        let token = match &self.state.upstream_tokens {
            Some(t) => Some(t.input(req).await),
            None => None,
        };
        self.decide(req, remote, token)
    }

    /// Decides one CheckRequest; `token` becomes `input.lockstep.upstream_token`.
    pub fn decide(
        &self,
        req: &CheckRequest,
        remote: Option<SocketAddr>,
        token: Option<Json>,
    ) -> Result<CheckResponse, Status> {
        let app = &*self.state;
        let input = match input(req, self.skip_body) {
            Ok(mut i) => {
                if let (Some(t), Some(m)) = (token, i.as_object_mut()) {
                    m.insert("lockstep".into(), json!({"upstream_token": t}));
                }
                i
            }
            Err(e) => {
                // opa-envoy-plugin answers unparsable requests itself with a 400.
                let e = e.to_string();
                let mut b = DeniedHttpResponseBuilder::new();
                b.set_http_status(HttpStatusCode::BadRequest)
                    .set_body(e.clone());
                return Ok(CheckResponse {
                    status: status(CODE_PERMISSION_DENIED, &e),
                    http_response: Some(HttpResponse::DeniedResponse(b.build())),
                    dynamic_metadata: None,
                });
            }
        };
        let query = &self.query;
        let d = app.decider.decide(
            DecisionRequest {
                path: &self.path_text,
                input: Some(&input),
                remote,
            },
            |policy| policy.eval_data_path(query, Some(&input)),
            |value| value.ok_or(ResultError::Undefined).and_then(response),
        );
        let (allowed, http_response, meta) = match d.outcome {
            Outcome::FailClosed(reason) => {
                let mut b = DeniedHttpResponseBuilder::new();
                b.set_http_status(HttpStatusCode::Forbidden)
                    .add_header("x-lockstep-fail-closed", reason.clone(), None, true)
                    .set_body(format!("lockstep: fail closed: {reason}"));
                return Ok(CheckResponse {
                    status: status(CODE_PERMISSION_DENIED, &reason),
                    http_response: Some(HttpResponse::DeniedResponse(b.build())),
                    dynamic_metadata: with_metadata(Map::new(), &d.id, d.active.as_deref()),
                });
            }
            Outcome::EvalFailed(e) => return Err(Status::unknown(e.to_string())),
            Outcome::Rejected(e) => return Err(Status::unknown(e.to_string())),
            Outcome::Decided(decided) => decided,
        };
        let dynamic_metadata = with_metadata(meta, &d.id, d.active.as_deref());
        if allowed || self.dry_run {
            let http_response = match http_response {
                Some(HttpResponse::OkResponse(ok)) => Some(HttpResponse::OkResponse(ok)),
                _ if self.dry_run && !allowed => {
                    Some(HttpResponse::OkResponse(OkHttpResponse::default()))
                }
                other => other,
            };
            Ok(CheckResponse {
                status: status(CODE_OK, ""),
                http_response,
                dynamic_metadata,
            })
        } else {
            Ok(CheckResponse {
                status: status(CODE_PERMISSION_DENIED, ""),
                http_response,
                dynamic_metadata,
            })
        }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let remote = request.remote_addr();
        self.check_request(request.get_ref(), remote)
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        let (p, q) = parsed_path_and_query("/mcp/a%20b?x=1&x=2&y=").unwrap_or_default();
        assert_eq!(p, json!(["mcp", "a b"]));
        assert_eq!(q, json!({"x": ["1", "2"], "y": [""]}));
        let (p, q) = parsed_path_and_query("/").unwrap_or_default();
        assert_eq!(p, json!([""]));
        assert_eq!(q, json!({}));
    }

    #[test]
    fn decisions() {
        let (a, r, _) = response(&json!(true)).unwrap_or((false, None, Map::new()));
        assert!(a && r.is_none());
        let (a, r, _) = response(&json!({"allowed": false, "http_status": 401, "body": "no"}))
            .unwrap_or((true, None, Map::new()));
        assert!(!a);
        match r {
            Some(HttpResponse::DeniedResponse(d)) => {
                assert_eq!(d.body, "no");
                assert_eq!(d.status.map(|s| s.code), Some(401));
            }
            other => panic!("{other:?}"),
        }
        assert!(response(&json!("yes")).is_err());
        assert!(response(&json!({"allowed": "true"})).is_err());
        assert!(response(&json!({"allowed": false, "http_status": 999})).is_err());
    }
}
