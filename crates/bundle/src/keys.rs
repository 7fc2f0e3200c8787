//! Signature algorithms, and the keys that go with them.
//!
//! Follows OPA (`v1/bundle/keys.go`, `verify.go`): HMAC keys are the literal bytes of the
//! configured string; RSA and ECDSA keys are PEM. Verification accepts `PUBLIC KEY`,
//! `RSA PUBLIC KEY`, `RSA PRIVATE KEY`, `PRIVATE KEY`, `EC PRIVATE KEY` and `CERTIFICATE`
//! blocks; signing accepts the three private-key blocks. The key must also fit the
//! algorithm (an RSA key cannot verify ES256, a P-384 key cannot verify ES256).

use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};

use crate::error::{BundleError, Result};
use crate::pem_text;

/// The JWS algorithms OPA supports for bundle signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    ES256,
    ES384,
    ES512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    HS256,
    HS384,
    HS512,
}

/// The key family an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Hmac,
    Rsa,
    Ecdsa,
}

/// OPA's default signing algorithm.
pub const DEFAULT_ALGORITHM: Algorithm = Algorithm::RS256;

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 12] = [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ];

    /// Parses a JWA name (case-sensitive); anything else is `unknown signature algorithm: X`.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| BundleError::UnknownAlgorithm(name.to_string()))
    }

    /// The JWA name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
        }
    }

    /// Which kind of key the algorithm needs.
    pub fn family(self) -> Family {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Family::Rsa,
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::ES512 => Family::Ecdsa,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A key ready to verify signatures of one algorithm family.
#[derive(Clone)]
pub enum VerificationKey {
    Hmac(Vec<u8>),
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
    /// Only from a JWK or a `PUBLIC KEY` block, for the `io.jwt` builtins: bundle
    /// signatures have no EdDSA algorithm.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            VerificationKey::Hmac(_) => "Hmac",
            VerificationKey::Rsa(_) => "Rsa",
            VerificationKey::P256(_) => "P256",
            VerificationKey::P384(_) => "P384",
            VerificationKey::P521(_) => "P521",
            VerificationKey::Ed25519(_) => "Ed25519",
        };
        write!(f, "VerificationKey::{kind}(..)")
    }
}

/// A key ready to sign with one algorithm family.
#[derive(Clone)]
pub enum SigningKey {
    Hmac(Vec<u8>),
    Rsa(Box<RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let kind = match self {
            SigningKey::Hmac(_) => "Hmac",
            SigningKey::Rsa(_) => "Rsa",
            SigningKey::P256(_) => "P256",
            SigningKey::P384(_) => "P384",
            SigningKey::P521(_) => "P521",
        };
        write!(f, "SigningKey::{kind}(..)")
    }
}

/// Any public key we can read, before checking it against an algorithm.
enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    P521(p521::PublicKey),
}

/// Any private key we can read.
enum PrivateKey {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

impl PrivateKey {
    fn public(&self) -> PublicKey {
        match self {
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            PrivateKey::P256(k) => PublicKey::P256(k.public_key()),
            PrivateKey::P384(k) => PublicKey::P384(k.public_key()),
            PrivateKey::P521(k) => PublicKey::P521(k.public_key()),
        }
    }
}

fn key_type_name(rsa: bool, curve: &str) -> String {
    if rsa {
        "RSA".to_string()
    } else {
        format!("ECDSA {curve}")
    }
}

fn mismatch(key_type: String, alg: Algorithm) -> BundleError {
    BundleError::KeyAlgorithmMismatch {
        key_type,
        algorithm: alg.name().to_string(),
    }
}

fn parse_err(kind: &str, e: impl std::fmt::Display) -> BundleError {
    BundleError::KeyParse {
        kind: kind.to_string(),
        message: e.to_string(),
    }
}

fn parse_spki(der: &[u8]) -> Result<PublicKey> {
    if let Ok(k) = RsaPublicKey::from_public_key_der(der) {
        return Ok(PublicKey::Rsa(k));
    }
    if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
        return Ok(PublicKey::P256(k));
    }
    if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
        return Ok(PublicKey::P384(k));
    }
    match p521::PublicKey::from_public_key_der(der) {
        Ok(k) => Ok(PublicKey::P521(k)),
        Err(e) => Err(parse_err("public key (PKIX)", e)),
    }
}

