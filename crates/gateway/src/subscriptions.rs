//! `subscriptions/listen` (2026-07-28) across upstreams: the client's filter split per
//! upstream, the upstreams' acknowledgements merged into the one the client expects
//! first, and the notifications they send renamed back to client-visible names.
//!
//! The subscription id on every frame is the listen request's JSON-RPC id, and the
//! gateway forwards that id unchanged, so the upstreams' own stamps are already the
//! client's. List-changed flags go to every upstream; each URI of
//! `resourceSubscriptions` goes only to the upstream that owns it, under its own URI
//! (after the layers allowed a `resources/read` of it: see `front.rs`).
//!
//! Must not: decide policy or do I/O (the caller streams; this module only maps).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::naming::{NameKind, Naming, Route};

pub const LISTEN: &str = "subscriptions/listen";
pub const ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";
pub const RESOURCE_SUBSCRIPTIONS: &str = "resourceSubscriptions";
pub const RESOURCE_UPDATED: &str = "notifications/resources/updated";
pub const SUBSCRIPTION_ID_META_KEY: &str = "io.modelcontextprotocol/subscriptionId";

/// Frames held back until the merged acknowledgement goes out; past this many, it goes
/// out with what has acknowledged so far (an upstream that never acknowledges must not
/// make the gateway buffer without bound).
pub const MAX_HELD_FRAMES: usize = 64;

/// Whether a filter asks for anything: a `true` flag, a non-empty list, or any other
/// (extension) value that is not `false`/`null`.
fn asks_for_something(filter: &Map<String, Value>) -> bool {
    filter.values().any(|v| match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        _ => true,
    })
}

/// The filter each upstream gets: every key but `resourceSubscriptions` as the client
/// sent it, and the URIs `routes` assigns to that upstream (its own URIs). Upstreams
/// whose filter asks for nothing are left out.
pub fn split(
    filter: &Map<String, Value>,
    routes: &[Route],
    upstreams: &[&str],
) -> Vec<(String, Map<String, Value>)> {
    let mut uris: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for r in routes {
        uris.entry(r.upstream.as_str())
            .or_default()
            .push(Value::String(r.name.clone()));
    }
    upstreams
        .iter()
        .filter_map(|u| {
            let mut f: Map<String, Value> = filter
                .iter()
                .filter(|(k, _)| k.as_str() != RESOURCE_SUBSCRIPTIONS)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(list) = uris.get(u) {
                f.insert(RESOURCE_SUBSCRIPTIONS.into(), Value::Array(list.clone()));
            }
            asks_for_something(&f).then(|| (u.to_string(), f))
        })
        .collect()
}

/// The upstreams' acknowledgements, merged into the client's one.
#[derive(Debug, Default)]
pub struct AckMerger {
    waiting: BTreeSet<String>,
    merged: Map<String, Value>,
    sent: bool,
}

