//! Who may use the agent's REST API (`lockstep.authentication`, `lockstep.write_api`).
//!
//! OPA's `--authentication=token` accepts any bearer token and leaves the decision to
//! an authorization policy; lockstep has no such policy, so it checks tokens itself,
//! with two roles: **read** tokens may ask for decisions and read status, policies and
//! metrics; **write** tokens may also write policies and data. `/health` stays open
//! for probes. The write API (what OPAL drives) is a second, independent switch: with
//! bundles configured it is off unless turned on, since it lets a caller add rules
//! beside the signed revision.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lockstep_auth::{Secret, any_matches, bearer};

/// `lockstep.write_api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteApi {
    /// On without bundles (an OPAL-driven agent), off with bundles.
    #[default]
    Auto,
    On,
    Off,
}

impl WriteApi {
    /// Whether writes are accepted, given whether bundles are configured.
    pub fn enabled(self, bundles_configured: bool) -> bool {
        match self {
            WriteApi::Auto => !bundles_configured,
            WriteApi::On => true,
            WriteApi::Off => false,
        }
    }
}

/// `lockstep.authentication`: the tokens, loaded at start. No tokens at all means no
/// authentication (the default, for an agent bound to loopback).
#[derive(Debug, Clone, Default)]
pub struct ApiTokens {
    pub read: Vec<Secret>,
    pub write: Vec<Secret>,
}

impl ApiTokens {
    pub fn required(&self) -> bool {
        !self.read.is_empty() || !self.write.is_empty()
    }
}

/// Everything the access check needs.
#[derive(Debug, Clone)]
pub struct Access {
    pub tokens: ApiTokens,
    pub write_enabled: bool,
}

/// Whether a request changes policies or data: every PUT, PATCH and DELETE of the
/// API does, whatever its path (so no path spelling turns a write into a read).
fn is_write(method: &Method) -> bool {
    matches!(*method, Method::PUT | Method::PATCH | Method::DELETE)
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"lockstep-agent\""),
        );
    }
    r
}

/// The middleware: authentication first (so a refusal says nothing about the write
/// switch to an unknown caller), then the write switch.
pub async fn check(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" {
        return next.run(req).await;
    }
    let write = is_write(req.method());
    if access.tokens.required() {
        let Some(token) = bearer(req.headers()) else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token (lockstep.authentication is configured)",
            );
        };
        let writer = any_matches(&access.tokens.write, token);
        let reader = any_matches(&access.tokens.read, token);
        if !(writer || reader) {
            return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
        }
        if write && !writer {
            return refuse(
                StatusCode::FORBIDDEN,
                "unauthorized",
                "this token may read but not write policies or data",
            );
        }
    }
    if write && !access.write_enabled {
        return refuse(
            StatusCode::FORBIDDEN,
            "write_api_disabled",
            "the policy and data write API is off (lockstep.write_api: on enables it; with bundles configured it is off by default)",
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_recognised() {
        assert!(is_write(&Method::PUT) && is_write(&Method::DELETE) && is_write(&Method::PATCH));
        assert!(!is_write(&Method::POST) && !is_write(&Method::GET));
        assert!(WriteApi::Auto.enabled(false) && !WriteApi::Auto.enabled(true));
        assert!(WriteApi::On.enabled(true) && !WriteApi::Off.enabled(false));
    }
}
