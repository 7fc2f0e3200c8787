//! The two MCP protocol eras and how a request tells which one it speaks.
//!
//! - **Legacy** (2024-11-05 … 2025-11-25): an `initialize` handshake negotiates the
//!   version for a session (`Mcp-Session-Id`); later requests repeat it in the
//!   `MCP-Protocol-Version` header (from 2025-06-18; a client that omits it is served
//!   with the session's version).
//! - **Modern** (2026-07-28): no handshake and no session; every request carries its
//!   version in `params._meta["io.modelcontextprotocol/protocolVersion"]` and mirrors it,
//!   its method and its tool/prompt name or resource URI in the `MCP-Protocol-Version`,
//!   `Mcp-Method` and `Mcp-Name` headers. A server that reads the body must refuse a
//!   header that disagrees with it: HTTP 400 with `-32020` HeaderMismatch.
//!
//! The gateway decides on the parsed body; this module only checks that the headers say
//! the same, so that a load balancer routing on headers and the gateway deciding on the
//! body cannot be shown two different requests.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};
use thiserror::Error;

use crate::jsonrpc::{
    ErrorObject, ErrorResponse, INVALID_PARAMS, INVALID_REQUEST, RawObject, RequestId, methods,
};

/// `_meta` key of the per-request protocol version (2026-07-28).
pub const PROTOCOL_VERSION_META_KEY: &str = "io.modelcontextprotocol/protocolVersion";

/// Header names (lowercase: `http` compares them case-insensitively, as RFC 9110 asks).
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const HEADER_METHOD: &str = "mcp-method";
pub const HEADER_NAME: &str = "mcp-name";
pub const HEADER_SESSION_ID: &str = "mcp-session-id";

/// MCP error codes (2026-07-28 schema).
pub const HEADER_MISMATCH: i64 = -32020;
pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// The sentinel around a Base64-encoded header value (`=?base64?…?=`, case-sensitive).
const B64_PREFIX: &str = "=?base64?";
const B64_SUFFIX: &str = "?=";

/// Which era a version belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Era {
    /// `initialize` and sessions (2025-11-25 and earlier).
    Legacy,
    /// Per-request `_meta`, stateless (2026-07-28 and later).
    Modern,
}

/// The protocol versions lockstep knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    V2024_11_05,
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl ProtocolVersion {
    /// Oldest first.
    pub const ALL: [ProtocolVersion; 5] = [
        ProtocolVersion::V2024_11_05,
        ProtocolVersion::V2025_03_26,
        ProtocolVersion::V2025_06_18,
        ProtocolVersion::V2025_11_25,
        ProtocolVersion::V2026_07_28,
    ];
    pub const LATEST: ProtocolVersion = ProtocolVersion::V2026_07_28;
    pub const LATEST_LEGACY: ProtocolVersion = ProtocolVersion::V2025_11_25;
    /// What a server assumes for a legacy request without `MCP-Protocol-Version` and no
    /// other way to tell.
    pub const WITHOUT_HEADER: ProtocolVersion = ProtocolVersion::V2025_03_26;

    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V2024_11_05 => "2024-11-05",
            ProtocolVersion::V2025_03_26 => "2025-03-26",
            ProtocolVersion::V2025_06_18 => "2025-06-18",
            ProtocolVersion::V2025_11_25 => "2025-11-25",
            ProtocolVersion::V2026_07_28 => "2026-07-28",
        }
    }

    /// Exact match only: version strings are compared as the spec writes them.
    pub fn parse(text: &str) -> Option<ProtocolVersion> {
        ProtocolVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == text)
    }

    pub fn era(self) -> Era {
        if self >= ProtocolVersion::V2026_07_28 {
            Era::Modern
        } else {
            Era::Legacy
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned by [`ProtocolVersion::from_str`] for a version lockstep does not know.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown MCP protocol version {0:?}")]
pub struct UnknownVersion(pub String);

impl FromStr for ProtocolVersion {
    type Err = UnknownVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProtocolVersion::parse(s).ok_or_else(|| UnknownVersion(s.to_string()))
    }
}

impl Serialize for ProtocolVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProtocolVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a request's era is, as far as the body tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEra {
    /// `initialize`: the version the gateway answers with (the requested one when
    /// supported, else its newest legacy version, as the lifecycle spec says).
    Initialize {
        requested: String,
        negotiated: ProtocolVersion,
    },
    /// A stateless request with its version in `_meta`.
    Modern(ProtocolVersion),
    /// Neither: a legacy request that belongs to a session.
    InSession,
}

