//! Server-to-client traffic of the 2025-11-25 era through the gateway (issue 11,
//! point 1): the GET stream, `Last-Event-ID` resumption of a POST stream its upstream
//! closed early (SSE polling), and requests an upstream sends the client, whose
//! answers go back to that upstream with its own id. A scripted upstream shows exactly
//! what reached it; the client sees only the gateway's sealed ids.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

/// What the scripted upstream received: HTTP method, the headers that matter, body.
#[derive(Debug, Clone)]
struct Seen {
    method: &'static str,
    session: Option<String>,
    last_event_id: Option<String>,
    body: Value,
}

#[derive(Clone, Default)]
struct Scripted {
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn sse(events: Vec<String>, then_wait: bool) -> Response {
    let items = futures_util::stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, std::io::Error>(Bytes::from(e))),
    );
    let body = if then_wait {
        Body::from_stream(items.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(items)
    };
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

impl Scripted {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn start(&self) -> String {
        let post = self.clone();
        let get = self.clone();
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |h: HeaderMap, b: Bytes| {
                let me = post.clone();
                async move { me.post(&h, &b) }
            })
            .get(move |h: HeaderMap| {
                let me = get.clone();
                async move { me.get(&h) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/mcp")
    }

    fn post(&self, h: &HeaderMap, b: &[u8]) -> Response {
        let msg: Value = serde_json::from_slice(b).unwrap();
        self.seen.lock().unwrap().push(Seen {
            method: "POST",
            session: header(h, "mcp-session-id"),
            last_event_id: None,
            body: msg.clone(),
        });
        let Some(id) = msg.get("id").cloned() else {
            return StatusCode::ACCEPTED.into_response();
        };
        if msg.get("method").is_none() {
            // A client's answer to one of our requests.
            return StatusCode::ACCEPTED.into_response();
        }
        match msg["method"].as_str().unwrap() {
            "initialize" => {
                let body = json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": msg["params"]["protocolVersion"],
                    "capabilities": {"tools": {}}, "serverInfo": {"name": "scripted", "version": "1"}}});
                let mut r = (StatusCode::OK, axum::Json(body)).into_response();
                r.headers_mut()
                    .insert("mcp-session-id", "up-1".parse().unwrap());
                r
            }
            // SSE polling: a priming event with an id and a retry hint, then the
            // upstream closes the stream before answering.
            "tools/call" => sse(vec!["id: p1\nretry: 100\ndata:\n\n".into()], false),
            _ => (
                StatusCode::OK,
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "nope"}})),
            )
                .into_response(),
        }
    }

    fn get(&self, h: &HeaderMap) -> Response {
        let last = header(h, "last-event-id");
        self.seen.lock().unwrap().push(Seen {
            method: "GET",
            session: header(h, "mcp-session-id"),
            last_event_id: last.clone(),
            body: Value::Null,
        });
        match last.as_deref() {
            // Resuming the polled call: its answer.
            Some("p1") => sse(
                vec![format!(
                    "id: p2\ndata: {}\n\n",
                    json!({"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "polled"}], "isError": false}})
                )],
                false,
            ),
            Some(other) => panic!("unexpected Last-Event-ID {other}"),
            // The standalone stream: a notification, then a request to the client.
            None => sse(
                vec![
                    format!(
                        "id: g1\ndata: {}\n\n",
                        json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                    ),
                    format!(
                        "id: g2\ndata: {}\n\n",
                        json!({"jsonrpc": "2.0", "id": 99, "method": "sampling/createMessage",
                               "params": {"messages": [], "maxTokens": 8}})
                    ),
                ],
                true,
            ),
        }
    }
}

const ALLOW_ALL: &str = "package mcp.allow_all\n\nallow := true\n";

struct Setup {
    upstream: Scripted,
    gw: lockstep_gateway::RunningGateway,
    http: reqwest::Client,
    _server: TestServer,
    _dir: tempfile::TempDir,
}

/// A server with the allow-all bundle, a scripted upstream, and the configuration of a
/// gateway in front of it (every method decided by `mcp/allow_all`).
async fn fixture() -> (tempfile::TempDir, TestServer, Scripted, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    server
        .publish_ok(
            "main",
            bundle_with("r1", 1000, Some(&server.keys), ALLOW_ALL),
        )
        .await;
    let upstream = Scripted::default();
    let url = upstream.start().await;
    let extra = "layers:\n  - path: mcp/allow_all\n    methods: [\"*\"]\n";
    let yaml = gateway_yaml(&server, dir.path(), &url, extra);
    (dir, server, upstream, yaml)
}

async fn setup() -> Setup {
    let (dir, server, upstream, yaml) = fixture().await;
    let gw = start_gateway(&yaml).await;
    wait_gateway_ready(&gw).await;
    Setup {
        upstream,
        gw,
        http: reqwest::Client::new(),
        _server: server,
        _dir: dir,
    }
}

impl Setup {
    fn url(&self) -> String {
        format!("http://{}/mcp", self.gw.addr)
    }

    fn post(&self, session: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .bearer_auth(ANALYST_KEY)
            .body(body.to_string());
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        r
    }

    fn get(&self, session: &str, last_event_id: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .get(self.url())
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-session-id", session)
            .bearer_auth(ANALYST_KEY);
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id);
        }
        r
    }

    async fn initialize(&self) -> String {
        let r = self
            .post(
                None,
                &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
                    "clientInfo": {"name": "t", "version": "1"}}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["mcp-session-id"].to_str().unwrap().to_string()
    }
}

