//! Evaluation on the example policy set: result shapes, data paths, the
//! bytecode VM against the interpreter, snapshots.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use lockstep_policy::{
    Backend, CompileOptions, EvalError, Input, PolicyHandle, PolicySet, Snapshot,
};
use serde_json::{Value, json};

fn examples() -> PolicySet {
    let (modules, data) = common::load_dir(&common::examples_dir());
    PolicySet::compile(&modules, data, &CompileOptions::default()).unwrap()
}

fn request(role: &str, tool: &str, params: Value) -> Value {
    json!({"agent": {"role": role}, "request": {"tool": tool, "params": params}})
}

#[test]
fn query_results_have_opas_shape() {
    let policy = examples();
    let input = request("analyst", "read_database", json!({}));
    let rs = policy
        .eval_query("data.mcp.tool_access.allow", Some(&input))
        .unwrap();
    assert_eq!(
        serde_json::to_value(&rs).unwrap(),
        json!([{"expressions": [{"value": true, "text": "data.mcp.tool_access.allow",
                                 "location": {"row": 1, "col": 1}}]}])
    );
    assert_eq!(
        rs.to_eval_output(),
        json!({"result": [{"expressions": [{"value": true, "text": "data.mcp.tool_access.allow",
                                            "location": {"row": 1, "col": 1}}]}]})
    );

    // Bindings: one result per way the query is satisfied.
    let rs = policy
        .eval_query(
            "some role; data.mcp.roles[role].scope == \"read-only\"",
            None,
        )
        .unwrap();
    assert_eq!(rs.0.len(), 1);
    assert_eq!(rs.0[0].bindings.get("role"), Some(&json!("auditor")));
    assert_eq!(rs.0[0].expressions.len(), 2);

    // Undefined: an empty set, and `{}` from `opa eval`.
    let rs = policy
        .eval_query("data.mcp.tool_access.deny_reason", Some(&input))
        .unwrap();
    assert!(rs.is_empty());
    assert_eq!(rs.to_eval_output(), json!({}));
    assert_eq!(serde_json::to_string(&rs).unwrap(), "[]");

    // No input at all: `input` is undefined, as in OPA.
    assert!(policy.eval_query("input", None).unwrap().is_empty());
}

#[test]
fn rules_packages_and_data_paths() {
    let policy = examples();
    let denied = request(
        "analyst",
        "write_database",
        json!({"target": "orders", "operation": "write"}),
    );

    assert_eq!(
        policy
            .eval_rule("data.mcp.tool_access.allow", Some(&denied))
            .unwrap(),
        Some(json!(false))
    );
    assert_eq!(
        policy
            .eval_rule("data.mcp.tool_access.deny_reason", Some(&denied))
            .unwrap(),
        Some(json!(
            "role 'analyst' has no access to tool 'write_database'"
        ))
    );
    let allowed = request("analyst", "read_database", json!({}));
    assert_eq!(
        policy
            .eval_rule("data.mcp.tool_access.deny_reason", Some(&allowed))
            .unwrap(),
        None
    );

    // A package: every rule of it, as OPA's GET /v1/data/mcp/tool_access.
    assert_eq!(
        policy
            .eval_data_path("data.mcp.tool_access", Some(&denied))
            .unwrap(),
        Some(
            json!({"allow": false, "deny_reason": "role 'analyst' has no access to tool 'write_database'"})
        )
    );
    // The combined decision in one query; sets come back as sorted arrays.
    assert_eq!(
        policy
            .eval_data_path("data.mcp.decision", Some(&denied))
            .unwrap(),
        Some(json!({
            "allow": false,
            "reasons": ["role 'analyst' has no access to tool 'write_database'"],
            "well_formed": true
        }))
    );
    // Plain data.
    assert_eq!(
        policy
            .eval_data_path("data.mcp.roles.auditor.scope", None)
            .unwrap(),
        Some(json!("read-only"))
    );
    assert_eq!(
        policy.eval_data_path("data.mcp.nothing", None).unwrap(),
        None
    );
}

