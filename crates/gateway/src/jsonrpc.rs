//! One incoming JSON-RPC 2.0 message, parsed strictly, and the JSON-RPC error objects a
//! refusal turns into.
//!
//! The gateway decides on what it parsed and forwards what it received, so the two must
//! not be able to differ: [`parse_message`] refuses anything an upstream could read
//! differently from lockstep (see [`crate::strict_json`]: duplicate keys at any depth,
//! excessive nesting, serde_json's marker keys), batches (dropped by both MCP eras),
//! unknown top-level members, and wrong types in the fields routing and policy rely on.
//!
//! **Key order and raw text.** serde_json's `preserve_order` feature is off in this
//! workspace and must stay off: Cargo unifies features, so turning it on here would turn
//! it on for `lockstep-bundle` in any build that contains both, and its canonical JSON
//! (bundle file hashes) relies on `Map` iterating in sorted key order. So a
//! [`RawObject`] keeps both the parsed `Map` (sorted keys: fine for policy input, where
//! order has no meaning) and the exact text received, which is what gets forwarded;
//! [`RawObject::with_member`] rewrites one member (a prefixed tool name) and keeps every
//! other member's text and order. Numbers keep their exact text too (`arbitrary_precision`).
//!
//! **Why not rmcp's model types.** `rmcp::model::JsonRpcMessage` is a
//! `#[serde(untagged)]` enum over `#[serde(flatten)]` structs: deserialising it buffers
//! the input through serde's `Content`, keeps the last of duplicate keys, drops or
//! re-orders members it does not model, and (with `arbitrary_precision`, which this
//! workspace has) cannot read numbers inside flattened/untagged structs. Its error and
//! result types would save a dozen lines of `Serialize` here at the cost of tokio,
//! futures, sha2 0.11 and the unicode tables as dependencies of a crate that has no I/O,
//! and the protocol version list is five strings ([`crate::era`]). rmcp may earn its
//! place later on the upstream side (stdio child processes, Streamable HTTP client), not
//! in this parser.

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::strict_json::{self, Member, ScanError, TopLevel};

/// Default largest request body (4 MiB); the HTTP layer enforces it before reading on.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default deepest nesting of arrays and objects.
pub const DEFAULT_MAX_DEPTH: usize = 64;
pub use crate::strict_json::MAX_DEPTH_LIMIT;

/// JSON-RPC 2.0's own error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// MCP methods whose params the gateway routes or decides on.
pub mod methods {
    pub const INITIALIZE: &str = "initialize";
    pub const SERVER_DISCOVER: &str = "server/discover";
    pub const TOOLS_LIST: &str = "tools/list";
    pub const TOOLS_CALL: &str = "tools/call";
    pub const PROMPTS_LIST: &str = "prompts/list";
    pub const PROMPTS_GET: &str = "prompts/get";
    pub const RESOURCES_LIST: &str = "resources/list";
    pub const RESOURCES_TEMPLATES_LIST: &str = "resources/templates/list";
    pub const RESOURCES_READ: &str = "resources/read";
    pub const RESOURCES_SUBSCRIBE: &str = "resources/subscribe";
    pub const RESOURCES_UNSUBSCRIBE: &str = "resources/unsubscribe";
}

/// The `_meta` member of params.
pub const META: &str = "_meta";

/// Size and depth limits for [`parse_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    pub max_body_bytes: usize,
    /// Capped at [`MAX_DEPTH_LIMIT`].
    pub max_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// A request id: MCP allows a string or an integer, never `null`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    String(String),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl RequestId {
    pub fn to_value(&self) -> Value {
        match self {
            RequestId::Number(n) => Value::from(*n),
            RequestId::String(s) => Value::String(s.clone()),
        }
    }
}

/// A JSON object as received: its exact text (forwarded) and its parsed members (read).
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    raw: String,
    members: Vec<Member>,
    value: Map<String, Value>,
}

impl RawObject {
    /// Parses `text`, which must be one JSON object that passes the strict checks.
    pub fn parse(text: &str, max_depth: usize) -> Result<RawObject, RpcError> {
        let scanned = strict_json::scan(text.as_bytes(), max_depth)?;
        if scanned.top != TopLevel::Object {
            return Err(RpcError::InvalidRequest {
                id: None,
                fault: RequestFault::NotAnObject,
            });
        }
        Self::from_scanned(text.to_string(), scanned.members)
    }

    fn from_scanned(raw: String, members: Vec<Member>) -> Result<RawObject, RpcError> {
        let value = serde_json::from_str(&raw).map_err(RpcError::Decode)?;
        Ok(RawObject {
            raw,
            members,
            value,
        })
    }

