//! Server-to-client traffic of the 2025-11-25 era, carried through the gateway without
//! any state on it: everything a later request needs travels sealed in the ids the
//! client echoes.
//!
//! - A request an upstream sends the client on an SSE stream (sampling, elicitation,
//!   roots, ping) gets a gateway id: the upstream's name, its own id, the method and
//!   the session, sealed ([`Purpose::ServerRequest`]). The client answers with a POST
//!   that carries a JSON-RPC response with that id, on any replica; [`open_answer`]
//!   says which upstream asked and what its id was.
//! - Every SSE event id becomes a sealed stream position ([`Purpose::EventId`]): the
//!   last event id seen from each upstream. A client that resumes with `GET` and
//!   `Last-Event-ID` ([`open_position`]) resumes each upstream's stream where it was,
//!   and the ids stay unique across the session's streams, as the transport asks.
//!
//! What it must not do: decide (the front door decides before relaying), or remember
//! anything between requests (replicas share nothing but the key).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jsonrpc::RequestId;
use crate::session::{Purpose, SessionError, SessionSealer};
use crate::sse::Event;

/// A request an upstream sent the client, as named in the id the client got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRequest {
    /// `SessionState::id` of the session it was sent in: answered only there.
    pub session: String,
    pub upstream: String,
    pub method: String,
    /// The upstream's own id for it.
    pub id: RequestId,
}

/// Where a client's SSE stream was, per upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPosition {
    pub session: String,
    /// The merged GET stream (every upstream resumes), or one POST stream (only the
    /// upstream that answered it resumes).
    pub merged: bool,
    /// Upstream name → the last event id it sent on this stream.
    pub last: BTreeMap<String, String>,
}

/// Why a client's answer or `Last-Event-ID` is not one this gateway handed out for
/// this session. Answered like an unknown id, without saying which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("not an id this gateway gave: {0}")]
    Sealed(#[from] SessionError),
    #[error("the id is not a string")]
    NotAString,
    #[error("the id belongs to another session")]
    OtherSession,
}

/// The upstream request a client's answer (a JSON-RPC response with `id`) is for.
pub fn open_answer(
    sealer: &SessionSealer,
    id: &RequestId,
    session: &str,
) -> Result<ServerRequest, RelayError> {
    let RequestId::String(token) = id else {
        return Err(RelayError::NotAString);
    };
    let r: ServerRequest = sealer.open_as(Purpose::ServerRequest, token)?;
    if r.session != session {
        return Err(RelayError::OtherSession);
    }
    Ok(r)
}

/// The stream position a client's `Last-Event-ID` names.
pub fn open_position(
    sealer: &SessionSealer,
    last_event_id: &str,
    session: &str,
) -> Result<StreamPosition, RelayError> {
    let p: StreamPosition = sealer.open_as(Purpose::EventId, last_event_id)?;
    if p.session != session {
        return Err(RelayError::OtherSession);
    }
    Ok(p)
}

/// Rewrites the events of one client-facing stream: event ids to sealed positions,
/// upstream requests' ids to sealed [`ServerRequest`]s. Everything else passes as is.
#[derive(Debug, Clone)]
pub struct Rewriter {
    session: String,
    merged: bool,
    last: BTreeMap<String, String>,
}

impl Rewriter {
    /// A POST stream's rewriter: one upstream answers it.
    pub fn for_post(session: &str) -> Rewriter {
        Rewriter {
            session: session.to_string(),
            merged: false,
            last: BTreeMap::new(),
        }
    }

    /// The merged GET stream's, starting from a resumed position (or none).
    pub fn for_get(session: &str, resumed: BTreeMap<String, String>) -> Rewriter {
        Rewriter {
            session: session.to_string(),
            merged: true,
            last: resumed,
        }
    }

    /// `ev` from `upstream`, as the client sees it; `msg` is its data parsed, if it is
    /// JSON.
    pub fn rewrite(
        &mut self,
        sealer: &SessionSealer,
        upstream: &str,
        ev: Event,
        msg: Option<&Value>,
    ) -> Event {
        let id = ev.id().map(|eid| {
            self.last.insert(upstream.to_string(), eid.to_string());
            let last = if self.merged {
                self.last.clone()
            } else {
                BTreeMap::from([(upstream.to_string(), eid.to_string())])
            };
            sealer.seal_as(
                Purpose::EventId,
                &StreamPosition {
                    session: self.session.clone(),
                    merged: self.merged,
                    last,
                },
            )
        });
        let id = match id {
            None => None,
            Some(Ok(token)) => Some(token),
            Some(Err(e)) => {
                // An upstream id too large to seal: the event goes on without an id
                // (the client cannot resume from it), never with the upstream's.
                tracing::warn!(upstream, error = %e, "SSE event id not sealed; sent without id");
                None
            }
        };
        let data = msg.and_then(|m| self.server_request(sealer, upstream, m));
        if id.is_none() && ev.id().is_none() && data.is_none() {
            return ev;
        }
        ev.rewritten(id.as_deref(), data.as_deref())
    }

