//! Server configuration: a YAML file (every field optional) plus command-line overrides
//! applied by the caller. Secrets are never inline: tokens come from files or
//! environment variables ([`crate::auth::TokenSource`]).
//!
//! ```yaml
//! listen: 127.0.0.1:8282
//! bundle_path_prefix: /bundles
//! store:
//!   folder: ./lockstep-data            # default store (object_store LocalFileSystem)
//!   # s3: {bucket: b, prefix: lockstep, endpoint: http://127.0.0.1:9000, region: us-east-1, allow_http: true,
//!   #      access_key_id: {env: S3_KEY}, secret_access_key: {file: /run/secrets/s3}}   # else AWS_* variables
//!   watch_interval_ms: 1000            # how often replicas look at current.json
//! long_poll: {max_wait_seconds: 60}
//! history: {keep_revisions: 10}
//! publish: {allow_unsigned: false, max_bundle_bytes: 67108864, max_concurrent_uploads: 4}
//! keys:                                # OPA's `keys:` map
//!   ci: {key: /etc/lockstep/ci-pub.pem, algorithm: ES256}
//! verification: {key_id: ci, scope: "", exclude_files: [],    # optional
//!                bundle_scopes: {main: bundle/main}}  # a bundle's signatures must carry this scope
//! auth:
//!   publisher_token: {file: /run/secrets/publisher}
//!   download_tokens:
//!     - {env: LOCKSTEP_FLEET_TOKEN}               # fleet-wide
//!     - {file: /run/secrets/team-a, bundles: [team-a]}
//!   status_tokens: [{env: LOCKSTEP_STATUS_TOKEN}]
//!   allow_anonymous_download: false
//!   allow_anonymous_status: false
//!   allow_anonymous_views: false       # /, /v1/fleet, /metrics, history
//! fleet: {unreachable_after_seconds: 300, forget_after_seconds: 3600, sync_interval_ms: 2000,
//!         # a status report over any of these is refused with 413:
//!         max_bundles_per_report: 64, max_labels: 64, max_label_bytes: 4096,
//!         max_plugins_bytes: 16384, max_bundle_status_bytes: 16384,
//!         max_concurrent_reports: 256}        # status bodies read at once
//! listener: {header_read_timeout_seconds: 10, idle_timeout_seconds: 120, max_connections: 10000}
//! cutover: {delay_ms: 0, bundles: {main: 500}}   # announce each activation this far ahead
//! # tls: {cert: server.pem, key: server-key.pem, client_ca: clients-ca.pem}   # optional; client_ca optional
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockstep_bundle::{KeyConfig, VerificationConfig};
use serde::{Deserialize, Serialize};