#[test]
fn query_errors_are_the_callers() {
    let policy = examples();
    let err = policy.eval_query("data.mcp[", None).unwrap_err();
    assert!(matches!(err, EvalError::Query(_)), "{err}");
    let err = policy.eval_query("x == 1", None).unwrap_err();
    assert!(matches!(err, EvalError::Query(_)), "{err}");
}

#[test]
fn evaluation_errors_are_reported_not_panicked() {
    let src = "package p\n\nx := 1 if input.a\nx := 2 if input.b\n";
    let policy = PolicySet::compile(
        &[common::module("p.rego", src)],
        json!({}),
        &CompileOptions::default(),
    )
    .unwrap();
    let err = policy
        .eval_rule("data.p.x", Some(&json!({"a": true, "b": true})))
        .unwrap_err();
    let d = err.diagnostic().unwrap();
    assert_eq!(d.code, "eval_conflict_error", "{err}");
    assert_eq!(d.location.as_ref().unwrap().file, "p.rego");
    assert_eq!(
        policy
            .eval_rule("data.p.x", Some(&json!({"a": true})))
            .unwrap(),
        Some(json!(1))
    );
}

/// A few hundred requests covering every branch of the three layers.
fn generated_inputs() -> Vec<Value> {
    let roles = [
        json!("analyst"),
        json!("admin"),
        json!("auditor"),
        json!("intern"),
        Value::Null,
        json!(42),
    ];
    let tools = [
        json!("read_database"),
        json!("run_query"),
        json!("write_database"),
        json!("read_file"),
        json!("shell_exec"),
        Value::Null,
    ];
    let targets = [
        json!("orders"),
        json!("orders; drop table users"),
        json!("SELECT * FROM orders"),
        json!("DELETE FROM orders"),
        json!("/var/log/audit/2026/01.log"),
        Value::Null,
        json!(7),
    ];
    let ops = [
        json!("read"),
        json!("write"),
        json!("delete"),
        json!("update"),
        Value::Null,
    ];
    let scopes = [json!("read-only"), json!("read-write"), Value::Null];
    let databases = [
        json!("analytics"),
        json!("payroll"),
        json!("audit_2026"),
        Value::Null,
        json!(5),
    ];
    let paths = [
        json!("/srv/app/x"),
        json!("/var/log/audit/2026/1.log"),
        json!("/etc/shadow"),
        Value::Null,
    ];
    let hosts = [
        json!("db.internal.example.com"),
        json!("example.org"),
        Value::Null,
    ];

    // A fixed linear congruential generator: reproducible, no dependency.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut pick = |n: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(state >> 33).unwrap() % n
    };
    let mut out = Vec::new();
    for _ in 0..400 {
        let mut agent = serde_json::Map::new();
        let mut params = serde_json::Map::new();
        let mut req = serde_json::Map::new();
        let set = |m: &mut serde_json::Map<String, Value>, k: &str, v: &Value| {
            if !v.is_null() {
                m.insert(k.to_string(), v.clone());
            }
        };
        set(&mut agent, "role", &roles[pick(roles.len())]);
        set(&mut agent, "scope", &scopes[pick(scopes.len())]);
        set(&mut req, "tool", &tools[pick(tools.len())]);
        set(&mut params, "target", &targets[pick(targets.len())]);
        set(&mut params, "operation", &ops[pick(ops.len())]);
        set(&mut params, "database", &databases[pick(databases.len())]);
        set(&mut params, "path", &paths[pick(paths.len())]);
        set(&mut params, "host", &hosts[pick(hosts.len())]);
        req.insert("params".into(), Value::Object(params));
        out.push(json!({"agent": agent, "request": req}));
    }
    // Random requests rarely pass all three layers: add some that do.
    out.extend([
        request(
            "analyst",
            "read_database",
            json!({"target": "orders", "operation": "read", "database": "analytics"}),
        ),
        request(
            "analyst",
            "run_query",
            json!({"target": "select 1", "database": "reporting"}),
        ),
        request(
            "admin",
            "write_database",
            json!({"target": "orders", "operation": "write", "path": "/srv/db/x"}),
        ),
        request(
            "auditor",
            "read_file",
            json!({"target": "/var/log/audit/a.log", "path": "/var/log/audit/a.log"}),
        ),
    ]);
    out
}

