//! `keys`: verification keys by id, plus those given on the command line; each is
//! resolved and parsed now, so a bad key fails at start rather than at download.

use std::collections::BTreeMap;

use lockstep_bundle::KeyConfig;
use serde_json::Value as Json;

use super::ConfigError;
use super::values::{Walker, invalid, obj, string};

pub(super) fn parse_keys(
    v: Option<&Json>,
    w: &mut Walker,
    extra: &BTreeMap<String, KeyConfig>,
) -> Result<BTreeMap<String, KeyConfig>, ConfigError> {
    let mut keys = BTreeMap::new();
    if let Some(m) = obj(v, "keys")? {
        for (id, k) in m {
            let p = format!("keys.{id}");
            let k = obj(Some(k), &p)?.cloned().unwrap_or_default();
            w.check(&p, &k, &["key", "algorithm", "scope"]);
            let key = string(k.get("key"), &format!("{p}.key"))?
                .ok_or_else(|| invalid(&p, "missing key"))?;
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
    for (id, k) in &mut keys {
        let at = format!("keys.{id}");
        let material = lockstep_bundle::keys::resolve_key_value(&k.key)
            .map_err(|e| invalid(&at, e.to_string()))?;
        let text = String::from_utf8(material).map_err(|_| invalid(&at, "not UTF-8"))?;
        let alg = lockstep_bundle::keys::Algorithm::from_name(&k.algorithm)
            .map_err(|e| invalid(&at, e.to_string()))?;
        lockstep_bundle::keys::parse_verification_key(&text, alg)
            .map_err(|e| invalid(&at, e.to_string()))?;
        k.key = text;
    }
    Ok(keys)
}
