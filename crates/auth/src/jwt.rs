//! JWT access tokens (RFC 9068) checked the way an OAuth 2.1 resource server must:
//! signature against the issuer's published keys (JWKS), issuer, audience (this
//! server's canonical resource URI, RFC 8707), `exp`/`nbf` with a small leeway, and an
//! algorithm allow-list that admits only asymmetric algorithms (no `none`, and no HMAC,
//! so a public key can never be used as a shared secret).
//!
//! The key set is fetched on first use, cached, and fetched again when a token names a
//! `kid` the cache does not have (a rotation at the issuer), at most once per
//! [`JwtConfig::min_refresh_interval`], so a flood of tokens with made-up key ids does
//! not become a flood of requests to the issuer. Symmetric (`oct`) and encryption keys
//! in the set are ignored.
//!
//! A token that passed is remembered (by its SHA-256, with its claims and `exp`) so a
//! client that sends the same token with every call pays for the signature check once:
//! an ES256 verification costs about as much as the rest of the gateway's work on a
//! call (BENCHMARKS.md H). A remembered token is still refused once `exp` (plus the
//! leeway) has passed. The cache is bounded ([`JwtConfig::max_cached_tokens`]).
//!
//! Must not: decide what a valid token may do (the caller maps claims to an identity
//! and its policy decides), log a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};
use thiserror::Error;

/// How tokens are checked.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// Where the issuer publishes its keys.
    pub jwks_uri: String,
    /// The `aud` every token must contain: this server's canonical resource URI.
    pub audience: String,
    /// Accepted `alg` values (asymmetric only; see [`JwtConfig::check`]).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Least time between two fetches of the key set.
    pub min_refresh_interval: Duration,
    /// Bound on the key set document.
    pub max_jwks_bytes: usize,
    /// Bound on one fetch of the key set.
    pub fetch_timeout: Duration,
    /// Tokens remembered after a successful check (0: none).
    pub max_cached_tokens: usize,
}

impl JwtConfig {
    /// Defaults for everything but the issuer, its key set and the audience.
    pub fn new(issuer: &str, jwks_uri: &str, audience: &str) -> JwtConfig {
        JwtConfig {
            issuer: issuer.to_string(),
            jwks_uri: jwks_uri.to_string(),
            audience: audience.to_string(),
            algorithms: vec![Algorithm::ES256, Algorithm::RS256],
            leeway: Duration::from_secs(30),
            min_refresh_interval: Duration::from_secs(10),
            max_jwks_bytes: 256 * 1024,
            fetch_timeout: Duration::from_secs(5),
            max_cached_tokens: 10_000,
        }
    }

    /// Refuses HMAC algorithms and an empty list.
    pub fn check(&self) -> Result<(), JwtError> {
        if self.algorithms.is_empty() {
            return Err(JwtError::Config("no algorithm is allowed".into()));
        }
        if let Some(a) = self.algorithms.iter().find(|a| is_symmetric(**a)) {
            return Err(JwtError::Config(format!(
                "{a:?} is symmetric: a resource server verifies tokens with the issuer's public keys only"
            )));
        }
        for (what, v) in [
            ("issuer", &self.issuer),
            ("jwks_uri", &self.jwks_uri),
            ("audience", &self.audience),
        ] {
            if v.trim().is_empty() {
                return Err(JwtError::Config(format!("{what} must not be empty")));
            }
        }
        Ok(())
    }
}

fn is_symmetric(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Why a token is refused, or the key set could not be had. The messages are meant
/// for the client's `WWW-Authenticate` `error_description` and the log; none repeats
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwtError {
    #[error("JWT configuration: {0}")]
    Config(String),
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm {0} is not accepted")]
    AlgorithmNotAllowed(String),
    #[error("the token is signed with a key the issuer does not publish (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token was issued for another resource (audience)")]
    WrongAudience,
    #[error("the token lacks the claim {0}")]
    MissingClaim(String),
    #[error("the token was refused: {0}")]
    Invalid(String),
    #[error("the issuer's keys could not be fetched: {0}")]
    Jwks(String),
    #[error("the authorization server says the token is not active")]
    Inactive,
    #[error("the token could not be introspected: {0}")]
    Introspection(String),
}

/// The usable public keys of one key set.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, (DecodingKey, Option<KeyAlgorithm>)>,
    /// Keys without a `kid` (tried for tokens without one).
    anonymous: Vec<(DecodingKey, Option<KeyAlgorithm>)>,
}

