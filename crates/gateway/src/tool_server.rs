//! The guide's MCP tool server, small and real: Streamable HTTP on one `POST /mcp`,
//! both protocol eras, JSON answers. It serves `read_database`, `write_database`,
//! `run_query` and `list_tables`, whose calls only echo their arguments.
//!
//! It is the upstream of `lockstep demo` (three of them, one behind each gateway), and
//! tests use it through the testkit's recording upstream. It is not a gateway part: it
//! decides nothing and never sits behind anything but a gateway in the demo. It must
//! not grow tools with side effects.

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Session id this server hands out on `initialize` (it keeps no session state).
pub const SESSION_ID: &str = "tool-server-session-1";

/// The answer to one POSTed JSON-RPC message, named `server` in `serverInfo`.
pub fn answer(server: &str, body: &[u8]) -> Response {
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    let tools: Vec<Value> = [
        "read_database",
        "write_database",
        "run_query",
        "list_tables",
    ]
    .iter()
    .map(|name| json!({"name": name, "inputSchema": {"type": "object"}}))
    .collect();
    let mut result = match method {
        "initialize" => json!({
            "protocolVersion": params.get("protocolVersion"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": server, "version": "1"},
        }),
        "server/discover" => json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}},
        }),
        "ping" => json!({}),
        "tools/list" => json!({"tools": tools}),
        "tools/call" => {
            let name = params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            json!({
                "content": [{"type": "text", "text": format!("{server}: called {name}")}],
                "structuredContent": {"arguments": params.get("arguments")},
                "isError": false,
            })
        }
        _ => {
            let body = json!({"jsonrpc": "2.0", "id": id,
                              "error": {"code": -32601, "message": "Method not found"}});
            return (StatusCode::OK, axum::Json(body)).into_response();
        }
    };
    // 2026-07-28 results say whether they are complete, and lists how they may be cached.
    let modern = params
        .pointer("/_meta/io.modelcontextprotocol~1protocolVersion")
        .is_some()
        || method == "server/discover";
    if modern && let Some(o) = result.as_object_mut() {
        o.insert("resultType".into(), json!("complete"));
        if method == "tools/list" {
            o.insert("ttlMs".into(), json!(0));
            o.insert("cacheScope".into(), json!("private"));
        }
    }
    let mut r = (
        StatusCode::OK,
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})),
    )
        .into_response();
    if method == "initialize" {
        r.headers_mut()
            .insert("mcp-session-id", HeaderValue::from_static(SESSION_ID));
    }
    r
}

/// Serves [`answer`] on `listener` at `/mcp` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: String,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: Bytes| {
            let server = server.clone();
            async move { answer(&server, &body) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
