//! The opa-test runner on small purpose-built modules.
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
use lockstep_policy::testing::{Counts, ExitPolicy, Outcome, TestOptions, TestReport, run_tests};
use regex::Regex;
use serde_json::json;

const POLICY: &str = r#"package app

default allow := false

allow if input.user == "alice"

x := 1 if input.conflict
x := 2 if input.conflict
"#;

fn run(modules: &[Module]) -> TestReport {
    run_tests(modules, &json!({}), &TestOptions::default()).unwrap()
}

fn outcome(report: &TestReport, name: &str) -> Outcome {
    report
        .results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no test {name} in {report:#?}"))
        .outcome
        .clone()
}

#[test]
fn pass_fail_error_and_skip_are_counted() {
    let tests = r#"package app_test

import data.app

test_alice_allowed if app.allow with input as {"user": "alice"}

# Deliberately wrong: bob is not allowed.
test_bob_allowed if app.allow with input as {"user": "bob"}

# Undefined is a failure too.
test_undefined if app.nothing_here

# Not `true`: a failure.
test_non_boolean := 7

# Two rules produce different values for x: an evaluation error.
test_conflict if app.x == 1 with input as {"conflict": true}

todo_test_later if false
"#;
    let report = run(&[module("app.rego", POLICY), module("app_test.rego", tests)]);
    assert_eq!(
        report.counts(),
        Counts {
            pass: 1,
            fail: 3,
            error: 1,
            skip: 1
        },
        "{report:#?}"
    );
    assert_eq!(outcome(&report, "test_alice_allowed"), Outcome::Pass);
    assert_eq!(outcome(&report, "test_bob_allowed"), Outcome::Fail);
    assert_eq!(outcome(&report, "test_undefined"), Outcome::Fail);
    assert_eq!(outcome(&report, "test_non_boolean"), Outcome::Fail);
    assert_eq!(outcome(&report, "todo_test_later"), Outcome::Skip);
    let Outcome::Error(err) = outcome(&report, "test_conflict") else {
        panic!("not an error")
    };
    assert_eq!(err.code, "eval_conflict_error", "{err}");
    assert_eq!(err.location.as_ref().unwrap().file, "app.rego");
    assert_eq!(report.exit_code(&ExitPolicy::default()), (2, None));

    let pretty = report.to_pretty(false);
    assert!(
        pretty.contains("data.app_test.test_bob_allowed: FAIL ("),
        "{pretty}"
    );
    assert!(
        pretty.contains("data.app_test.test_conflict: ERROR ("),
        "{pretty}"
    );
    assert!(
        pretty.contains("data.app_test.todo_test_later: SKIPPED\n"),
        "{pretty}"
    );
    assert!(
        pretty.ends_with("PASS: 1/6\nFAIL: 3/6\nSKIPPED: 1/6\nERROR: 1/6\n"),
        "{pretty}"
    );
    assert!(
        !pretty.contains("test_alice_allowed"),
        "passing tests are not listed without -v"
    );

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let conflict = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "test_conflict")
        .unwrap();
    assert_eq!(conflict["error"]["code"], "eval_conflict_error");
    assert_eq!(
        conflict["location"],
        json!({"file": "app_test.rego", "row": 17, "col": 1})
    );
}

#[test]
fn run_filter_matches_full_test_names() {
    let tests = "package app_test\n\ntest_a if true\ntest_b if true\ntest_ab if true\n";
    let modules = [module("t.rego", tests)];
    let opts = TestOptions {
        run: Some(Regex::new("test_a").unwrap()),
        ..TestOptions::default()
    };
    let report = run_tests(&modules, &json!({}), &opts).unwrap();
    let names: Vec<_> = report.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["test_a", "test_ab"]);

    let opts = TestOptions {
        run: Some(Regex::new(r"^data\.app_test\.test_b$").unwrap()),
        ..TestOptions::default()
    };
    let report = run_tests(&modules, &json!({}), &opts).unwrap();
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.results[0].name, "test_b");
}

#[test]
fn repeated_test_names_are_separate_tests_like_opa() {
    let tests = "package t\n\ntest_x if true\n\ntest_x if false\n\ntest_x if true\n";
    let report = run(&[module("t_test.rego", tests)]);
    let got: Vec<_> = report
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.location.row, r.outcome.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("test_x", 3, Outcome::Pass),
            ("test_x#01", 5, Outcome::Fail),
            ("test_x#02", 7, Outcome::Pass),
        ]
    );
}

#[test]
fn print_output_is_captured_per_test() {
    let tests = r#"package t

test_prints if {
	print("roles:", {"b", "a"})
	print("done")
}

test_silent if true
"#;
    let report = run(&[module("t_test.rego", tests)]);
    let printed = report
        .results
        .iter()
        .find(|r| r.name == "test_prints")
        .unwrap();
    assert_eq!(printed.output, "roles: {\"a\", \"b\"}\ndone\n");
    let silent = report
        .results
        .iter()
        .find(|r| r.name == "test_silent")
        .unwrap();
    assert_eq!(silent.output, "");
    let pretty = report.to_pretty(true);
    assert!(
        pretty.contains("test_prints: PASS (")
            && pretty.contains("\n\n  roles: {\"a\", \"b\"}\n  done\n\n"),
        "{pretty}"
    );
}

