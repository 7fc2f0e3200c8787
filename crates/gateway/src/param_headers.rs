//! `Mcp-Param-{Name}` headers (2026-07-28): tool arguments a tool's `inputSchema` marks
//! with `x-mcp-header`, mirrored into HTTP headers by the client.
//!
//! A server that reads the body must check each mirrored value against the argument
//! (HTTP 400, `-32020` HeaderMismatch), since an intermediary may route or rate-limit on
//! the header while the upstream executes the body. The annotations come from the
//! upstream's `tools/list`; [`header_params`] extracts and validates them (a tool with an
//! invalid annotation must be left out of the list), [`check_param_headers`] checks an
//! incoming call, and [`param_header_values`] builds the headers the gateway sends to a
//! modern upstream.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::era::{EraError, HeaderFault, decode_header_value, encode_header_value};

/// The prefix of the header names, lowercase as `http` stores them.
pub const HEADER_PREFIX: &str = "mcp-param-";

/// JavaScript's safe integer range, which annotated integers must stay within.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The primitive type of an annotated argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Integer,
    Boolean,
}

/// One `x-mcp-header` annotation: the header `Mcp-Param-{name}` mirrors the argument at
/// `path` (a chain of `properties` keys from the schema root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderParam {
    pub name: String,
    pub path: Vec<String>,
    pub kind: ParamType,
}

/// Why a tool's annotations are invalid (the tool must then be left out of the list).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnnotationError {
    #[error("x-mcp-header must be a non-empty HTTP token, got {0}")]
    NotAToken(Value),
    #[error("x-mcp-header {0:?} is used twice (names compare case-insensitively)")]
    Duplicate(String),
    #[error("x-mcp-header {0:?} is on a property that is not a string, integer or boolean")]
    NotPrimitive(String),
    #[error("x-mcp-header {0:?} is not reachable from the schema root through properties alone")]
    Unreachable(String),
}

/// Keywords whose values are subschemas that are not statically reachable.
const SUBSCHEMA_KEYWORDS: [&str; 10] = [
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
];
/// Keywords holding arrays or maps of subschemas that are not statically reachable.
const SUBSCHEMA_LIST_KEYWORDS: [&str; 8] = [
    "prefixItems",
    "allOf",
    "anyOf",
    "oneOf",
    "$defs",
    "definitions",
    "patternProperties",
    "dependentSchemas",
];

