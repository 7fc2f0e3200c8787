//! Request bodies, read only after the credentials are checked (security review
//! finding 3): a `Content-Length` over the limit is refused with 413 before a byte of
//! the body is read, a body is read only while holding one of a bounded number of
//! permits (excess requests wait briefly, then get 503 with `Retry-After`), a body that
//! grows past the limit is refused as soon as it does, and one that stalls is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// How long a request waits for a body permit before 503.
pub const PERMIT_WAIT: Duration = Duration::from_secs(2);
/// Seconds a 503 tells the client to wait (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u32 = 5;
/// Longest pause between two chunks of a body before the request is dropped (408).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A kind of body: its size limit, the setting that sets it, and its permits.
#[derive(Debug, Clone)]
pub struct BodyGate {
    pub limit: usize,
    /// The configuration key of `limit`, for messages.
    pub setting: &'static str,
    pub permits: Arc<Semaphore>,
}

impl BodyGate {
    pub fn new(limit: usize, setting: &'static str, concurrent: usize) -> Self {
        BodyGate {
            limit,
            setting,
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
        }
    }

    fn too_large(&self, what: &str) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "{what} is larger than {} bytes ({})",
                self.limit, self.setting
            ),
        )
    }

    /// Reads `body` (the caller has checked the credentials already).
    pub async fn read(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = declared
            && n > self.limit as u64
        {
            return Err(self.too_large(&format!("request body of {n} bytes")));
        }
        let _permit = match tokio::time::timeout(PERMIT_WAIT, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many uploads in progress; retry later",
                )
                .retry_after(RETRY_AFTER_SECONDS));
            }
        };
        let capacity = declared
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(self.limit);
        let mut buf = BytesMut::with_capacity(capacity);
        let mut stream = body.into_data_stream();
        loop {
            let next = tokio::time::timeout(STALL_TIMEOUT, stream.next())
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        format!("no request body data for {} s", STALL_TIMEOUT.as_secs()),
                    )
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
            if buf.len().saturating_add(chunk.len()) > self.limit {
                return Err(self.too_large("request body"));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}
