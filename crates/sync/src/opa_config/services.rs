//! `services`: a mapping or a list with `name`, as OPA accepts; bearer credentials
//! (inline or re-read from `token_path`), headers, the response-header timeout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value as Json};

use super::ConfigError;
use super::values::{Walker, invalid, obj, string, whole_number};
use crate::config::{Credentials, Service, TokenSource};

fn parse_service(
    name: &str,
    m: &Map<String, Json>,
    w: &mut Walker,
) -> Result<Service, ConfigError> {
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
        .ok_or_else(|| invalid(&p, "missing url"))?;
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
                (None, None) => return Err(invalid(&bp, "token or token_path required")),
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
    let timeout = whole_number(
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

pub(super) fn parse_services(
    v: Option<&Json>,
    w: &mut Walker,
) -> Result<BTreeMap<String, Service>, ConfigError> {
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
                    .ok_or_else(|| invalid(format!("services[{i}]"), "missing name"))?;
                out.insert(name.clone(), parse_service(&name, &s, w)?);
            }
        }
        Some(_) => return Err(invalid("services", "expected a mapping or a list")),
    }
    Ok(out)
}

/// The service `name` names, or (OPA) the only configured one when none is named.
pub fn pick_service(
    services: &BTreeMap<String, Service>,
    name: Option<String>,
    what: &str,
) -> Result<Service, ConfigError> {
    match name {
        Some(n) => services
            .get(&n)
            .cloned()
            .ok_or_else(|| invalid(what, format!("unknown service {n:?}"))),
        None if services.len() == 1 => services
            .values()
            .next()
            .cloned()
            .ok_or_else(|| invalid(what, "no service")),
        None => Err(invalid(
            what,
            "service required (several services configured)",
        )),
    }
}
