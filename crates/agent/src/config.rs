//! The agent's configuration: OPA's config file as `lockstep-sync` reads it
//! ([`lockstep_sync::opa_config`]), plus the sections that are the agent's own:
//! `plugins.envoy_ext_authz_grpc` / `plugins.envoy_ext_authz_http` (the Envoy
//! listeners), `decision_logs` ([`lockstep_decision::log_config`]) and
//! `lockstep.listen`. Every key nobody reads is named in [`AgentConfig::ignored`].
//!
//! ```yaml
//! # ... services, bundles, keys, labels, status, persistence_directory, lockstep
//! #     (see lockstep_sync::opa_config) ...
//! decision_logs: {console: true, file: /var/log/lockstep/decisions.jsonl}   # and/or upload:
//! # decision_logs: {service: logs, partition_name: eu, reporting: {min_delay_seconds: 5, max_delay_seconds: 10, upload_size_limit_bytes: 32768}}
//! plugins:
//!   envoy_ext_authz_grpc: {addr: ":9191", path: envoy/authz/allow}   # Envoy ext_authz (gRPC)
//!   envoy_ext_authz_http: {addr: "127.0.0.1:9292", path: envoy/authz/allow, path_prefix: /authz}  # HTTP mode (lockstep; default addr loopback)
//! lockstep:
//!   listen: 127.0.0.1:8181
//!   authentication:                # bearer tokens for the REST API (/health stays open)
//!     read_tokens: [{file: /run/secrets/agent-read}]     # decisions, status, policies, metrics
//!     write_tokens: [{env: AGENT_WRITE_TOKEN}]           # also policy and data writes
//!   write_api: auto                # auto (off when bundles are configured), on, off
//!   listener:                      # the REST API and Envoy HTTP-mode listeners
//!     header_read_timeout: 10s     # to receive a request head
//!     idle_timeout: 120s           # keep-alive with nothing in flight
//!     max_connections: 10000       # beyond: left in the backlog, unserved
//!   upstream_tokens:               # check lockstep gateway's ephemeral tokens on Envoy checks
//!     issuer: https://gateway.example.com           # the gateway's upstream_tokens.issuer
//!     jwks_uri: https://gateway.example.com/.well-known/jwks.json
//!     audience: https://db.internal/mcp             # this upstream's token_audience
//!     digest_pointer: /params/arguments             # digested into input.lockstep.upstream_token.digest
//! ```

use std::collections::BTreeMap;

use lockstep_auth::{Secret, SecretSource};
use lockstep_bundle::KeyConfig;
use lockstep_decision::DecisionLogConfig;
use lockstep_sync::SyncConfig;
use lockstep_sync::opa_config::values::{Walker, boolean, invalid, obj, parse_duration, string};
use lockstep_sync::opa_config::{self, ConfigError, OwnSections};
use serde_json::Value as Json;

pub use crate::access::{ApiTokens, WriteApi};

/// `plugins.envoy_ext_authz_grpc` (legacy name `envoy.ext_authz.grpc`), as
/// opa-envoy-plugin reads it; `plugins.envoy_ext_authz_http` (lockstep's own: the
/// plugin has no HTTP mode) takes the same keys plus `path_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyConfig {
    /// `addr`: `host:port`, `:port` or `grpc://host:port` (default `:9191`).
    pub addr: String,
    /// `path`: the decision under `data`, slash-separated (default `envoy/authz/allow`).
    pub path: String,
    /// `dry-run`: always allow, log the real decision.
    pub dry_run: bool,
    /// `skip-request-body-parse`: no `parsed_body` / `truncated_body` in the input.
    pub skip_request_body_parse: bool,
    /// HTTP mode only: Envoy's `http_service.path_prefix`, removed from the request
    /// path before it becomes `input.attributes.request.http.path`.
    pub path_prefix: String,
}

pub const DEFAULT_ENVOY_ADDR: &str = ":9191";
pub const DEFAULT_ENVOY_PATH: &str = "envoy/authz/allow";

impl Default for EnvoyConfig {
    fn default() -> Self {
        EnvoyConfig {
            addr: DEFAULT_ENVOY_ADDR.into(),
            path: DEFAULT_ENVOY_PATH.into(),
            dry_run: false,
            skip_request_body_parse: false,
            path_prefix: String::new(),
        }
    }
}

