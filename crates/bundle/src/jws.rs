//! Compact JWS (RFC 7515) signing and verification, written directly on RustCrypto.
//!
//! Verification always uses the algorithm configured for the key, as OPA does, and on top
//! refuses a header `alg` that differs from it (`none`, or an HMAC header against an RSA
//! key: the classic algorithm-confusion attacks) instead of trusting the header.
//! ECDSA signatures are JOSE's fixed-size `r || s`, not DER.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer, Verifier};
use serde_json::{Map, Value};
use sha2::{Sha256, Sha384, Sha512};

use crate::error::{BundleError, Result};
use crate::keys::{Algorithm, SigningKey, VerificationKey};

/// Base64url without padding. Like Go's `RawURLEncoding`, padding is refused and
/// non-zero trailing bits are tolerated.
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// A split and decoded compact token; the signature is checked by [`verify`].
#[derive(Debug, Clone)]
pub struct DecodedToken<'a> {
    /// The protected header.
    pub header: Map<String, Value>,
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
    /// `base64(header) "." base64(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The still-encoded signature segment.
    pub signature_b64: &'a str,
}

impl DecodedToken<'_> {
    /// The header `kid`, when it is a string.
    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }
}

/// Splits a compact token and decodes header and payload (OPA's order of checks and texts).
pub fn decode(token: &str) -> Result<DecodedToken<'_>> {
    let segments = token.split('.').count();
    let mut parts = token.splitn(3, '.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(BundleError::MalformedToken(format!(
            "invalid compact serialization: expected 3 segments, found {segments}"
        )));
    };
    if segments != 3 {
        return Err(BundleError::MalformedToken(format!(
            "invalid compact serialization: expected 3 segments, found {segments}"
        )));
    }
    let header_bytes = B64
        .decode(h)
        .map_err(|e| BundleError::HeaderBase64(e.to_string()))?;
    let header = match serde_json::from_slice::<Value>(&header_bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(BundleError::HeaderJson(
                "header is not a JSON object".to_string(),
            ));
        }
        Err(e) => return Err(BundleError::HeaderJson(e.to_string())),
    };
    let payload = B64
        .decode(p)
        .map_err(|e| BundleError::PayloadBase64(e.to_string()))?;
    let signing_input = token.get(..h.len() + 1 + p.len()).unwrap_or_default();
    Ok(DecodedToken {
        header,
        payload,
        signing_input,
        signature_b64: s,
    })
}

/// Checks the token's header algorithm and signature against `key` used with `alg`.
pub fn verify(token: &DecodedToken<'_>, key: &VerificationKey, alg: Algorithm) -> Result<()> {
    match token.header.get("alg") {
        None => return Err(BundleError::MissingAlg),
        Some(Value::String(h)) if h.eq_ignore_ascii_case("none") => {
            return Err(BundleError::AlgNone);
        }
        Some(Value::String(h)) if h == alg.name() => {}
        Some(other) => {
            return Err(BundleError::AlgMismatch {
                header: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
                configured: alg.name().to_string(),
            });
        }
    }
    let sig = B64
        .decode(token.signature_b64)
        .map_err(|e| BundleError::SignatureBase64(e.to_string()))?;
    let msg = token.signing_input.as_bytes();
    if verify_signature(key, alg, msg, &sig) {
        return Ok(());
    }
    // Library texts as in OPA's jwx v3 / Go crypto.
    Err(BundleError::BadSignature(
        match key {
            VerificationKey::Hmac(_) => "invalid HMAC signature",
            VerificationKey::Rsa(_) => "crypto/rsa: verification error",
            _ => "crypto/ecdsa: verification error",
        }
        .to_string(),
    ))
}

/// Whether `sig` is an Ed25519 signature (RFC 8032) of `msg` by `key`; `false` for any
/// other kind of key.
pub fn verify_ed25519(key: &VerificationKey, msg: &[u8], sig: &[u8]) -> bool {
    use ed25519_dalek::ed25519::signature::Verifier as _;
    let VerificationKey::Ed25519(k) = key else {
        return false;
    };
    ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
}

/// Whether `sig` (raw bytes: an HMAC, an RSA signature, or JOSE's `r || s`) signs `msg`
/// under `key` with `alg`. A key of another family, or another curve, is `false`.
pub fn verify_signature(key: &VerificationKey, alg: Algorithm, msg: &[u8], sig: &[u8]) -> bool {
    match (key, alg) {
        (VerificationKey::Hmac(k), Algorithm::HS256) => hmac_verify::<Hmac<Sha256>>(k, msg, sig),
        (VerificationKey::Hmac(k), Algorithm::HS384) => hmac_verify::<Hmac<Sha384>>(k, msg, sig),
        (VerificationKey::Hmac(k), Algorithm::HS512) => hmac_verify::<Hmac<Sha512>>(k, msg, sig),
        (VerificationKey::Hmac(_), _) => false,
        (VerificationKey::Rsa(k), a) => rsa_verify(k, a, msg, sig),
        (VerificationKey::P256(k), Algorithm::ES256) => {
            p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
        }
        (VerificationKey::P384(k), Algorithm::ES384) => {
            p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
        }
        (VerificationKey::P521(k), Algorithm::ES512) => {
            p521::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
        }
        _ => false,
    }
}

