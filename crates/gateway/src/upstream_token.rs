//! Ephemeral scoped tokens to upstreams: after the layers allow a request, the gateway
//! gives the upstream a short-lived signed JWT valid only for that operation, so a
//! server reached around the gateway, or a replayed request, gets nothing.
//!
//! Claims: `iss` (`upstream_tokens.issuer`), `aud` (the upstream's `token_audience`,
//! RFC 8707), `sub` (the agent), `scope` (`<method>` or `<method>:<tool, prompt or
//! resource>`, the upstream's own name), `args_sha256` (for a `tools/call`: SHA-256 of
//! its arguments as canonical JSON: keys sorted, no whitespace; Python's
//! `json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`),
//! `decision_id`, `revision`, `jti`, `iat`, `exp` (`iat` + `lifetime`).
//!
//! Keys: every `*.pem` (a P-256 private key: ES256; or an Ed25519 one: EdDSA, much
//! cheaper to sign) in `upstream_tokens.keys_dir`, the file
//! name without `.pem` its `kid`, all published at `/.well-known/jwks.json`. The
//! directory is read again every second: a new file is published at once and signs
//! once it has been published for `activation_delay` (so verifiers that cache the key
//! set have had the time to see it); then the greatest `kid` that is old enough signs.
//! Removing a file unpublishes it (wait `lifetime` after it stopped signing).
//!
//! Must not: put the client's own credential in the token or anywhere upstream.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::UpstreamTokensConfig;

/// Why the gateway cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("upstream_tokens.keys_dir {dir}: {message}")]
    Dir { dir: String, message: String },
    #[error("upstream_tokens.keys_dir {0}: no *.pem key")]
    NoKey(String),
    #[error("upstream_tokens: key {path}: {message}")]
    Key { path: String, message: String },
    #[error("upstream_tokens: signing failed: {0}")]
    Sign(String),
}

struct RingKey {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Jwk,
    first_seen: Instant,
}

/// The keys, the signer, and the claims every token shares.
pub struct UpstreamTokens {
    cfg: UpstreamTokensConfig,
    ring: RwLock<Arc<Vec<RingKey>>>,
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field("issuer", &self.cfg.issuer)
            .finish_non_exhaustive()
    }
}

/// What one token grants.
#[derive(Debug, Clone, Default)]
pub struct Grant<'a> {
    pub audience: &'a str,
    pub subject: &'a str,
    pub scope: String,
    pub arguments_sha256: Option<String>,
    pub decision_id: Option<&'a str>,
    pub revision: Option<&'a str>,
}

/// The digest a token carries for `arguments` (see the module doc for the form).
pub fn arguments_sha256(arguments: &Value) -> String {
    // serde_json's maps are sorted (no `preserve_order` in this workspace) and its
    // output compact: the canonical form.
    hex::encode(Sha256::digest(arguments.to_string().as_bytes()))
}

impl UpstreamTokens {
    /// Reads the key directory; at least one key is needed. Keys present at start
    /// sign at once.
    pub fn load(cfg: UpstreamTokensConfig) -> Result<UpstreamTokens, TokenError> {
        let t = UpstreamTokens {
            cfg,
            ring: RwLock::new(Arc::new(Vec::new())),
        };
        let start = Instant::now()
            .checked_sub(t.cfg.activation_delay)
            .unwrap_or_else(Instant::now);
        t.reload_with(start)?;
        Ok(t)
    }

    /// Reads the directory again: new keys are published now and sign after the
    /// activation delay; missing ones are dropped. On an error the keys stay.
    pub fn reload(&self) -> Result<(), TokenError> {
        self.reload_with(Instant::now())
    }

    fn reload_with(&self, seen: Instant) -> Result<(), TokenError> {
        let dir = &self.cfg.keys_dir;
        let old = self.keys();
        let mut keys = Vec::new();
        for path in pem_files(dir)? {
            let Some(kid) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if let Some(k) = old.iter().find(|k| k.kid == kid) {
                keys.push(RingKey {
                    kid,
                    alg: k.alg,
                    key: k.key.clone(),
                    jwk: k.jwk.clone(),
                    first_seen: k.first_seen,
                });
                continue;
            }
            let err = |m: String| TokenError::Key {
                path: path.display().to_string(),
                message: m,
            };
            let pem = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
            // P-256 signs ES256; an Ed25519 key signs EdDSA, about five times faster
            // (BENCHMARKS.md H).
            let (key, alg) = match EncodingKey::from_ec_pem(&pem) {
                Ok(k) => (k, Algorithm::ES256),
                Err(_) => match EncodingKey::from_ed_pem(&pem) {
                    Ok(k) => (k, Algorithm::EdDSA),
                    Err(e) => {
                        return Err(err(format!(
                            "neither a P-256 nor an Ed25519 private key in PEM: {e}"
                        )));
                    }
                },
            };
            let mut jwk = Jwk::from_encoding_key(&key, alg).map_err(|e| err(e.to_string()))?;
            jwk.common.key_id = Some(kid.clone());
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
            keys.push(RingKey {
                kid,
                alg,
                key,
                jwk,
                first_seen: seen,
            });
        }
        if keys.is_empty() {
            return Err(TokenError::NoKey(dir.display().to_string()));
        }
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        if let Ok(mut r) = self.ring.write() {
            *r = Arc::new(keys);
        }
        Ok(())
    }