#[test]
fn bytecode_vm_is_used_only_where_it_agrees_with_the_interpreter() {
    let policy = examples();
    let inputs: Vec<Input> = generated_inputs()
        .iter()
        .map(|i| Input::from_json(i).unwrap())
        .collect();
    let (probes, rest) = inputs.split_at(100);
    let entrypoints = [
        "data.mcp.decision",
        "data.mcp.decision.allow",
        "data.mcp.decision.reasons",
        "data.mcp.tool_access.allow",
        "data.mcp.tool_access.deny_reason",
        "data.mcp.tool_access",
        "data.mcp.command_scope.allow",
        "data.mcp.command_scope.deny_reason",
        "data.mcp.resource_access.allow",
        "data.mcp.resource_access.deny_reason",
    ];
    let mut on_rvm = Vec::new();
    let mut allowed = 0;
    for entrypoint in entrypoints {
        let fast = policy.decision_fn_rvm(entrypoint, probes);
        if fast.backend() == &Backend::Rvm {
            on_rvm.push(entrypoint);
        }
        let reference = policy.decision_fn(entrypoint);
        // Held-out requests: the probes passed, the rest must agree too.
        for input in rest {
            let a = fast.eval(input).unwrap();
            let b = reference.eval(input).unwrap();
            assert_eq!(
                a,
                b,
                "{entrypoint} ({:?}) differs for {input:?}",
                fast.backend()
            );
            if entrypoint == "data.mcp.decision" {
                let d = a.unwrap();
                let reasons = d["reasons"].as_array().map_or(0, Vec::len);
                // Every denial is explained; an allowed request has no reason.
                assert_eq!(d["allow"] == json!(true), reasons == 0, "{d}");
                if d["allow"] == json!(true) {
                    allowed += 1;
                }
            }
        }
    }
    // The generator reaches both outcomes.
    assert!(
        allowed > 0 && allowed < rest.len(),
        "allowed {allowed} of {}",
        rest.len()
    );
    // Every entrypoint runs on the RVM. The layers binding possibly-undefined values
    // (`x := data.a[input.b]`) used to disagree on these probes and stay interpreted:
    // the RVM compiles them as `x = ...`, which it guards (issue 10).
    assert_eq!(on_rvm, entrypoints, "{on_rvm:?}");
}

/// regorus 0.14.1's RVM does not fail a body when `:=` binds an undefined value
/// (docs/opa-differences.md). lockstep compiles such an `x := e` as `x = e` for the
/// RVM, which guards it, so the RVM is used and decides like the interpreter.
#[test]
fn undefined_colon_assignments_are_rewritten_for_the_rvm() {
    let cases = [
        (
            "package p\n\nr if {\n\tx := input.missing\n\tnot startswith(x, \"a\")\n}\n",
            json!({}),
            None,
        ),
        (
            "package p\n\nr contains m if {\n\tp := data.pats[input.k]\n\tnot regex.match(p, \"x\")\n\tm := sprintf(\"%v\", [input.k])\n}\n",
            json!({"k": "absent"}),
            Some(json!([])),
        ),
        (
            "package p\n\nr contains m if {\n\tp := data.pats[input.k]\n\tnot regex.match(p, \"x\")\n\tm := sprintf(\"%v\", [input.k])\n}\n",
            json!({"k": "a"}),
            Some(json!(["a"])),
        ),
        // `x` names a rule of the package: `x = e` would compare, so it stays `:=`
        // and the probe sends the RVM back to the interpreter.
        (
            "package p\n\nx := \"rule\"\n\nr if {\n\tx := input.missing\n\tnot startswith(x, \"a\")\n}\n",
            json!({}),
            None,
        ),
    ];
    for (i, (src, input, expected)) in cases.into_iter().enumerate() {
        let policy = PolicySet::compile(
            &[common::module("p.rego", src)],
            json!({"pats": {"a": "^y$"}}),
            &CompileOptions::default(),
        )
        .unwrap();
        let input = Input::from_json(&input).unwrap();
        let f = policy.decision_fn_rvm("data.p.r", std::slice::from_ref(&input));
        let backend_ok = if i == 3 {
            matches!(f.backend(), Backend::Interpreter { .. })
        } else {
            f.backend() == &Backend::Rvm
        };
        assert!(backend_ok, "{src}: {:?}", f.backend());
        assert_eq!(f.eval(&input).unwrap(), expected, "{src}");
        assert_eq!(f.eval_interpreter(&input).unwrap(), expected, "{src}");
    }
}

