//! OPA's own evaluator (`libopabridge.so` from PyPI `opa-golib-python-bindings`),
//! driven by `tests/differential/opa_eval.py`, as in the CLI's differential test.
//! The library comes from `OPA_GOLIB_LIB`, or `scripts/fetch-opa-golib.sh` fetches
//! it: these tests never skip silently.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lockstep_bundle::Module;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn lib() -> PathBuf {
    if let Ok(p) = std::env::var("OPA_GOLIB_LIB") {
        return PathBuf::from(p);
    }
    let out = Command::new(repo_root().join("scripts/fetch-opa-golib.sh"))
        .output()
        .expect("run scripts/fetch-opa-golib.sh");
    assert!(
        out.status.success(),
        "fetching opa-golib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Per input, per query: `{"value": v}`, `{"undefined": true}` or `{"error": ...}`.
/// The bridge evaluates with strict builtin errors.
pub fn eval(
    modules: &[Module],
    data: &Value,
    queries: &[&str],
    inputs: &[Value],
) -> Vec<Vec<Value>> {
    let request = json!({
        "modules": modules.iter().map(|m| json!({"path": m.path, "source": m.source})).collect::<Vec<_>>(),
        "data": data,
        "queries": queries,
        "inputs": inputs,
    });
    let mut child = Command::new("python3")
        .arg(repo_root().join("tests/differential/opa_eval.py"))
        .arg(lib())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut stdin = child.stdin.take().unwrap();
    let body = request.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "OPA evaluator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(v["results"].clone()).unwrap()
}

/// Numbers compared by value (`1` and `1.0` are one number).
pub fn normalise(v: &Value) -> Value {
    serde_json::from_str::<Value>(&v.to_string()).unwrap()
}

/// An outcome as the differential tests compare it: `error`, `undefined`, or the value
/// (numbers normalised).
pub fn kind(v: &Value) -> String {
    if v.get("error").is_some() {
        "error".to_string()
    } else if v.get("undefined").is_some() {
        "undefined".to_string()
    } else {
        normalise(&v["value"]).to_string()
    }
}
