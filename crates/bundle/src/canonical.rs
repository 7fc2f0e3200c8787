//! OPA's canonical JSON form of "structured" bundle files, used only for hashing.
//!
//! OPA hashes `data.json`, `data.yaml`, `.manifest` and `*signatures.json` not over their
//! bytes but over a canonical serialisation of the parsed document: object keys sorted
//! bytewise, no whitespace, scalars encoded like Go's `encoding/json` with HTML escaping
//! off, numbers as their literal text (OPA decodes with `UseNumber`). This makes the
//! signature independent of formatting.
//!
//! Two producers share one string encoder:
//! - [`write_canonical_json_bytes`] works straight from JSON text. It never builds a tree:
//!   objects are re-ordered by remembering where each member's value starts, so a 100 MB
//!   `data.json` is hashed with a few small vectors of memory. It is what hashing uses.
//! - [`write_canonical_value`] works from a parsed [`Value`] (YAML input, built manifests).

use std::io::{self, Write};

use serde_json::Value;

/// Deepest nesting accepted from raw JSON; deeper documents are refused, not overflowed.
const MAX_DEPTH: usize = 512;

/// Encodes `s` as a JSON string exactly like Go's `encoding/json` with `SetEscapeHTML(false)`:
/// `"` and `\` escaped, `\b \f \n \r \t` short forms, other controls as `\u00xx`
/// (lowercase hex), U+2028/U+2029 escaped, everything else (including `<>&` and DEL) raw.
pub fn write_go_json_string(s: &str, out: &mut impl Write) -> io::Result<()> {
    write_go_string(s, out, false)
}

/// Like [`write_go_json_string`] but with Go's default HTML escaping (`<`, `>`, `&` as
/// `\u003c`, `\u003e`, `\u0026`), as `json.Marshal`/`json.MarshalIndent` write them.
pub fn write_go_json_string_html(s: &str, out: &mut impl Write) -> io::Result<()> {
    write_go_string(s, out, true)
}

fn write_go_string(s: &str, out: &mut impl Write, escape_html: bool) -> io::Result<()> {
    out.write_all(b"\"")?;
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0x00..=0x1f => None,
            b'<' | b'>' | b'&' if escape_html => None,
            // U+2028 / U+2029 are E2 80 A8 / E2 80 A9 in UTF-8.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8) | Some(0xa9)) =>
            {
                None
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.write_all(bytes.get(start..i).unwrap_or_default())?;
        match escape {
            Some(e) => {
                out.write_all(e)?;
                i += 1;
            }
            None if b == 0xe2 => {
                let last = if bytes.get(i + 2) == Some(&0xa8) {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                };
                out.write_all(last)?;
                i += 3;
            }
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
                let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
                out.write_all(&[b'\\', b'u', b'0', b'0', hi, lo])?;
                i += 1;
            }
        }
        start = i;
    }
    out.write_all(bytes.get(start..).unwrap_or_default())?;
    out.write_all(b"\"")
}

/// Writes the canonical form of a parsed value.
pub fn write_canonical_value(v: &Value, out: &mut impl Write) -> io::Result<()> {
    match v {
        Value::Null => out.write_all(b"null"),
        Value::Bool(true) => out.write_all(b"true"),
        Value::Bool(false) => out.write_all(b"false"),
        // With `arbitrary_precision` this is the literal text, as Go's json.Number.
        Value::Number(n) => write!(out, "{n}"),
        Value::String(s) => write_go_json_string(s, out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical_value(item, out)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            // serde_json's map (no `preserve_order`) is a BTreeMap<String, _>: it iterates
            // in bytewise key order, which is the order Go's sort.Strings gives.
            out.write_all(b"{")?;
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_go_json_string(k, out)?;
                out.write_all(b":")?;
                write_canonical_value(item, out)?;
            }
            out.write_all(b"}")
        }
    }
}