/// regorus 0.14.1's RVM gets these wrong; each must fall back to the interpreter.
#[test]
fn known_rvm_divergences_fall_back_to_the_interpreter() {
    let cases = [
        // The else branch applies when the first body fails.
        (
            "package p\n\nr := m if {\n\tm := sprintf(\"%v\", [input.x])\n} else := \"b\"\n",
            json!({}),
            Some(json!("b")),
        ),
        // An undefined value leaves a partial object without the key.
        (
            "package p\n\nr[k] := input.x if k := \"a\"\n",
            json!({}),
            Some(json!({})),
        ),
    ];
    for (src, input, expected) in cases {
        let policy = PolicySet::compile(
            &[common::module("p.rego", src)],
            json!({}),
            &CompileOptions::default(),
        )
        .unwrap();
        let input = Input::from_json(&input).unwrap();
        let f = policy.decision_fn_rvm("data.p.r", std::slice::from_ref(&input));
        assert!(
            matches!(f.backend(), Backend::Interpreter { .. }),
            "{src}: {:?}",
            f.backend()
        );
        assert_eq!(f.eval(&input).unwrap(), expected, "{src}");
    }
}

#[test]
fn entrypoints_using_with_fall_back_to_the_interpreter() {
    let (modules, data) = common::load_dir(&common::examples_dir());
    let policy = PolicySet::compile(&modules, data, &CompileOptions::default()).unwrap();
    let f = policy.decision_fn_rvm("data.mcp.tool_access_test.test_analyst_can_read", &[]);
    assert!(
        matches!(f.backend(), Backend::Interpreter { .. }),
        "{:?}",
        f.backend()
    );
    assert_eq!(f.eval_json(&json!({})).unwrap(), Some(json!(true)));
}

#[test]
fn snapshots_swap_atomically_and_start_empty() {
    let handle = Arc::new(PolicyHandle::empty());
    assert!(
        handle.load().is_none(),
        "nothing active before the first activation"
    );

    let first = Snapshot::new("rev-1", examples()).with_entrypoints(&["data.mcp.decision"]);
    assert!(handle.swap(first).is_none());
    let held = handle.load().unwrap();
    assert_eq!(held.revision, "rev-1");

    // A request holding the old snapshot keeps it across a swap.
    let src = "package mcp.decision\n\nallow := true\n";
    let open = PolicySet::compile(
        &[common::module("d.rego", src)],
        json!({}),
        &CompileOptions::default(),
    )
    .unwrap();
    let previous = handle.swap(Snapshot::new("rev-2", open)).unwrap();
    assert_eq!(previous.revision, "rev-1");
    assert_eq!(handle.revision().as_deref(), Some("rev-2"));

    let input = Input::from_json(&request("intern", "shell_exec", json!({}))).unwrap();
    let old = held
        .decision("data.mcp.decision")
        .unwrap()
        .eval(&input)
        .unwrap()
        .unwrap();
    assert_eq!(old["allow"], json!(false));
    let new = handle
        .load()
        .unwrap()
        .policy
        .eval_rule("data.mcp.decision.allow", None)
        .unwrap();
    assert_eq!(new, Some(json!(true)));

    // Concurrent readers always see a complete snapshot.
    std::thread::scope(|s| {
        for _ in 0..2 {
            let handle = handle.clone();
            s.spawn(move || {
                for _ in 0..1000 {
                    let snap = handle.load().unwrap();
                    assert!(snap.revision == "rev-2" || snap.revision == "rev-3");
                }
            });
        }
        let policy = handle.load().unwrap().policy.clone();
        handle.swap(Snapshot::new("rev-3", policy));
    });
}
