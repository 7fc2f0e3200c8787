//! OPA's configuration file (`opa run --config-file`), for the parts lockstep
//! supports, plus a `lockstep:` section. Every key that is not supported is named in
//! [`AgentConfig::ignored`] (and logged by [`AgentConfig::log_ignored`]).
//!
//! ```yaml
//! services:                       # map or list (with `name`), as OPA accepts
//!   bundle-server:
//!     url: https://bundle.example.com
//!     headers: {X-Team: a}
//!     response_header_timeout_seconds: 10
//!     credentials:
//!       bearer: {token: "${BUNDLE_TOKEN}", token_path: /run/token, scheme: Bearer}
//! bundles:
//!   main:
//!     service: bundle-server
//!     resource: /bundles/main.tar.gz   # default bundles/<name>
//!     persist: true
//!     polling: {min_delay_seconds: 30, max_delay_seconds: 120, long_polling_timeout_seconds: 60}
//!     signing: {keyid: prod-key-2025, scope: "", exclude_files: []}
//! keys:
//!   prod-key-2025: {key: "-----BEGIN PUBLIC KEY-----...", algorithm: ES256}
//! labels: {app: mcp-gateway, region: eu}
//! status: {service: bundle-server, partition_name: eu}
//! decision_logs: {console: true, file: /var/log/lockstep/decisions.jsonl}   # and/or upload:
//! # decision_logs: {service: logs, partition_name: eu, reporting: {min_delay_seconds: 5, max_delay_seconds: 10, upload_size_limit_bytes: 32768}}
//! persistence_directory: /var/lib/lockstep
//! plugins:
//!   envoy_ext_authz_grpc: {addr: ":9191", path: envoy/authz/allow}   # Envoy ext_authz (gRPC)
//!   envoy_ext_authz_http: {addr: ":9292", path: envoy/authz/allow, path_prefix: /authz}  # HTTP mode (lockstep)
//! lockstep:
//!   listen: 127.0.0.1:8181
//!   max_staleness: 60s             # or a number of seconds
//!   on_stale: deny                 # or serve
//!   skip_verification: false       # true accepts unsigned bundles (logged)
//! ```
//!
//! `${VAR}` anywhere in the file is replaced by the environment variable, as OPA does
//! (an unset variable becomes the empty string).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lockstep_bundle::{KeyConfig, VerificationConfig};
use lockstep_sync::{
    BundleSource, Credentials, OnStale, Polling, Service, StatusTarget, SyncConfig, TokenSource,
    Verification,
};
use serde_json::{Map, Value as Json};

/// Where decisions are logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionLogConfig {
    /// `decision_logs.console: true`: one JSON line per decision on stdout.
    pub console: bool,
    /// `decision_logs.file` (lockstep): JSON lines appended to this file.
    pub file: Option<PathBuf>,
    /// `decision_logs.service`: gzip'd JSON arrays POSTed as OPA's logs plugin does.
    pub upload: Option<DecisionUpload>,
}

/// Where and how often decision logs are uploaded (`decision_logs.service`,
/// `resource`, `partition_name`, `reporting.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionUpload {
    pub service: Service,
    /// `resource` (default `/logs`; `partition_name` gives `/logs/<partition>`).
    pub resource: String,
    /// `reporting.min_delay_seconds` / `max_delay_seconds` (OPA: 300 / 600).
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// `reporting.upload_size_limit_bytes`: largest gzip'd body (OPA: 32768).
    pub upload_size_limit: usize,
    /// `reporting.buffer_size_limit_events` (OPA: 10000): oldest events dropped beyond.
    pub buffer_size_limit_events: usize,
}