    /// An object built by the gateway itself (its text is serde_json's).
    pub fn from_map(value: Map<String, Value>) -> RawObject {
        let mut raw = String::from("{");
        let mut members = Vec::with_capacity(value.len());
        for (i, (k, v)) in value.iter().enumerate() {
            if i > 0 {
                raw.push(',');
            }
            let key_start = raw.len();
            raw.push_str(&Value::String(k.clone()).to_string());
            let key_span = key_start..raw.len();
            raw.push(':');
            let start = raw.len();
            raw.push_str(&v.to_string());
            members.push(Member {
                key: k.clone(),
                key_span,
                value: start..raw.len(),
            });
        }
        raw.push('}');
        RawObject {
            raw,
            members,
            value,
        }
    }

    /// The exact text received.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.value
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key)
    }

    /// The raw text of one member's value.
    pub fn raw_member(&self, key: &str) -> Option<&str> {
        let m = self.members.iter().find(|m| m.key == key)?;
        self.raw.get(m.value.clone())
    }

    /// Member keys in the order they were written.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.key.as_str())
    }

    /// A copy with member `key` set to `value` (appended when absent). Every other
    /// member keeps its exact text and position, so only the rewritten value differs
    /// from what the client sent.
    pub fn with_member(&self, key: &str, value: &Value) -> RawObject {
        let mut raw = String::with_capacity(self.raw.len() + 16);
        raw.push('{');
        let mut members = Vec::with_capacity(self.members.len() + 1);
        let mut replaced = false;
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                raw.push(',');
            }
            let key_text = self.raw.get(m.key_span.clone()).unwrap_or_default();
            let key_start = raw.len();
            raw.push_str(key_text);
            let key_span = key_start..raw.len();
            raw.push(':');
            let start = raw.len();
            if m.key == key {
                raw.push_str(&value.to_string());
                replaced = true;
            } else {
                raw.push_str(self.raw.get(m.value.clone()).unwrap_or_default());
            }
            members.push(Member {
                key: m.key.clone(),
                key_span,
                value: start..raw.len(),
            });
        }
        if !replaced {
            if !members.is_empty() {
                raw.push(',');
            }
            let key_start = raw.len();
            raw.push_str(&Value::String(key.to_string()).to_string());
            let key_span = key_start..raw.len();
            raw.push(':');
            let start = raw.len();
            raw.push_str(&value.to_string());
            members.push(Member {
                key: key.to_string(),
                key_span,
                value: start..raw.len(),
            });
        }
        raw.push('}');
        let mut map = self.value.clone();
        map.insert(key.to_string(), value.clone());
        RawObject {
            raw,
            members,
            value: map,
        }
    }

    /// `params._meta`, when it is an object (checked by [`parse_message`]).
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.value.get(META).and_then(Value::as_object)
    }
}

/// What a request addresses by name: the member the gateway routes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Tool(&'a str),
    Prompt(&'a str),
    Resource(&'a str),
}

impl Target<'_> {
    /// The params member that carries the name (`name` or `uri`).
    pub fn member(&self) -> &'static str {
        match self {
            Target::Tool(_) | Target::Prompt(_) => "name",
            Target::Resource(_) => "uri",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Target::Tool(n) | Target::Prompt(n) | Target::Resource(n) => n,
        }
    }
}

/// A request: has an id and expects a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub method: String,
    pub params: Option<RawObject>,
}

/// A notification: no id, no response.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Option<RawObject>,
}

/// A response (in the 2025 era a client answers server requests such as sampling).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// `None` only for an error response whose request id could not be read.
    pub id: Option<RequestId>,
    pub payload: ResponsePayload,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponsePayload {
    Result(RawObject),
    /// `raw` is the error object as received; `code` and `message` were checked.
    Error {
        code: i64,
        message: String,
        raw: RawObject,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Request),
    Notification(Notification),
    Response(Response),
}

impl Request {
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.params.as_ref().and_then(RawObject::meta)
    }

    pub fn param(&self, key: &str) -> Option<&Value> {
        self.params.as_ref().and_then(|p| p.get(key))
    }

    /// The tool, prompt or resource this request names (checked to be a string by
    /// [`parse_message`]).
    pub fn target(&self) -> Option<Target<'_>> {
        let text = |k: &str| self.param(k).and_then(Value::as_str);
        match self.method.as_str() {
            methods::TOOLS_CALL => text("name").map(Target::Tool),
            methods::PROMPTS_GET => text("name").map(Target::Prompt),
            methods::RESOURCES_READ
            | methods::RESOURCES_SUBSCRIBE
            | methods::RESOURCES_UNSUBSCRIBE => text("uri").map(Target::Resource),
            _ => None,
        }
    }

    /// The request as JSON text, with params forwarded verbatim.
    pub fn encode(&self) -> String {
        encode_call(Some(&self.id), &self.method, self.params.as_ref())
    }
}

