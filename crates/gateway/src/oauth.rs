//! The gateway as an OAuth 2.1 resource server (MCP authorization): its protected
//! resource metadata (RFC 9728), the `WWW-Authenticate` challenge that points clients to
//! it, and a valid access token's claims turned into the caller's identity through
//! `identity.claims_mapping`. The token checks themselves are `lockstep_auth::jwt`.
//!
//! Must not: pass a client's token to an upstream (the spec forbids token
//! passthrough), decide what an identity may do.

use lockstep_auth::jwt::{Algorithm, JwtConfig, JwtError, JwtValidator};
use serde_json::{Map, Value, json};

use crate::api_keys::ApiIdentity;
use crate::config::{ClaimsMapping, OAuthConfig};

/// The path of the metadata document, root form; the path form appends the MCP path.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The validator for `identity.oauth`.
pub fn validator(o: &OAuthConfig) -> Result<JwtValidator, JwtError> {
    let mut cfg = JwtConfig::new(&o.issuer, &o.jwks_uri, &o.resource);
    cfg.algorithms = o
        .algorithms
        .iter()
        .map(|a| {
            a.parse::<Algorithm>()
                .map_err(|_| JwtError::Config(format!("unknown algorithm {a:?}")))
        })
        .collect::<Result<_, _>>()?;
    cfg.leeway = o.leeway;
    cfg.min_refresh_interval = o.jwks_min_refresh;
    JwtValidator::new(cfg)
}

/// The introspector for `identity.oauth.introspection`, if set; its secret read now.
pub fn introspector(
    o: &OAuthConfig,
) -> Result<Option<lockstep_auth::introspect::Introspector>, JwtError> {
    let Some(i) = &o.introspection else {
        return Ok(None);
    };
    let secret = std::fs::read_to_string(&i.client_secret_file).map_err(|e| {
        JwtError::Config(format!(
            "identity.oauth.introspection.client_secret_file {}: {e}",
            i.client_secret_file.display()
        ))
    })?;
    lockstep_auth::introspect::Introspector::new(lockstep_auth::introspect::IntrospectionConfig {
        endpoint: i.endpoint.clone(),
        client_id: i.client_id.clone(),
        client_secret: lockstep_auth::Secret::new(secret),
        issuer: o.issuer.clone(),
        audience: o.resource.clone(),
        cache_for: std::time::Duration::from_secs(30),
        max_cached: 10_000,
        timeout: std::time::Duration::from_secs(5),
    })
    .map(Some)
}

/// Where clients find the metadata: the path form for the resource's own path
/// (`https://host/.well-known/oauth-protected-resource/mcp`), as the MCP spec has
/// clients try first.
pub fn metadata_url(o: &OAuthConfig) -> String {
    let (origin, path) = split_resource(&o.resource);
    format!("{origin}{METADATA_PATH}{path}")
}

/// `https://host:port` and `/path` of the resource URI.
fn split_resource(resource: &str) -> (&str, &str) {
    let after_scheme = resource.find("://").map_or(0, |i| i + 3);
    match resource.get(after_scheme..).and_then(|rest| rest.find('/')) {
        Some(i) => resource.split_at(after_scheme + i),
        None => (resource, ""),
    }
}

/// The protected resource metadata document.
pub fn metadata(o: &OAuthConfig) -> Value {
    let mut doc = json!({
        "resource": o.resource,
        "authorization_servers": o.authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": o.algorithms,
    });
    if !o.scopes_supported.is_empty()
        && let Some(m) = doc.as_object_mut()
    {
        m.insert("scopes_supported".into(), json!(o.scopes_supported));
    }
    doc
}

/// The `WWW-Authenticate` value of a 401: always the metadata URL; with
/// `error="invalid_token"` and a description when a token was presented and refused.
pub fn challenge(o: &OAuthConfig, refused: Option<&JwtError>) -> String {
    let mut v = format!("Bearer resource_metadata=\"{}\"", metadata_url(o));
    if !o.scopes_supported.is_empty() {
        v.push_str(&format!(", scope=\"{}\"", o.scopes_supported.join(" ")));
    }
    if let Some(e) = refused {
        // Quotes and backslashes cannot appear in a quoted-string unescaped.
        let desc: String = e
            .to_string()
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        v.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{desc}\""
        ));
    }
    v
}

