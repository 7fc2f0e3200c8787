//! How the gateway says no: lockstep's JSON-RPC error codes and the two wire shapes of
//! a denial.
//!
//! Codes are application codes **outside** `-32768…-32000`, as the 2026-07-28 error-code
//! policy asks (`-32000…-32019` is legacy, `-32020…-32099` belongs to the MCP spec):
//!
//! | code | constant | meaning |
//! |---|---|---|
//! | `-31001` | [`POLICY_DENIED`] | a policy layer did not allow the request |
//! | `-31002` | [`POLICY_UNAVAILABLE`] | fail closed: no policy revision, or the active one is stale (`on_stale: deny`) |
//! | `-31003` | [`UNAUTHENTICATED`] | no valid credential (sent with HTTP 401 and a `WWW-Authenticate` challenge) |
//!
//! A denial is a JSON-RPC error whose `message` is the human reason and whose `data` is
//! `{reason, layer, decision_id, revision}` ([`Denial::error_response`]). A layer
//! configured with `deny_as_tool_error` answers a `tools/call` instead with a normal
//! result, `isError: true`, so the model can read the reason and retry with other
//! arguments ([`Denial::tool_result`]). The data then travels in `_meta` under
//! [`DENIAL_META_KEY`], not in `structuredContent`: a tool that declares an
//! `outputSchema` obliges clients to validate `structuredContent` against it, and a
//! denial record would not validate.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::era::Era;
use crate::jsonrpc::{ErrorObject, ErrorResponse, RequestId, result_response};

pub const POLICY_DENIED: i64 = -31001;
pub const POLICY_UNAVAILABLE: i64 = -31002;
pub const UNAUTHENTICATED: i64 = -31003;
/// The caller is known but lacks a scope `identity.required_scopes` names (HTTP 403).
pub const INSUFFICIENT_SCOPE: i64 = -31005;

/// `_meta` key of a tool-result denial (prefix `lockstep/`, valid under MCP's `_meta`
/// key rules and outside the reserved `*.modelcontextprotocol/` and `*.mcp/` prefixes).
pub const DENIAL_META_KEY: &str = "lockstep/denial";

/// Which kind of refusal this is; decides the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenialKind {
    /// A layer did not allow the request.
    Policy,
    /// The gateway could not decide with a current policy and failed closed.
    PolicyUnavailable,
    /// The caller is not authenticated.
    Unauthenticated,
}

impl DenialKind {
    pub fn code(self) -> i64 {
        match self {
            DenialKind::Policy => POLICY_DENIED,
            DenialKind::PolicyUnavailable => POLICY_UNAVAILABLE,
            DenialKind::Unauthenticated => UNAUTHENTICATED,
        }
    }
}

/// One refused request, as it is reported to the client and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    #[serde(skip)]
    pub kind: DenialKind,
    /// Human-readable, from the layer's `deny_reason` (or the gateway's own words).
    pub reason: String,
    /// The layer that denied, e.g. `mcp/tool_access`; `None` when no layer ran.
    pub layer: Option<String>,
    pub decision_id: String,
    /// The policy revision that decided; `None` when there is none (fail closed).
    pub revision: Option<String>,
}

impl Denial {
    /// `{reason, layer, decision_id, revision}`, with `null` for what is unknown.
    pub fn data(&self) -> Value {
        json!({
            "reason": self.reason,
            "layer": self.layer,
            "decision_id": self.decision_id,
            "revision": self.revision,
        })
    }

    pub fn error_object(&self) -> ErrorObject {
        ErrorObject::new(self.kind.code(), self.reason.clone(), Some(self.data()))
    }

    /// The JSON-RPC error response for request `id` (`None` for a notification or an
    /// unreadable id).
    pub fn error_response(&self, id: Option<&RequestId>) -> ErrorResponse {
        ErrorResponse::new(id.cloned(), self.error_object())
    }

    /// A `tools/call` result reporting the denial as a tool error. 2026-07-28 results
    /// carry `resultType`; older eras do not know the member.
    pub fn tool_result(&self, era: Era) -> Value {
        let mut result = Map::new();
        if era == Era::Modern {
            result.insert("resultType".into(), Value::from("complete"));
        }
        result.insert(
            "content".into(),
            json!([{"type": "text", "text": self.reason}]),
        );
        result.insert("isError".into(), Value::Bool(true));
        result.insert("_meta".into(), json!({ DENIAL_META_KEY: self.data() }));
        Value::Object(result)
    }

    /// The whole response message for [`Denial::tool_result`].
    pub fn tool_result_response(&self, id: &RequestId, era: Era) -> Value {
        result_response(id, self.tool_result(era))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn denial() -> Denial {
        Denial {
            kind: DenialKind::Policy,
            reason: "role 'analyst' has no access to tool 'write_database'".into(),
            layer: Some("mcp/tool_access".into()),
            decision_id: "d-1".into(),
            revision: Some("abc123".into()),
        }
    }

    #[test]
    fn codes_are_outside_the_reserved_range() {
        for code in [POLICY_DENIED, POLICY_UNAVAILABLE, UNAUTHENTICATED] {
            assert!(!(-32768..=-32000).contains(&code), "{code}");
        }
    }

    #[test]
    fn error_response_carries_reason_and_decision() {
        let v = denial()
            .error_response(Some(&RequestId::Number(9)))
            .to_value();
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "id": 9, "error": {
                "code": -31001,
                "message": "role 'analyst' has no access to tool 'write_database'",
                "data": {
                    "reason": "role 'analyst' has no access to tool 'write_database'",
                    "layer": "mcp/tool_access",
                    "decision_id": "d-1",
                    "revision": "abc123"
                }
            }})
        );
    }

    #[test]
    fn fail_closed_has_its_own_code_and_null_revision() {
        let d = Denial {
            kind: DenialKind::PolicyUnavailable,
            reason: "policy is stale (last confirmed 90 s ago)".into(),
            layer: None,
            decision_id: "d-2".into(),
            revision: None,
        };
        let v = d.error_response(None).to_value();
        assert_eq!(v["error"]["code"], json!(-31002));
        assert_eq!(v["error"]["data"]["revision"], Value::Null);
        assert_eq!(v["error"]["data"]["layer"], Value::Null);
        assert!(v.get("id").is_none());
    }

    #[test]
    fn tool_result_is_an_error_result_per_era() {
        let legacy = denial().tool_result(Era::Legacy);
        assert_eq!(
            legacy,
            json!({
                "content": [{"type": "text", "text": "role 'analyst' has no access to tool 'write_database'"}],
                "isError": true,
                "_meta": {"lockstep/denial": denial().data()}
            })
        );
        let modern = denial().tool_result_response(&RequestId::String("x".into()), Era::Modern);
        assert_eq!(modern["result"]["resultType"], json!("complete"));
        assert_eq!(modern["id"], json!("x"));
        assert!(modern["result"].get("structuredContent").is_none());
    }
}