fn parse_pkcs8(der: &[u8]) -> Result<PrivateKey> {
    if let Ok(k) = RsaPrivateKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::Rsa(Box::new(k)));
    }
    if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::P256(k));
    }
    if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::P384(k));
    }
    match p521::SecretKey::from_pkcs8_der(der) {
        Ok(k) => Ok(PrivateKey::P521(k)),
        Err(e) => Err(parse_err("private key (PKCS #8)", e)),
    }
}

fn parse_sec1(der: &[u8]) -> Result<PrivateKey> {
    if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P256(k));
    }
    if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P384(k));
    }
    match p521::SecretKey::from_sec1_der(der) {
        Ok(k) => Ok(PrivateKey::P521(k)),
        Err(e) => Err(parse_err("EC private key", e)),
    }
}

fn parse_pkcs1_private(der: &[u8]) -> Result<PrivateKey> {
    RsaPrivateKey::from_pkcs1_der(der)
        .map(|k| PrivateKey::Rsa(Box::new(k)))
        .map_err(|e| parse_err("RSA private key", e))
}

/// Turns a parsed public key into a verifier for `alg`, or refuses a wrong family/curve.
fn verifier_for(key: PublicKey, alg: Algorithm) -> Result<VerificationKey> {
    match (key, alg) {
        (PublicKey::Rsa(k), a) if a.family() == Family::Rsa => Ok(VerificationKey::Rsa(k)),
        (PublicKey::P256(k), Algorithm::ES256) => Ok(VerificationKey::P256(k.into())),
        (PublicKey::P384(k), Algorithm::ES384) => Ok(VerificationKey::P384(k.into())),
        (PublicKey::P521(k), Algorithm::ES512) => {
            let point = k.to_sec1_bytes();
            p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(VerificationKey::P521)
                .map_err(|e| parse_err("EC public key", e))
        }
        (PublicKey::Rsa(_), a) => Err(mismatch(key_type_name(true, ""), a)),
        (PublicKey::P256(_), a) => Err(mismatch(key_type_name(false, "P-256"), a)),
        (PublicKey::P384(_), a) => Err(mismatch(key_type_name(false, "P-384"), a)),
        (PublicKey::P521(_), a) => Err(mismatch(key_type_name(false, "P-521"), a)),
    }
}

fn signer_for(key: PrivateKey, alg: Algorithm) -> Result<SigningKey> {
    match (key, alg) {
        (PrivateKey::Rsa(k), a) if a.family() == Family::Rsa => Ok(SigningKey::Rsa(k)),
        (PrivateKey::P256(k), Algorithm::ES256) => Ok(SigningKey::P256(k.into())),
        (PrivateKey::P384(k), Algorithm::ES384) => Ok(SigningKey::P384(k.into())),
        (PrivateKey::P521(k), Algorithm::ES512) => {
            p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
                .map(SigningKey::P521)
                .map_err(|e| parse_err("EC private key", e))
        }
        (PrivateKey::Rsa(_), a) => Err(mismatch(key_type_name(true, ""), a)),
        (PrivateKey::P256(_), a) => Err(mismatch(key_type_name(false, "P-256"), a)),
        (PrivateKey::P384(_), a) => Err(mismatch(key_type_name(false, "P-384"), a)),
        (PrivateKey::P521(_), a) => Err(mismatch(key_type_name(false, "P-521"), a)),
    }
}

fn hmac_key(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.is_empty() {
        // An empty secret would make every signature forgeable.
        return Err(parse_err("HMAC secret", "the secret is empty"));
    }
    Ok(bytes.to_vec())
}

