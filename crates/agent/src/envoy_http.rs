//! Envoy's ext_authz **HTTP mode** (`http_service`) over the same decision as the gRPC
//! service in [`crate::envoy`].
//!
//! Envoy sends a copy of the client request: same method, path = `path_prefix` +
//! original path, the buffered body, and only the headers its `allowed_headers` lets
//! through. This module turns that request into the CheckRequest Envoy would have sent
//! over gRPC and decides it with [`ExtAuthz::decide`], so a policy written for
//! opa-envoy-plugin's `input` (`attributes.request.http`, `parsed_path`,
//! `parsed_body`, ...) works unchanged in both modes. The answer follows Envoy's HTTP
//! contract: 200 allows (the decision's `headers` go onto the response, for
//! `allowed_upstream_headers`; `request_headers_to_remove` become
//! `x-envoy-auth-headers-to-remove`), any other status denies with the decision's
//! status, headers and body, and a 500 is an ext_authz error (Envoy's
//! `status_on_error`). Every answer carries `x-lockstep-decision-id` and, once a bundle
//! is active, `x-lockstep-revision`, for Envoy's `dynamic_metadata_from_headers`.
//!
//! What HTTP mode cannot carry: peer addresses, request time and Envoy's stream id
//! (absent from `input`), `query_parameters_to_set/remove`, and a denial with status
//! 200 (Envoy reads any 200 as allow, so such a decision is answered 403).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use envoy_types::ext_authz::v3::pb::{CheckRequest, HeaderValueOption, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::google::protobuf::value::Kind;

use crate::envoy::ExtAuthz;

/// Largest body accepted; Envoy's own `max_request_bytes` is normally far smaller.
const MAX_BODY: usize = 8 << 20;

/// Envoy's header naming request headers the upstream must not get.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

#[derive(Debug, Clone)]
struct HttpAuthz {
    authz: ExtAuthz,
    path_prefix: String,
}

/// The HTTP-mode service: every method and path is a check request.
pub fn router(authz: ExtAuthz, path_prefix: String) -> Router {
    Router::new()
        .fallback(check)
        .with_state(Arc::new(HttpAuthz { authz, path_prefix }))
}

/// The original path: the request's path and query without Envoy's `path_prefix`.
fn original_path<'a>(path_and_query: &'a str, prefix: &str) -> &'a str {
    if prefix.is_empty() {
        return path_and_query;
    }
    match path_and_query.strip_prefix(prefix) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') || rest.starts_with('?') => rest,
        _ => path_and_query,
    }
}

