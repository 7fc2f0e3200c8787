//! API keys: the file `identity.api_keys_file` names, and finding the identity a
//! presented key belongs to without leaking, through timing, which key was close.
//!
//! ```yaml
//! # One entry per key. A client sends the key as `Authorization: Bearer <key>`.
//! keys:
//!   - key: "lsk_3f9a0c1e7b2d4a6f8e0c2b4d6f8a0c2e"    # the secret itself, at least 32 characters
//!     id: ci-bot                                   # input.agent.id
//!     role: analyst                                # input.agent.role (optional)
//!     scopes: [read-only]                          # input.agent.scope / scopes (optional)
//!   - key_sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # or only its SHA-256, hex
//!     id: dashboard
//! ```
//!
//! Only the SHA-256 digest of each key is kept in memory; a lookup hashes the presented
//! key and compares it with **every** entry in constant time (`subtle`), so neither the
//! key's length nor the position of a near match shows in the time taken. Keys appear in
//! no error message and no `Debug` output. Several keys may map to one identity (rotation).

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use thiserror::Error;

/// Shortest key accepted in the file (characters).
pub const MIN_KEY_LEN: usize = 32;

/// Who a key authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiIdentity {
    pub id: String,
    pub role: Option<String>,
    pub scopes: Vec<String>,
    /// A token's claims (`input.agent.claims`); empty for API keys.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// The loaded key file (empty: no key authenticates).
