//! Streamable HTTP upstreams: one pooled, kept-alive HTTP client per upstream, the
//! headers each era needs, and the answer read as JSON or as an SSE stream. The
//! client's own credential never goes upstream: only the headers built here do.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{Transport, UpstreamConfig};
use crate::era::{ProtocolVersion, encode_header_value};
use crate::sse::{Event, Splitter};
use crate::stdio_upstream::{StdioChild, StdioError};
use crate::upstream_token::{Grant, UpstreamTokens};

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const PROTOCOL_HEADER: &str = "mcp-protocol-version";
/// Largest upstream JSON answer or SSE event read.
pub const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream}: {message}")]
    Transport { upstream: String, message: String },
    #[error("upstream {upstream} answered HTTP {status}")]
    Status { upstream: String, status: u16 },
    #[error("upstream {upstream}: answer is not JSON-RPC: {message}")]
    Malformed { upstream: String, message: String },
    #[error(
        "upstream {upstream} uses the stdio transport, which this gateway build does not start"
    )]
    StdioUnsupported { upstream: String },
    #[error("upstream {upstream} did not answer within {seconds:.1}s")]
    Timeout { upstream: String, seconds: f64 },
}

/// What the request to an upstream carries besides the body.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The upstream's own session id (2025 era).
    pub session: Option<String>,
    pub protocol_version: Option<ProtocolVersion>,
    /// 2026-07-28: `Mcp-Method`, `Mcp-Name` (the upstream's own name) and the client's
    /// `Mcp-Param-*` headers, already checked against the body.
    pub modern: Option<ModernHeaders>,
    /// What the ephemeral token for this request grants (upstreams with a
    /// `token_audience`); without it a token for the method alone, in the gateway's name.
    pub grant: Option<OutgoingGrant>,
}

/// The decided request an upstream token is for.
#[derive(Debug, Clone, Default)]
pub struct OutgoingGrant {
    pub subject: String,
    pub scope: String,
    pub arguments_sha256: Option<String>,
    pub decision_id: Option<String>,
    pub revision: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ModernHeaders {
    pub method: String,
    pub name: Option<String>,
    pub params: Vec<(HeaderName, HeaderValue)>,
}

/// An upstream's SSE events as they arrive.
pub type EventStream = futures_util::stream::BoxStream<'static, Result<Event, UpstreamError>>;

/// An upstream's answer.
pub enum Answer {
    /// 202: the notification or response was accepted.
    Accepted,
    /// `application/json`: one message (a JSON-RPC error may come with a 4xx).
    Json {
        status: u16,
        session: Option<String>,
        body: Bytes,
    },
    /// `text/event-stream`: events as they arrive.
    Stream {
        session: Option<String>,
        events: EventStream,
    },
}

/// One configured upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    url: Option<String>,
    stdio: Option<StdioChild>,
    http: reqwest::Client,
    pub request_timeout: Duration,
    connect_timeout: Duration,
    /// The token signer and this upstream's audience (`token_audience`).
    tokens: Option<(Arc<UpstreamTokens>, String)>,
}

impl Upstream {
    /// Sends this upstream an ephemeral token with `audience` on every request.
    pub fn with_tokens(mut self, tokens: Arc<UpstreamTokens>, audience: String) -> Upstream {
        self.tokens = Some((tokens, audience));
        self
    }

    /// `Authorization` for one request: a fresh token, or nothing for an upstream
    /// without a `token_audience`. `scope` is used when `out` carries no grant.
    fn token(&self, out: Option<&Outgoing>, scope: &str) -> Option<HeaderValue> {
        let (tokens, audience) = self.tokens.as_ref()?;
        let default = OutgoingGrant {
            subject: "lockstep-gateway".into(),
            scope: scope.to_string(),
            ..OutgoingGrant::default()
        };
        let g = out.and_then(|o| o.grant.as_ref()).unwrap_or(&default);
        let grant = Grant {
            audience,
            subject: &g.subject,
            scope: g.scope.clone(),
            arguments_sha256: g.arguments_sha256.clone(),
            decision_id: g.decision_id.as_deref(),
            revision: g.revision.as_deref(),
        };
        match tokens.mint(&grant) {
            Ok(t) => HeaderValue::from_str(&format!("Bearer {t}")).ok(),
            Err(e) => {
                tracing::error!(upstream = %self.name, error = %e, "minting an upstream token");
                None
            }
        }
    }

