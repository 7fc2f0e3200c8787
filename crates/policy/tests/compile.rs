//! What PolicySet::compile accepts and refuses.
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
use lockstep_policy::{CompileError, CompileOptions, PolicySet};
use serde_json::{Value, json};

fn compile(modules: &[Module], data: Value) -> Result<PolicySet, CompileError> {
    PolicySet::compile(modules, data, &CompileOptions::default())
}

fn only_diag(err: &CompileError) -> String {
    assert_eq!(err.diagnostics().len(), 1, "{err}");
    err.diagnostics()[0].to_string()
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let err = compile(
        &[module(
            "mcp/bad.rego",
            "package mcp.bad\n\nallow if {\n\tinput.x ==\n}\n",
        )],
        json!({}),
    )
    .unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!(d.code, "rego_parse_error");
    let loc = d.location.as_ref().unwrap();
    assert_eq!((loc.file.as_str(), loc.row), ("mcp/bad.rego", 5), "{err}");
    assert!(
        err.to_string()
            .starts_with("1 error occurred: mcp/bad.rego:5:"),
        "{err}"
    );
}

#[test]
fn unsafe_variable_is_a_compile_error_even_on_an_unreached_branch() {
    // `input.enabled` is false for every request we would send, so only a
    // compile-time analysis can catch the unsafe `x`.
    let src = "package p\n\nallow if {\n\tinput.enabled\n\tx == 1\n}\n";
    let err = compile(&[module("p.rego", src)], json!({})).unwrap_err();
    assert_eq!(
        only_diag(&err),
        "p.rego:5:2: rego_unsafe_var_error: use of undefined variable `x` is unsafe"
    );
}

#[test]
fn undefined_function_is_a_compile_error_even_on_an_unreached_branch() {
    let src = "package p\n\nallow if {\n\tinput.enabled\n\tfoo.bar(input.x)\n}\n";
    let err = compile(&[module("p.rego", src)], json!({})).unwrap_err();
    assert_eq!(
        only_diag(&err),
        "p.rego:5:2: rego_type_error: undefined function foo.bar"
    );
}

#[test]
fn builtins_regorus_lacks_or_stubs_are_refused_with_every_call_site() {
    // crypto.sha256, io.jwt.decode and net.cidr_intersects are provided by lockstep
    // (src/builtins) and compile; the others stay refused.
    let src = r#"package p

resp := http.send({"method": "get", "url": "https://example.com"})

digest := crypto.sha256(input.x)

certs := crypto.x509.parse_certificates(input.pem)

meta := rego.metadata.rule()

overlap if net.cidr_intersects("10.0.0.0/8", input.cidr)

signed := io.jwt.encode_sign({"alg": "HS256"}, {}, {"kty": "oct", "k": "a2V5"})
"#;
    let err = compile(&[module("p.rego", src)], json!({})).unwrap_err();
    let lines: Vec<String> = err.diagnostics().iter().map(ToString::to_string).collect();
    let expect = [
        ("p.rego:3:9", "http.send"),
        ("p.rego:7:10", "crypto.x509.parse_certificates"),
        ("p.rego:9:9", "rego.metadata.rule"),
        ("p.rego:13:11", "io.jwt.encode_sign"),
    ];
    assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    for (line, (loc, name)) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(&format!(
                "{loc}: rego_type_error: unsupported builtin {name}:"
            )),
            "{line}"
        );
    }
}

#[test]
fn the_call_check_can_be_turned_off() {
    let src = "package p\n\ncerts := crypto.x509.parse_certificates(input.x)\n";
    let opts = CompileOptions {
        check_calls: false,
        ..CompileOptions::default()
    };
    assert!(PolicySet::compile(&[module("p.rego", src)], json!({}), &opts).is_ok());
}

#[test]
fn data_and_rule_at_the_same_path_is_refused_like_opa() {
    let src = "package mcp.roles\n\nanalyst := {\"tools\": []}\n";
    let err = compile(
        &[module("mcp/roles.rego", src)],
        json!({"mcp": {"roles": {"analyst": {"tools": ["x"]}}}}),
    )
    .unwrap_err();
    assert_eq!(
        only_diag(&err),
        "mcp/roles.rego:3:1: rego_compile_error: conflicting rule for data path mcp/roles/analyst found"
    );
}

#[test]
fn data_beside_rules_is_fine() {
    let (modules, data) = common::load_dir(&common::examples_dir());
    let policy = compile(&modules, data).unwrap();
    assert!(policy.packages().contains(&"data.mcp.decision".to_string()));
}

#[test]
fn v0_modules_compile_with_rego_version_0() {
    let src =
        "package legacy\n\nallow { input.user == \"alice\" }\n\nadmins[name] { name := \"bob\" }\n";
    let v0 = Module {
        path: "legacy.rego".into(),
        source: src.into(),
        rego_version: 0,
    };
    let policy = compile(std::slice::from_ref(&v0), json!({})).unwrap();
    assert!(policy.is_rego_v0());
    assert_eq!(
        policy
            .eval_rule("data.legacy.allow", Some(&json!({"user": "alice"})))
            .unwrap(),
        Some(json!(true))
    );
    assert_eq!(
        policy.eval_rule("data.legacy.admins", None).unwrap(),
        Some(json!(["bob"]))
    );

    // v1 parsing of the same text fails: `if` is required.
    let err = compile(
        &[Module {
            rego_version: 1,
            ..v0.clone()
        }],
        json!({}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("rego_parse_error"), "{err}");

    // And a bundle mixing both is refused.
    let err = compile(
        &[v0, module("new.rego", "package new\n\nx := 1\n")],
        json!({}),
    )
    .unwrap_err();
    assert!(
        matches!(err, CompileError::MixedRegoVersions { .. }),
        "{err}"
    );
}

#[test]
fn generated_rego_with_very_long_lines_loads() {
    let long = "x".repeat(5000);
    let src = format!("package gen\n\nvalue := \"{long}\"\n");
    let policy = compile(&[module("gen.rego", &src)], json!({})).unwrap();
    assert_eq!(
        policy.eval_rule("data.gen.value", None).unwrap(),
        Some(json!(long))
    );
}

#[test]
fn data_must_be_an_object() {
    let err = compile(&[], json!("nope")).unwrap_err();
    assert!(matches!(err, CompileError::Data(_)), "{err}");
}

#[test]
fn builtin_errors_are_undefined_as_in_opa() {
    let src = "package p\n\nn := to_number(\"abc\")\n\nok := true\n";
    let policy = compile(&[module("p.rego", src)], json!({})).unwrap();
    assert_eq!(policy.eval_rule("data.p.n", None).unwrap(), None);
    assert_eq!(
        policy.eval_data_path("data.p", None).unwrap(),
        Some(json!({"ok": true}))
    );
}
