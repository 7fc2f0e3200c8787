//! Sealed session ids: the gateway's `Mcp-Session-Id` *is* the session's state, sealed
//! with an AEAD, so any gateway replica that holds the key can serve the session (the
//! "Session not found whenever there is more than one replica" problem of other
//! gateways) and no replica needs a shared store.
//!
//! Format of an id: URL-safe Base64 without padding (only `A–Z a–z 0–9 - _`, inside the
//! visible-ASCII range MCP requires of session ids) of
//!
//! ```text
//! format (1 byte, 0x01) ‖ key id (1 byte) ‖ nonce (24 bytes, random) ‖ XChaCha20-Poly1305(state JSON) ‖ tag (16 bytes)
//! ```
//!
//! with the format and key id bytes as associated data, so neither can be altered. The
//! key id is derived from the key (first byte of a SHA-256 over it): rotation is "new
//! key in `key_file`, old key in `previous_key_files`", and an id sealed under the old
//! key still opens until it expires. A random 192-bit nonce makes nonce reuse under one
//! key negligible without coordination between replicas.
//!
//! Opening refuses, in this order: an over-long id, bad Base64, an unknown format or
//! key id, a failed tag (tampering or wrong key), an expired state, and (with
//! [`SessionSealer::open_for`]) a state bound to another identity: MCP's security
//! guidance says a session id must not authenticate anyone, so the caller's credential
//! is checked on every request and the session must belong to it.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::array::Array;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::era::ProtocolVersion;

/// Longest plaintext state sealed (bytes of JSON).
pub const MAX_STATE_BYTES: usize = 2048;
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 2 + NONCE_LEN;
/// Longest session id [`SessionSealer::seal`] can produce, and so the longest one
/// [`SessionSealer::open`] reads (about 2.8 KB, well inside common header limits).
pub const MAX_SESSION_ID_LEN: usize = (HEADER_LEN + MAX_STATE_BYTES + TAG_LEN).div_ceil(3) * 4;
/// How far a `created_at` may be in the future: replicas' clocks differ a little.
pub const CLOCK_SKEW_SECONDS: u64 = 60;

/// What a sealed token is for; each purpose has its own associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A gateway `Mcp-Session-Id`.
    Session,
    /// The id the gateway gives a request an upstream sent to the client (sampling,
    /// elicitation, roots, ping), so that the client's answer finds that upstream.
    ServerRequest,
    /// An SSE event id: where each upstream's stream was, for `Last-Event-ID`.
    EventId,
}

impl Purpose {
    fn domain(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"lockstep-gateway/session",
            Purpose::ServerRequest => b"lockstep-gateway/server-request",
            Purpose::EventId => b"lockstep-gateway/event-id",
        }
    }
}

/// What a session carries between requests and replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionState {
    /// A random id (32 hex digits) for logs, audit and `input.session.id`: short, and
    /// not the sealed token itself.
    pub id: String,
    /// The identity the session belongs to (`input.agent.id`).
    pub identity: String,
    pub protocol_version: ProtocolVersion,
    /// Upstream name → the `Mcp-Session-Id` that upstream gave the gateway.
    pub upstream_sessions: BTreeMap<String, String>,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: u64,
}

impl SessionState {
    /// A fresh session for `identity`, valid for `ttl` from `now` (unix seconds).
    pub fn new(
        identity: impl Into<String>,
        protocol_version: ProtocolVersion,
        now: u64,
        ttl: Duration,
    ) -> Result<SessionState, SessionError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|_| SessionError::Random)?;
        Ok(SessionState {
            id: hex::encode(id),
            identity: identity.into(),
            protocol_version,
            upstream_sessions: BTreeMap::new(),
            created_at: now,
            expires_at: now.saturating_add(ttl.as_secs()),
        })
    }
}

/// A 32-byte session key and the id byte derived from it.
pub struct SessionKey {
    id: u8,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why a key file's text is not a session key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error(
        "a session key must be 32 bytes, written as 64 hex digits or in Base64 (got {0} bytes)"
    )]
    WrongLength(usize),
    #[error("a session key must be 64 hex digits or Base64 of 32 bytes")]
    NotHexOrBase64,
}

impl SessionKey {
    pub fn from_bytes(key: [u8; 32]) -> SessionKey {
        let digest = Sha256::new()
            .chain_update(b"lockstep-gateway session key id\0")
            .chain_update(key)
            .finalize();
        SessionKey {
            id: digest.first().copied().unwrap_or_default(),
            key: Zeroizing::new(key),
        }
    }