#[derive(Default)]
pub struct ApiKeys {
    entries: Vec<([u8; 32], ApiIdentity)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field(
                "identities",
                &self.entries.iter().map(|(_, i)| &i.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a key file is refused. Entries are named by position, never by key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApiKeysError {
    #[error("API key file: YAML syntax or structure error at line {line}, column {column}")]
    Syntax { line: usize, column: usize },
    #[error("API key file: not a mapping with a `keys` list")]
    Structure,
    #[error("API key file lists no keys")]
    NoKeys,
    #[error("API key file, entry {0}: needs exactly one of `key` and `key_sha256`")]
    KeyOrDigest(usize),
    #[error("API key file, entry {0}: key shorter than {MIN_KEY_LEN} characters")]
    ShortKey(usize),
    #[error("API key file, entry {0}: key_sha256 must be 64 hex digits")]
    BadDigest(usize),
    #[error("API key file, entry {0}: `id` must not be empty")]
    EmptyId(usize),
    #[error("API key file, entry {0}: `role` must not be empty")]
    EmptyRole(usize),
    #[error("API key file, entry {0}: scopes must be non-empty and contain no whitespace")]
    BadScope(usize),
    #[error("API key file, entry {later}: same key as entry {first}")]
    DuplicateKey { first: usize, later: usize },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keys: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: Option<String>,
    key_sha256: Option<String>,
    id: String,
    role: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Parses the key file's text. Entries are numbered from 1 in errors.
    pub fn parse(text: &str) -> Result<ApiKeys, ApiKeysError> {
        let file: File = serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
            Some(l) => ApiKeysError::Syntax {
                line: l.line(),
                column: l.column(),
            },
            None => ApiKeysError::Structure,
        })?;
        if file.keys.is_empty() {
            return Err(ApiKeysError::NoKeys);
        }
        let mut entries: Vec<([u8; 32], ApiIdentity)> = Vec::with_capacity(file.keys.len());
        for (i, e) in file.keys.into_iter().enumerate() {
            let n = i + 1;
            let d = match (e.key, e.key_sha256) {
                (Some(k), None) => {
                    if k.chars().count() < MIN_KEY_LEN {
                        return Err(ApiKeysError::ShortKey(n));
                    }
                    digest(k.as_bytes())
                }
                (None, Some(h)) => hex::decode(h.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or(ApiKeysError::BadDigest(n))?,
                _ => return Err(ApiKeysError::KeyOrDigest(n)),
            };
            if e.id.is_empty() {
                return Err(ApiKeysError::EmptyId(n));
            }
            if e.role.as_deref() == Some("") {
                return Err(ApiKeysError::EmptyRole(n));
            }
            if e.scopes
                .iter()
                .any(|s| s.is_empty() || s.chars().any(char::is_whitespace))
            {
                return Err(ApiKeysError::BadScope(n));
            }
            if let Some(first) = entries.iter().position(|(other, _)| *other == d) {
                return Err(ApiKeysError::DuplicateKey {
                    first: first + 1,
                    later: n,
                });
            }
            let mut scopes = e.scopes;
            scopes.dedup();
            entries.push((
                d,
                ApiIdentity {
                    id: e.id,
                    role: e.role,
                    scopes,
                    claims: serde_json::Map::new(),
                },
            ));
        }
        Ok(ApiKeys { entries })
    }

    /// The identity `presented` belongs to, comparing against every entry.
    pub fn authenticate(&self, presented: &str) -> Option<&ApiIdentity> {
        let d = digest(presented.as_bytes());
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, (entry, _)) in self.entries.iter().enumerate() {
            let eq = entry.ct_eq(&d);
            index = u64::conditional_select(&index, &(i as u64), eq);
            found |= eq;
        }
        if bool::from(found) {
            self.entries
                .get(usize::try_from(index).ok()?)
                .map(|(_, id)| id)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const K1: &str = "lsk_3f9a0c1e7b2d4a6f8e0c2b4d6f8a0c2e";
    const K2: &str = "lsk_0000111122223333444455556666777788";

    fn file() -> String {
        format!(
            r#"
keys:
  - key: "{K1}"
    id: ci-bot
    role: analyst
    scopes: [read-only]
  - key_sha256: "{}"
    id: dashboard
"#,
            hex::encode(digest(K2.as_bytes()))
        )
    }

    #[test]
    fn finds_the_identity_of_a_key() {
        let keys = ApiKeys::parse(&file()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys.authenticate(K1),
            Some(&ApiIdentity {
                id: "ci-bot".into(),
                role: Some("analyst".into()),
                scopes: vec!["read-only".into()],
                claims: serde_json::Map::new(),
            })
        );
        assert_eq!(
            keys.authenticate(K2).map(|i| i.id.as_str()),
            Some("dashboard")
        );
        for wrong in [
            "",
            "lsk_",
            &K1[..K1.len() - 1],
            &format!("{K1} "),
            &K1.to_uppercase(),
        ] {
            assert_eq!(keys.authenticate(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn keys_never_show_in_debug_or_errors() {
        let keys = ApiKeys::parse(&file()).unwrap();
        let dbg = format!("{keys:?}");
        assert!(!dbg.contains(K1) && dbg.contains("ci-bot"), "{dbg}");
        // serde's messages can quote the offending value; ours give only the place.
        let e = ApiKeys::parse(&format!(
            "keys:\n  - key: \"{K1}\"\n    id: x\n    extra: 1\n"
        ))
        .unwrap_err();
        assert!(!e.to_string().contains(K1), "{e}");
        assert!(matches!(e, ApiKeysError::Syntax { .. }));
    }

    #[test]
    fn refuses_bad_files() {
        let cases = [
            ("keys: []\n".to_string(), ApiKeysError::NoKeys),
            (
                "keys:\n  - id: x\n".to_string(),
                ApiKeysError::KeyOrDigest(1),
            ),
            (
                format!("keys:\n  - key: \"{K1}\"\n    key_sha256: \"00\"\n    id: x\n"),
                ApiKeysError::KeyOrDigest(1),
            ),
            (
                "keys:\n  - key: short\n    id: x\n".to_string(),
                ApiKeysError::ShortKey(1),
            ),
            (
                "keys:\n  - key_sha256: abc\n    id: x\n".to_string(),
                ApiKeysError::BadDigest(1),
            ),
            (
                format!("keys:\n  - key: \"{K1}\"\n    id: \"\"\n"),
                ApiKeysError::EmptyId(1),
            ),
            (
                format!("keys:\n  - key: \"{K1}\"\n    id: x\n    role: \"\"\n"),
                ApiKeysError::EmptyRole(1),
            ),
            (
                format!("keys:\n  - key: \"{K1}\"\n    id: x\n    scopes: [\"read only\"]\n"),
                ApiKeysError::BadScope(1),
            ),
            (
                format!(
                    "keys:\n  - key: \"{K1}\"\n    id: x\n  - key_sha256: \"{}\"\n    id: y\n",
                    hex::encode(digest(K1.as_bytes()))
                ),
                ApiKeysError::DuplicateKey { first: 1, later: 2 },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(ApiKeys::parse(&text).unwrap_err(), expected, "{text}");
        }
        assert!(matches!(
            ApiKeys::parse("- just a list").unwrap_err(),
            ApiKeysError::Syntax { .. } | ApiKeysError::Structure
        ));
    }
}
