//! Bundle signature verification, following OPA's algorithm (`v1/bundle/verify.go`,
//! `Reader.checkSignaturesAndDescriptors`) step by step and with OPA's error texts.
//!
//! 1. exactly one JWT in `.signatures.json`;
//! 2. key id = configured `key_id`, else header `kid`, else payload `keyid`;
//! 3. the JWS verifies with that key and the algorithm *configured* for it;
//! 4. scope (configured, else the key's) equals the payload `scope` exactly;
//! 5. every bundle file not matching an `exclude_files` glob is listed with a matching
//!    digest, and every listed file exists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{BundleError, Result};
use crate::glob::go_match_lenient;
use crate::hash::{HashAlgorithm, hash_file};
use crate::jws;
use crate::keys::{Algorithm, parse_verification_key};
use crate::model::{Bundle, SignaturesConfig};

/// One configured verification key (`keys.<id>` in OPA's config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyConfig {
    /// PEM public key (or private key/certificate), or the HMAC secret itself.
    pub key: String,
    /// JWA name; OPA's default is `RS256`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// Used when the bundle's verification config has no scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

fn default_algorithm() -> String {
    crate::keys::DEFAULT_ALGORITHM.name().to_string()
}

/// How to verify one bundle (OPA's `VerificationConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationConfig {
    /// Key id -> key.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
    /// Key id to use regardless of the token; also makes a signature mandatory.
    #[serde(default, alias = "keyid", skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Required payload `scope` (empty/absent means "no scope").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Go `filepath.Match` globs of bundle paths (no leading `/`) that need no signature.
    #[serde(default)]
    pub exclude_files: Vec<String>,
}

impl VerificationConfig {
    fn configured_key_id(&self) -> &str {
        self.key_id.as_deref().unwrap_or_default()
    }
}

/// One entry of the JWT `files` list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Bundle path without a leading `/`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub name: String,
    /// Hex digest.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub hash: String,
    /// OPA hash algorithm name, e.g. `SHA-256`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub algorithm: String,
}

/// Go's decoder leaves a string field empty for JSON `null`.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// The payload fields OPA reads, with Go's decoding rules (wrong types are errors).
#[derive(Deserialize)]
struct RawPayload {
    #[serde(default)]
    keyid: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    files: Option<Vec<FileInfo>>,
    #[serde(default)]
    iat: Option<i64>,
}

/// A verified token: who signed, for what scope, when, and over which files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedSignature {
    /// The key id that verified the token.
    pub key_id: String,
    /// The algorithm it was verified with (the configured one).
    pub algorithm: Algorithm,
    /// Payload `scope` (`""` when absent).
    pub scope: String,
    /// Payload `iss`.
    pub issuer: Option<String>,
    /// Payload `iat` (unix seconds).
    pub issued_at: Option<i64>,
    /// Payload deprecated `keyid` claim.
    pub keyid_claim: Option<String>,
    /// Payload `files`.
    pub files: Vec<FileInfo>,
    /// The whole payload, for custom claims.
    pub claims: Map<String, Value>,
}

/// Verifies one compact JWS against the configuration (steps 2-4 above).
pub fn verify_token(token: &str, config: &VerificationConfig) -> Result<DecodedSignature> {
    let decoded = jws::decode(token)?;
    let claims = match serde_json::from_slice::<Value>(&decoded.payload) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(BundleError::PayloadJson(
                "payload is not a JSON object".to_string(),
            ));
        }
        Err(e) => return Err(BundleError::PayloadJson(e.to_string())),
    };
    let payload: RawPayload = serde_json::from_slice(&decoded.payload)
        .map_err(|e| BundleError::PayloadJson(e.to_string()))?;

    let mut key_id = config.configured_key_id().to_string();
    if key_id.is_empty() {
        key_id = decoded.kid().unwrap_or_default().to_string();
    }
    if key_id.is_empty() {
        key_id = payload.keyid.clone().unwrap_or_default();
    }
    if key_id.is_empty() {
        return Err(BundleError::KeyIdEmpty);
    }
    let key_config = config
        .keys
        .get(&key_id)
        .ok_or_else(|| BundleError::KeyNotFound(key_id.clone()))?;
    let algorithm = Algorithm::from_name(&key_config.algorithm)?;
    let key = parse_verification_key(&key_config.key, algorithm)?;
    jws::verify(&decoded, &key, algorithm)?;

    let wanted_scope = match config.scope.as_deref() {
        Some(s) if !s.is_empty() => s,
        _ => key_config.scope.as_deref().unwrap_or_default(),
    };
    let scope = payload.scope.unwrap_or_default();
    if scope != wanted_scope {
        return Err(BundleError::ScopeMismatch);
    }
    Ok(DecodedSignature {
        key_id,
        algorithm,
        scope,
        issuer: payload.iss,
        issued_at: payload.iat,
        keyid_claim: payload.keyid,
        files: payload.files.unwrap_or_default(),
        claims,
    })
}

/// Verifies the token of a `.signatures.json` (exactly one JWT, default verifier only).
pub fn verify_signatures_config(
    signatures: &SignaturesConfig,
    config: &VerificationConfig,
) -> Result<DecodedSignature> {
    if let Some(plugin) = signatures.plugin.as_deref().filter(|p| !p.is_empty()) {
        // Only OPA's built-in verifier exists here; custom plugins are OPA Go extensions.
        return Err(BundleError::UnknownVerifierPlugin(plugin.to_string()));
    }
    match signatures.signatures.as_slice() {
        [] => Err(BundleError::MissingJwt),
        [token] => verify_token(token, config),
        _ => Err(BundleError::MultipleJwts),
    }
}