    /// A key file's content: 64 hex digits, or standard or URL-safe Base64 (padding
    /// optional) of 32 bytes; surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<SessionKey, KeyError> {
        let t = text.trim();
        let bytes = Zeroizing::new(
            if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                hex::decode(t).map_err(|_| KeyError::NotHexOrBase64)?
            } else {
                let unpadded = t.trim_end_matches('=');
                STANDARD
                    .decode(format!(
                        "{unpadded}{}",
                        "=".repeat((4 - unpadded.len() % 4) % 4)
                    ))
                    .or_else(|_| URL_SAFE_NO_PAD.decode(unpadded))
                    .map_err(|_| KeyError::NotHexOrBase64)?
            },
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(SessionKey::from_bytes(key))
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Array(*self.key))
    }
}

/// Why a state could not be sealed or an id not opened. Every opening failure should be
/// answered like an unknown session (HTTP 404: the client starts a new one), without
/// saying which check failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionError {
    #[error("session state of {size} bytes exceeds the limit of {limit} bytes")]
    StateTooLarge { size: usize, limit: usize },
    #[error("the system random number generator failed")]
    Random,
    #[error("session state could not be encoded")]
    Encode,
    #[error("session id longer than {MAX_SESSION_ID_LEN} characters")]
    TooLong,
    #[error("session id is not URL-safe Base64")]
    NotBase64,
    #[error("session id is too short")]
    TooShort,
    #[error("session id has an unknown format {0}")]
    UnknownFormat(u8),
    #[error("session id was sealed with an unknown key (id {0})")]
    UnknownKey(u8),
    #[error("session id failed authentication (tampered, or sealed with another key)")]
    Unauthentic,
    #[error("session state is malformed")]
    Malformed,
    #[error("session expired at {expires_at} (now {now})")]
    Expired { expires_at: u64, now: u64 },
    #[error("session was created in the future ({created_at}, now {now})")]
    FromTheFuture { created_at: u64, now: u64 },
    #[error("session belongs to another identity")]
    IdentityMismatch,
}

/// Seals with the current key; opens with the current or a previous one.
#[derive(Debug)]
pub struct SessionSealer {
    current: SessionKey,
    previous: Vec<SessionKey>,
}

impl SessionSealer {
    pub fn new(current: SessionKey, previous: Vec<SessionKey>) -> SessionSealer {
        SessionSealer { current, previous }
    }

    /// The session id for `state`.
    pub fn seal(&self, state: &SessionState) -> Result<String, SessionError> {
        self.seal_as(Purpose::Session, state)
    }