impl Notification {
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.params.as_ref().and_then(RawObject::meta)
    }

    pub fn encode(&self) -> String {
        encode_call(None, &self.method, self.params.as_ref())
    }
}

impl Response {
    pub fn encode(&self) -> String {
        let id = self
            .id
            .as_ref()
            .map_or_else(|| "null".to_string(), |i| i.to_value().to_string());
        let (name, body) = match &self.payload {
            ResponsePayload::Result(r) => ("result", r.raw()),
            ResponsePayload::Error { raw, .. } => ("error", raw.raw()),
        };
        format!(r#"{{"jsonrpc":"2.0","id":{id},"{name}":{body}}}"#)
    }
}

impl Message {
    pub fn encode(&self) -> String {
        match self {
            Message::Request(r) => r.encode(),
            Message::Notification(n) => n.encode(),
            Message::Response(r) => r.encode(),
        }
    }

    /// The id, for error replies (a notification has none).
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Message::Request(r) => Some(&r.id),
            Message::Notification(_) => None,
            Message::Response(r) => r.id.as_ref(),
        }
    }
}

fn encode_call(id: Option<&RequestId>, method: &str, params: Option<&RawObject>) -> String {
    let mut out = String::from(r#"{"jsonrpc":"2.0""#);
    if let Some(id) = id {
        out.push_str(r#","id":"#);
        out.push_str(&id.to_value().to_string());
    }
    out.push_str(r#","method":"#);
    out.push_str(&Value::String(method.to_string()).to_string());
    if let Some(p) = params {
        out.push_str(r#","params":"#);
        out.push_str(p.raw());
    }
    out.push('}');
    out
}

/// Why a message is not a valid JSON-RPC request object (-32600).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestFault {
    #[error("the message is not a JSON object")]
    NotAnObject,
    #[error("missing \"jsonrpc\": \"2.0\"")]
    MissingVersion,
    #[error("\"jsonrpc\" must be the string \"2.0\"")]
    WrongVersion,
    #[error("\"method\" must be a string")]
    MethodNotString,
    #[error("\"method\" must not be empty")]
    EmptyMethod,
    #[error("\"id\" must be a string or an integer")]
    IdWrongType,
    #[error("\"id\" must not be null")]
    IdNull,
    #[error("\"id\" is outside the 64-bit integer range")]
    IdOutOfRange,
    #[error("\"params\" must be an object")]
    ParamsWrongType,
    #[error("unknown member {0:?}")]
    UnknownMember(String),
    #[error("a request must not have \"result\" or \"error\"")]
    RequestWithOutcome,
    #[error("a response needs an \"id\"")]
    ResponseWithoutId,
    #[error("a response needs exactly one of \"result\" and \"error\"")]
    ResponseOutcome,
    #[error("\"result\" must be an object")]
    ResultNotObject,
    #[error("\"error\" must be an object with an integer \"code\" and a string \"message\"")]
    MalformedError,
    #[error("a response with a null \"id\" must be an error")]
    NullIdResult,
}

/// Why a request's params do not fit its method (-32602).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamsFault {
    #[error("params must be an object, not an array")]
    ArrayParams,
    #[error("params are required")]
    Missing,
    #[error("params.{0} is required")]
    MissingMember(&'static str),
    #[error("params.{0} must be a string")]
    NotAString(&'static str),
    #[error("params.{0} must be an object")]
    NotAnObject(&'static str),
}

/// A refusal of an incoming message, ready to become a JSON-RPC error response.
#[derive(Debug, Error)]
pub enum RpcError {
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("parse error: {0}")]
    Parse(#[from] ScanError),
    #[error("parse error: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("invalid request: batches are not supported, send one JSON-RPC message per request")]
    Batch,
    #[error("invalid request: {fault}")]
    InvalidRequest {
        id: Option<RequestId>,
        fault: RequestFault,
    },
    #[error("invalid params for {method}: {fault}")]
    InvalidParams {
        id: RequestId,
        method: String,
        fault: ParamsFault,
    },
    #[error("method not found: {method}")]
    MethodNotFound { id: RequestId, method: String },
}

impl RpcError {
    pub fn code(&self) -> i64 {
        match self {
            RpcError::Parse(_) | RpcError::Decode(_) => PARSE_ERROR,
            RpcError::BodyTooLarge { .. } | RpcError::Batch | RpcError::InvalidRequest { .. } => {
                INVALID_REQUEST
            }
            RpcError::InvalidParams { .. } => INVALID_PARAMS,
            RpcError::MethodNotFound { .. } => METHOD_NOT_FOUND,
        }
    }

    /// The request id, when it could be read.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            RpcError::InvalidRequest { id, .. } => id.as_ref(),
            RpcError::InvalidParams { id, .. } | RpcError::MethodNotFound { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The HTTP status to answer with: 413 for an oversized body, 404 for an unknown
    /// method (2026-07-28 requires it; 2025-era clients read the JSON-RPC body at any
    /// 4xx), 400 otherwise.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            RpcError::BodyTooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            RpcError::MethodNotFound { .. } => http::StatusCode::NOT_FOUND,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }

    pub fn to_error_object(&self) -> ErrorObject {
        ErrorObject::new(self.code(), self.to_string(), None)
    }

    pub fn to_response(&self) -> ErrorResponse {
        ErrorResponse {
            id: self.id().cloned(),
            error: self.to_error_object(),
        }
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>, data: Option<Value>) -> ErrorObject {
        ErrorObject {
            code,
            message: message.into(),
            data,
        }
    }
}

/// A JSON-RPC error response. Without an id the member is left out, as both MCP
/// schemas allow (`id?: RequestId`); a 2026-07-28 schema check refuses `"id": null`.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorResponse {
    pub id: Option<RequestId>,
    pub error: ErrorObject,
}

impl Serialize for ErrorResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("jsonrpc", "2.0")?;
        if let Some(id) = &self.id {
            m.serialize_entry("id", id)?;
        }
        m.serialize_entry("error", &self.error)?;
        m.end()
    }
}

impl ErrorResponse {
    pub fn new(id: Option<RequestId>, error: ErrorObject) -> ErrorResponse {
        ErrorResponse { id, error }
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("jsonrpc".into(), Value::from("2.0"));
        if let Some(id) = &self.id {
            m.insert("id".into(), id.to_value());
        }
        m.insert(
            "error".into(),
            serde_json::to_value(&self.error).unwrap_or(Value::Null),
        );
        Value::Object(m)
    }
}

/// A JSON-RPC result response built by the gateway (e.g. a denial as a tool result).
pub fn result_response(id: &RequestId, result: Value) -> Value {
    let mut m = Map::new();
    m.insert("jsonrpc".into(), Value::from("2.0"));
    m.insert("id".into(), id.to_value());
    m.insert("result".into(), result);
    Value::Object(m)
}

/// The members of the top-level object, by name.
#[derive(Default)]
struct Envelope<'a> {
    jsonrpc: Option<&'a str>,
    id: Option<&'a str>,
    method: Option<&'a str>,
    params: Option<&'a str>,
    result: Option<&'a str>,
    error: Option<&'a str>,
    unknown: Option<&'a str>,
}

/// Parses one JSON-RPC message from a request body.
pub fn parse_message(body: &[u8], limits: &ParseLimits) -> Result<Message, RpcError> {
    if body.len() > limits.max_body_bytes {
        return Err(RpcError::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    let scanned = strict_json::scan(body, limits.max_depth)?;
    match scanned.top {
        TopLevel::Object => {}
        TopLevel::Array => return Err(RpcError::Batch),
        TopLevel::Scalar => {
            return Err(RpcError::InvalidRequest {
                id: None,
                fault: RequestFault::NotAnObject,
            });
        }
    }
    // The scan proved `body` is UTF-8.
    let text = std::str::from_utf8(body).unwrap_or_default();
    let span = |m: &Member| text.get(m.value.clone()).unwrap_or_default();
    let mut env = Envelope::default();
    for m in &scanned.members {
        let v = Some(span(m));
        match m.key.as_str() {
            "jsonrpc" => env.jsonrpc = v,
            "id" => env.id = v,
            "method" => env.method = v,
            "params" => env.params = v,
            "result" => env.result = v,
            "error" => env.error = v,
            _ => {
                if env.unknown.is_none() {
                    env.unknown = Some(m.key.as_str());
                }
            }
        }
    }

    // The id first, so every later refusal can carry it.
    let id = env.id.map(parse_id);
    let known_id = match &id {
        Some(Ok(Some(i))) => Some(i.clone()),
        _ => None,
    };
    let invalid = |fault| RpcError::InvalidRequest {
        id: known_id.clone(),
        fault,
    };

    if let Some(key) = env.unknown {
        return Err(invalid(RequestFault::UnknownMember(key.to_string())));
    }
    match env.jsonrpc {
        None => return Err(invalid(RequestFault::MissingVersion)),
        Some(raw) if raw != r#""2.0""# && decode_str(raw).as_deref() != Some("2.0") => {
            return Err(invalid(RequestFault::WrongVersion));
        }
        Some(_) => {}
    }

    if let Some(method_raw) = env.method {
        if env.result.is_some() || env.error.is_some() {
            return Err(invalid(RequestFault::RequestWithOutcome));
        }
        let method =
            decode_str(method_raw).ok_or_else(|| invalid(RequestFault::MethodNotString))?;
        if method.is_empty() {
            return Err(invalid(RequestFault::EmptyMethod));
        }
        let id = match id {
            None => None,
            Some(Ok(Some(i))) => Some(i),
            Some(Ok(None)) => return Err(invalid(RequestFault::IdNull)),
            Some(Err(fault)) => return Err(invalid(fault)),
        };
        let params = match env.params {
            None => None,
            Some(raw) => match raw.as_bytes().first() {
                Some(b'{') => Some(object(raw, limits)?),
                Some(b'[') => match &id {
                    Some(id) => {
                        return Err(RpcError::InvalidParams {
                            id: id.clone(),
                            method,
                            fault: ParamsFault::ArrayParams,
                        });
                    }
                    None => return Err(invalid(RequestFault::ParamsWrongType)),
                },
                _ => return Err(invalid(RequestFault::ParamsWrongType)),
            },
        };
        return match id {
            Some(id) => {
                check_params(&method, params.as_ref()).map_err(|fault| {
                    RpcError::InvalidParams {
                        id: id.clone(),
                        method: method.clone(),
                        fault,
                    }
                })?;
                Ok(Message::Request(Request { id, method, params }))
            }
            None => {
                if let Some(p) = &params
                    && p.get(META).is_some_and(|m| !m.is_object())
                {
                    return Err(invalid(RequestFault::ParamsWrongType));
                }
                Ok(Message::Notification(Notification { method, params }))
            }
        };
    }

    // No method: a response.
    if env.params.is_some() {
        return Err(invalid(RequestFault::UnknownMember("params".into())));
    }
    let id = match id {
        None => return Err(invalid(RequestFault::ResponseWithoutId)),
        Some(Ok(i)) => i,
        Some(Err(fault)) => return Err(invalid(fault)),
    };
    let payload = match (env.result, env.error) {
        (Some(raw), None) => {
            if id.is_none() {
                return Err(invalid(RequestFault::NullIdResult));
            }
            if !raw.starts_with('{') {
                return Err(invalid(RequestFault::ResultNotObject));
            }
            ResponsePayload::Result(object(raw, limits)?)
        }
        (None, Some(raw)) => {
            if !raw.starts_with('{') {
                return Err(invalid(RequestFault::MalformedError));
            }
            let obj = object(raw, limits)?;
            let code = obj.get("code").and_then(strict_integer);
            let message = obj.get("message").and_then(Value::as_str);
            let only_known = obj.keys().all(|k| matches!(k, "code" | "message" | "data"));
            match (code, message) {
                (Some(code), Some(message)) if only_known => ResponsePayload::Error {
                    code,
                    message: message.to_string(),
                    raw: obj,
                },
                _ => return Err(invalid(RequestFault::MalformedError)),
            }
        }
        _ => return Err(invalid(RequestFault::ResponseOutcome)),
    };
    Ok(Message::Response(Response { id, payload }))
}

fn object(raw: &str, limits: &ParseLimits) -> Result<RawObject, RpcError> {
    // Already scanned as part of the body; the nested scan only finds member spans.
    RawObject::parse(raw, limits.max_depth)
}

fn decode_str(raw: &str) -> Option<String> {
    if !raw.starts_with('"') {
        return None;
    }
    serde_json::from_str::<String>(raw).ok()
}

/// `Ok(None)` is `null`.
fn parse_id(raw: &str) -> Result<Option<RequestId>, RequestFault> {
    match raw.as_bytes().first() {
        Some(b'"') => decode_str(raw)
            .map(|s| Some(RequestId::String(s)))
            .ok_or(RequestFault::IdWrongType),
        Some(b'-' | b'0'..=b'9') => {
            // An integer literal only: `1.0` and `1e3` are numbers MCP does not allow as ids.
            if raw.contains(['.', 'e', 'E']) {
                return Err(RequestFault::IdWrongType);
            }
            raw.parse::<i64>()
                .map(|n| Some(RequestId::Number(n)))
                .map_err(|_| RequestFault::IdOutOfRange)
        }
        _ if raw == "null" => Ok(None),
        _ => Err(RequestFault::IdWrongType),
    }
}

/// An integer written as one (`-32602`, not `-32602.0`).
fn strict_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let text = n.to_string();
            if text.contains(['.', 'e', 'E']) {
                None
            } else {
                n.as_i64()
            }
        }
        _ => None,
    }
}

