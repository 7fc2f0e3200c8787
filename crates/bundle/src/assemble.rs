//! Turns the files of a bundle (from a tarball or a directory) into a [`Bundle`]:
//! signature verification, file roles, data tree, manifest, roots and Rego versions.
//!
//! The order of checks is OPA's `Reader.Read`, so the same broken bundle gets the same
//! first error: signatures, then each file in archive order (digest, then content), then
//! leftover signed files, then manifest roots.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::data;
use crate::error::{BundleError, Result};
use crate::model::{Bundle, BundleFile, Manifest, Module, Patch, SignaturesConfig};
use crate::package::{PackagePath, extract_package};
use crate::reader::ReadOptions;
use crate::roots;
use crate::signing::is_signatures_file;
use crate::structured::{parse_json, parse_json_or_yaml};
use crate::verify::{FileChecker, verify_signatures_config};

/// One file of a bundle as read from its container.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    /// The name as it appeared (`/x.rego` in an OPA tarball), for messages.
    pub name: String,
    /// Normalised path: no leading `/`, no `.` segments.
    pub path: String,
    pub bytes: Vec<u8>,
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Builds and validates a bundle from its files (in container order).
pub(crate) fn assemble(entries: Vec<RawEntry>, opts: &ReadOptions) -> Result<Bundle> {
    // Pass 1: the signatures file and patch.json.
    let mut signatures: Option<SignaturesConfig> = None;
    let mut patch: Option<Patch> = None;
    let mut signatures_seen: Option<&str> = None;
    for e in &entries {
        if is_signatures_file(&e.path) {
            if let Some(first) = signatures_seen {
                return Err(BundleError::DuplicateEntry(format!(
                    "{} (a second signatures file after '{first}')",
                    e.name
                )));
            }
            signatures_seen = Some(&e.name);
            match serde_json::from_slice::<SignaturesConfig>(&e.bytes) {
                Ok(s) => signatures = Some(s),
                Err(err) if !opts.skip_verify => {
                    return Err(BundleError::SignaturesDecode(err.to_string()));
                }
                // With verification skipped OPA does not even parse the file.
                Err(_) => {}
            }
        } else if base_name(&e.path) == "patch.json" {
            patch = Some(parse_patch(&e.bytes)?);
        }
    }
    let is_delta = patch.as_ref().is_some_and(|p| !p.data.is_empty());

    // Signature check (snapshot bundles only, as OPA).
    let mut checker: Option<FileChecker> = None;
    let mut verified = None;
    if !is_delta && !opts.skip_verify {
        match (&signatures, &opts.verification) {
            (None, Some(cfg)) if cfg.key_id.as_deref().is_some_and(|k| !k.is_empty()) => {
                return Err(BundleError::MissingSignaturesFile);
            }
            (Some(_), None) => return Err(BundleError::VerificationKeyNotProvided),
            (Some(sigs), Some(cfg)) => {
                let decoded = verify_signatures_config(sigs, cfg)?;
                checker = Some(FileChecker::new(&decoded.files, &cfg.exclude_files));
                verified = Some(decoded);
            }
            _ => {}
        }
    }

    // Pass 2: every other file, in order.
    let mut data_tree = Map::new();
    let mut manifest_value: Option<Map<String, Value>> = None;
    let mut modules: Vec<(String, String, PackagePath)> = Vec::new();
    let mut wasm_paths: Vec<String> = Vec::new();
    // Data files seen, parsed or not (lazily read data leaves `data_tree` empty, and a
    // delta bundle must still be refused for carrying them).
    let mut data_files = 0usize;
    let mut files: Vec<BundleFile> = Vec::with_capacity(entries.len());
    for e in entries {
        if is_signatures_file(&e.path) {
            continue;
        }
        if let Some(c) = checker.as_mut() {
            c.check(&e.path, &e.bytes)?;
        }
        let base = base_name(&e.path);
        if matches!(base, "data.json" | "data.yaml" | "data.yml") {
            data_files += 1;
        }
        if e.path.ends_with(".rego") {
            let source =
                String::from_utf8(e.bytes.clone()).map_err(|_| BundleError::ModulePackage {
                    path: e.name.clone(),
                    message: "invalid UTF-8".into(),
                })?;
            let package =
                extract_package(&source).map_err(|message| BundleError::ModulePackage {
                    path: e.name.clone(),
                    message: message.to_string(),
                })?;
            modules.push((e.path.clone(), source, package));
        } else if base == "policy.wasm" {
            wasm_paths.push(e.path.clone());
        } else if base == "data.json" && opts.lazy_data {
            let first =
                crate::canonical::validate_json(&e.bytes).map_err(|err| BundleError::DataLoad {
                    path: e.name.clone(),
                    message: match err {
                        crate::canonical::RawJsonError::Invalid(m)
                        | crate::canonical::RawJsonError::Io(m) => m,
                    },
                })?;
            if data::data_key(&e.path).is_empty() && first != b'{' {
                return Err(BundleError::DataLoad {
                    path: e.name.clone(),
                    message: "root value must be object".into(),
                });
            }
        } else if base == "data.json" {
            let value = parse_json(&e.bytes).map_err(|m| BundleError::DataLoad {
                path: e.name.clone(),
                message: m.to_string(),
            })?;
            data::insert(&mut data_tree, &data::data_key(&e.path), value).map_err(|m| {
                BundleError::DataLoad {
                    path: e.name.clone(),
                    message: m.to_string(),
                }
            })?;
        } else if base == "data.yaml" || base == "data.yml" {
            let value = parse_json_or_yaml(&e.bytes).map_err(|m| BundleError::DataLoad {
                path: e.name.clone(),
                message: m.to_string(),
            })?;
            data::insert(&mut data_tree, &data::data_key(&e.path), value).map_err(|m| {
                BundleError::DataLoad {
                    path: e.name.clone(),
                    message: m.to_string(),
                }
            })?;
        } else if e.path.ends_with(".manifest") {
            merge_manifest(&mut manifest_value, &e.bytes)?;
        }
        files.push(BundleFile {
            path: e.path,
            bytes: e.bytes,
        });
    }

    let manifest = match manifest_value {
        Some(m) => serde_json::from_value::<Manifest>(Value::Object(m))
            .map_err(|e| BundleError::ManifestDecode(e.to_string()))?,
        None => Manifest::default(),
    };
    let modules = resolve_modules(&manifest, modules)?;

    if is_delta {
        if !data_tree.is_empty() || data_files > 0 {
            return Err(BundleError::DeltaWithFiles("data".into()));
        }
        if !modules.is_empty() {
            return Err(BundleError::DeltaWithFiles("policy".into()));
        }
        if !wasm_paths.is_empty() {
            return Err(BundleError::DeltaWithFiles("wasm".into()));
        }
    }
    if let Some(c) = checker {
        c.finish()?;
    }

    let data = Value::Object(data_tree);
    validate_roots(
        &manifest,
        &modules,
        &wasm_paths,
        patch.as_ref(),
        &data,
        is_delta,
        opts.lazy_data,
    )?;

    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut modules: Vec<Module> = modules.into_iter().map(|(m, _)| m).collect();
    modules.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Bundle {
        manifest,
        data,
        modules,
        files,
        signatures,
        patch,
        verified_signature: verified,
    })
}