    fn keys(&self) -> Arc<Vec<RingKey>> {
        self.ring
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The published keys.
    pub fn jwks(&self) -> Value {
        let set = JwkSet {
            keys: self.keys().iter().map(|k| k.jwk.clone()).collect(),
        };
        serde_json::to_value(set).unwrap_or_else(|_| json!({"keys": []}))
    }

    /// The `kid` that signs now: the greatest among keys published long enough, else
    /// the longest-published one.
    pub fn signing_kid(&self) -> Option<String> {
        let keys = self.keys();
        signer(&keys, self.cfg.activation_delay).map(|k| k.kid.clone())
    }

    /// A token for `grant`.
    pub fn mint(&self, grant: &Grant<'_>) -> Result<String, TokenError> {
        let keys = self.keys();
        let Some(k) = signer(&keys, self.cfg.activation_delay) else {
            return Err(TokenError::NoKey(self.cfg.keys_dir.display().to_string()));
        };
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = json!({
            "iss": self.cfg.issuer,
            "aud": grant.audience,
            "sub": grant.subject,
            "scope": grant.scope,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": iat,
            "exp": iat + self.cfg.lifetime.as_secs(),
        });
        if let Some(m) = claims.as_object_mut() {
            for (name, v) in [
                ("args_sha256", grant.arguments_sha256.as_deref()),
                ("decision_id", grant.decision_id),
                ("revision", grant.revision),
            ] {
                if let Some(v) = v {
                    m.insert(name.into(), Value::String(v.to_string()));
                }
            }
        }
        let mut h = Header::new(k.alg);
        h.kid = Some(k.kid.clone());
        jsonwebtoken::encode(&h, &claims, &k.key).map_err(|e| TokenError::Sign(e.to_string()))
    }
}

fn signer(keys: &[RingKey], delay: Duration) -> Option<&RingKey> {
    keys.iter()
        .filter(|k| k.first_seen.elapsed() >= delay)
        .max_by(|a, b| a.kid.cmp(&b.kid))
        .or_else(|| keys.iter().min_by_key(|k| k.first_seen))
}

fn pem_files(dir: &Path) -> Result<Vec<PathBuf>, TokenError> {
    let err = |m: String| TokenError::Dir {
        dir: dir.display().to_string(),
        message: m,
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| err(e.to_string()))? {
        let p = e.map_err(|e| err(e.to_string()))?.path();
        if p.extension().is_some_and(|x| x == "pem") && p.is_file() {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn write_key(dir: &Path, kid: &str) {
        let k = lockstep_testkit::bundles::keys();
        std::fs::write(dir.join(format!("{kid}.pem")), k.private).unwrap();
    }

    fn cfg(dir: &Path, delay: Duration) -> UpstreamTokensConfig {
        UpstreamTokensConfig {
            issuer: "https://gw.example".into(),
            keys_dir: dir.to_path_buf(),
            lifetime: Duration::from_secs(60),
            activation_delay: delay,
        }
    }

    #[test]
    fn a_new_key_is_published_at_once_and_signs_after_the_delay() {
        let d = tempfile::tempdir().unwrap();
        write_key(d.path(), "2026-01");
        let t = UpstreamTokens::load(cfg(d.path(), Duration::from_millis(200))).unwrap();
        assert_eq!(t.signing_kid().as_deref(), Some("2026-01"));
        write_key(d.path(), "2026-02");
        t.reload().unwrap();
        assert_eq!(t.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_eq!(t.signing_kid().as_deref(), Some("2026-01"), "not yet");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.signing_kid().as_deref(), Some("2026-02"));
        std::fs::remove_file(d.path().join("2026-01.pem")).unwrap();
        t.reload().unwrap();
        assert_eq!(t.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    /// A throwaway Ed25519 key for this test only (`openssl genpkey -algorithm ed25519`).
    pub const TEST_ED25519: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINlHH94nznz2OI9b7hNeFgEyIA6hWT6le/eI8g4PrLzo\n-----END PRIVATE KEY-----\n";

    #[test]
    fn an_ed25519_key_signs_eddsa() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ed.pem"), TEST_ED25519).unwrap();
        let t = UpstreamTokens::load(cfg(d.path(), Duration::ZERO)).unwrap();
        let tok = t
            .mint(&Grant {
                audience: "https://db",
                subject: "a",
                scope: "tools/call:x".into(),
                ..Grant::default()
            })
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&tok).unwrap().alg,
            Algorithm::EdDSA
        );
        assert_eq!(t.jwks()["keys"][0]["kty"], "OKP");
        std::fs::write(d.path().join("bad.pem"), "not a key").unwrap();
        assert!(t.reload().is_err());
    }

    #[test]
    fn the_argument_digest_is_over_canonical_json() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "é"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(arguments_sha256(&a), arguments_sha256(&b));
        assert_eq!(
            arguments_sha256(&a),
            hex::encode(Sha256::digest(
                r#"{"a":{"x":"é","y":[1,2]},"b":1}"#.as_bytes()
            ))
        );
    }
}
