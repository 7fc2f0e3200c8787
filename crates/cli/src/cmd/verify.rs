//! `lockstep verify`: OPA's bundle verification, with OPA's refusal texts.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lockstep_bundle::keys::{Algorithm, KeySource, parse_verification_key};
use lockstep_bundle::{Bundle, KeyConfig, ReadOptions, VerificationConfig, read_dir, read_tar_gz};
use lockstep_policy::{CompileOptions, PolicySet};
use serde_json::json;

use crate::cli::{Format, VerifyArgs};

pub fn run(args: &VerifyArgs) -> Result<ExitCode> {
    let key_text = String::from_utf8(
        // Inline PEM or a file that must exist: never the flag's text as an HMAC secret.
        KeySource::from_flag(&args.verification_key)
            .material()
            .map_err(|e| anyhow::anyhow!("--verification-key: {e}"))?,
    )
    .context("--verification-key is not UTF-8 text")?;
    let alg = match &args.signing_alg {
        Some(a) => Algorithm::from_name(a).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => infer_algorithm(&key_text),
    };
    // As `opa build --verification-key`: the key is configured under one id (default
    // "default") and that configured id takes precedence over the token's `kid`.
    let key_id = args
        .verification_key_id
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let config = VerificationConfig {
        keys: BTreeMap::from([(
            key_id.clone(),
            KeyConfig {
                key: key_text,
                algorithm: alg.name().to_string(),
                scope: None,
            },
        )]),
        key_id: Some(key_id),
        scope: args.scope.clone(),
        exclude_files: args.exclude_files.clone(),
    };
    let opts = ReadOptions {
        verification: Some(config),
        // With --load the data files are parsed once, straight into the engine
        // (no serde_json tree of the data, which costs ~8x the JSON's size).
        lazy_data: true,
        limits: lockstep_bundle::Limits {
            max_file_bytes: args.size_limit_bytes,
            ..lockstep_bundle::Limits::default()
        },
        ..ReadOptions::default()
    };
    let bundle = match read(args, &opts) {
        Ok(b) => b,
        Err(reason) => {
            report(args.format, false, &format!("{reason:#}"), None);
            return Ok(ExitCode::from(1));
        }
    };
    if args.load
        && let Err(e) = PolicySet::compile_bundle(&bundle, &CompileOptions::default())
    {
        let reason = format!("signature valid, but the policy does not compile: {e}");
        report(args.format, false, &reason, Some(&bundle));
        return Ok(ExitCode::from(1));
    }
    report(args.format, true, "", Some(&bundle));
    Ok(ExitCode::SUCCESS)
}

fn read(args: &VerifyArgs, opts: &ReadOptions) -> anyhow::Result<Bundle> {
    if args.path.is_dir() {
        return Ok(read_dir(&args.path, opts)?);
    }
    let file = std::fs::File::open(&args.path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.path.display()))?;
    Ok(read_tar_gz(std::io::BufReader::new(file), opts)?)
}

/// Without `--signing-alg`, pick the algorithm the key itself implies (OPA would
/// assume RS256): P-256/384/521 -> ES256/384/512, RSA -> RS256, non-PEM -> HS256.
fn infer_algorithm(key: &str) -> Algorithm {
    if !key.contains("-----BEGIN") {
        return Algorithm::HS256;
    }
    [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::RS256,
    ]
    .into_iter()
    .find(|alg| parse_verification_key(key, *alg).is_ok())
    .unwrap_or(Algorithm::RS256)
}

fn report(format: Format, ok: bool, reason: &str, bundle: Option<&Bundle>) {
    let signer = bundle.and_then(|b| b.verified_signature.as_ref());
    match format {
        Format::Json => {
            let v = json!({
                "valid": ok,
                "error": (!ok).then_some(reason),
                "revision": bundle.map(|b| b.manifest.revision.clone()),
                "files": bundle.map(|b| b.files.len()),
                "key_id": signer.map(|s| s.key_id.clone()),
                "algorithm": signer.map(|s| s.algorithm.name()),
                "scope": signer.map(|s| s.scope.clone()),
                "issued_at": signer.and_then(|s| s.issued_at),
                "issuer": signer.and_then(|s| s.issuer.clone()),
            });
            println!("{v}");
        }
        Format::Pretty if ok => match signer {
            Some(s) => println!(
                "valid: revision {:?}, {} files signed by key {:?} ({}){}",
                bundle
                    .map(|b| b.manifest.revision.as_str())
                    .unwrap_or_default(),
                s.files.len(),
                s.key_id,
                s.algorithm.name(),
                if s.scope.is_empty() {
                    String::new()
                } else {
                    format!(", scope {:?}", s.scope)
                }
            ),
            None => println!("valid"),
        },
        Format::Pretty => eprintln!("refused: {reason}"),
    }
}
