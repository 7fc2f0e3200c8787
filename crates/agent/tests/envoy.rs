//! Envoy ext_authz: a tonic client built from `envoy-types` against the agent's gRPC
//! listener on 127.0.0.1, with a bundle from a real lockstep server.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use lockstep_agent::EnvoyConfig;
use serde_json::{Value, json};

/// Allows `tools/call` of `read_database` on `POST /mcp`; denies everything else
/// with a JSON-RPC error body.
const POLICY: &str = r#"package mcp.authz

default allow := {
  "allowed": false,
  "http_status": 403,
  "headers": {"content-type": "application/json"},
  "body": `{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"tool not allowed"}}`,
}

allow := {
  "allowed": true,
  "headers": {"x-authz-tool": input.parsed_body.params.name, "x-authz-session": input.parsed_query.session[0]},
  "response_headers_to_add": {"x-authz": "ok"},
} if {
  input.attributes.request.http.method == "POST"
  input.parsed_path == ["mcp"]
  input.version.ext_authz == "v3"
  input.truncated_body == false
  input.parsed_body.method == "tools/call"
  input.parsed_body.params.name in {"read_database"}
}
"#;

fn check_request(tool: &str) -> CheckRequest {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": {"sql": "select 1"}},
    })
    .to_string();
    let headers: HashMap<String, String> = [
        (":method", "POST"),
        (":path", "/mcp?session=s1"),
        ("content-type", "application/json"),
        ("x-envoy-auth-partial-body", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([("content-length".to_string(), body.len().to_string())])
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: "1".into(),
                    method: "POST".into(),
                    path: "/mcp?session=s1".into(),
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

fn header<'a>(h: &'a [envoy_types::ext_authz::v3::pb::HeaderValueOption], k: &str) -> &'a str {
    h.iter()
        .filter_map(|o| o.header.as_ref())
        .find(|h| h.key == k)
        .map(|h| h.value.as_str())
        .unwrap_or_else(|| panic!("no header {k} in {h:?}"))
}

