//! Differential test: lockstep's decisions on the example policies must equal OPA's,
//! computed by OPA's own Go evaluator (`libopabridge.so` from the PyPI package
//! `opa-golib-python-bindings`, driven by `tests/differential/opa_eval.py`).
//!
//! The library path comes from `OPA_GOLIB_LIB`; without it the test fetches the wheel
//! itself through `scripts/fetch-opa-golib.sh` (pip download), so it never silently skips.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lockstep_policy::{CompileOptions, PolicySet};
use serde_json::{Map, Value, json};

const INPUTS: usize = 400;

const QUERIES: &[&str] = &[
    "data.mcp.tool_access.allow",
    "data.mcp.tool_access.deny_reason",
    "data.mcp.command_scope.allow",
    "data.mcp.command_scope.deny_reason",
    "data.mcp.resource_access.allow",
    "data.mcp.resource_access.deny_reason",
    "data.mcp.decision.allow",
    "data.mcp.decision.reasons",
    "data.mcp.decision",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn opa_lib() -> PathBuf {
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

/// Deterministic xorshift, so a failure reproduces exactly.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// One of `choices`, or `None` (field absent) for the last slot.
    fn pick<'a>(&mut self, choices: &[&'a str]) -> Option<&'a str> {
        let i = (self.next() % (choices.len() as u64 + 1)) as usize;
        choices.get(i).copied()
    }
}

fn put(obj: &mut Map<String, Value>, key: &str, v: Option<&str>) {
    if let Some(v) = v {
        obj.insert(key.into(), Value::String(v.into()));
    }
}

/// Inputs that reach every branch of every layer: known and unknown roles and tools,
/// matching and non-matching targets, write operations under read-only scopes,
/// granted and refused databases, paths and hosts, and missing fields.
fn generate_inputs(n: usize) -> Vec<Value> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            let mut agent = Map::new();
            put(&mut agent, "id", Some("agent-1"));
            put(
                &mut agent,
                "role",
                rng.pick(&["analyst", "admin", "auditor", "intern", ""]),
            );
            put(&mut agent, "scope", rng.pick(&["read-only", "read-write"]));
            let mut params = Map::new();
            put(
                &mut params,
                "target",
                rng.pick(&[
                    "users",
                    "Users",
                    "select * from t",
                    "SELECT a FROM b",
                    "select 1; drop table x",
                    "/srv/app/data.csv",
                    "/etc/passwd",
                    "../../x",
                    "",
                ]),
            );
            put(
                &mut params,
                "operation",
                rng.pick(&["read", "write", "delete", "update", "list"]),
            );
            put(
                &mut params,
                "database",
                rng.pick(&[
                    "analytics",
                    "reporting",
                    "audit_2024",
                    "audit.x",
                    "prod",
                    "*",
                ]),
            );
            put(
                &mut params,
                "path",
                rng.pick(&[
                    "/srv/app/data.csv",
                    "/srv/a/b/c",
                    "/var/log/audit/a.log",
                    "/etc/shadow",
                ]),
            );
            put(
                &mut params,
                "host",
                rng.pick(&[
                    "db.internal.example.com",
                    "a.b.internal.example.com",
                    "evil.com",
                ]),
            );
            let mut request = Map::new();
            put(&mut request, "method", Some("tools/call"));
            put(
                &mut request,
                "tool",
                rng.pick(&[
                    "read_database",
                    "run_query",
                    "write_database",
                    "read_file",
                    "rm_rf",
                ]),
            );
            if rng.next() % 8 != 0 {
                request.insert("params".into(), Value::Object(params));
            }
            let mut input = Map::new();
            if rng.next() % 16 != 0 {
                input.insert("agent".into(), Value::Object(agent));
            }
            input.insert("request".into(), Value::Object(request));
            Value::Object(input)
        })
        .collect()
}

/// The example bundle as OPA would load it: every `.rego` module and every
/// `data.json`/`data.yaml` at its directory's data path.
fn load_examples() -> (Vec<lockstep_bundle::Module>, Value) {
    let dir = repo_root().join("examples/policies");
    let bundle =
        lockstep_bundle::reader::read_dir(&dir, &lockstep_bundle::reader::ReadOptions::default())
            .expect("read examples/policies");
    (bundle.modules, bundle.data)
}

fn opa_results(
    modules: &[lockstep_bundle::Module],
    data: &Value,
    inputs: &[Value],
) -> Vec<Vec<Value>> {
    let request = json!({
        "modules": modules.iter().map(|m| json!({"path": m.path, "source": m.source})).collect::<Vec<_>>(),
        "data": data,
        "queries": QUERIES,
        "inputs": inputs,
    });
    let script = repo_root().join("tests/differential/opa_eval.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(opa_lib())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "OPA evaluator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(v["results"].clone()).unwrap()
}

/// lockstep's answer in the same shape as `opa_eval.py` gives OPA's.
fn lockstep_result(policy: &PolicySet, query: &str, input: &Value) -> Value {
    match policy.eval_query(query, Some(input)) {
        Ok(rs) => match rs.into_first_value() {
            Some(v) => json!({ "value": v }),
            None => json!({ "undefined": true }),
        },
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// Numbers are compared by value: both sides print them as JSON, but the text
/// of a number (`1` vs `1.0`) is not part of a decision.
fn normalise(v: &Value) -> Value {
    serde_json::from_str::<Value>(&v.to_string()).unwrap()
}

#[test]
fn example_policies_decide_like_opa() {
    let (modules, data) = load_examples();
    let policy = PolicySet::compile(&modules, data.clone(), &CompileOptions::default())
        .expect("compile examples");
    let inputs = generate_inputs(INPUTS);
    let opa = opa_results(&modules, &data, &inputs);
    assert_eq!(opa.len(), inputs.len());

    let mut compared = 0;
    let mut allowed = 0;
    let mut mismatches = Vec::new();
    for (input, row) in inputs.iter().zip(&opa) {
        for (query, want) in QUERIES.iter().zip(row) {
            assert!(
                want.get("error").is_none(),
                "OPA errored on {query} for {input}: {want}"
            );
            let got = lockstep_result(&policy, query, input);
            if normalise(&got) != normalise(want) {
                mismatches.push(format!(
                    "{query} input={input}\n  opa:      {want}\n  lockstep: {got}"
                ));
            }
            if *query == "data.mcp.decision.allow" && want["value"] == json!(true) {
                allowed += 1;
            }
            compared += 1;
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} decisions differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!(compared, INPUTS * QUERIES.len());
    // The generator must exercise both outcomes, or equality proves little.
    assert!(
        allowed > 10 && allowed < INPUTS - 10,
        "only {allowed} of {INPUTS} inputs allowed"
    );
}
