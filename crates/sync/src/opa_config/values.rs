//! Typed readers for the values of OPA's config document (YAML parsed into JSON), and
//! the walker that names every key lockstep does not read. Embedders (the agent, the
//! gateway) parse their own sections with the same readers, so every config error
//! reads alike.

use std::time::Duration;

use serde_json::{Map, Value as Json};

use super::ConfigError;

/// `ConfigError::Invalid` at a dotted key.
pub fn invalid(at: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        at: at.into(),
        message: message.into(),
    }
}

/// Collects the dotted names of keys present in the file that nobody reads.
#[derive(Debug, Default)]
pub struct Walker {
    pub ignored: Vec<String>,
}

impl Walker {
    /// Records every key of `obj` not in `known`, as `prefix.key`.
    pub fn check(&mut self, prefix: &str, obj: &Map<String, Json>, known: &[&str]) {
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                self.ignored.push(if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                });
            }
        }
    }
}

/// A mapping, or nothing when absent or `null`.
pub fn obj<'a>(
    v: Option<&'a Json>,
    what: &str,
) -> Result<Option<&'a Map<String, Json>>, ConfigError> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(m)) => Ok(Some(m)),
        Some(_) => Err(invalid(what, "expected a mapping")),
    }
}

/// A scalar as text (YAML turns `8181` and `true` into numbers and booleans).
pub fn string(v: Option<&Json>, what: &str) -> Result<Option<String>, ConfigError> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Number(n)) => Ok(Some(n.to_string())),
        Some(Json::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(invalid(what, "expected a string")),
    }
}

pub fn boolean(v: Option<&Json>, what: &str) -> Result<Option<bool>, ConfigError> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(invalid(what, "expected true or false")),
    }
}

/// A non-negative integer (OPA's `*_seconds` keys), also written as a string.
pub fn whole_number(v: Option<&Json>, what: &str) -> Result<Option<u64>, ConfigError> {
    let bad = || invalid(what, "expected a non-negative integer");
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(Json::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// `30s`, `5m`, `1h`, `250ms`, or a plain number of seconds.
pub fn parse_duration(v: &Json, what: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        invalid(
            what,
            "expected a duration such as 30s, 5m, 250ms or a number of seconds",
        )
    };
    match v {
        Json::Number(n) => n
            .as_f64()
            .filter(|f| *f >= 0.0 && f.is_finite())
            .map(Duration::from_secs_f64)
            .ok_or_else(bad),
        Json::String(s) => {
            let s = s.trim();
            let (num, unit) =
                s.find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .map_or((s, ""), |i| {
                        (
                            s.get(..i).unwrap_or_default(),
                            s.get(i..).unwrap_or_default(),
                        )
                    });
            let n: f64 = num.parse().map_err(|_| bad())?;
            let secs = match unit.trim() {
                "" | "s" => n,
                "ms" => n / 1000.0,
                "m" => n * 60.0,
                "h" => n * 3600.0,
                _ => return Err(bad()),
            };
            if !secs.is_finite() || secs < 0.0 {
                return Err(bad());
            }
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(bad()),
    }
}

/// Replaces `${NAME}` with `env(NAME)` (empty when unset), as OPA does.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        let body = after.get(2..).unwrap_or_default();
        match body.find('}') {
            Some(end) => {
                let name = body.get(..end).unwrap_or_default();
                out.push_str(&env(name).unwrap_or_default());
                rest = body.get(end + 1..).unwrap_or_default();
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(expand_env("a${A}b${B}c${", &env), "axbc${");
    }

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(&Json::String(s.into()), "x").unwrap();
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("2"), Duration::from_secs(2));
        assert!(parse_duration(&Json::String("2d".into()), "x").is_err());
    }
}
