//! Reads a Rego module's `package` path without a Rego parser.
//!
//! Roots validation only needs the package path, so this skips leading whitespace and
//! `#` comments, expects the `package` keyword and reads the reference after it:
//! identifiers joined by `.`, and string parts in brackets (`a["b-c"].d`, raw strings
//! too). Full parsing and compilation belong to `lockstep-policy`.

/// A package path such as `data.a.b` (the implicit `data` is not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagePath {
    /// Path parts after `data`, e.g. `["a", "b-c", "d"]`.
    pub parts: Vec<String>,
}

/// Rego keywords that cannot be written as `.name` in a reference.
const KEYWORDS: &[&str] = &[
    "as", "contains", "data", "default", "else", "every", "false", "if", "import", "in", "input",
    "not", "null", "package", "some", "true", "with",
];

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl PackagePath {
    /// OPA's `Ref.Ptr()`: parts URL-path-escaped and joined with `/` (`a/b`).
    pub fn ptr(&self) -> String {
        self.parts
            .iter()
            .map(|p| path_escape(p))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// How OPA prints the package in errors: `package a["b-c"].d`.
    pub fn display(&self) -> String {
        let mut out = String::from("package ");
        for (i, part) in self.parts.iter().enumerate() {
            if i == 0 {
                out.push_str(part);
            } else if is_ident(part) && !KEYWORDS.contains(&part.as_str()) {
                out.push('.');
                out.push_str(part);
            } else {
                out.push('[');
                out.push_str(&serde_json::Value::String(part.clone()).to_string());
                out.push(']');
            }
        }
        out
    }
}

/// Go's `url.PathEscape`.
fn path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+:=@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why no package path could be read (OPA's parse-error texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("empty module")]
    Empty,
    #[error("package expected")]
    Expected,
    #[error("package expected: invalid package path")]
    InvalidHead,
    #[error("invalid package path")]
    Invalid,
    #[error("package path must contain only strings")]
    NotStrings,
    #[error("invalid package path: missing ']'")]
    MissingBracket,
    #[error("unexpected {0:?} in package path")]
    Unexpected(char),
}

/// Finds the package declaration of a Rego module.
pub fn extract_package(source: &str) -> Result<PackagePath, PackageError> {
    let mut rest = skip_trivia(source);
    if rest.is_empty() {
        return Err(PackageError::Empty);
    }
    rest = rest
        .strip_prefix("package")
        .filter(|r| r.starts_with(|c: char| c.is_whitespace()))
        .ok_or(PackageError::Expected)?;
    rest = rest.trim_start_matches([' ', '\t']);
    let (head, mut rest) = take_ident(rest).ok_or(PackageError::InvalidHead)?;
    let mut parts = vec![head.to_string()];
    loop {
        if let Some(after_dot) = rest.strip_prefix('.') {
            let (ident, after) = take_ident(after_dot).ok_or(PackageError::Invalid)?;
            parts.push(ident.to_string());
            rest = after;
        } else if let Some(after_bracket) = rest.strip_prefix('[') {
            let inner = after_bracket.trim_start_matches([' ', '\t']);
            let (part, after) = take_string(inner).ok_or(PackageError::NotStrings)?;
            let after = after.trim_start_matches([' ', '\t']);
            rest = after
                .strip_prefix(']')
                .ok_or(PackageError::MissingBracket)?;
            parts.push(part);
        } else {
            break;
        }
    }
    // The path must end at whitespace, a comment, `;` or the end of the module.
    match rest.chars().next() {
        None | Some(' ' | '\t' | '\r' | '\n' | '#' | ';') => Ok(PackagePath { parts }),
        Some(c) => Err(PackageError::Unexpected(c)),
    }
}

fn skip_trivia(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        match s.strip_prefix('#') {
            Some(comment) => {
                s = comment
                    .find('\n')
                    .and_then(|i| comment.get(i..))
                    .unwrap_or_default()
            }
            None => return s,
        }
    }
}

fn take_ident(s: &str) -> Option<(&str, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let ident = s.get(..end)?;
    is_ident(ident).then(|| (ident, s.get(end..).unwrap_or_default()))
}

fn take_string(s: &str) -> Option<(String, &str)> {
    if let Some(raw) = s.strip_prefix('`') {
        let end = raw.find('`')?;
        return Some((raw.get(..end)?.to_string(), raw.get(end + 1..)?));
    }
    let body = s.strip_prefix('"')?;
    // Find the closing quote, honouring backslash escapes, then let serde_json decode it.
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                let literal = s.get(..i + 2)?;
                let value: String = serde_json::from_str(literal).ok()?;
                return Some((value, body.get(i + 1..)?));
            }
            '\n' => return None,
            _ => {}
        }
    }
    None
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

    fn pkg(src: &str) -> PackagePath {
        extract_package(src).unwrap()
    }

    #[test]
    fn simple_and_commented() {
        assert_eq!(pkg("package foo").parts, vec!["foo"]);
        assert_eq!(
            pkg("# c\n\n  # d\npackage a.b.c\n\nallow := true").ptr(),
            "a/b/c"
        );
        assert_eq!(pkg("package a.b # trailing").display(), "package a.b");
    }

    #[test]
    fn bracket_parts() {
        let p = pkg("package a[\"b-c\"].d");
        assert_eq!(p.parts, vec!["a", "b-c", "d"]);
        assert_eq!(p.display(), "package a[\"b-c\"].d");
        assert_eq!(pkg("package a[ `x/y` ]").ptr(), "a/x%2Fy");
        assert_eq!(pkg("package a[\"if\"]").display(), "package a[\"if\"]");
    }

    #[test]
    fn refusals() {
        assert_eq!(extract_package("").unwrap_err().to_string(), "empty module");
        assert_eq!(
            extract_package("# only a comment").unwrap_err(),
            PackageError::Empty
        );
        assert!(extract_package("allow := true").is_err());
        assert!(extract_package("packagefoo").is_err());
        assert!(extract_package("package a[1]").is_err());
        assert!(extract_package("package a.").is_err());
        assert!(extract_package("package a[\"x\"").is_err());
        assert!(extract_package("package a-b").is_err());
    }
}
