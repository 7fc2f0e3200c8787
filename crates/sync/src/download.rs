//! One bundle request with OPA's protocol (`v1/download/download.go`).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH, USER_AGENT};

use lockstep_bundle::protocol::{ACTIVATE_AT_HEADER, SERVER_TIME_HEADER};

use crate::clock::{Sample, ServerClock, now_us};
use crate::config::{Credentials, Service};

/// The `User-Agent` lockstep sends.
pub const USER_AGENT_VALUE: &str = concat!("lockstep-agent/", env!("CARGO_PKG_VERSION"));

/// A successful answer from the bundle server.
#[derive(Debug)]
pub enum Fetched {
    /// 200 with a body.
    Bundle {
        bytes: Vec<u8>,
        etag: Option<String>,
        /// Whether the response carried OPA's long-polling content type.
        long_poll_content_type: bool,
        /// The announced activation instant, unix milliseconds by the server's clock.
        activate_at_ms: Option<i64>,
    },
    /// 304: the client's `If-None-Match` ETag is current.
    NotModified { etag: Option<String> },
}

/// A failed request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// Non-200/304 status: OPA's `server replied with <status text>`.
    #[error("server replied with {text}")]
    Http { code: u16, text: String },
    #[error("{0}")]
    Transport(String),
    #[error("bundle larger than {0} bytes")]
    TooLarge(u64),
    #[error("credentials: {0}")]
    Credentials(String),
}

impl FetchError {
    pub fn http_code(&self) -> Option<u16> {
        match self {
            FetchError::Http { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Adds the service's headers and credentials to a request.
pub fn authorize(
    mut req: reqwest::RequestBuilder,
    service: &Service,
) -> Result<reqwest::RequestBuilder, FetchError> {
    for (k, v) in &service.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match &service.credentials {
        Credentials::None => {}
        Credentials::Bearer { scheme, token } => {
            let t = token
                .load()
                .map_err(|e| FetchError::Credentials(e.to_string()))?;
            req = req.header(AUTHORIZATION, format!("{scheme} {t}"));
        }
    }
    Ok(req.header(USER_AGENT, USER_AGENT_VALUE))
}

/// `GET url` with `If-None-Match: etag` and `Prefer: modes=snapshot,delta[;wait=N]`.
/// An answer carrying the server's times adds a sample to `clock`.
pub async fn fetch(
    http: &reqwest::Client,
    service: &Service,
    url: &str,
    etag: Option<&str>,
    long_poll: Option<Duration>,
    max_bytes: u64,
    clock: &ServerClock,
) -> Result<Fetched, FetchError> {
    let mut req = authorize(http.get(url), service)?;
    if let Some(e) = etag.filter(|e| !e.is_empty()) {
        req = req.header(IF_NONE_MATCH, e);
    }
    let prefer = match long_poll {
        Some(w) => format!("modes=snapshot,delta;wait={}", w.as_secs().max(1)),
        None => "modes=snapshot,delta".to_string(),
    };
    // OPA disables the response-header timeout for a long poll; we bound it by the wait
    // plus the usual header timeout.
    let timeout = long_poll.unwrap_or_default() + service.response_header_timeout;
    let sent_us = now_us();
    let resp = req
        .header("prefer", prefer)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| FetchError::Transport(error_chain(&e)))?;
    let received_us = now_us();
    if let Some(s) = resp
        .headers()
        .get(SERVER_TIME_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Sample::from_header(v, sent_us, received_us))
    {
        clock.add(s);
    }
    let status = resp.status();
    let resp_etag = resp
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match status {
        StatusCode::OK => {
            let ct = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let activate_at_ms = resp
                .headers()
                .get(ACTIVATE_AT_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok());
            if let Some(len) = resp.content_length()
                && len > max_bytes
            {
                return Err(FetchError::TooLarge(max_bytes));
            }
            let mut bytes = Vec::new();
            let mut resp = resp;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| FetchError::Transport(error_chain(&e)))?
            {
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 > max_bytes {
                    return Err(FetchError::TooLarge(max_bytes));
                }
            }
            Ok(Fetched::Bundle {
                bytes,
                etag: resp_etag,
                long_poll_content_type: ct.trim() == crate::BUNDLE_CONTENT_TYPE,
                activate_at_ms,
            })
        }
        StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified { etag: resp_etag }),
        other => Err(http_error(other)),
    }
}

fn http_error(status: StatusCode) -> FetchError {
    FetchError::Http {
        code: status.as_u16(),
        text: status
            .canonical_reason()
            .map_or_else(|| status.as_u16().to_string(), str::to_string),
    }
}

/// `HEAD url` with `If-None-Match: etag`, for the server's times only: a sample for
/// `clock`. Answered at once (no long poll, no body), so it can be repeated before an
/// announced instant to refine the offset estimate that instant is read by. `Ok(false)`
/// when the answer carried no times (a server that is not lockstep's).
pub async fn sample_clock(
    http: &reqwest::Client,
    service: &Service,
    url: &str,
    etag: Option<&str>,
    clock: &ServerClock,
) -> Result<bool, FetchError> {
    let mut req = authorize(http.head(url), service)?;
    if let Some(e) = etag.filter(|e| !e.is_empty()) {
        req = req.header(IF_NONE_MATCH, e);
    }
    let sent_us = now_us();
    let resp = req
        .timeout(service.response_header_timeout)
        .send()
        .await
        .map_err(|e| FetchError::Transport(error_chain(&e)))?;
    let received_us = now_us();
    let status = resp.status();
    if status != StatusCode::OK && status != StatusCode::NOT_MODIFIED {
        return Err(http_error(status));
    }
    let sample = resp
        .headers()
        .get(SERVER_TIME_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Sample::from_header(v, sent_us, received_us));
    if let Some(s) = sample {
        clock.add(s);
    }
    Ok(sample.is_some())
}

/// An error with its sources, for messages that say what happened.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}