impl DecisionUpload {
    pub fn url(&self) -> String {
        self.service.join(&self.resource)
    }
}

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
    pub fn bind_addr(&self) -> Result<String, String> {
        let a = self.addr.trim();
        let a = a.strip_prefix("grpc://").unwrap_or(a);
        let a = a.strip_prefix("http://").unwrap_or(a);
        if a.starts_with("unix://") {
            return Err(format!(
                "plugins.envoy_ext_authz_*.addr: unix sockets are not supported ({a})"
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

pub const DEFAULT_ENVOY_HTTP_ADDR: &str = ":9292";

fn parse_plugins(v: Option<&Json>, w: &mut Walker) -> Result<EnvoyPlugins, String> {
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
            return Err(format!(
                "{what}.path_prefix: must start with '/' ({path_prefix:?})"
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
            return Err(format!("{what}.path: empty decision path"));
        }
        if is_http {
            http = Some(cfg);
        } else {
            grpc = Some(cfg);
        }
    }
    Ok((grpc, http))
}

/// Everything the agent needs, resolved.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub sync: SyncConfig,
    pub listen: String,
    pub decision_logs: DecisionLogConfig,
    /// `plugins.envoy_ext_authz_grpc`: the Envoy ext_authz gRPC listener, when configured.
    pub envoy: Option<EnvoyConfig>,
    /// `plugins.envoy_ext_authz_http`: the Envoy ext_authz HTTP-mode listener.
    pub envoy_http: Option<EnvoyConfig>,
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

/// Replaces `${NAME}` with `env(NAME)` (empty when unset).
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        let body = after.get(2..).unwrap_or_default();
        match body.find('}') {
            Some(end) => {
                let name = body.get(..end).unwrap_or_default();
                out.push_str(&env(name).unwrap_or_default());
                rest = body.get(end + 1..).unwrap_or_default();
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

struct Walker {
    ignored: Vec<String>,
}

impl Walker {
    /// Records every key of `obj` not in `known`, as `prefix.key`.
    fn check(&mut self, prefix: &str, obj: &Map<String, Json>, known: &[&str]) {
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                self.ignored.push(if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                });
            }
        }
    }
}

fn obj<'a>(v: Option<&'a Json>, what: &str) -> Result<Option<&'a Map<String, Json>>, String> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(m)) => Ok(Some(m)),
        Some(_) => Err(format!("{what}: expected a mapping")),
    }
}

fn string(v: Option<&Json>, what: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Number(n)) => Ok(Some(n.to_string())),
        Some(Json::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(format!("{what}: expected a string")),
    }
}

fn boolean(v: Option<&Json>, what: &str) -> Result<Option<bool>, String> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(format!("{what}: expected true or false")),
    }
}

fn seconds(v: Option<&Json>, what: &str) -> Result<Option<u64>, String> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{what}: expected a non-negative integer")),
        Some(Json::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{what}: expected a non-negative integer")),
        Some(_) => Err(format!("{what}: expected a non-negative integer")),
    }
}

/// `30s`, `5m`, `1h`, `250ms`, or a plain number of seconds.
pub fn parse_duration(v: &Json, what: &str) -> Result<Duration, String> {
    let bad =
        || format!("{what}: expected a duration such as 30s, 5m, 250ms or a number of seconds");
    match v {
        Json::Number(n) => n
            .as_f64()
            .filter(|f| *f >= 0.0 && f.is_finite())
            .map(Duration::from_secs_f64)
            .ok_or_else(bad),
        Json::String(s) => {
            let s = s.trim();
            let (num, unit) =
                s.find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .map_or((s, ""), |i| {
                        (
                            s.get(..i).unwrap_or_default(),
                            s.get(i..).unwrap_or_default(),
                        )
                    });
            let n: f64 = num.parse().map_err(|_| bad())?;
            let secs = match unit.trim() {
                "" | "s" => n,
                "ms" => n / 1000.0,
                "m" => n * 60.0,
                "h" => n * 3600.0,
                _ => return Err(bad()),
            };
            if !secs.is_finite() || secs < 0.0 {
                return Err(bad());
            }
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(bad()),
    }
}

fn parse_service(name: &str, m: &Map<String, Json>, w: &mut Walker) -> Result<Service, String> {
    let p = format!("services.{name}");
    w.check(
        &p,
        m,
        &[
            "name",
            "url",
            "credentials",
            "headers",
            "response_header_timeout_seconds",
        ],
    );
    let url = string(m.get("url"), &format!("{p}.url"))?
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| format!("{p}: missing url"))?;
    let mut credentials = Credentials::None;
    if let Some(c) = obj(m.get("credentials"), &format!("{p}.credentials"))? {
        w.check(&format!("{p}.credentials"), c, &["bearer"]);
        if let Some(b) = obj(c.get("bearer"), &format!("{p}.credentials.bearer"))? {
            let bp = format!("{p}.credentials.bearer");
            w.check(&bp, b, &["token", "token_path", "scheme"]);
            let scheme = string(b.get("scheme"), &bp)?.unwrap_or_else(|| "Bearer".into());
            let token = match (
                string(b.get("token"), &format!("{bp}.token"))?,
                string(b.get("token_path"), &format!("{bp}.token_path"))?,
            ) {
                (Some(t), _) => TokenSource::Inline(t),
                (None, Some(path)) => TokenSource::Path(PathBuf::from(path)),
                (None, None) => return Err(format!("{bp}: token or token_path required")),
            };
            credentials = Credentials::Bearer { scheme, token };
        }
    }
    let mut headers = BTreeMap::new();
    if let Some(h) = obj(m.get("headers"), &format!("{p}.headers"))? {
        for (k, v) in h {
            headers.insert(
                k.clone(),
                string(Some(v), &format!("{p}.headers.{k}"))?.unwrap_or_default(),
            );
        }
    }
    let timeout = seconds(
        m.get("response_header_timeout_seconds"),
        &format!("{p}.response_header_timeout_seconds"),
    )?
    .unwrap_or(10);
    Ok(Service {
        name: name.to_string(),
        url: url.trim_end_matches('/').to_string(),
        credentials,
        headers,
        response_header_timeout: Duration::from_secs(timeout.max(1)),
    })
}