/// `(id, data)` of each SSE event in `text`.
fn events(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let id = e
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(str::to_string);
            let data = e
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            (id, data)
        })
        .collect()
}

/// Reads a streaming response until `n` events arrived (at most 10 s).
async fn first_events(r: reqwest::Response, n: usize) -> Vec<(Option<String>, String)> {
    let mut body = r.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while events(&text).len() < n || !text.ends_with("\n\n") {
            let chunk = body.next().await.expect("stream ended early").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {n} events in 10 s: {text:?}"));
    events(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_post_stream_resumes_through_get_with_the_gateways_event_id() {
    let s = setup().await;
    let session = s.initialize().await;
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "read_database", "arguments": {}}});
    let r = s.post(Some(&session), &call).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let evs = events(&text);
    assert_eq!(evs.len(), 1, "{text}");
    let (Some(primer), data) = &evs[0] else {
        panic!("priming event without id: {text}")
    };
    assert!(data.is_empty());
    assert_ne!(primer, "p1", "the upstream's event id reached the client");
    assert!(text.contains("retry: 100"), "retry hint dropped: {text}");

    // Resuming: the upstream is asked for its own stream after its own id, in its own
    // session, and the answer comes through with another gateway id.
    let r = s.get(&session, Some(primer)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let evs = first_events(r, 1).await;
    let answer: Value = serde_json::from_str(&evs[0].1).unwrap();
    assert_eq!(answer["id"], 2);
    assert_eq!(answer["result"]["content"][0]["text"], "polled");
    assert!(evs[0].0.as_deref().is_some_and(|id| id != "p2"));
    let gets: Vec<Seen> = s
        .upstream
        .seen()
        .into_iter()
        .filter(|x| x.method == "GET")
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].last_event_id.as_deref(), Some("p1"));
    assert_eq!(gets[0].session.as_deref(), Some("up-1"));

    // The early close was no cancellation.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !s.upstream
            .seen()
            .iter()
            .any(|x| x.body["method"] == "notifications/cancelled"),
        "an upstream that closed its stream early got a cancellation"
    );

    // A Last-Event-ID the gateway did not give, or gave another session, is refused.
    let r = s.get(&session, Some("p1")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let other = s.initialize().await;
    let r = s.get(&other, Some(primer)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    s.gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_requests_on_the_get_stream_are_answered_to_the_upstream_that_asked() {
    let s = setup().await;
    let session = s.initialize().await;
    let r = s.get(&session, None).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let evs = first_events(r, 2).await;
    let note: Value = serde_json::from_str(&evs[0].1).unwrap();
    assert_eq!(note["method"], "notifications/tools/list_changed");
    let asked: Value = serde_json::from_str(&evs[1].1).unwrap();
    assert_eq!(asked["method"], "sampling/createMessage");
    let token = asked["id"].as_str().expect("the gateway's id is a string");
    assert_ne!(asked["id"], 99);
    assert!(
        evs.iter()
            .all(|(id, _)| id.as_deref().is_some_and(|i| i != "g1" && i != "g2"))
    );

    // The answer goes to the upstream, in its session, with the upstream's own id.
    let result =
        json!({"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"});
    let r = s
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": token, "result": result}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let answered: Vec<Seen> = s
        .upstream
        .seen()
        .into_iter()
        .filter(|x| x.method == "POST" && x.body.get("result").is_some())
        .collect();
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0].body["id"], 99);
    assert_eq!(answered[0].body["result"], result);
    assert_eq!(answered[0].session.as_deref(), Some("up-1"));

    // An answer with an id the gateway never gave, or in another session, goes nowhere.
    let before = s.upstream.seen().len();
    for (sess, id) in [
        (session.clone(), json!(99)),
        (session.clone(), json!("forged")),
    ] {
        let r = s
            .post(
                Some(&sess),
                &json!({"jsonrpc": "2.0", "id": id, "result": {}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    let other = s.initialize().await;
    let r = s
        .post(
            Some(&other),
            &json!({"jsonrpc": "2.0", "id": token, "result": {}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let after: Vec<Seen> = s.upstream.seen().into_iter().skip(before).collect();
    assert!(
        after.iter().all(|x| x.body.get("result").is_none()),
        "a refused answer reached the upstream: {after:?}"
    );
    s.gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_without_a_session_or_in_the_2026_era_is_refused() {
    let s = setup().await;
    let base = || {
        s.http
            .get(s.url())
            .header("accept", "text/event-stream")
            .bearer_auth(ANALYST_KEY)
    };
    let r = base()
        .header("mcp-protocol-version", "2026-07-28")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = base()
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = base()
        .header("mcp-session-id", "not-a-session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let session = s.initialize().await;
    let r = s
        .http
        .get(s.url())
        .header("accept", "application/json")
        .header("mcp-session-id", &session)
        .bearer_auth(ANALYST_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    let r = s
        .http
        .get(s.url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a GET stream needs a credential too");
    assert!(s.upstream.seen().iter().all(|x| x.method != "GET"));
    s.gw.shutdown().await.unwrap();
}

/// The stdio front door relays the GET stream too: what an upstream sends outside any
/// request reaches the stdio client as lines, and the client's answer to the
/// upstream's request goes back to that upstream with its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdio_front_door_relays_the_get_stream() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (_dir, _server, upstream, yaml) = fixture().await;
    let cfg = lockstep_gateway::config::GatewayConfig::parse(&yaml).unwrap();
    let (mut to_gw, gw_in) = tokio::io::duplex(1 << 16);
    let (gw_out, from_gw) = tokio::io::duplex(1 << 16);
    let run = tokio::spawn(lockstep_gateway::serve_stdio(
        cfg,
        ANALYST_KEY.to_string(),
        gw_in,
        gw_out,
    ));
    let mut lines = tokio::io::BufReader::new(from_gw).lines();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
        "clientInfo": {"name": "t", "version": "1"}}});
    to_gw
        .write_all(format!("{init}\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while got.len() < 3 {
            let line = lines.next_line().await.unwrap().expect("stdout ended");
            got.push(serde_json::from_str::<Value>(&line).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than 3 messages on stdout: {got:?}"));
    assert_eq!(got[0]["id"], 1, "{got:?}");
    assert_eq!(got[1]["method"], "notifications/tools/list_changed");
    assert_eq!(got[2]["method"], "sampling/createMessage");
    let token = got[2]["id"].as_str().expect("the gateway's sealed id");

    let result =
        json!({"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"});
    let answer = json!({"jsonrpc": "2.0", "id": token, "result": result});
    to_gw
        .write_all(format!("{answer}\n").as_bytes())
        .await
        .unwrap();
    let answers = || -> Vec<Seen> {
        upstream
            .seen()
            .into_iter()
            .filter(|x| x.method == "POST" && x.body.get("result").is_some())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || !answers().is_empty()).await,
        "the answer never reached the upstream: {:?}",
        upstream.seen()
    );
    let answered = answers();
    assert_eq!(answered[0].body["id"], 99);
    assert_eq!(answered[0].body["result"], result);
    assert_eq!(answered[0].session.as_deref(), Some("up-1"));
    let gets = upstream.seen().iter().filter(|x| x.method == "GET").count();
    assert_eq!(gets, 1, "one GET stream for the session");

    drop(to_gw);
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("serve_stdio ends when stdin closes")
        .unwrap()
        .unwrap();
}