/// The `WWW-Authenticate` value of a 403 for a caller that lacks scopes: every scope
/// the operation needs (RFC 6750 §3.1, MCP step-up authorization), and the metadata URL
/// when the gateway is an OAuth resource server.
pub fn scope_challenge(o: Option<&OAuthConfig>, scopes: &[String]) -> String {
    let mut v = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\"",
        scopes.join(" ")
    );
    match o {
        Some(o) => v.push_str(&format!(", resource_metadata=\"{}\"", metadata_url(o))),
        None => v.push_str(", realm=\"lockstep-gateway\""),
    }
    v
}

/// Why valid claims still make no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the token's claim {0:?} (identity.claims_mapping) is missing or not a string")]
pub struct MissingIdentityClaim(pub String);

/// The caller a token's claims name: `id` from the mapped claim (required), `role`
/// from its claim (a string, or the first string of an array), scopes from a
/// space-separated string or an array; every claim kept for `input.agent.claims`.
pub fn identity(
    claims: Map<String, Value>,
    mapping: &ClaimsMapping,
) -> Result<ApiIdentity, MissingIdentityClaim> {
    let id = claims
        .get(&mapping.id)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| MissingIdentityClaim(mapping.id.clone()))?
        .to_string();
    let role = match claims.get(&mapping.role) {
        Some(Value::String(r)) if !r.is_empty() => Some(r.clone()),
        Some(Value::Array(a)) => a.iter().find_map(Value::as_str).map(str::to_string),
        _ => None,
    };
    let scopes = match claims.get(&mapping.scope) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Ok(ApiIdentity {
        id,
        role,
        scopes,
        claims,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> OAuthConfig {
        OAuthConfig {
            issuer: "https://auth.example.com".into(),
            jwks_uri: "https://auth.example.com/jwks".into(),
            resource: "https://mcp.example.com/mcp".into(),
            algorithms: vec!["ES256".into()],
            leeway: std::time::Duration::from_secs(30),
            jwks_min_refresh: std::time::Duration::from_secs(10),
            authorization_servers: vec!["https://auth.example.com".into()],
            scopes_supported: vec!["mcp:tools".into()],
            introspection: None,
        }
    }

    #[test]
    fn metadata_is_found_at_the_path_form_of_the_resource() {
        assert_eq!(
            metadata_url(&cfg()),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        let mut root = cfg();
        root.resource = "http://127.0.0.1:8383".into();
        assert_eq!(
            metadata_url(&root),
            "http://127.0.0.1:8383/.well-known/oauth-protected-resource"
        );
        let m = metadata(&cfg());
        assert_eq!(m["resource"], "https://mcp.example.com/mcp");
        assert_eq!(m["authorization_servers"][0], "https://auth.example.com");
        assert_eq!(m["scopes_supported"][0], "mcp:tools");
    }

    #[test]
    fn the_challenge_names_the_metadata_and_why_a_token_was_refused() {
        let c = challenge(&cfg(), None);
        assert_eq!(
            c,
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\""
        );
        let c = challenge(&cfg(), Some(&JwtError::Expired));
        assert!(
            c.ends_with(", error=\"invalid_token\", error_description=\"the token has expired\"")
        );
    }

    #[test]
    fn claims_map_to_an_identity() {
        let claims =
            json!({"sub": "agent-7", "role": ["analyst", "x"], "scope": "mcp:tools db:read"});
        let who = identity(
            claims.as_object().unwrap().clone(),
            &ClaimsMapping::default(),
        )
        .unwrap();
        assert_eq!(who.id, "agent-7");
        assert_eq!(who.role.as_deref(), Some("analyst"));
        assert_eq!(who.scopes, vec!["mcp:tools", "db:read"]);
        assert_eq!(who.claims["sub"], "agent-7");
        let none = json!({"role": "analyst"});
        assert!(identity(none.as_object().unwrap().clone(), &ClaimsMapping::default()).is_err());
    }
}