fn parse_services(v: Option<&Json>, w: &mut Walker) -> Result<BTreeMap<String, Service>, String> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Json::Null) => {}
        Some(Json::Object(m)) => {
            for (name, s) in m {
                let s = obj(Some(s), &format!("services.{name}"))?
                    .cloned()
                    .unwrap_or_default();
                out.insert(name.clone(), parse_service(name, &s, w)?);
            }
        }
        Some(Json::Array(list)) => {
            for (i, s) in list.iter().enumerate() {
                let s = obj(Some(s), &format!("services[{i}]"))?
                    .cloned()
                    .unwrap_or_default();
                let name = string(s.get("name"), &format!("services[{i}].name"))?
                    .ok_or_else(|| format!("services[{i}]: missing name"))?;
                out.insert(name.clone(), parse_service(&name, &s, w)?);
            }
        }
        Some(_) => return Err("services: expected a mapping or a list".into()),
    }
    Ok(out)
}

fn pick_service(
    services: &BTreeMap<String, Service>,
    name: Option<String>,
    what: &str,
) -> Result<Service, String> {
    match name {
        Some(n) => services
            .get(&n)
            .cloned()
            .ok_or_else(|| format!("{what}: unknown service {n:?}")),
        // OPA: without `service`, the only configured service.
        None if services.len() == 1 => services
            .values()
            .next()
            .cloned()
            .ok_or_else(|| format!("{what}: no service")),
        None => Err(format!(
            "{what}: service required (several services configured)"
        )),
    }
}

fn parse_keys(
    v: Option<&Json>,
    w: &mut Walker,
    extra: &BTreeMap<String, KeyConfig>,
) -> Result<BTreeMap<String, KeyConfig>, String> {
    let mut keys = BTreeMap::new();
    if let Some(m) = obj(v, "keys")? {
        for (id, k) in m {
            let p = format!("keys.{id}");
            let k = obj(Some(k), &p)?.cloned().unwrap_or_default();
            w.check(&p, &k, &["key", "algorithm", "scope"]);
            let key = string(k.get("key"), &format!("{p}.key"))?
                .ok_or_else(|| format!("{p}: missing key"))?;
            keys.insert(
                id.clone(),
                KeyConfig {
                    key,
                    algorithm: string(k.get("algorithm"), &format!("{p}.algorithm"))?
                        .unwrap_or_else(|| "RS256".into()),
                    scope: string(k.get("scope"), &format!("{p}.scope"))?,
                },
            );
        }
    }
    keys.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    // Resolve and check every key now, so a bad key fails at start, not at download.
    for (id, k) in &mut keys {
        let material = lockstep_bundle::keys::resolve_key_value(&k.key)
            .map_err(|e| format!("keys.{id}: {e}"))?;
        let text = String::from_utf8(material).map_err(|_| format!("keys.{id}: not UTF-8"))?;
        let alg = lockstep_bundle::keys::Algorithm::from_name(&k.algorithm)
            .map_err(|e| format!("keys.{id}: {e}"))?;
        lockstep_bundle::keys::parse_verification_key(&text, alg)
            .map_err(|e| format!("keys.{id}: {e}"))?;
        k.key = text;
    }
    Ok(keys)
}

