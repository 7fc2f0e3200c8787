//! `io.jwt.decode`, `io.jwt.verify_{rs,ps,es,hs}{256,384,512}`, `io.jwt.verify_eddsa` and
//! `io.jwt.decode_verify`, after OPA's `v1/topdown/tokens.go`:
//! - a token is three `.`-separated base64url segments (padding optional, as OPA
//!   pads them itself); a JWE header (`enc`) is refused; `cty: JWT` nests;
//! - `verify_*` answer `false` for a signature that does not verify (a key of another
//!   family included) and fail (a builtin error) for a malformed token or key; the
//!   header's `alg` is not consulted, the builtin's name is the algorithm; the key is a
//!   PEM `CERTIFICATE` or `PUBLIC KEY`, or a JWK or JWK set (a matching `kid` is tried
//!   alone); `verify_hs*` take the secret itself;
//! - `decode_verify` answers `[false, {}, {}]` for a token that does not meet its
//!   constraints (signature, `alg`, `exp`, `nbf`, `iss`, `aud`), `[true, header,
//!   payload]` otherwise, and fails on malformed input or constraints.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use lockstep_bundle::jws::{verify_ed25519, verify_signature};
use lockstep_bundle::keys::{
    Algorithm, VerificationKey, parse_public_key_pem, verification_key_from_jwk,
};
use regorus::Value;
use serde_json::{Map, Value as Json};

use super::{Args, CallError, CallResult};

/// Go's `base64.URLEncoding` (padded; trailing bits tolerated), which OPA decodes
/// with after padding the segment itself.
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A signature algorithm of a token: a JWS algorithm bundle signatures also use, or
/// EdDSA (Ed25519), which only tokens do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Jws(Algorithm),
    EdDsa,
}

impl Alg {
    fn from_name(name: &str) -> Option<Alg> {
        if name == "EdDSA" {
            return Some(Alg::EdDsa);
        }
        Algorithm::from_name(name).ok().map(Alg::Jws)
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Jws(a) => a.name(),
            Alg::EdDsa => "EdDSA",
        }
    }

    fn is_hmac(self) -> bool {
        matches!(
            self,
            Alg::Jws(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
        )
    }

    /// Whether `sig` signs `msg` under `key`; a key of another kind does not.
    fn check(self, key: &VerificationKey, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Alg::Jws(a) => verify_signature(key, a, msg, sig),
            Alg::EdDsa => verify_ed25519(key, msg, sig),
        }
    }
}

/// OPA's `base64url.decode`, as tokens.go uses it.
fn b64url(s: &str) -> Result<Vec<u8>, String> {
    let mut padded = s.to_string();
    if !s.ends_with('=') {
        match s.len() % 4 {
            0 => {}
            2 => padded.push_str("=="),
            3 => padded.push('='),
            _ => return Err(format!("illegal base64url string: {s}")),
        }
    }
    // Go's decoder skips line breaks.
    padded.retain(|c| c != '\r' && c != '\n');
    B64.decode(padded.as_bytes()).map_err(|e| {
        // Go's `base64.CorruptInputError` text, which OPA's messages carry.
        let at = match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            base64::DecodeError::InvalidLength(len) => len,
            base64::DecodeError::InvalidPadding => padded.find('=').unwrap_or(padded.len()),
        };
        format!("illegal base64 data at input byte {at}")
    })
}

/// The three segments of a compact token, still encoded.
struct Token<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> Token<'a> {
    fn split(args: &Args<'_>, s: &'a str) -> Result<Token<'a>, CallError> {
        if !s.contains('.') {
            return Err(args.error("encoded JWT had no period separators"));
        }
        let parts: Vec<&str> = s.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            return Err(args.error(format!(
                "encoded JWT must have 3 sections, found {}",
                parts.len()
            )));
        };
        Ok(Token {
            header,
            payload,
            signature,
        })
    }

    fn signing_input(&self) -> String {
        format!("{}.{}", self.header, self.payload)
    }

    fn signature_bytes(&self, args: &Args<'_>) -> Result<Vec<u8>, CallError> {
        b64url(self.signature)
            .map_err(|e| args.error(format!("JWT signature had invalid encoding: {e}")))
    }

    /// The header as a JSON object; a JWE is refused.
    fn decode_header(&self, args: &Args<'_>) -> Result<Map<String, Json>, CallError> {
        let h = b64url(self.header)
            .map_err(|e| args.error(format!("JWT header had invalid encoding: {e}")))?;
        let header = json_object(&h).map_err(|e| args.error(format!("bad JWT header: {e}")))?;
        if header.contains_key("enc") {
            return Err(args.error("JWT is a JWE object, which is not supported"));
        }
        Ok(header)
    }

    fn payload_bytes(&self, args: &Args<'_>) -> Result<Vec<u8>, CallError> {
        b64url(self.payload)
            .map_err(|e| args.error(format!("JWT payload had invalid encoding: {e}")))
    }
}

