//! Producing bundle signatures the way `opa build --signing-key` does.
//!
//! Payload: `files` = every file except the signatures file, `{name, hash, algorithm}`
//! with lowercase hex SHA-256 by OPA's hash rule; `keyid` (deprecated claim) and header
//! `kid` when a key id is given, except that with custom claims the `keyid` claim is not
//! added (as OPA); `scope` when given; `iat` and `iss` always (lockstep needs `iat` for
//! rollback protection; OPA ignores both); custom claims merged on top.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::canonical::write_go_json_string_html;
use crate::error::{BundleError, Result};
use crate::hash::sha256_file_hex;
use crate::jws;
use crate::keys::{Algorithm, load_signing_key};
use crate::model::{Bundle, BundleFile, SignaturesConfig};
use crate::verify::FileInfo;

/// The `iss` claim lockstep writes.
pub const ISSUER: &str = "lockstep";

/// How to sign.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SigningConfig {
    /// `--signing-key`: a PEM file path, inline PEM, or (HMAC) the secret itself.
    pub key: String,
    /// JWA name (`RS256` if empty, OPA's default).
    pub alg: String,
    /// Goes into header `kid` and (without `claims`) the `keyid` claim.
    pub key_id: Option<String>,
    /// Custom claims (`--claims-file`), merged over the generated ones.
    pub claims: Option<Map<String, Value>>,
    /// `scope` claim.
    pub scope: Option<String>,
    /// Fixed `iat` (for reproducible builds); `None` = now.
    pub issued_at: Option<i64>,
    /// `plugin` to record in `.signatures.json`.
    pub plugin: Option<String>,
}

impl SigningConfig {
    fn algorithm(&self) -> Result<Algorithm> {
        if self.alg.is_empty() {
            Ok(crate::keys::DEFAULT_ALGORITHM)
        } else {
            Algorithm::from_name(&self.alg)
        }
    }
}

/// True for the file(s) that hold signatures and are therefore never signed themselves.
pub fn is_signatures_file(path: &str) -> bool {
    path.ends_with("signatures.json")
}

/// The JWT `files` list for a set of bundle files (signatures file skipped), in the given order.
pub fn file_infos(files: &[BundleFile]) -> Result<Vec<FileInfo>> {
    files
        .iter()
        .filter(|f| !is_signatures_file(&f.path))
        .map(|f| {
            Ok(FileInfo {
                name: f.path.trim_start_matches('/').to_string(),
                hash: sha256_file_hex(&f.path, &f.bytes)?,
                algorithm: "SHA-256".to_string(),
            })
        })
        .collect()
}