/// Parses OPA's config text. `env` resolves `${VAR}`.
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &Overrides,
) -> Result<AgentConfig, String> {
    let text = expand_env(text, env);
    let root: Json = if text.trim().is_empty() {
        Json::Object(Map::new())
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| format!("config: {e}"))?
    };
    let root = obj(Some(&root), "config")?.cloned().unwrap_or_default();
    let mut w = Walker {
        ignored: Vec::new(),
    };
    w.check(
        "",
        &root,
        &[
            "services",
            "bundles",
            "keys",
            "labels",
            "status",
            "decision_logs",
            "persistence_directory",
            "lockstep",
            "plugins",
        ],
    );
    let services = parse_services(root.get("services"), &mut w)?;
    let (envoy, envoy_http) = parse_plugins(root.get("plugins"), &mut w)?;
    let keys = parse_keys(root.get("keys"), &mut w, &overrides.keys)?;

    let ls = obj(root.get("lockstep"), "lockstep")?
        .cloned()
        .unwrap_or_default();
    w.check(
        "lockstep",
        &ls,
        &["listen", "max_staleness", "on_stale", "skip_verification"],
    );
    let skip_verification =
        boolean(ls.get("skip_verification"), "lockstep.skip_verification")?.unwrap_or(false);
    let max_staleness = match ls.get("max_staleness") {
        Some(v) if !v.is_null() => parse_duration(v, "lockstep.max_staleness")?,
        _ => Duration::from_secs(300),
    };
    let on_stale = match string(ls.get("on_stale"), "lockstep.on_stale")?.as_deref() {
        None | Some("deny") => OnStale::Deny,
        Some("serve") => OnStale::Serve,
        Some(other) => {
            return Err(format!(
                "lockstep.on_stale: expected deny or serve, got {other:?}"
            ));
        }
    };
    let listen = overrides
        .listen
        .clone()
        .or(string(ls.get("listen"), "lockstep.listen")?)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());

    let mut bundles = Vec::new();
    if let Some(m) = obj(root.get("bundles"), "bundles")? {
        for (name, b) in m {
            let p = format!("bundles.{name}");
            let b = obj(Some(b), &p)?.cloned().unwrap_or_default();
            w.check(
                &p,
                &b,
                &["service", "resource", "polling", "signing", "persist"],
            );
            let service = pick_service(&services, string(b.get("service"), &p)?, &p)?;
            let resource = string(b.get("resource"), &format!("{p}.resource"))?
                .unwrap_or_else(|| format!("bundles/{name}"));
            let mut polling = Polling::default();
            if let Some(pm) = obj(b.get("polling"), &format!("{p}.polling"))? {
                let pp = format!("{p}.polling");
                w.check(
                    &pp,
                    pm,
                    &[
                        "min_delay_seconds",
                        "max_delay_seconds",
                        "long_polling_timeout_seconds",
                    ],
                );
                let min = seconds(pm.get("min_delay_seconds"), &pp)?;
                let max = seconds(pm.get("max_delay_seconds"), &pp)?;
                match (min, max) {
                    (Some(min), Some(max)) => {
                        if max < min {
                            return Err(format!(
                                "{pp}: max polling delay must be >= min polling delay"
                            ));
                        }
                        polling.min_delay = Duration::from_secs(min);
                        polling.max_delay = Duration::from_secs(max);
                    }
                    (Some(_), None) => {
                        return Err(format!(
                            "{pp}: polling configuration missing 'max_delay_seconds'"
                        ));
                    }
                    (None, Some(_)) => {
                        return Err(format!(
                            "{pp}: polling configuration missing 'min_delay_seconds'"
                        ));
                    }
                    (None, None) => {}
                }
                if let Some(lp) = seconds(pm.get("long_polling_timeout_seconds"), &pp)? {
                    if lp < 1 {
                        return Err(format!(
                            "{pp}: 'long_polling_timeout_seconds' must be at least 1"
                        ));
                    }
                    polling.long_polling_timeout = Some(Duration::from_secs(lp));
                }
            }
            let signing = obj(b.get("signing"), &format!("{p}.signing"))?
                .cloned()
                .unwrap_or_default();
            w.check(
                &format!("{p}.signing"),
                &signing,
                &["keyid", "scope", "exclude_files"],
            );
            let verification = if skip_verification {
                Verification::Skip
            } else {
                if keys.is_empty() {
                    return Err(format!(
                        "{p}: signature verification is required but no keys are configured (add keys: and {p}.signing.keyid, pass --verification-key, or set lockstep.skip_verification: true to accept unsigned bundles)"
                    ));
                }
                let exclude_files = match signing.get("exclude_files") {
                    None | Some(Json::Null) => Vec::new(),
                    Some(Json::Array(a)) => a
                        .iter()
                        .map(|v| string(Some(v), &format!("{p}.signing.exclude_files")))
                        .collect::<Result<Vec<_>, _>>()?
                        .into_iter()
                        .flatten()
                        .collect(),
                    Some(_) => return Err(format!("{p}.signing.exclude_files: expected a list")),
                };
                let key_id = string(signing.get("keyid"), &format!("{p}.signing.keyid"))?;
                if let Some(k) = &key_id
                    && !keys.contains_key(k)
                {
                    return Err(format!(
                        "{p}.signing.keyid: key {k:?} is not configured under keys (or --verification-key-id)"
                    ));
                }
                Verification::Required(VerificationConfig {
                    keys: keys.clone(),
                    key_id,
                    scope: string(signing.get("scope"), &format!("{p}.signing.scope"))?,
                    exclude_files,
                })
            };
            bundles.push(BundleSource {
                name: name.clone(),
                service,
                resource,
                polling,
                verification,
                persist: boolean(b.get("persist"), &format!("{p}.persist"))?.unwrap_or(false),
            });
        }
    }

    let mut labels = BTreeMap::new();
    labels.insert("id".to_string(), new_instance_id());
    labels.insert("version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    labels.insert("agent".to_string(), "lockstep".to_string());
    if let Some(m) = obj(root.get("labels"), "labels")? {
        for (k, v) in m {
            labels.insert(
                k.clone(),
                string(Some(v), &format!("labels.{k}"))?.unwrap_or_default(),
            );
        }
    }

    let mut status = None;
    if let Some(s) = obj(root.get("status"), "status")? {
        w.check("status", s, &["service", "partition_name"]);
        status = Some(StatusTarget {
            service: pick_service(
                &services,
                string(s.get("service"), "status.service")?,
                "status",
            )?,
            partition: string(s.get("partition_name"), "status.partition_name")?,
        });
    }

    let mut decision_logs = DecisionLogConfig::default();
    if let Some(d) = obj(root.get("decision_logs"), "decision_logs")? {
        w.check(
            "decision_logs",
            d,
            &[
                "console",
                "file",
                "service",
                "resource",
                "partition_name",
                "reporting",
            ],
        );
        decision_logs.console =
            boolean(d.get("console"), "decision_logs.console")?.unwrap_or(false);
        decision_logs.file = string(d.get("file"), "decision_logs.file")?.map(PathBuf::from);
        decision_logs.upload = parse_upload(d, &services, decision_logs.console, &mut w)?;
    }

    let persistence_dir = string(root.get("persistence_directory"), "persistence_directory")?
        .map_or_else(|| PathBuf::from(".opa"), PathBuf::from);

    let mut sync = SyncConfig::new(bundles, persistence_dir);
    sync.max_staleness = max_staleness;
    sync.on_stale = on_stale;
    sync.status = status;
    sync.labels = labels;
    Ok(AgentConfig {
        sync,
        listen,
        decision_logs,
        envoy,
        envoy_http,
        ignored: w.ignored,
    })
}

