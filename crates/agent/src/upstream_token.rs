//! `lockstep.upstream_tokens`: the agent in front of an upstream MCP server (the guide's
//! Envoy + agent path) checks the ephemeral token `lockstep gateway` gave that request,
//! and hands the result to the policy as `input.lockstep.upstream_token`:
//!
//! ```json
//! {"valid": true, "claims": {"sub": "...", "scope": "tools/call:read_database", ...},
//!  "digest": "<SHA-256 of the canonical JSON at digest_pointer in the parsed body>"}
//! {"valid": false, "error": "the token has expired"}
//! ```
//!
//! The signature, `iss`, `aud` and `exp` are checked here (`lockstep_auth::jwt`, with the
//! gateway's JWKS); whether the token is for this very call (its `scope` and
//! `args_sha256` against `input.parsed_body`) is the policy's to say, because regorus
//! has no `io.jwt.*` or `crypto.*` builtins and the agent must not know MCP.
//!
//! Must not: decide (the policy does), log a token.

use envoy_types::ext_authz::v3::pb::CheckRequest;
use lockstep_auth::jwt::{JwtConfig, JwtValidator};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

/// The parsed `lockstep.upstream_tokens` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTokensConfig {
    pub issuer: String,
    pub jwks_uri: String,
    pub audience: String,
    /// JSON pointer into the request body whose canonical JSON is digested
    /// (`/params/arguments` for MCP `tools/call`).
    pub digest_pointer: Option<String>,
}

/// The check, ready to run.
#[derive(Debug)]
pub struct TokenCheck {
    validator: JwtValidator,
    digest_pointer: Option<String>,
}

impl TokenCheck {
    pub fn new(cfg: &UpstreamTokensConfig) -> Result<TokenCheck, lockstep_auth::jwt::JwtError> {
        let mut j = JwtConfig::new(&cfg.issuer, &cfg.jwks_uri, &cfg.audience);
        j.algorithms = vec![
            lockstep_auth::jwt::Algorithm::ES256,
            lockstep_auth::jwt::Algorithm::EdDSA,
        ];
        // The gateway's tokens live seconds: no more slack than clocks need.
        j.leeway = std::time::Duration::from_secs(5);
        Ok(TokenCheck {
            validator: JwtValidator::new(j)?,
            digest_pointer: cfg.digest_pointer.clone(),
        })
    }

    /// `input.lockstep.upstream_token` for one Envoy check.
    pub async fn input(&self, req: &CheckRequest) -> Json {
        let http = req
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let token = http.and_then(|h| {
            h.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| {
                    let (scheme, rest) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                })
        });
        let Some(token) = token else {
            return json!({"valid": false, "error": "no bearer token"});
        };
        let claims = match self.validator.validate(token).await {
            Ok(c) => c,
            Err(e) => return json!({"valid": false, "error": e.to_string()}),
        };
        let mut out = json!({"valid": true, "claims": claims});
        if let (Some(p), Some(h)) = (&self.digest_pointer, http) {
            let digested = serde_json::from_str::<Json>(&h.body)
                .ok()
                .and_then(|b| b.pointer(p).cloned());
            if let (Some(v), Some(m)) = (digested, out.as_object_mut()) {
                // Sorted keys, no whitespace: the gateway's `args_sha256` form.
                m.insert(
                    "digest".into(),
                    json!(hex::encode(Sha256::digest(v.to_string().as_bytes()))),
                );
            }
        }
        out
    }
}
