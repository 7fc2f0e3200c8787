//! The demo's bundles: the example policies are compiled into the binary, so this runs
//! anywhere with no other file: test → keygen → build+sign v1 → verify → a tampered copy
//! is refused → build+sign v2 (the guide's patch).

use std::path::Path;

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

use super::display::Display;
use super::fleet::KEY_ID;

static EXAMPLES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../examples/policies");

/// The bundles the story publishes, signed by a key made for this run.
pub struct Prepared {
    pub public_pem: String,
    pub v1: Vec<u8>,
    pub v2: Vec<u8>,
}

pub const V1: &str = "demo-v1";
pub const V2: &str = "demo-v2";

/// Steps 1–5 in `dir`: test, keygen, build and sign v1 and v2, verify, refuse a
/// tampered copy. `Ok(None)`: the example policies' tests failed (printed).
pub fn prepare(dir: &Path, out: &Display) -> Result<Option<Prepared>> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    EXAMPLES
        .extract(&policies)
        .with_context(|| format!("writing {}", policies.display()))?;
    out.line(format!(
        "1. the guide's policies (tool access, command scope, resource rules) written to {}",
        policies.display()
    ));

    let bundle = build_bundle(&[&policies], &BuildOptions::default())?;
    let report = run_tests(&bundle.modules, &bundle.data, &TestOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = report.counts();
    out.line(format!(
        "2. lockstep test: {} passed, {} failed, {} errors",
        c.pass, c.fail, c.error
    ));
    if c.fail + c.error > 0 || c.pass == 0 {
        eprint!("{}", report.to_pretty(false));
        return Ok(None);
    }

    let (private_pem, public_pem) =
        generate_keypair(Algorithm::ES256).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(dir.join("signing-key.pem"), &private_pem)?;
    std::fs::write(dir.join("signing-key-pub.pem"), &public_pem)?;
    let signing = SigningConfig {
        key: private_pem,
        alg: "ES256".to_string(),
        key_id: Some(KEY_ID.to_string()),
        ..SigningConfig::default()
    };
    let (v1_bundle, v1) = signed(&policies, V1, &signing)?;
    std::fs::write(dir.join("bundle-v1.tar.gz"), &v1)?;
    out.line(format!(
        "3. keygen + build --signing-key: bundle-v1.tar.gz ({} bytes, {} files, ES256 key {KEY_ID:?})",
        v1.len(),
        v1_bundle.files.len()
    ));

    let read_opts = ReadOptions {
        verification: Some(VerificationConfig {
            keys: [(
                KEY_ID.to_string(),
                KeyConfig {
                    key: public_pem.clone(),
                    algorithm: "ES256".to_string(),
                    scope: None,
                },
            )]
            .into(),
            key_id: Some(KEY_ID.to_string()),
            ..VerificationConfig::default()
        }),
        ..ReadOptions::default()
    };
    let verified = read_tar_gz(&v1[..], &read_opts)
        .map_err(|e| anyhow::anyhow!("verification failed: {e}"))?;
    out.line(format!(
        "4. verify: valid, revision {:?}",
        verified.manifest.revision
    ));
    let tampered = tamper(&v1_bundle)?;
    match read_tar_gz(&tampered[..], &read_opts) {
        Ok(_) => anyhow::bail!("a tampered bundle verified: this is a bug"),
        Err(e) => out.line(format!(
            "5. a copy granting analyst write_database, not re-signed, is refused: {e}"
        )),
    }

    // v2 is the guide's patch: analysts lose run_query.
    let roles = policies.join("mcp/roles/data.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&roles)?)?;
    let tools = v
        .pointer_mut("/analyst/tools")
        .and_then(|t| t.as_array_mut())
        .context("example roles have no analyst tools")?;
    tools.retain(|t| t != "run_query");
    std::fs::write(&roles, serde_json::to_vec_pretty(&v)?)?;
    let (_, v2) = signed(&policies, V2, &signing)?;
    std::fs::write(dir.join("bundle-v2.tar.gz"), &v2)?;
    Ok(Some(Prepared { public_pem, v1, v2 }))
}

/// Builds `policies` as `revision`, checks it compiles, signs it: the bundle and its bytes.
fn signed(
    policies: &Path,
    revision: &str,
    signing: &SigningConfig,
) -> Result<(lockstep_bundle::Bundle, Vec<u8>)> {
    let opts = BuildOptions {
        revision: Some(revision.to_string()),
        ..BuildOptions::default()
    };
    let mut bundle = build_bundle(&[policies], &opts)?;
    PolicySet::compile(
        &bundle.modules,
        bundle.data.clone(),
        &CompileOptions::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    sign_bundle(&mut bundle, signing)?;
    let bytes = write_tar_gz(&bundle, Vec::new())?;
    Ok((bundle, bytes))
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