/// `decision_logs` upload settings. As OPA: a named `service`, or, when console
/// logging is off, the first service (lockstep's `file` also counts as "logging
/// elsewhere", so a file-only config never starts uploading to the bundle server).
fn parse_upload(
    d: &Map<String, Json>,
    services: &BTreeMap<String, Service>,
    console: bool,
    w: &mut Walker,
) -> Result<Option<DecisionUpload>, String> {
    let named = string(d.get("service"), "decision_logs.service")?;
    let service = match named {
        Some(n) => services
            .get(&n)
            .cloned()
            .ok_or_else(|| format!("decision_logs.service: unknown service {n:?}"))?,
        None if console || d.contains_key("file") => return Ok(None),
        None => match services.values().next() {
            Some(s) => s.clone(),
            None => return Ok(None),
        },
    };
    let partition = string(d.get("partition_name"), "decision_logs.partition_name")?;
    let resource = match (
        string(d.get("resource"), "decision_logs.resource")?,
        partition,
    ) {
        (Some(r), _) => r,
        (None, Some(p)) => format!("/logs/{}", p.trim_matches('/')),
        (None, None) => "/logs".to_string(),
    };
    let r = obj(d.get("reporting"), "decision_logs.reporting")?
        .cloned()
        .unwrap_or_default();
    w.check(
        "decision_logs.reporting",
        &r,
        &[
            "min_delay_seconds",
            "max_delay_seconds",
            "upload_size_limit_bytes",
            "buffer_size_limit_events",
        ],
    );
    let int = |k: &str, default: u64| -> Result<u64, String> {
        match r.get(k) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| {
                format!("decision_logs.reporting.{k}: expected a non-negative integer")
            }),
        }
    };
    let min = int("min_delay_seconds", 300)?;
    let max = int("max_delay_seconds", 600)?;
    if min > max {
        return Err(format!(
            "decision_logs.reporting: min_delay_seconds ({min}) exceeds max_delay_seconds ({max})"
        ));
    }
    let limit = int("upload_size_limit_bytes", 32_768)?;
    if limit < 256 {
        return Err(format!(
            "decision_logs.reporting.upload_size_limit_bytes: {limit} is too small (>= 256)"
        ));
    }
    Ok(Some(DecisionUpload {
        service,
        resource,
        min_delay: Duration::from_secs(min),
        max_delay: Duration::from_secs(max),
        upload_size_limit: usize::try_from(limit).unwrap_or(usize::MAX),
        buffer_size_limit_events: usize::try_from(int("buffer_size_limit_events", 10_000)?)
            .unwrap_or(usize::MAX)
            .max(1),
    }))
}