    pub fn new(cfg: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("lockstep-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Transport {
                upstream: cfg.name.clone(),
                message: e.to_string(),
            })?;
        let (url, stdio) = match &cfg.transport {
            Transport::Http { url } => (Some(url.clone()), None),
            Transport::Stdio { command, args, env } => {
                (None, Some(StdioChild::start(&cfg.name, command, args, env)))
            }
        };
        Ok(Upstream {
            name: cfg.name.clone(),
            url,
            stdio,
            http,
            request_timeout: cfg.request_timeout,
            connect_timeout: cfg.connect_timeout,
            tokens: None,
        })
    }

    fn transport(&self, e: &reqwest::Error) -> UpstreamError {
        if e.is_timeout() {
            return UpstreamError::Timeout {
                upstream: self.name.clone(),
                seconds: self.request_timeout.as_secs_f64(),
            };
        }
        UpstreamError::Transport {
            upstream: self.name.clone(),
            message: lockstep_sync::download::error_chain(e),
        }
    }

    /// POSTs one message; `timeout` bounds the wait for the answer's headers and, for a
    /// JSON answer, its body (an SSE stream then runs as long as the upstream sends).
    pub async fn post(
        &self,
        body: String,
        out: &Outgoing,
        timeout: Duration,
    ) -> Result<Answer, UpstreamError> {
        if let Some(child) = &self.stdio {
            return self.post_stdio(child, &body, out, timeout).await;
        }
        let Some(url) = &self.url else {
            return Err(UpstreamError::Transport {
                upstream: self.name.clone(),
                message: "no transport".into(),
            });
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(s) = &out.session
            && let Ok(v) = HeaderValue::from_str(s)
        {
            headers.insert(SESSION_HEADER, v);
        }
        if let Some(v) = out.protocol_version {
            headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(v.as_str()));
        }
        if let Some(m) = &out.modern {
            if let Ok(v) = encode_header_value(&m.method) {
                headers.insert("mcp-method", v);
            }
            if let Some(n) = &m.name
                && let Ok(v) = encode_header_value(n)
            {
                headers.insert("mcp-name", v);
            }
            for (k, v) in &m.params {
                headers.insert(k.clone(), v.clone());
            }
        }
        let fallback = out.modern.as_ref().map_or("mcp", |m| m.method.as_str());
        if let Some(t) = self.token(Some(out), fallback) {
            headers.insert(reqwest::header::AUTHORIZATION, t);
        }
        let send = self.http.post(url).headers(headers).body(body).send();
        let resp = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| UpstreamError::Timeout {
                upstream: self.name.clone(),
                seconds: timeout.as_secs_f64(),
            })?
            .map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let session = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok(Answer::Accepted);
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            if !status.is_success() {
                return Err(UpstreamError::Status {
                    upstream: self.name.clone(),
                    status: status.as_u16(),
                });
            }
            return Ok(Answer::Stream {
                session,
                events: self.events(resp),
            });
        }
        // A JSON-RPC error may come with a 4xx (2026-07-28 maps errors to statuses):
        // it is still the upstream's answer. Anything else that is not 2xx is not.
        let body = read_limited(resp, MAX_UPSTREAM_MESSAGE, timeout)
            .await
            .map_err(|e| UpstreamError::Transport {
                upstream: self.name.clone(),
                message: e.to_string(),
            })?;
        if !status.is_success() && !looks_like_jsonrpc(&body) {
            return Err(UpstreamError::Status {
                upstream: self.name.clone(),
                status: status.as_u16(),
            });
        }
        Ok(Answer::Json {
            status: status.as_u16(),
            session,
            body,
        })
    }

    async fn post_stdio(
        &self,
        child: &StdioChild,
        body: &str,
        out: &Outgoing,
        timeout: Duration,
    ) -> Result<Answer, UpstreamError> {
        let msg: Value = serde_json::from_str(body).map_err(|e| UpstreamError::Malformed {
            upstream: self.name.clone(),
            message: e.to_string(),
        })?;
        let answer = child
            .exchange(&msg, out.modern.is_some(), timeout)
            .await
            .map_err(|e| match e {
                StdioError::Timeout(seconds) => UpstreamError::Timeout {
                    upstream: self.name.clone(),
                    seconds,
                },
                other => UpstreamError::Transport {
                    upstream: self.name.clone(),
                    message: other.to_string(),
                },
            })?;
        Ok(match answer {
            None => Answer::Accepted,
            Some(v) => Answer::Json {
                status: 200,
                session: None,
                body: Bytes::from(v.to_string()),
            },
        })
    }

    /// The upstream's `text/event-stream` body as events, as they arrive.
    fn events(
        &self,
        resp: reqwest::Response,
    ) -> futures_util::stream::BoxStream<'static, Result<Event, UpstreamError>> {
        let name = self.name.clone();
        let mut splitter = Splitter::new(MAX_UPSTREAM_MESSAGE);
        async_stream(resp.bytes_stream(), move |chunk| match chunk {
            Some(Ok(b)) => splitter.push(&b).map_err(|e| UpstreamError::Malformed {
                upstream: name.clone(),
                message: e.to_string(),
            }),
            Some(Err(e)) => Err(UpstreamError::Transport {
                upstream: name.clone(),
                message: lockstep_sync::download::error_chain(&e),
            }),
            None => Ok(splitter.finish().into_iter().collect()),
        })
    }

    /// The upstream's GET stream for `session` (2025 era), resumed after
    /// `last_event_id` when given. `Ok(None)`: this upstream has no GET stream (405, or
    /// a stdio child, whose messages outside a request have no client to go to).
    pub async fn listen(
        &self,
        session: &str,
        protocol_version: ProtocolVersion,
        last_event_id: Option<&str>,
    ) -> Result<Option<EventStream>, UpstreamError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let mut req = self
            .http
            .get(url)
            .header(ACCEPT, "text/event-stream")
            .header(SESSION_HEADER, session)
            .header(PROTOCOL_HEADER, protocol_version.as_str());
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        if let Some(t) = self.token(None, "stream") {
            req = req.header(reqwest::header::AUTHORIZATION, t);
        }
        let resp = tokio::time::timeout(self.connect_timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout {
                upstream: self.name.clone(),
                seconds: self.connect_timeout.as_secs_f64(),
            })?
            .map_err(|e| self.transport(&e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Ok(None);
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("text/event-stream"));
        if !status.is_success() || !is_sse {
            return Err(UpstreamError::Status {
                upstream: self.name.clone(),
                status: status.as_u16(),
            });
        }
        Ok(Some(self.events(resp)))
    }

    /// `DELETE` of the upstream's session (best effort).
    pub async fn end_session(&self, session: &str) {
        if let Some(url) = &self.url {
            let mut req = self
                .http
                .delete(url)
                .header(SESSION_HEADER, session)
                .timeout(Duration::from_secs(5));
            if let Some(t) = self.token(None, "session/end") {
                req = req.header(reqwest::header::AUTHORIZATION, t);
            }
            let _ = req.send().await;
        }
    }
}

fn looks_like_jsonrpc(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("jsonrpc").is_some())
}

/// Why an upstream's JSON answer could not be read whole.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Body(String),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("answer body not complete in time")]
    Late,
}

async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ReadError> {
    let read = async {
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ReadError::Body(lockstep_sync::download::error_chain(&e)))?;
            if out.len() + chunk.len() > limit {
                return Err(ReadError::TooLarge(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ReadError::Late)?
}

/// Turns a chunk stream into an event stream with `step` (called with `None` once at
/// the end), flattening the events each step yields.
fn async_stream<S, F>(
    chunks: S,
    mut step: F,
) -> futures_util::stream::BoxStream<'static, Result<Event, UpstreamError>>
where
    S: futures_util::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
    F: FnMut(Option<Result<Bytes, reqwest::Error>>) -> Result<Vec<Event>, UpstreamError>
        + Send
        + 'static,
{
    let chunks = chunks
        .map(Some)
        .chain(futures_util::stream::once(async { None }));
    chunks
        .map(move |c| match step(c) {
            Ok(events) => futures_util::stream::iter(events.into_iter().map(Ok)).left_stream(),
            Err(e) => futures_util::stream::iter(vec![Err(e)]).right_stream(),
        })
        .flatten()
        .boxed()
}