/// The annotations of one tool's `inputSchema`.
pub fn header_params(input_schema: &Value) -> Result<Vec<HeaderParam>, AnnotationError> {
    let mut out = Vec::new();
    walk(input_schema, &mut Vec::new(), true, &mut out)?;
    for (i, p) in out.iter().enumerate() {
        if out
            .iter()
            .take(i)
            .any(|q| q.name.eq_ignore_ascii_case(&p.name))
        {
            return Err(AnnotationError::Duplicate(p.name.clone()));
        }
    }
    Ok(out)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn walk(
    schema: &Value,
    path: &mut Vec<String>,
    reachable: bool,
    out: &mut Vec<HeaderParam>,
) -> Result<(), AnnotationError> {
    let Some(obj) = schema.as_object() else {
        return Ok(());
    };
    if let Some(ann) = obj.get("x-mcp-header") {
        let name = match ann.as_str() {
            Some(n) if !n.is_empty() && n.bytes().all(is_tchar) => n.to_string(),
            _ => return Err(AnnotationError::NotAToken(ann.clone())),
        };
        if !reachable || path.is_empty() {
            return Err(AnnotationError::Unreachable(name));
        }
        let kind = match obj.get("type").and_then(Value::as_str) {
            Some("string") => ParamType::String,
            Some("integer") => ParamType::Integer,
            Some("boolean") => ParamType::Boolean,
            _ => return Err(AnnotationError::NotPrimitive(name)),
        };
        out.push(HeaderParam {
            name,
            path: path.clone(),
            kind,
        });
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (key, child) in props {
            path.push(key.clone());
            walk(child, path, reachable, out)?;
            path.pop();
        }
    }
    for k in SUBSCHEMA_KEYWORDS {
        if let Some(child) = obj.get(k) {
            walk(child, path, false, out)?;
        }
    }
    for k in SUBSCHEMA_LIST_KEYWORDS {
        match obj.get(k) {
            Some(Value::Array(list)) => {
                for child in list {
                    walk(child, path, false, out)?;
                }
            }
            Some(Value::Object(map)) => {
                for child in map.values() {
                    walk(child, path, false, out)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn argument<'a>(arguments: Option<&'a Map<String, Value>>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = arguments?.get(first)?;
    for key in rest {
        cur = cur.as_object()?.get(key)?;
    }
    Some(cur).filter(|v| !v.is_null())
}

/// The header text of an argument value, or `None` when the value cannot be mirrored.
fn header_text(kind: ParamType, v: &Value) -> Option<String> {
    match (kind, v) {
        (ParamType::String, Value::String(s)) => Some(s.clone()),
        (ParamType::Boolean, Value::Bool(b)) => Some(b.to_string()),
        (ParamType::Integer, Value::Number(n)) => n
            .as_i64()
            .filter(|i| i.abs() <= MAX_SAFE_INTEGER)
            .map(|i| i.to_string()),
        _ => None,
    }
}

fn agrees(kind: ParamType, header: &str, body: &Value) -> bool {
    match (kind, body) {
        // Integers compare numerically, as the spec recommends: "42.0" equals 42.
        (ParamType::Integer, Value::Number(n)) => match (header.parse::<f64>(), n.as_f64()) {
            (Ok(h), Some(b)) => h.is_finite() && h == b,
            _ => false,
        },
        _ => header_text(kind, body).as_deref() == Some(header),
    }
}

fn display_name(p: &HeaderParam) -> String {
    format!("Mcp-Param-{}", p.name)
}

/// Checks an incoming `tools/call`'s `Mcp-Param-*` headers against its arguments.
/// Headers for names the tool does not annotate are left alone (intermediaries must
/// forward what they do not recognise).
pub fn check_param_headers(
    headers: &HeaderMap,
    arguments: Option<&Map<String, Value>>,
    params: &[HeaderParam],
) -> Result<(), EraError> {
    // `&'static str` in the faults: the names of the fixed headers elsewhere in
    // HeaderFault; for these dynamic names the text goes in the mismatch values.
    const PARAM: &str = "Mcp-Param-*";
    let fault = EraError::HeaderMismatch;
    for p in params {
        let header = format!("{HEADER_PREFIX}{}", p.name.to_ascii_lowercase());
        let mut values = headers.get_all(header.as_str()).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(fault(HeaderFault::Repeated(PARAM)));
        }
        let body = argument(arguments, &p.path);
        match (first, body) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(fault(HeaderFault::Mismatch {
                    header: PARAM,
                    header_value: format!("{} (missing)", display_name(p)),
                    body_value: body.map(Value::to_string).unwrap_or_default(),
                }));
            }
            (Some(v), None) => {
                return Err(fault(HeaderFault::Mismatch {
                    header: PARAM,
                    header_value: format!(
                        "{}: {}",
                        display_name(p),
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                    body_value: "(absent)".into(),
                }));
            }
            (Some(v), Some(b)) => {
                let text = decode_header_value(v, PARAM).map_err(fault)?;
                if !agrees(p.kind, &text, b) {
                    return Err(fault(HeaderFault::Mismatch {
                        header: PARAM,
                        header_value: format!("{}: {text}", display_name(p)),
                        body_value: b.to_string(),
                    }));
                }
            }
        }
    }
    Ok(())
}

/// The `Mcp-Param-*` headers to send with `arguments` (to a modern upstream, after the
/// gateway renamed the tool). Values that cannot be mirrored are left out; the
/// upstream then refuses the call, as it would a non-conforming client's.
pub fn param_header_values(
    arguments: Option<&Map<String, Value>>,
    params: &[HeaderParam],
) -> Vec<(HeaderName, HeaderValue)> {
    params
        .iter()
        .filter_map(|p| {
            let text = header_text(p.kind, argument(arguments, &p.path)?)?;
            let name = HeaderName::from_bytes(format!("Mcp-Param-{}", p.name).as_bytes()).ok()?;
            Some((name, encode_header_value(&text).ok()?))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "query": {"type": "string"},
                "limit": {"type": "integer", "x-mcp-header": "Limit"},
                "opts": {"type": "object", "properties": {
                    "dry": {"type": "boolean", "x-mcp-header": "Dry-Run"}
                }}
            },
            "required": ["region", "query"]
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn extracts_annotations_along_properties() {
        let mut p = header_params(&schema()).unwrap();
        p.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            p,
            vec![
                HeaderParam {
                    name: "Dry-Run".into(),
                    path: vec!["opts".into(), "dry".into()],
                    kind: ParamType::Boolean
                },
                HeaderParam {
                    name: "Limit".into(),
                    path: vec!["limit".into()],
                    kind: ParamType::Integer
                },
                HeaderParam {
                    name: "Region".into(),
                    path: vec!["region".into()],
                    kind: ParamType::String
                },
            ]
        );
        assert_eq!(header_params(&json!({"type": "object"})).unwrap(), vec![]);
    }

    #[test]
    fn refuses_invalid_annotations() {
        let bad = [
            (
                json!({"properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
                "token",
            ),
            (
                json!({"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}),
                "token",
            ),
            (
                json!({"properties": {"a": {"type": "string", "x-mcp-header": 5}}}),
                "token",
            ),
            (
                json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
                "primitive",
            ),
            (
                json!({"properties": {"a": {"type": "object", "x-mcp-header": "A"}}}),
                "primitive",
            ),
            (
                json!({"properties": {"a": {"type": "string", "x-mcp-header": "X"}, "b": {"type": "string", "x-mcp-header": "x"}}}),
                "duplicate",
            ),
            (
                json!({"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
                "unreachable",
            ),
            (
                json!({"oneOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
                "unreachable",
            ),
            (
                json!({"$defs": {"d": {"type": "string", "x-mcp-header": "A"}}}),
                "unreachable",
            ),
            (
                json!({"type": "string", "x-mcp-header": "Root"}),
                "unreachable",
            ),
        ];
        for (s, why) in bad {
            let e = header_params(&s).unwrap_err();
            let ok = match why {
                "token" => matches!(e, AnnotationError::NotAToken(_)),
                "primitive" => matches!(e, AnnotationError::NotPrimitive(_)),
                "duplicate" => matches!(e, AnnotationError::Duplicate(_)),
                _ => matches!(e, AnnotationError::Unreachable(_)),
            };
            assert!(ok, "{s}: {e}");
        }
    }

    #[test]
    fn headers_must_mirror_the_arguments() {
        let p = header_params(&schema()).unwrap();
        let a = args(
            json!({"region": "us-west1", "query": "SELECT 1", "limit": 42, "opts": {"dry": true}}),
        );
        let good = [
            ("Mcp-Param-Region", "us-west1"),
            ("mcp-param-limit", "42"),
            ("MCP-PARAM-DRY-RUN", "true"),
        ];
        check_param_headers(&headers(&good), Some(&a), &p).unwrap();
        // Integers compare numerically; unrelated Mcp-Param headers are ignored.
        check_param_headers(
            &headers(&[
                ("Mcp-Param-Region", "us-west1"),
                ("Mcp-Param-Limit", "42.0"),
                ("Mcp-Param-Dry-Run", "true"),
                ("Mcp-Param-Other", "x"),
            ]),
            Some(&a),
            &p,
        )
        .unwrap();
        for pairs in [
            vec![
                ("Mcp-Param-Region", "eu-west1"),
                ("Mcp-Param-Limit", "42"),
                ("Mcp-Param-Dry-Run", "true"),
            ],
            vec![("Mcp-Param-Limit", "42"), ("Mcp-Param-Dry-Run", "true")],
            vec![
                ("Mcp-Param-Region", "us-west1"),
                ("Mcp-Param-Limit", "43"),
                ("Mcp-Param-Dry-Run", "true"),
            ],
            vec![
                ("Mcp-Param-Region", "us-west1"),
                ("Mcp-Param-Limit", "42"),
                ("Mcp-Param-Dry-Run", "True"),
            ],
            vec![
                ("Mcp-Param-Region", "us-west1"),
                ("Mcp-Param-Region", "us-west1"),
                ("Mcp-Param-Limit", "42"),
                ("Mcp-Param-Dry-Run", "true"),
            ],
        ] {
            let e = check_param_headers(&headers(&pairs), Some(&a), &p).unwrap_err();
            assert_eq!(e.code(), crate::era::HEADER_MISMATCH, "{pairs:?}");
        }
        // Absent or null argument: the header must be absent too.
        let a = args(json!({"region": "us-west1", "limit": null}));
        check_param_headers(&headers(&[("Mcp-Param-Region", "us-west1")]), Some(&a), &p).unwrap();
        assert!(
            check_param_headers(
                &headers(&[("Mcp-Param-Region", "us-west1"), ("Mcp-Param-Limit", "1")]),
                Some(&a),
                &p
            )
            .is_err()
        );
    }

    #[test]
    fn encoded_values_round_trip() {
        let p = header_params(&schema()).unwrap();
        let a = args(json!({"region": "Hello, 世界", "limit": -7, "opts": {"dry": false}}));
        let out = param_header_values(Some(&a), &p);
        let mut h = HeaderMap::new();
        for (k, v) in out {
            h.append(k, v);
        }
        assert_eq!(
            h.get("mcp-param-region").unwrap(),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(h.get("mcp-param-limit").unwrap(), "-7");
        assert_eq!(h.get("mcp-param-dry-run").unwrap(), "false");
        check_param_headers(&h, Some(&a), &p).unwrap();
        // An integer outside JavaScript's safe range cannot be mirrored.
        let big = args(json!({"limit": 9007199254740993_i64}));
        assert!(param_header_values(Some(&big), &p).is_empty());
    }
}
