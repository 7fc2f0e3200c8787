//! `with` mocks of the builtins lockstep provides (`src/builtins/mocks.rs`), as
//! `opa test` runs them: by a value, by a user function, by another builtin (either
//! way round), through a call in another package, and nested.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::module;
use lockstep_policy::testing::{Outcome, TestOptions, run_tests};
use lockstep_policy::{CompileOptions, PolicySet};
use serde_json::json;

/// The Envoy policy's shape: the bearer token's claims decide.
const POLICY: &str = r#"package authz

import rego.v1

claims := payload if {
  [_, payload, _] := io.jwt.decode(input.token)
}

default allow := false

allow if claims.role == "admin"

fingerprint := crypto.sha256(input.token)

upper_name := upper(input.name)
"#;

const TESTS: &str = r#"package authz_test

import data.authz

fake_decode(_) := [{}, {"role": "admin"}, ""]

test_value_mock if {
  authz.allow with input.token as "x" with io.jwt.decode as [{}, {"role": "admin"}, ""]
}

test_function_mock if {
  authz.allow with input.token as "x" with io.jwt.decode as fake_decode
}

test_unmocked_token_is_malformed if {
  not authz.allow with input.token as "not-a-token"
}

test_builtin_by_builtin if {
  authz.fingerprint == "900150983cd24fb0d6963f7d28e17f72" with input.token as "abc" with crypto.sha256 as crypto.md5
}

test_regorus_builtin_by_provided if {
  authz.upper_name == "0cc175b9c0f1b6a831c399e269772661" with input.name as "a" with upper as crypto.md5
}

test_provided_by_regorus_builtin if {
  authz.fingerprint == "ABC" with input.token as "abc" with crypto.sha256 as upper
}

# Deliberately wrong: the mock says "user", so allow is false.
test_mock_that_denies if {
  authz.allow with input.token as "x" with io.jwt.decode as [{}, {"role": "user"}, ""]
}
"#;

#[test]
fn provided_builtins_are_mocked_like_opa_mocks_them() {
    let modules = [
        module("authz.rego", POLICY),
        module("authz_test.rego", TESTS),
    ];
    let report = run_tests(&modules, &json!({}), &TestOptions::default()).unwrap();
    let outcome = |name: &str| {
        report
            .results
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name} in {report:#?}"))
            .outcome
            .clone()
    };
    for t in [
        "test_value_mock",
        "test_function_mock",
        "test_unmocked_token_is_malformed",
        "test_builtin_by_builtin",
        "test_regorus_builtin_by_provided",
        "test_provided_by_regorus_builtin",
    ] {
        assert_eq!(outcome(t), Outcome::Pass, "{t}: {report:#?}");
    }
    assert_eq!(outcome("test_mock_that_denies"), Outcome::Fail);
}

/// The rewrite changes nothing a decision sees: the policy decides the same with
/// its tests loaded (and so rewritten) as without.
#[test]
fn the_rewrite_keeps_decisions() {
    let opts = CompileOptions::default();
    let plain = PolicySet::compile(&[module("authz.rego", POLICY)], json!({}), &opts).unwrap();
    let rewritten = PolicySet::compile(
        &[
            module("authz.rego", POLICY),
            module("authz_test.rego", TESTS),
        ],
        json!({}),
        &opts,
    )
    .unwrap();
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYWRtaW4ifQ.sig";
    for q in [
        "data.authz.allow",
        "data.authz.fingerprint",
        "data.authz.claims",
    ] {
        let input = json!({"token": token, "name": "n"});
        let a = plain
            .eval_query(q, Some(&input))
            .unwrap()
            .into_first_value();
        let b = rewritten
            .eval_query(q, Some(&input))
            .unwrap()
            .into_first_value();
        assert_eq!(a, b, "{q}");
        assert!(a.is_some(), "{q} undefined");
    }
}