fn meta(r: &CheckResponse, k: &str) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    match r.dynamic_metadata.as_ref()?.fields.get(k)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_allows_denies_and_fails_closed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sync = sync_config(
        server.service(),
        server.verification(),
        dir.path(),
        Some(20),
    );
    sync.labels.insert("id".into(), "envoy-agent".into());
    let log = dir.path().join("decisions.jsonl");
    let mut cfg = agent_config(sync, Some(&log));
    cfg.envoy = Some(EnvoyConfig {
        addr: "127.0.0.1:0".into(),
        path: "mcp/authz/allow".into(),
        ..EnvoyConfig::default()
    });
    let a = lockstep_agent::start(cfg).await.unwrap();
    let addr = a.envoy_addr.expect("envoy listener");
    let mut client = AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    // No bundle yet: fail closed, 403 with the reason.
    let r = client
        .check(check_request("read_database"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.as_ref().unwrap().code, 7, "{r:?}");
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(d.status.as_ref().unwrap().code, 403);
            assert!(d.body.contains("fail closed"), "{d:?}");
            assert!(!header(&d.headers, "x-lockstep-fail-closed").is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(meta(&r, "decision_id").map(|s| s.len()), Some(36));

    server
        .publish_ok("main", bundle_with("r1", 1000, Some(&server.keys), POLICY))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let allowed = loop {
        let r = client
            .check(check_request("read_database"))
            .await
            .unwrap()
            .into_inner();
        if meta(&r, "revision").as_deref() == Some("r1") {
            break r;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Allowed: OK with the policy's headers.
    assert_eq!(allowed.status.as_ref().unwrap().code, 0, "{allowed:?}");
    match &allowed.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(header(&ok.headers, "x-authz-tool"), "read_database");
            assert_eq!(header(&ok.headers, "x-authz-session"), "s1");
            assert_eq!(header(&ok.response_headers_to_add, "x-authz"), "ok");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(meta(&allowed, "decision_id").map(|s| s.len()), Some(36));

    // Denied: 403 with the JSON-RPC error body and content-type.
    let denied = client
        .check(check_request("drop_database"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.status.as_ref().unwrap().code, 7, "{denied:?}");
    match &denied.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(d.status.as_ref().unwrap().code, 403);
            let body: Value = serde_json::from_str(&d.body).unwrap();
            assert_eq!(body["error"]["message"], "tool not allowed");
            assert_eq!(header(&d.headers, "content-type"), "application/json");
        }
        other => panic!("{other:?}"),
    }

    // A body that is not JSON: the plugin's own 400, no policy.
    let mut bad = check_request("read_database");
    if let Some(h) = bad
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        h.body = "{nope".into();
        h.headers.insert("content-length".into(), "5".into());
    }
    let r = client.check(bad).await.unwrap().into_inner();
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => assert_eq!(d.status.as_ref().unwrap().code, 400),
        other => panic!("{other:?}"),
    }

    a.shutdown().await.unwrap();
    // Decision log: the Envoy decisions carry the input the policy saw.
    let lines = std::fs::read_to_string(&log).unwrap();
    let events: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let e = events
        .iter()
        .find(|e| e["result"]["allowed"] == true)
        .unwrap();
    assert_eq!(e["path"], "mcp/authz/allow");
    assert_eq!(e["input"]["parsed_path"], json!(["mcp"]));
    assert_eq!(e["input"]["parsed_query"], json!({"session": ["s1"]}));
    assert_eq!(e["input"]["parsed_body"]["params"]["name"], "read_database");
    assert_eq!(
        e["input"]["version"],
        json!({"ext_authz": "v3", "encoding": "protojson"})
    );
    assert_eq!(
        e["input"]["attributes"]["request"]["http"]["method"],
        "POST"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_bundle_is_denied() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sync = sync_config(
        server.service(),
        server.verification(),
        dir.path(),
        Some(20),
    );
    let mut cfg = agent_config(sync, None);
    cfg.envoy = Some(EnvoyConfig {
        addr: "127.0.0.1:0".into(),
        ..EnvoyConfig::default()
    });
    let a = lockstep_agent::start(cfg).await.unwrap();
    let mut client = AuthorizationClient::connect(format!("http://{}", a.envoy_addr.unwrap()))
        .await
        .unwrap();
    let r = client
        .check(check_request("read_database"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(r.status.as_ref().unwrap().code, 0);
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => assert_eq!(d.status.as_ref().unwrap().code, 403),
        other => panic!("{other:?}"),
    }
    a.shutdown().await.unwrap();
}

/// Envoy's HTTP mode: the request arrives as a copy of the client's (path prefixed
/// with `path_prefix`); 200 allows, anything else denies with the decision's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_allows_denies_and_fails_closed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sync = sync_config(
        server.service(),
        server.verification(),
        dir.path(),
        Some(20),
    );
    let log = dir.path().join("decisions.jsonl");
    let mut cfg = agent_config(sync, Some(&log));
    cfg.envoy_http = Some(EnvoyConfig {
        addr: "127.0.0.1:0".into(),
        path: "mcp/authz/allow".into(),
        path_prefix: "/authz".into(),
        ..EnvoyConfig::default()
    });
    let a = lockstep_agent::start(cfg).await.unwrap();
    let base = format!("http://{}/authz/mcp?session=s1", a.envoy_http_addr.unwrap());
    let http = reqwest::Client::new();
    let call = |tool: &str| {
        http.post(&base)
            .header("content-type", "application/json")
            .body(
                json!({
                    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": tool, "arguments": {"sql": "select 1"}},
                })
                .to_string(),
            )
            .send()
    };

    // No bundle yet: fail closed.
    let r = call("read_database").await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().contains_key("x-lockstep-fail-closed"));
    assert_eq!(r.headers()["x-lockstep-decision-id"].len(), 36);
    assert!(r.text().await.unwrap().contains("fail closed"));

    server
        .publish_ok("main", bundle_with("r1", 1000, Some(&server.keys), POLICY))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let allowed = loop {
        let r = call("read_database").await.unwrap();
        if r.headers()
            .get("x-lockstep-revision")
            .is_some_and(|v| v == "r1")
        {
            break r;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(allowed.status(), 200);
    let h = allowed.headers();
    assert_eq!(h["x-authz-tool"], "read_database");
    assert_eq!(h["x-authz-session"], "s1");
    assert_eq!(h["x-authz"], "ok");
    assert_eq!(h["x-lockstep-decision-id"].len(), 36);

    let denied = call("drop_database").await.unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.headers()["content-type"], "application/json");
    assert_eq!(denied.headers()["x-lockstep-revision"], "r1");
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["message"], "tool not allowed");

    // Not JSON: the plugin's 400 without asking the policy.
    let bad = http
        .post(&base)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    a.shutdown().await.unwrap();
    let lines = std::fs::read_to_string(&log).unwrap();
    let e: Value = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["result"]["allowed"] == true)
        .unwrap();
    // The policy saw the original path, without Envoy's prefix.
    assert_eq!(e["input"]["parsed_path"], json!(["mcp"]));
    assert_eq!(
        e["input"]["attributes"]["request"]["http"]["path"],
        "/mcp?session=s1"
    );
    assert_eq!(e["bundles"]["main"]["revision"], "r1");
}
