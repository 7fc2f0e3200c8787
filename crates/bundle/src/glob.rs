//! Go's `path/filepath.Match`, used for `exclude_files` and `--ignore` patterns.
//!
//! Semantics (Unix): `*` matches any run of non-`/` characters, `?` one non-`/` character,
//! `[...]` a character class (`^` negates, `a-z` ranges, `\` escapes), `\x` a literal `x`.
//! The whole name must match. A malformed pattern is an error (OPA treats it as no match).

/// Returned for a syntactically invalid pattern (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPattern;

impl std::fmt::Display for BadPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("syntax error in pattern")
    }
}

/// Reports whether `name` matches the shell pattern `pattern` (Go `filepath.Match`).
pub fn go_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let pat: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Validate the whole pattern first so errors do not depend on the name, as in Go.
    validate(&pat)?;
    Ok(match_from(&pat, &name))
}

/// Same as [`go_match`] with a bad pattern counted as "no match" (OPA's behaviour).
pub fn go_match_lenient(pattern: &str, name: &str) -> bool {
    go_match(pattern, name).unwrap_or(false)
}

fn validate(pat: &[char]) -> Result<(), BadPattern> {
    let mut i = 0;
    while let Some(&c) = pat.get(i) {
        match c {
            '\\' => {
                if pat.get(i + 1).is_none() {
                    return Err(BadPattern);
                }
                i += 2;
            }
            '[' => i = class_end(pat, i)?,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Returns the index after the class starting at `pat[start] == '['`.
fn class_end(pat: &[char], start: usize) -> Result<usize, BadPattern> {
    let mut i = start + 1;
    if pat.get(i) == Some(&'^') {
        i += 1;
    }
    let mut first = true;
    loop {
        match pat.get(i) {
            None => return Err(BadPattern),
            Some(']') if !first => return Ok(i + 1),
            _ => {}
        }
        first = false;
        // lo
        i = class_char(pat, i)?.1;
        if pat.get(i) == Some(&'-') {
            i = class_char(pat, i + 1)?.1;
        }
    }
}

/// Reads one (possibly escaped) class character; returns it and the next index.
fn class_char(pat: &[char], i: usize) -> Result<(char, usize), BadPattern> {
    match pat.get(i) {
        None | Some('-') | Some(']') => Err(BadPattern),
        Some('\\') => pat.get(i + 1).map(|&c| (c, i + 2)).ok_or(BadPattern),
        Some(&c) => Ok((c, i + 1)),
    }
}

/// Backtracking matcher over a validated pattern.
fn match_from(pat: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    // Position to resume from after the most recent `*`: (pattern index after star, name index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(&pc) = pat.get(p) {
            if pc == '*' {
                star = Some((p + 1, n));
                p += 1;
                continue;
            }
            if let Some(next_p) = name.get(n).and_then(|&nc| match_one(pat, p, nc)) {
                p = next_p;
                n += 1;
                continue;
            }
        } else if n == name.len() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more character, but never a `/`.
        match star {
            Some((sp, sn)) if name.get(sn).is_some_and(|&c| c != '/') => {
                star = Some((sp, sn + 1));
                p = sp;
                n = sn + 1;
            }
            _ => return false,
        }
    }
}

/// Matches one pattern element at `pat[p]` (not `*`) against `c`; returns the next index.
fn match_one(pat: &[char], p: usize, c: char) -> Option<usize> {
    match pat.get(p)? {
        '?' => (c != '/').then_some(p + 1),
        '\\' => (pat.get(p + 1) == Some(&c)).then_some(p + 2),
        '[' => {
            let end = class_end(pat, p).ok()?;
            let mut i = p + 1;
            let negated = pat.get(i) == Some(&'^');
            if negated {
                i += 1;
            }
            let mut matched = false;
            while i < end - 1 {
                let (lo, next) = class_char(pat, i).ok()?;
                i = next;
                let mut hi = lo;
                if pat.get(i) == Some(&'-') {
                    let (h, next) = class_char(pat, i + 1).ok()?;
                    hi = h;
                    i = next;
                }
                if lo <= c && c <= hi {
                    matched = true;
                }
            }
            (matched != negated && c != '/').then_some(end)
        }
        &lit => (lit == c).then_some(p + 1),
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
    fn go_match_table() {
        // A subset of Go's own filepath.Match test table.
        let cases: &[(&str, &str, Result<bool, BadPattern>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(BadPattern)),
            ("[-]", "-", Err(BadPattern)),
            ("[x-]", "x", Err(BadPattern)),
            ("[-x]", "x", Err(BadPattern)),
            ("\\", "a", Err(BadPattern)),
            ("[a-b-c]", "a", Err(BadPattern)),
            ("[", "a", Err(BadPattern)),
            ("[^", "a", Err(BadPattern)),
            ("[^bc", "a", Err(BadPattern)),
            ("a[", "a", Err(BadPattern)),
            ("a[", "ab", Err(BadPattern)),
            ("*x", "xxx", Ok(true)),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                go_match(pattern, name),
                *want,
                "pattern {pattern:?} name {name:?}"
            );
        }
    }

    #[test]
    fn exclude_style_patterns() {
        assert!(go_match_lenient(".manifest", ".manifest"));
        assert!(go_match_lenient("*.json", "data.json"));
        assert!(!go_match_lenient("*.json", "a/data.json"));
        assert!(go_match_lenient("*/data.json", "a/data.json"));
        assert!(!go_match_lenient("[", "["));
    }
}
