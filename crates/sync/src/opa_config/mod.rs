//! OPA's configuration file (`opa run --config-file`): the sections that drive
//! distribution (`services`, `bundles`, `keys`, `labels`, `status`,
//! `persistence_directory`) and lockstep's own `lockstep:` section (`max_staleness`,
//! `on_stale`, `skip_verification`, `min_issued_at`, the decision fast path), parsed into a [`SyncConfig`]. Any process that
//! embeds the sync engine (the agent, the gateway) reads its file through
//! [`parse`] and parses only its own sections from [`OpaConfig::document`] with the
//! readers in [`values`]; every key nobody reads is named in [`OpaConfig::ignored`].
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
//! persistence_directory: /var/lib/lockstep
//! lockstep:
//!   max_staleness: 60s             # or a number of seconds
//!   on_stale: deny                 # or serve
//!   skip_verification: false       # true accepts unsigned bundles (logged)
//!   min_issued_at: 2025-06-01T00:00:00Z   # refuse bundles signed before (or {main: 1748736000})
//!   decision_memo: {enabled: true, max_entries: 10000, max_bytes: 16777216}   # or true/false
//!   bytecode_vm: {enabled: true, verify_first: 64, recheck_every: 64}          # or true/false
//!   cutover: {enabled: true, max_clock_uncertainty: 50ms, max_hold: 10m}      # or true/false
//! ```
//!
//! `decision_memo` and `bytecode_vm` are the decision fast path
//! ([`lockstep_policy::MemoOptions`], [`lockstep_policy::RvmOptions`]): both on by
//! default; turning either off changes speed, never an answer.
//!
//! Whatever `min_issued_at` says, the newest signed issue time accepted is remembered
//! in `persistence_directory/bundles/<name>/newest_iat.json` (even without `persist`),
//! and a restarted agent refuses bundles signed before it.
//!
//! `${VAR}` anywhere in the file is replaced by the environment variable, as OPA does
//! (an unset variable becomes the empty string).

mod bundles;
mod keys;
mod services;
pub mod values;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lockstep_bundle::KeyConfig;
use serde_json::{Map, Value as Json};

pub use services::pick_service;
use values::{Walker, boolean, invalid, obj, parse_duration, string};

use crate::config::{OnStale, Service, StatusTarget, SyncConfig};

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not YAML (or JSON) at all.
    #[error("config: {0}")]
    Syntax(#[from] serde_yaml_ng::Error),
    /// A value at a dotted key (`bundles.main.polling`) is wrong.
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
}

/// Settings given on the command line, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--verification-key`: extra keys by id.
    pub keys: BTreeMap<String, KeyConfig>,
}

/// The keys an embedder reads itself, so they are not reported as ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnSections<'a> {
    /// Top-level keys (`plugins`, `decision_logs`, …).
    pub top: &'a [&'a str],
    /// Keys of the `lockstep:` section (`listen`, …).
    pub lockstep: &'a [&'a str],
}

/// A parsed file: the sync engine's configuration, plus what the embedder needs to
/// parse its own sections.
#[derive(Debug, Clone)]
pub struct OpaConfig {
    pub sync: SyncConfig,
    /// Every configured service by name (decision-log upload names one too).
    pub services: BTreeMap<String, Service>,
    /// The whole document after `${VAR}` expansion.
    pub document: Map<String, Json>,
    /// Dotted names of keys present in the file that nobody reads.
    pub ignored: Vec<String>,
}

impl OpaConfig {
    /// The `lockstep:` section (empty when absent).
    pub fn lockstep_section(&self) -> Map<String, Json> {
        match self.document.get("lockstep") {
            Some(Json::Object(m)) => m.clone(),
            _ => Map::new(),
        }
    }

    pub fn log_ignored(&self) {
        for k in &self.ignored {
            tracing::warn!(key = %k, "configuration key not supported by lockstep: ignored");
        }
    }
}

const SYNC_SECTIONS: &[&str] = &[
    "services",
    "bundles",
    "keys",
    "labels",
    "status",
    "persistence_directory",
    "lockstep",
];
const SYNC_LOCKSTEP_KEYS: &[&str] = &[
    "max_staleness",
    "on_stale",
    "skip_verification",
    "min_issued_at",
    "decision_memo",
    "bytecode_vm",
    "cutover",
];

