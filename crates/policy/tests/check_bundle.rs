//! `PolicySet::check_bundle` (what `lockstep build` runs) must refuse exactly what
//! `PolicySet::compile_bundle` (what an agent runs on activation) refuses, with the same
//! message, although it keeps only the data's keys down to the depth the rules reach.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_bundle::{BuildOptions, Bundle, build_bundle};
use lockstep_policy::{CompileOptions, PolicySet};

/// A bundle built (lazily, as `lockstep build` reads it) from `files`.
fn bundle(files: &[(&str, &str)]) -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    build_bundle(
        &[dir.path()],
        &BuildOptions {
            revision: Some("r".into()),
            lazy_data: true,
            ..BuildOptions::default()
        },
    )
    .unwrap()
}

/// Both verdicts, as `Ok(())` or the error's text.
fn verdicts(files: &[(&str, &str)]) -> (Result<(), String>, Result<(), String>) {
    let b = bundle(files);
    let opts = CompileOptions::default();
    let full = PolicySet::compile_bundle(&b, &opts)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let check = PolicySet::check_bundle(&b, &opts).map_err(|e| e.to_string());
    (full, check)
}

const RULES: &str = "package mcp.roles\n\nanalyst := {\"tools\": []}\n";

#[test]
fn a_clean_bundle_with_large_data_beside_the_rules_passes_both() {
    let mut inventory = String::from("{");
    for i in 0..5000 {
        inventory.push_str(&format!(
            r#""res-{i}": {{"owner": "t{i}", "tags": ["a", "b"], "nested": {{"deep": {{"x": {i}}}}}}},"#
        ));
    }
    inventory.push_str(r#""last": null}"#);
    let (full, check) = verdicts(&[
        ("mcp/roles.rego", RULES),
        ("mcp/inventory/data.json", &inventory),
        ("mcp/other/data.json", r#"{"admin": {"tools": ["x"]}}"#),
    ]);
    assert_eq!(full, Ok(()));
    assert_eq!(check, Ok(()));
}

#[test]
fn the_same_refusals_with_the_same_messages() {
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "data file at the rule's package sets the rule's path",
            vec![
                ("mcp/roles.rego", RULES),
                ("mcp/roles/data.json", r#"{"analyst": {"tools": ["a"]}}"#),
            ],
        ),
        (
            "data file above the package sets the rule's path",
            vec![
                ("mcp/roles.rego", RULES),
                ("mcp/data.json", r#"{"roles": {"analyst": 1, "admin": 2}}"#),
            ],
        ),
        (
            "a scalar above the rule's path",
            vec![
                ("mcp/roles.rego", RULES),
                ("mcp/data.json", r#"{"roles": 7}"#),
            ],
        ),
        (
            "data outside the manifest's roots",
            vec![
                ("mcp/roles.rego", RULES),
                (".manifest", r#"{"roots": ["mcp/roles", "mcp/commands"]}"#),
                ("mcp/inventory/data.json", r#"{"a": {"b": 1}}"#),
            ],
        ),
        (
            "data outside the roots, one level down",
            vec![
                ("mcp/roles.rego", RULES),
                (
                    ".manifest",
                    r#"{"roots": ["mcp/roles", "mcp/commands/read"]}"#,
                ),
                (
                    "mcp/commands/data.json",
                    r#"{"read": {}, "write": {"x": 1}}"#,
                ),
            ],
        ),
        (
            "two data files that meet below an object",
            vec![
                ("mcp/roles.rego", RULES),
                ("data.json", r#"{"mcp": {"inventory": {"a": {"deep": 1}}}}"#),
                ("mcp/inventory/a/data.json", r#"{"deep": 2}"#),
            ],
        ),
    ];
    for (what, files) in cases {
        let (full, check) = verdicts(&files);
        assert!(full.is_err(), "{what}: compile_bundle accepted it");
        assert_eq!(check, full, "{what}");
    }
}

#[test]
fn data_files_that_merge_cleanly_pass_both() {
    let (full, check) = verdicts(&[
        ("mcp/roles.rego", RULES),
        ("data.json", r#"{"mcp": {"inventory": {"a": {"x": 1}}}}"#),
        ("mcp/inventory/a/data.json", r#"{"y": 2}"#),
        (".manifest", r#"{"roots": ["mcp"]}"#),
    ]);
    assert_eq!(full, Ok(()));
    assert_eq!(check, Ok(()));
}
