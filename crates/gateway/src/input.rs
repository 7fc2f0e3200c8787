//! The policy input document: what a layer's Rego reads as `input` for one MCP request.
//!
//! ```json
//! {"agent":   {"id": "ci-bot", "role": "analyst", "scope": "read-only", "scopes": ["read-only"], "claims": {}},
//!  "request": {"method": "tools/call", "tool": "read_database", "server": "db",
//!              "params": {"target": "orders", "operation": "read"}},
//!  "session": {"id": "9f…", "protocol_version": "2025-11-25"}}
//! ```
//!
//! Shaped for the example policies (`examples/policies/mcp/*.rego`), which read
//! `input.agent.role`, `input.agent.scope == "read-only"`, `input.request.tool` (the
//! upstream's own name: `data.mcp.roles[role].tools` lists `read_database`, never
//! `db__read_database`) and `input.request.params.{target, operation, database, path,
//! host}` (the tool's arguments, iterated by the resource layer). Hence:
//!
//! - `request.params` is always an object: the `arguments` of `tools/call` and
//!   `prompts/get` (`{}` when absent), otherwise the request's params. `_meta` is left
//!   out, so the same call produces the same input in both protocol eras (2026-07-28
//!   puts the protocol version and client capabilities there on every request).
//! - `request.tool` / `request.prompt` / `request.uri` are the upstream's original
//!   names, and `request.server` names the upstream ([`crate::naming::Route`]).
//! - `agent.scope` is the scopes joined by spaces, as in OAuth's `scope` claim, so a
//!   single scope compares equal to a string; `agent.scopes` is the same as a list for
//!   policies that test membership (`"read-only" in input.agent.scopes`).
//! - `session.id` is absent in the stateless 2026-07-28 era.
//!
//! The schema is `schema/policy-input.schema.json` ([`SCHEMA`]); tests check every
//! document built here against it.

use serde::Serialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::era::ProtocolVersion;
use crate::jsonrpc::{META, Request, methods};
use crate::naming::{ListKind, Route};

/// The JSON Schema of the document (2020-12).
pub const SCHEMA: &str = include_str!("../schema/policy-input.schema.json");

/// Who is calling, as identity resolved it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Agent {
    /// The subject: an API key's identity id, or a token's `sub`.
    pub id: String,
    pub role: Option<String>,
    pub scopes: Vec<String>,
    /// The token's claims (empty for API keys).
    pub claims: Map<String, Value>,
}