/// Parses OPA's config text. `env` resolves `${VAR}`.
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &Overrides,
    own: OwnSections<'_>,
) -> Result<OpaConfig, ConfigError> {
    let text = values::expand_env(text, env);
    let root: Json = if text.trim().is_empty() {
        Json::Object(Map::new())
    } else {
        serde_yaml_ng::from_str(&text)?
    };
    let root = obj(Some(&root), "config")?.cloned().unwrap_or_default();
    let mut w = Walker::default();
    let known: Vec<&str> = SYNC_SECTIONS.iter().chain(own.top).copied().collect();
    w.check("", &root, &known);
    let services = services::parse_services(root.get("services"), &mut w)?;
    let keys = keys::parse_keys(root.get("keys"), &mut w, &overrides.keys)?;
    let ls = obj(root.get("lockstep"), "lockstep")?
        .cloned()
        .unwrap_or_default();
    let known: Vec<&str> = SYNC_LOCKSTEP_KEYS
        .iter()
        .chain(own.lockstep)
        .copied()
        .collect();
    w.check("lockstep", &ls, &known);
    let lease = parse_lease(&ls)?;
    let bundles = bundles::parse_bundles(
        root.get("bundles"),
        &mut w,
        &services,
        &keys,
        lease.skip_verification,
    )?;
    let labels = parse_labels(root.get("labels"))?;
    let status = parse_status(root.get("status"), &services, &mut w)?;
    let persistence_dir = string(root.get("persistence_directory"), "persistence_directory")?
        .map_or_else(|| PathBuf::from(".opa"), PathBuf::from);
    let mut sync = SyncConfig::new(bundles, persistence_dir);
    sync.max_staleness = lease.max_staleness;
    sync.on_stale = lease.on_stale;
    sync.status = status;
    sync.labels = labels;
    sync.min_issued_at = parse_min_issued_at(ls.get("min_issued_at"), &sync.bundles)?;
    parse_fast_path(&ls, &mut sync.compile, &mut w)?;
    sync.cutover = parse_cutover(ls.get("cutover"), &mut w)?;
    Ok(OpaConfig {
        sync,
        services,
        document: root,
        ignored: w.ignored,
    })
}

/// `lockstep.cutover`: `true`/`false` or `{enabled, max_clock_uncertainty, max_hold}`.
fn parse_cutover(
    v: Option<&Json>,
    w: &mut Walker,
) -> Result<crate::config::CutoverSettings, ConfigError> {
    let mut c = crate::config::CutoverSettings::default();
    match v {
        None | Some(Json::Null) => {}
        Some(Json::Bool(b)) => c.enabled = *b,
        Some(Json::Object(m)) => {
            w.check(
                "lockstep.cutover",
                m,
                &["enabled", "max_clock_uncertainty", "max_hold"],
            );
            if let Some(b) = boolean(m.get("enabled"), "lockstep.cutover.enabled")? {
                c.enabled = b;
            }
            if let Some(d) = m.get("max_clock_uncertainty").filter(|d| !d.is_null()) {
                c.max_clock_uncertainty =
                    parse_duration(d, "lockstep.cutover.max_clock_uncertainty")?;
            }
            if let Some(d) = m.get("max_hold").filter(|d| !d.is_null()) {
                c.max_hold = parse_duration(d, "lockstep.cutover.max_hold")?;
            }
        }
        Some(_) => {
            return Err(invalid(
                "lockstep.cutover",
                "expected true, false or an object",
            ));
        }
    }
    Ok(c)
}

struct Lease {
    max_staleness: Duration,
    on_stale: OnStale,
    skip_verification: bool,
}

fn parse_lease(ls: &Map<String, Json>) -> Result<Lease, ConfigError> {
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
            return Err(invalid(
                "lockstep.on_stale",
                format!("expected deny or serve, got {other:?}"),
            ));
        }
    };
    Ok(Lease {
        max_staleness,
        on_stale,
        skip_verification,
    })
}

/// A fast-path section: its `enabled` (absent: on) and its settings, if an object.
type Switch<'a> = (Option<bool>, Option<&'a Map<String, Json>>);