fn hmac_verify<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(msg);
            // Constant-time comparison.
            mac.verify_slice(sig).is_ok()
        }
        Err(_) => false,
    }
}

fn rsa_verify(key: &rsa::RsaPublicKey, alg: Algorithm, msg: &[u8], sig: &[u8]) -> bool {
    use rsa::{pkcs1v15, pss};
    macro_rules! check {
        ($module:ident, $digest:ty) => {{
            let vk = $module::VerifyingKey::<$digest>::new(key.clone());
            $module::Signature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
        }};
    }
    match alg {
        Algorithm::RS256 => check!(pkcs1v15, Sha256),
        Algorithm::RS384 => check!(pkcs1v15, Sha384),
        Algorithm::RS512 => check!(pkcs1v15, Sha512),
        Algorithm::PS256 => check!(pss, Sha256),
        Algorithm::PS384 => check!(pss, Sha384),
        Algorithm::PS512 => check!(pss, Sha512),
        _ => false,
    }
}

/// Signs `payload` into a compact token with header `{"alg": alg, "kid": kid?}`.
pub fn sign(payload: &[u8], key: &SigningKey, alg: Algorithm, kid: Option<&str>) -> Result<String> {
    let mut header = Map::new();
    header.insert("alg".to_string(), Value::String(alg.name().to_string()));
    if let Some(kid) = kid {
        header.insert("kid".to_string(), Value::String(kid.to_string()));
    }
    let header_json = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| BundleError::Signing(e.to_string()))?;
    let mut token = format!("{}.{}", B64.encode(header_json), B64.encode(payload));
    let sig = raw_signature(token.as_bytes(), key, alg)?;
    token.push('.');
    token.push_str(&B64.encode(sig));
    Ok(token)
}