impl KeySet {
    fn from_jwks(set: &JwkSet) -> KeySet {
        let mut out = KeySet::default();
        for jwk in &set.keys {
            if !usable(jwk) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk.common.key_algorithm;
            match &jwk.common.key_id {
                Some(kid) => {
                    out.by_kid.insert(kid.clone(), (key, alg));
                }
                None => out.anonymous.push((key, alg)),
            }
        }
        out
    }
}

/// Public signature keys only: no `oct` secrets, nothing marked for encryption.
fn usable(jwk: &Jwk) -> bool {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    let asymmetric = matches!(
        jwk.algorithm,
        P::RSA(_) | P::EllipticCurve(_) | P::OctetKeyPair(_)
    );
    let for_signing = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
    asymmetric && for_signing
}

/// Whether a key marked with `alg` may verify `header_alg`.
fn key_allows(key_alg: Option<KeyAlgorithm>, header_alg: Algorithm) -> bool {
    match key_alg {
        None => true,
        Some(k) => format!("{k:?}") == format!("{header_alg:?}"),
    }
}

/// A token that passed: its claims and `exp`.
type Checked = (Arc<Map<String, Value>>, i64);

/// Checks tokens of one issuer for one audience.
pub struct JwtValidator {
    cfg: JwtConfig,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    last_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time; the others wait for its result.
    fetching: tokio::sync::Mutex<()>,
    /// SHA-256 of a checked token -> its claims and `exp`.
    checked: Mutex<HashMap<[u8; 32], Checked>>,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidator")
            .field("issuer", &self.cfg.issuer)
            .field("audience", &self.cfg.audience)
            .finish_non_exhaustive()
    }
}

