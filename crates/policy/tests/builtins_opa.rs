//! The OPA builtins lockstep provides (`src/builtins`: `crypto.*` digests and MACs,
//! `io.jwt.*`, `net.cidr_*`) against OPA's own evaluator, on generated arguments:
//! tokens of every algorithm signed with keys of each kind (PEM public keys, a
//! certificate, a JWK set with and without a matching `kid`, HMAC secrets), tampered,
//! truncated and malformed tokens, expired and not-yet-valid ones, audience and
//! issuer mismatches, bad constraints, and CIDRs valid and not. The bridge evaluates
//! with strict builtin errors, so lockstep does too here: each case must give OPA's
//! value, or an error where OPA gives one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::opa;
use hmac::{Hmac, Mac};
use lockstep_bundle::Module;
use lockstep_bundle::jws;
use lockstep_bundle::keys::{Algorithm, Family, parse_signing_key, public_key_pem};
use lockstep_policy::{CompileOptions, PolicySet};
use serde_json::{Value, json};

/// One rule per builtin, chosen by `input.f`; `input.a` holds the arguments.
const FUNCTIONS: &[(&str, usize)] = &[
    ("crypto.md5", 1),
    ("crypto.sha1", 1),
    ("crypto.sha256", 1),
    ("crypto.hmac.md5", 2),
    ("crypto.hmac.sha1", 2),
    ("crypto.hmac.sha256", 2),
    ("crypto.hmac.sha512", 2),
    ("crypto.hmac.equal", 2),
    ("io.jwt.decode", 1),
    ("io.jwt.decode_verify", 2),
    ("io.jwt.verify_rs256", 2),
    ("io.jwt.verify_rs384", 2),
    ("io.jwt.verify_rs512", 2),
    ("io.jwt.verify_ps256", 2),
    ("io.jwt.verify_ps384", 2),
    ("io.jwt.verify_ps512", 2),
    ("io.jwt.verify_es256", 2),
    ("io.jwt.verify_es384", 2),
    ("io.jwt.verify_es512", 2),
    ("io.jwt.verify_hs256", 2),
    ("io.jwt.verify_hs384", 2),
    ("io.jwt.verify_hs512", 2),
    ("io.jwt.verify_eddsa", 2),
    ("net.cidr_intersects", 2),
    ("net.cidr_merge", 1),
];

fn module() -> String {
    let mut m = String::from("package t\n\n");
    for (f, n) in FUNCTIONS {
        let args: Vec<String> = (0..*n).map(|i| format!("input.a[{i}]")).collect();
        m.push_str(&format!(
            "result := x if {{\n  input.f == \"{f}\"\n  x := {f}({})\n}}\n\n",
            args.join(", ")
        ));
    }
    m
}

fn key_file(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/jwt")
            .join(name),
    )
    .unwrap()
}

/// A case: the builtin and its arguments.
fn case(f: &str, args: Vec<Value>) -> Value {
    json!({"f": f, "a": args})
}

fn hs_token(header: &Value, payload: &str, secret: &str) -> String {
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(payload));
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// Flips one character of the payload segment.
fn tampered(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let p = &mut parts[1];
    let last = p.pop().unwrap();
    p.push(if last == 'A' { 'B' } else { 'A' });
    parts.join(".")
}

const T0: i64 = 1_700_000_000;
const SECRET: &str = "s3cret";