/// Parses a configured verification key (`keys.<id>.key`) for `alg`.
///
/// HMAC: the literal bytes. Otherwise a PEM block; no block gives
/// `failed to parse PEM block containing the key`.
pub fn parse_verification_key(key: &str, alg: Algorithm) -> Result<VerificationKey> {
    if alg.family() == Family::Hmac {
        return hmac_key(key.as_bytes()).map(VerificationKey::Hmac);
    }
    let block = pem_text::decode_first(key).ok_or(BundleError::PemParse)?;
    let public = match block.label.as_str() {
        "RSA PUBLIC KEY" => PublicKey::Rsa(
            RsaPublicKey::from_pkcs1_der(&block.der).map_err(|e| parse_err("RSA public key", e))?,
        ),
        "PUBLIC KEY" => parse_spki(&block.der)?,
        "RSA PRIVATE KEY" => parse_pkcs1_private(&block.der)?.public(),
        "PRIVATE KEY" => parse_pkcs8(&block.der)?.public(),
        "EC PRIVATE KEY" => parse_sec1(&block.der)?.public(),
        "CERTIFICATE" => parse_spki(certificate_spki(&block.der)?)?,
        other => return Err(BundleError::UnsupportedPemBlock(other.to_string())),
    };
    verifier_for(public, alg)
}

/// A public key from a PEM `PUBLIC KEY` or `CERTIFICATE` block, whatever its family: the
/// keys OPA's `io.jwt.verify_*` builtins take (`getKeysFromCertOrJWK`). Only those two
/// block types, one block, nothing after it but whitespace, as OPA requires.
pub fn parse_public_key_pem(text: &str) -> Result<VerificationKey> {
    let block = pem_text::decode_first(text).ok_or(BundleError::PemParse)?;
    let end = format!("-----END {}-----", block.label);
    let trailing = text.find(&end).map_or("", |i| &text[i + end.len()..]);
    if !trailing.trim().is_empty() {
        return Err(parse_err(
            "PEM block",
            "extra data after a PEM certificate block",
        ));
    }
    let spki = match block.label.as_str() {
        "PUBLIC KEY" => &block.der[..],
        "CERTIFICATE" => certificate_spki(&block.der)?,
        other => return Err(BundleError::UnsupportedPemBlock(other.to_string())),
    };
    if let Some(key) = ed25519_spki(spki) {
        return key;
    }
    any_verifier(parse_spki(spki)?)
}

/// A verification key from a JSON Web Key (RFC 7517): `RSA` (`n`, `e`), `EC` (`crv`
/// P-256/P-384/P-521, `x`, `y`), `OKP` (`crv` Ed25519, `x`) or `oct` (`k`), members base64url without padding.
pub fn verification_key_from_jwk(
    jwk: &serde_json::Map<String, serde_json::Value>,
) -> Result<VerificationKey> {
    use base64::Engine;
    let member = |name: &str| -> Result<Vec<u8>> {
        let v = jwk
            .get(name)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| parse_err("JWK", format!("missing or non-string member {name:?}")))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|e| parse_err("JWK", format!("member {name:?}: {e}")))
    };
    let kty = jwk
        .get("kty")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| parse_err("JWK", "missing kty"))?;
    match kty {
        "RSA" => {
            let n = rsa::BigUint::from_bytes_be(&member("n")?);
            let e = rsa::BigUint::from_bytes_be(&member("e")?);
            RsaPublicKey::new(n, e)
                .map(VerificationKey::Rsa)
                .map_err(|e| parse_err("RSA JWK", e))
        }
        "EC" => {
            let (x, y) = (member("x")?, member("y")?);
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let curve = jwk
                .get("crv")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            let bad = |e: &dyn std::fmt::Display| parse_err("EC JWK", e);
            match curve {
                "P-256" => p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map(VerificationKey::P256)
                    .map_err(|e| bad(&e)),
                "P-384" => p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map(VerificationKey::P384)
                    .map_err(|e| bad(&e)),
                "P-521" => p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map(VerificationKey::P521)
                    .map_err(|e| bad(&e)),
                other => Err(bad(&format!("unsupported curve {other:?}"))),
            }
        }
        "oct" => Ok(VerificationKey::Hmac(member("k")?)),
        "OKP" => match jwk.get("crv").and_then(serde_json::Value::as_str) {
            Some("Ed25519") => ed25519_key(&member("x")?),
            other => Err(parse_err("OKP JWK", format!("unsupported curve {other:?}"))),
        },
        other => Err(parse_err("JWK", format!("unsupported key type {other:?}"))),
    }
}

