//! `lockstep inspect`: what a bundle holds, without trusting it (the signature is
//! decoded for display, not verified: use `lockstep verify` for that).

use std::process::ExitCode;

use anyhow::{Context, Result};
use lockstep_bundle::hash::sha256_file_hex;
use lockstep_bundle::package::extract_package;
use lockstep_bundle::{Bundle, ReadOptions, jws, read_dir, read_tar_gz};
use serde_json::{Value, json};

use crate::cli::{Format, InspectArgs};

pub fn run(args: &InspectArgs) -> Result<ExitCode> {
    let opts = ReadOptions {
        skip_verify: true,
        lazy_data: true,
        limits: lockstep_bundle::Limits {
            max_file_bytes: args.size_limit_bytes,
            ..lockstep_bundle::Limits::default()
        },
        ..ReadOptions::default()
    };
    let bundle = if args.path.is_dir() {
        read_dir(&args.path, &opts)
    } else {
        let file = std::fs::File::open(&args.path)
            .with_context(|| format!("reading {}", args.path.display()))?;
        read_tar_gz(std::io::BufReader::new(file), &opts)
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.path.display()))?;
    let doc = describe(&bundle);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        Format::Pretty => print_pretty(&doc),
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(bundle: &Bundle) -> Value {
    let m = &bundle.manifest;
    let mut packages: Vec<String> = bundle
        .modules
        .iter()
        .filter_map(|module| extract_package(&module.source).ok())
        .map(|p| format!("data.{}", p.parts.join(".")))
        .collect();
    packages.sort();
    packages.dedup();
    let files: Vec<Value> = bundle
        .files
        .iter()
        .map(|f| {
            json!({
                "name": f.path,
                "size": f.bytes.len(),
                // The hash a signature must list for this file (canonical JSON for data and manifest).
                "sha256": sha256_file_hex(&f.path, &f.bytes).unwrap_or_else(|e| format!("unhashable: {e}")),
            })
        })
        .collect();
    let signature = bundle
        .signatures
        .as_ref()
        .map(|s| match s.signatures.as_slice() {
            [token] => describe_token(token),
            many => {
                json!({ "error": format!("{} signatures (OPA accepts exactly one)", many.len()) })
            }
        });
    json!({
        "revision": m.revision,
        "roots": m.effective_roots(),
        "rego_version": m.rego_version.unwrap_or(1),
        "metadata": m.metadata,
        "type": if bundle.is_delta() { "delta" } else { "snapshot" },
        "packages": packages,
        "files": files,
        "signature": signature,
    })
}

fn describe_token(token: &str) -> Value {
    match jws::decode(token) {
        Err(e) => json!({ "error": e.to_string(), "verified": false }),
        Ok(t) => {
            let payload: Value = serde_json::from_slice(&t.payload).unwrap_or(Value::Null);
            json!({
                "verified": false,
                "algorithm": t.header.get("alg"),
                "key_id": t.kid().map(str::to_string).or_else(|| payload.get("keyid").and_then(Value::as_str).map(str::to_string)),
                "scope": payload.get("scope"),
                "issued_at": payload.get("iat"),
                "issuer": payload.get("iss"),
                "files": payload.get("files").and_then(Value::as_array).map(Vec::len),
            })
        }
    }
}

fn print_pretty(doc: &Value) {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    println!("revision:     {}", s(&doc["revision"]));
    println!("roots:        {}", s(&doc["roots"]));
    println!("rego_version: {}", s(&doc["rego_version"]));
    println!("type:         {}", s(&doc["type"]));
    println!("metadata:     {}", s(&doc["metadata"]));
    println!("packages:");
    for p in doc["packages"].as_array().into_iter().flatten() {
        println!("  {}", s(p));
    }
    println!("files:");
    for f in doc["files"].as_array().into_iter().flatten() {
        println!(
            "  {:>10}  {}  {}",
            s(&f["size"]),
            s(&f["sha256"]),
            s(&f["name"])
        );
    }
    match doc.get("signature") {
        Some(Value::Object(sig)) => {
            println!("signature (not verified here; use `lockstep verify`):");
            for (k, v) in sig {
                println!("  {k}: {}", s(v));
            }
        }
        _ => println!("signature:    none"),
    }
}