fn raw_signature(msg: &[u8], key: &SigningKey, alg: Algorithm) -> Result<Vec<u8>> {
    use rsa::{pkcs1v15, pss};
    let mismatch = || {
        BundleError::Signing(format!(
            "the signing key cannot be used with algorithm {alg}"
        ))
    };
    macro_rules! mac {
        ($digest:ty, $k:expr) => {{
            let mut mac = <Hmac<$digest> as hmac::digest::KeyInit>::new_from_slice($k)
                .map_err(|e| BundleError::Signing(e.to_string()))?;
            mac.update(msg);
            mac.finalize().into_bytes().to_vec()
        }};
    }
    macro_rules! rsa_sign {
        (pkcs1v15, $digest:ty, $k:expr) => {{
            pkcs1v15::SigningKey::<$digest>::new((**$k).clone())
                .try_sign(msg)
                .map_err(|e| BundleError::Signing(e.to_string()))?
                .to_vec()
        }};
        (pss, $digest:ty, $k:expr) => {{
            pss::SigningKey::<$digest>::new((**$k).clone())
                .try_sign_with_rng(&mut rand_core::OsRng, msg)
                .map_err(|e| BundleError::Signing(e.to_string()))?
                .to_vec()
        }};
    }
    Ok(match (key, alg) {
        (SigningKey::Hmac(k), Algorithm::HS256) => mac!(Sha256, k),
        (SigningKey::Hmac(k), Algorithm::HS384) => mac!(Sha384, k),
        (SigningKey::Hmac(k), Algorithm::HS512) => mac!(Sha512, k),
        (SigningKey::Rsa(k), Algorithm::RS256) => rsa_sign!(pkcs1v15, Sha256, k),
        (SigningKey::Rsa(k), Algorithm::RS384) => rsa_sign!(pkcs1v15, Sha384, k),
        (SigningKey::Rsa(k), Algorithm::RS512) => rsa_sign!(pkcs1v15, Sha512, k),
        (SigningKey::Rsa(k), Algorithm::PS256) => rsa_sign!(pss, Sha256, k),
        (SigningKey::Rsa(k), Algorithm::PS384) => rsa_sign!(pss, Sha384, k),
        (SigningKey::Rsa(k), Algorithm::PS512) => rsa_sign!(pss, Sha512, k),
        (SigningKey::P256(k), Algorithm::ES256) => {
            let s: p256::ecdsa::Signature = k
                .try_sign(msg)
                .map_err(|e| BundleError::Signing(e.to_string()))?;
            s.to_bytes().to_vec()
        }
        (SigningKey::P384(k), Algorithm::ES384) => {
            let s: p384::ecdsa::Signature = k
                .try_sign(msg)
                .map_err(|e| BundleError::Signing(e.to_string()))?;
            s.to_bytes().to_vec()
        }
        (SigningKey::P521(k), Algorithm::ES512) => {
            let s: p521::ecdsa::Signature = k
                .try_sign(msg)
                .map_err(|e| BundleError::Signing(e.to_string()))?;
            s.to_bytes().to_vec()
        }
        _ => return Err(mismatch()),
    })
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
    use crate::keys::{generate_keypair, parse_signing_key, parse_verification_key};

    fn round_trip(alg: Algorithm) {
        let (private, public) = generate_keypair(alg).unwrap();
        let sk = parse_signing_key(private.as_bytes(), alg).unwrap();
        let vk = parse_verification_key(&public, alg).unwrap();
        let token = sign(b"{\"a\":1}", &sk, alg, Some("k1")).unwrap();
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.kid(), Some("k1"));
        assert_eq!(decoded.payload, b"{\"a\":1}");
        verify(&decoded, &vk, alg).unwrap();
        // Any change to the signed bytes breaks the signature.
        let tampered = format!(
            "{}.{}",
            decoded.signing_input.replace("eyJh", "eyJi"),
            decoded.signature_b64
        );
        if let Ok(t) = decode(&tampered) {
            assert!(verify(&t, &vk, alg).is_err());
        }
    }

    #[test]
    fn round_trips_ec_and_hmac() {
        for alg in [
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::ES512,
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::HS512,
        ] {
            round_trip(alg);
        }
    }

    #[test]
    fn ecdsa_signature_is_raw_r_s() {
        let (private, _) = generate_keypair(Algorithm::ES256).unwrap();
        let sk = parse_signing_key(private.as_bytes(), Algorithm::ES256).unwrap();
        let token = sign(b"{}", &sk, Algorithm::ES256, None).unwrap();
        let sig = B64.decode(token.rsplit('.').next().unwrap()).unwrap();
        assert_eq!(sig.len(), 64);
    }

    #[test]
    fn malformed_tokens_have_precise_errors() {
        assert_eq!(
            decode("a.b").unwrap_err().to_string(),
            "failed to parse JWS: invalid compact serialization: expected 3 segments, found 2"
        );
        assert_eq!(
            decode("a.b.c.d").unwrap_err().to_string(),
            "failed to parse JWS: invalid compact serialization: expected 3 segments, found 4"
        );
        assert!(matches!(
            decode("!!.e30.x").unwrap_err(),
            BundleError::HeaderBase64(_)
        ));
        assert!(matches!(
            decode("bm90anNvbg.e30.x").unwrap_err(),
            BundleError::HeaderJson(_)
        ));
        assert!(matches!(
            decode("e30.!!.x").unwrap_err(),
            BundleError::PayloadBase64(_)
        ));
        let t = decode("eyJhbGciOiJIUzI1NiJ9.e30.!!").unwrap();
        let k = VerificationKey::Hmac(b"s".to_vec());
        assert!(matches!(
            verify(&t, &k, Algorithm::HS256).unwrap_err(),
            BundleError::SignatureBase64(_)
        ));
    }

    #[test]
    fn alg_none_and_mismatch_are_refused() {
        let k = VerificationKey::Hmac(b"secret".to_vec());
        // {"alg":"none"}.{}.
        let none = decode("eyJhbGciOiJub25lIn0.e30.").unwrap();
        assert_eq!(
            verify(&none, &k, Algorithm::HS256).unwrap_err(),
            BundleError::AlgNone
        );
        let sk = SigningKey::Hmac(b"secret".to_vec());
        let hs384 = sign(b"{}", &sk, Algorithm::HS384, None).unwrap();
        assert_eq!(
            verify(&decode(&hs384).unwrap(), &k, Algorithm::HS256)
                .unwrap_err()
                .to_string(),
            "failed to verify JWT signature: token algorithm HS384 does not match the algorithm HS256 configured for the key"
        );
        let no_alg = decode("e30.e30.").unwrap();
        assert_eq!(
            verify(&no_alg, &k, Algorithm::HS256).unwrap_err(),
            BundleError::MissingAlg
        );
    }

    #[test]
    fn wrong_hmac_secret_fails() {
        let token = sign(
            b"{}",
            &SigningKey::Hmac(b"a".to_vec()),
            Algorithm::HS256,
            None,
        )
        .unwrap();
        assert_eq!(
            verify(
                &decode(&token).unwrap(),
                &VerificationKey::Hmac(b"b".to_vec()),
                Algorithm::HS256
            )
            .unwrap_err()
            .to_string(),
            "failed to verify JWT signature: invalid HMAC signature"
        );
    }
}
