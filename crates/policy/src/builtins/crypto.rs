//! `crypto.md5`, `crypto.sha1`, `crypto.sha256` and `crypto.hmac.*` (OPA's
//! `v1/topdown/crypto.go`): lowercase hex of the digest of the string's bytes;
//! `crypto.hmac.<h>(x, key)` is the HMAC of `x` under `key`; `crypto.hmac.equal`
//! compares two MACs in constant time.

use hmac::{Hmac, Mac};
use regorus::Value;
use sha2::Digest;
use subtle::ConstantTimeEq;

use super::{Args, CallResult};

pub(super) fn call(args: &Args<'_>) -> CallResult {
    match args.name {
        "crypto.md5" => digest::<md5::Md5>(args),
        "crypto.sha1" => digest::<sha1::Sha1>(args),
        "crypto.sha256" => digest::<sha2::Sha256>(args),
        "crypto.hmac.md5" => hmac::<Hmac<md5::Md5>>(args),
        "crypto.hmac.sha1" => hmac::<Hmac<sha1::Sha1>>(args),
        "crypto.hmac.sha256" => hmac::<Hmac<sha2::Sha256>>(args),
        "crypto.hmac.sha512" => hmac::<Hmac<sha2::Sha512>>(args),
        "crypto.hmac.equal" => {
            let (a, b) = (args.string(0)?, args.string(1)?);
            Ok(Value::Bool(bool::from(a.as_bytes().ct_eq(b.as_bytes()))))
        }
        _ => Err(args.error("not provided by lockstep")),
    }
}

fn digest<D: Digest>(args: &Args<'_>) -> CallResult {
    let s = args.string(0)?;
    Ok(Value::from(hex::encode(D::digest(s.as_bytes()))))
}

fn hmac<M: Mac + hmac::digest::KeyInit>(args: &Args<'_>) -> CallResult {
    let (x, key) = (args.string(0)?, args.string(1)?);
    // HMAC takes a key of any length, the empty one included, as Go's does.
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key.as_bytes())
        .map_err(|e| args.error(e.to_string()))?;
    mac.update(x.as_bytes());
    Ok(Value::from(hex::encode(mac.finalize().into_bytes())))
}