fn jwt_cases() -> Vec<Value> {
    let rsa = key_file("rsa.pem");
    let rsa_other = key_file("rsa-other.pem");
    let cert = key_file("rsa-cert.pem");
    let jwks = key_file("jwks.json");
    let ec = [
        (Algorithm::ES256, key_file("ec-P-256.pem"), "p256"),
        (Algorithm::ES384, key_file("ec-P-384.pem"), "p384"),
        (Algorithm::ES512, key_file("ec-P-521.pem"), "p521"),
    ];
    let claims = json!({"sub": "alice", "iss": "lockstep", "aud": "api", "exp": T0 + 3600, "nbf": T0 - 60, "roles": ["analyst"]});
    let claims = claims.to_string();
    let mut signers: Vec<(Algorithm, String, Option<&str>, String)> = Vec::new(); // alg, private pem/secret, kid, public
    for alg in Algorithm::ALL
        .into_iter()
        .filter(|a| a.family() == Family::Rsa)
    {
        signers.push((alg, rsa.clone(), Some("rsa"), public_key_pem(&rsa).unwrap()));
    }
    for (alg, pem, kid) in &ec {
        signers.push((*alg, pem.clone(), Some(kid), public_key_pem(pem).unwrap()));
    }
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        signers.push((alg, SECRET.to_string(), None, SECRET.to_string()));
    }
    let rsa_other_public = public_key_pem(&rsa_other).unwrap();
    let mut out = Vec::new();
    for (alg, private, kid, public) in &signers {
        let key = parse_signing_key(private.as_bytes(), *alg).unwrap();
        let token = jws::sign(claims.as_bytes(), &key, *alg, *kid).unwrap();
        let no_kid = jws::sign(claims.as_bytes(), &key, *alg, None).unwrap();
        let verify = format!("io.jwt.verify_{}", alg.name().to_ascii_lowercase());
        let hmac = alg.name().starts_with("HS");
        let mut keys = vec![json!(public)];
        if !hmac {
            keys.push(json!(jwks));
            keys.push(json!(rsa_other_public));
            keys.push(json!("not a key"));
        } else {
            keys.push(json!("wrong"));
            keys.push(json!(""));
        }
        if alg.name().starts_with("RS") {
            keys.push(json!(cert));
        }
        for k in &keys {
            for t in [&token, &no_kid, &tampered(&token)] {
                out.push(case(&verify, vec![json!(t), k.clone()]));
            }
        }
        out.push(case("io.jwt.decode", vec![json!(token)]));
        out.push(case("io.jwt.decode", vec![json!(tampered(&token))]));
        // decode_verify: every constraint, met and not.
        let key_constraint = if hmac {
            json!({"secret": SECRET})
        } else {
            json!({"cert": public})
        };
        let with = |extra: Value| {
            let mut c = key_constraint.clone();
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        for c in [
            with(json!({"time": (T0 * 1_000_000_000)})),
            with(json!({"time": ((T0 + 7200) * 1_000_000_000)})),
            with(json!({"time": ((T0 - 3600) * 1_000_000_000)})),
            with(json!({"time": (T0 * 1_000_000_000), "aud": "api"})),
            with(json!({"time": (T0 * 1_000_000_000), "aud": "other"})),
            with(json!({"time": (T0 * 1_000_000_000), "aud": "api", "iss": "lockstep"})),
            with(json!({"time": (T0 * 1_000_000_000), "aud": "api", "iss": "evil"})),
            with(json!({"time": (T0 * 1_000_000_000), "aud": "api", "alg": alg.name()})),
            with(json!({"time": (T0 * 1_000_000_000), "aud": "api", "alg": "HS256"})),
            with(json!({"time": (T0 * 1_000_000_000), "aud": "api", "bogus": 1})),
            with(json!({"time": "now", "aud": "api"})),
        ] {
            out.push(case("io.jwt.decode_verify", vec![json!(token), c.clone()]));
            out.push(case(
                "io.jwt.decode_verify",
                vec![json!(tampered(&token)), c],
            ));
        }
        if !hmac {
            out.push(case(
                "io.jwt.decode_verify",
                vec![
                    json!(token),
                    json!({"cert": jwks, "aud": "api", "time": T0 * 1_000_000_000}),
                ],
            ));
            out.push(case(
                "io.jwt.decode_verify",
                vec![
                    json!(token),
                    json!({"secret": SECRET, "aud": "api", "time": T0 * 1_000_000_000}),
                ],
            ));
        }
    }
    // EdDSA: tokens signed by openssl (tests/data/jwt/README.md).
    let ed_tokens: Vec<String> = serde_json::from_str(&key_file("eddsa-tokens.json")).unwrap();
    let ed_public = key_file("ed25519-public.pem");
    for t in ed_tokens.iter().cloned().chain([tampered(&ed_tokens[0])]) {
        for k in [&ed_public, &jwks, &rsa_other_public, &cert] {
            out.push(case("io.jwt.verify_eddsa", vec![json!(t), json!(k)]));
        }
        out.push(case("io.jwt.verify_rs256", vec![json!(t), json!(jwks)]));
        for c in [
            json!({"cert": ed_public, "aud": "api", "time": T0 * 1_000_000_000}),
            json!({"cert": jwks, "aud": "api", "time": T0 * 1_000_000_000}),
            json!({"cert": jwks, "aud": "api", "alg": "EdDSA", "time": T0 * 1_000_000_000}),
            json!({"secret": SECRET, "aud": "api", "time": T0 * 1_000_000_000}),
        ] {
            out.push(case("io.jwt.decode_verify", vec![json!(t), c]));
        }
    }
    // Constraint errors.
    let hs = hs_token(&json!({"alg": "HS256", "typ": "JWT"}), &claims, SECRET);
    for c in [
        json!({}),
        json!({"secret": SECRET, "cert": public_key_pem(&rsa).unwrap()}),
        json!({"secret": ""}),
        json!({"secret": 1}),
        json!("not an object"),
    ] {
        out.push(case("io.jwt.decode_verify", vec![json!(hs), c]));
    }
    // Tokens of odd shapes, decoded and verified with HS256.
    let odd = [
        hs.clone(),
        hs_token(&json!({"typ": "JWT"}), &claims, SECRET),
        hs_token(&json!({"alg": "HS256", "enc": "A128GCM"}), &claims, SECRET),
        hs_token(&json!({"alg": "HS256", "kid": 7}), &claims, SECRET),
        hs_token(&json!({"alg": "HS256", "crit": ["exp"]}), &claims, SECRET),
        hs_token(
            &json!({"alg": "HS256", "crit": ["junk"], "junk": 1}),
            &claims,
            SECRET,
        ),
        hs_token(&json!({"alg": "HS256", "crit": []}), &claims, SECRET),
        hs_token(&json!({"alg": "HS256", "crit": "exp"}), &claims, SECRET),
        hs_token(&json!({"alg": "none"}), &claims, SECRET),
        hs_token(&json!({"alg": "HS256", "cty": "JWT"}), &hs, SECRET),
        hs_token(&json!({"alg": "HS256"}), "[1,2]", SECRET),
        hs_token(&json!({"alg": "HS256"}), "not json", SECRET),
        hs_token(&json!({"alg": "HS256"}), r#"{"exp":"soon"}"#, SECRET),
        hs_token(&json!({"alg": "HS256"}), r#"{"aud":["x","api"]}"#, SECRET),
        hs_token(&json!({"alg": "HS256"}), r#"{"aud":7}"#, SECRET),
        hs_token(&json!({"alg": "HS256"}), r#"{"a":1,"a":2}"#, SECRET),
        format!("{}=", hs),
        hs.replacen('.', "..", 1),
        hs.split('.').take(2).collect::<Vec<_>>().join("."),
        "abc".to_string(),
        "a.b.c".to_string(),
        "e30.e30.".to_string(),
        "e30=.e30.".to_string(),
        "!!!.e30.e30".to_string(),
    ];
    for t in &odd {
        out.push(case("io.jwt.decode", vec![json!(t)]));
        out.push(case("io.jwt.verify_hs256", vec![json!(t), json!(SECRET)]));
        out.push(case("io.jwt.verify_rs256", vec![json!(t), json!(cert)]));
        out.push(case(
            "io.jwt.decode_verify",
            vec![
                json!(t),
                json!({"secret": SECRET, "time": T0 * 1_000_000_000}),
            ],
        ));
        out.push(case(
            "io.jwt.decode_verify",
            vec![
                json!(t),
                json!({"secret": SECRET, "aud": "api", "time": T0 * 1_000_000_000}),
            ],
        ));
        out.push(case(
            "io.jwt.decode_verify",
            vec![
                json!(t),
                json!({"secret": SECRET, "iss": "lockstep", "time": T0 * 1_000_000_000}),
            ],
        ));
    }
    // Operand types.
    out.push(case("io.jwt.decode", vec![json!(1)]));
    out.push(case("io.jwt.verify_rs256", vec![json!(hs), json!(1)]));
    out.push(case("io.jwt.verify_hs256", vec![json!(hs), json!(null)]));
    out
}

fn crypto_cases() -> Vec<Value> {
    let mut out = Vec::new();
    for s in ["", "abc", "naïve ✓", "a\u{0}b"] {
        for f in ["crypto.md5", "crypto.sha1", "crypto.sha256"] {
            out.push(case(f, vec![json!(s)]));
        }
        for f in [
            "crypto.hmac.md5",
            "crypto.hmac.sha1",
            "crypto.hmac.sha256",
            "crypto.hmac.sha512",
        ] {
            out.push(case(f, vec![json!(s), json!("key")]));
            out.push(case(f, vec![json!("msg"), json!(s)]));
        }
    }
    for (a, b) in [("abc", "abc"), ("abc", "abd"), ("", ""), ("abc", "ab")] {
        out.push(case("crypto.hmac.equal", vec![json!(a), json!(b)]));
    }
    out.push(case("crypto.sha256", vec![json!(1)]));
    out.push(case("crypto.hmac.sha256", vec![json!("x"), json!(["k"])]));
    out.push(case("crypto.hmac.equal", vec![json!("x"), json!(null)]));
    out
}

fn cidr_cases() -> Vec<Value> {
    let mut out = Vec::new();
    let nets = [
        "10.0.0.0/8",
        "10.1.0.0/16",
        "192.168.1.0/24",
        "192.168.1.77/32",
        "0.0.0.0/0",
        "2001:db8::/32",
        "2001:db8:1::/48",
        "::/0",
        "::ffff:10.0.0.0/104",
        "10.0.0.1",
        "10.0.0.0/33",
        "300.0.0.0/8",
        "",
    ];
    for a in nets {
        for b in nets {
            out.push(case("net.cidr_intersects", vec![json!(a), json!(b)]));
        }
    }
    for list in [
        json!(["192.0.128.0/24", "192.0.129.0/24"]),
        json!([
            "192.0.128.0/24",
            "192.0.130.0/24",
            "192.0.129.0/24",
            "192.0.131.0/24"
        ]),
        json!(["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3"]),
        json!(["10.0.0.1", "10.0.0.0"]),
        json!(["2001:db8::/33", "2001:db8:8000::/33", "::1"]),
        json!(["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"]),
        json!(["1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.3.7"]),
        json!(["::ffff:10.0.0.0/104", "11.0.0.0/8"]),
        json!([]),
        json!(["10.0.0.0/8", 7]),
        json!(["nope"]),
        json!("10.0.0.0/8"),
    ] {
        out.push(case("net.cidr_merge", vec![list]));
    }
    out.push(case(
        "net.cidr_intersects",
        vec![json!(1), json!("10.0.0.0/8")],
    ));
    out
}

/// Cases where lockstep answers otherwise than OPA: (builtin, why). Each is listed
/// in docs/opa-differences.md; if one disappears or a new one appears, this test
/// fails, and the documentation must follow.
const KNOWN: &[(&str, &str)] = &[];

#[test]
fn provided_builtins_decide_like_opa() {
    let module = Module {
        path: "t.rego".into(),
        source: module(),
        rego_version: 1,
    };
    let opts = CompileOptions {
        strict_builtin_errors: true,
        ..CompileOptions::default()
    };
    let policy = PolicySet::compile(std::slice::from_ref(&module), json!({}), &opts).unwrap();
    let mut inputs = jwt_cases();
    inputs.extend(crypto_cases());
    inputs.extend(cidr_cases());
    let theirs = opa::eval(&[module], &json!({}), &["data.t.result"], &inputs);
    let mut differ = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    for (input, theirs) in inputs.iter().zip(&theirs) {
        let ours = match policy.eval_query("data.t.result", Some(input)) {
            Ok(rs) => match rs.into_first_value() {
                Some(v) => json!({"value": v}),
                None => json!({"undefined": true}),
            },
            Err(e) => json!({"error": e.to_string()}),
        };
        let (o, t) = (opa::kind(&ours), opa::kind(&theirs[0]));
        covered.insert(input["f"].as_str().unwrap().to_string());
        if o != t {
            differ.push(format!(
                "{}({}): OPA {t} ({}), lockstep {o} ({})",
                input["f"].as_str().unwrap(),
                input["a"],
                theirs[0],
                ours
            ));
        }
    }
    for (f, _) in FUNCTIONS {
        assert!(covered.contains(*f), "no case for {f}");
    }
    assert!(
        differ.len() == KNOWN.len(),
        "{} of {} cases differ from OPA:\n{}",
        differ.len(),
        inputs.len(),
        differ.join("\n")
    );
    eprintln!("{} cases agree with OPA", inputs.len());
}