/// Why a request's version or headers are refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EraError {
    #[error("Unsupported protocol version {requested:?}")]
    UnsupportedVersion {
        requested: String,
        supported: Vec<ProtocolVersion>,
    },
    #[error("initialize: params.protocolVersion must be a string")]
    InitializeWithoutVersion,
    #[error("params._meta[\"{PROTOCOL_VERSION_META_KEY}\"] must be a string")]
    MetaVersionNotString,
    #[error(
        "params._meta[\"{PROTOCOL_VERSION_META_KEY}\"] is required: the MCP-Protocol-Version header names {0}, which has no initialize handshake"
    )]
    MetaMissing(String),
    #[error("params._meta[\"{CLIENT_CAPABILITIES_META_KEY}\"] is required and must be an object")]
    CapabilitiesMissing,
    #[error("Header mismatch: {0}")]
    HeaderMismatch(HeaderFault),
    #[error(
        "MCP-Protocol-Version header {header:?} does not match the session's protocol version {negotiated}"
    )]
    SessionVersionMismatch {
        header: String,
        negotiated: ProtocolVersion,
    },
}

/// What is wrong with a mirrored header.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderFault {
    #[error("required header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} is given more than once")]
    Repeated(&'static str),
    #[error("header {0} has invalid characters or a malformed =?base64?…?= value")]
    InvalidValue(&'static str),
    #[error("{header} header value '{header_value}' does not match body value '{body_value}'")]
    Mismatch {
        header: &'static str,
        header_value: String,
        body_value: String,
    },
    #[error("header {0} is given but the request body has no value for it")]
    Unexpected(&'static str),
}

impl EraError {
    pub fn code(&self) -> i64 {
        match self {
            EraError::UnsupportedVersion { .. } => UNSUPPORTED_PROTOCOL_VERSION,
            EraError::InitializeWithoutVersion
            | EraError::MetaVersionNotString
            | EraError::MetaMissing(_)
            | EraError::CapabilitiesMissing => INVALID_PARAMS,
            EraError::HeaderMismatch(_) => HEADER_MISMATCH,
            EraError::SessionVersionMismatch { .. } => INVALID_REQUEST,
        }
    }

    /// Every one of these is a 400 (Streamable HTTP, both eras).
    pub fn http_status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    pub fn to_error_object(&self) -> ErrorObject {
        match self {
            EraError::UnsupportedVersion {
                requested,
                supported,
            } => {
                let mut newest_first = supported.clone();
                newest_first.sort_unstable_by(|a, b| b.cmp(a));
                ErrorObject::new(
                    self.code(),
                    "Unsupported protocol version",
                    Some(json!({"supported": newest_first, "requested": requested})),
                )
            }
            _ => ErrorObject::new(self.code(), self.to_string(), None),
        }
    }

    pub fn to_response(&self, id: Option<&RequestId>) -> ErrorResponse {
        ErrorResponse::new(id.cloned(), self.to_error_object())
    }
}

/// Classifies a request (or notification) by its method, params and the
/// `MCP-Protocol-Version` header (`header_version`, when given once and readable).
///
/// A `_meta` version makes a request modern whatever its method (a modern `initialize`
/// is a removed method, not a handshake). Its header, when given, must name the same
/// text before the version itself is looked at (HeaderMismatch before
/// UnsupportedProtocolVersion, as the conformance suite checks). A header naming a
/// modern version over a body without `_meta` is a modern request missing its `_meta`:
/// invalid params, not a legacy request missing its session.
pub fn classify(
    method: &str,
    params: Option<&RawObject>,
    header_version: Option<&str>,
    supported: &[ProtocolVersion],
) -> Result<RequestEra, EraError> {
    match params
        .and_then(RawObject::meta)
        .and_then(|m| m.get(PROTOCOL_VERSION_META_KEY))
    {
        Some(Value::String(v)) => {
            if let Some(h) = header_version
                && h != v
            {
                return Err(EraError::HeaderMismatch(HeaderFault::Mismatch {
                    header: "MCP-Protocol-Version",
                    header_value: h.to_string(),
                    body_value: v.clone(),
                }));
            }
            return match ProtocolVersion::parse(v) {
                Some(version) if version.era() == Era::Modern && supported.contains(&version) => {
                    Ok(RequestEra::Modern(version))
                }
                // A legacy version in `_meta` is not a way to skip the handshake; the
                // versions offered are those a request of this form may name.
                _ => Err(EraError::UnsupportedVersion {
                    requested: v.clone(),
                    supported: modern_only(supported),
                }),
            };
        }
        Some(_) => return Err(EraError::MetaVersionNotString),
        None => {}
    }
    if method == methods::INITIALIZE {
        let requested = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .ok_or(EraError::InitializeWithoutVersion)?;
        return negotiate_initialize(requested, supported).map(|negotiated| {
            RequestEra::Initialize {
                requested: requested.to_string(),
                negotiated,
            }
        });
    }
    if let Some(h) = header_version
        && ProtocolVersion::parse(h).is_some_and(|v| v.era() == Era::Modern)
    {
        return Err(EraError::MetaMissing(h.to_string()));
    }
    Ok(RequestEra::InSession)
}

/// The modern versions of `supported`: what `server/discover` lists.
pub fn modern_only(supported: &[ProtocolVersion]) -> Vec<ProtocolVersion> {
    supported
        .iter()
        .copied()
        .filter(|v| v.era() == Era::Modern)
        .collect()
}

/// `_meta` key of the client's capabilities, required on every modern request.
pub const CLIENT_CAPABILITIES_META_KEY: &str = "io.modelcontextprotocol/clientCapabilities";

/// A modern request's `_meta` must also carry the client's capabilities (an object):
/// the server may not assume any it was not told.
pub fn check_modern_meta(params: Option<&RawObject>) -> Result<(), EraError> {
    match params
        .and_then(RawObject::meta)
        .and_then(|m| m.get(CLIENT_CAPABILITIES_META_KEY))
    {
        Some(Value::Object(_)) => Ok(()),
        _ => Err(EraError::CapabilitiesMissing),
    }
}

/// Methods of the legacy era that 2026-07-28 removed: a modern request for one is
/// answered 404 with Method not found, never forwarded.
pub const REMOVED_IN_MODERN: &[&str] = &[
    methods::INITIALIZE,
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// The version to answer an `initialize` with.
pub fn negotiate_initialize(
    requested: &str,
    supported: &[ProtocolVersion],
) -> Result<ProtocolVersion, EraError> {
    if let Some(v) = ProtocolVersion::parse(requested)
        && v.era() == Era::Legacy
        && supported.contains(&v)
    {
        return Ok(v);
    }
    supported
        .iter()
        .copied()
        .filter(|v| v.era() == Era::Legacy)
        .max()
        .ok_or_else(|| EraError::UnsupportedVersion {
            requested: requested.to_string(),
            supported: supported.to_vec(),
        })
}

/// A legacy request in a session: the header, when given, must name the session's
/// version.
pub fn check_session_version(
    headers: &HeaderMap,
    negotiated: ProtocolVersion,
) -> Result<(), EraError> {
    let mismatch = |header: String| EraError::SessionVersionMismatch { header, negotiated };
    match single(headers, HEADER_PROTOCOL_VERSION, "MCP-Protocol-Version") {
        Ok(None) => Ok(()),
        Ok(Some(v)) => match v.to_str() {
            Ok(s) if s == negotiated.as_str() => Ok(()),
            Ok(s) => Err(mismatch(s.to_string())),
            Err(_) => Err(mismatch(String::from_utf8_lossy(v.as_bytes()).into_owned())),
        },
        Err(_) => Err(mismatch("(repeated)".into())),
    }
}

/// A modern request: `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` must agree
/// with the body. `is_request` is false for a notification, whose headers this
/// revision does not require but which must still agree when present.
pub fn check_modern_headers(
    headers: &HeaderMap,
    version: ProtocolVersion,
    method: &str,
    params: Option<&RawObject>,
    is_request: bool,
) -> Result<(), EraError> {
    let fault = EraError::HeaderMismatch;
    let v = single(headers, HEADER_PROTOCOL_VERSION, "MCP-Protocol-Version")
        .map_err(fault)?
        .ok_or(fault(HeaderFault::Missing("MCP-Protocol-Version")))?;
    compare(
        "MCP-Protocol-Version",
        plain(v, "MCP-Protocol-Version").map_err(fault)?,
        version.as_str(),
    )
    .map_err(fault)?;

    match single(headers, HEADER_METHOD, "Mcp-Method").map_err(fault)? {
        Some(m) => {
            compare("Mcp-Method", plain(m, "Mcp-Method").map_err(fault)?, method).map_err(fault)?
        }
        None if is_request => return Err(fault(HeaderFault::Missing("Mcp-Method"))),
        None => {}
    }

    let name_required = matches!(
        method,
        methods::TOOLS_CALL | methods::RESOURCES_READ | methods::PROMPTS_GET
    );
    let body_name = params.and_then(|p| {
        let key = if method == methods::RESOURCES_READ {
            "uri"
        } else {
            "name"
        };
        p.get(key).or_else(|| p.get("uri")).and_then(Value::as_str)
    });
    match single(headers, HEADER_NAME, "Mcp-Name").map_err(fault)? {
        Some(h) => {
            let decoded = decode_header_value(h, "Mcp-Name").map_err(fault)?;
            let body = body_name.ok_or(fault(HeaderFault::Unexpected("Mcp-Name")))?;
            compare("Mcp-Name", &decoded, body).map_err(fault)?;
        }
        None if name_required && is_request => {
            return Err(fault(HeaderFault::Missing("Mcp-Name")));
        }
        None => {}
    }
    Ok(())
}

fn single<'h>(
    headers: &'h HeaderMap,
    name: &str,
    display: &'static str,
) -> Result<Option<&'h HeaderValue>, HeaderFault> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(HeaderFault::Repeated(display));
    }
    Ok(first)
}