/// An Ed25519 `SubjectPublicKeyInfo` (RFC 8410: a fixed 12-byte prefix, then the key).
fn ed25519_spki(der: &[u8]) -> Option<Result<VerificationKey>> {
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let key = der.strip_prefix(&PREFIX[..])?;
    Some(ed25519_key(key))
}

fn ed25519_key(bytes: &[u8]) -> Result<VerificationKey> {
    let bytes: &[u8; 32] = bytes
        .try_into()
        .map_err(|_| parse_err("Ed25519 public key", "not 32 bytes"))?;
    ed25519_dalek::VerifyingKey::from_bytes(bytes)
        .map(VerificationKey::Ed25519)
        .map_err(|e| parse_err("Ed25519 public key", e))
}

fn any_verifier(key: PublicKey) -> Result<VerificationKey> {
    Ok(match key {
        PublicKey::Rsa(k) => VerificationKey::Rsa(k),
        PublicKey::P256(k) => VerificationKey::P256(k.into()),
        PublicKey::P384(k) => VerificationKey::P384(k.into()),
        PublicKey::P521(k) => p521::ecdsa::VerifyingKey::from_sec1_bytes(&k.to_sec1_bytes())
            .map(VerificationKey::P521)
            .map_err(|e| parse_err("EC public key", e))?,
    })
}

/// Parses signing key material (already loaded, see [`load_signing_key`]) for `alg`.
pub fn parse_signing_key(material: &[u8], alg: Algorithm) -> Result<SigningKey> {
    if alg.family() == Family::Hmac {
        return hmac_key(material).map(SigningKey::Hmac);
    }
    let text = String::from_utf8_lossy(material);
    let block = pem_text::decode_first(&text).ok_or(BundleError::PemParse)?;
    let private = match block.label.as_str() {
        "RSA PRIVATE KEY" => parse_pkcs1_private(&block.der)?,
        "PRIVATE KEY" => parse_pkcs8(&block.der)?,
        "EC PRIVATE KEY" => parse_sec1(&block.der)?,
        other => return Err(BundleError::UnsupportedKeyType(other.to_string())),
    };
    signer_for(private, alg)
}

/// Resolves a signing key value ([`KeySource::from_config_value`]) and parses it for `alg`.
pub fn load_signing_key(value: &str, alg: Algorithm) -> Result<SigningKey> {
    parse_signing_key(&resolve_key_value(value)?, alg)
}

/// The key material a configured key value stands for:
/// `KeySource::from_config_value(value).material()`.
pub fn resolve_key_value(value: &str) -> Result<Vec<u8>> {
    KeySource::from_config_value(value).material()
}

/// Where key material comes from: the text itself, or a file that must be readable.
///
/// OPA reads a key value as a file when a file of that name exists and uses the value
/// itself as the key otherwise, so a mistyped or missing file silently becomes the HMAC
/// secret (`--verification-key /run/secrets/missing.key --signing-alg HS256` accepted
/// bundles signed with the path string; security review finding 8). lockstep keeps the
/// two inputs apart: a value that names a file ([`KeySource::File`]) fails when the
/// file cannot be read.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The key text (inline PEM or an HMAC secret).
    Inline(String),
    /// A file holding the key; a missing or unreadable file is an error.
    File(std::path::PathBuf),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never print key material.
            KeySource::Inline(_) => f.write_str("KeySource::Inline(..)"),
            KeySource::File(p) => write!(f, "KeySource::File({})", p.display()),
        }
    }
}

