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
    /// True when this service sends a token over plain `http://` to a host that is not
    /// loopback (anyone on the path can read it).
    pub fn sends_token_in_clear(&self) -> bool {
        if matches!(self.credentials, Credentials::None) {
            return false;
        }
        let Ok(url) = reqwest::Url::parse(&self.url) else {
            return false;
        };
        if url.scheme() != "http" {
            return false;
        }
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => !ip.is_loopback(),
            Err(_) => !host.is_empty() && !host.eq_ignore_ascii_case("localhost"),
        }
    }

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
    /// OPA's `size_limit_bytes`: the largest file this bundle may hold (default: the
    /// engine's `limits.max_file_bytes`, 1 GiB as in OPA).
    pub size_limit_bytes: Option<u64>,
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
    /// `lockstep.min_issued_at`: per bundle, the oldest signed issue time (unix
    /// seconds) ever accepted, on top of the newest one remembered in the persistence
    /// directory.
    pub min_issued_at: BTreeMap<String, i64>,
    /// `lockstep.cutover`: how announced activation instants are followed.
    pub cutover: CutoverSettings,
}

/// `lockstep.cutover`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutoverSettings {
    /// Follow announced activation instants (default true); false activates on arrival,
    /// as OPA does.
    pub enabled: bool,
    /// Above this clock-offset uncertainty the instance says, in its status, that its
    /// switch instant may be off by that much (default 50 ms).
    pub max_clock_uncertainty: Duration,
    /// An instant further ahead than this is not waited for: the revision is activated
    /// on arrival, and a warning logged (default 10 minutes, the server's limit).
    pub max_hold: Duration,
}

impl Default for CutoverSettings {
    fn default() -> Self {
        CutoverSettings {
            enabled: true,
            max_clock_uncertainty: Duration::from_millis(50),
            max_hold: Duration::from_secs(600),
        }
    }
}

impl SyncConfig {
    /// Services (of bundles and status reports) that send a token over plain `http://`
    /// to a host that is not loopback, by name.
    pub fn services_sending_tokens_in_clear(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .bundles
            .iter()
            .map(|b| &b.service)
            .chain(self.status.as_ref().map(|s| &s.service))
            .filter(|s| s.sends_token_in_clear())
            .map(|s| format!("{} ({})", s.name, s.url))
            .collect();
        out.sort();
        out.dedup();
        out
    }

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
            min_issued_at: BTreeMap::new(),
            cutover: CutoverSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(url: &str, token: bool) -> Service {
        Service {
            name: "s".into(),
            url: url.into(),
            credentials: if token {
                Credentials::Bearer {
                    scheme: "Bearer".into(),
                    token: TokenSource::Inline("t".into()),
                }
            } else {
                Credentials::None
            },
            headers: BTreeMap::new(),
            response_header_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn finding7_tokens_over_plain_http_beyond_loopback_are_named() {
        for (url, token, clear) in [
            ("http://bundles.example.com:8282", true, true),
            ("http://10.1.2.3/x", true, true),
            ("http://[2001:db8::1]:80", true, true),
            ("https://bundles.example.com", true, false),
            ("http://127.0.0.1:8282", true, false),
            ("http://localhost:8282", true, false),
            ("http://[::1]:8282", true, false),
            ("http://bundles.example.com", false, false),
        ] {
            assert_eq!(service(url, token).sends_token_in_clear(), clear, "{url}");
        }
        let mut cfg = SyncConfig::new(
            vec![BundleSource {
                name: "main".into(),
                service: service("http://10.1.2.3", true),
                resource: "bundles/main".into(),
                polling: Polling::default(),
                verification: Verification::Skip,
                persist: false,
                size_limit_bytes: None,
            }],
            PathBuf::from("/tmp"),
        );
        cfg.status = Some(StatusTarget {
            service: service("http://10.1.2.3", true),
            partition: None,
        });
        assert_eq!(
            cfg.services_sending_tokens_in_clear(),
            vec!["s (http://10.1.2.3)"]
        );
    }
}
