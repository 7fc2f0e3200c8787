//! OPA's per-file digest rule for bundle signatures.
//!
//! Structured files ([`is_structured_doc`]) are hashed over their canonical JSON
//! (see [`crate::canonical`]); every other file over its raw bytes. The canonical text is
//! streamed into the digest through a small buffer, never materialised in full.

use std::io::{self, BufWriter, Write};

use digest::DynDigest;

use crate::canonical::{RawJsonError, write_canonical_json_bytes, write_canonical_value};
use crate::error::{BundleError, Result};
pub use crate::structured::is_structured_doc;
use crate::structured::parse_yaml;

/// The digest algorithms OPA accepts in a signature's `files` list (names are case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha512_224,
    Sha512_256,
}

impl HashAlgorithm {
    /// Every algorithm, in OPA's order.
    pub const ALL: [HashAlgorithm; 8] = [
        HashAlgorithm::Md5,
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha224,
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
        HashAlgorithm::Sha512_224,
        HashAlgorithm::Sha512_256,
    ];

    /// Parses OPA's name (`SHA-256`, ...); anything else is `unsupported hashing algorithm: X`.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| BundleError::UnsupportedHashAlgorithm(name.to_string()))
    }

    /// OPA's name for the algorithm.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Md5 => "MD5",
            HashAlgorithm::Sha1 => "SHA-1",
            HashAlgorithm::Sha224 => "SHA-224",
            HashAlgorithm::Sha256 => "SHA-256",
            HashAlgorithm::Sha384 => "SHA-384",
            HashAlgorithm::Sha512 => "SHA-512",
            HashAlgorithm::Sha512_224 => "SHA-512-224",
            HashAlgorithm::Sha512_256 => "SHA-512-256",
        }
    }

    fn hasher(self) -> Box<dyn DynDigest> {
        match self {
            HashAlgorithm::Md5 => Box::new(md5::Md5::default()),
            HashAlgorithm::Sha1 => Box::new(sha1::Sha1::default()),
            HashAlgorithm::Sha224 => Box::new(sha2::Sha224::default()),
            HashAlgorithm::Sha256 => Box::new(sha2::Sha256::default()),
            HashAlgorithm::Sha384 => Box::new(sha2::Sha384::default()),
            HashAlgorithm::Sha512 => Box::new(sha2::Sha512::default()),
            HashAlgorithm::Sha512_224 => Box::new(sha2::Sha512_224::default()),
            HashAlgorithm::Sha512_256 => Box::new(sha2::Sha512_256::default()),
        }
    }
}

/// Adapts a digest to `io::Write` so serialisers can stream into it.
struct DigestWriter(Box<dyn DynDigest>);

impl Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Digest of raw bytes.
pub fn hash_bytes(alg: HashAlgorithm, bytes: &[u8]) -> Vec<u8> {
    let mut h = alg.hasher();
    h.update(bytes);
    h.finalize().into_vec()
}

/// Digest of the canonical JSON of a parsed value.
pub fn hash_value(alg: HashAlgorithm, value: &serde_json::Value) -> Vec<u8> {
    let mut w = BufWriter::with_capacity(64 * 1024, DigestWriter(alg.hasher()));
    // DigestWriter never fails, so neither can the BufWriter around it.
    let _ = write_canonical_value(value, &mut w);
    finish(w)
}

fn finish(w: BufWriter<DigestWriter>) -> Vec<u8> {
    match w.into_inner() {
        Ok(d) => d.0.finalize().into_vec(),
        // Unreachable in practice: flushing into a digest cannot fail.
        Err(e) => e.into_inner().into_parts().0.0.finalize().into_vec(),
    }
}

/// Digest of a bundle file by OPA's rule: canonical JSON for structured files, raw bytes
/// otherwise. `path` only decides the rule (and names the file in errors).
pub fn hash_file(alg: HashAlgorithm, path: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    if !is_structured_doc(path) {
        return Ok(hash_bytes(alg, bytes));
    }
    let mut w = BufWriter::with_capacity(64 * 1024, DigestWriter(alg.hasher()));
    match write_canonical_json_bytes(bytes, &mut w) {
        Ok(()) => Ok(finish(w)),
        // Not JSON: OPA falls back to YAML (util.Unmarshal) before hashing.
        Err(RawJsonError::Invalid(json_err)) => match parse_yaml(bytes) {
            Ok(value) => Ok(hash_value(alg, &value)),
            Err(yaml_err) => Err(BundleError::StructuredParse {
                path: path.to_string(),
                message: format!("{json_err}; {yaml_err}"),
            }),
        },
        Err(RawJsonError::Io(e)) => Err(BundleError::StructuredParse {
            path: path.to_string(),
            message: e,
        }),
    }
}

/// Lowercase hex SHA-256 of a file by OPA's rule: what signers put in the JWT.
pub fn sha256_file_hex(path: &str, bytes: &[u8]) -> Result<String> {
    Ok(hex::encode(hash_file(HashAlgorithm::Sha256, path, bytes)?))
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
    fn names_round_trip_and_unknown_is_refused() {
        for a in HashAlgorithm::ALL {
            assert_eq!(HashAlgorithm::from_name(a.name()).unwrap(), a);
        }
        assert_eq!(
            HashAlgorithm::from_name("MD6").unwrap_err().to_string(),
            "unsupported hashing algorithm: MD6"
        );
        assert!(HashAlgorithm::from_name("sha-256").is_err());
    }

    #[test]
    fn digest_lengths() {
        let lens: Vec<usize> = HashAlgorithm::ALL
            .iter()
            .map(|a| hash_bytes(*a, b"x").len())
            .collect();
        assert_eq!(lens, vec![16, 20, 28, 32, 48, 64, 28, 32]);
    }

    #[test]
    fn structured_files_hash_canonically_others_raw() {
        let a = hash_file(
            HashAlgorithm::Sha256,
            "/data.json",
            b"{ \"b\": 1, \"a\": 2 }",
        )
        .unwrap();
        let b = hash_file(HashAlgorithm::Sha256, "/data.json", b"{\"a\":2,\"b\":1}").unwrap();
        assert_eq!(a, b);
        let raw = hash_file(HashAlgorithm::Sha256, "/x.json", b"{ \"b\": 1, \"a\": 2 }").unwrap();
        assert_eq!(
            raw,
            hash_bytes(HashAlgorithm::Sha256, b"{ \"b\": 1, \"a\": 2 }")
        );
        assert_ne!(a, raw);
    }

    #[test]
    fn yaml_structured_file_hashes_as_json() {
        let y = hash_file(HashAlgorithm::Sha256, "/a/data.yaml", b"foo: 1").unwrap();
        assert_eq!(y, hash_bytes(HashAlgorithm::Sha256, b"{\"foo\":1}"));
    }
}