/// Lower-case names; repeated headers joined with `,` as Envoy does in the gRPC map.
fn header_map(headers: &HeaderMap) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_string())
            .and_modify(|cur| {
                cur.push(',');
                cur.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

/// The CheckRequest Envoy's gRPC mode would have sent for this request.
fn check_request(
    method: &str,
    path: &str,
    version: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> CheckRequest {
    let mut map = header_map(headers);
    let host = map.get("host").cloned().unwrap_or_default();
    // The gRPC map has the pseudo-headers; policies written for it may read them.
    map.insert(":method".into(), method.to_string());
    map.insert(":path".into(), path.to_string());
    if !host.is_empty() {
        map.insert(":authority".into(), host.clone());
    }
    let (text, raw) = match std::str::from_utf8(body) {
        Ok(t) => (t.to_string(), Vec::new()),
        Err(_) => (String::new(), body.to_vec()),
    };
    let size = map
        .get("content-length")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| i64::try_from(body.len()).unwrap_or(i64::MAX));
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                time: None,
                http: Some(HttpRequest {
                    method: method.to_string(),
                    path: path.to_string(),
                    host,
                    protocol: version.to_string(),
                    headers: map,
                    body: text,
                    raw_body: raw,
                    size,
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    }
}

fn put_header(out: &mut HeaderMap, key: &str, value: &str, append: bool) {
    let (Ok(k), Ok(v)) = (
        HeaderName::from_bytes(key.as_bytes()),
        HeaderValue::from_str(value),
    ) else {
        tracing::warn!(header = %key, "decision header is not a valid HTTP header: dropped");
        return;
    };
    if append {
        out.append(k, v);
    } else {
        out.insert(k, v);
    }
}

/// A decision may give one header several values (a list), so values are appended.
fn put_options(out: &mut HeaderMap, opts: &[HeaderValueOption]) {
    for o in opts {
        if let Some(h) = &o.header {
            put_header(out, &h.key, &h.value, true);
        }
    }
}

fn metadata_string(
    meta: Option<&envoy_types::pb::google::protobuf::Struct>,
    key: &str,
) -> Option<String> {
    match meta?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

async fn check(
    State(s): State<Arc<HttpAuthz>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("lockstep: request body refused: {e}"),
            )
                .into_response();
        }
    };
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = original_path(&pq, &s.path_prefix);
    let version = format!("{:?}", parts.version);
    let cr = check_request(parts.method.as_str(), path, &version, &parts.headers, &body);
    let decided = match s.authz.check_request(&cr, Some(remote)).await {
        Ok(r) => r,
        // An evaluation error is Envoy's ext_authz error, not a decision.
        Err(status) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("lockstep: ext_authz error: {}", status.message()),
            )
                .into_response();
        }
    };
    let mut headers = HeaderMap::new();
    let meta = decided.dynamic_metadata.as_ref();
    if let Some(id) = metadata_string(meta, "decision_id") {
        put_header(&mut headers, "x-lockstep-decision-id", &id, false);
    }
    if let Some(rev) = metadata_string(meta, "revision") {
        put_header(&mut headers, "x-lockstep-revision", &rev, false);
    }
    let allowed = decided.status.as_ref().is_some_and(|st| st.code == 0);
    match decided.http_response {
        Some(HttpResponse::OkResponse(ok)) if allowed => {
            put_options(&mut headers, &ok.headers);
            put_options(&mut headers, &ok.response_headers_to_add);
            if !ok.headers_to_remove.is_empty() {
                put_header(
                    &mut headers,
                    HEADERS_TO_REMOVE,
                    &ok.headers_to_remove.join(","),
                    false,
                );
            }
            if !ok.query_parameters_to_set.is_empty() || !ok.query_parameters_to_remove.is_empty() {
                tracing::warn!(
                    "query_parameters_to_set/remove cannot be carried by ext_authz HTTP mode: ignored"
                );
            }
            (StatusCode::OK, headers).into_response()
        }
        _ if allowed => (StatusCode::OK, headers).into_response(),
        Some(HttpResponse::DeniedResponse(denied)) => {
            put_options(&mut headers, &denied.headers);
            let code = denied
                .status
                .and_then(|st| u16::try_from(st.code).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|c| *c != StatusCode::OK && c.as_u16() >= 200)
                .unwrap_or(StatusCode::FORBIDDEN);
            (code, headers, denied.body).into_response()
        }
        _ => (StatusCode::FORBIDDEN, headers).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_removed_only_on_a_segment_boundary() {
        assert_eq!(original_path("/authz/mcp?x=1", "/authz"), "/mcp?x=1");
        assert_eq!(original_path("/authz", "/authz"), "/");
        assert_eq!(original_path("/authz?x", "/authz"), "?x");
        assert_eq!(original_path("/authzed/mcp", "/authz"), "/authzed/mcp");
        assert_eq!(original_path("/mcp", ""), "/mcp");
    }

    #[test]
    fn check_request_has_the_grpc_shape() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("mcp.local"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("x-agent-role", HeaderValue::from_static("a"));
        h.append("x-agent-role", HeaderValue::from_static("b"));
        let cr = check_request("POST", "/mcp", "HTTP/1.1", &h, br#"{"a":1}"#);
        let http = cr
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        assert_eq!(http.method, "POST");
        assert_eq!(http.path, "/mcp");
        assert_eq!(http.host, "mcp.local");
        assert_eq!(http.body, r#"{"a":1}"#);
        assert_eq!(http.size, 7);
        assert_eq!(
            http.headers.get("x-agent-role").map(String::as_str),
            Some("a,b")
        );
        assert_eq!(
            http.headers.get(":authority").map(String::as_str),
            Some("mcp.local")
        );
        let bin = check_request("POST", "/", "HTTP/1.1", &HeaderMap::new(), &[0xff, 0x00]);
        let http = bin
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        assert!(http.body.is_empty());
        assert_eq!(http.raw_body, vec![0xff, 0x00]);
    }
}