impl AckMerger {
    pub fn new<'a>(upstreams: impl IntoIterator<Item = &'a str>) -> AckMerger {
        AckMerger {
            waiting: upstreams.into_iter().map(str::to_string).collect(),
            ..AckMerger::default()
        }
    }

    pub fn sent(&self) -> bool {
        self.sent
    }

    /// Takes `upstream`'s acknowledged filter (`params.notifications`): flags are
    /// or-ed, resource URIs renamed to client names and joined, other keys kept from
    /// the first upstream that sent them.
    pub fn add(&mut self, naming: &Naming, upstream: &str, acked: Option<&Map<String, Value>>) {
        self.waiting.remove(upstream);
        for (k, v) in acked.into_iter().flatten() {
            if k == RESOURCE_SUBSCRIPTIONS {
                let exposed = v.as_array().into_iter().flatten().filter_map(|u| {
                    u.as_str()
                        .and_then(|u| naming.expose(upstream, NameKind::Resource, u).ok())
                });
                let list = self
                    .merged
                    .entry(k.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = list {
                    a.extend(exposed.map(Value::String));
                }
                continue;
            }
            match (self.merged.get_mut(k), v) {
                (Some(Value::Bool(old)), Value::Bool(new)) => *old |= *new,
                (Some(_), _) => {}
                (None, _) => {
                    self.merged.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// An upstream that ended its stream without acknowledging is waited for no more.
    pub fn gone(&mut self, upstream: &str) {
        self.waiting.remove(upstream);
    }

    /// The merged acknowledgement, once every upstream has acknowledged (or `force`),
    /// and only once.
    pub fn ready(&mut self, subscription_id: &Value, force: bool) -> Option<Value> {
        if self.sent || (!force && !self.waiting.is_empty()) {
            return None;
        }
        self.sent = true;
        Some(json!({
            "jsonrpc": "2.0",
            "method": ACKNOWLEDGED,
            "params": {
                "notifications": Value::Object(self.merged.clone()),
                "_meta": {SUBSCRIPTION_ID_META_KEY: subscription_id},
            },
        }))
    }
}

/// An upstream's notification as the client must see it: a resource URI renamed to
/// the client-visible one. `None` when the URI cannot be named (dropped, not leaked).
pub fn expose_notification(naming: &Naming, upstream: &str, mut msg: Value) -> Option<Value> {
    if msg.get("method").and_then(Value::as_str) == Some(RESOURCE_UPDATED) {
        let uri = msg.pointer("/params/uri").and_then(Value::as_str)?;
        let visible = naming.expose(upstream, NameKind::Resource, uri).ok()?;
        if let Some(p) = msg.get_mut("params").and_then(Value::as_object_mut) {
            p.insert("uri".into(), Value::String(visible));
        }
    }
    Some(msg)
}

/// The graceful end of the client's listen stream, once every upstream's has ended.
pub fn listen_result(id: &Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {"_meta": {SUBSCRIPTION_ID_META_KEY: id}, "resultType": "complete"},
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        Naming::new(
            "__",
            [
                ("db".to_string(), Some("db".to_string())),
                ("fs".to_string(), Some("fs".to_string())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn flags_go_everywhere_and_uris_to_their_owner() {
        let n = naming();
        let filter = json!({"toolsListChanged": true, "resourceSubscriptions": ["fs+file:///a"]});
        let routes = vec![n.resolve(NameKind::Resource, "fs+file:///a").unwrap()];
        let plan = split(filter.as_object().unwrap(), &routes, &["db", "fs"]);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].0, "db");
        assert_eq!(
            Value::Object(plan[0].1.clone()),
            json!({"toolsListChanged": true})
        );
        assert_eq!(
            Value::Object(plan[1].1.clone()),
            json!({"toolsListChanged": true, "resourceSubscriptions": [routes[0].name]})
        );
        // Only a URI: the other upstream is not asked at all.
        let filter = json!({"toolsListChanged": false, "resourceSubscriptions": ["fs+file:///a"]});
        let plan = split(filter.as_object().unwrap(), &routes, &["db", "fs"]);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].0, "fs");
    }

    #[test]
    fn acknowledgements_merge_once_all_arrived() {
        let n = naming();
        let mut m = AckMerger::new(["db", "fs"]);
        let id = json!(7);
        m.add(&n, "db", json!({"toolsListChanged": true}).as_object());
        assert!(m.ready(&id, false).is_none(), "fs has not acknowledged");
        m.add(
            &n,
            "fs",
            json!({"toolsListChanged": false, "promptsListChanged": true, "resourceSubscriptions": ["file:///a"]})
                .as_object(),
        );
        let ack = m.ready(&id, false).unwrap();
        assert_eq!(
            ack["params"]["notifications"],
            json!({"toolsListChanged": true, "promptsListChanged": true, "resourceSubscriptions": ["fs+file:///a"]})
        );
        assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID_META_KEY], json!(7));
        assert!(m.ready(&id, true).is_none(), "sent only once");
    }

    #[test]
    fn resource_updates_are_renamed_for_the_client() {
        let n = naming();
        let msg =
            json!({"jsonrpc": "2.0", "method": RESOURCE_UPDATED, "params": {"uri": "file:///a"}});
        let out = expose_notification(&n, "fs", msg).unwrap();
        assert_eq!(out["params"]["uri"], "fs+file:///a");
        let other = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        assert_eq!(expose_notification(&n, "db", other.clone()), Some(other));
    }
}