/// Inline PEM: a value whose first non-blank text is a PEM boundary.
fn is_inline_pem(value: &str) -> bool {
    value.trim_start().starts_with("-----BEGIN")
}

impl KeySource {
    /// A key value from a configuration file (`keys.<id>.key`, the server's `keys:`,
    /// a [`crate::SigningConfig`]'s `key`):
    /// - inline PEM (starts with `-----BEGIN`) is the key, as in OPA;
    /// - a value that looks like a path (contains `/`, no newline) names a file, which
    ///   must be readable (put an HMAC secret containing `/` in a file);
    /// - otherwise an existing file of that name is read, and anything else is the key
    ///   text itself (OPA's inline HMAC secret: `key: mysecret`).
    pub fn from_config_value(value: &str) -> KeySource {
        if is_inline_pem(value) {
            return KeySource::Inline(value.to_string());
        }
        if value.contains('/') && !value.contains('\n') {
            return KeySource::File(value.into());
        }
        if value.is_empty() || value.len() > 4096 || value.contains('\0') || value.contains('\n') {
            return KeySource::Inline(value.to_string());
        }
        match std::fs::metadata(value) {
            Ok(m) if m.is_file() => KeySource::File(value.into()),
            _ => KeySource::Inline(value.to_string()),
        }
    }

    /// A key given on the command line (`--verification-key`, `--signing-key`): inline
    /// PEM, or else a file that must be readable (never the flag's text as a secret).
    pub fn from_flag(value: &str) -> KeySource {
        if is_inline_pem(value) {
            KeySource::Inline(value.to_string())
        } else {
            KeySource::File(value.into())
        }
    }

    /// The key bytes: the inline text, or the file's contents.
    pub fn material(&self) -> Result<Vec<u8>> {
        match self {
            KeySource::Inline(v) => Ok(v.as_bytes().to_vec()),
            KeySource::File(p) => std::fs::read(p).map_err(|e| BundleError::KeyFile {
                path: p.display().to_string(),
                message: if e.kind() == std::io::ErrorKind::NotFound {
                    "no such file (a key value that names a file must be a readable file; it is never used as the key itself)".to_string()
                } else {
                    e.to_string()
                },
            }),
        }
    }

