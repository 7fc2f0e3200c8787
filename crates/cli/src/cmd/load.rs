//! Turning command-line paths into bundles and signing settings.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lockstep_bundle::{BuildOptions, Bundle, SigningConfig, build_bundle};
use serde_json::Value;

use crate::cli::SigningArgs;

/// `opa test ./policies/...` is how the guide names a tree; the Go-style `/...`
/// suffix means the directory itself, which lockstep always walks recursively.
pub fn normalise_path(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    match s.strip_suffix("/...") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ if s == "..." => PathBuf::from("."),
        _ => p.to_path_buf(),
    }
}

/// Loads directories, single files and tar.gz bundles into one unsigned bundle,
/// the way `opa test`/`opa eval -d` load their arguments (no signature check).
pub fn load_sources(paths: &[PathBuf], ignore: &[String]) -> Result<Bundle> {
    let paths: Vec<PathBuf> = paths.iter().map(|p| normalise_path(p)).collect();
    let opts = BuildOptions {
        ignore: ignore.to_vec(),
        ..BuildOptions::default()
    };
    build_bundle(&paths, &opts).with_context(|| format!("loading {}", display_paths(&paths)))
}

pub fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The signing settings of `build` and `sign`, or `None` when no key was given.
pub fn signing_config(args: &SigningArgs) -> Result<Option<SigningConfig>> {
    let Some(key) = &args.signing_key else {
        anyhow::ensure!(
            args.claims_file.is_none(),
            "--claims-file needs --signing-key"
        );
        return Ok(None);
    };
    let claims = match &args.claims_file {
        None => None,
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let v: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let Value::Object(m) = v else {
                anyhow::bail!("{}: claims must be a JSON object", path.display());
            };
            Some(m)
        }
    };
    // Inline PEM, or a file that must exist: never the flag's text as an HMAC secret.
    let key = lockstep_bundle::keys::KeySource::from_flag(key)
        .to_config_value()
        .map_err(|e| anyhow::anyhow!("--signing-key: {e}"))?;
    Ok(Some(SigningConfig {
        key,
        alg: args.signing_alg.clone(),
        key_id: args.signing_key_id.clone(),
        claims,
        scope: args.scope.clone(),
        issued_at: source_date_epoch()?,
        ..SigningConfig::default()
    }))
}

/// Reads a JSON or YAML document (input files may be either, as with `opa eval -i`).
pub fn read_document(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let is_yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if is_yaml {
        serde_yaml_ng::from_slice(&bytes)
            .with_context(|| format!("{} is not valid YAML", path.display()))
    } else {
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display()))
    }
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org) fixes the signature's `iat`, so a
/// signed build is byte-identical too (ECDSA signing is deterministic, RFC 6979).
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(None),
    }
}
