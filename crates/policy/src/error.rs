//! Typed errors, and turning regorus's rendered error text back into locations.
//!
//! regorus reports errors as `anyhow` strings rendered for a terminal:
//!
//! ```text
//!
//! --> policy.rego:4:3
//!   |
//! 4 |   x == 1
//!   |   ^
//! error: use of undefined variable `x` is unsafe
//! ```
//!
//! Callers (the CLI, the gateway's logs, `lockstep test`) need the location and the
//! message as data, so [`Diagnostic::from_regorus`] parses that shape back.

use std::fmt;

use serde::Serialize;

/// A position in a policy file. Rows and columns start at 1, as in OPA.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SourceLocation {
    pub file: String,
    pub row: u32,
    pub col: u32,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.row, self.col)
    }
}

/// One problem found in a policy, with OPA's error code where one applies
/// (`rego_parse_error`, `rego_compile_error`, `rego_unsafe_var_error`,
/// `rego_recursion_error`, `rego_type_error`, `eval_conflict_error`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<SourceLocation>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}: {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl Diagnostic {
    pub fn new(code: &str, message: impl Into<String>, location: Option<SourceLocation>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
            location,
        }
    }

    /// Parse a regorus error. `default_code` is used unless the message itself
    /// says what kind of problem it is (unsafe variable, recursion, conflict).
    pub fn from_regorus(err: &anyhow::Error, default_code: &str) -> Self {
        Self::from_regorus_text(&format!("{err:#}"), default_code)
    }

    /// See [`Diagnostic::from_regorus`]; works on the rendered text.
    pub fn from_regorus_text(text: &str, default_code: &str) -> Self {
        let mut location = None;
        let mut message = None;
        let mut nested = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("--> ") {
                match parse_location(rest) {
                    Some(loc) if location.is_none() => location = Some(loc),
                    Some(loc) => nested.push(loc.to_string()),
                    None => {}
                }
            } else if message.is_none()
                && let Some(rest) = line.strip_prefix("error: ")
            {
                message = Some(rest.trim().to_string());
            }
        }
        let mut message = match message {
            Some(m) => m,
            // Not the rendered shape (data errors, limits): keep the whole text.
            None => text.trim().to_string(),
        };
        // Recursion errors chain several rendered spans; keep them as a compact trail.
        if !nested.is_empty() {
            message = format!("{message} (via {})", nested.join(" -> "));
        }
        let code = classify(&message).unwrap_or(default_code);
        Self::new(code, message, location)
    }
}

/// Parse `file:row:col`; the file itself may contain colons.
fn parse_location(text: &str) -> Option<SourceLocation> {
    let mut parts = text.trim().rsplitn(3, ':');
    let col = parts.next()?.parse().ok()?;
    let row = parts.next()?.parse().ok()?;
    let file = parts.next()?.to_string();
    Some(SourceLocation { file, row, col })
}

/// OPA's error code for messages whose kind is clear from the text.
fn classify(message: &str) -> Option<&'static str> {
    if message.contains("is unsafe") {
        Some("rego_unsafe_var_error")
    } else if message.starts_with("recursion detected") {
        Some("rego_recursion_error")
    } else if message.contains("conflicts with rule")
        || message.contains("generated multiple times")
    {
        Some("eval_conflict_error")
    } else if message.starts_with("could not find function") {
        Some("rego_type_error")
    } else {
        None
    }
}

/// Render several diagnostics the way OPA does (`1 error occurred: ...`).
pub(crate) fn render_diagnostics(diags: &[Diagnostic]) -> String {
    match diags {
        [one] => format!("1 error occurred: {one}"),
        many => {
            let mut out = format!("{} errors occurred:", many.len());
            for d in many {
                out.push('\n');
                out.push_str(&d.to_string());
            }
            out
        }
    }
}

/// Why a set of modules and data could not become a [`crate::PolicySet`].
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Parse errors, unsafe variables, undefined or unsupported functions, path
    /// conflicts: everything that has a location in a policy file.
    #[error("{}", render_diagnostics(.0))]
    Policy(Vec<Diagnostic>),

    /// regorus parses every module of an engine with one Rego version.
    #[error(
        "bundle mixes Rego v0 and v1 modules ({v0_file} is v0, {v1_file} is v1); \
         lockstep evaluates a bundle with one Rego version, so migrate the v0 modules \
         (opa fmt --v0-v1) or split the bundle"
    )]
    MixedRegoVersions { v0_file: String, v1_file: String },

    #[error("{file}: unsupported rego_version {version} (expected 0 or 1)")]
    InvalidRegoVersion { file: String, version: i64 },

    /// The data document could not be loaded (not an object, or conflicting values).
    #[error("invalid data: {0}")]
    Data(String),

    /// regorus failed in a way that is not about the policy (e.g. its AST export).
    #[error("internal error: {0}")]
    Internal(String),
}

