//! `lockstep.upstream_tokens` (issue 12): the agent in front of an upstream, asked by
//! Envoy over ext_authz gRPC, checks the ephemeral token `lockstep gateway` minted for a
//! call and hands the result to the policy, which allows exactly the call the token is
//! for: not another tool, not other arguments, not without a token, not a token for
//! another audience or one past its lifetime.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use lockstep_agent::EnvoyConfig;
use lockstep_agent::upstream_token::UpstreamTokensConfig;
use lockstep_gateway::config::UpstreamTokensConfig as MintConfig;
use lockstep_gateway::upstream_token::{Grant, UpstreamTokens, arguments_sha256};
use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

/// Allows a `tools/call` only with a valid gateway token for this tool and arguments.
const POLICY: &str = r#"package mcp.authz

default allow := false

token := input.lockstep.upstream_token

allow if {
  token.valid
  input.parsed_body.method == "tools/call"
  token.claims.scope == sprintf("tools/call:%s", [input.parsed_body.params.name])
  token.claims.args_sha256 == token.digest
}
"#;

const AUDIENCE: &str = "https://db.internal/mcp";
const ISSUER: &str = "https://gateway.test";

fn call(tool: &str, args: &Value, token: Option<&str>) -> CheckRequest {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": tool, "arguments": args}})
    .to_string();
    let mut headers: HashMap<String, String> = [
        (":method", "POST"),
        (":path", "/mcp"),
        ("content-type", "application/json"),
        ("x-envoy-auth-partial-body", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    headers.insert("content-length".into(), body.len().to_string());
    if let Some(t) = token {
        headers.insert("authorization".into(), format!("Bearer {t}"));
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: "1".into(),
                    method: "POST".into(),
                    path: "/mcp".into(),
                    host: "127.0.0.1:10001".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    size: i64::try_from(body.len()).unwrap(),
                    headers,
                    body,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

fn mint(tokens: &UpstreamTokens, audience: &str, tool: &str, args: &Value) -> String {
    tokens
        .mint(&Grant {
            audience,
            subject: "alice",
            scope: format!("tools/call:{tool}"),
            arguments_sha256: Some(arguments_sha256(args)),
            decision_id: Some("d-1"),
            revision: Some("r1"),
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_allows_only_the_call_a_gateway_token_is_for() {
    let server = TestServer::start().await;
    server
        .publish_ok("main", bundle_with("r1", 1000, Some(&server.keys), POLICY))
        .await;
    let dir = tempfile::tempdir().unwrap();
    // The gateway's signer, and its JWKS on 127.0.0.1 as the gateway serves it.
    let keys_dir = dir.path().join("keys");
    std::fs::create_dir(&keys_dir).unwrap();
    std::fs::write(keys_dir.join("gw-1.pem"), keys().private).unwrap();
    let tokens = Arc::new(
        UpstreamTokens::load(MintConfig {
            issuer: ISSUER.into(),
            keys_dir: keys_dir.clone(),
            lifetime: Duration::from_secs(1),
            activation_delay: Duration::ZERO,
        })
        .unwrap(),
    );
    let jwks = {
        let t = tokens.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let t = t.clone();
                async move { axum::Json(t.jwks()) }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        format!("http://{addr}/.well-known/jwks.json")
    };
    let agent = start_agent_with(&server, dir.path(), Some(10), |c| {
        c.envoy = Some(EnvoyConfig {
            addr: "127.0.0.1:0".into(),
            path: "mcp/authz/allow".into(),
            ..EnvoyConfig::default()
        });
        c.upstream_tokens = Some(UpstreamTokensConfig {
            issuer: ISSUER.into(),
            jwks_uri: jwks.clone(),
            audience: AUDIENCE.into(),
            digest_pointer: Some("/params/arguments".into()),
        });
    })
    .await;
    let client = AuthorizationClient::connect(format!("http://{}", agent.envoy_addr.unwrap()))
        .await
        .unwrap();
    let allowed = |req: CheckRequest| {
        let mut c = client.clone();
        async move {
            let r = c.check(req).await.unwrap().into_inner();
            r.status.unwrap().code == 0
        }
    };
    let args = json!({"target": "users", "operation": "read", "database": "analytics"});
    let other = json!({"target": "users", "operation": "read", "database": "payroll"});
    // Until the bundle is active the agent fails closed; then the call the token is
    // for is allowed (a fresh token each round: they live one second).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let good = loop {
        let t = mint(&tokens, AUDIENCE, "read_database", &args);
        if allowed(call("read_database", &args, Some(&t))).await {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call the token is for was never allowed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !allowed(call("read_database", &args, None)).await,
        "no token"
    );
    assert!(
        !allowed(call("run_query", &args, Some(&good))).await,
        "another tool"
    );
    assert!(
        !allowed(call("read_database", &other, Some(&good))).await,
        "other arguments"
    );
    let elsewhere = mint(
        &tokens,
        "https://other.internal/mcp",
        "read_database",
        &args,
    );
    assert!(
        !allowed(call("read_database", &args, Some(&elsewhere))).await,
        "another audience"
    );
    // Past its lifetime (1 s) and the agent's 5 s leeway.
    tokio::time::sleep(Duration::from_millis(7100)).await;
    assert!(
        !allowed(call("read_database", &args, Some(&good))).await,
        "expired"
    );
    drop(client);
    agent.shutdown().await.unwrap();
}