    /// A configuration value that [`KeySource::from_config_value`] reads back as this
    /// same source: inline text as is, a file as its absolute path (which contains `/`).
    /// For a command-line key handed on through a configuration map.
    pub fn to_config_value(&self) -> Result<String> {
        match self {
            KeySource::Inline(v) => Ok(v.clone()),
            KeySource::File(p) => {
                // Fail now, naming the flag's value, rather than later.
                self.material()?;
                let abs = std::path::absolute(p).map_err(|e| BundleError::KeyFile {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                Ok(abs.display().to_string())
            }
        }
    }
}

/// Extracts the SubjectPublicKeyInfo DER from an X.509 certificate with a minimal DER walk:
/// Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial, sigAlg, issuer,
/// validity, subject, subjectPublicKeyInfo, ... }, ... }.
fn certificate_spki(der: &[u8]) -> Result<&[u8]> {
    let bad = |m: &str| parse_err("certificate", m);
    let (cert, _) = der_tlv(der).ok_or_else(|| bad("not a DER sequence"))?;
    let (tbs, _) = der_tlv(cert.content).ok_or_else(|| bad("missing tbsCertificate"))?;
    if cert.tag != 0x30 || tbs.tag != 0x30 {
        return Err(bad("not a certificate"));
    }
    let mut rest = tbs.content;
    let (first, after) = der_tlv(rest).ok_or_else(|| bad("truncated tbsCertificate"))?;
    if first.tag == 0xa0 {
        rest = after;
    }
    // Skip serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        let (_, after) = der_tlv(rest).ok_or_else(|| bad("truncated tbsCertificate"))?;
        rest = after;
    }
    let (spki, _) = der_tlv(rest).ok_or_else(|| bad("missing subjectPublicKeyInfo"))?;
    if spki.tag != 0x30 {
        return Err(bad("subjectPublicKeyInfo is not a sequence"));
    }
    Ok(spki.whole)
}

struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads one DER TLV (single-byte tags, definite lengths); returns it and the rest.
fn der_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    let first_len = *input.get(1)?;
    let (len, header) = if first_len < 0x80 {
        (usize::from(first_len), 2usize)
    } else {
        let n = usize::from(first_len & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in input.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let content = input.get(header..end)?;
    let whole = input.get(..end)?;
    Some((
        Tlv {
            tag,
            content,
            whole,
        },
        input.get(end..)?,
    ))
}

/// The SPKI `PUBLIC KEY` PEM for a private key PEM (`RSA PRIVATE KEY`, `PRIVATE KEY`,
/// `EC PRIVATE KEY`): what to hand to verifiers.
pub fn public_key_pem(private_pem: &str) -> Result<String> {
    let block = pem_text::decode_first(private_pem).ok_or(BundleError::PemParse)?;
    let private = match block.label.as_str() {
        "RSA PRIVATE KEY" => parse_pkcs1_private(&block.der)?,
        "PRIVATE KEY" => parse_pkcs8(&block.der)?,
        "EC PRIVATE KEY" => parse_sec1(&block.der)?,
        other => return Err(BundleError::UnsupportedKeyType(other.to_string())),
    };
    let der = match private.public() {
        PublicKey::Rsa(k) => k.to_public_key_der(),
        PublicKey::P256(k) => k.to_public_key_der(),
        PublicKey::P384(k) => k.to_public_key_der(),
        PublicKey::P521(k) => k.to_public_key_der(),
    }
    .map_err(|e| parse_err("public key", e))?;
    Ok(pem_text::encode("PUBLIC KEY", der.as_bytes()))
}

/// A fresh key pair as text: `(private, public)`.
///
/// ECDSA: PKCS #8 `PRIVATE KEY` + SPKI `PUBLIC KEY` on the algorithm's curve.
/// RSA (RS*/PS*): 2048-bit, PKCS #8 + SPKI. HMAC: 32 random bytes as lowercase hex; the
/// secret is both halves (the hex text itself is the key, as OPA uses the string's bytes).
pub fn generate_keypair(alg: Algorithm) -> Result<(String, String)> {
    let gen_err = |e: &dyn std::fmt::Display| BundleError::KeyGeneration(e.to_string());
    // The three curves differ only in their crate; one body keeps them identical.
    macro_rules! ec_pair {
        ($curve:ident) => {{
            let k = $curve::SecretKey::random(&mut OsRng);
            let private = k.to_pkcs8_pem(LineEnding::LF).map_err(|e| gen_err(&e))?;
            let public = k
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| gen_err(&e))?;
            Ok((private.to_string(), public))
        }};
    }
    match alg {
        Algorithm::ES256 => ec_pair!(p256),
        Algorithm::ES384 => ec_pair!(p384),
        Algorithm::ES512 => ec_pair!(p521),
        a if a.family() == Family::Rsa => {
            let k = RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| gen_err(&e))?;
            let private = k.to_pkcs8_der().map_err(|e| gen_err(&e))?;
            let public = k
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| gen_err(&e))?;
            Ok((
                pem_text::encode("PRIVATE KEY", private.as_bytes()),
                pem_text::encode("PUBLIC KEY", public.as_bytes()),
            ))
        }
        _ => {
            let mut secret = [0u8; 32];
            OsRng.try_fill_bytes(&mut secret).map_err(|e| gen_err(&e))?;
            let text = hex::encode(secret);
            Ok((text.clone(), text))
        }
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
    fn algorithm_names() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()).unwrap(), a);
        }
        assert_eq!(
            Algorithm::from_name("RS007").unwrap_err().to_string(),
            "unknown signature algorithm: RS007"
        );
        assert!(Algorithm::from_name("none").is_err());
        assert!(Algorithm::from_name("rs256").is_err());
    }

    #[test]
    fn generated_keys_parse_back_for_their_algorithm_only() {
        for alg in [
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::ES512,
            Algorithm::HS256,
        ] {
            let (private, public) = generate_keypair(alg).unwrap();
            assert!(parse_signing_key(private.as_bytes(), alg).is_ok(), "{alg}");
            assert!(parse_verification_key(&public, alg).is_ok(), "{alg}");
            assert!(parse_verification_key(&private, alg).is_ok(), "{alg}");
        }
        let (_, p256_public) = generate_keypair(Algorithm::ES256).unwrap();
        assert_eq!(
            parse_verification_key(&p256_public, Algorithm::ES384)
                .unwrap_err()
                .to_string(),
            "key of type ECDSA P-256 cannot be used with algorithm ES384"
        );
        assert_eq!(
            parse_verification_key(&p256_public, Algorithm::RS256)
                .unwrap_err()
                .to_string(),
            "key of type ECDSA P-256 cannot be used with algorithm RS256"
        );
    }

    #[test]
    fn non_pem_is_refused_for_asymmetric_algorithms() {
        assert_eq!(
            parse_verification_key("secret", Algorithm::RS256).unwrap_err(),
            BundleError::PemParse
        );
        assert_eq!(
            parse_signing_key(b"secret", Algorithm::ES256).unwrap_err(),
            BundleError::PemParse
        );
        assert!(
            matches!(parse_verification_key("secret", Algorithm::HS256).unwrap(), VerificationKey::Hmac(k) if k == b"secret")
        );
    }

    #[test]
    fn finding8_a_missing_key_file_is_an_error_never_the_key() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("missing.key").display().to_string();
        // Config value that looks like a path: must be a readable file.
        let e = load_signing_key(&missing, Algorithm::HS256).unwrap_err();
        assert!(
            matches!(&e, BundleError::KeyFile { path, .. } if *path == missing),
            "{e}"
        );
        assert!(resolve_key_value(&missing).is_err());
        // A command-line value is a file unless it is inline PEM, slash or not.
        assert!(KeySource::from_flag("missing.key").material().is_err());
        assert_eq!(
            KeySource::from_flag("missing.key"),
            KeySource::File("missing.key".into())
        );
        assert!(
            KeySource::from_flag("missing.key")
                .to_config_value()
                .is_err()
        );
        // An existing file is read, and handed on as an absolute path that reads back
        // as the same file.
        let f = d.path().join("hmac.key");
        std::fs::write(&f, "s3cret").unwrap();
        let v = KeySource::from_flag(&f.display().to_string())
            .to_config_value()
            .unwrap();
        assert!(v.starts_with('/'));
        assert_eq!(resolve_key_value(&v).unwrap(), b"s3cret");
        // OPA's inline values stay inline: PEM, and an HMAC secret without a slash.
        let (_, public) = generate_keypair(Algorithm::ES256).unwrap();
        assert_eq!(
            KeySource::from_config_value(&public),
            KeySource::Inline(public.clone())
        );
        assert_eq!(
            KeySource::from_flag(&public),
            KeySource::Inline(public.clone())
        );
        assert_eq!(resolve_key_value("mysecret").unwrap(), b"mysecret");
        // Multi-line text with a slash is inline (not a path).
        assert_eq!(resolve_key_value("a/b\nc").unwrap(), b"a/b\nc");
        // Key material is never printed.
        assert_eq!(
            format!("{:?}", KeySource::Inline("s3cret".into())),
            "KeySource::Inline(..)"
        );
    }

    #[test]
    fn der_walk_never_panics_on_garbage() {
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 37 + 0x30) as u8).collect();
            let _ = certificate_spki(&garbage);
        }
        assert!(certificate_spki(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
