//! A lenient PEM block finder, close to Go's `encoding/pem.Decode`.
//!
//! Text before the first `-----BEGIN` is ignored, the body may be wrapped at any width,
//! and (unlike Go) the body may sit on the same line as the markers with the newlines
//! replaced by spaces, a form OPA users paste into config files.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// One decoded PEM block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label, e.g. `PUBLIC KEY`.
    pub label: String,
    /// The DER bytes.
    pub der: Vec<u8>,
}

/// Finds and decodes the first PEM block in `text`; `None` if there is none or it is corrupt.
pub fn decode_first(text: &str) -> Option<PemBlock> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let start = text.find(BEGIN)?;
    let after_begin = text.get(start + BEGIN.len()..)?;
    let label_end = after_begin.find(DASHES)?;
    let label = after_begin.get(..label_end)?;
    if label.contains(['\n', '\r']) {
        return None;
    }
    let rest = after_begin.get(label_end + DASHES.len()..)?;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker)?;
    let body = rest.get(..body_end)?;
    // Headers (`Proc-Type: 4,ENCRYPTED`) mean an encrypted key, which nothing here can use.
    if body.contains(':') {
        return None;
    }
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(compact.as_bytes()).ok()?;
    Some(PemBlock {
        label: label.to_string(),
        der,
    })
}

/// Encodes DER as PEM with 64-column lines and a trailing newline.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
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
    fn round_trip_and_single_line() {
        let der: Vec<u8> = (0u8..=200).collect();
        let pem = encode("PUBLIC KEY", &der);
        assert_eq!(
            decode_first(&pem).unwrap(),
            PemBlock {
                label: "PUBLIC KEY".into(),
                der: der.clone()
            }
        );
        let single = pem.replace('\n', " ");
        assert_eq!(decode_first(&single).unwrap().der, der);
        let prefixed = format!("garbage\n{pem}trailing");
        assert_eq!(decode_first(&prefixed).unwrap().der, der);
    }

    #[test]
    fn corrupt_blocks_are_none() {
        assert!(decode_first("no pem here").is_none());
        assert!(decode_first("-----BEGIN X-----\nAAAA\n").is_none());
        assert!(decode_first("-----BEGIN X-----\nAAAA==\n-----END X-----").is_none());
        assert!(
            decode_first("-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END X-----")
                .is_none()
        );
        assert!(decode_first("-----BEGIN X-----\nAAAA\n-----END Y-----").is_none());
    }
}
