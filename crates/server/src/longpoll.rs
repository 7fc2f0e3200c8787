//! OPA's download protocol on the server side: `If-None-Match`, `Prefer: wait=N`, and
//! waiting on a per-bundle `tokio::sync::watch` channel until a new revision or the
//! deadline (then 304).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::hub::Active;

/// The content type OPA needs on a 200 to stay in long-polling mode.
pub use lockstep_bundle::protocol::BUNDLE_CONTENT_TYPE;

/// The `wait` preference in seconds, from every `Prefer` header.
///
/// OPA sends `modes=snapshot,delta;wait=N`; commas and semicolons both separate, spaces
/// and quotes are tolerated, the first well-formed `wait` wins, anything unparsable is
/// ignored (no long poll).
pub fn prefer_wait(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .find_map(|part| {
            let (k, v) = part.split_once('=')?;
            if !k.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            v.trim().trim_matches('"').parse::<u64>().ok()
        })
}

/// The ETags listed in `If-None-Match` (weak prefix dropped; `*` kept as is).
pub fn if_none_match(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| t.strip_prefix("W/").unwrap_or(t).to_string())
        .collect()
}

/// True when the client already has `etag` (weak comparison, as RFC 9110 wants for
/// `If-None-Match`); a bare unquoted value is accepted too.
pub fn client_has(tags: &[String], etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    tags.iter()
        .any(|t| t == "*" || t == etag || t.trim_matches('"') == bare)
}

/// Decrements the waiting-long-polls gauge when dropped (also on client disconnect).
struct WaitingGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Waits until the active bundle is one the client does not have, the deadline passes,
/// or the server shuts down. `None` means "answer 304".
pub async fn wait_for_new(
    rx: &mut watch::Receiver<Option<Arc<Active>>>,
    tags: &[String],
    wait: Duration,
    mut shutdown: watch::Receiver<bool>,
    waiting: prometheus_client::metrics::gauge::Gauge,
) -> Option<Arc<Active>> {
    waiting.inc();
    let _guard = WaitingGuard(waiting);
    let deadline = Instant::now() + wait;
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        let current = rx.borrow_and_update().clone();
        if let Some(a) = current
            && !client_has(tags, &a.etag)
        {
            return Some(a);
        }
        if *shutdown.borrow_and_update() {
            return None;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return None },
            _ = &mut sleep => return None,
            _ = shutdown.changed() => return None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn prefer_forms() {
        assert_eq!(
            prefer_wait(&h(&[("prefer", "modes=snapshot,delta;wait=30")])),
            Some(30)
        );
        assert_eq!(prefer_wait(&h(&[("prefer", "modes=snapshot,delta")])), None);
        assert_eq!(prefer_wait(&h(&[("prefer", "wait = \"5\" ")])), Some(5));
        assert_eq!(
            prefer_wait(&h(&[("prefer", "WAIT=7, respond-async")])),
            Some(7)
        );
        assert_eq!(prefer_wait(&h(&[("prefer", "wait=-1;wait=x")])), None);
        assert_eq!(
            prefer_wait(&h(&[("prefer", "respond-async"), ("prefer", "wait=9")])),
            Some(9)
        );
        assert_eq!(prefer_wait(&h(&[])), None);
    }

    #[test]
    fn etag_matching() {
        let tags = if_none_match(&h(&[("if-none-match", "W/\"abc\", \"def\"")]));
        assert!(client_has(&tags, "\"abc\""));
        assert!(client_has(&tags, "\"def\""));
        assert!(!client_has(&tags, "\"xyz\""));
        assert!(client_has(
            &if_none_match(&h(&[("if-none-match", "*")])),
            "\"q\""
        ));
        assert!(client_has(
            &if_none_match(&h(&[("if-none-match", "abc")])),
            "\"abc\""
        ));
        assert!(!client_has(&[], "\"abc\""));
    }
}
