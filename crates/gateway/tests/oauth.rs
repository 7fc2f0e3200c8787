//! The gateway as an OAuth 2.1 resource server (issue 12, point 1): access tokens from
//! an issuer's JWKS beside API keys, the protected resource metadata and the 401
//! challenge that points to it, the token's role claim deciding the policy outcome,
//! and every kind of bad token refused before anything reaches the upstream.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

const ARGS_OK: &str = r#"{"target": "users", "operation": "read", "database": "analytics"}"#;

struct Setup {
    _server: TestServer,
    _dir: tempfile::TempDir,
    issuer: TestIssuer,
    upstream: McpUpstream,
    gw: lockstep_gateway::RunningGateway,
    /// The gateway's canonical resource URI (the tokens' audience).
    resource: String,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    setup_with("").await
}

/// [`setup`] with `identity_extra` (YAML lines indented under `identity:`).
async fn setup_with(identity_extra: &str) -> Setup {
    let server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = McpUpstream::default();
    let (url, _task) = upstream.start().await;
    let issuer = TestIssuer::start().await;
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let yaml = gateway_yaml(&server, dir.path(), &url, "")
        .replacen("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"), 1)
        .replacen(
            "identity:\n",
            &format!(
                "identity:\n  oauth:\n    issuer: {}\n    jwks_uri: {}\n    resource: {resource}\n    jwks_min_refresh: 500ms\n    scopes_supported: [mcp:tools]\n{identity_extra}",
                issuer.issuer, issuer.jwks_uri
            ),
            1,
        );
    let gw = start_gateway(&yaml).await;
    wait_gateway_ready(&gw).await;
    Setup {
        _server: server,
        _dir: dir,
        issuer,
        upstream,
        gw,
        resource,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    /// An allowed-by-analysts `tools/call` with `bearer`: (status, WWW-Authenticate, body).
    async fn call(&self, bearer: Option<&str>) -> (u16, String, Value) {
        let (body, headers) =
            modern_call(1, "read_database", serde_json::from_str(ARGS_OK).unwrap());
        let mut r = self
            .http
            .post(format!("http://{}/mcp", self.gw.addr))
            .json(&body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let challenge = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, challenge, r.json().await.unwrap_or(Value::Null))
    }

    fn upstream_calls(&self) -> usize {
        self.upstream
            .calls()
            .iter()
            .filter(|c| c.starts_with("tools/call"))
            .count()
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_decide_who_calls_and_bad_ones_never_reach_the_upstream() {
    let s = setup().await;

    // No credential: 401 with the challenge, and the metadata it points to.
    let (status, challenge, body) = s.call(None).await;
    assert_eq!(status, 401, "{body}");
    let metadata_url = format!(
        "http://{}/.well-known/oauth-protected-resource/mcp",
        s.gw.addr
    );
    assert!(
        challenge.starts_with(&format!("Bearer resource_metadata=\"{metadata_url}\"")),
        "{challenge}"
    );
    assert!(!challenge.contains("invalid_token"), "{challenge}");
    for url in [
        metadata_url.clone(),
        format!("http://{}/.well-known/oauth-protected-resource", s.gw.addr),
    ] {
        let m: Value = s.http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(m["resource"], s.resource, "{m}");
        assert_eq!(
            m["authorization_servers"][0],
            s.issuer.issuer.as_str(),
            "{m}"
        );
        assert_eq!(m["scopes_supported"], json!(["mcp:tools"]));
    }

    // A valid token: its role claim decides.
    let analyst = s
        .issuer
        .token(&s.issuer.claims(&s.resource, "agent-7", "analyst"));
    let (status, _, body) = s.call(Some(&analyst)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"].is_object(), "{body}");
    assert_eq!(s.upstream_calls(), 1);
    let intern = s
        .issuer
        .token(&s.issuer.claims(&s.resource, "agent-8", "intern"));
    let (status, _, body) = s.call(Some(&intern)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["data"]["layer"], "mcp/tool_access", "{body}");
    assert_eq!(
        s.upstream_calls(),
        1,
        "a denied call never reaches the upstream"
    );

    // API keys keep working beside tokens.
    let (status, _, body) = s.call(Some(ANALYST_KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.upstream_calls(), 2);

    // Bad tokens, each refused with invalid_token, none reaching the upstream.
    let good = s.issuer.claims(&s.resource, "agent-7", "analyst");
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let t = lockstep_testkit::oauth::now();
    let mut expired = with("exp", json!(t - 3600));
    expired["iat"] = json!(t - 7200);
    expired["nbf"] = json!(t - 7200);
    let hs256_with_public_key = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("k1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(s.issuer.key().public_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
        b64(&good)
    );
    let tampered = {
        let parts: Vec<&str> = analyst.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&with("role", json!("admin"))),
            parts[2]
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", s.issuer.token(&expired), "expired"),
        (
            "wrong issuer",
            s.issuer.token(&with("iss", json!("http://127.0.0.1:1"))),
            "another issuer",
        ),
        (
            "wrong audience (a token for another resource)",
            s.issuer
                .token(&with("aud", json!("http://127.0.0.1:1/mcp"))),
            "another resource",
        ),
        (
            "unknown kid",
            IssuerKey::generate("k9").sign(&good),
            "does not publish",
        ),
        ("alg none", alg_none, "not accepted"),
        (
            "HS256 signed with the JWKS public key",
            hs256_with_public_key,
            "not accepted",
        ),
        ("tampered payload", tampered, "signature"),
    ];
    for (what, token, says) in &cases {
        let (status, challenge, body) = s.call(Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            challenge.contains("error=\"invalid_token\"") && challenge.contains(says),
            "{what}: {challenge}"
        );
        assert!(
            challenge.contains("resource_metadata="),
            "{what}: {challenge}"
        );
    }
    assert_eq!(
        s.upstream_calls(),
        2,
        "no refused token reached the upstream"
    );
    let metrics = s
        .http
        .get(format!("http://{}/metrics", s.gw.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(&metrics, "lockstep_gateway_token_refusals_total"),
        Some(cases.len() as f64),
        "{metrics}"
    );

    // A key rotation at the issuer: a token with the new kid is accepted once the
    // gateway fetches the keys again (bounded by jwks_min_refresh).
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let k2 = IssuerKey::generate("k2");
    s.issuer.publish(k2.clone());
    let (status, _, body) = s.call(Some(&k2.sign(&good))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.upstream_calls(), 3);
    // The old key still works during the rotation.
    let (status, _, _) = s.call(Some(&analyst)).await;
    assert_eq!(status, 200);
    s.gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_do_not_flood_the_issuer() {
    let s = setup().await;
    let good = s.issuer.claims(&s.resource, "agent-7", "analyst");
    let (status, _, _) = s.call(Some(&s.issuer.token(&good))).await;
    assert_eq!(status, 200);
    let before = s.issuer.fetches.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..20 {
        let forged = IssuerKey::generate(&format!("made-up-{i}")).sign(&good);
        assert_eq!(s.call(Some(&forged)).await.0, 401);
    }
    let after = s.issuer.fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        after - before <= 2,
        "20 unknown kids in well under a second made {} fetches",
        after - before
    );
    s.gw.shutdown().await.unwrap();
}

/// A caller without a scope `identity.required_scopes` names for the method gets 403
/// with an `insufficient_scope` challenge naming every scope the method needs (a token
/// with more scopes would pass); with the scopes, the policy decides as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_required_scope_is_a_403_challenge_before_any_policy() {
    let s = setup_with("  required_scopes:\n    tools/call: [mcp:tools]\n    \"*\": [mcp]\n").await;
    let mut claims = s.issuer.claims(&s.resource, "agent-7", "analyst");
    claims["scope"] = json!("mcp mcp:tools");
    let (status, _, body) = s.call(Some(&s.issuer.token(&claims))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.upstream_calls(), 1);

    claims["scope"] = json!("mcp");
    let (status, challenge, body) = s.call(Some(&s.issuer.token(&claims))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], json!(-31005), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mcp:tools"),
        "{body}"
    );
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\", scope=\"mcp:tools mcp\"")
            || challenge
                .starts_with("Bearer error=\"insufficient_scope\", scope=\"mcp mcp:tools\""),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"http://{}/.well-known/oauth-protected-resource/mcp\"",
            s.gw.addr
        )),
        "{challenge}"
    );
    assert_eq!(s.upstream_calls(), 1, "a refused call reached the upstream");

    // A token with no scope at all: still 403 (it is valid, only short of scopes).
    claims.as_object_mut().unwrap().remove("scope");
    let (status, challenge, _) = s.call(Some(&s.issuer.token(&claims))).await;
    assert_eq!(status, 403);
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    assert_eq!(s.upstream_calls(), 1);
}
