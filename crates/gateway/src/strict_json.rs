//! A strict scanner for JSON text: RFC 8259's grammar exactly, plus the refusals a
//! gateway needs and serde_json does not make.
//!
//! serde_json keeps the last of two members with the same key, while other parsers keep
//! the first or refuse the document; a proxy that decided on one reading and forwarded
//! bytes that an upstream reads the other way would be authorising a different request
//! than the one executed. So this scanner refuses duplicate keys at any depth (compared
//! after unescaping, so `"a"` and `"\u0061"` collide), nesting beyond a limit, and the
//! object keys serde_json reserves for its private markers (see [`RESERVED_KEY_PREFIX`]).
//!
//! It builds no values: it reports where the members of the top-level object are, so the
//! caller can keep their raw text for forwarding and parse each one with serde_json.

use std::collections::HashSet;
use std::ops::Range;

use thiserror::Error;

/// Keys starting with this are serde_json's private markers. With the
/// `arbitrary_precision` and `raw_value` features (both on in this workspace) serde_json
/// reads `{"$serde_json::private::Number": "1"}` as the number 1 and
/// `{"$serde_json::private::RawValue": "[1]"}` as the array `[1]`, so the policy would
/// see a different value than the upstream. No MCP message needs such a key.
pub const RESERVED_KEY_PREFIX: &str = "$serde_json::private::";

/// serde_json's own recursion limit: deeper documents cannot be parsed into a `Value`.
pub const MAX_DEPTH_LIMIT: usize = 128;

/// What is wrong with a JSON text, and where (byte offset).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind} at byte {offset}")]
pub struct ScanError {
    pub kind: ScanErrorKind,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScanErrorKind {
    #[error("the text is not valid UTF-8")]
    NotUtf8,
    #[error("a byte order mark is not allowed")]
    ByteOrderMark,
    #[error("the text ends before the JSON value does")]
    UnexpectedEnd,
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    #[error("invalid escape sequence in a string")]
    InvalidEscape,
    #[error("unpaired UTF-16 surrogate in a \\u escape")]
    LoneSurrogate,
    #[error("unescaped control character in a string")]
    ControlCharacter,
    #[error("invalid number")]
    InvalidNumber,
    #[error("characters after the JSON value")]
    TrailingCharacters,
    #[error("nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("duplicate object key {0:?}")]
    DuplicateKey(String),
    #[error("object key {0:?} is reserved by the JSON library")]
    ReservedKey(String),
}

/// The kind of the top-level value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopLevel {
    Object,
    Array,
    /// A string, number, `true`, `false` or `null`.
    Scalar,
}

/// One member of the top-level object: its decoded key, and the byte ranges of the key
/// as written (quotes included) and of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: String,
    pub key_span: Range<usize>,
    pub value: Range<usize>,
}

/// A JSON text that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub top: TopLevel,
    /// The top-level object's members in document order (empty unless `top` is `Object`).
    pub members: Vec<Member>,
}

/// Checks `bytes` as one JSON text with at most `max_depth` nested arrays/objects
/// (capped at [`MAX_DEPTH_LIMIT`]).
pub fn scan(bytes: &[u8], max_depth: usize) -> Result<Scanned, ScanError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(ScanError {
            kind: ScanErrorKind::ByteOrderMark,
            offset: 0,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ScanError {
        kind: ScanErrorKind::NotUtf8,
        offset: e.valid_up_to(),
    })?;
    let mut s = Scanner {
        text: text.as_bytes(),
        pos: 0,
        max_depth: max_depth.min(MAX_DEPTH_LIMIT),
    };
    s.skip_ws();
    let top = match s.peek() {
        Some(b'{') => TopLevel::Object,
        Some(b'[') => TopLevel::Array,
        _ => TopLevel::Scalar,
    };
    let mut members = Vec::new();
    if top == TopLevel::Object {
        s.object(1, Some(&mut members))?;
    } else {
        s.value(1)?;
    }
    s.skip_ws();
    if s.pos < s.text.len() {
        return Err(s.err(ScanErrorKind::TrailingCharacters));
    }
    Ok(Scanned { top, members })
}

struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl Scanner<'_> {
    fn err(&self, kind: ScanErrorKind) -> ScanError {
        ScanError {
            kind,
            offset: self.pos,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    /// The character at the current position, for error messages.
    fn unexpected(&self) -> ScanError {
        let rest = self
            .text
            .get(self.pos..)
            .and_then(|b| std::str::from_utf8(b).ok());
        match rest.and_then(|r| r.chars().next()) {
            Some(c) => self.err(ScanErrorKind::UnexpectedChar(c)),
            None => self.err(ScanErrorKind::UnexpectedEnd),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), ScanError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'{') => self.object(depth, None),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string(false).map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(self.unexpected()),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), ScanError> {
        if depth > self.max_depth {
            Err(self.err(ScanErrorKind::TooDeep {
                limit: self.max_depth,
            }))
        } else {
            Ok(())
        }
    }

    fn object(&mut self, depth: usize, mut out: Option<&mut Vec<Member>>) -> Result<(), ScanError> {
        self.enter(depth)?;
        self.expect(b'{')?;
        // SipHash keys: a body full of colliding keys cannot make this quadratic.
        let mut seen = HashSet::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected());
            }
            let key_at = self.pos;
            let key = self.string(true)?.unwrap_or_default();
            let key_span = key_at..self.pos;
            if key.starts_with(RESERVED_KEY_PREFIX) {
                return Err(ScanError {
                    kind: ScanErrorKind::ReservedKey(key),
                    offset: key_at,
                });
            }
            if !seen.insert(key.clone()) {
                return Err(ScanError {
                    kind: ScanErrorKind::DuplicateKey(key),
                    offset: key_at,
                });
            }
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let start = self.pos;
            self.value(depth + 1)?;
            if let Some(members) = out.as_deref_mut() {
                members.push(Member {
                    key,
                    key_span,
                    value: start..self.pos,
                });
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), ScanError> {
        self.enter(depth)?;
        self.expect(b'[')?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            self.value(depth + 1)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ScanError> {
        for &b in word {
            if self.peek() != Some(b) {
                return Err(self.unexpected());
            }
            self.pos += 1;
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err(ScanErrorKind::InvalidNumber)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err(ScanErrorKind::InvalidNumber));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err(ScanErrorKind::InvalidNumber));
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, ScanError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.err(ScanErrorKind::InvalidEscape)),
            };
            v = v * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }

    /// Scans a string; with `decode`, returns its value (only keys need it).
    fn string(&mut self, decode: bool) -> Result<Option<String>, ScanError> {
        self.expect(b'"')?;
        let mut out = decode.then(String::new);
        let mut run_start = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err(ScanErrorKind::UnexpectedEnd));
            };
            match b {
                b'"' => {
                    if let Some(o) = out.as_mut() {
                        o.push_str(self.slice(run_start, self.pos));
                    }
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    if let Some(o) = out.as_mut() {
                        o.push_str(self.slice(run_start, self.pos));
                    }
                    self.pos += 1;
                    let c = self.escape()?;
                    if let Some(o) = out.as_mut() {
                        o.push(c);
                    }
                    run_start = self.pos;
                }
                0x00..=0x1F => return Err(self.err(ScanErrorKind::ControlCharacter)),
                _ => self.pos += 1,
            }
        }
    }

    /// The text between two positions that lie on character boundaries.
    fn slice(&self, from: usize, to: usize) -> &str {
        self.text
            .get(from..to)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// Scans one escape (after the backslash) and returns the character it stands for.
    fn escape(&mut self) -> Result<char, ScanError> {
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let at = self.pos;
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if self.peek() != Some(b'\\') {
                            return Err(ScanError {
                                kind: ScanErrorKind::LoneSurrogate,
                                offset: at,
                            });
                        }
                        self.pos += 1;
                        if self.peek() != Some(b'u') {
                            return Err(ScanError {
                                kind: ScanErrorKind::LoneSurrogate,
                                offset: at,
                            });
                        }
                        self.pos += 1;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(ScanError {
                                kind: ScanErrorKind::LoneSurrogate,
                                offset: at,
                            });
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    0xDC00..=0xDFFF => {
                        return Err(ScanError {
                            kind: ScanErrorKind::LoneSurrogate,
                            offset: at,
                        });
                    }
                    other => other,
                };
                return char::from_u32(code).ok_or(ScanError {
                    kind: ScanErrorKind::LoneSurrogate,
                    offset: at,
                });
            }
            _ => return Err(self.err(ScanErrorKind::InvalidEscape)),
        };
        self.pos += 1;
        Ok(c)
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

    fn kind(text: &str) -> ScanErrorKind {
        scan(text.as_bytes(), 64).unwrap_err().kind
    }

    #[test]
    fn accepts_what_serde_json_accepts() {
        let docs = [
            r#"{}"#,
            r#"[]"#,
            r#" {"a" : [1, -0, 0.5, 1e10, 1E-3, -12.5e+2, true, false, null, "x"]} "#,
            r#""\u00e9\ud83d\ude00\n\"\\\/\b\f\r\t""#,
            "\"é and 😀 raw\"",
            "123",
        ];
        for d in docs {
            scan(d.as_bytes(), 64).unwrap();
            serde_json::from_str::<serde_json::Value>(d).unwrap();
        }
    }

    #[test]
    fn reports_top_level_members_with_raw_spans() {
        let text = r#"{ "b": {"x": 1} , "a":"s" }"#;
        let s = scan(text.as_bytes(), 64).unwrap();
        assert_eq!(s.top, TopLevel::Object);
        let got: Vec<(&str, &str)> = s
            .members
            .iter()
            .map(|m| (m.key.as_str(), &text[m.value.clone()]))
            .collect();
        assert_eq!(got, vec![("b", r#"{"x": 1}"#), ("a", r#""s""#)]);
    }

    #[test]
    fn refuses_invalid_and_truncated_json() {
        for (text, expected) in [
            ("", ScanErrorKind::UnexpectedEnd),
            ("{", ScanErrorKind::UnexpectedEnd),
            (r#"{"a":1"#, ScanErrorKind::UnexpectedEnd),
            (r#"{"a":"x"#, ScanErrorKind::UnexpectedEnd),
            (r#"{"a":1,}"#, ScanErrorKind::UnexpectedChar('}')),
            (r#"[1,]"#, ScanErrorKind::UnexpectedChar(']')),
            (r#"{a:1}"#, ScanErrorKind::UnexpectedChar('a')),
            (r#"{'a':1}"#, ScanErrorKind::UnexpectedChar('\'')),
            ("01", ScanErrorKind::TrailingCharacters),
            ("1.", ScanErrorKind::InvalidNumber),
            ("-", ScanErrorKind::InvalidNumber),
            ("1e", ScanErrorKind::InvalidNumber),
            (".5", ScanErrorKind::UnexpectedChar('.')),
            ("+1", ScanErrorKind::UnexpectedChar('+')),
            ("NaN", ScanErrorKind::UnexpectedChar('N')),
            ("tru", ScanErrorKind::UnexpectedEnd),
            ("nul1", ScanErrorKind::UnexpectedChar('1')),
            (r#""\x""#, ScanErrorKind::InvalidEscape),
            (r#""\u12""#, ScanErrorKind::InvalidEscape),
            ("\"a\tb\"", ScanErrorKind::ControlCharacter),
            (r#"{} {}"#, ScanErrorKind::TrailingCharacters),
            ("{}\u{a0}", ScanErrorKind::TrailingCharacters),
            (r#"/* c */ {}"#, ScanErrorKind::UnexpectedChar('/')),
        ] {
            assert_eq!(kind(text), expected, "{text:?}");
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "serde_json accepts {text:?}"
            );
        }
    }

    #[test]
    fn refuses_lone_surrogates() {
        for text in [
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
        ] {
            assert_eq!(kind(text), ScanErrorKind::LoneSurrogate, "{text}");
        }
    }

    #[test]
    fn refuses_bom_and_invalid_utf8() {
        assert_eq!(
            scan(b"\xEF\xBB\xBF{}", 64).unwrap_err().kind,
            ScanErrorKind::ByteOrderMark
        );
        let e = scan(b"{\"a\":\"\xff\"}", 64).unwrap_err();
        assert_eq!((e.kind, e.offset), (ScanErrorKind::NotUtf8, 6));
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        assert_eq!(
            kind(r#"{"a":1,"a":2}"#),
            ScanErrorKind::DuplicateKey("a".into())
        );
        assert_eq!(
            kind(r#"{"p":{"q":[{"x":1,"y":2,"x":3}]}}"#),
            ScanErrorKind::DuplicateKey("x".into())
        );
        // Equal after unescaping.
        assert_eq!(
            kind(r#"{"name":1,"n\u0061me":2}"#),
            ScanErrorKind::DuplicateKey("name".into())
        );
        // Same key in sibling objects is fine.
        scan(br#"{"a":{"k":1},"b":{"k":2}}"#, 64).unwrap();
    }

    #[test]
    fn refuses_serde_json_marker_keys() {
        // The reason for the refusal: with the workspace's serde_json features, these
        // objects parse to a number and an array.
        let number = r#"{"$serde_json::private::Number":"1"}"#;
        assert!(matches!(kind(number), ScanErrorKind::ReservedKey(_)));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(number).unwrap(),
            serde_json::json!(1)
        );
        assert!(matches!(
            kind(r#"{"a":{"$serde_json::private::RawValue":"[1]"}}"#),
            ScanErrorKind::ReservedKey(_)
        ));
    }

    /// Mutated documents: the scanner accepts exactly what serde_json accepts, apart
    /// from its own extra refusals.
    #[test]
    fn agrees_with_serde_json_on_mutated_documents() {
        let seeds = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[1,2.5e-3,true,null],"s":"\u00e9\n"}}}"#,
            r#"[{"a":{}},[],"",-0,1E+2]"#,
            r#"{"k":"\ud83d\ude00","n":-12.5}"#,
        ];
        let alphabet = b"{}[]:,\"\\ \tu0aeE.+-19tfnlrsx\xc3\xa9";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut checked = 0;
        for seed in seeds {
            for _ in 0..3000 {
                let mut doc = seed.as_bytes().to_vec();
                for _ in 0..1 + next(3) {
                    let at = next(doc.len() + 1);
                    let byte = alphabet[next(alphabet.len())];
                    match next(3) {
                        0 if at < doc.len() => doc[at] = byte,
                        1 if at < doc.len() => {
                            doc.remove(at);
                        }
                        _ => doc.insert(at, byte),
                    }
                }
                let ours = scan(&doc, 64);
                let theirs = serde_json::from_slice::<serde_json::Value>(&doc);
                match (&ours, &theirs) {
                    (Ok(_), Ok(_)) | (Err(_), Err(_)) => {}
                    (Err(e), Ok(_))
                        if matches!(
                            e.kind,
                            ScanErrorKind::DuplicateKey(_) | ScanErrorKind::ReservedKey(_)
                        ) => {}
                    _ => panic!(
                        "{:?}: scanner {ours:?}, serde_json {:?}",
                        String::from_utf8_lossy(&doc),
                        theirs.map(|_| ())
                    ),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 9000);
    }

    #[test]
    fn depth_limit_counts_containers() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        scan(nested(64).as_bytes(), 64).unwrap();
        assert_eq!(
            scan(nested(65).as_bytes(), 64).unwrap_err().kind,
            ScanErrorKind::TooDeep { limit: 64 }
        );
        scan(br#"{"a":{"b":1}}"#, 2).unwrap();
        assert_eq!(
            scan(br#"{"a":{"b":[]}}"#, 2).unwrap_err().kind,
            ScanErrorKind::TooDeep { limit: 2 }
        );
        // Very deep input fails fast instead of exhausting the stack.
        assert!(matches!(
            scan(nested(100_000).as_bytes(), 1000).unwrap_err().kind,
            ScanErrorKind::TooDeep {
                limit: MAX_DEPTH_LIMIT
            }
        ));
    }
}