impl EnvoyConfig {
    /// The address to bind: `:9191` listens on all interfaces, `grpc://` is dropped.
    pub fn bind_addr(&self) -> Result<String, ConfigError> {
        let a = self.addr.trim();
        let a = a.strip_prefix("grpc://").unwrap_or(a);
        let a = a.strip_prefix("http://").unwrap_or(a);
        if a.starts_with("unix://") {
            return Err(invalid(
                "plugins.envoy_ext_authz_*.addr",
                format!("unix sockets are not supported ({a})"),
            ));
        }
        Ok(if a.starts_with(':') {
            format!("0.0.0.0{a}")
        } else {
            a.to_string()
        })
    }

    /// The decision path as segments under `data` (`envoy/authz/allow`,
    /// `/envoy/authz/allow` and `data.envoy.authz.allow` all name the same rule).
    pub fn path_segments(&self) -> Vec<String> {
        let p = self.path.trim();
        let p = p.strip_prefix("data.").unwrap_or(p);
        let sep = if p.contains('/') { '/' } else { '.' };
        p.split(sep)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// The Envoy ext_authz listeners: `(gRPC, HTTP)`.
type EnvoyPlugins = (Option<EnvoyConfig>, Option<EnvoyConfig>);

/// Loopback by default (finding 12): the HTTP mode is lockstep's own, so it follows
/// lockstep's listeners rather than the gRPC plugin's OPA-compatible `:9191`.
pub const DEFAULT_ENVOY_HTTP_ADDR: &str = "127.0.0.1:9292";

fn parse_plugins(v: Option<&Json>, w: &mut Walker) -> Result<EnvoyPlugins, ConfigError> {
    let Some(plugins) = obj(v, "plugins")? else {
        return Ok((None, None));
    };
    let (mut grpc, mut http) = (None, None);
    for (name, p) in plugins {
        let is_http = name == "envoy_ext_authz_http";
        if !is_http && name != "envoy_ext_authz_grpc" && name != "envoy.ext_authz.grpc" {
            w.ignored.push(format!("plugins.{name}"));
            continue;
        }
        let what = format!("plugins.{name}");
        let m = obj(Some(p), &what)?.cloned().unwrap_or_default();
        let mut known = vec!["addr", "path", "dry-run", "skip-request-body-parse"];
        if is_http {
            known.push("path_prefix");
        }
        w.check(&what, &m, &known);
        let d = EnvoyConfig::default();
        let default_addr = if is_http {
            DEFAULT_ENVOY_HTTP_ADDR.to_string()
        } else {
            d.addr
        };
        let path_prefix = if is_http {
            string(m.get("path_prefix"), &format!("{what}.path_prefix"))?.unwrap_or_default()
        } else {
            String::new()
        };
        if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
            return Err(invalid(
                format!("{what}.path_prefix"),
                format!("must start with '/' ({path_prefix:?})"),
            ));
        }
        let cfg = EnvoyConfig {
            path_prefix: path_prefix.trim_end_matches('/').to_string(),
            addr: string(m.get("addr"), &format!("{what}.addr"))?.unwrap_or(default_addr),
            path: string(m.get("path"), &format!("{what}.path"))?.unwrap_or(d.path),
            dry_run: boolean(m.get("dry-run"), &format!("{what}.dry-run"))?.unwrap_or(false),
            skip_request_body_parse: boolean(
                m.get("skip-request-body-parse"),
                &format!("{what}.skip-request-body-parse"),
            )?
            .unwrap_or(false),
        };
        cfg.bind_addr()?;
        if cfg.path_segments().is_empty() {
            return Err(invalid(format!("{what}.path"), "empty decision path"));
        }
        if is_http {
            http = Some(cfg);
        } else {
            grpc = Some(cfg);
        }
    }
    Ok((grpc, http))
}

/// `lockstep.authentication`: `read_tokens` and `write_tokens`, each a list of
/// `{file: …}` / `{env: …}` (never the token itself), loaded now.
fn parse_tokens(v: Option<&Json>, w: &mut Walker) -> Result<ApiTokens, ConfigError> {
    let Some(m) = obj(v, "lockstep.authentication")? else {
        return Ok(ApiTokens::default());
    };
    w.check(
        "lockstep.authentication",
        m,
        &["read_tokens", "write_tokens"],
    );
    let list = |key: &str| -> Result<Vec<Secret>, ConfigError> {
        let at = format!("lockstep.authentication.{key}");
        let items = match m.get(key) {
            None | Some(Json::Null) => return Ok(Vec::new()),
            Some(Json::Array(a)) => a,
            Some(_) => return Err(invalid(&at, "expected a list of {file: …} or {env: …}")),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("{at}[{i}]");
                let src: SecretSource = serde_json::from_value(item.clone()).map_err(|e| {
                    invalid(&at, format!("expected {{file: …}} or {{env: …}}: {e}"))
                })?;
                src.load().map_err(|e| invalid(&at, e.to_string()))
            })
            .collect()
    };
    let tokens = ApiTokens {
        read: list("read_tokens")?,
        write: list("write_tokens")?,
    };
    if !tokens.required() {
        return Err(invalid(
            "lockstep.authentication",
            "no tokens: give read_tokens and/or write_tokens, or remove the section",
        ));
    }
    Ok(tokens)
}

