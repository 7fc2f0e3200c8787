//! `lockstep build`: `opa build -b` — validate, compile, (sign,) write deterministically.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use lockstep_bundle::{
    BuildOptions, Bundle, BundleError, SignaturesConfig, build_bundle, sign_files,
    write_tar_gz_with,
};
use lockstep_policy::{CompileOptions, PolicySet};

use crate::cli::BuildArgs;
use crate::cmd::load::{display_paths, normalise_path, signing_config};
use crate::git;

pub fn run(args: &BuildArgs) -> Result<ExitCode> {
    let paths: Vec<PathBuf> = args.paths.iter().map(|p| normalise_path(p)).collect();
    let revision = args
        .revision
        .clone()
        .or_else(|| paths.first().and_then(|p| git::head_commit(p)));
    let opts = BuildOptions {
        ignore: args.ignore.clone(),
        revision,
        // data.json files are validated and kept as bytes (the bundle is written
        // from them); the compile check parses them straight into the engine.
        lazy_data: true,
        ..BuildOptions::default()
    };
    let bundle = build_bundle(&paths, &opts)
        .with_context(|| format!("building {}", display_paths(&paths)))?;
    let signing = signing_config(&args.signing)?;
    // Checking, hashing for the signature and compressing are the long steps of a big
    // bundle, so they run side by side. The writer asks for the check's verdict and the
    // signature only once every other file is compressed (`.signatures.json` comes after
    // them), and the archive is renamed into place only after both: a bundle that does
    // not compile never appears at the output path.
    std::thread::scope(|scope| -> Result<()> {
        let signer = signing
            .as_ref()
            .map(|cfg| scope.spawn(|| sign_files(&bundle.files, cfg).map_err(anyhow::Error::from)));
        let mut check = Some(scope.spawn(|| compile_check(&bundle)));
        let mut failure = None;
        let written = write_atomically_with(&bundle, &args.output, || {
            if let Some(handle) = check.take() {
                joined(handle).map_err(|e| {
                    failure = Some(e);
                    BundleError::Write("the bundle does not compile".into())
                })?;
            }
            let Some(handle) = signer else {
                return Ok(None);
            };
            let token = joined(handle)
                .map_err(|e| anyhow::anyhow!("signing: {e}"))
                .map_err(|e| {
                    failure = Some(e);
                    BundleError::Write("signing failed".into())
                })?;
            Ok(Some(SignaturesConfig {
                signatures: vec![token],
                plugin: signing.as_ref().and_then(|c| c.plugin.clone()),
            }))
        });
        // A compile error outranks a write error that happened before it was asked for.
        if let Some(handle) = check.take() {
            joined(handle)?;
        }
        match (written, failure) {
            (_, Some(e)) => Err(e),
            (result, None) => result,
        }
    })?;
    println!(
        "built {} (revision {:?}, {} files{})",
        args.output.display(),
        bundle.manifest.revision,
        bundle.files.len(),
        if signing.is_some() { ", signed" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

/// A scoped thread's result; a panic in it becomes an error.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a build thread panicked")))
}

/// Every module is parsed and compiled, with the data, before anything is written:
/// a bundle that cannot be activated must not reach the bundle server.
fn compile_check(bundle: &Bundle) -> Result<()> {
    PolicySet::check_bundle(bundle, &CompileOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Write to a temporary file beside the target, then rename: a failed build never
/// leaves a truncated bundle where a server or OPA could pick it up.
pub fn write_atomically(bundle: &Bundle, output: &Path) -> Result<()> {
    write_atomically_with(bundle, output, || Ok(bundle.signatures.clone()))
}

/// [`write_atomically`] with the signatures supplied late (see [`write_tar_gz_with`]).
fn write_atomically_with(
    bundle: &Bundle,
    output: &Path,
    signatures: impl FnOnce() -> lockstep_bundle::error::Result<Option<SignaturesConfig>>,
) -> Result<()> {
    let dir = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("bundle.tar.gz");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = write_tar_gz_with(bundle, std::io::BufWriter::new(file), signatures)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", output.display()))
        .and_then(|w| {
            w.into_inner()
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", output.display()))
        })
        .and_then(|f| {
            f.sync_all()
                .with_context(|| format!("writing {}", output.display()))
        });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), output.display()))
}