    /// `value` sealed for `purpose`: a token only this gateway's keys open, and only
    /// for the same purpose (the purpose is part of the associated data, so a token
    /// sealed for one use is refused by every other).
    pub fn seal_as<T: Serialize>(
        &self,
        purpose: Purpose,
        value: &T,
    ) -> Result<String, SessionError> {
        let plain = Zeroizing::new(serde_json::to_vec(value).map_err(|_| SessionError::Encode)?);
        if plain.len() > MAX_STATE_BYTES {
            return Err(SessionError::StateTooLarge {
                size: plain.len(),
                limit: MAX_STATE_BYTES,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SessionError::Random)?;
        let key_id = self.current.id;
        let sealed = self
            .current
            .cipher()
            .encrypt(
                &Array(nonce),
                Payload {
                    msg: &plain,
                    aad: &aad(purpose, key_id),
                },
            )
            .map_err(|_| SessionError::Encode)?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.push(FORMAT);
        out.push(key_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The state in `session_id`, if it is authentic and not expired at `now` (unix
    /// seconds).
    pub fn open(&self, session_id: &str, now: u64) -> Result<SessionState, SessionError> {
        let state: SessionState = self.open_as(Purpose::Session, session_id)?;
        if now >= state.expires_at {
            return Err(SessionError::Expired {
                expires_at: state.expires_at,
                now,
            });
        }
        if state.created_at > now.saturating_add(CLOCK_SKEW_SECONDS) {
            return Err(SessionError::FromTheFuture {
                created_at: state.created_at,
                now,
            });
        }
        Ok(state)
    }

    /// The value in a token [`SessionSealer::seal_as`] made for `purpose`.
    pub fn open_as<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<T, SessionError> {
        if token.len() > MAX_SESSION_ID_LEN {
            return Err(SessionError::TooLong);
        }
        // The engine refuses padding and non-zero trailing bits, so one state has
        // exactly one id.
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| SessionError::NotBase64)?;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(SessionError::TooShort);
        }
        let (head, sealed) = bytes.split_at(HEADER_LEN);
        let (ids, nonce) = head.split_at(2);
        let (format, key_id) = match ids {
            [f, k] => (*f, *k),
            _ => return Err(SessionError::TooShort),
        };
        if format != FORMAT {
            return Err(SessionError::UnknownFormat(format));
        }
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SessionError::TooShort)?;
        let mut candidates = std::iter::once(&self.current)
            .chain(&self.previous)
            .filter(|k| k.id == key_id)
            .peekable();
        if candidates.peek().is_none() {
            return Err(SessionError::UnknownKey(key_id));
        }
        // Two keys can share an id byte; the tag tells which one sealed the state.
        let plain = candidates
            .find_map(|k| {
                k.cipher()
                    .decrypt(
                        &Array(nonce),
                        Payload {
                            msg: sealed,
                            aad: &aad(purpose, key_id),
                        },
                    )
                    .ok()
            })
            .map(Zeroizing::new)
            .ok_or(SessionError::Unauthentic)?;
        serde_json::from_slice(&plain).map_err(|_| SessionError::Malformed)
    }

    /// [`SessionSealer::open`], and the session must belong to `identity`.
    pub fn open_for(
        &self,
        session_id: &str,
        now: u64,
        identity: &str,
    ) -> Result<SessionState, SessionError> {
        let state = self.open(session_id, now)?;
        if state.identity != identity {
            return Err(SessionError::IdentityMismatch);
        }
        Ok(state)
    }
}

fn aad(purpose: Purpose, key_id: u8) -> Vec<u8> {
    let mut a = purpose.domain().to_vec();
    a.push(FORMAT);
    a.push(key_id);
    a
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key(byte: u8) -> SessionKey {
        SessionKey::from_bytes([byte; 32])
    }

    fn state() -> SessionState {
        let mut s = SessionState::new(
            "agent-7",
            ProtocolVersion::V2025_11_25,
            NOW,
            Duration::from_secs(3600),
        )
        .unwrap();
        s.upstream_sessions
            .insert("db".into(), "upstream-session-1".into());
        s.upstream_sessions.insert("files".into(), "f-2".into());
        s
    }

    #[test]
    fn round_trip() {
        let sealer = SessionSealer::new(key(1), vec![]);
        let s = state();
        let id = sealer.seal(&s).unwrap();
        assert_eq!(sealer.open(&id, NOW + 10).unwrap(), s);
        assert_eq!(sealer.open_for(&id, NOW, "agent-7").unwrap(), s);
        assert_eq!(s.id.len(), 32);
    }

    #[test]
    fn ids_are_header_safe_and_never_plaintext() {
        let sealer = SessionSealer::new(key(1), vec![]);
        let s = state();
        let id = sealer.seal(&s).unwrap();
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(id.bytes().all(|b| (0x21..=0x7E).contains(&b)));
        let bytes = URL_SAFE_NO_PAD.decode(&id).unwrap();
        let plain = serde_json::to_vec(&s).unwrap();
        for needle in ["agent-7", "upstream-session-1", "2025-11-25"] {
            assert!(!id.contains(needle));
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
        }
        assert_ne!(
            bytes.get(HEADER_LEN..HEADER_LEN + plain.len()),
            Some(plain.as_slice())
        );
        // A fresh nonce every time: the same state seals to different ids.
        assert_ne!(sealer.seal(&s).unwrap(), id);
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let sealer = SessionSealer::new(key(1), vec![]);
        let id = sealer.seal(&state()).unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(&id).unwrap();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                let e = sealer.open(&URL_SAFE_NO_PAD.encode(&b), NOW).unwrap_err();
                assert!(
                    matches!(
                        e,
                        SessionError::Unauthentic
                            | SessionError::UnknownKey(_)
                            | SessionError::UnknownFormat(_)
                    ),
                    "byte {i}: {e}"
                );
            }
        }
        // Changing any character of the id itself is refused too.
        for i in 0..id.len() {
            let mut chars: Vec<char> = id.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let tampered: String = chars.into_iter().collect();
            assert!(sealer.open(&tampered, NOW).is_err(), "char {i}");
        }
        // Truncated and extended ids.
        assert!(sealer.open(&id[..id.len() - 1], NOW).is_err());
        assert!(sealer.open(&format!("{id}A"), NOW).is_err());
        assert_eq!(sealer.open("", NOW), Err(SessionError::TooShort));
        assert_eq!(
            sealer.open("not base64!", NOW),
            Err(SessionError::NotBase64)
        );
        assert_eq!(
            sealer.open(&format!("{id}=="), NOW),
            Err(SessionError::NotBase64)
        );
    }

