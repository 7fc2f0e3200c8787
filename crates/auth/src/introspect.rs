//! Opaque access tokens checked by asking the authorization server (token introspection,
//! RFC 7662): `POST token=…` to its introspection endpoint, authenticated as this
//! resource server (client_secret_basic). The token counts only when the answer is
//! `active: true`, not expired, for this resource (`aud`) and, when it says, from the
//! expected issuer; without `sub`, its `client_id` is taken as `sub` (a client-credentials
//! token). Active answers are remembered until `exp`, at most
//! [`IntrospectionConfig::cache_for`], so a revocation at the server takes effect within
//! that time; refusals are not remembered.
//!
//! Must not: log a token or the client secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::Secret;
use crate::jwt::JwtError;

#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Expected `iss`, checked when the answer has one.
    pub issuer: String,
    /// This resource: must be in `aud`.
    pub audience: String,
    pub cache_for: Duration,
    pub max_cached: usize,
    pub timeout: Duration,
}

type Remembered = (Arc<Map<String, Value>>, i64);

pub struct Introspector {
    cfg: IntrospectionConfig,
    http: reqwest::Client,
    cache: Mutex<HashMap<[u8; 32], Remembered>>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("endpoint", &self.cfg.endpoint)
            .finish_non_exhaustive()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Introspector {
    pub fn new(cfg: IntrospectionConfig) -> Result<Introspector, JwtError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwtError::Config(e.to_string()))?;
        Ok(Introspector {
            cfg,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The token's claims as the server states them, once every check passed.
    pub async fn introspect(&self, token: &str) -> Result<Map<String, Value>, JwtError> {
        let id: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let t = now();
        let hit = self.cache.lock().ok().and_then(|c| c.get(&id).cloned());
        if let Some((claims, until)) = hit
            && until >= t
        {
            return Ok((*claims).clone());
        }
        let form = format!("token={}&token_type_hint=access_token", urlencode(token));
        let resp = self
            .http
            .post(&self.cfg.endpoint)
            .basic_auth(&self.cfg.client_id, Some(self.cfg.client_secret.expose()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| JwtError::Introspection(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(JwtError::Introspection(format!("HTTP {}", resp.status())));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| JwtError::Introspection(e.to_string()))?;
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| JwtError::Introspection(e.to_string()))?;
        let mut claims = v.as_object().cloned().unwrap_or_default();
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(JwtError::Inactive);
        }
        let exp = claims.get("exp").and_then(Value::as_i64);
        if exp.is_some_and(|e| e < t) {
            return Err(JwtError::Expired);
        }
        if let Some(iss) = claims.get("iss").and_then(Value::as_str)
            && iss != self.cfg.issuer
        {
            return Err(JwtError::WrongIssuer);
        }
        let for_us = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.cfg.audience,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(&self.cfg.audience)),
            _ => false,
        };
        if !for_us {
            return Err(JwtError::WrongAudience);
        }
        // A client-credentials token names no user: its client is who calls.
        if claims.get("sub").is_none()
            && let Some(c) = claims.get("client_id").cloned()
        {
            claims.insert("sub".into(), c);
        }
        let cache_secs = i64::try_from(self.cfg.cache_for.as_secs()).unwrap_or(i64::MAX);
        let until = exp.unwrap_or(t).min(t.saturating_add(cache_secs));
        if self.cfg.max_cached > 0
            && let Ok(mut c) = self.cache.lock()
        {
            if c.len() >= self.cfg.max_cached {
                c.retain(|_, (_, u)| *u >= t);
                if c.len() >= self.cfg.max_cached {
                    c.clear();
                }
            }
            c.insert(id, (Arc::new(claims.clone()), until));
        }
        Ok(claims)
    }
}

/// `application/x-www-form-urlencoded` for one value.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
