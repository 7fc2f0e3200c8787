//! `regex.*` and `glob.match` (lockstep's shared compiled matchers, src/matchers.rs)
//! against OPA's own evaluator on a table of patterns, invalid ones included. The
//! bridge evaluates with strict builtin errors, so lockstep does too here; the
//! non-strict side (errors are undefined) is held to regorus's own builtins by the
//! unit tests in src/matchers.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::opa;
use lockstep_bundle::Module;
use lockstep_policy::{CompileOptions, PolicySet};
use serde_json::{Value, json};

const MODULE: &str = "package t

regex_match := regex.match(input.a[0], input.a[1])

regex_find_n := regex.find_n(input.a[0], input.a[1], input.a[2])

regex_find_all_string_submatch_n := regex.find_all_string_submatch_n(input.a[0], input.a[1], input.a[2])

regex_split := regex.split(input.a[0], input.a[1])

regex_replace := regex.replace(input.a[0], input.a[1], input.a[2])

glob_match := glob.match(input.a[0], input.a[1], input.a[2])
";

/// The table's cases where regorus's builtins (and so lockstep) answer differently
/// from OPA: (function, arguments as JSON text, OPA's outcome, lockstep's outcome).
/// Each is listed in docs/opa-differences.md. If one disappears or a new one
/// appears, this test fails, and the documentation must follow.
const KNOWN: &[(&str, &str, &str, &str)] = &[
    // Go's \d and \w are ASCII; Rust's regex crate's are Unicode.
    ("regex.match", r#"["^\\d$","٣"]"#, "false", "true"),
    ("regex.match", r#"["^\\w+$","naïve"]"#, "false", "true"),
    // RE2 refuses a repeated repetition; Rust's regex crate accepts it.
    ("regex.match", r#"["a**","a"]"#, "error", "true"),
    // gobwas/glob (OPA) and globset (regorus) parse globs differently.
    ("glob.match", r#"["{a,b",["."],"a"]"#, "true", "error"),
    ("glob.match", r#"["a**b",["."],"a.x.b"]"#, "true", "false"),
    // regorus's delimiter rewriting uses NUL as a placeholder.
    (
        "glob.match",
        r#"["*.com",["."],"a\u0000.com"]"#,
        "true",
        "error",
    ),
];

#[test]
fn shared_matchers_decide_like_opa() {
    let cases: Vec<Value> = serde_json::from_str(include_str!("data/matcher_cases.json")).unwrap();
    let module = Module {
        path: "t.rego".into(),
        source: MODULE.into(),
        rego_version: 1,
    };
    let opts = CompileOptions {
        strict_builtin_errors: true,
        ..CompileOptions::default()
    };
    let policy = PolicySet::compile(std::slice::from_ref(&module), json!({}), &opts).unwrap();
    let inputs: Vec<Value> = cases.iter().map(|c| json!({"a": c["args"]})).collect();
    let rules: Vec<String> = cases
        .iter()
        .map(|c| format!("data.t.{}", c["f"].as_str().unwrap().replace('.', "_")))
        .collect();
    let mut queries: Vec<&str> = rules.iter().map(String::as_str).collect();
    queries.sort_unstable();
    queries.dedup();
    let opa = opa::eval(std::slice::from_ref(&module), &json!({}), &queries, &inputs);

    let mut differences = Vec::new();
    for ((case, input), (rule, row)) in cases.iter().zip(&inputs).zip(rules.iter().zip(&opa)) {
        let want = &row[queries.iter().position(|q| *q == rule.as_str()).unwrap()];
        let got = match policy.eval_rule(rule, Some(input)) {
            Ok(Some(v)) => json!({ "value": v }),
            Ok(None) => json!({ "undefined": true }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        let (want, got) = (opa::kind(want), opa::kind(&got));
        if want != got {
            differences.push((
                case["f"].as_str().unwrap().to_string(),
                case["args"].to_string(),
                want,
                got,
            ));
        }
    }
    let known: Vec<(String, String, String, String)> = KNOWN
        .iter()
        .map(|(f, a, w, g)| (f.to_string(), a.to_string(), w.to_string(), g.to_string()))
        .collect();
    assert_eq!(
        differences,
        known,
        "differences from OPA changed:\n{}",
        differences
            .iter()
            .map(|d| format!("    ({:?}, {:?}, {:?}, {:?}),", d.0, d.1, d.2, d.3))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