#[test]
fn builtin_and_function_mocks_work() {
    let policy = r#"package lib

greeting(name) := sprintf("hello %v", [name])

upper_greeting(name) := upper(greeting(name))

upper_qualified(name) := upper(data.lib.greeting(name))
"#;
    let tests = r#"package lib_test

import data.lib

fake_sprintf(_, args) := concat("+", args)
fake_greeting(_) := "mocked"

test_builtin_mock if lib.greeting("bob") == "bob" with sprintf as fake_sprintf
test_value_mock if lib.greeting("bob") == "fixed" with sprintf as "fixed"
test_function_mock if lib.upper_greeting("bob") == "MOCKED" with lib.greeting as fake_greeting
test_unmocked if lib.upper_greeting("bob") == "HELLO BOB"
test_direct_function_mock if lib.greeting("bob") == "mocked" with lib.greeting as fake_greeting
test_qualified_function_mock if lib.upper_qualified("bob") == "MOCKED" with lib.greeting as fake_greeting
"#;
    let report = run(&[module("lib.rego", policy), module("lib_test.rego", tests)]);
    assert_eq!(
        report.counts(),
        Counts {
            pass: 6,
            ..Counts::default()
        },
        "{}",
        report.to_pretty(true)
    );
}

#[test]
fn parametrised_tests_report_their_cases() {
    let tests = r#"package t

test_cases[note] if {
	some tc in [{"note": "one", "n": 1}, {"note": "two", "n": 2}]
	note := tc.note
	tc.n > 0
}
"#;
    let report = run(&[module("t_test.rego", tests)]);
    assert_eq!(report.results.len(), 1);
    let r = &report.results[0];
    assert_eq!(r.outcome, Outcome::Pass, "{r:#?}");
    let cases: Vec<_> = r
        .sub_results
        .iter()
        .map(|s| (s.name.as_str(), s.fail))
        .collect();
    assert_eq!(cases, vec![("one", false), ("two", false)]);
}

#[test]
fn no_tests_is_an_empty_report_that_fails_the_run() {
    let report = run(&[module("app.rego", POLICY)]);
    assert!(report.is_empty());
    assert_eq!(
        report.exit_code(&ExitPolicy::default()),
        (1, Some("no test cases found"))
    );
}

#[test]
fn tests_in_any_module_are_found() {
    // OPA runs test_ rules wherever they are, not only in *_test.rego files.
    let report = run(&[module(
        "policy.rego",
        "package p\n\nallow := true\n\ntest_inline if allow\n",
    )]);
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.results[0].outcome, Outcome::Pass);
}

#[test]
fn rego_v0_modules_run_with_rego_version_0() {
    let policy = "package v0\n\nallow { input.user == \"alice\" }\n\nroles[r] { r := \"admin\" }\n";
    let tests = "package v0_test\n\nimport data.v0\n\ntest_allow { v0.allow with input as {\"user\": \"alice\"} }\n\
                 test_roles { v0.roles[\"admin\"] }\n";
    let modules: Vec<Module> = [("v0.rego", policy), ("v0_test.rego", tests)]
        .iter()
        .map(|(p, s)| Module {
            path: (*p).into(),
            source: (*s).into(),
            rego_version: 0,
        })
        .collect();
    let report = run(&modules);
    assert_eq!(
        report.counts(),
        Counts {
            pass: 2,
            ..Counts::default()
        },
        "{report:#?}"
    );

    // The same sources parsed as v1 are refused.
    let as_v1: Vec<Module> = modules
        .iter()
        .map(|m| Module {
            rego_version: 1,
            ..m.clone()
        })
        .collect();
    let err = run_tests(&as_v1, &json!({}), &TestOptions::default()).unwrap_err();
    assert!(err.to_string().contains("rego_parse_error"), "{err}");
}

#[test]
fn a_compile_error_stops_the_run() {
    let err = run_tests(
        &[module(
            "t_test.rego",
            "package t\n\ntest_x if {\n\tcrypto.x509.parse_certificates(\"a\") == \"b\"\n}\n",
        )],
        &json!({}),
        &TestOptions::default(),
    )
    .unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!(d.location.as_ref().unwrap().to_string(), "t_test.rego:4:2");
    assert!(
        d.message
            .starts_with("unsupported builtin crypto.x509.parse_certificates"),
        "{d}"
    );
}

#[test]
fn a_slow_test_times_out_as_error() {
    // 10^8 iterations of the interpreter's loop: far longer than the limit.
    let tests = "package t\n\nr := numbers.range(1, 10000)\n\ntest_slow if {\n\tcount([1 | some x in r; some y in r; x == y]) > 0\n}\n";
    let opts = TestOptions {
        timeout: std::time::Duration::from_millis(50),
        ..TestOptions::default()
    };
    let report = run_tests(&[module("t_test.rego", tests)], &json!({}), &opts).unwrap();
    assert!(
        matches!(report.results[0].outcome, Outcome::Error(_)),
        "{report:#?}"
    );
}
