//! lockstep-auth: the bearer credentials every lockstep listener checks (the bundle
//! server's publisher/download/status tokens, the agent's read/write tokens, the
//! gateway's API keys): [`Secret`] values compared in constant time over SHA-256
//! digests, loaded from a file or an environment variable ([`SecretSource`]), and the
//! `Authorization: Bearer` header ([`bearer`]); and JWT access tokens checked against an
//! issuer's published keys ([`jwt`]).
//!
//! Must not: know which request may do what (each listener decides that), print a
//! secret (`Debug` and `Display` are `***`).
#![forbid(unsafe_code)]

pub mod introspect;
pub mod jwt;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret string whose `Debug`/`Display` print `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (trailing whitespace and newlines, as left by `echo > file`, are
    /// trimmed).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().trim_end().to_string())
    }

    /// The secret itself, for sending it (never for logging).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// Constant-time comparison with a presented value (digests, so the length of
    /// either leaks nothing).
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.digest().ct_eq(&presented))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// True when `presented` matches any of `secrets`; every one is compared (no early
/// exit), so the timing does not tell which matched.
pub fn any_matches<'a>(secrets: impl IntoIterator<Item = &'a Secret>, presented: &str) -> bool {
    secrets
        .into_iter()
        .fold(false, |ok, s| s.matches(presented) | ok)
}

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read token file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set")]
    Env(String),
    #[error("a token source needs exactly one of `file` and `env`")]
    Ambiguous,
    #[error("token from {0} is empty")]
    Empty(String),
}

/// Where a secret comes from: exactly one of `file` and `env`. Inline values are not
/// accepted, so a configuration file never holds a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// File holding the token (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Environment variable holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl SecretSource {
    /// Reads the secret now.
    pub fn load(&self) -> Result<Secret, SecretError> {
        let value = match (&self.file, &self.env) {
            (Some(path), None) => {
                std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?
            }
            (None, Some(var)) => std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?,
            _ => return Err(SecretError::Ambiguous),
        };
        let secret = Secret::new(value);
        if secret.expose().is_empty() {
            return Err(SecretError::Empty(self.describe()));
        }
        Ok(secret)
    }

    /// Where the secret comes from, for messages (never the value).
    pub fn describe(&self) -> String {
        match (&self.file, &self.env) {
            (Some(p), _) => format!("file {}", p.display()),
            (None, Some(v)) => format!("environment variable {v}"),
            _ => "nowhere".into(),
        }
    }
}

/// The bearer token of a request, if any (`Authorization: Bearer <token>`, scheme
/// case-insensitive).
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_and_never_print() {
        let s = Secret::new("abc\n");
        assert!(s.matches("abc"));
        assert!(!s.matches("abd") && !s.matches("ab") && !s.matches(""));
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let others = [Secret::new("x"), Secret::new("abc")];
        assert!(any_matches(&others, "abc"));
        assert!(!any_matches(&others, "y"));
    }

    #[test]
    fn bearer_headers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, "bEaReR  t1 ".parse().unwrap());
        assert_eq!(bearer(&h), Some("t1"));
        h.insert(http::header::AUTHORIZATION, "Basic t1".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn sources() {
        let dir = std::env::temp_dir().join(format!("lockstep-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "s3cret\n").unwrap();
        let src = SecretSource {
            file: Some(f.clone()),
            env: None,
        };
        assert!(src.load().unwrap().matches("s3cret"));
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(src.load(), Err(SecretError::Empty(_))));
        let missing = SecretSource {
            file: Some(dir.join("missing")),
            env: None,
        };
        assert!(matches!(missing.load(), Err(SecretError::File { .. })));
        assert!(matches!(
            SecretSource::default().load(),
            Err(SecretError::Ambiguous)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