    /// A request from the upstream, with the gateway's id in place of its own.
    fn server_request(&self, sealer: &SessionSealer, upstream: &str, m: &Value) -> Option<String> {
        let method = m.get("method")?.as_str()?;
        let id = match m.get("id")? {
            Value::String(s) => RequestId::String(s.clone()),
            Value::Number(n) => RequestId::Number(n.as_i64()?),
            _ => return None,
        };
        let token = sealer
            .seal_as(
                Purpose::ServerRequest,
                &ServerRequest {
                    session: self.session.clone(),
                    upstream: upstream.to_string(),
                    method: method.to_string(),
                    id,
                },
            )
            .map_err(|e| tracing::warn!(upstream, error = %e, "server request id not sealed"))
            .ok()?;
        let mut m = m.clone();
        if let Some(o) = m.as_object_mut() {
            o.insert("id".into(), Value::String(token));
        }
        Some(m.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::session::SessionKey;
    use crate::sse::Splitter;
    use serde_json::json;

    fn sealer(byte: u8) -> SessionSealer {
        SessionSealer::new(SessionKey::from_bytes([byte; 32]), vec![])
    }

    fn event(text: &str) -> Event {
        Splitter::new(4096).push(text.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn a_server_request_id_routes_the_answer_to_its_upstream_in_its_session_only() {
        let s = sealer(1);
        let mut rw = Rewriter::for_post("sess-a");
        let msg =
            json!({"jsonrpc": "2.0", "id": 7, "method": "sampling/createMessage", "params": {}});
        let ev = event(&format!("event: message\ndata: {msg}\n\n"));
        let out = rw.rewrite(&s, "db", ev, Some(&msg));
        let sent: Value = serde_json::from_str(&out.data).unwrap();
        let token = sent["id"].as_str().unwrap().to_string();
        assert!(!token.contains("db") && !token.contains("sampling"));
        assert_eq!(sent["method"], "sampling/createMessage");
        let back = open_answer(&s, &RequestId::String(token.clone()), "sess-a").unwrap();
        assert_eq!(
            back,
            ServerRequest {
                session: "sess-a".into(),
                upstream: "db".into(),
                method: "sampling/createMessage".into(),
                id: RequestId::Number(7),
            }
        );
        assert_eq!(
            open_answer(&s, &RequestId::String(token.clone()), "sess-b"),
            Err(RelayError::OtherSession)
        );
        assert!(open_answer(&sealer(2), &RequestId::String(token.clone()), "sess-a").is_err());
        assert_eq!(
            open_answer(&s, &RequestId::Number(7), "sess-a"),
            Err(RelayError::NotAString)
        );
        // A token sealed for one purpose is refused for every other.
        assert!(open_position(&s, &token, "sess-a").is_err());
        assert!(s.open(&token, 0).is_err());
    }

    #[test]
    fn notifications_and_responses_pass_unchanged() {
        let s = sealer(1);
        let mut rw = Rewriter::for_post("sess-a");
        for msg in [
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}),
            json!({"jsonrpc": "2.0", "id": 3, "result": {}}),
        ] {
            let ev = event(&format!("data: {msg}\n\n"));
            assert_eq!(rw.rewrite(&s, "db", ev.clone(), Some(&msg)), ev);
        }
    }

    #[test]
    fn event_ids_become_positions_post_streams_name_one_upstream_get_streams_all() {
        let s = sealer(1);
        let mut post = Rewriter::for_post("sess-a");
        let out = post.rewrite(&s, "db", event("id: e1\ndata:\n\n"), None);
        let id = out.id().unwrap().to_string();
        assert_ne!(id, "e1");
        let p = open_position(&s, &id, "sess-a").unwrap();
        assert!(!p.merged);
        assert_eq!(p.last, BTreeMap::from([("db".into(), "e1".into())]));
        assert!(open_position(&s, &id, "sess-b").is_err());

        let mut get = Rewriter::for_get("sess-a", BTreeMap::from([("files".into(), "f9".into())]));
        get.rewrite(&s, "db", event("id: d1\ndata: {}\n\n"), None);
        let out = get.rewrite(&s, "db", event("id: d2\ndata: {}\n\n"), None);
        let p = open_position(&s, out.id().unwrap(), "sess-a").unwrap();
        assert!(p.merged);
        assert_eq!(
            p.last,
            BTreeMap::from([("db".into(), "d2".into()), ("files".into(), "f9".into())])
        );
        // Events without an id stay without one.
        assert_eq!(
            get.rewrite(&s, "db", event("data: {}\n\n"), None).id(),
            None
        );
    }
}
