//! OPA's own conformance cases for the builtins lockstep provides
//! (`tests/opa-conformance/`, copied from OPA's `v1/test/cases/testdata/v1/`; see its
//! README), evaluated by lockstep as OPA's test runner evaluates them: each case's
//! modules and data compiled, its query evaluated (with strict builtin errors when the
//! case says `strict_error`), and the bindings compared with `want_result`, or the
//! error's text with `want_error`.
//!
//! A case that calls a builtin lockstep does not provide is refused at compile time
//! (`unsupported builtin`), as every such bundle is: it is counted as unsupported,
//! not as passing. The per-folder counts are printed and kept in
//! `docs/opa-differences.md`; any case that neither passes nor is unsupported must be
//! listed in [`KNOWN`] with the reason.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::Path;

use lockstep_bundle::Module;
use lockstep_policy::{CompileOptions, PolicySet};
use serde_json::{Value, json};

/// Cases (by `note`) lockstep answers otherwise than OPA, with why.
const KNOWN: &[(&str, &str)] = &[];

#[derive(Debug, Default)]
struct Counts {
    pass: usize,
    unsupported: usize,
    fail: Vec<String>,
}

fn sorted(v: &Value) -> Value {
    let mut items: Vec<Value> = v.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|a| a.to_string());
    Value::Array(items)
}

/// Numbers compared by value (`1` and `1.0`).
fn normalise(v: &Value) -> Value {
    serde_json::from_str(&v.to_string()).unwrap()
}

/// `Ok` when the case passes, `Err(None)` when it calls an unsupported builtin, else
/// the failure.
fn run_case(case: &Value) -> Result<(), Option<String>> {
    let modules: Vec<Module> = case["modules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| Module {
            path: format!("mod{i}.rego"),
            source: m.as_str().unwrap().to_string(),
            rego_version: 1,
        })
        .collect();
    let data = case
        .get("data")
        .cloned()
        .filter(|d| !d.is_null())
        .unwrap_or(json!({}));
    let opts = CompileOptions {
        strict_builtin_errors: case["strict_error"].as_bool().unwrap_or(false),
        ..CompileOptions::default()
    };
    let want_error = case["want_error"].as_str();
    let policy = match PolicySet::compile(&modules, data, &opts) {
        Ok(p) => p,
        Err(e) => {
            let text = e.to_string();
            if text.contains("unsupported builtin") {
                return Err(None);
            }
            return match want_error {
                Some(w) if text.contains(w) => Ok(()),
                _ => Err(Some(format!("compile error: {text}"))),
            };
        }
    };
    let input = case.get("input").filter(|i| !i.is_null());
    let query = case["query"].as_str().unwrap();
    match policy.eval_query(query, input) {
        Ok(rs) => {
            if let Some(w) = want_error {
                return Err(Some(format!("want error {w:?}, got {:?}", rs.0.len())));
            }
            let got: Vec<Value> =
                rs.0.iter()
                    .map(|r| normalise(&Value::Object(r.bindings.clone())))
                    .collect();
            let want = normalise(&case["want_result"]);
            let want = if want.is_null() { json!([]) } else { want };
            if sorted(&Value::Array(got.clone())) == sorted(&want) {
                Ok(())
            } else {
                Err(Some(format!("want {want}, got {}", Value::Array(got))))
            }
        }
        Err(e) => {
            let text = e.to_string();
            let code_ok = case["want_error_code"]
                .as_str()
                .is_none_or(|c| e.diagnostic().is_some_and(|d| d.code == c));
            match want_error {
                Some(w) if text.contains(w) && code_ok => Ok(()),
                None if case.get("want_error_code").is_some() && code_ok => Ok(()),
                _ => Err(Some(format!("error: {text}"))),
            }
        }
    }
}

#[test]
fn opa_conformance_cases_for_provided_builtins() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/opa-conformance");
    let mut folders: BTreeMap<String, Counts> = BTreeMap::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no conformance folders under {root:?}");
    let mut unexpected = Vec::new();
    for dir in dirs {
        let folder = dir.file_name().unwrap().to_string_lossy().to_string();
        let counts = folders.entry(folder.clone()).or_default();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap())
                .unwrap_or_else(|e| panic!("{file:?}: {e}"));
            for case in doc["cases"].as_array().into_iter().flatten() {
                let note = case["note"].as_str().unwrap_or("?").to_string();
                match run_case(case) {
                    Ok(()) => counts.pass += 1,
                    Err(None) => counts.unsupported += 1,
                    Err(Some(why)) => {
                        counts.fail.push(note.clone());
                        if !KNOWN.iter().any(|(n, _)| *n == note) {
                            unexpected.push(format!("{note}: {why}"));
                        }
                    }
                }
            }
        }
    }
    for (folder, c) in &folders {
        eprintln!(
            "{folder}: {} pass, {} unsupported, {} known differences",
            c.pass,
            c.unsupported,
            c.fail.len()
        );
    }
    for (note, _) in KNOWN {
        assert!(
            folders.values().any(|c| c.fail.iter().any(|n| n == note)),
            "{note} is listed as a difference but now passes: update KNOWN and the docs"
        );
    }
    assert!(
        unexpected.is_empty(),
        "cases that differ from OPA:\n{}",
        unexpected.join("\n")
    );
}