fn plain<'h>(v: &'h HeaderValue, display: &'static str) -> Result<&'h str, HeaderFault> {
    v.to_str().map_err(|_| HeaderFault::InvalidValue(display))
}

fn compare(header: &'static str, header_value: &str, body_value: &str) -> Result<(), HeaderFault> {
    if header_value == body_value {
        Ok(())
    } else {
        Err(HeaderFault::Mismatch {
            header,
            header_value: header_value.to_string(),
            body_value: body_value.to_string(),
        })
    }
}

/// Base64 as the sentinel carries it; padding is not significant for comparing values.
const SENTINEL_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A mirrored value as the client meant it: `=?base64?…?=` decoded, anything else as is.
pub fn decode_header_value(v: &HeaderValue, display: &'static str) -> Result<String, HeaderFault> {
    let text = plain(v, display)?;
    match text
        .strip_prefix(B64_PREFIX)
        .and_then(|t| t.strip_suffix(B64_SUFFIX))
    {
        Some(encoded) => SENTINEL_B64
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(HeaderFault::InvalidValue(display)),
        None => Ok(text.to_string()),
    }
}

/// The header value a client (or the gateway, toward a modern upstream) sends for a
/// name: plain when it is header-safe, else `=?base64?…?=`.
pub fn encode_header_value(value: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let sentinel_like = value.starts_with(B64_PREFIX) && value.ends_with(B64_SUFFIX);
    let safe = !value.is_empty()
        && value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || (0x21..=0x7E).contains(&b))
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
        && !sentinel_like;
    if safe {
        HeaderValue::from_str(value)
    } else {
        HeaderValue::from_str(&format!(
            "{B64_PREFIX}{}{B64_SUFFIX}",
            STANDARD.encode(value.as_bytes())
        ))
    }
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
    use crate::jsonrpc::{Message, ParseLimits, Request, parse_message};

    const ALL: &[ProtocolVersion] = &ProtocolVersion::ALL;

    fn request(body: &str) -> Request {
        match parse_message(body.as_bytes(), &ParseLimits::default()).unwrap() {
            Message::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn modern_call(name: &str) -> Request {
        request(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{},"arguments":{{}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#,
            Value::String(name.into())
        ))
    }

    fn check(h: &HeaderMap, r: &Request) -> Result<(), EraError> {
        check_modern_headers(
            h,
            ProtocolVersion::V2026_07_28,
            &r.method,
            r.params.as_ref(),
            true,
        )
    }

    #[test]
    fn versions_parse_exactly_and_know_their_era() {
        for v in ProtocolVersion::ALL {
            assert_eq!(ProtocolVersion::parse(v.as_str()), Some(v));
            assert_eq!(v.to_string().parse::<ProtocolVersion>(), Ok(v));
        }
        assert_eq!(ProtocolVersion::parse("2025-11-25 "), None);
        assert_eq!(ProtocolVersion::parse("2026-7-28"), None);
        assert_eq!(ProtocolVersion::V2025_11_25.era(), Era::Legacy);
        assert_eq!(ProtocolVersion::V2026_07_28.era(), Era::Modern);
        assert_eq!(
            serde_json::to_value(ProtocolVersion::V2025_06_18).unwrap(),
            json!("2025-06-18")
        );
        assert!(serde_json::from_value::<ProtocolVersion>(json!("1.0")).is_err());
    }

    #[test]
    fn initialize_negotiates_the_requested_or_newest_legacy_version() {
        let init = |v: &str| {
            let r = request(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{v}","capabilities":{{}}}}}}"#
            ));
            classify(&r.method, r.params.as_ref(), None, ALL)
        };
        assert_eq!(
            init("2025-06-18"),
            Ok(RequestEra::Initialize {
                requested: "2025-06-18".into(),
                negotiated: ProtocolVersion::V2025_06_18
            })
        );
        for other in ["1.0.0", "2026-07-28", "2099-01-01"] {
            assert_eq!(
                init(other),
                Ok(RequestEra::Initialize {
                    requested: other.into(),
                    negotiated: ProtocolVersion::V2025_11_25
                }),
                "{other}"
            );
        }
        // Only modern versions supported: initialize cannot be served.
        assert!(matches!(
            negotiate_initialize("2025-11-25", &[ProtocolVersion::V2026_07_28]),
            Err(EraError::UnsupportedVersion { .. })
        ));
        let r = request(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":5}}"#,
        );
        let e = classify(&r.method, r.params.as_ref(), None, ALL).unwrap_err();
        assert_eq!(e, EraError::InitializeWithoutVersion);
        assert_eq!(e.code(), INVALID_PARAMS);
    }

    #[test]
    fn modern_requests_take_the_version_from_meta() {
        let r = modern_call("read");
        assert_eq!(
            classify(&r.method, r.params.as_ref(), None, ALL),
            Ok(RequestEra::Modern(ProtocolVersion::V2026_07_28))
        );
        let r = request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert_eq!(
            classify(&r.method, r.params.as_ref(), None, ALL),
            Ok(RequestEra::InSession)
        );
        for v in [r#""2099-01-01""#, r#""2025-11-25""#] {
            let r = request(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":{v}}}}}}}"#
            ));
            let e = classify(&r.method, r.params.as_ref(), None, ALL).unwrap_err();
            assert_eq!(e.code(), UNSUPPORTED_PROTOCOL_VERSION);
            assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
            let obj = e.to_error_object();
            assert_eq!(obj.message, "Unsupported protocol version");
            let data = obj.data.unwrap();
            assert_eq!(data["requested"], serde_json::from_str::<Value>(v).unwrap());
            // What server/discover lists: the versions a `_meta` may name.
            assert_eq!(data["supported"], json!(["2026-07-28"]));
        }
        // A modern version the gateway was configured not to serve.
        let r = modern_call("read");
        assert!(matches!(
            classify(
                &r.method,
                r.params.as_ref(),
                None,
                &[ProtocolVersion::V2025_11_25]
            ),
            Err(EraError::UnsupportedVersion { .. })
        ));
        let r = request(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":20260728}}}"#,
        );
        assert_eq!(
            classify(&r.method, r.params.as_ref(), None, ALL),
            Err(EraError::MetaVersionNotString)
        );
    }

    #[test]
    fn the_header_and_meta_decide_the_era_in_the_suites_order() {
        let meta = |v: &str| {
            request(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"{v}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
            ))
        };
        // Header and _meta disagree: HeaderMismatch, even for an unknown version.
        let r = meta("v999.0.0");
        let e = classify(&r.method, r.params.as_ref(), Some("2026-07-28"), ALL).unwrap_err();
        assert_eq!(e.code(), HEADER_MISMATCH);
        // Both name the unknown version: UnsupportedProtocolVersion.
        let e = classify(&r.method, r.params.as_ref(), Some("v999.0.0"), ALL).unwrap_err();
        assert_eq!(e.code(), UNSUPPORTED_PROTOCOL_VERSION);
        // A modern header over a body without _meta: invalid params, not "no session".
        let r = request(r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#);
        let e = classify(&r.method, r.params.as_ref(), Some("2026-07-28"), ALL).unwrap_err();
        assert_eq!(
            (e.code(), e.http_status()),
            (INVALID_PARAMS, StatusCode::BAD_REQUEST)
        );
        // A legacy header still means a session request.
        assert_eq!(
            classify(&r.method, r.params.as_ref(), Some("2025-11-25"), ALL),
            Ok(RequestEra::InSession)
        );
        // initialize with a modern _meta is a modern request (for a removed method).
        let r = request(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        assert_eq!(
            classify(&r.method, r.params.as_ref(), Some("2026-07-28"), ALL),
            Ok(RequestEra::Modern(ProtocolVersion::V2026_07_28))
        );
        assert!(REMOVED_IN_MODERN.contains(&r.method.as_str()));
        // Client capabilities are required in a modern _meta.
        check_modern_meta(meta("2026-07-28").params.as_ref()).unwrap();
        let e = check_modern_meta(r.params.as_ref()).unwrap_err();
        assert_eq!(e.code(), INVALID_PARAMS);
    }

    #[test]
    fn session_version_header_must_match_when_present() {
        let v = ProtocolVersion::V2025_11_25;
        check_session_version(&headers(&[]), v).unwrap();
        check_session_version(&headers(&[("MCP-Protocol-Version", "2025-11-25")]), v).unwrap();
        let e = check_session_version(&headers(&[("mcp-protocol-version", "2025-06-18")]), v)
            .unwrap_err();
        assert_eq!(e.code(), INVALID_REQUEST);
        assert!(
            check_session_version(
                &headers(&[
                    ("mcp-protocol-version", "2025-11-25"),
                    ("mcp-protocol-version", "2025-11-25")
                ]),
                v
            )
            .is_err()
        );
    }

    #[test]
    fn modern_headers_agree_with_the_body() {
        let r = modern_call("get_weather");
        let good = headers(&[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "get_weather"),
        ]);
        check(&good, &r).unwrap();
        // Header names are case-insensitive.
        check(
            &headers(&[
                ("mcp-protocol-version", "2026-07-28"),
                ("MCP-METHOD", "tools/call"),
                ("mcp-name", "get_weather"),
            ]),
            &r,
        )
        .unwrap();
    }

    #[test]
    fn modern_header_disagreements_are_header_mismatch() {
        let r = modern_call("read_file");
        let cases: Vec<(Vec<(&str, &str)>, HeaderFault)> = vec![
            (
                vec![("Mcp-Method", "tools/call"), ("Mcp-Name", "read_file")],
                HeaderFault::Missing("MCP-Protocol-Version"),
            ),
            (
                vec![
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Name", "read_file"),
                ],
                HeaderFault::Missing("Mcp-Method"),
            ),
            (
                vec![
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/call"),
                ],
                HeaderFault::Missing("Mcp-Name"),
            ),
            (
                vec![
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/call"),
                    ("Mcp-Name", "delete_file"),
                ],
                HeaderFault::Mismatch {
                    header: "Mcp-Name",
                    header_value: "delete_file".into(),
                    body_value: "read_file".into(),
                },
            ),
            (
                vec![
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/list"),
                    ("Mcp-Name", "read_file"),
                ],
                HeaderFault::Mismatch {
                    header: "Mcp-Method",
                    header_value: "tools/list".into(),
                    body_value: "tools/call".into(),
                },
            ),
            (
                vec![
                    ("MCP-Protocol-Version", "2025-11-25"),
                    ("Mcp-Method", "tools/call"),
                    ("Mcp-Name", "read_file"),
                ],
                HeaderFault::Mismatch {
                    header: "MCP-Protocol-Version",
                    header_value: "2025-11-25".into(),
                    body_value: "2026-07-28".into(),
                },
            ),
            (
                // Values are case-sensitive.
                vec![
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/call"),
                    ("Mcp-Name", "Read_File"),
                ],
                HeaderFault::Mismatch {
                    header: "Mcp-Name",
                    header_value: "Read_File".into(),
                    body_value: "read_file".into(),
                },
            ),
            (
                vec![
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/call"),
                    ("Mcp-Name", "read_file"),
                    ("Mcp-Name", "delete_file"),
                ],
                HeaderFault::Repeated("Mcp-Name"),
            ),
            (
                vec![
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/call"),
                    ("Mcp-Name", "=?base64?!!!?="),
                ],
                HeaderFault::InvalidValue("Mcp-Name"),
            ),
        ];
        for (pairs, expected) in cases {
            let e = check(&headers(&pairs), &r).unwrap_err();
            assert_eq!(e, EraError::HeaderMismatch(expected.clone()), "{pairs:?}");
            assert_eq!(e.code(), HEADER_MISMATCH);
            assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        }
        // Non-ASCII bytes in a header value are invalid characters.
        let mut h = headers(&[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/call"),
        ]);
        h.insert(HEADER_NAME, HeaderValue::from_bytes(b"read_\xe9").unwrap());
        assert_eq!(
            check(&h, &r),
            Err(EraError::HeaderMismatch(HeaderFault::InvalidValue(
                "Mcp-Name"
            )))
        );
        let msg = EraError::HeaderMismatch(HeaderFault::Mismatch {
            header: "Mcp-Name",
            header_value: "foo".into(),
            body_value: "bar".into(),
        })
        .to_string();
        assert_eq!(
            msg,
            "Header mismatch: Mcp-Name header value 'foo' does not match body value 'bar'"
        );
    }

    #[test]
    fn base64_sentinel_names_are_decoded_before_comparing() {
        for name in [
            "Hello, 世界",
            " padded ",
            "line1\nline2",
            "=?base64?literal?=",
        ] {
            let r = modern_call(name);
            let encoded = encode_header_value(name).unwrap();
            assert!(
                encoded.to_str().unwrap().starts_with("=?base64?"),
                "{name:?}"
            );
            let mut h = headers(&[
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "tools/call"),
            ]);
            h.insert(HEADER_NAME, encoded);
            check(&h, &r).unwrap();
        }
        // The spec's example value, and padding-free Base64.
        let r = modern_call("Hello, 世界");
        for v in [
            "=?base64?SGVsbG8sIOS4lueVjA==?=",
            "=?base64?SGVsbG8sIOS4lueVjA?=",
        ] {
            check(
                &headers(&[
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/call"),
                    ("Mcp-Name", v),
                ]),
                &r,
            )
            .unwrap();
        }
        assert_eq!(encode_header_value("us-west1").unwrap(), "us-west1");
        assert_eq!(encode_header_value("a b").unwrap(), "a b");
    }

    #[test]
    fn resource_uris_and_unnamed_methods() {
        let r = request(
            r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///projects/myapp/config.json","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        check(
            &headers(&[
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "resources/read"),
                ("Mcp-Name", "file:///projects/myapp/config.json"),
            ]),
            &r,
        )
        .unwrap();
        let r = request(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let base = [
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/list"),
        ];
        check(&headers(&base), &r).unwrap();
        // A name header for a request that names nothing could only mislead a router.
        let mut with_name = base.to_vec();
        with_name.push(("Mcp-Name", "x"));
        assert_eq!(
            check(&headers(&with_name), &r),
            Err(EraError::HeaderMismatch(HeaderFault::Unexpected(
                "Mcp-Name"
            )))
        );
        // Notifications: headers optional, but must agree when present.
        check_modern_headers(
            &headers(&[("MCP-Protocol-Version", "2026-07-28")]),
            ProtocolVersion::V2026_07_28,
            "notifications/cancelled",
            None,
            false,
        )
        .unwrap();
        assert!(
            check_modern_headers(
                &headers(&[
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/call")
                ]),
                ProtocolVersion::V2026_07_28,
                "notifications/cancelled",
                None,
                false,
            )
            .is_err()
        );
    }
}
