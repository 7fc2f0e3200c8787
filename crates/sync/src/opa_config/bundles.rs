//! `bundles`: one download source each, with its service, resource, polling (OPA's
//! validation messages), signing requirements and persistence.

use std::collections::BTreeMap;
use std::time::Duration;

use lockstep_bundle::{KeyConfig, VerificationConfig};
use serde_json::{Map, Value as Json};

use super::ConfigError;
use super::services::pick_service;
use super::values::{Walker, boolean, invalid, obj, string, whole_number};
use crate::config::{BundleSource, Polling, Service, Verification};

pub(super) fn parse_bundles(
    v: Option<&Json>,
    w: &mut Walker,
    services: &BTreeMap<String, Service>,
    keys: &BTreeMap<String, KeyConfig>,
    skip_verification: bool,
) -> Result<Vec<BundleSource>, ConfigError> {
    let mut bundles = Vec::new();
    let Some(m) = obj(v, "bundles")? else {
        return Ok(bundles);
    };
    for (name, b) in m {
        let p = format!("bundles.{name}");
        let b = obj(Some(b), &p)?.cloned().unwrap_or_default();
        w.check(
            &p,
            &b,
            &[
                "service",
                "resource",
                "polling",
                "signing",
                "persist",
                "size_limit_bytes",
            ],
        );
        let service = pick_service(services, string(b.get("service"), &p)?, &p)?;
        let resource = string(b.get("resource"), &format!("{p}.resource"))?
            .unwrap_or_else(|| format!("bundles/{name}"));
        let polling = parse_polling(obj(b.get("polling"), &format!("{p}.polling"))?, &p, w)?;
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
            Verification::Required(parse_signing(&signing, &p, keys)?)
        };
        bundles.push(BundleSource {
            name: name.clone(),
            service,
            resource,
            polling,
            verification,
            persist: boolean(b.get("persist"), &format!("{p}.persist"))?.unwrap_or(false),
            size_limit_bytes: whole_number(b.get("size_limit_bytes"), &p)?,
        });
    }
    Ok(bundles)
}

fn parse_polling(
    pm: Option<&Map<String, Json>>,
    p: &str,
    w: &mut Walker,
) -> Result<Polling, ConfigError> {
    let mut polling = Polling::default();
    let Some(pm) = pm else {
        return Ok(polling);
    };
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
    let min = whole_number(pm.get("min_delay_seconds"), &pp)?;
    let max = whole_number(pm.get("max_delay_seconds"), &pp)?;
    match (min, max) {
        (Some(min), Some(max)) => {
            if max < min {
                return Err(invalid(
                    &pp,
                    "max polling delay must be >= min polling delay",
                ));
            }
            polling.min_delay = Duration::from_secs(min);
            polling.max_delay = Duration::from_secs(max);
        }
        (Some(_), None) => {
            return Err(invalid(
                &pp,
                "polling configuration missing 'max_delay_seconds'",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                &pp,
                "polling configuration missing 'min_delay_seconds'",
            ));
        }
        (None, None) => {}
    }
    if let Some(lp) = whole_number(pm.get("long_polling_timeout_seconds"), &pp)? {
        if lp < 1 {
            return Err(invalid(
                &pp,
                "'long_polling_timeout_seconds' must be at least 1",
            ));
        }
        polling.long_polling_timeout = Some(Duration::from_secs(lp));
    }
    Ok(polling)
}

fn parse_signing(
    signing: &Map<String, Json>,
    p: &str,
    keys: &BTreeMap<String, KeyConfig>,
) -> Result<VerificationConfig, ConfigError> {
    if keys.is_empty() {
        return Err(invalid(
            p,
            format!(
                "signature verification is required but no keys are configured (add keys: and {p}.signing.keyid, pass --verification-key, or set lockstep.skip_verification: true to accept unsigned bundles)"
            ),
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
        Some(_) => {
            return Err(invalid(
                format!("{p}.signing.exclude_files"),
                "expected a list",
            ));
        }
    };
    let key_id = string(signing.get("keyid"), &format!("{p}.signing.keyid"))?;
    if let Some(k) = &key_id
        && !keys.contains_key(k)
    {
        return Err(invalid(
            format!("{p}.signing.keyid"),
            format!("key {k:?} is not configured under keys (or --verification-key-id)"),
        ));
    }
    Ok(VerificationConfig {
        keys: keys.clone(),
        key_id,
        scope: string(signing.get("scope"), &format!("{p}.signing.scope"))?,
        exclude_files,
    })
}
