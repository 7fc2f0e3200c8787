//! Resolved configuration of the sync engine: every value validated and defaulted.
//! [`crate::opa_config`] builds it from OPA's config file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lockstep_bundle::{Limits, VerificationConfig};
use lockstep_policy::CompileOptions;

/// Where a bearer token comes from. A `Path` is re-read on every request, as OPA does
/// for `token_path`, so rotated tokens are picked up without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Inline(String),
    Path(PathBuf),
}

impl TokenSource {
    pub fn load(&self) -> Result<String, TokenError> {
        match self {
            TokenSource::Inline(t) => Ok(t.trim().to_string()),
            TokenSource::Path(p) => std::fs::read_to_string(p)
                .map(|t| t.trim().to_string())
                .map_err(|source| TokenError {
                    path: p.clone(),
                    source,
                }),
        }
    }
}

/// A `token_path` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("token_path {}: {source}", path.display())]
pub struct TokenError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// `services[_].credentials`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    None,
    /// `credentials.bearer`: `Authorization: <scheme> <token>`.
    Bearer { scheme: String, token: TokenSource },
}

/// One entry of `services`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// Base URL, without a trailing slash.
    pub url: String,
    pub credentials: Credentials,
    /// `services[_].headers`.
    pub headers: BTreeMap<String, String>,
    /// `response_header_timeout_seconds` (default 10): bound on a non-long-poll request.
    pub response_header_timeout: Duration,
}

impl Service {
    /// `url + "/" + trim(path, "/")`, as OPA joins them.
    pub fn join(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.url.trim_end_matches('/'),
            path.trim_matches('/')
        )
    }
}

/// `bundles[_].polling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Polling {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// `long_polling_timeout_seconds`: long polling is on only when set.
    pub long_polling_timeout: Option<Duration>,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            min_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(120),
            long_polling_timeout: None,
        }
    }
}

/// How bundle signatures are handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Verify with OPA's rules, and additionally require a signature (OPA accepts an
    /// unsigned bundle when no `keyid` is configured; lockstep does not).
    Required(VerificationConfig),
    /// Do not look at signatures at all. Only by explicit configuration; logged loudly.
    Skip,
}

/// One configured bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSource {
    pub name: String,
    pub service: Service,
    /// Path under the service URL (OPA's default: `bundles/<name>`).
    pub resource: String,
    pub polling: Polling,
    pub verification: Verification,
    /// `persist: true`: keep the last activated bundle on disk and load it at start.
    pub persist: bool,
}

impl BundleSource {
    pub fn url(&self) -> String {
        self.service.join(&self.resource)
    }
}

/// What to do when the freshness lease has expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStale {
    /// Fail closed: every decision is refused with the reason (default).
    #[default]
    Deny,
    /// Keep serving the last activated revision (OPA's behaviour), flagged as stale.
    Serve,
}

impl OnStale {
    pub fn as_str(self) -> &'static str {
        match self {
            OnStale::Deny => "deny",
            OnStale::Serve => "serve",
        }
    }
}

/// Where status reports go (`status.service`, `status.partition_name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTarget {
    pub service: Service,
    pub partition: Option<String>,
}

impl StatusTarget {
    pub fn url(&self) -> String {
        match &self.partition {
            Some(p) => self
                .service
                .join(&format!("status/{}", p.trim_matches('/'))),
            None => self.service.join("status"),
        }
    }
}

/// Everything the sync engine needs.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub bundles: Vec<BundleSource>,
    /// `persistence_directory` (OPA's default `.opa`); bundles go to `bundles/<name>/`.
    pub persistence_dir: PathBuf,
    pub max_staleness: Duration,
    pub on_stale: OnStale,
    pub status: Option<StatusTarget>,
    /// Status labels (`id`, `version` and the user's `labels`).
    pub labels: BTreeMap<String, String>,
    pub compile: CompileOptions,
    pub limits: Limits,
}

impl SyncConfig {
    /// A configuration with defaults (`max_staleness` 5 minutes, `on_stale: deny`).
    pub fn new(bundles: Vec<BundleSource>, persistence_dir: PathBuf) -> Self {
        SyncConfig {
            bundles,
            persistence_dir,
            max_staleness: Duration::from_secs(300),
            on_stale: OnStale::Deny,
            status: None,
            labels: BTreeMap::new(),
            compile: CompileOptions::default(),
            limits: Limits::default(),
        }
    }
}
