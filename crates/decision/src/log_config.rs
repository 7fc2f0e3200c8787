//! The `decision_logs` section of OPA's config file: console, lockstep's `file`, and
//! upload to a service as OPA's logs plugin does it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lockstep_sync::Service;
use lockstep_sync::opa_config::ConfigError;
use lockstep_sync::opa_config::values::{Walker, boolean, invalid, obj, string};
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

/// The top-level key this module reads.
pub const SECTION: &str = "decision_logs";

/// Parses `decision_logs` (absent: no logging).
pub fn parse_decision_logs(
    v: Option<&Json>,
    services: &BTreeMap<String, Service>,
    w: &mut Walker,
) -> Result<DecisionLogConfig, ConfigError> {
    let mut out = DecisionLogConfig::default();
    let Some(d) = obj(v, SECTION)? else {
        return Ok(out);
    };
    w.check(
        SECTION,
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
    out.console = boolean(d.get("console"), "decision_logs.console")?.unwrap_or(false);
    out.file = string(d.get("file"), "decision_logs.file")?.map(PathBuf::from);
    out.upload = parse_upload(d, services, out.console, w)?;
    Ok(out)
}

/// Upload settings. As OPA: a named `service`, or, when console logging is off, the
/// first service (lockstep's `file` also counts as "logging elsewhere", so a
/// file-only config never starts uploading to the bundle server).
fn parse_upload(
    d: &Map<String, Json>,
    services: &BTreeMap<String, Service>,
    console: bool,
    w: &mut Walker,
) -> Result<Option<DecisionUpload>, ConfigError> {
    let named = string(d.get("service"), "decision_logs.service")?;
    let service = match named {
        Some(n) => services
            .get(&n)
            .cloned()
            .ok_or_else(|| invalid("decision_logs.service", format!("unknown service {n:?}")))?,
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
    let int = |k: &str, default: u64| -> Result<u64, ConfigError> {
        match r.get(k) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| {
                invalid(
                    format!("decision_logs.reporting.{k}"),
                    "expected a non-negative integer",
                )
            }),
        }
    };
    let min = int("min_delay_seconds", 300)?;
    let max = int("max_delay_seconds", 600)?;
    if min > max {
        return Err(invalid(
            "decision_logs.reporting",
            format!("min_delay_seconds ({min}) exceeds max_delay_seconds ({max})"),
        ));
    }
    let limit = int("upload_size_limit_bytes", 32_768)?;
    if limit < 256 {
        return Err(invalid(
            "decision_logs.reporting.upload_size_limit_bytes",
            format!("{limit} is too small (>= 256)"),
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
