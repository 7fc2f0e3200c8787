//! Ephemeral scoped tokens to upstreams (issue 12, point 2): an upstream that checks
//! the gateway's token the way `docs/upstream-tokens.md` tells upstream authors to
//! (signature from the gateway's JWKS, `iss`, `aud`, `exp`, then `scope` and
//! `args_sha256` against the call itself) accepts the gateway's calls and refuses a
//! call without a token, a token for another tool, for another audience, an expired
//! one, and one whose argument digest does not match; a key rotation under load loses
//! no call.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use lockstep_auth::jwt::{JwtConfig, JwtValidator};
use lockstep_testkit::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ARGS_OK: &str = r#"{"target": "users", "operation": "read", "database": "analytics"}"#;
const ISSUER: &str = "https://gateway.test";

/// An MCP upstream behind the check an upstream author would write.
#[derive(Clone)]
struct Verifying {
    inner: McpUpstream,
    validator: Arc<JwtValidator>,
    /// Every token presented, and why each refused request was refused.
    tokens: Arc<Mutex<Vec<String>>>,
    refusals: Arc<Mutex<Vec<String>>>,
}

impl Verifying {
    fn new(jwks_uri: &str, audience: &str) -> Verifying {
        let mut cfg = JwtConfig::new(ISSUER, jwks_uri, audience);
        cfg.algorithms = vec![lockstep_auth::jwt::Algorithm::ES256];
        cfg.leeway = Duration::ZERO;
        cfg.min_refresh_interval = Duration::from_millis(100);
        Verifying {
            inner: McpUpstream::default(),
            validator: Arc::new(JwtValidator::new(cfg).unwrap()),
            tokens: Arc::default(),
            refusals: Arc::default(),
        }
    }