/// `lockstep.upstream_tokens`: `issuer`, `jwks_uri`, `audience` (required), and
/// `digest_pointer` (optional, e.g. `/params/arguments`).
fn parse_upstream_tokens(
    v: Option<&Json>,
    w: &mut Walker,
) -> Result<Option<crate::upstream_token::UpstreamTokensConfig>, ConfigError> {
    let at = "lockstep.upstream_tokens";
    let Some(m) = obj(v, at)? else {
        return Ok(None);
    };
    w.check(at, m, &["issuer", "jwks_uri", "audience", "digest_pointer"]);
    let req = |k: &str| -> Result<String, ConfigError> {
        let key = format!("{at}.{k}");
        match string(m.get(k), &key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(invalid(&key, "required")),
        }
    };
    let digest_pointer = string(m.get("digest_pointer"), &format!("{at}.digest_pointer"))?;
    if digest_pointer
        .as_deref()
        .is_some_and(|p| !p.starts_with('/'))
    {
        return Err(invalid(
            format!("{at}.digest_pointer"),
            "a JSON pointer starts with / (e.g. /params/arguments)",
        ));
    }
    Ok(Some(crate::upstream_token::UpstreamTokensConfig {
        issuer: req("issuer")?,
        jwks_uri: req("jwks_uri")?,
        audience: req("audience")?,
        digest_pointer,
    }))
}

/// `lockstep.listener`: timeouts and the connection limit of the HTTP listeners.
fn parse_listener(
    v: Option<&Json>,
    w: &mut Walker,
) -> Result<lockstep_listen::Limits, ConfigError> {
    let mut limits = lockstep_listen::Limits::default();
    let Some(m) = obj(v, "lockstep.listener")? else {
        return Ok(limits);
    };
    w.check(
        "lockstep.listener",
        m,
        &["header_read_timeout", "idle_timeout", "max_connections"],
    );
    if let Some(v) = m.get("header_read_timeout").filter(|v| !v.is_null()) {
        limits.header_read_timeout = parse_duration(v, "lockstep.listener.header_read_timeout")?;
    }
    if let Some(v) = m.get("idle_timeout").filter(|v| !v.is_null()) {
        limits.idle_timeout = parse_duration(v, "lockstep.listener.idle_timeout")?;
    }
    match m.get("max_connections") {
        None | Some(Json::Null) => {}
        Some(v) => {
            limits.max_connections = v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        "lockstep.listener.max_connections",
                        "expected a positive integer",
                    )
                })?;
        }
    }
    limits
        .validate()
        .map_err(|e| invalid("lockstep.listener", e.to_string()))?;
    Ok(limits)
}

/// Everything the agent needs, resolved.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub sync: SyncConfig,
    pub listen: String,
    /// `lockstep.authentication` (empty: the API is open, as OPA's default).
    pub tokens: ApiTokens,
    /// `lockstep.write_api`.
    pub write_api: WriteApi,
    /// `lockstep.listener`: timeouts and connection limit of the REST API and Envoy
    /// HTTP-mode listeners.
    pub listener: lockstep_listen::Limits,
    pub decision_logs: DecisionLogConfig,
    /// `plugins.envoy_ext_authz_grpc`: the Envoy ext_authz gRPC listener, when configured.
    pub envoy: Option<EnvoyConfig>,
    /// `plugins.envoy_ext_authz_http`: the Envoy ext_authz HTTP-mode listener.
    pub envoy_http: Option<EnvoyConfig>,
    /// `lockstep.upstream_tokens`: check `lockstep gateway`'s ephemeral tokens on Envoy
    /// checks (`input.lockstep.upstream_token`).
    pub upstream_tokens: Option<crate::upstream_token::UpstreamTokensConfig>,
    /// Dotted names of keys present in the file that lockstep does not support.
    pub ignored: Vec<String>,
}