/// A random UUID for `labels.id`.
pub fn new_instance_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(expand_env("a${A}b${B}c${", &env), "axbc${");
    }

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(&Json::String(s.into()), "x").unwrap();
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("2"), Duration::from_secs(2));
        assert!(parse_duration(&Json::String("2d".into()), "x").is_err());
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
            let e = p(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn ignored_keys_are_named_and_errors_are_opa_like() {
        let text = r#"
services:
  - name: s
    url: http://127.0.0.1:1/
    tls: {ca_cert: x}
bundles:
  b:
    polling: {min_delay_seconds: 5}
default_decision: /x
lockstep: {skip_verification: true, max_staleness: 10s, on_stale: serve, wat: 1}
"#;
        let e = parse(text, &|_| None, &Overrides::default()).unwrap_err();
        assert!(e.contains("missing 'max_delay_seconds'"), "{e}");
        let ok = text.replace(
            "{min_delay_seconds: 5}",
            "{min_delay_seconds: 5, max_delay_seconds: 6, trigger: periodic}",
        );
        let c = parse(&ok, &|_| None, &Overrides::default()).unwrap();
        assert_eq!(
            c.ignored,
            vec![
                "default_decision",
                "services.s.tls",
                "lockstep.wat",
                "bundles.b.polling.trigger"
            ]
        );
        assert_eq!(c.sync.bundles[0].url(), "http://127.0.0.1:1/bundles/b");
        assert_eq!(c.sync.bundles[0].verification, Verification::Skip);
        assert_eq!(c.sync.on_stale, OnStale::Serve);
        assert_eq!(c.sync.max_staleness, Duration::from_secs(10));
    }
}