fn parse_patch(bytes: &[u8]) -> Result<Patch> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| BundleError::PatchDecode(e.to_string()))?;
    if let Value::Array(_) = value {
        // OPA's exact text for the common mistake of a bare array.
        return Err(BundleError::PatchDecode(
            "json: cannot unmarshal array into Go value of type bundle.Patch".to_string(),
        ));
    }
    serde_json::from_value(value).map_err(|e| BundleError::PatchDecode(e.to_string()))
}

/// Decodes a manifest file; a second manifest overwrites the fields it sets (as OPA).
fn merge_manifest(into: &mut Option<Map<String, Value>>, bytes: &[u8]) -> Result<()> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| BundleError::ManifestDecode(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(BundleError::ManifestDecode(
            "manifest is not a JSON object".to_string(),
        ));
    };
    // Validate the types now, so the error points at this file.
    serde_json::from_value::<Manifest>(Value::Object(fields.clone()))
        .map_err(|e| BundleError::ManifestDecode(e.to_string()))?;
    let target = into.get_or_insert_with(Map::new);
    for (k, v) in fields {
        target.insert(k, v);
    }
    Ok(())
}

/// Attaches each module's Rego version: `file_rego_versions` glob, then `rego_version`, then 1.
fn resolve_modules(
    manifest: &Manifest,
    modules: Vec<(String, String, PackagePath)>,
) -> Result<Vec<(Module, PackagePath)>> {
    let mut globs = Vec::new();
    if let Some(map) = &manifest.file_rego_versions {
        for (pattern, version) in map {
            let glob = globset::Glob::new(pattern)
                .map_err(|e| BundleError::BadGlob {
                    pattern: pattern.clone(),
                    message: e.to_string(),
                })?
                .compile_matcher();
            let version = version.as_i64().ok_or_else(|| {
                BundleError::ManifestDecode(format!(
                    "file_rego_versions[{pattern}] is not an integer"
                ))
            })?;
            globs.push((glob, version));
        }
    }
    modules
        .into_iter()
        .map(|(path, source, package)| {
            // OPA matches the archive path, which has a leading `/` in OPA-built bundles.
            let absolute = format!("/{path}");
            let version = globs
                .iter()
                .find(|(g, _)| g.is_match(&absolute) || g.is_match(&path))
                .map(|(_, v)| *v)
                .or(manifest.rego_version)
                .unwrap_or(1);
            if version != 0 && version != 1 {
                return Err(BundleError::UnknownRegoVersion {
                    version,
                    path: absolute,
                });
            }
            Ok((
                Module {
                    path,
                    source,
                    rego_version: version,
                },
                package,
            ))
        })
        .collect()
}

