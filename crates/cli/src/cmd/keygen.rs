//! `lockstep keygen`: the guide's `openssl ecparam -genkey` / `openssl ec -pubout`, in one step.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use lockstep_bundle::keys::{Algorithm, generate_keypair};

use crate::cli::KeygenArgs;

/// `signing-key.pem` -> `signing-key-pub.pem`, as the guide names them.
pub fn public_path_for(private: &Path) -> PathBuf {
    let stem = private
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("key");
    let ext = private
        .extension()
        .and_then(|s| s.to_str())
        .unwrap_or("pem");
    private.with_file_name(format!("{stem}-pub.{ext}"))
}

pub fn run(args: &KeygenArgs) -> Result<ExitCode> {
    let alg = Algorithm::from_name(&args.alg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let public = args
        .public_output
        .clone()
        .unwrap_or_else(|| public_path_for(&args.output));
    for p in [&args.output, &public] {
        anyhow::ensure!(
            args.force || !p.exists(),
            "{} exists (use --force to overwrite)",
            p.display()
        );
    }
    let (private_pem, public_pem) = generate_keypair(alg).map_err(|e| anyhow::anyhow!("{e}"))?;
    write_private(&args.output, private_pem.as_bytes())?;
    std::fs::write(&public, public_pem).with_context(|| format!("writing {}", public.display()))?;
    println!("private key: {} ({})", args.output.display(), alg.name());
    println!("public key:  {}", public.display());
    Ok(ExitCode::SUCCESS)
}

/// Private keys are created readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
