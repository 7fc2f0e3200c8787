//! `lockstep demo`: the main job on embedded defaults. The example policies are
//! compiled into the binary, so this runs anywhere with no other file or service:
//! test → keygen → build+sign → verify → a tampered copy is refused → decisions.

use std::process::ExitCode;

use anyhow::{Context, Result};
use include_dir::{Dir, include_dir};
use lockstep_bundle::keys::{Algorithm, generate_keypair};
use lockstep_bundle::{
    BuildOptions, BundleFile, KeyConfig, ReadOptions, SigningConfig, VerificationConfig,
    build_bundle, read_tar_gz, sign_bundle, write_tar_gz,
};
use lockstep_policy::testing::{TestOptions, run_tests};
use lockstep_policy::{CompileOptions, PolicySet};
use serde_json::json;

use crate::cli::DemoArgs;

static EXAMPLES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../examples/policies");
const KEY_ID: &str = "demo-key";

pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    EXAMPLES
        .extract(&policies)
        .with_context(|| format!("writing {}", policies.display()))?;
    println!("1. example policies written to {}", policies.display());

    let bundle = build_bundle(&[&policies], &BuildOptions::default())?;
    let report = run_tests(&bundle.modules, &bundle.data, &TestOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = report.counts();
    println!(
        "2. lockstep test: {} passed, {} failed, {} errors",
        c.pass, c.fail, c.error
    );
    if c.fail + c.error > 0 || c.pass == 0 {
        print!("{}", report.to_pretty(false));
        return Ok(ExitCode::from(1));
    }

    let (private_pem, public_pem) =
        generate_keypair(Algorithm::ES256).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(dir.join("signing-key.pem"), &private_pem)?;
    std::fs::write(dir.join("signing-key-pub.pem"), &public_pem)?;
    println!("3. keygen: ES256 key pair in {}", dir.display());

    let opts = BuildOptions {
        revision: Some("demo-1".to_string()),
        ..BuildOptions::default()
    };
    let mut bundle = build_bundle(&[&policies], &opts)?;
    PolicySet::compile(
        &bundle.modules,
        bundle.data.clone(),
        &CompileOptions::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let signing = SigningConfig {
        key: private_pem,
        alg: "ES256".to_string(),
        key_id: Some(KEY_ID.to_string()),
        ..SigningConfig::default()
    };
    sign_bundle(&mut bundle, &signing)?;
    let bundle_path = dir.join("bundle.tar.gz");
    let bytes = write_tar_gz(&bundle, Vec::new())?;
    std::fs::write(&bundle_path, &bytes)?;
    println!(
        "4. build --signing-key: {} ({} bytes, {} files, signed by {KEY_ID:?})",
        bundle_path.display(),
        bytes.len(),
        bundle.files.len()
    );

    let verification = VerificationConfig {
        keys: [(
            KEY_ID.to_string(),
            KeyConfig {
                key: public_pem,
                algorithm: "ES256".to_string(),
                scope: None,
            },
        )]
        .into(),
        key_id: Some(KEY_ID.to_string()),
        ..VerificationConfig::default()
    };
    let read_opts = ReadOptions {
        verification: Some(verification),
        ..ReadOptions::default()
    };
    let verified = read_tar_gz(&bytes[..], &read_opts)
        .map_err(|e| anyhow::anyhow!("verification failed: {e}"))?;
    println!(
        "5. verify: valid, revision {:?}",
        verified.manifest.revision
    );

    let tampered = tamper(&bundle)?;
    match read_tar_gz(&tampered[..], &read_opts) {
        Ok(_) => anyhow::bail!("a tampered bundle verified: this is a bug"),
        Err(e) => println!(
            "6. a copy granting analyst write_database, not re-signed, is refused:\n   {e}"
        ),
    }

    let policy = PolicySet::compile(&verified.modules, verified.data, &CompileOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("7. decisions from the verified bundle (data.mcp.decision):");
    for (role, tool, params) in [
        (
            "analyst",
            "read_database",
            json!({"target": "orders", "database": "analytics"}),
        ),
        (
            "analyst",
            "write_database",
            json!({"target": "orders", "operation": "write", "database": "analytics"}),
        ),
        (
            "admin",
            "write_database",
            json!({"target": "orders", "operation": "write", "database": "prod"}),
        ),
        (
            "auditor",
            "read_file",
            json!({"target": "/etc/shadow", "path": "/etc/shadow"}),
        ),
    ] {
        let input = json!({"agent": {"role": role}, "request": {"method": "tools/call", "tool": tool, "params": params}});
        let decision = policy
            .eval_rule("data.mcp.decision.allow", Some(&input))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let reasons = policy
            .eval_rule("data.mcp.decision.reasons", Some(&input))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "   {role:<8} {tool:<15} -> {}{}",
            if decision == Some(json!(true)) {
                "ALLOW"
            } else {
                "DENY"
            },
            reasons
                .filter(|r| r.as_array().is_some_and(|a| !a.is_empty()))
                .map(|r| format!("  {r}"))
                .unwrap_or_default()
        );
    }
    println!(
        "demo complete: {}",
        if args.dir.is_some() {
            "files kept"
        } else {
            "temporary files removed"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The signed bundle with one data file changed and the old signature kept.
fn tamper(bundle: &lockstep_bundle::Bundle) -> Result<Vec<u8>> {
    let mut evil = bundle.clone();
    let roles = evil
        .files
        .iter_mut()
        .find(|f| f.path.ends_with("roles/data.json"))
        .context("example bundle has no roles data")?;
    let mut v: serde_json::Value = serde_json::from_slice(&roles.bytes)?;
    if let Some(tools) = v
        .pointer_mut("/analyst/tools")
        .and_then(|t| t.as_array_mut())
    {
        tools.push(json!("write_database"));
    }
    *roles = BundleFile {
        path: roles.path.clone(),
        bytes: serde_json::to_vec(&v)?,
    };
    Ok(write_tar_gz(&evil, Vec::new())?)
}