impl AgentConfig {
    pub fn log_ignored(&self) {
        for k in &self.ignored {
            tracing::warn!(key = %k, "configuration key not supported by lockstep: ignored");
        }
    }
}

/// Extra verification keys given on the command line (`--verification-key`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub keys: BTreeMap<String, KeyConfig>,
    pub listen: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8181";

/// Parses OPA's config text. `env` resolves `${VAR}`.
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &Overrides,
) -> Result<AgentConfig, ConfigError> {
    let opa = opa_config::parse(
        text,
        env,
        &opa_config::Overrides {
            keys: overrides.keys.clone(),
        },
        OwnSections {
            top: &["plugins", lockstep_decision::log_config::SECTION],
            lockstep: &[
                "listen",
                "authentication",
                "write_api",
                "listener",
                "upstream_tokens",
            ],
        },
    )?;
    let mut w = Walker {
        ignored: opa.ignored.clone(),
    };
    let (envoy, envoy_http) = parse_plugins(opa.document.get("plugins"), &mut w)?;
    let decision_logs = lockstep_decision::parse_decision_logs(
        opa.document.get(lockstep_decision::log_config::SECTION),
        &opa.services,
        &mut w,
    )?;
    let listen = match overrides.listen.clone() {
        Some(l) => l,
        None => string(opa.lockstep_section().get("listen"), "lockstep.listen")?
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
    };
    let ls = opa.lockstep_section();
    let tokens = parse_tokens(ls.get("authentication"), &mut w)?;
    let listener = parse_listener(ls.get("listener"), &mut w)?;
    let upstream_tokens = parse_upstream_tokens(ls.get("upstream_tokens"), &mut w)?;
    let write_api = match ls.get("write_api") {
        None | Some(Json::Null) => WriteApi::Auto,
        Some(Json::Bool(true)) => WriteApi::On,
        Some(Json::Bool(false)) => WriteApi::Off,
        Some(Json::String(s)) if s == "auto" => WriteApi::Auto,
        Some(Json::String(s)) if s == "on" => WriteApi::On,
        Some(Json::String(s)) if s == "off" => WriteApi::Off,
        Some(other) => {
            return Err(invalid(
                "lockstep.write_api",
                format!("expected auto, on or off, got {other}"),
            ));
        }
    };
    Ok(AgentConfig {
        sync: opa.sync,
        listen,
        tokens,
        write_api,
        listener,
        decision_logs,
        envoy,
        envoy_http,
        upstream_tokens,
        ignored: w.ignored,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn finding12_envoy_http_mode_defaults_to_loopback() {
        let text = r#"
services: {s: {url: "http://127.0.0.1:1/"}}
bundles: {b: {service: s}}
lockstep: {skip_verification: true}
plugins:
  envoy_ext_authz_http: {path: mcp/authz/decision}
"#;
        let c = parse(text, &|_| None, &Overrides::default()).unwrap();
        assert_eq!(c.envoy_http.unwrap().bind_addr().unwrap(), "127.0.0.1:9292");
    }

    #[test]
    fn envoy_plugin() {
        let text = r#"
services: {s: {url: "http://127.0.0.1:1/"}}
bundles: {b: {service: s}}
lockstep: {skip_verification: true}
plugins:
  envoy_ext_authz_grpc: {addr: ":9191", path: mcp/authz/allow, dry-run: false, enable-reflection: true}
  envoy_ext_authz_http: {addr: "127.0.0.1:9292", path: mcp/authz/decision, path_prefix: /authz/}
  other_plugin: {}
"#;
        let c = parse(text, &|_| None, &Overrides::default()).unwrap();
        let e = c.envoy.clone().unwrap();
        assert_eq!(e.bind_addr().unwrap(), "0.0.0.0:9191");
        assert_eq!(e.path_segments(), vec!["mcp", "authz", "allow"]);
        let h = c.envoy_http.clone().unwrap();
        assert_eq!(h.bind_addr().unwrap(), "127.0.0.1:9292");
        assert_eq!(h.path_segments(), vec!["mcp", "authz", "decision"]);
        assert_eq!(h.path_prefix, "/authz");
        let bad_prefix = text.replace("path_prefix: /authz/", "path_prefix: authz");
        assert!(
            parse(&bad_prefix, &|_| None, &Overrides::default())
                .unwrap_err()
                .to_string()
                .contains("path_prefix")
        );
        assert_eq!(
            c.ignored,
            vec![
                "plugins.envoy_ext_authz_grpc.enable-reflection",
                "plugins.other_plugin"
            ]
        );
        let d = EnvoyConfig::default();
        assert_eq!(d.path_segments(), vec!["envoy", "authz", "allow"]);
        let dotted = EnvoyConfig {
            path: "data.envoy.authz.allow".into(),
            addr: "grpc://127.0.0.1:1".into(),
            ..EnvoyConfig::default()
        };
        assert_eq!(dotted.path_segments(), vec!["envoy", "authz", "allow"]);
        assert_eq!(dotted.bind_addr().unwrap(), "127.0.0.1:1");
        let none = parse(
            "services: {s: {url: \"http://127.0.0.1:1/\"}}\nbundles: {b: {service: s}}\nlockstep: {skip_verification: true}\n",
            &|_| None,
            &Overrides::default(),
        )
        .unwrap();
        assert!(none.envoy.is_none() && none.envoy_http.is_none());
        let unix = text.replace("\":9191\"", "unix:///tmp/x.sock");
        assert!(parse(&unix, &|_| None, &Overrides::default()).is_err());
    }

    #[test]
    fn listener_limits() {
        let base = "lockstep: {skip_verification: true";
        let p = |extra: &str| {
            parse(
                &format!("{base}{extra}}}\n"),
                &|_| None,
                &Overrides::default(),
            )
        };
        assert_eq!(p("").unwrap().listener, lockstep_listen::Limits::default());
        let c = p(", listener: {header_read_timeout: 250ms, idle_timeout: 30, max_connections: 5}")
            .unwrap();
        assert_eq!(c.listener.header_read_timeout, Duration::from_millis(250));
        assert_eq!(c.listener.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.listener.max_connections, 5);
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        for bad in [
            ", listener: {max_connections: 0}",
            ", listener: {idle_timeout: 0}",
            ", listener: {header_read_timeout: soon}",
            ", listener: {max_connections: -3}",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decision_log_upload() {
        let base = "services: {b: {url: \"http://127.0.0.1:1/\"}, logs: {url: \"http://127.0.0.1:2/x/\"}}\nbundles: {m: {service: b}}\nlockstep: {skip_verification: true}\n";
        let p = |extra: &str| parse(&format!("{base}{extra}"), &|_| None, &Overrides::default());
        let c = p("decision_logs: {service: logs, partition_name: eu, reporting: {min_delay_seconds: 1, max_delay_seconds: 5, upload_size_limit_bytes: 4096, buffer_size_limit_events: 50, trigger: manual}}").unwrap();
        let u = c.decision_logs.upload.clone().unwrap();
        assert_eq!(u.url(), "http://127.0.0.1:2/x/logs/eu");
        assert_eq!(
            (u.min_delay, u.max_delay),
            (Duration::from_secs(1), Duration::from_secs(5))
        );
        assert_eq!(
            (u.upload_size_limit, u.buffer_size_limit_events),
            (4096, 50)
        );
        assert_eq!(c.ignored, vec!["decision_logs.reporting.trigger"]);
        // OPA's default: no service named and no console logging -> the first service.
        let d = p("decision_logs: {}")
            .unwrap()
            .decision_logs
            .upload
            .unwrap();
        assert_eq!(d.url(), "http://127.0.0.1:1/logs");
        assert_eq!(
            (d.min_delay, d.max_delay),
            (Duration::from_secs(300), Duration::from_secs(600))
        );
        assert_eq!(d.upload_size_limit, 32_768);
        // Console or file logging only: nothing uploaded.
        assert!(
            p("decision_logs: {console: true}")
                .unwrap()
                .decision_logs
                .upload
                .is_none()
        );
        assert!(
            p("decision_logs: {file: /tmp/x}")
                .unwrap()
                .decision_logs
                .upload
                .is_none()
        );
        assert!(p("").unwrap().decision_logs.upload.is_none());
        for (bad, says) in [
            ("decision_logs: {service: nope}", "unknown service"),
            (
                "decision_logs: {reporting: {min_delay_seconds: 9, max_delay_seconds: 2}}",
                "exceeds",
            ),
            (
                "decision_logs: {reporting: {upload_size_limit_bytes: 10}}",
                "too small",
            ),
            (
                "decision_logs: {reporting: {min_delay_seconds: -1}}",
                "non-negative",
            ),
        ] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
