//! `lockstep sign`: sign an existing bundle (tar.gz rewritten, or a directory's `.signatures.json`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use lockstep_bundle::{
    ReadOptions, read_dir, read_tar_gz, sign_bundle, sign_files, signatures_json,
};

use crate::cli::SignArgs;
use crate::cmd::build::write_atomically;
use crate::cmd::load::signing_config;

pub fn run(args: &SignArgs) -> Result<ExitCode> {
    let cfg = signing_config(&args.signing)?.context("--signing-key is required: the secret (HMAC) or the PEM file of the private key (RSA, ECDSA)")?;
    // Any existing signature is replaced, as `opa sign` does: it is not verified here.
    let opts = ReadOptions {
        skip_verify: true,
        lazy_data: true,
        ..ReadOptions::default()
    };
    if args.path.is_dir() {
        let bundle = read_dir(&args.path, &opts)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.path.display()))?;
        let token = sign_files(&bundle.files, &cfg).map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        let out = args
            .output
            .clone()
            .unwrap_or_else(|| args.path.join(".signatures.json"));
        std::fs::write(&out, signatures_json(&token, cfg.plugin.as_deref()))
            .with_context(|| format!("writing {}", out.display()))?;
        println!(
            "signed {} files of {}: {}",
            bundle.files.len(),
            args.path.display(),
            out.display()
        );
    } else {
        let file = std::fs::File::open(&args.path)
            .with_context(|| format!("reading {}", args.path.display()))?;
        let mut bundle = read_tar_gz(std::io::BufReader::new(file), &opts)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.path.display()))?;
        sign_bundle(&mut bundle, &cfg).map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        let out = args.output.clone().unwrap_or_else(|| args.path.clone());
        write_atomically(&bundle, &out)?;
        println!("signed {} files: {}", bundle.files.len(), out.display());
    }
    Ok(ExitCode::SUCCESS)
}
