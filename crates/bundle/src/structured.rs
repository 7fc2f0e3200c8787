//! Parsing of "structured" bundle files (JSON, or YAML converted to JSON).
//!
//! OPA's `util.Unmarshal` first tries JSON and falls back to YAML; YAML is converted to
//! JSON the way Go's `sigs.k8s.io/yaml` does it (bool/number keys become strings, null
//! keys and `!!binary` are refused, floats formatted like Go's `encoding/json`).

use serde_json::{Map, Number, Value};
use serde_yaml_ng::Value as Yaml;

/// Why a structured file did not parse; the texts are the ones OPA's messages carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructuredError {
    /// serde_json's message.
    #[error("{0}")]
    Json(String),
    /// Neither JSON nor YAML, for a file that looks like JSON.
    #[error("{json} (as YAML: {yaml})")]
    Both {
        json: String,
        yaml: Box<StructuredError>,
    },
    #[error("yaml: invalid UTF-8: {0}")]
    Utf8(String),
    #[error("yaml: {0}")]
    Yaml(String),
    #[error("yaml: !!binary values are not supported")]
    Binary,
    #[error("yaml: null keys are not supported")]
    NullKey,
    #[error("yaml: only scalar keys are supported")]
    NonScalarKey,
    #[error("json: unsupported value: {0}")]
    NonFinite(String),
    #[error("{0}")]
    Number(String),
}

/// Base names whose content is hashed canonically rather than byte for byte.
pub fn is_structured_doc(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    matches!(
        base,
        "data.json" | "data.yaml" | ".manifest" | "signatures.json"
    )
}

/// Parses JSON (numbers keep their literal text).
pub fn parse_json(bytes: &[u8]) -> Result<Value, StructuredError> {
    serde_json::from_slice(bytes).map_err(|e| StructuredError::Json(e.to_string()))
}

/// Parses JSON if `bytes` is JSON, else YAML converted to JSON (OPA's `util.Unmarshal`).
pub fn parse_json_or_yaml(bytes: &[u8]) -> Result<Value, StructuredError> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(json_err) => match parse_yaml(bytes) {
            Ok(v) => Ok(v),
            // A YAML parser accepts nearly anything that looks like JSON; when both fail the
            // JSON message is the more useful one for `.json` files.
            Err(yaml_err) if bytes.trim_ascii_start().starts_with(b"{") => {
                Err(StructuredError::Both {
                    json: json_err.to_string(),
                    yaml: Box::new(yaml_err),
                })
            }
            Err(yaml_err) => Err(yaml_err),
        },
    }
}

/// Parses YAML and converts it to JSON.
pub fn parse_yaml(bytes: &[u8]) -> Result<Value, StructuredError> {
    let text = std::str::from_utf8(bytes).map_err(|e| StructuredError::Utf8(e.to_string()))?;
    if text.trim().is_empty() {
        // Go's YAMLToJSON turns an empty document into `null`.
        return Ok(Value::Null);
    }
    let y: Yaml =
        serde_yaml_ng::from_str(text).map_err(|e| StructuredError::Yaml(e.to_string()))?;
    yaml_to_json(y)
}

fn yaml_to_json(y: Yaml) -> Result<Value, StructuredError> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => Value::Number(yaml_number(&n)?),
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(yaml_key(k)?, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => {
            if t.tag == "binary" || t.tag == "!!binary" {
                return Err(StructuredError::Binary);
            }
            yaml_to_json(t.value)?
        }
    })
}

fn yaml_key(k: Yaml) -> Result<String, StructuredError> {
    match k {
        Yaml::String(s) => Ok(s),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Number(n) => Ok(yaml_number(&n)?.to_string()),
        Yaml::Null => Err(StructuredError::NullKey),
        Yaml::Tagged(t) => yaml_key(t.value),
        _ => Err(StructuredError::NonScalarKey),
    }
}

fn yaml_number(n: &serde_yaml_ng::Number) -> Result<Number, StructuredError> {
    let text = if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() {
            return Err(StructuredError::NonFinite(f.to_string()));
        }
        go_float(f)
    };
    text.parse::<Number>()
        .map_err(|e| StructuredError::Number(e.to_string()))
}

/// Formats a float like Go's `encoding/json`: shortest round-trip digits, plain notation
/// for 1e-6 <= |f| < 1e21, otherwise exponent notation with a signed exponent (`1e+21`).
pub fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        format!("{f}")
    } else {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => s,
        }
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

    #[test]
    fn structured_names() {
        assert!(is_structured_doc("/a/b/data.json"));
        assert!(is_structured_doc("data.yaml"));
        assert!(is_structured_doc("/.manifest"));
        assert!(is_structured_doc("x/signatures.json"));
        assert!(!is_structured_doc("/a/data.yml"));
        assert!(!is_structured_doc("/a/x.json"));
        assert!(!is_structured_doc("/a/.signatures.json"));
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e-7), "1e-7");
        assert_eq!(go_float(1.5e-10), "1.5e-10");
        assert_eq!(go_float(0.000001), "0.000001");
    }

    #[test]
    fn yaml_converts_like_go() {
        let v = parse_yaml(b"foo: 1\ntrue: x\n2: y\nf: 1.0\n").unwrap();
        assert_eq!(
            v,
            serde_json::json!({"foo": 1, "true": "x", "2": "y", "f": 1})
        );
        assert!(parse_yaml(b"~: 1").is_err());
    }

    #[test]
    fn json_first_then_yaml() {
        assert_eq!(
            parse_json_or_yaml(b"{\"a\": 1.50}").unwrap().to_string(),
            "{\"a\":1.50}"
        );
        assert_eq!(
            parse_json_or_yaml(b"a: b").unwrap(),
            serde_json::json!({"a": "b"})
        );
    }
}
