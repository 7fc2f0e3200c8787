//! The policy input the gateway builds, evaluated by the repository's example policies
//! (`examples/policies`): the input shape must be the one those policies read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lockstep_bundle::{BuildOptions, build_bundle};
use lockstep_gateway::era::ProtocolVersion;
use lockstep_gateway::input::{Agent, PolicyInput, SessionInfo};
use lockstep_gateway::jsonrpc::{Message, ParseLimits, Request, parse_message};
use lockstep_gateway::naming::Naming;
use lockstep_policy::{CompileOptions, PolicySet};
use serde_json::{Value, json};

fn policies() -> PolicySet {
    // As `lockstep eval -b examples/policies` loads them.
    let dir = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/policies"
    ));
    let bundle = build_bundle(&[dir], &BuildOptions::default()).unwrap();
    PolicySet::compile(&bundle.modules, bundle.data, &CompileOptions::default()).unwrap()
}

fn input(role: &str, scopes: &[&str], body: &str) -> Value {
    let request: Request = match parse_message(body.as_bytes(), &ParseLimits::default()).unwrap() {
        Message::Request(r) => r,
        other => panic!("{other:?}"),
    };
    let naming = Naming::new(
        "__",
        [
            ("db".to_string(), Some("db".to_string())),
            ("files".to_string(), Some("fs".to_string())),
        ],
    )
    .unwrap();
    let route = request.target().map(|t| naming.resolve_target(t).unwrap());
    let agent = Agent {
        id: format!("{role}-agent"),
        role: Some(role.to_string()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        claims: Default::default(),
    };
    let session = SessionInfo {
        id: Some("s1".into()),
        protocol_version: ProtocolVersion::V2025_11_25,
    };
    PolicyInput::for_request(&agent, &session, &request, route.as_ref())
        .unwrap()
        .to_value()
}

fn call(tool: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
    .to_string()
}

fn decision(p: &PolicySet, input: &Value) -> (bool, Vec<String>) {
    let allow = p.eval_rule("data.mcp.decision.allow", Some(input)).unwrap();
    let reasons = p
        .eval_rule("data.mcp.decision.reasons", Some(input))
        .unwrap()
        .unwrap_or(json!([]));
    let mut reasons: Vec<String> = serde_json::from_value(reasons).unwrap();
    reasons.sort();
    (allow == Some(json!(true)), reasons)
}

#[test]
fn analyst_reads_through_the_prefixed_name() {
    let p = policies();
    let i = input(
        "analyst",
        &[],
        &call(
            "db__read_database",
            json!({"target": "orders", "operation": "read", "database": "analytics"}),
        ),
    );
    assert_eq!(decision(&p, &i), (true, vec![]));
}

#[test]
fn each_layer_denies_with_its_reason() {
    let p = policies();
    let cases = [
        (
            "analyst",
            vec![],
            call(
                "db__write_database",
                json!({"target": "orders", "operation": "write"}),
            ),
            "role 'analyst' has no access to tool 'write_database'",
        ),
        (
            "analyst",
            vec![],
            call(
                "db__read_database",
                json!({"target": "orders; drop table users"}),
            ),
            "target 'orders; drop table users' does not match the allowed pattern for tool 'read_database'",
        ),
        (
            "admin",
            vec!["read-only"],
            call(
                "db__write_database",
                json!({"target": "orders", "operation": "delete"}),
            ),
            "read-only scope forbids operation 'delete'",
        ),
        (
            "analyst",
            vec![],
            call(
                "db__read_database",
                json!({"target": "orders", "operation": "read", "database": "payroll"}),
            ),
            "role 'analyst' may not access database 'payroll'",
        ),
    ];
    for (role, scopes, body, reason) in cases {
        let i = input(role, &scopes, &body);
        assert_eq!(
            decision(&p, &i),
            (false, vec![reason.to_string()]),
            "{body}"
        );
    }
}

#[test]
fn the_layers_named_in_the_config_answer_allow_and_deny_reason() {
    let p = policies();
    let i = input(
        "auditor",
        &[],
        &call(
            "fs__read_file",
            json!({"target": "/var/log/audit/1.log", "path": "/etc/shadow"}),
        ),
    );
    for (layer, allowed) in [
        ("mcp/tool_access", true),
        ("mcp/command_scope", true),
        ("mcp/resource_access", false),
    ] {
        let pkg = format!("data.{}", layer.replace('/', "."));
        let allow = p.eval_rule(&format!("{pkg}.allow"), Some(&i)).unwrap();
        assert_eq!(allow, Some(json!(allowed)), "{layer}");
        let reason = p
            .eval_rule(&format!("{pkg}.deny_reason"), Some(&i))
            .unwrap();
        assert_eq!(reason.is_some(), !allowed, "{layer}");
    }
}