impl CompileError {
    /// The located problems, empty for errors without a location.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Policy(d) => d,
            _ => &[],
        }
    }
}

/// Why regorus's bytecode VM does not run an entrypoint (the interpreter does), or
/// why one run on it failed (the interpreter then answers instead).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RvmError {
    #[error("the bundle uses a construct the RVM evaluates differently ({0})")]
    Construct(String),

    #[error("{0} is neither a rule nor a package of single-name rules")]
    NotCompilable(String),

    #[error("no rules to compile")]
    NoRules,

    /// The rewritten modules, the program or the data did not load.
    #[error("{0}")]
    Load(String),

    /// A run on the VM failed.
    #[error("{0}")]
    Run(String),

    #[error(
        "the RVM disagreed with the interpreter on probe {probe}: RVM {rvm}, interpreter {interpreter}"
    )]
    Disagreed {
        probe: usize,
        rvm: String,
        interpreter: String,
    },
}

/// Why an evaluation produced no result.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The query text itself does not parse or is unsafe.
    #[error("invalid query: {0}")]
    Query(Diagnostic),

    /// Evaluation failed (conflicting rule values, time limit, unsupported call...).
    #[error("{0}")]
    Eval(Diagnostic),

    /// The input could not be converted to a Rego value.
    #[error("invalid input: {0}")]
    Input(String),

    /// A result could not be converted back to JSON.
    #[error("cannot convert result to JSON: {0}")]
    Output(String),
}

impl EvalError {
    /// Classify a regorus evaluation error: problems located in the query text are
    /// the caller's, everything else happened while evaluating the policy.
    pub(crate) fn from_regorus(err: &anyhow::Error) -> Self {
        let diag = Diagnostic::from_regorus_text(&format!("{err:#}"), "eval_error");
        let in_query = diag.location.as_ref().is_some_and(|l| l.file == QUERY_FILE);
        if in_query {
            let code = if diag.code == "eval_error" {
                "rego_parse_error"
            } else {
                diag.code.as_str()
            };
            Self::Query(Diagnostic::new(code, diag.message.clone(), diag.location))
        } else if diag.code == "eval_error" && crate::builtins::is_builtin_error(&diag.message) {
            // A provided builtin failed: OPA's code for that.
            Self::Eval(Diagnostic::new(
                "eval_builtin_error",
                diag.message.clone(),
                diag.location,
            ))
        } else {
            Self::Eval(diag)
        }
    }

    /// The diagnostic behind this error, when there is one.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            Self::Query(d) | Self::Eval(d) => Some(d),
            _ => None,
        }
    }
}

/// The file name regorus gives to query text.
pub(crate) const QUERY_FILE: &str = "<query.rego>";

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    #[test]
    fn parses_rendered_regorus_error() {
        let text = "\n--> mcp/p.rego:4:3\n  |\n4 |   x == 1\n  |   ^\nerror: use of undefined variable `x` is unsafe";
        let d = Diagnostic::from_regorus_text(text, "rego_compile_error");
        assert_eq!(d.code, "rego_unsafe_var_error");
        assert_eq!(d.message, "use of undefined variable `x` is unsafe");
        assert_eq!(
            d.location,
            Some(SourceLocation {
                file: "mcp/p.rego".into(),
                row: 4,
                col: 3
            })
        );
        assert_eq!(
            d.to_string(),
            "mcp/p.rego:4:3: rego_unsafe_var_error: use of undefined variable `x` is unsafe"
        );
    }

    #[test]
    fn file_names_may_contain_colons() {
        let loc = parse_location("C:/x/p.rego:10:2").unwrap();
        assert_eq!(loc.file, "C:/x/p.rego");
        assert_eq!((loc.row, loc.col), (10, 2));
    }

    #[test]
    fn unrendered_text_is_kept_whole() {
        let d = Diagnostic::from_regorus_text("data must be object", "rego_compile_error");
        assert_eq!(d.message, "data must be object");
        assert_eq!(d.location, None);
    }

    #[test]
    fn several_diagnostics_render_like_opa() {
        let a = Diagnostic::new("rego_parse_error", "bad", None);
        assert_eq!(
            render_diagnostics(std::slice::from_ref(&a)),
            "1 error occurred: rego_parse_error: bad"
        );
        assert_eq!(
            render_diagnostics(&[a.clone(), a]),
            "2 errors occurred:\nrego_parse_error: bad\nrego_parse_error: bad"
        );
    }
}