/// Checks bundle files one by one against a verified token's `files` list (step 5).
#[derive(Debug, Clone)]
pub struct FileChecker {
    expected: BTreeMap<String, FileInfo>,
    exclude: Vec<String>,
}

impl FileChecker {
    /// Starts from the token's file list and the configured exclusions.
    pub fn new(files: &[FileInfo], exclude: &[String]) -> Self {
        let expected = files.iter().map(|f| (f.name.clone(), f.clone())).collect();
        FileChecker {
            expected,
            exclude: exclude.to_vec(),
        }
    }

    /// Checks one file (`path` without leading `/`); excluded files are only crossed off.
    pub fn check(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        if self
            .exclude
            .iter()
            .any(|pattern| go_match_lenient(pattern, path))
        {
            self.expected.remove(path);
            return Ok(());
        }
        check_file(path, bytes, &mut self.expected)
    }

    /// Fails if the token lists files that were never checked.
    pub fn finish(self) -> Result<()> {
        if self.expected.is_empty() {
            Ok(())
        } else {
            Err(BundleError::SignedFilesNotFound(
                self.expected.into_keys().collect(),
            ))
        }
    }
}

/// OPA's `VerifyBundleFile`: the file must be listed and its digest must match; it is then
/// removed from `expected`.
pub fn check_file(
    path: &str,
    bytes: &[u8],
    expected: &mut BTreeMap<String, FileInfo>,
) -> Result<()> {
    let info = expected
        .get(path)
        .ok_or_else(|| BundleError::FileNotSigned(path.to_string()))?;
    if info.algorithm.is_empty() {
        return Err(BundleError::MissingHashAlgorithm(path.to_string()));
    }
    let alg = HashAlgorithm::from_name(&info.algorithm)?;
    let got = hash_file(alg, path, bytes)?;
    let want = hex::decode(&info.hash).map_err(|_| BundleError::InvalidDigest {
        path: path.to_string(),
        hash: info.hash.clone(),
    })?;
    if want != got {
        return Err(BundleError::DigestMismatch {
            path: path.to_string(),
            want: hex::encode(want),
            got: hex::encode(got),
        });
    }
    expected.remove(path);
    Ok(())
}

/// Applies OPA's full decision to an already-read bundle (read with `skip_verify`):
/// unsigned + `key_id` configured -> `bundle missing .signatures.json file`; signed + no
/// config -> `verification key not provided`; unsigned otherwise -> `Ok(None)`.
pub fn verify_bundle(
    bundle: &Bundle,
    config: Option<&VerificationConfig>,
) -> Result<Option<DecodedSignature>> {
    let Some(signatures) = &bundle.signatures else {
        if config.is_some_and(|c| !c.configured_key_id().is_empty()) {
            return Err(BundleError::MissingSignaturesFile);
        }
        return Ok(None);
    };
    let config = config.ok_or(BundleError::VerificationKeyNotProvided)?;
    let decoded = verify_signatures_config(signatures, config)?;
    let mut checker = FileChecker::new(&decoded.files, &config.exclude_files);
    for file in &bundle.files {
        checker.check(&file.path, &file.bytes)?;
    }
    checker.finish()?;
    Ok(Some(decoded))
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

    fn info(name: &str, hash: &str, alg: &str) -> FileInfo {
        FileInfo {
            name: name.into(),
            hash: hash.into(),
            algorithm: alg.into(),
        }
    }

    #[test]
    fn check_file_texts() {
        let mut m = BTreeMap::new();
        assert_eq!(
            check_file("a.rego", b"x", &mut m).unwrap_err().to_string(),
            "file a.rego not included in bundle signature"
        );
        m.insert("a.rego".to_string(), info("a.rego", "00", ""));
        assert_eq!(
            check_file("a.rego", b"x", &mut m).unwrap_err().to_string(),
            "no hashing algorithm provided for file a.rego"
        );
        m.insert("a.rego".to_string(), info("a.rego", "zz", "SHA-256"));
        assert!(matches!(
            check_file("a.rego", b"x", &mut m).unwrap_err(),
            BundleError::InvalidDigest { .. }
        ));
        // Upper-case hex is accepted (Go's hex.DecodeString), and the entry is crossed off.
        let h = hex::encode_upper(crate::hash::hash_bytes(HashAlgorithm::Sha1, b"x"));
        m.insert("a.rego".to_string(), info("a.rego", &h, "SHA-1"));
        check_file("a.rego", b"x", &mut m).unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn excluded_files_are_crossed_off() {
        let mut c = FileChecker::new(
            &[info("x/skip.json", "00", "SHA-256")],
            &["x/*.json".to_string()],
        );
        c.check("x/skip.json", b"anything").unwrap();
        c.check("x/other.json", b"anything").unwrap();
        c.finish().unwrap();
        let c = FileChecker::new(
            &[info("b", "00", "SHA-256"), info("a", "00", "SHA-256")],
            &[],
        );
        assert_eq!(
            c.finish().unwrap_err().to_string(),
            "file(s) [a b] specified in bundle signatures but not found in the target bundle"
        );
    }
}