/// The params members that routing and policy read, per method.
fn check_params(method: &str, params: Option<&RawObject>) -> Result<(), ParamsFault> {
    if let Some(p) = params
        && p.get(META).is_some_and(|m| !m.is_object())
    {
        return Err(ParamsFault::NotAnObject(META));
    }
    let modern = params
        .and_then(RawObject::meta)
        .is_some_and(|m| m.contains_key(crate::era::PROTOCOL_VERSION_META_KEY));
    let (name_key, arguments) = match method {
        // Removed in 2026-07-28: answered 404 by the front door, whatever the params.
        methods::RESOURCES_SUBSCRIBE | methods::RESOURCES_UNSUBSCRIBE if modern => return Ok(()),
        methods::TOOLS_CALL | methods::PROMPTS_GET => ("name", true),
        methods::RESOURCES_READ | methods::RESOURCES_SUBSCRIBE | methods::RESOURCES_UNSUBSCRIBE => {
            ("uri", false)
        }
        _ => return Ok(()),
    };
    let p = params.ok_or(ParamsFault::Missing)?;
    match p.get(name_key) {
        None => return Err(ParamsFault::MissingMember(name_key)),
        Some(Value::String(_)) => {}
        Some(_) => return Err(ParamsFault::NotAString(name_key)),
    }
    if arguments && p.get("arguments").is_some_and(|a| !a.is_object()) {
        return Err(ParamsFault::NotAnObject("arguments"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use crate::strict_json::ScanErrorKind;
    use serde_json::json;

    fn parse(text: &str) -> Result<Message, RpcError> {
        parse_message(text.as_bytes(), &ParseLimits::default())
    }

    fn request(text: &str) -> Request {
        match parse(text).unwrap() {
            Message::Request(r) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn fault(text: &str) -> (Option<RequestId>, RequestFault) {
        match parse(text).unwrap_err() {
            RpcError::InvalidRequest { id, fault } => (id, fault),
            other => panic!("not an invalid request: {other:?}"),
        }
    }

    #[test]
    fn parses_a_tools_call_request() {
        let r = request(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"db__read","arguments":{"target":"orders"},"_meta":{"progressToken":"t"}}}"#,
        );
        assert_eq!(r.id, RequestId::Number(7));
        assert_eq!(r.method, "tools/call");
        assert_eq!(r.target(), Some(Target::Tool("db__read")));
        assert_eq!(r.param("arguments"), Some(&json!({"target": "orders"})));
        assert_eq!(r.meta().unwrap().get("progressToken"), Some(&json!("t")));
    }

    #[test]
    fn parses_notifications_and_responses() {
        let m = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(
            matches!(m, Message::Notification(Notification { ref method, params: None }) if method == "notifications/initialized")
        );
        let m = parse(r#"{"jsonrpc":"2.0","id":"s-1","result":{"role":"assistant"}}"#).unwrap();
        let Message::Response(r) = m else {
            panic!("not a response")
        };
        assert_eq!(r.id, Some(RequestId::String("s-1".into())));
        assert!(
            matches!(r.payload, ResponsePayload::Result(ref o) if o.get("role") == Some(&json!("assistant")))
        );
        let m = parse(
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad","data":[1]}}"#,
        )
        .unwrap();
        let Message::Response(r) = m else {
            panic!("not a response")
        };
        assert_eq!(r.id, None);
        assert!(
            matches!(r.payload, ResponsePayload::Error { code: -32700, ref message, .. } if message == "bad")
        );
    }

    #[test]
    fn forwards_params_verbatim() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{ "z":1, "name":"a", "arguments":{"n":12345678901234567890123,"f":1.50,"s":"\u00e9"} }}"#;
        let r = request(body);
        let raw = r.params.as_ref().unwrap().raw();
        assert_eq!(
            raw,
            r#"{ "z":1, "name":"a", "arguments":{"n":12345678901234567890123,"f":1.50,"s":"\u00e9"} }"#
        );
        assert_eq!(
            r.encode(),
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{raw}}}"#)
        );
        // The parsed value keeps the exact number for the policy.
        let n = &r.param("arguments").unwrap()["n"];
        assert_eq!(n.to_string(), "12345678901234567890123");
    }

    #[test]
    fn with_member_rewrites_one_member_only() {
        let r = request(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"z":[1, 2],"n\u0061me":"db__read","arguments":{"b":1,"a":2}}}"#,
        );
        let p = r.params.unwrap().with_member("name", &json!("read"));
        assert_eq!(
            p.raw(),
            r#"{"z":[1, 2],"n\u0061me":"read","arguments":{"b":1,"a":2}}"#
        );
        assert_eq!(p.get("name"), Some(&json!("read")));
        // The rewritten text is still strictly valid and says the same.
        let again = RawObject::parse(p.raw(), 64).unwrap();
        assert_eq!(again.as_map(), p.as_map());
        assert_eq!(p.raw_member("name"), Some(r#""read""#));
        let appended = RawObject::parse("{}", 64)
            .unwrap()
            .with_member("k", &json!(1));
        assert_eq!(appended.raw(), r#"{"k":1}"#);
    }

    #[test]
    fn refuses_parse_errors_with_32700() {
        for body in [
            "",
            "{",
            r#"{"jsonrpc":"2.0","id":1,"method":"x""#,
            "not json",
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.code(), PARSE_ERROR, "{body:?}");
            assert_eq!(e.id(), None);
        }
    }

    #[test]
    fn refuses_duplicate_keys_anywhere() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"path":"/ok","path":"/etc/shadow"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[{"k":1,"k":2}]}}}"#,
        ] {
            let e = parse(body).unwrap_err();
            assert!(
                matches!(
                    &e,
                    RpcError::Parse(ScanError {
                        kind: ScanErrorKind::DuplicateKey(_),
                        ..
                    })
                ),
                "{body}: {e}"
            );
            assert_eq!(e.code(), PARSE_ERROR);
        }
    }

    #[test]
    fn refuses_excessive_depth_and_size() {
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{"x":{}1{}}}}}}}"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        let e = parse(&deep).unwrap_err();
        assert!(matches!(
            e,
            RpcError::Parse(ScanError {
                kind: ScanErrorKind::TooDeep { limit: 64 },
                ..
            })
        ));
        let limits = ParseLimits {
            max_body_bytes: 10,
            max_depth: 64,
        };
        let e = parse_message(br#"{"jsonrpc":"2.0","method":"ping"}"#, &limits).unwrap_err();
        assert!(matches!(
            e,
            RpcError::BodyTooLarge {
                size: 33,
                limit: 10
            }
        ));
        assert_eq!(e.http_status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn refuses_batches() {
        let e = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert!(matches!(e, RpcError::Batch));
        assert_eq!(e.code(), INVALID_REQUEST);
        // An invalid batch is a parse error first.
        assert_eq!(parse("[{]").unwrap_err().code(), PARSE_ERROR);
    }

    #[test]
    fn refuses_wrong_envelope_types_with_the_id() {
        let id = Some(RequestId::Number(3));
        for (body, expected, with_id) in [
            (
                r#"{"id":3,"method":"ping"}"#,
                RequestFault::MissingVersion,
                true,
            ),
            (
                r#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#,
                RequestFault::WrongVersion,
                true,
            ),
            (
                r#"{"jsonrpc":2.0,"id":3,"method":"ping"}"#,
                RequestFault::WrongVersion,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":7}"#,
                RequestFault::MethodNotString,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":""}"#,
                RequestFault::EmptyMethod,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"ping","params":"x"}"#,
                RequestFault::ParamsWrongType,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"ping","extra":1}"#,
                RequestFault::UnknownMember("extra".into()),
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"ping","result":{}}"#,
                RequestFault::RequestWithOutcome,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                RequestFault::IdWrongType,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#,
                RequestFault::IdWrongType,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
                RequestFault::IdWrongType,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
                RequestFault::IdWrongType,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                RequestFault::IdNull,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":99999999999999999999,"method":"ping"}"#,
                RequestFault::IdOutOfRange,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3}"#,
                RequestFault::ResponseOutcome,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","result":{}}"#,
                RequestFault::ResponseWithoutId,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"result":{},"error":{"code":1,"message":"m"}}"#,
                RequestFault::ResponseOutcome,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"result":[1]}"#,
                RequestFault::ResultNotObject,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
                RequestFault::NullIdResult,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"error":{"code":"x","message":"m"}}"#,
                RequestFault::MalformedError,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"error":{"code":1.0,"message":"m"}}"#,
                RequestFault::MalformedError,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"m","x":1}}"#,
                RequestFault::MalformedError,
                true,
            ),
            ("42", RequestFault::NotAnObject, false),
        ] {
            let (got_id, got) = fault(body);
            assert_eq!(got, expected, "{body}");
            assert_eq!(got_id, if with_id { id.clone() } else { None }, "{body}");
        }
    }

    #[test]
    fn string_ids_and_escaped_version_are_read_exactly() {
        let r = request(r#"{"jsonrpc":"2\u002e0","id":"  A b ","method":"ping"}"#);
        assert_eq!(r.id, RequestId::String("  A b ".into()));
        assert_eq!(
            r.encode(),
            r#"{"jsonrpc":"2.0","id":"  A b ","method":"ping"}"#
        );
    }

    #[test]
    fn checks_params_of_routed_methods() {
        let id = RequestId::Number(1);
        for (body, method, expected) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
                "tools/call",
                ParamsFault::Missing,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
                "tools/call",
                ParamsFault::MissingMember("name"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":1}}"#,
                "tools/call",
                ParamsFault::NotAString("name"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":[1]}}"#,
                "tools/call",
                ParamsFault::NotAnObject("arguments"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":null}}"#,
                "tools/call",
                ParamsFault::NotAnObject("arguments"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":null}}"#,
                "prompts/get",
                ParamsFault::NotAString("name"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}}"#,
                "resources/read",
                ParamsFault::MissingMember("uri"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":["x"]}}"#,
                "resources/read",
                ParamsFault::NotAString("uri"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":[]}}"#,
                "tools/list",
                ParamsFault::NotAnObject("_meta"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[]}"#,
                "tools/list",
                ParamsFault::ArrayParams,
            ),
        ] {
            match parse(body).unwrap_err() {
                RpcError::InvalidParams {
                    id: got_id,
                    method: m,
                    fault,
                } => {
                    assert_eq!(
                        (got_id, m.as_str(), fault),
                        (id.clone(), method, expected),
                        "{body}"
                    );
                }
                other => panic!("{body}: {other}"),
            }
        }
        // Arguments may be absent; unknown methods are not checked here.
        request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}"#);
        request(r#"{"jsonrpc":"2.0","id":1,"method":"vendor/thing","params":{"name":5}}"#);
    }

    #[test]
    fn error_responses_carry_code_message_and_id() {
        let e = parse(r#"{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":2}}"#)
            .unwrap_err();
        let v = e.to_response().to_value();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":"r1","error":{"code":-32602,"message":"invalid params for tools/call: params.name must be a string"}})
        );
        assert_eq!(serde_json::to_value(e.to_response()).unwrap(), v);
        let e = parse("{").unwrap_err();
        let v = e.to_response().to_value();
        assert_eq!(v["error"]["code"], json!(-32700));
        assert!(v.get("id").is_none());
        let e = RpcError::MethodNotFound {
            id: RequestId::Number(4),
            method: "server/discover".into(),
        };
        assert_eq!(e.code(), METHOD_NOT_FOUND);
        assert_eq!(e.http_status(), http::StatusCode::NOT_FOUND);
        assert_eq!(
            e.to_response().to_value(),
            json!({"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"method not found: server/discover"}})
        );
    }

    #[test]
    fn response_encoding_is_verbatim() {
        let body = r#"{"jsonrpc":"2.0","id":5,"result":{"b":1, "a":[true]}}"#;
        let m = parse(body).unwrap();
        assert_eq!(m.encode(), body);
        assert_eq!(m.id(), Some(&RequestId::Number(5)));
        let n = parse(
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
        )
        .unwrap();
        assert_eq!(
            n.encode(),
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#
        );
    }

    #[test]
    fn raw_object_from_map_round_trips() {
        let mut m = Map::new();
        m.insert("b".into(), json!({"x": "y\"z"}));
        m.insert("a".into(), json!([1, 2]));
        let o = RawObject::from_map(m.clone());
        assert_eq!(RawObject::parse(o.raw(), 64).unwrap().as_map(), &m);
        assert_eq!(o.raw_member("b"), Some(r#"{"x":"y\"z"}"#));
        let o2 = o.with_member("a", &json!(null));
        assert_eq!(o2.raw(), r#"{"a":null,"b":{"x":"y\"z"}}"#);
    }
}