use crate::auth::{Auth, DownloadToken, TokenSource};
use crate::error::ConfigError;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8282` by default; port 0 picks one).
    pub listen: Option<String>,
    /// Path prefix of the bundle resources (default `/bundles`).
    pub bundle_path_prefix: Option<String>,
    pub store: StoreConfig,
    pub long_poll: LongPollConfig,
    pub history: HistoryConfig,
    pub publish: PublishConfig,
    /// OPA's `keys:` map: key id -> `{key, algorithm, scope}`; `key` is PEM or a file path.
    pub keys: BTreeMap<String, KeyConfig>,
    /// Optional `key_id`, `scope`, `exclude_files` as in OPA's bundle `signing:` block.
    pub verification: Option<VerificationExtra>,
    pub auth: AuthConfig,
    pub fleet: FleetConfig,
    /// Serve HTTPS (and optionally require client certificates).
    pub tls: Option<crate::tls::TlsConfig>,
    /// Timeouts and the connection limit of the listener (plain and TLS).
    pub listener: ListenerConfig,
    /// Synchronized cut-over: how far ahead of each publication its activation instant
    /// is announced.
    pub cutover: CutoverConfig,
}

/// `cutover:` — a publication is announced to switch at commit time plus this delay, so
/// every instance prepares it first and all switch at the same instant. `0` (the
/// default) keeps activation on arrival. `lockstep publish --cutover` overrides it for
/// one publication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CutoverConfig {
    /// Milliseconds, for every bundle without its own entry (default 0).
    pub delay_ms: u64,
    /// Milliseconds per bundle name.
    pub bundles: BTreeMap<String, u64>,
}

/// The longest cut-over delay accepted (config or publish): instances hold a prepared
/// revision at most this long.
pub const MAX_CUTOVER_MS: u64 = 600_000;

impl CutoverConfig {
    /// The delay of `bundle`.
    pub fn delay_for(&self, bundle: &str) -> std::time::Duration {
        std::time::Duration::from_millis(self.bundles.get(bundle).copied().unwrap_or(self.delay_ms))
    }

    fn check(&self) -> Result<(), ConfigError> {
        let too_long = std::iter::once(("delay_ms", self.delay_ms))
            .chain(self.bundles.iter().map(|(k, v)| (k.as_str(), *v)))
            .find(|(_, v)| *v > MAX_CUTOVER_MS);
        match too_long {
            Some((what, v)) => Err(ConfigError::Invalid(format!(
                "cutover.{what}: {v} ms is longer than the {MAX_CUTOVER_MS} ms limit"
            ))),
            None => Ok(()),
        }
    }
}

/// `listener:` — what the HTTP listener tolerates from clients (`lockstep-listen`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Seconds to receive a request head (from accept and the TLS handshake for the
    /// first request, from its first byte for later ones); default 10.
    pub header_read_timeout_seconds: Option<f64>,
    /// Seconds a connection may sit with no request in flight and no bytes moving
    /// (keep-alive); default 120. A long poll in flight is never cut by it.
    pub idle_timeout_seconds: Option<f64>,
    /// Most open connections (default 10000, the benchmarked fleet of idle long polls);
    /// beyond it connections wait in the backlog unserved.
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub folder: Option<PathBuf>,
    pub s3: Option<S3Config>,
    /// Milliseconds between looks at each bundle's `current.json` (default 1000).
    pub watch_interval_ms: Option<u64>,
}

/// An S3-compatible store. Credentials come from the usual `AWS_*` environment variables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket.
    pub prefix: Option<String>,
    /// Endpoint of an S3-compatible server (MinIO, Ceph, moto...).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow `http://` endpoints.
    pub allow_http: bool,
    /// Use virtual-hosted-style requests (default: path style when an endpoint is given).
    pub virtual_hosted_style: Option<bool>,
    /// Access key id from a file or environment variable (default: `AWS_ACCESS_KEY_ID` etc.).
    pub access_key_id: Option<TokenSource>,
    /// Secret access key from a file or environment variable.
    pub secret_access_key: Option<TokenSource>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongPollConfig {
    /// Cap on `Prefer: wait=N` (default 60 s).
    pub max_wait_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Revisions kept for rollback (default 10, at least 1).
    pub keep_revisions: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// Accept bundles without `.signatures.json` (default false).
    pub allow_unsigned: bool,
    /// Largest accepted bundle body (default 64 MiB). A `Content-Length` over it is
    /// refused with 413 before the body is read.
    pub max_bundle_bytes: Option<usize>,
    /// Publish and rollback bodies read at once (default 4); more wait up to 2 s, then
    /// get 503 with `Retry-After`. Bounds the memory uploads can take to about this
    /// times `max_bundle_bytes`.
    pub max_concurrent_uploads: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationExtra {
    pub key_id: Option<String>,
    pub scope: Option<String>,
    pub exclude_files: Vec<String>,
    /// Bundle name -> the `scope` its signatures must carry (in place of `scope`), so a
    /// bundle signed for one name is refused under another (security review finding 12).
    pub bundle_scopes: BTreeMap<String, String>,
}

/// How every bundle is verified: the server's settings, with a bundle's own entry of
/// `verification.bundle_scopes` as its required scope.
#[derive(Debug, Clone, Default)]
pub struct Verifications {
    /// `None`: no keys, nothing can be verified.
    pub base: Option<VerificationConfig>,
    pub bundle_scopes: BTreeMap<String, String>,
}

impl Verifications {
    /// The verification settings for bundle `name`.
    pub fn for_bundle(&self, name: &str) -> Option<VerificationConfig> {
        let mut v = self.base.clone()?;
        if let Some(scope) = self.bundle_scopes.get(name) {
            v.scope = Some(scope.clone());
        }
        Some(v)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub publisher_token: Option<TokenSource>,
    pub download_tokens: Vec<TokenSource>,
    pub status_tokens: Vec<TokenSource>,
    pub allow_anonymous_download: bool,
    pub allow_anonymous_status: bool,
    pub allow_anonymous_views: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Seconds without a status report after which an instance is unreachable (default 300).
    pub unreachable_after_seconds: Option<u64>,
    /// Milliseconds between reads of the other replicas' status records (default 2000).
    pub sync_interval_ms: Option<u64>,
    /// Seconds of silence after which an instance is dropped from the fleet altogether
    /// (default 3600; OPA picks a new `labels.id` on every start, so restarted instances
    /// would otherwise stay "unreachable" forever).
    pub forget_after_seconds: Option<u64>,
    /// Bundle statuses one status report may carry (default 64). Statuses of bundles
    /// this server does not serve are accepted but not kept.
    pub max_bundles_per_report: Option<usize>,
    /// Labels one report may carry (default 64).
    pub max_labels: Option<usize>,
    /// Bytes of a label's name and of its value as JSON (default 4096).
    pub max_label_bytes: Option<usize>,
    /// Bytes of a report's `plugins` object as JSON (default 16384).
    pub max_plugins_bytes: Option<usize>,
    /// Bytes of one bundle's status as JSON (default 16384).
    pub max_bundle_status_bytes: Option<usize>,
    /// Status report bodies read at once (default 256; each at most 4 MiB); more wait
    /// up to 2 s, then get 503 with `Retry-After`.
    pub max_concurrent_reports: Option<usize>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8282";
pub const DEFAULT_PREFIX: &str = "/bundles";
/// Largest status report body.
pub const MAX_STATUS_BODY_BYTES: usize = 4 * 1024 * 1024;

impl Config {
    /// Reads a YAML config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn listen(&self) -> &str {
        self.listen.as_deref().unwrap_or(DEFAULT_LISTEN)
    }

    /// Normalised prefix: leading `/`, no trailing `/`.
    pub fn prefix(&self) -> String {
        let p = self
            .bundle_path_prefix
            .as_deref()
            .unwrap_or(DEFAULT_PREFIX)
            .trim_matches('/');
        format!("/{p}")
    }

    pub fn max_wait_seconds(&self) -> u64 {
        self.long_poll.max_wait_seconds.unwrap_or(60)
    }

    /// `cutover:`, validated.
    pub fn cutover(&self) -> Result<CutoverConfig, ConfigError> {
        self.cutover.check()?;
        Ok(self.cutover.clone())
    }

    pub fn keep_revisions(&self) -> usize {
        self.history.keep_revisions.unwrap_or(10).max(1)
    }

    pub fn max_bundle_bytes(&self) -> usize {
        self.publish.max_bundle_bytes.unwrap_or(64 * 1024 * 1024)
    }

    /// The listener's limits (`listener:`), validated.
    pub fn listen_limits(&self) -> Result<lockstep_listen::Limits, ConfigError> {
        let d = lockstep_listen::Limits::default();
        let secs = |v: Option<f64>, key: &str, default: std::time::Duration| match v {
            None => Ok(default),
            Some(s) => std::time::Duration::try_from_secs_f64(s).map_err(|_| {
                ConfigError::Invalid(format!(
                    "listener.{key}: expected a positive number of seconds, got {s}"
                ))
            }),
        };
        let l = &self.listener;
        let limits = lockstep_listen::Limits {
            header_read_timeout: secs(
                l.header_read_timeout_seconds,
                "header_read_timeout_seconds",
                d.header_read_timeout,
            )?,
            idle_timeout: secs(
                l.idle_timeout_seconds,
                "idle_timeout_seconds",
                d.idle_timeout,
            )?,
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            ..d
        };
        limits
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("listener: {e}")))?;
        Ok(limits)
    }

    pub fn max_concurrent_uploads(&self) -> usize {
        self.publish.max_concurrent_uploads.unwrap_or(4).max(1)
    }

    pub fn max_concurrent_reports(&self) -> usize {
        self.fleet.max_concurrent_reports.unwrap_or(256).max(1)
    }

    pub fn unreachable_after_seconds(&self) -> u64 {
        self.fleet.unreachable_after_seconds.unwrap_or(300)
    }

    pub fn forget_after_seconds(&self) -> u64 {
        self.fleet.forget_after_seconds.unwrap_or(3600)
    }

    /// What one status report may hold (`fleet.max_*`).
    pub fn report_limits(&self) -> crate::fleet::ReportLimits {
        let d = crate::fleet::ReportLimits::default();
        let f = &self.fleet;
        crate::fleet::ReportLimits {
            max_bundles: f.max_bundles_per_report.unwrap_or(d.max_bundles),
            max_labels: f.max_labels.unwrap_or(d.max_labels),
            max_label_bytes: f.max_label_bytes.unwrap_or(d.max_label_bytes),
            max_plugins_bytes: f.max_plugins_bytes.unwrap_or(d.max_plugins_bytes),
            max_bundle_status_bytes: f
                .max_bundle_status_bytes
                .unwrap_or(d.max_bundle_status_bytes),
        }
    }

    pub fn fleet_sync_interval_ms(&self) -> u64 {
        self.fleet.sync_interval_ms.unwrap_or(2000).max(10)
    }

    pub fn watch_interval_ms(&self) -> u64 {
        self.store.watch_interval_ms.unwrap_or(1000).max(10)
    }

    /// The verification config built from `keys` (key values that name a file are read).
    pub fn verification(&self) -> Result<Verifications, ConfigError> {
        let extra = self.verification.clone().unwrap_or_default();
        if let Some((name, _)) = extra.bundle_scopes.iter().find(|(_, s)| s.is_empty()) {
            return Err(ConfigError::Invalid(format!(
                "verification.bundle_scopes.{name}: the scope must not be empty"
            )));
        }
        if self.keys.is_empty() {
            if !extra.bundle_scopes.is_empty() {
                return Err(ConfigError::Invalid(
                    "verification.bundle_scopes needs verification keys (keys:)".into(),
                ));
            }
            return Ok(Verifications::default());
        }
        let mut keys = BTreeMap::new();
        for (id, k) in &self.keys {
            let material = lockstep_bundle::keys::resolve_key_value(&k.key)
                .map_err(|e| ConfigError::Invalid(format!("key {id}: {e}")))?;
            let text = String::from_utf8(material)
                .map_err(|_| ConfigError::Invalid(format!("key {id}: not UTF-8 text")))?;
            let algorithm = lockstep_bundle::keys::Algorithm::from_name(&k.algorithm)
                .map_err(|e| ConfigError::Invalid(format!("key {id}: {e}")))?;
            lockstep_bundle::keys::parse_verification_key(&text, algorithm)
                .map_err(|e| ConfigError::Invalid(format!("key {id}: {e}")))?;
            keys.insert(
                id.clone(),
                KeyConfig {
                    key: text,
                    algorithm: k.algorithm.clone(),
                    scope: k.scope.clone(),
                },
            );
        }
        Ok(Verifications {
            base: Some(VerificationConfig {
                keys,
                key_id: extra.key_id,
                scope: extra.scope,
                exclude_files: extra.exclude_files,
            }),
            bundle_scopes: extra.bundle_scopes,
        })
    }

    /// Loads every token and applies the secure-by-default rules: a publisher token is
    /// required, and a download token unless anonymous download is explicitly allowed.
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        let a = &self.auth;
        let publisher = a
            .publisher_token
            .as_ref()
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "no publisher token configured (auth.publisher_token or --publisher-token-file/--publisher-token-env); refusing to start".into(),
                )
            })?
            .load()?;
        let mut download = Vec::new();
        for t in &a.download_tokens {
            download.push(DownloadToken {
                secret: t.load()?,
                bundles: t.bundles.clone(),
            });
        }
        if download.is_empty() && !a.allow_anonymous_download {
            return Err(ConfigError::Invalid(
                "no download token configured (auth.download_tokens or --download-token-file/--download-token-env); pass --allow-anonymous-download to serve bundles without one".into(),
            ));
        }
        let status = a
            .status_tokens
            .iter()
            .map(TokenSource::load)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Auth {
            publisher,
            download,
            status,
            allow_anonymous_download: a.allow_anonymous_download,
            allow_anonymous_status: a.allow_anonymous_status,
            allow_anonymous_views: a.allow_anonymous_views,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses() {
        let doc: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```yaml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let c: Config = serde_yaml_ng::from_str(&doc).unwrap();
        assert_eq!(c.listen(), "127.0.0.1:8282");
        assert_eq!(c.prefix(), "/bundles");
        assert_eq!(c.keys["ci"].algorithm, "ES256");
        assert_eq!(c.auth.download_tokens.len(), 2);
        assert_eq!(c.auth.download_tokens[1].bundles, ["team-a"]);
        assert_eq!(c.keep_revisions(), 10);
        assert_eq!(c.watch_interval_ms(), 1000);
        assert_eq!(c.report_limits(), crate::fleet::ReportLimits::default());
        assert!(!c.auth.allow_anonymous_download);
    }

    #[test]
    fn unknown_keys_and_inline_tokens_are_refused() {
        assert!(serde_yaml_ng::from_str::<Config>("listne: x").is_err());
        let e = serde_yaml_ng::from_str::<Config>("auth: {publisher_token: {token: abc}}");
        assert!(e.is_err());
    }

    #[test]
    fn prefix_normalised() {
        let c = Config {
            bundle_path_prefix: Some("opa/bundles/".into()),
            ..Config::default()
        };
        assert_eq!(c.prefix(), "/opa/bundles");
    }
}