    #[test]
    fn wrong_key_is_refused() {
        let id = SessionSealer::new(key(1), vec![]).seal(&state()).unwrap();
        let other = SessionSealer::new(key(2), vec![]);
        assert!(matches!(
            other.open(&id, NOW),
            Err(SessionError::UnknownKey(_) | SessionError::Unauthentic)
        ));
        // A different key that happens to share the id byte fails on the tag.
        let k1 = key(1);
        let twin = (0u8..=255)
            .flat_map(|a| (0u8..=255).map(move |b| (a, b)))
            .map(|(a, b)| {
                let mut k = [7u8; 32];
                k[0] = a;
                k[1] = b;
                k
            })
            .find(|k| SessionKey::from_bytes(*k).id() == k1.id() && *k != [1u8; 32])
            .unwrap();
        let sealer = SessionSealer::new(SessionKey::from_bytes(twin), vec![]);
        assert_eq!(sealer.open(&id, NOW), Err(SessionError::Unauthentic));
    }

    #[test]
    fn expired_and_future_states_are_refused() {
        let sealer = SessionSealer::new(key(1), vec![]);
        let s = state();
        let id = sealer.seal(&s).unwrap();
        assert!(sealer.open(&id, s.expires_at - 1).is_ok());
        assert_eq!(
            sealer.open(&id, s.expires_at),
            Err(SessionError::Expired {
                expires_at: s.expires_at,
                now: s.expires_at
            })
        );
        assert!(matches!(
            sealer.open(&id, NOW - CLOCK_SKEW_SECONDS - 1),
            Err(SessionError::FromTheFuture { .. })
        ));
        assert!(sealer.open(&id, NOW - CLOCK_SKEW_SECONDS).is_ok());
    }

    #[test]
    fn rotation_accepts_the_previous_key() {
        let old = SessionSealer::new(key(1), vec![]);
        let s = state();
        let id = old.seal(&s).unwrap();
        let rotated = SessionSealer::new(key(2), vec![key(1)]);
        assert_eq!(rotated.open(&id, NOW).unwrap(), s);
        // New ids are sealed under the new key only.
        let new_id = rotated.seal(&state()).unwrap();
        assert!(old.open(&new_id, NOW).is_err());
        // Once the old key is dropped, its ids are refused.
        let after = SessionSealer::new(key(2), vec![]);
        assert!(after.open(&id, NOW).is_err());
    }

    #[test]
    fn identity_binding() {
        let sealer = SessionSealer::new(key(1), vec![]);
        let id = sealer.seal(&state()).unwrap();
        assert_eq!(
            sealer.open_for(&id, NOW, "agent-8"),
            Err(SessionError::IdentityMismatch)
        );
    }

    #[test]
    fn size_is_bounded() {
        let sealer = SessionSealer::new(key(1), vec![]);
        let mut s = state();
        s.upstream_sessions
            .insert("big".into(), "x".repeat(MAX_STATE_BYTES));
        assert!(matches!(
            sealer.seal(&s),
            Err(SessionError::StateTooLarge { .. })
        ));
        // The largest state that seals gives an id within MAX_SESSION_ID_LEN.
        let mut s = state();
        let base = serde_json::to_vec(&s).unwrap().len();
        s.upstream_sessions.insert("fill".into(), String::new());
        let with_entry = serde_json::to_vec(&s).unwrap().len();
        s.upstream_sessions
            .insert("fill".into(), "y".repeat(MAX_STATE_BYTES - with_entry));
        assert_eq!(serde_json::to_vec(&s).unwrap().len(), MAX_STATE_BYTES);
        assert!(base < MAX_STATE_BYTES);
        let id = sealer.seal(&s).unwrap();
        assert!(
            id.len() <= MAX_SESSION_ID_LEN,
            "{} > {MAX_SESSION_ID_LEN}",
            id.len()
        );
        assert_eq!(sealer.open(&id, NOW).unwrap(), s);
        assert_eq!(
            sealer.open(&"A".repeat(MAX_SESSION_ID_LEN + 1), NOW),
            Err(SessionError::TooLong)
        );
    }

    #[test]
    fn key_text_formats() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let k = SessionKey::parse(&format!("  {hex_key}\n")).unwrap();
        let bytes: [u8; 32] = hex::decode(hex_key).unwrap().try_into().unwrap();
        assert_eq!(k.id(), SessionKey::from_bytes(bytes).id());
        let b64 = STANDARD.encode(bytes);
        assert_eq!(SessionKey::parse(&b64).unwrap().id(), k.id());
        assert_eq!(
            SessionKey::parse(b64.trim_end_matches('=')).unwrap().id(),
            k.id()
        );
        assert_eq!(
            SessionKey::parse(&URL_SAFE_NO_PAD.encode(bytes))
                .unwrap()
                .id(),
            k.id()
        );
        assert_eq!(
            SessionKey::parse(&STANDARD.encode([0u8; 16])).unwrap_err(),
            KeyError::WrongLength(16)
        );
        assert_eq!(
            SessionKey::parse("not a key at all!").unwrap_err(),
            KeyError::NotHexOrBase64
        );
        assert!(!format!("{k:?}").contains("0011"));
    }
}