/// Signs `files` and returns the compact JWS.
pub fn sign_files(files: &[BundleFile], config: &SigningConfig) -> Result<String> {
    let alg = config.algorithm()?;
    let key = load_signing_key(&config.key, alg)?;
    let mut payload = Map::new();
    let infos = file_infos(files)?;
    payload.insert(
        "files".to_string(),
        serde_json::to_value(infos).map_err(|e| BundleError::Signing(e.to_string()))?,
    );
    let key_id = config.key_id.as_deref().filter(|k| !k.is_empty());
    if let (Some(id), None) = (key_id, &config.claims) {
        payload.insert("keyid".to_string(), Value::String(id.to_string()));
    }
    if let Some(scope) = &config.scope {
        payload.insert("scope".to_string(), Value::String(scope.clone()));
    }
    let iat = config.issued_at.unwrap_or_else(now_unix);
    payload.insert("iat".to_string(), Value::Number(iat.into()));
    payload.insert("iss".to_string(), Value::String(ISSUER.to_string()));
    if let Some(claims) = &config.claims {
        for (k, v) in claims {
            payload.insert(k.clone(), v.clone());
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(payload))
        .map_err(|e| BundleError::Signing(e.to_string()))?;
    jws::sign(&bytes, &key, alg, key_id)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `.signatures.json` bytes exactly as Go's `json.MarshalIndent(x, "", " ")` writes them
/// (one-space indent, no trailing newline, `plugin` first when present).
pub fn signatures_json(token: &str, plugin: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len() + 64);
    out.extend_from_slice(b"{\n");
    if let Some(plugin) = plugin.filter(|p| !p.is_empty()) {
        out.extend_from_slice(b" \"plugin\": ");
        let _ = write_go_json_string_html(plugin, &mut out);
        out.extend_from_slice(b",\n");
    }
    out.extend_from_slice(b" \"signatures\": [\n  ");
    // Writing into a Vec cannot fail.
    let _ = write_go_json_string_html(token, &mut out);
    out.extend_from_slice(b"\n ]\n}");
    out
}

/// `.signatures.json` bytes for a parsed config (all tokens, MarshalIndent layout).
pub fn signatures_config_json(config: &SignaturesConfig) -> Vec<u8> {
    match config.signatures.as_slice() {
        [token] => signatures_json(token, config.plugin.as_deref()),
        tokens => {
            let mut out = b"{\n".to_vec();
            if let Some(plugin) = config.plugin.as_deref().filter(|p| !p.is_empty()) {
                out.extend_from_slice(b" \"plugin\": ");
                let _ = write_go_json_string_html(plugin, &mut out);
                out.extend_from_slice(if tokens.is_empty() { b"\n" } else { b",\n" });
            }
            if !tokens.is_empty() {
                out.extend_from_slice(b" \"signatures\": [\n");
                for (i, t) in tokens.iter().enumerate() {
                    out.extend_from_slice(b"  ");
                    let _ = write_go_json_string_html(t, &mut out);
                    out.extend_from_slice(if i + 1 < tokens.len() { b",\n" } else { b"\n" });
                }
                out.extend_from_slice(b" ]\n");
            }
            out.extend_from_slice(b"}");
            out
        }
    }
}

/// Signs the bundle's final file set (manifest included, as OPA does) and stores the
/// token in `bundle.signatures`.
pub fn sign_bundle(bundle: &mut Bundle, config: &SigningConfig) -> Result<()> {
    let token = sign_files(&bundle.files, config)?;
    bundle.signatures = Some(SignaturesConfig {
        signatures: vec![token],
        plugin: config.plugin.clone(),
    });
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::jws;

    fn files() -> Vec<BundleFile> {
        vec![
            BundleFile {
                path: ".manifest".into(),
                bytes: br#"{"revision":"r"}"#.to_vec(),
            },
            BundleFile {
                path: ".signatures.json".into(),
                bytes: b"{}".to_vec(),
            },
            BundleFile {
                path: "a/data.json".into(),
                bytes: br#"{"b": 1, "a": 2}"#.to_vec(),
            },
        ]
    }

    fn payload(token: &str) -> Value {
        serde_json::from_slice(&jws::decode(token).unwrap().payload).unwrap()
    }

    #[test]
    fn payload_has_files_keyid_scope_iat_iss() {
        let cfg = SigningConfig {
            key: "secret".into(),
            alg: "HS256".into(),
            key_id: Some("k".into()),
            scope: Some("write".into()),
            issued_at: Some(1700000000),
            ..Default::default()
        };
        let token = sign_files(&files(), &cfg).unwrap();
        assert_eq!(jws::decode(&token).unwrap().kid(), Some("k"));
        let p = payload(&token);
        assert_eq!(p["keyid"], "k");
        assert_eq!(p["scope"], "write");
        assert_eq!(p["iat"], 1700000000);
        assert_eq!(p["iss"], "lockstep");
        let names: Vec<&str> = p["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![".manifest", "a/data.json"]);
        assert_eq!(
            p["files"][1]["hash"],
            crate::hash::sha256_file_hex("a/data.json", br#"{"a":2,"b":1}"#).unwrap()
        );
        assert_eq!(p["files"][1]["algorithm"], "SHA-256");
    }

    #[test]
    fn claims_suppress_keyid_claim_and_override() {
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::String("me".into()));
        let cfg = SigningConfig {
            key: "secret".into(),
            alg: "HS256".into(),
            key_id: Some("k".into()),
            claims: Some(claims),
            ..Default::default()
        };
        let token = sign_files(&files(), &cfg).unwrap();
        let p = payload(&token);
        assert!(p.get("keyid").is_none());
        assert_eq!(p["iss"], "me");
        assert_eq!(jws::decode(&token).unwrap().kid(), Some("k"));
    }

    #[test]
    fn signatures_json_layout() {
        assert_eq!(
            signatures_json("t.o.k", None),
            b"{\n \"signatures\": [\n  \"t.o.k\"\n ]\n}".to_vec()
        );
        assert_eq!(
            signatures_json("t", Some("p<")),
            b"{\n \"plugin\": \"p\\u003c\",\n \"signatures\": [\n  \"t\"\n ]\n}".to_vec()
        );
    }

    #[test]
    fn unknown_algorithm_is_refused() {
        let cfg = SigningConfig {
            key: "secret".into(),
            alg: "HS999".into(),
            ..Default::default()
        };
        assert_eq!(
            sign_files(&files(), &cfg).unwrap_err().to_string(),
            "unknown signature algorithm: HS999"
        );
    }
}