impl JwtValidator {
    pub fn new(cfg: JwtConfig) -> Result<JwtValidator, JwtError> {
        cfg.check()?;
        let http = reqwest::Client::builder()
            .timeout(cfg.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwtError::Config(e.to_string()))?;
        Ok(JwtValidator {
            cfg,
            http,
            keys: RwLock::new(Arc::new(KeySet::default())),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            checked: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &JwtConfig {
        &self.cfg
    }

    /// Whether `credential` has a JWT's shape (three dot-separated parts), so that a
    /// caller with several kinds of credential knows which check applies.
    pub fn looks_like_jwt(credential: &str) -> bool {
        credential.split('.').count() == 3 && credential.len() > 20
    }

    /// The token's claims, once every check passed.
    pub async fn validate(&self, token: &str) -> Result<Map<String, Value>, JwtError> {
        use sha2::{Digest, Sha256};
        let id: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        let leeway = i64::try_from(self.cfg.leeway.as_secs()).unwrap_or(i64::MAX);
        let hit = self.checked.lock().ok().and_then(|c| c.get(&id).cloned());
        if let Some((claims, exp)) = hit {
            if exp.saturating_add(leeway) < now {
                return Err(JwtError::Expired);
            }
            return Ok((*claims).clone());
        }
        let claims = self.check(token).await?;
        if self.cfg.max_cached_tokens > 0
            && let Some(exp) = claims.get("exp").and_then(Value::as_i64)
            && let Ok(mut c) = self.checked.lock()
        {
            if c.len() >= self.cfg.max_cached_tokens {
                c.retain(|_, (_, e)| e.saturating_add(leeway) >= now);
                if c.len() >= self.cfg.max_cached_tokens {
                    c.clear();
                }
            }
            c.insert(id, (Arc::new(claims.clone()), exp));
        }
        Ok(claims)
    }

    /// Every check, without the cache.
    async fn check(&self, token: &str) -> Result<Map<String, Value>, JwtError> {
        // A header whose `alg` the library does not know (`none`) fails to parse: say
        // it is the algorithm, not the shape, that is refused.
        let header = decode_header(token).map_err(|_| match header_alg_text(token) {
            Some(alg) if alg.parse::<Algorithm>().is_err() => JwtError::AlgorithmNotAllowed(alg),
            _ => JwtError::Malformed,
        })?;
        if !self.cfg.algorithms.contains(&header.alg) {
            return Err(JwtError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        let kid = header.kid.clone();
        let mut keys = self.current();
        if !has_key(&keys, kid.as_deref()) {
            keys = self.refresh_for(kid.as_deref()).await?;
        }
        let candidates: Vec<&DecodingKey> = match kid.as_deref() {
            Some(k) => keys.by_kid.get(k).into_iter().collect::<Vec<_>>(),
            None => keys.anonymous.iter().collect(),
        }
        .into_iter()
        .filter(|(_, a)| key_allows(*a, header.alg))
        .map(|(k, _)| k)
        .collect();
        if candidates.is_empty() {
            return Err(JwtError::UnknownKey(kid));
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.leeway = self.cfg.leeway.as_secs();
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let mut last = JwtError::BadSignature;
        for key in candidates {
            match decode::<Map<String, Value>>(token, key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = map_error(&e),
            }
        }
        Err(last)
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The key set, fetched again unless that happened less than
    /// `min_refresh_interval` ago (or another request is fetching it right now).
    async fn refresh_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, JwtError> {
        let _one = self.fetching.lock().await;
        // Fetched while this request waited?
        let keys = self.current();
        if has_key(&keys, kid) {
            return Ok(keys);
        }
        let due = self
            .last_fetch
            .lock()
            .map(|t| t.is_none_or(|t| t.elapsed() >= self.cfg.min_refresh_interval))
            .unwrap_or(true);
        if !due {
            return Ok(keys);
        }
        if let Ok(mut t) = self.last_fetch.lock() {
            *t = Some(Instant::now());
        }
        let fresh = Arc::new(self.fetch().await?);
        if let Ok(mut k) = self.keys.write() {
            *k = fresh.clone();
        }
        Ok(fresh)
    }

    async fn fetch(&self) -> Result<KeySet, JwtError> {
        let err = |e: String| JwtError::Jwks(format!("{}: {e}", self.cfg.jwks_uri));
        let mut resp = self
            .http
            .get(&self.cfg.jwks_uri)
            .header("accept", "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
            if body.len() + chunk.len() > self.cfg.max_jwks_bytes {
                return Err(err(format!(
                    "larger than {} bytes",
                    self.cfg.max_jwks_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
        Ok(KeySet::from_jwks(&set))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn has_key(keys: &KeySet, kid: Option<&str>) -> bool {
    match kid {
        Some(k) => keys.by_kid.contains_key(k),
        None => !keys.anonymous.is_empty(),
    }
}

/// The `alg` a header names, for a message about an algorithm the library does not
/// even parse (`none`).
fn header_alg_text(token: &str) -> Option<String> {
    use base64::Engine;
    token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("alg").and_then(Value::as_str).map(str::to_string))
}

fn map_error(e: &jsonwebtoken::errors::Error) -> JwtError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => JwtError::BadSignature,
        K::ExpiredSignature => JwtError::Expired,
        K::ImmatureSignature => JwtError::NotYetValid,
        K::InvalidIssuer => JwtError::WrongIssuer,
        K::InvalidAudience => JwtError::WrongAudience,
        K::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => JwtError::Malformed,
        K::InvalidAlgorithm => JwtError::AlgorithmNotAllowed("for this key".into()),
        other => JwtError::Invalid(format!("{other:?}")),
    }
}