/// The canonical form of a parsed value as a string (for tests and small documents).
pub fn canonical_value_string(v: &Value) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_canonical_value(v, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Why raw JSON could not be canonicalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawJsonError {
    /// Not valid JSON (the caller may try YAML, as OPA's `util.Unmarshal` does).
    Invalid(String),
    /// The sink failed.
    Io(String),
}

/// Writes the canonical form of the JSON document `input` without building a tree.
///
/// Returns [`RawJsonError::Invalid`] when `input` is not one valid JSON value (with
/// optional surrounding whitespace). The document is validated while it is written (one
/// scan fewer for a large file): after an error, what reached `out` is not canonical
/// JSON of anything and must be discarded, as a digest's caller does.
pub fn write_canonical_json_bytes(input: &[u8], out: &mut impl Write) -> Result<(), RawJsonError> {
    let scanner = Scanner { buf: input };
    let start = scanner.skip_ws(0);
    let end = scanner
        .emit_value(start, out, input.len() - start <= SMALL_OBJECT, 0)
        .map_err(|e| match e {
            EmitError::Io(e) => RawJsonError::Io(e.to_string()),
            EmitError::Invalid(m) => RawJsonError::Invalid(m),
        })?;
    if scanner.skip_ws(end) != input.len() {
        return Err(RawJsonError::Invalid(format!(
            "invalid character after top-level value at offset {end}"
        )));
    }
    Ok(())
}

/// Checks that `input` is one valid JSON document (Go's `json.Valid`) without building
/// anything; returns the first byte of the value (`{`, `[`, ...) on success.
pub fn validate_json(input: &[u8]) -> Result<u8, RawJsonError> {
    let scanner = Scanner { buf: input };
    let start = scanner.skip_ws(0);
    let end = scanner.skip_value(start, 0)?;
    if scanner.skip_ws(end) != input.len() {
        return Err(RawJsonError::Invalid(format!(
            "invalid character after top-level value at offset {end}"
        )));
    }
    Ok(input.get(start).copied().unwrap_or(b' '))
}

/// Canonical JSON of a raw document as a string (tests, small documents).
pub fn canonical_json_bytes_string(input: &[u8]) -> Result<String, RawJsonError> {
    let mut out = Vec::new();
    write_canonical_json_bytes(input, &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The object structure of a JSON document down to a depth: what checks on data *paths*
/// need (which keys exist, which values are objects) without the values themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonShape {
    /// An object above the depth limit: its members in document order (a later duplicate
    /// key replaces an earlier one, as in Go).
    Object(Vec<(String, JsonShape)>),
    /// Anything else: a scalar, an array, or any value at the depth limit.
    Other,
}

/// The [`JsonShape`] of `input`, objects expanded for `depth` levels (0: the whole document
/// is [`JsonShape::Other`]). The whole document is validated, as [`validate_json`] does.
pub fn json_shape(input: &[u8], depth: usize) -> Result<JsonShape, RawJsonError> {
    let scanner = Scanner { buf: input };
    let (shape, end) = scanner.shape(scanner.skip_ws(0), depth, 0)?;
    if scanner.skip_ws(end) != input.len() {
        return Err(RawJsonError::Invalid(format!(
            "invalid character after top-level value at offset {end}"
        )));
    }
    Ok(shape)
}

enum EmitError {
    Io(io::Error),
    Invalid(String),
}

impl From<io::Error> for EmitError {
    fn from(e: io::Error) -> Self {
        EmitError::Io(e)
    }
}

impl From<RawJsonError> for EmitError {
    fn from(e: RawJsonError) -> Self {
        match e {
            RawJsonError::Invalid(m) | RawJsonError::Io(m) => EmitError::Invalid(m),
        }
    }
}

/// Objects up to this many bytes of source are canonicalised in one scan, through a
/// scratch buffer of about their size (see `Scanner::emit_value`).
const SMALL_OBJECT: usize = 64 * 1024;

/// Where an object member's canonical value is while the members are sorted.
#[derive(Clone, Copy)]
enum Place {
    /// Already emitted, in the object's scratch buffer.
    Scratch(usize, usize),
    /// Still to emit, from this span of the source.
    Source(usize, usize),
}

/// A validating JSON scanner over a byte slice; positions are byte offsets.
struct Scanner<'a> {
    buf: &'a [u8],
}

fn invalid(msg: &str, pos: usize) -> RawJsonError {
    RawJsonError::Invalid(format!("{msg} at offset {pos}"))
}

impl Scanner<'_> {
    fn at(&self, pos: usize) -> Option<u8> {
        self.buf.get(pos).copied()
    }

    fn skip_ws(&self, mut pos: usize) -> usize {
        while matches!(self.at(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            pos += 1;
        }
        pos
    }

    /// Validates the value starting at `pos` and returns the offset just after it.
    fn skip_value(&self, pos: usize, depth: usize) -> Result<usize, RawJsonError> {
        if depth > MAX_DEPTH {
            return Err(invalid("nesting too deep", pos));
        }
        match self.at(pos) {
            Some(b'{') => {
                let mut p = self.skip_ws(pos + 1);
                if self.at(p) == Some(b'}') {
                    return Ok(p + 1);
                }
                loop {
                    if self.at(p) != Some(b'"') {
                        return Err(invalid("expected object key", p));
                    }
                    p = self.skip_ws(self.skip_string(p)?);
                    if self.at(p) != Some(b':') {
                        return Err(invalid("expected ':'", p));
                    }
                    p = self.skip_ws(self.skip_value(self.skip_ws(p + 1), depth + 1)?);
                    match self.at(p) {
                        Some(b',') => p = self.skip_ws(p + 1),
                        Some(b'}') => return Ok(p + 1),
                        _ => return Err(invalid("expected ',' or '}'", p)),
                    }
                }
            }
            Some(b'[') => {
                let mut p = self.skip_ws(pos + 1);
                if self.at(p) == Some(b']') {
                    return Ok(p + 1);
                }
                loop {
                    p = self.skip_ws(self.skip_value(p, depth + 1)?);
                    match self.at(p) {
                        Some(b',') => p = self.skip_ws(p + 1),
                        Some(b']') => return Ok(p + 1),
                        _ => return Err(invalid("expected ',' or ']'", p)),
                    }
                }
            }
            Some(b'"') => self.skip_string(pos),
            Some(b't') => self.skip_literal(pos, b"true"),
            Some(b'f') => self.skip_literal(pos, b"false"),
            Some(b'n') => self.skip_literal(pos, b"null"),
            Some(b'-' | b'0'..=b'9') => self.skip_number(pos),
            _ => Err(invalid("expected a JSON value", pos)),
        }
    }

    /// [`json_shape`] of the value at `pos` (`nesting` counts levels for [`MAX_DEPTH`]).
    fn shape(
        &self,
        pos: usize,
        depth: usize,
        nesting: usize,
    ) -> Result<(JsonShape, usize), RawJsonError> {
        if depth == 0 || self.at(pos) != Some(b'{') {
            return Ok((JsonShape::Other, self.skip_value(pos, nesting)?));
        }
        if nesting > MAX_DEPTH {
            return Err(invalid("nesting too deep", pos));
        }
        let mut members = Vec::new();
        let mut p = self.skip_ws(pos + 1);
        if self.at(p) == Some(b'}') {
            return Ok((JsonShape::Object(members), p + 1));
        }
        loop {
            if self.at(p) != Some(b'"') {
                return Err(invalid("expected object key", p));
            }
            let key_end = self.skip_string(p)?;
            let key = self.decode_string(p, key_end);
            p = self.skip_ws(key_end);
            if self.at(p) != Some(b':') {
                return Err(invalid("expected ':'", p));
            }
            let (value, end) = self.shape(self.skip_ws(p + 1), depth - 1, nesting + 1)?;
            members.push((key, value));
            p = self.skip_ws(end);
            match self.at(p) {
                Some(b',') => p = self.skip_ws(p + 1),
                Some(b'}') => return Ok((JsonShape::Object(members), p + 1)),
                _ => return Err(invalid("expected ',' or '}'", p)),
            }
        }
    }

    fn skip_literal(&self, pos: usize, lit: &[u8]) -> Result<usize, RawJsonError> {
        if self.buf.get(pos..pos + lit.len()) == Some(lit) {
            Ok(pos + lit.len())
        } else {
            Err(invalid("invalid literal", pos))
        }
    }

    fn skip_digits(&self, mut pos: usize) -> usize {
        while matches!(self.at(pos), Some(b'0'..=b'9')) {
            pos += 1;
        }
        pos
    }

    fn skip_number(&self, pos: usize) -> Result<usize, RawJsonError> {
        let mut p = pos;
        if self.at(p) == Some(b'-') {
            p += 1;
        }
        match self.at(p) {
            Some(b'0') => p += 1,
            Some(b'1'..=b'9') => p = self.skip_digits(p),
            _ => return Err(invalid("invalid number", p)),
        }
        if self.at(p) == Some(b'.') {
            let q = self.skip_digits(p + 1);
            if q == p + 1 {
                return Err(invalid("invalid number", p));
            }
            p = q;
        }
        if matches!(self.at(p), Some(b'e' | b'E')) {
            p += 1;
            if matches!(self.at(p), Some(b'+' | b'-')) {
                p += 1;
            }
            let q = self.skip_digits(p);
            if q == p {
                return Err(invalid("invalid number", p));
            }
            p = q;
        }
        Ok(p)
    }

    /// Validates a string starting at the opening quote; returns the offset after the closing one.
    fn skip_string(&self, pos: usize) -> Result<usize, RawJsonError> {
        let mut p = pos + 1;
        loop {
            // Jump over the plain bytes in one tight loop (most of a data file).
            let rest = self.buf.get(p..).unwrap_or_default();
            p += rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            match self.at(p) {
                None => return Err(invalid("unterminated string", p)),
                Some(b'"') => return Ok(p + 1),
                Some(b'\\') => match self.at(p + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => p += 2,
                    Some(b'u') => {
                        let hex = self.buf.get(p + 2..p + 6).unwrap_or_default();
                        if hex.len() != 4 || !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(invalid("invalid \\u escape", p));
                        }
                        p += 6;
                    }
                    _ => return Err(invalid("invalid escape", p)),
                },
                Some(0x00..=0x1f) => return Err(invalid("control character in string", p)),
                Some(_) => p += 1,
            }
        }
    }

    /// Validates and emits the value at `pos`; returns the offset after it.
    ///
    /// An object's members must be written sorted, so their places are found first. A
    /// `small` object (see [`SMALL_OBJECT`]) emits each member into a scratch buffer as it
    /// goes and copies the buffers out in key order: one scan of its bytes. A larger one
    /// skips over each member to find the next, then emits them in order: a second scan,
    /// but no buffer the size of the document.
    fn emit_value(
        &self,
        pos: usize,
        out: &mut impl Write,
        small: bool,
        nesting: usize,
    ) -> Result<usize, EmitError> {
        if nesting > MAX_DEPTH {
            return Err(invalid("nesting too deep", pos).into());
        }
        match self.at(pos) {
            Some(b'{') => {
                // (decoded key, where its canonical value is); sorted; last duplicate wins
                // as in Go.
                let mut members: Vec<(std::borrow::Cow<'_, str>, Place)> = Vec::new();
                let mut scratch = Vec::new();
                let mut p = self.skip_ws(pos + 1);
                let end;
                if self.at(p) == Some(b'}') {
                    end = p + 1;
                } else {
                    loop {
                        if self.at(p) != Some(b'"') {
                            return Err(invalid("expected object key", p).into());
                        }
                        let key_end = self.skip_string(p)?;
                        // Borrow keys that need no unescaping (the common case) instead of
                        // allocating one String per key.
                        let raw = self.buf.get(p + 1..key_end - 1).unwrap_or_default();
                        let key = match std::str::from_utf8(raw) {
                            Ok(k) if is_canonical_string_body(raw) => std::borrow::Cow::Borrowed(k),
                            _ => std::borrow::Cow::Owned(self.decode_string(p, key_end)),
                        };
                        let colon = self.skip_ws(key_end);
                        if self.at(colon) != Some(b':') {
                            return Err(invalid("expected ':'", colon).into());
                        }
                        let value_start = self.skip_ws(colon + 1);
                        let value_end = if small {
                            let from = scratch.len();
                            let value_end =
                                self.emit_value(value_start, &mut scratch, true, nesting + 1)?;
                            members.push((key, Place::Scratch(from, scratch.len())));
                            value_end
                        } else {
                            let value_end = self.skip_value(value_start, nesting + 1)?;
                            members.push((key, Place::Source(value_start, value_end)));
                            value_end
                        };
                        p = self.skip_ws(value_end);
                        match self.at(p) {
                            Some(b',') => p = self.skip_ws(p + 1),
                            Some(b'}') => {
                                end = p + 1;
                                break;
                            }
                            _ => return Err(invalid("expected ',' or '}'", p).into()),
                        }
                    }
                }
                members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.write_all(b"{")?;
                let mut first = true;
                let mut iter = members.iter().peekable();
                while let Some((key, place)) = iter.next() {
                    // A later member with the same key replaces this one (stable sort keeps
                    // document order within equal keys).
                    if iter.peek().is_some_and(|next| next.0 == *key) {
                        continue;
                    }
                    if !first {
                        out.write_all(b",")?;
                    }
                    first = false;
                    match key {
                        std::borrow::Cow::Borrowed(k) => {
                            out.write_all(b"\"")?;
                            out.write_all(k.as_bytes())?;
                            out.write_all(b"\"")?;
                        }
                        std::borrow::Cow::Owned(k) => write_go_json_string(k, out)?,
                    }
                    out.write_all(b":")?;
                    match *place {
                        Place::Scratch(from, to) => {
                            out.write_all(scratch.get(from..to).unwrap_or_default())?;
                        }
                        Place::Source(start, end) => {
                            self.emit_value(start, out, end - start <= SMALL_OBJECT, nesting + 1)?;
                        }
                    }
                }
                out.write_all(b"}")?;
                Ok(end)
            }
            Some(b'[') => {
                out.write_all(b"[")?;
                let mut p = self.skip_ws(pos + 1);
                if self.at(p) != Some(b']') {
                    let mut first = true;
                    loop {
                        if !first {
                            out.write_all(b",")?;
                        }
                        first = false;
                        p = self.skip_ws(self.emit_value(p, out, small, nesting + 1)?);
                        match self.at(p) {
                            Some(b',') => p = self.skip_ws(p + 1),
                            Some(b']') => break,
                            _ => return Err(invalid("expected ',' or ']'", p).into()),
                        }
                    }
                }
                out.write_all(b"]")?;
                Ok(p + 1)
            }
            Some(b'"') => {
                let end = self.skip_string(pos)?;
                let raw = self.buf.get(pos + 1..end - 1).unwrap_or_default();
                if is_canonical_string_body(raw) {
                    // Fast path: nothing to unescape or re-escape, copy as is.
                    out.write_all(self.buf.get(pos..end).unwrap_or_default())?;
                } else {
                    write_go_json_string(&self.decode_string(pos, end), out)?;
                }
                Ok(end)
            }
            Some(b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
                let end = self.skip_value(pos, 0)?;
                out.write_all(self.buf.get(pos..end).unwrap_or_default())?;
                Ok(end)
            }
            _ => Err(EmitError::Invalid(format!(
                "expected a JSON value at offset {pos}"
            ))),
        }
    }

    /// Decodes the validated string token `[start, end)` (quotes included) the way Go's
    /// decoder does: escapes resolved, invalid UTF-8 and lone surrogates become U+FFFD.
    fn decode_string(&self, start: usize, end: usize) -> String {
        let raw = self
            .buf
            .get(start + 1..end.saturating_sub(1))
            .unwrap_or_default();
        let mut bytes: Vec<u8> = Vec::with_capacity(raw.len());
        let mut i = 0;
        while let Some(&b) = raw.get(i) {
            if b != b'\\' {
                bytes.push(b);
                i += 1;
                continue;
            }
            let esc = raw.get(i + 1).copied().unwrap_or(b'\\');
            i += 2;
            let c = match esc {
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let first = hex4(raw.get(i..i + 4));
                    i += 4;
                    match first {
                        Some(hi @ 0xd800..=0xdbff) => {
                            // A high surrogate must be followed by `\u` + low surrogate.
                            let lo = if raw.get(i) == Some(&b'\\') && raw.get(i + 1) == Some(&b'u')
                            {
                                hex4(raw.get(i + 2..i + 6))
                            } else {
                                None
                            };
                            match lo {
                                Some(lo @ 0xdc00..=0xdfff) => {
                                    i += 6;
                                    char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                                        .unwrap_or('\u{fffd}')
                                }
                                _ => '\u{fffd}',
                            }
                        }
                        Some(cp) => char::from_u32(cp).unwrap_or('\u{fffd}'),
                        None => '\u{fffd}',
                    }
                }
                other => char::from(other),
            };
            let mut tmp = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let s = std::str::from_utf8(digits?).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// True when a raw string body needs neither unescaping nor Go re-escaping.
fn is_canonical_string_body(raw: &[u8]) -> bool {
    if raw.iter().any(|&b| b == b'\\' || b < 0x20) {
        return false;
    }
    if raw.is_ascii() {
        return true;
    }
    match std::str::from_utf8(raw) {
        Ok(s) => !s.contains(['\u{2028}', '\u{2029}']),
        Err(_) => false,
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

    fn canon(s: &str) -> String {
        canonical_json_bytes_string(s.as_bytes()).unwrap()
    }

    #[test]
    fn sorts_keys_and_strips_whitespace() {
        assert_eq!(
            canon(r#"{"x": {"y": true}, "a": {"b": {"z": true}}}"#),
            r#"{"a":{"b":{"z":true}},"x":{"y":true}}"#
        );
        assert_eq!(canon(" [1, 2 ,3] "), "[1,2,3]");
        assert_eq!(canon("{}"), "{}");
        assert_eq!(canon("[ ]"), "[]");
    }

    #[test]
    fn numbers_keep_literal_text() {
        assert_eq!(
            canon("[1.0, 1e5, -0, 12345678901234567890123]"),
            "[1.0,1e5,-0,12345678901234567890123]"
        );
    }

    #[test]
    fn strings_use_go_escaping_without_html_escaping() {
        assert_eq!(
            canon(r#"["<a&b>", "\u003c", "\/", "\b\f\n\r\t", "\u0001", "\u2028"]"#),
            "[\"<a&b>\",\"<\",\"/\",\"\\b\\f\\n\\r\\t\",\"\\u0001\",\"\\u2028\"]"
        );
        assert_eq!(canon(r#""\ud83d\ude00""#), "\"\u{1f600}\"");
        assert_eq!(canon(r#""\ud83d x""#), "\"\u{fffd} x\"");
    }

    #[test]
    fn escaped_keys_sort_by_their_decoded_value() {
        assert_eq!(
            canon(r#"{"\u0062": 1, "a": 2, "c\n": 3}"#),
            "{\"a\":2,\"b\":1,\"c\\n\":3}"
        );
        assert_eq!(canon(r#"{"b": 1, "\u0062": 2}"#), r#"{"b":2}"#);
    }

    #[test]
    fn duplicate_keys_last_wins() {
        assert_eq!(canon(r#"{"a": 1, "b": 2, "a": 3}"#), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn keys_sort_bytewise_not_by_char() {
        // 'Z' (0x5a) < 'a' (0x61) < 'é' (0xc3 0xa9)
        assert_eq!(
            canon(r#"{"é": 1, "a": 2, "Z": 3}"#),
            r#"{"Z":3,"a":2,"é":1}"#
        );
    }

    #[test]
    fn invalid_json_is_reported() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\": 1,}",
            "{\"a\": 1 \"b\": 2}",
            "{\"a\": [1 2]}",
            "{\"a\": {\"b\": 1]}",
            "{1: 2}",
            "[{\"a\": 1}",
            "01",
            "1.",
            "tru",
            "\"\\x\"",
            "[1] x",
            "\"a\u{1}\"",
        ] {
            assert!(
                matches!(
                    canonical_json_bytes_string(bad.as_bytes()),
                    Err(RawJsonError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn shape_keeps_objects_to_the_depth_and_validates_everything() {
        let doc = br#"{"a": {"b": {"c": 1}, "l": [1, {"x": 2}]}, "s": "t", "a": {"z": null}}"#;
        let shape = json_shape(doc, 2).unwrap();
        let JsonShape::Object(top) = shape else {
            panic!("not an object")
        };
        let keys: Vec<&str> = top.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "s", "a"]);
        let JsonShape::Object(a) = &top[0].1 else {
            panic!("a is not an object")
        };
        assert_eq!(a[0], ("b".to_string(), JsonShape::Other));
        assert_eq!(a[1], ("l".to_string(), JsonShape::Other));
        assert_eq!(top[1].1, JsonShape::Other);
        assert_eq!(json_shape(doc, 0).unwrap(), JsonShape::Other);
        assert_eq!(
            json_shape(br#"{"k\u0041": {}}"#, 1).unwrap(),
            JsonShape::Object(vec![("kA".to_string(), JsonShape::Other)])
        );
        // Below the depth limit the document is still validated.
        assert!(json_shape(br#"{"a": {"b": [1, }}"#, 1).is_err());
        assert!(json_shape(br#"{"a": 1} x"#, 3).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = "[".repeat(100_000);
        assert!(canonical_json_bytes_string(deep.as_bytes()).is_err());
    }

    #[test]
    fn value_and_raw_paths_agree() {
        let doc = r#"{"z": [1, 2.50, {"b": null, "a": "x\ny"}], "a": "<&>", "m": false}"#;
        let v: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(canonical_value_string(&v), canon(doc));
    }

    #[test]
    fn large_objects_take_the_two_pass_path_and_agree() {
        // Members of a large object are emitted from the source, small ones through
        // scratch buffers; both must give what the value path gives, duplicates included.
        let mut doc = String::from("{");
        for i in (0..3000).rev() {
            doc.push_str(&format!(
                r#""k{i:05}": {{"z": [{i}, {{"y": "\u00e9\n", "b": 1.50}}], "a": "<{i}>", "z": "last"}},"#
            ));
        }
        doc.push_str(r#""big": {"#);
        for i in 0..2000 {
            doc.push_str(&format!(r#""m{i}": {{"q": [{i}], "p": null}},"#));
        }
        doc.push_str(r#""m0": "dup"}}"#);
        assert!(doc.len() > 2 * SMALL_OBJECT);
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(canonical_value_string(&v), canon(&doc));
    }
}
