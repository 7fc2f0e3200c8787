//! Building a bundle from input paths, the way `opa build -b` does (minus Rego formatting).
//!
//! Each input is a directory (files named relative to it), a `.tar.gz`/`.tgz` bundle, or
//! a single file (named by its base name). Data files and modules keep their paths and
//! bytes, so signatures made over a directory stay valid. `.manifest` files of the inputs
//! are merged into one; existing signatures are verified (when a verification config is
//! given) and dropped: sign the result with [`crate::signing::sign_bundle`].

use std::path::Path;

use serde_json::{Map, Value};

use crate::assemble::{RawEntry, assemble};
use crate::error::{BundleError, Result};
use crate::model::{Bundle, MANIFEST_PATH, Manifest, SignaturesConfig};
use crate::reader::{Limits, ReadOptions, read_dir_entries, read_tar_gz_entries};
use crate::signing::is_signatures_file;
use crate::verify::{FileChecker, VerificationConfig, verify_signatures_config};

/// Options for [`build_bundle`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--ignore` globs (Go `filepath.Match`) against base names and relative paths.
    pub ignore: Vec<String>,
    /// `--revision`: overrides the manifest revision.
    pub revision: Option<String>,
    /// Limits applied to every input.
    pub limits: Limits,
    /// Verify inputs that carry a `.signatures.json` with this config.
    pub verification: Option<VerificationConfig>,
    /// See [`ReadOptions::lazy_data`]: validate data files as JSON only, leave `data` empty.
    pub lazy_data: bool,
}

/// Builds a validated, unsigned bundle from `inputs`.
pub fn build_bundle<P: AsRef<Path>>(inputs: &[P], opts: &BuildOptions) -> Result<Bundle> {
    if inputs.is_empty() {
        return Err(BundleError::NoInputs);
    }
    let mut entries: Vec<RawEntry> = Vec::new();
    let mut manifests: Vec<Manifest> = Vec::new();
    for input in inputs {
        let input = input.as_ref();
        let mut found = read_input(input, opts)?;
        if let Some(cfg) = &opts.verification {
            verify_input(&found, cfg)?;
        }
        found.retain(|e| !is_signatures_file(&e.path));
        for e in found {
            if e.path.ends_with(".manifest") {
                manifests.push(
                    serde_json::from_slice(&e.bytes)
                        .map_err(|err| BundleError::ManifestDecode(err.to_string()))?,
                );
            } else {
                entries.push(e);
            }
        }
    }
    let mut manifest = merge_manifests(manifests);
    if let Some(revision) = &opts.revision {
        manifest.revision = revision.clone();
    }
    // `opa build` always writes both: roots default to [""], rego_version to 1.
    manifest.roots = Some(manifest.effective_roots());
    manifest.rego_version.get_or_insert(1);
    entries.push(RawEntry {
        name: MANIFEST_PATH.to_string(),
        path: MANIFEST_PATH.to_string(),
        bytes: manifest.to_json_bytes()?,
    });

    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        if !seen.insert(e.path.as_str()) {
            return Err(BundleError::DuplicateEntry(e.path.clone()));
        }
    }
    let read_opts = ReadOptions {
        limits: opts.limits,
        skip_verify: true,
        lazy_data: opts.lazy_data,
        ..ReadOptions::default()
    };
    let mut bundle = assemble(entries, &read_opts)?;
    bundle.signatures = None;
    Ok(bundle)
}

fn read_input(input: &Path, opts: &BuildOptions) -> Result<Vec<RawEntry>> {
    let io_err = |e: std::io::Error| BundleError::Io {
        path: input.display().to_string(),
        message: e.to_string(),
    };
    let meta = std::fs::metadata(input).map_err(io_err)?;
    if meta.is_dir() {
        return read_dir_entries(input, &opts.limits, &opts.ignore);
    }
    let name = input
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let file = std::fs::File::open(input).map_err(io_err)?;
        return read_tar_gz_entries(std::io::BufReader::new(file), &opts.limits);
    }
    if meta.len() > opts.limits.max_file_bytes {
        return Err(BundleError::FileTooLarge {
            path: name,
            size: meta.len(),
            limit: opts.limits.max_file_bytes,
        });
    }
    let bytes = std::fs::read(input).map_err(io_err)?;
    Ok(vec![RawEntry {
        name: name.clone(),
        path: name,
        bytes,
    }])
}

/// Verifies an input that carries a signatures file (OPA verifies `-b` inputs before building).
fn verify_input(entries: &[RawEntry], cfg: &VerificationConfig) -> Result<()> {
    let Some(sig) = entries.iter().find(|e| is_signatures_file(&e.path)) else {
        if cfg.key_id.as_deref().is_some_and(|k| !k.is_empty()) {
            return Err(BundleError::MissingSignaturesFile);
        }
        return Ok(());
    };
    let sigs: SignaturesConfig = serde_json::from_slice(&sig.bytes)
        .map_err(|e| BundleError::SignaturesDecode(e.to_string()))?;
    let decoded = verify_signatures_config(&sigs, cfg)?;
    let mut checker = FileChecker::new(&decoded.files, &cfg.exclude_files);
    for e in entries.iter().filter(|e| !is_signatures_file(&e.path)) {
        checker.check(&e.path, &e.bytes)?;
    }
    checker.finish()
}

/// Merges input manifests: first non-empty revision, union of declared roots (none
/// declared = everything), first `rego_version`, later keys win in maps, wasm concatenated.
pub fn merge_manifests(manifests: Vec<Manifest>) -> Manifest {
    let mut out = Manifest::default();
    for m in manifests {
        if out.revision.is_empty() {
            out.revision = m.revision;
        }
        if let Some(roots) = m.roots {
            let all = out.roots.get_or_insert_with(Vec::new);
            for r in roots {
                if !all.contains(&r) {
                    all.push(r);
                }
            }
        }
        if out.rego_version.is_none() {
            out.rego_version = m.rego_version;
        }
        merge_map(&mut out.file_rego_versions, m.file_rego_versions);
        merge_map(&mut out.metadata, m.metadata);
        if let Some(wasm) = m.wasm {
            out.wasm.get_or_insert_with(Vec::new).extend(wasm);
        }
        for (k, v) in m.extra {
            out.extra.insert(k, v);
        }
    }
    out
}

fn merge_map(into: &mut Option<Map<String, Value>>, from: Option<Map<String, Value>>) {
    if let Some(from) = from {
        into.get_or_insert_with(Map::new).extend(from);
    }
}
