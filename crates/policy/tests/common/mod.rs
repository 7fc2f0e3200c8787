//! A tiny directory loader for tests (the real one lives in lockstep-bundle):
//! `*.rego` files become modules, each `data.json` is placed at the data path
//! of its directory, `.manifest`'s `rego_version` applies to every module.
// Test helpers shared by several test crates (each uses a part of them); they fail
// loudly, like the tests that call them.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod opa;

use std::path::{Path, PathBuf};

use lockstep_bundle::Module;
use serde_json::{Map, Value};

pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

pub fn load_dir(root: &Path) -> (Vec<Module>, Value) {
    let version = std::fs::read_to_string(root.join(".manifest"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|m| m["rego_version"].as_i64())
        .unwrap_or(1);
    let mut modules = Vec::new();
    let mut data = Value::Object(Map::new());
    walk(root, root, version, &mut modules, &mut data);
    modules.sort_by(|a, b| a.path.cmp(&b.path));
    (modules, data)
}

fn walk(root: &Path, dir: &Path, version: i64, modules: &mut Vec<Module>, data: &mut Value) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(root, &path, version, modules, data);
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.ends_with(".rego") {
            modules.push(Module {
                path: rel,
                source: std::fs::read_to_string(&path).unwrap(),
                rego_version: version,
            });
        } else if path.file_name().unwrap() == "data.json" {
            let value: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let mut node = &mut *data;
            let parent = path.parent().unwrap().strip_prefix(root).unwrap();
            for comp in parent.components() {
                let key = comp.as_os_str().to_string_lossy().to_string();
                node = node
                    .as_object_mut()
                    .unwrap()
                    .entry(key)
                    .or_insert_with(|| Value::Object(Map::new()));
            }
            *node = value;
        }
    }
}

pub fn module(path: &str, source: &str) -> Module {
    Module {
        path: path.into(),
        source: source.into(),
        rego_version: 1,
    }
}