/// OPA's `extractJSONObject`.
fn json_object(bytes: &[u8]) -> Result<Map<String, Json>, String> {
    let text = String::from_utf8_lossy(bytes);
    match serde_json::from_str::<Json>(&text) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err("decoded JSON type was not an Object".to_string()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

fn object(m: Map<String, Json>) -> Value {
    Value::from(Json::Object(m))
}

pub(super) fn call(args: &Args<'_>) -> CallResult {
    match args.name {
        "io.jwt.decode" => decode(args, args.string(0)?.to_string()),
        "io.jwt.decode_verify" => decode_verify(args),
        "io.jwt.verify_eddsa" => verify(args, Alg::EdDsa),
        name => match name
            .strip_prefix("io.jwt.verify_")
            .and_then(|a| Alg::from_name(&a.to_ascii_uppercase()))
        {
            Some(alg) => verify(args, alg),
            None => Err(args.error("not provided by lockstep")),
        },
    }
}

fn decode(args: &Args<'_>, mut encoded: String) -> CallResult {
    // Nested tokens (`cty: JWT`) are decoded down to the innermost; each level is
    // bounded by the one before, so this ends.
    loop {
        let token = Token::split(args, &encoded)?;
        let header = token.decode_header(args)?;
        let payload = token.payload_bytes(args)?;
        if header.get("cty").and_then(Json::as_str) == Some("JWT") {
            // jwt.io quotes a nested token; OPA trims the quotes.
            let inner = String::from_utf8_lossy(&payload)
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string();
            encoded = inner;
            continue;
        }
        let payload = json_object(&payload).map_err(|e| args.error(e))?;
        let signature = token.signature_bytes(args)?;
        return Ok(Value::from(vec![
            object(header),
            object(payload),
            Value::from(hex::encode(signature)),
        ]));
    }
}

/// A key to verify with, and what a JWK said about it.
struct Candidate {
    key: VerificationKey,
    kid: Option<String>,
    alg: Option<String>,
}

/// OPA's `getKeysFromCertOrJWK`: a PEM block, else a JWK or JWK set.
fn keys_of(args: &Args<'_>, text: &str) -> Result<Vec<Candidate>, CallError> {
    if text.contains("-----BEGIN ") {
        // OPA's texts: by the block's type, as Go's `x509` parsers are chosen.
        let label = text
            .split("-----BEGIN ")
            .nth(1)
            .and_then(|r| r.split("-----").next())
            .unwrap_or("");
        let key = parse_public_key_pem(text).map_err(|e| {
            args.error(match label {
                "CERTIFICATE" => format!("failed to parse a PEM certificate: {e}"),
                "PUBLIC KEY" => format!("failed to parse a PEM public key: {e}"),
                _ => format!("failed to extract a Key from the PEM certificate: {e}"),
            })
        })?;
        return Ok(vec![Candidate {
            key,
            kid: None,
            alg: None,
        }]);
    }
    let bad = |e: String| args.error(format!("failed to parse a JWK key (set): {e}"));
    let json: Json = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let Json::Object(obj) = json else {
        return Err(bad("not a JSON object".to_string()));
    };
    let members: Vec<&Map<String, Json>> = match obj.get("keys") {
        Some(Json::Array(keys)) => keys
            .iter()
            .map(|k| {
                k.as_object()
                    .ok_or_else(|| bad("a key is not an object".to_string()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("keys is not an array".to_string())),
        None => vec![&obj],
    };
    members
        .into_iter()
        .map(|m| {
            let key = verification_key_from_jwk(m).map_err(|e| bad(e.to_string()))?;
            let text = |k: &str| m.get(k).and_then(Json::as_str).map(str::to_string);
            Ok(Candidate {
                key,
                kid: text("kid"),
                alg: text("alg"),
            })
        })
        .collect()
}

/// The header fields decode_verify and verify read, with OPA's type checks.
#[derive(Default)]
struct Header {
    alg: String,
    kid: String,
    cty: String,
    /// A parameter named in `crit` that is not one of those above.
    critical_unknown: bool,
}

fn parse_header(args: &Args<'_>, h: &Map<String, Json>) -> Result<Header, CallError> {
    let mut out = Header::default();
    let mut crit: Vec<&str> = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    for (k, v) in h {
        let text = || {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| args.error(format!("{k}: must be a string")))
        };
        match k.as_str() {
            "alg" => out.alg = text()?,
            "kid" => out.kid = text()?,
            "cty" => out.cty = text()?,
            "typ" => {
                text()?;
            }
            "crit" => {
                let Some(items) = v.as_array() else {
                    return Err(args.error("crit: must be a list"));
                };
                for i in items {
                    crit.push(
                        i.as_str()
                            .ok_or_else(|| args.error("crit: must be a list of strings"))?,
                    );
                }
                if crit.is_empty() {
                    return Err(args.error("crit: must be a nonempty list"));
                }
            }
            other => unknown.push(other),
        }
    }
    // RFC 7515 4.1.11: a critical parameter this verifier does not know invalidates the
    // token (OPA knows `alg`, `kid`, `typ`, `cty` and `crit`).
    out.critical_unknown = unknown.iter().any(|u| crit.contains(u));
    Ok(out)
}

/// Whether any candidate verifies: the one whose `kid` matches alone, else each
/// (a JWK's own `alg`, where it has one, must be `alg`).
fn verified(
    keys: &[Candidate],
    kid: &str,
    alg: Alg,
    msg: &[u8],
    sig: &[u8],
    check_key_alg: bool,
) -> bool {
    if !kid.is_empty()
        && let Some(k) = keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    {
        return alg.check(&k.key, msg, sig);
    }
    keys.iter().any(|k| {
        (!check_key_alg || k.alg.as_deref().is_none_or(|a| a == alg.name()))
            && alg.check(&k.key, msg, sig)
    })
}

fn verify(args: &Args<'_>, alg: Alg) -> CallResult {
    let token = Token::split(args, args.string(0)?)?;
    let key = args.string(1)?;
    let msg = token.signing_input();
    if alg.is_hmac() {
        // OPA's HMAC check reads neither the header nor a key format: the string is
        // the secret.
        let sig = token.signature_bytes(args)?;
        let secret = VerificationKey::Hmac(key.as_bytes().to_vec());
        return Ok(Value::Bool(alg.check(&secret, msg.as_bytes(), &sig)));
    }
    let keys = keys_of(args, key)?;
    let sig = token.signature_bytes(args)?;
    let header = parse_header(args, &token.decode_header(args)?)?;
    Ok(Value::Bool(verified(
        &keys,
        &header.kid,
        alg,
        msg.as_bytes(),
        &sig,
        false,
    )))
}

/// decode_verify's constraints.
struct Constraints {
    keys: Option<Vec<Candidate>>,
    secret: Option<String>,
    alg: Option<String>,
    iss: Option<String>,
    aud: Option<String>,
    /// Nanoseconds since the epoch.
    time_ns: f64,
}

fn constraints(args: &Args<'_>) -> Result<Constraints, CallError> {
    let Value::Object(o) = args.get(1)? else {
        return Err(args.type_error(1, "object"));
    };
    let mut c = Constraints {
        keys: None,
        secret: None,
        alg: None,
        iss: None,
        aud: None,
        time_ns: f64::NAN,
    };
    for (k, v) in o.iter() {
        let Value::String(name) = k else {
            return Err(args.error(format!("token constraint names must be strings: {k}")));
        };
        let text = || match v {
            Value::String(s) => Ok(s.to_string()),
            _ => Err(args.error(format!("token constraint {name} must be a string"))),
        };
        match name.as_ref() {
            "cert" => c.keys = Some(keys_of(args, &text()?)?),
            "secret" => c.secret = Some(text()?),
            "alg" => c.alg = Some(text()?),
            "iss" => c.iss = Some(text()?),
            "aud" => c.aud = Some(text()?),
            "time" => match v {
                // Nanoseconds exceed f64's exact integers: read as an integer first.
                Value::Number(n) => {
                    c.time_ns = n
                        .as_i64()
                        .map(|i| i as f64)
                        .or_else(|| n.as_f64())
                        .unwrap_or(f64::NAN);
                }
                _ => return Err(args.error("token time constraint must be a number")),
            },
            other => {
                return Err(args.error(format!("unknown token validation constraint: {other}")));
            }
        }
    }
    match (
        c.keys.is_some(),
        c.secret.as_deref().is_some_and(|s| !s.is_empty()),
    ) {
        (true, true) => return Err(args.error("duplicate key constraints")),
        (false, false) => return Err(args.error("no key constraint")),
        _ => {}
    }
    if c.time_ns.is_nan() {
        // OPA reads the clock once per query; a call reads it once.
        c.time_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_nanos() as f64);
    }
    Ok(c)
}

fn unverified() -> Value {
    Value::from(vec![
        Value::Bool(false),
        Value::new_object(),
        Value::new_object(),
    ])
}

fn decode_verify(args: &Args<'_>) -> CallResult {
    let c = constraints(args)?;
    let mut encoded = args.string(0)?.to_string();
    let (header, payload) = loop {
        let token = Token::split(args, &encoded)?;
        let header_json = token.decode_header(args)?;
        let header = parse_header(args, &header_json)?;
        if header.alg.is_empty() || header.critical_unknown {
            return Ok(unverified());
        }
        if c.alg.as_deref().is_some_and(|a| a != header.alg) {
            return Ok(unverified());
        }
        let sig = token.signature_bytes(args)?;
        // An algorithm OPA does not know (`none` included) does not verify.
        let Some(alg) = Alg::from_name(&header.alg) else {
            return Ok(unverified());
        };
        let msg = token.signing_input();
        let ok = match (&c.keys, &c.secret) {
            (Some(keys), _) => verified(keys, &header.kid, alg, msg.as_bytes(), &sig, true),
            // A secret with an RSA or ECDSA header does not verify.
            (None, Some(secret)) => {
                let key = VerificationKey::Hmac(secret.as_bytes().to_vec());
                alg.check(&key, msg.as_bytes(), &sig)
            }
            (None, None) => false,
        };
        if !ok {
            return Ok(unverified());
        }
        let payload = token.payload_bytes(args)?;
        if header.cty.eq_ignore_ascii_case("JWT") {
            encoded = String::from_utf8_lossy(&payload).into_owned();
            continue;
        }
        let payload = json_object(&payload).map_err(|e| args.error(e))?;
        break (header_json, payload);
    };
    // OPA checks the issuer and audience before the times.
    if let Some(iss) = &c.iss
        && payload.get("iss").and_then(Json::as_str) != Some(iss.as_str())
    {
        return Ok(unverified());
    }
    let audience_ok = match payload.get("aud") {
        None => c.aud.is_none(),
        Some(Json::String(a)) => c.aud.as_deref() == Some(a.as_str()),
        Some(Json::Array(items)) => items
            .iter()
            .any(|a| a.as_str().is_some_and(|a| c.aud.as_deref() == Some(a))),
        Some(_) => false,
    };
    if !audience_ok {
        return Ok(unverified());
    }
    let now_s = c.time_ns / 1e9;
    if let Some(exp) = payload.get("exp") {
        let Some(exp) = exp.as_f64() else {
            return Err(args.error("exp value must be a number"));
        };
        if now_s >= exp {
            return Ok(unverified());
        }
    }
    if let Some(nbf) = payload.get("nbf") {
        let Some(nbf) = nbf.as_f64() else {
            return Err(args.error("nbf value must be a number"));
        };
        if now_s < nbf {
            return Ok(unverified());
        }
    }
    Ok(Value::from(vec![
        Value::Bool(true),
        object(header),
        object(payload),
    ]))
}