    /// The check: a valid token, and for a `tools/call` the scope and argument
    /// digest of this very call.
    async fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let token = lockstep_auth::bearer(headers).ok_or("no token")?;
        self.tokens.lock().unwrap().push(token.to_string());
        let claims = self
            .validator
            .validate(token)
            .await
            .map_err(|e| e.to_string())?;
        let msg: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if msg["method"] == "tools/call" {
            let want = format!(
                "tools/call:{}",
                msg["params"]["name"].as_str().unwrap_or("")
            );
            if claims["scope"] != json!(want) {
                return Err(format!("scope {} is not {want}", claims["scope"]));
            }
            // Python: json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            let args = msg["params"].get("arguments").cloned().unwrap_or(json!({}));
            let digest = hex::encode(Sha256::digest(args.to_string().as_bytes()));
            if claims["args_sha256"] != json!(digest) {
                return Err("args_sha256 does not match the arguments".into());
            }
        }
        Ok(())
    }

    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move {
                    match me.check(&headers, &body).await {
                        Ok(()) => me.inner.answer(&headers, &body),
                        Err(why) => {
                            me.refusals.lock().unwrap().push(why.clone());
                            (StatusCode::UNAUTHORIZED, why).into_response()
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/mcp")
    }

    fn tool_calls(&self) -> usize {
        self.inner
            .calls()
            .iter()
            .filter(|c| c.starts_with("tools/call"))
            .count()
    }

    /// A direct call, around the gateway.
    async fn direct(
        &self,
        url: &str,
        token: Option<&str>,
        tool: &str,
        args: &str,
    ) -> (u16, String) {
        let (body, headers) = modern_call(1, tool, serde_json::from_str(args).unwrap());
        let mut r = reqwest::Client::new().post(url).json(&body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn write_key(dir: &std::path::Path, kid: &str) {
    std::fs::write(dir.join(format!("{kid}.pem")), keys().private).unwrap();
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn through(http: &reqwest::Client, gw: &str) -> (u16, Value) {
    let (body, headers) = modern_call(1, "read_database", serde_json::from_str(ARGS_OK).unwrap());
    let mut r = http.post(gw).bearer_auth(ANALYST_KEY).json(&body);
    for (k, v) in headers {
        r = r.header(k, v);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_accept_the_gateways_tokens_and_refuse_everything_else() {
    let server = TestServer::start().await;
    server
        .publish_ok("main", example_bundle("r1", 1000, Some(&server.keys)))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("upstream-keys");
    std::fs::create_dir(&keys_dir).unwrap();
    write_key(&keys_dir, "2026-01");
    let port = free_port();
    let jwks = format!("http://127.0.0.1:{port}/.well-known/jwks.json");
    let audience = "https://db.internal/mcp";
    let up = Verifying::new(&jwks, audience);
    let url = up.start().await;
    let yaml = gateway_yaml(&server, dir.path(), &url, &format!(
        "upstream_tokens:\n  issuer: {ISSUER}\n  keys_dir: {}\n  lifetime: 4s\n  activation_delay: 300ms\n",
        keys_dir.display()
    ))
    .replacen("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"), 1)
    .replacen(
        &format!("    url: {url}\n"),
        &format!("    url: {url}\n    token_audience: {audience}\n"),
        1,
    );
    let gw = start_gateway(&yaml).await;
    wait_gateway_ready(&gw).await;
    let gw_url = format!("http://{}/mcp", gw.addr);
    let http = reqwest::Client::new();

    // The gateway's call is accepted, with a token naming the decision.
    let (status, body) = through(&http, &gw_url).await;
    assert_eq!(status, 200, "{body} {:?}", up.refusals.lock().unwrap());
    assert_eq!(up.tool_calls(), 1);
    let token = up.tokens.lock().unwrap().last().unwrap().clone();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["scope"], "tools/call:read_database", "{claims}");
    assert_eq!(claims["revision"], "r1", "{claims}");
    assert!(
        claims["decision_id"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert!(claims["jti"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(kid_of(&token), "2026-01");

    // The Python recipe for upstream authors (PyJWT) agrees: this call, yes; the
    // same token for another tool or other arguments, no.
    if let Some(venv) = tokio::task::block_in_place(mcp_venv) {
        let recipe = |tool: &str, args: &str| {
            let (req, _) = modern_call(1, tool, serde_json::from_str(args).unwrap());
            let out = std::process::Command::new(venv.join("bin/python"))
                .arg(mcp_peers().join("verify_upstream_token.py"))
                .args(["--jwks", &jwks, "--issuer", ISSUER, "--audience", audience])
                .args(["--token", &token, "--request", &req.to_string()])
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
            )
        };
        let (ok, out) = tokio::task::block_in_place(|| recipe("read_database", ARGS_OK));
        assert!(ok, "the recipe refused the gateway's token: {out}");
        let (ok, out) = tokio::task::block_in_place(|| recipe("run_query", ARGS_OK));
        assert!(!ok && out.contains("scope"), "{out}");
        let (ok, out) = tokio::task::block_in_place(|| {
            recipe(
                "read_database",
                r#"{"target": "users", "operation": "read", "database": "payroll"}"#,
            )
        });
        assert!(!ok && out.contains("args_sha256"), "{out}");
    }

    // Around the gateway: refused, each for its reason.
    let other_audience = Verifying::new(&jwks, "https://other.internal/mcp");
    let other_url = other_audience.start().await;
    let cases = [
        (
            up.direct(&url, None, "read_database", ARGS_OK).await,
            "no token",
        ),
        (
            up.direct(&url, Some(&token), "run_query", ARGS_OK).await,
            "scope",
        ),
        (
            up.direct(
                &url,
                Some(&token),
                "read_database",
                r#"{"target": "users", "operation": "read", "database": "payroll"}"#,
            )
            .await,
            "args_sha256",
        ),
        (
            other_audience
                .direct(&other_url, Some(&token), "read_database", ARGS_OK)
                .await,
            "another resource",
        ),
    ];
    for ((status, text), says) in &cases {
        assert_eq!(*status, 401, "{says}: {text}");
        assert!(text.contains(says), "{says}: {text}");
    }
    // The very same call replayed after the token's lifetime.
    tokio::time::sleep(Duration::from_millis(5100)).await;
    let (status, text) = up
        .direct(&url, Some(&token), "read_database", ARGS_OK)
        .await;
    assert_eq!((status, text.contains("expired")), (401, true), "{text}");
    assert_eq!(up.tool_calls(), 1, "no refused call reached the tool");

    // A key rotation under load: calls keep succeeding while 2026-02 is published,
    // then signs.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, http, gw_url) = (stop.clone(), http.clone(), gw_url.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(through(&http, &gw_url).await.0);
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    write_key(&keys_dir, "2026-02");
    let rotated = eventually(Duration::from_secs(10), || {
        up.tokens
            .lock()
            .unwrap()
            .last()
            .is_some_and(|t| kid_of(t) == "2026-02")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(rotated, "the new key never signed");
    assert!(statuses.len() > 10, "{} calls", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "calls lost during the rotation: {:?} refusals {:?}",
        statuses.iter().filter(|s| **s != 200).count(),
        up.refusals.lock().unwrap()
    );
    let published: Value = http.get(&jwks).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        published["keys"].as_array().unwrap().len(),
        2,
        "{published}"
    );
    gw.shutdown().await.unwrap();
}