/// `lockstep.decision_memo` and `lockstep.bytecode_vm`: the decision fast path of
/// lockstep-policy. Each is `true`/`false` or an object of its settings.
fn parse_fast_path(
    ls: &Map<String, Json>,
    compile: &mut lockstep_policy::CompileOptions,
    w: &mut Walker,
) -> Result<(), ConfigError> {
    fn section<'a>(
        v: Option<&'a Json>,
        at: &str,
        keys: &[&str],
        w: &mut Walker,
    ) -> Result<Option<Switch<'a>>, ConfigError> {
        match v {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Bool(b)) => Ok(Some((Some(*b), None))),
            Some(Json::Object(m)) => {
                w.check(at, m, keys);
                Ok(Some((
                    boolean(m.get("enabled"), &format!("{at}.enabled"))?,
                    Some(m),
                )))
            }
            Some(_) => Err(invalid(at, "expected true, false or an object")),
        }
    }
    fn count(
        m: Option<&Map<String, Json>>,
        at: &str,
        key: &str,
    ) -> Result<Option<u64>, ConfigError> {
        let Some(m) = m else { return Ok(None) };
        values::whole_number(m.get(key), &format!("{at}.{key}"))
    }
    const MEMO: &str = "lockstep.decision_memo";
    if let Some((enabled, m)) = section(
        ls.get("decision_memo"),
        MEMO,
        &["enabled", "max_entries", "max_bytes"],
        w,
    )? {
        let memo = &mut compile.memo;
        memo.enabled = enabled.unwrap_or(true);
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(n) = count(m, MEMO, "max_entries")? {
            memo.max_entries = size(n);
        }
        if let Some(n) = count(m, MEMO, "max_bytes")? {
            memo.max_bytes = size(n);
        }
    }
    const RVM: &str = "lockstep.bytecode_vm";
    if let Some((enabled, m)) = section(
        ls.get("bytecode_vm"),
        RVM,
        &["enabled", "verify_first", "recheck_every"],
        w,
    )? {
        let rvm = &mut compile.rvm;
        rvm.enabled = enabled.unwrap_or(true);
        if let Some(n) = count(m, RVM, "verify_first")? {
            rvm.verify_first = n;
        }
        if let Some(n) = count(m, RVM, "recheck_every")? {
            if n == 0 {
                return Err(invalid(
                    format!("{RVM}.recheck_every"),
                    "must be at least 1",
                ));
            }
            rvm.recheck_every = n;
        }
    }
    Ok(())
}

/// `lockstep.min_issued_at`: one issue time for every bundle, or a map of bundle name
/// to issue time; each unix seconds or an RFC 3339 time (`2025-06-01T00:00:00Z`).
fn parse_min_issued_at(
    v: Option<&Json>,
    bundles: &[crate::config::BundleSource],
) -> Result<BTreeMap<String, i64>, ConfigError> {
    const AT: &str = "lockstep.min_issued_at";
    fn one(v: &Json, at: &str) -> Result<i64, ConfigError> {
        match v {
            Json::Number(n) => n
                .as_i64()
                .filter(|n| *n >= 0)
                .ok_or_else(|| invalid(at, "expected a non-negative number of unix seconds")),
            Json::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
                .map(|t| t.timestamp())
                .map_err(|e| {
                    invalid(
                        at,
                        format!("expected unix seconds or an RFC 3339 time: {e}"),
                    )
                }),
            _ => Err(invalid(at, "expected unix seconds or an RFC 3339 time")),
        }
    }
    let mut out = BTreeMap::new();
    match v {
        None | Some(Json::Null) => {}
        Some(Json::Object(m)) => {
            for (name, v) in m {
                let at = format!("{AT}.{name}");
                if !bundles.iter().any(|b| &b.name == name) {
                    return Err(invalid(&at, "no such bundle under bundles"));
                }
                out.insert(name.clone(), one(v, &at)?);
            }
        }
        Some(v) => {
            let iat = one(v, AT)?;
            for b in bundles {
                out.insert(b.name.clone(), iat);
            }
        }
    }
    Ok(out)
}

/// OPA's labels: `id` (a fresh UUID unless configured), `version`, plus the file's.
fn parse_labels(v: Option<&Json>) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut labels = BTreeMap::new();
    labels.insert("id".to_string(), new_instance_id());
    labels.insert("version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    labels.insert("agent".to_string(), "lockstep".to_string());
    if let Some(m) = obj(v, "labels")? {
        for (k, v) in m {
            labels.insert(
                k.clone(),
                string(Some(v), &format!("labels.{k}"))?.unwrap_or_default(),
            );
        }
    }
    Ok(labels)
}

fn parse_status(
    v: Option<&Json>,
    services: &BTreeMap<String, Service>,
    w: &mut Walker,
) -> Result<Option<StatusTarget>, ConfigError> {
    let Some(s) = obj(v, "status")? else {
        return Ok(None);
    };
    w.check("status", s, &["service", "partition_name"]);
    Ok(Some(StatusTarget {
        service: pick_service(
            services,
            string(s.get("service"), "status.service")?,
            "status",
        )?,
        partition: string(s.get("partition_name"), "status.partition_name")?,
    }))
}

/// A random UUID for `labels.id`.
pub fn new_instance_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