/// The session the request belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// [`crate::session::SessionState::id`]; `None` in the stateless era.
    pub id: Option<String>,
    pub protocol_version: ProtocolVersion,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyInput {
    pub agent: AgentInput,
    pub request: RequestInput,
    pub session: SessionInput,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentInput {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub scope: String,
    pub scopes: Vec<String>,
    pub claims: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestInput {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The upstream's configured name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub params: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub protocol_version: ProtocolVersion,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    #[error("{method} names a tool, prompt or resource: resolve it to an upstream first")]
    MissingRoute { method: String },
}

impl AgentInput {
    fn from(agent: &Agent) -> AgentInput {
        AgentInput {
            id: agent.id.clone(),
            role: agent.role.clone(),
            scope: agent.scopes.join(" "),
            scopes: agent.scopes.clone(),
            claims: agent.claims.clone(),
        }
    }
}

impl SessionInput {
    fn from(session: &SessionInfo) -> SessionInput {
        SessionInput {
            id: session.id.clone(),
            protocol_version: session.protocol_version,
        }
    }
}

impl PolicyInput {
    /// The input for one request. `route` is where a request that names a tool,
    /// prompt or resource goes ([`crate::naming::Naming::resolve_target`]); for other
    /// methods it may name the upstream the request is forwarded to.
    pub fn for_request(
        agent: &Agent,
        session: &SessionInfo,
        request: &Request,
        route: Option<&Route>,
    ) -> Result<PolicyInput, InputError> {
        let params = request.params.as_ref().map(|p| p.as_map());
        let without_meta = || {
            let mut m = params.cloned().unwrap_or_default();
            m.remove(META);
            m
        };
        let arguments = || {
            params
                .and_then(|p| p.get("arguments"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let original = || {
            route
                .map(|r| r.name.clone())
                .ok_or(InputError::MissingRoute {
                    method: request.method.clone(),
                })
        };
        let mut input = RequestInput {
            method: request.method.clone(),
            tool: None,
            prompt: None,
            uri: None,
            server: route.map(|r| r.upstream.clone()),
            params: Map::new(),
        };
        match request.method.as_str() {
            methods::TOOLS_CALL => {
                input.tool = Some(original()?);
                input.params = arguments();
            }
            methods::PROMPTS_GET => {
                input.prompt = Some(original()?);
                input.params = arguments();
            }
            methods::RESOURCES_READ
            | methods::RESOURCES_SUBSCRIBE
            | methods::RESOURCES_UNSUBSCRIBE => {
                let uri = original()?;
                let mut p = without_meta();
                p.insert("uri".into(), Value::String(uri.clone()));
                input.uri = Some(uri);
                input.params = p;
            }
            _ => input.params = without_meta(),
        }
        Ok(PolicyInput {
            agent: AgentInput::from(agent),
            request: input,
            session: SessionInput::from(session),
        })
    }

    /// The input that decides whether one entry of a list result is shown: the list
    /// method, with the entry's upstream name in `tool`, `prompt` or `uri`, and no
    /// params (there are no arguments at list time).
    pub fn for_list_entry(
        agent: &Agent,
        session: &SessionInfo,
        list: ListKind,
        entry: &Route,
    ) -> PolicyInput {
        let name = Some(entry.name.clone());
        let (method, tool, prompt, uri) = match list {
            ListKind::Tools => (methods::TOOLS_LIST, name, None, None),
            ListKind::Prompts => (methods::PROMPTS_LIST, None, name, None),
            ListKind::Resources => (methods::RESOURCES_LIST, None, None, name),
            ListKind::ResourceTemplates => (methods::RESOURCES_TEMPLATES_LIST, None, None, name),
        };
        PolicyInput {
            agent: AgentInput::from(agent),
            request: RequestInput {
                method: method.to_string(),
                tool,
                prompt,
                uri,
                server: Some(entry.upstream.clone()),
                params: Map::new(),
            },
            session: SessionInput::from(session),
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::jsonrpc::{Message, ParseLimits, parse_message};
    use crate::naming::{NameKind, Naming};
    use serde_json::json;

    fn validator() -> jsonschema::Validator {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    }

    fn assert_valid(doc: &Value) {
        let v = validator();
        let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{doc}: {errors:?}");
    }

    fn request(body: &str) -> Request {
        match parse_message(body.as_bytes(), &ParseLimits::default()).unwrap() {
            Message::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn agent() -> Agent {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!("ci-bot"));
        claims.insert("tenant".into(), json!("a"));
        Agent {
            id: "ci-bot".into(),
            role: Some("analyst".into()),
            scopes: vec!["read-only".into()],
            claims,
        }
    }

    fn legacy() -> SessionInfo {
        SessionInfo {
            id: Some("9f2c".into()),
            protocol_version: ProtocolVersion::V2025_11_25,
        }
    }

    fn naming() -> Naming {
        Naming::new(
            "__",
            [
                ("db".to_string(), Some("db".to_string())),
                ("files".to_string(), Some("fs".to_string())),
            ],
        )
        .unwrap()
    }

    fn build(body: &str, session: &SessionInfo) -> Value {
        let r = request(body);
        let route = r.target().map(|t| naming().resolve_target(t).unwrap());
        let input = PolicyInput::for_request(&agent(), session, &r, route.as_ref()).unwrap();
        let v = input.to_value();
        assert_valid(&v);
        v
    }

    #[test]
    fn tools_call_input_fits_the_example_policies() {
        let v = build(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"db__read_database","arguments":{"target":"orders","operation":"read","database":"analytics"},"_meta":{"progressToken":"p"}}}"#,
            &legacy(),
        );
        assert_eq!(
            v,
            json!({
                "agent": {"id": "ci-bot", "role": "analyst", "scope": "read-only", "scopes": ["read-only"],
                          "claims": {"sub": "ci-bot", "tenant": "a"}},
                "request": {"method": "tools/call", "tool": "read_database", "server": "db",
                            "params": {"target": "orders", "operation": "read", "database": "analytics"}},
                "session": {"id": "9f2c", "protocol_version": "2025-11-25"}
            })
        );
    }

    #[test]
    fn both_eras_give_the_same_request_input() {
        let legacy_input = build(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"db__run_query","arguments":{"target":"select 1"}}}"#,
            &legacy(),
        );
        let modern = SessionInfo {
            id: None,
            protocol_version: ProtocolVersion::V2026_07_28,
        };
        let modern_input = build(
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"db__run_query","arguments":{"target":"select 1"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
            &modern,
        );
        assert_eq!(legacy_input["request"], modern_input["request"]);
        assert_eq!(
            modern_input["session"],
            json!({"protocol_version": "2026-07-28"})
        );
    }

    #[test]
    fn every_method_builds_a_valid_input() {
        for (body, expected_request) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"fs__read_file"}}"#,
                json!({"method": "tools/call", "tool": "read_file", "server": "files", "params": {}}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"db__review","arguments":{"code":"x"}}}"#,
                json!({"method": "prompts/get", "prompt": "review", "server": "db", "params": {"code": "x"}}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"fs+file:///var/log/audit/1.log"}}"#,
                json!({"method": "resources/read", "uri": "file:///var/log/audit/1.log", "server": "files",
                       "params": {"uri": "file:///var/log/audit/1.log"}}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"db+db://orders"}}"#,
                json!({"method": "resources/subscribe", "uri": "db://orders", "server": "db",
                       "params": {"uri": "db://orders"}}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"c2","_meta":{}}}"#,
                json!({"method": "tools/list", "params": {"cursor": "c2"}}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
                json!({"method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "c", "version": "1"}}}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
                json!({"method": "ping", "params": {}}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/templates/list"}"#,
                json!({"method": "resources/templates/list", "params": {}}),
            ),
        ] {
            let v = build(body, &legacy());
            assert_eq!(v["request"], expected_request, "{body}");
        }
    }

    #[test]
    fn list_entries_build_valid_inputs() {
        let entry = naming()
            .resolve(NameKind::Tool, "db__write_database")
            .unwrap();
        let v =
            PolicyInput::for_list_entry(&agent(), &legacy(), ListKind::Tools, &entry).to_value();
        assert_valid(&v);
        assert_eq!(
            v["request"],
            json!({"method": "tools/list", "tool": "write_database", "server": "db", "params": {}})
        );
        for list in [
            ListKind::Prompts,
            ListKind::Resources,
            ListKind::ResourceTemplates,
        ] {
            assert_valid(
                &PolicyInput::for_list_entry(&agent(), &legacy(), list, &entry).to_value(),
            );
        }
    }

    #[test]
    fn agent_without_role_or_scopes() {
        let a = Agent {
            id: "anon-key".into(),
            ..Agent::default()
        };
        let r = request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        let v = PolicyInput::for_request(&a, &legacy(), &r, None)
            .unwrap()
            .to_value();
        assert_valid(&v);
        assert_eq!(
            v["agent"],
            json!({"id": "anon-key", "scope": "", "scopes": [], "claims": {}})
        );
        let two = Agent {
            scopes: vec!["read-only".into(), "files".into()],
            ..agent()
        };
        let v = PolicyInput::for_request(&two, &legacy(), &r, None)
            .unwrap()
            .to_value();
        assert_eq!(v["agent"]["scope"], json!("read-only files"));
    }

    #[test]
    fn a_named_request_needs_its_route() {
        let r = request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#);
        assert_eq!(
            PolicyInput::for_request(&agent(), &legacy(), &r, None),
            Err(InputError::MissingRoute {
                method: "tools/call".into()
            })
        );
    }

    #[test]
    fn schema_rejects_malformed_inputs() {
        let good = build(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"db__read_database","arguments":{"target":"orders"}}}"#,
            &legacy(),
        );
        let v = validator();
        let patched = |path: &[&str], value: Option<Value>| {
            let mut doc = good.clone();
            let (last, parents) = path.split_last().unwrap();
            let mut cur = &mut doc;
            for p in parents {
                cur = cur.get_mut(*p).unwrap();
            }
            let obj = cur.as_object_mut().unwrap();
            match value {
                Some(x) => obj.insert(last.to_string(), x),
                None => obj.remove(*last),
            };
            doc
        };
        for (what, doc) in [
            ("no agent", patched(&["agent"], None)),
            ("no agent.id", patched(&["agent", "id"], None)),
            ("empty agent.id", patched(&["agent", "id"], Some(json!("")))),
            (
                "role not a string",
                patched(&["agent", "role"], Some(json!(["analyst"]))),
            ),
            (
                "scope a list",
                patched(&["agent", "scope"], Some(json!(["read-only"]))),
            ),
            (
                "scopes of numbers",
                patched(&["agent", "scopes"], Some(json!([1]))),
            ),
            (
                "claims a string",
                patched(&["agent", "claims"], Some(json!("x"))),
            ),
            (
                "unknown agent member",
                patched(&["agent", "name"], Some(json!("x"))),
            ),
            (
                "tools/call without tool",
                patched(&["request", "tool"], None),
            ),
            (
                "tools/call without server",
                patched(&["request", "server"], None),
            ),
            (
                "params an array",
                patched(&["request", "params"], Some(json!([]))),
            ),
            ("no params", patched(&["request", "params"], None)),
            (
                "method empty",
                patched(&["request", "method"], Some(json!(""))),
            ),
            (
                "prompt on tools/call",
                patched(&["request", "prompt"], Some(json!("p"))),
            ),
            (
                "unknown request member",
                patched(&["request", "arguments"], Some(json!({}))),
            ),
            (
                "unknown version",
                patched(&["session", "protocol_version"], Some(json!("1.0"))),
            ),
            (
                "session id a number",
                patched(&["session", "id"], Some(json!(7))),
            ),
            ("no session", patched(&["session"], None)),
            (
                "unknown top-level member",
                patched(&["decision"], Some(json!(true))),
            ),
        ] {
            assert!(!v.is_valid(&doc), "schema accepts {what}: {doc}");
        }
        // resources/read without uri, prompts/get without prompt.
        let read = build(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"db+x://y"}}"#,
            &legacy(),
        );
        let mut no_uri = read.clone();
        no_uri["request"].as_object_mut().unwrap().remove("uri");
        assert!(!v.is_valid(&no_uri));
        let prompt = build(
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"db__p"}}"#,
            &legacy(),
        );
        let mut no_prompt = prompt.clone();
        no_prompt["request"]
            .as_object_mut()
            .unwrap()
            .remove("prompt");
        assert!(!v.is_valid(&no_prompt));
    }
}
