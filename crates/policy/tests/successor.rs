//! `PolicySet::compile_document_after`: a revision that changes only data starts from
//! its predecessor's loaded modules, and decides exactly as a fresh compilation would.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::module;
use lockstep_bundle::Module;
use lockstep_policy::{CompileError, CompileOptions, DataDocument, MemoStatus, PolicySet};
use serde_json::{Value, json};

const POLICY: &str = "package mcp.tools\n\nallow if input.tool in data.mcp.allowed[input.role]\n";

fn modules(source: &str) -> Vec<Module> {
    vec![module("mcp/tools.rego", source)]
}

fn doc(v: Value) -> DataDocument {
    DataDocument::from_json(&v).unwrap()
}

fn allowed(p: &PolicySet, role: &str, tool: &str) -> Option<Value> {
    p.eval_data_path(
        "data.mcp.tools.allow",
        Some(&json!({"role": role, "tool": tool})),
    )
    .unwrap()
}

/// `source` with `data`, compiled after `previous` with the default options.
fn after(previous: &PolicySet, source: &str, data: Value) -> Result<PolicySet, CompileError> {
    PolicySet::compile_document_after(
        previous,
        &modules(source),
        doc(data),
        &CompileOptions::default(),
    )
}

fn strict() -> CompileOptions {
    CompileOptions {
        strict_builtin_errors: true,
        ..CompileOptions::default()
    }
}

fn first() -> PolicySet {
    PolicySet::compile_document(
        &modules(POLICY),
        doc(json!({"mcp": {"allowed": {"analyst": ["run_query"]}}})),
        &CompileOptions::default(),
    )
    .unwrap()
}

#[test]
fn a_data_only_successor_reuses_the_modules_and_decides_by_its_own_data() {
    let v1 = first();
    assert_eq!(allowed(&v1, "analyst", "run_query"), Some(json!(true)));
    let data = json!({"mcp": {"allowed": {"analyst": ["list_tables"]}}});
    let v2 = after(&v1, POLICY, data.clone()).unwrap();
    assert!(v2.shares_modules_with(&v1));
    let fresh =
        PolicySet::compile_document(&modules(POLICY), doc(data), &CompileOptions::default())
            .unwrap();
    for (role, tool) in [
        ("analyst", "run_query"),
        ("analyst", "list_tables"),
        ("admin", "list_tables"),
    ] {
        assert_eq!(
            allowed(&v2, role, tool),
            allowed(&fresh, role, tool),
            "{role} {tool}"
        );
    }
    assert_eq!(allowed(&v2, "analyst", "run_query"), None);
    assert_eq!(allowed(&v2, "analyst", "list_tables"), Some(json!(true)));
    // The predecessor is untouched: its engine never saw the new data.
    assert_eq!(allowed(&v1, "analyst", "run_query"), Some(json!(true)));
    assert_eq!(allowed(&v1, "analyst", "list_tables"), None);
    // The memo analysis is the modules', the same for both.
    assert!(matches!(
        v2.memo_status("data.mcp.tools.allow"),
        MemoStatus::On { .. }
    ));
    assert_eq!(
        v2.memo_status("data.mcp.tools.allow"),
        v1.memo_status("data.mcp.tools.allow")
    );
}

#[test]
fn changed_modules_or_settings_are_compiled_again() {
    let v1 = first();
    let data = json!({"mcp": {"allowed": {"analyst": ["run_query"]}}});
    let edited = "package mcp.tools\n\nallow if input.role == \"admin\"\n";
    let v2 = after(&v1, edited, data.clone()).unwrap();
    assert!(!v2.shares_modules_with(&v1));
    assert_eq!(allowed(&v2, "analyst", "run_query"), None);
    assert_eq!(allowed(&v2, "admin", "anything"), Some(json!(true)));

    let strict = strict();
    let v3 = PolicySet::compile_document_after(&v1, &modules(POLICY), doc(data), &strict).unwrap();
    assert!(!v3.shares_modules_with(&v1));
}

#[test]
fn new_data_is_still_checked_against_the_rules_paths() {
    let v1 = first();
    // data.mcp.tools.allow is a rule: data may not set it (OPA's rego_compile_error).
    let err = after(&v1, POLICY, json!({"mcp": {"tools": {"allow": false}}})).unwrap_err();
    assert!(
        err.to_string().contains("mcp/tools/allow") || err.to_string().contains("mcp.tools.allow"),
        "{err}"
    );
    // A refusal leaves the predecessor deciding as before.
    assert_eq!(allowed(&v1, "analyst", "run_query"), Some(json!(true)));
}

#[test]
fn evaluation_errors_of_a_successor_keep_their_columns() {
    let source = "package mcp.tools\n\nallow if {\n\tx := data.mcp.allowed\n\tx.a == 1\n\tto_number(input.n) > 0\n}\n";
    let strict = strict();
    let v1 = PolicySet::compile_document(&modules(source), doc(json!({})), &strict).unwrap();
    let v2 = PolicySet::compile_document_after(
        &v1,
        &modules(source),
        doc(json!({"mcp": {"allowed": {"a": 1}}})),
        &strict,
    )
    .unwrap();
    assert!(v2.shares_modules_with(&v1));
    let err = v2
        .eval_data_path("data.mcp.tools.allow", Some(&json!({"n": "x"})))
        .unwrap_err();
    assert!(err.to_string().contains("mcp/tools.rego:6"), "{err}");
}