fn validate_roots(
    manifest: &Manifest,
    modules: &[(Module, PackagePath)],
    wasm_paths: &[String],
    patch: Option<&Patch>,
    data: &Value,
    is_delta: bool,
    lazy_data: bool,
) -> Result<()> {
    let roots = manifest.effective_roots();
    roots::check_overlaps(&roots)?;
    for (module, package) in modules {
        if !roots::root_paths_contain(&roots, &package.ptr()) {
            return Err(BundleError::ModuleOutsideRoots {
                roots: roots.clone(),
                package: package.display(),
                path: format!("/{}", module.path),
            });
        }
    }
    let mut seen_entrypoints = BTreeMap::new();
    for resolver in manifest.wasm.iter().flatten() {
        let module = resolver
            .get("module")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let entrypoint = resolver
            .get("entrypoint")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !wasm_paths
            .iter()
            .any(|p| p == module.trim_start_matches('/'))
        {
            return Err(BundleError::WasmModuleMissing(module.to_string()));
        }
        if !roots::root_paths_contain(&roots, entrypoint) {
            return Err(BundleError::WasmEntrypointOutsideRoots {
                roots: roots.clone(),
                entrypoint: entrypoint.to_string(),
                module: module.to_string(),
            });
        }
        if seen_entrypoints
            .insert(entrypoint.to_string(), ())
            .is_some()
        {
            return Err(BundleError::WasmEntrypointReused(entrypoint.to_string()));
        }
    }
    for op in patch.iter().flat_map(|p| &p.data) {
        let path = op.path.trim_matches('/');
        if !roots::root_paths_contain(&roots, path) {
            return Err(BundleError::PatchOutsideRoots {
                roots: roots.clone(),
                path: path.to_string(),
            });
        }
    }
    if !is_delta && !lazy_data {
        roots::check_data(&roots, data)?;
    }
    Ok(())
}
