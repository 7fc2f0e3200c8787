//! Bearer tokens: where they come from (files, environment variables), how they are
//! compared (constant time, over SHA-256 digests so the length leaks nothing), and which
//! request may do what. Secret values are never printed: [`Secret`]'s `Debug` is `***`.

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

pub use lockstep_auth::{Secret, bearer};

/// Where a token comes from: exactly one of `file` and `env`. Inline values are not
/// accepted, so a configuration file never holds a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    /// File holding the token (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<std::path::PathBuf>,
    /// Environment variable holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// For download tokens: the bundles it may fetch; empty = every bundle (fleet-wide).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundles: Vec<String>,
}

impl TokenSource {
    /// Reads the token now.
    pub fn load(&self) -> Result<Secret, ConfigError> {
        let value = match (&self.file, &self.env) {
            (Some(path), None) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Token(format!("cannot read token file {}: {e}", path.display()))
            })?,
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                ConfigError::Token(format!("environment variable {var} is not set"))
            })?,
            _ => {
                return Err(ConfigError::Token(
                    "a token source needs exactly one of `file` and `env`".into(),
                ));
            }
        };
        let secret = Secret::new(value);
        if secret.expose().is_empty() {
            return Err(ConfigError::Token(format!(
                "token from {} is empty",
                self.describe()
            )));
        }
        Ok(secret)
    }

    /// Where the token comes from, for messages (never the value).
    pub fn describe(&self) -> String {
        match (&self.file, &self.env) {
            (Some(p), _) => format!("file {}", p.display()),
            (None, Some(v)) => format!("environment variable {v}"),
            _ => "nowhere".into(),
        }
    }
}

/// A loaded download token and its bundle scope.
#[derive(Debug, Clone)]
pub struct DownloadToken {
    pub secret: Secret,
    /// Empty = every bundle.
    pub bundles: Vec<String>,
}

/// What a credential may read of the fleet's views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewScope {
    All,
    /// A download token scoped to these bundles.
    Bundles(Vec<String>),
}

impl ViewScope {
    pub fn covers(&self, bundle: &str) -> bool {
        match self {
            ViewScope::All => true,
            ViewScope::Bundles(b) => b.iter().any(|n| n == bundle),
        }
    }
}

/// Every credential the server checks.
#[derive(Debug, Clone)]
pub struct Auth {
    pub publisher: Secret,
    pub download: Vec<DownloadToken>,
    pub status: Vec<Secret>,
    pub allow_anonymous_download: bool,
    pub allow_anonymous_status: bool,
    pub allow_anonymous_views: bool,
}

impl Auth {
    /// May this request download `bundle`?
    pub fn may_download(&self, headers: &HeaderMap, bundle: &str) -> bool {
        if self.allow_anonymous_download {
            return true;
        }
        let Some(token) = bearer(headers) else {
            return false;
        };
        // Check every token (no early exit) so timing does not tell which one matched.
        let mut ok = false;
        for t in &self.download {
            let scoped = t.bundles.is_empty() || t.bundles.iter().any(|b| b == bundle);
            ok |= t.secret.matches(token) && scoped;
        }
        ok
    }

    /// May this request publish or roll back?
    pub fn may_publish(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| self.publisher.matches(t))
    }

    /// May this request post a status report? (a status token or any download token)
    pub fn may_report_status(&self, headers: &HeaderMap) -> bool {
        if self.allow_anonymous_status {
            return true;
        }
        let Some(token) = bearer(headers) else {
            return false;
        };
        self.any_token_matches(token, false)
    }

    /// What this request may read of the fleet view, history and metrics: everything
    /// with the publisher token, a status token or a fleet-wide download token; only
    /// its bundles with a scoped download token (finding 10); `None` without a token.
    pub fn view_scope(&self, headers: &HeaderMap) -> Option<ViewScope> {
        if self.allow_anonymous_views {
            return Some(ViewScope::All);
        }
        let token = bearer(headers)?;
        // Every secret is compared (no early exit), as in `may_download`.
        let mut all = self.publisher.matches(token);
        for s in &self.status {
            all |= s.matches(token);
        }
        let mut bundles: Vec<String> = Vec::new();
        let mut scoped = false;
        for t in &self.download {
            if t.secret.matches(token) {
                if t.bundles.is_empty() {
                    all = true;
                } else {
                    scoped = true;
                    bundles.extend(t.bundles.iter().cloned());
                }
            }
        }
        if all {
            Some(ViewScope::All)
        } else if scoped {
            bundles.sort();
            bundles.dedup();
            Some(ViewScope::Bundles(bundles))
        } else {
            None
        }
    }

    /// Who is reporting status, for binding instance ids to credentials: a hash of the
    /// bearer token when it is a valid status or download token (never the token
    /// itself), `None` for an anonymous report. Call after [`Auth::may_report_status`].
    pub fn status_identity(&self, headers: &HeaderMap) -> Option<String> {
        let token = bearer(headers)?;
        if !self.any_token_matches(token, false) {
            return None;
        }
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"lockstep status identity\0");
        h.update(token.as_bytes());
        Some(hex::encode(h.finalize().get(..12).unwrap_or_default()))
    }

    fn any_token_matches(&self, token: &str, include_publisher: bool) -> bool {
        let mut ok = false;
        for t in &self.download {
            ok |= t.secret.matches(token);
        }
        for s in &self.status {
            ok |= s.matches(token);
        }
        if include_publisher {
            ok |= self.publisher.matches(token);
        }
        ok
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2\n");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter"));
        assert!(!s.matches(""));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
