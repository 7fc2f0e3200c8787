//! `lockstep build`: `opa build -b` — validate, compile, (sign,) write deterministically.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use lockstep_bundle::{BuildOptions, Bundle, build_bundle, sign_bundle, write_tar_gz};
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
    let mut bundle = build_bundle(&paths, &opts)
        .with_context(|| format!("building {}", display_paths(&paths)))?;
    compile_check(&bundle)?;
    if let Some(cfg) = signing_config(&args.signing)? {
        sign_bundle(&mut bundle, &cfg).map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    }
    write_atomically(&bundle, &args.output)?;
    println!(
        "built {} (revision {:?}, {} files{})",
        args.output.display(),
        bundle.manifest.revision,
        bundle.files.len(),
        if bundle.signatures.is_some() {
            ", signed"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Every module is parsed and compiled, with the data, before anything is written:
/// a bundle that cannot be activated must not reach the bundle server.
fn compile_check(bundle: &Bundle) -> Result<()> {
    PolicySet::compile_bundle(bundle, &CompileOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Write to a temporary file beside the target, then rename: a failed build never
/// leaves a truncated bundle where a server or OPA could pick it up.
pub fn write_atomically(bundle: &Bundle, output: &Path) -> Result<()> {
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
    let result = write_tar_gz(bundle, std::io::BufWriter::new(file))
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
