//! Build -> sign -> write -> read+verify round trips, and every signature refusal with
//! its exact text.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use lockstep_bundle::keys::{Algorithm, generate_keypair, public_key_pem};
use lockstep_bundle::signing::signatures_json;
use lockstep_bundle::{
    BuildOptions, Bundle, BundleError, KeyConfig, ReadOptions, SigningConfig, VerificationConfig,
    build_bundle, read_tar_gz, sign_bundle, write_tar_gz,
};
use serde_json::json;

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A small source tree: a policy, nested data, YAML data and an unrelated JSON file.
fn source_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "authz/policy.rego",
        "package authz\n\nallow if input.user == \"admin\"\n",
    );
    write(
        dir.path(),
        "authz/roles/data.json",
        r#"{"admin": ["alice"], "n": 1.50}"#,
    );
    write(dir.path(), "authz/limits/data.yaml", "max: 3\nname: x\n");
    write(
        dir.path(),
        "authz/notes.json",
        r#"{"ignored": "but signed"}"#,
    );
    write(
        dir.path(),
        ".manifest",
        r#"{"revision": "r1", "roots": ["authz"]}"#,
    );
    dir
}

fn rsa_private() -> String {
    read_text("12-signing-key-parsing/keys/rsa2048-pkcs8-private.pem")
}

/// (signing key, verification key) for an algorithm; RSA keys come from the fixtures so
/// debug-mode tests do not spend seconds generating primes.
fn key_pair(alg: Algorithm) -> (String, String) {
    match alg.name().get(..2).unwrap() {
        "RS" | "PS" => {
            let private = rsa_private();
            let public = public_key_pem(&private).unwrap();
            (private, public)
        }
        _ => generate_keypair(alg).unwrap(),
    }
}

fn build(dir: &Path) -> Bundle {
    build_bundle(&[dir], &BuildOptions::default()).unwrap()
}

fn signing(key: &str, alg: Algorithm) -> SigningConfig {
    SigningConfig {
        key: key.to_string(),
        alg: alg.name().to_string(),
        key_id: Some("k1".to_string()),
        issued_at: Some(1_700_000_000),
        ..SigningConfig::default()
    }
}

fn verification(key: &str, alg: Algorithm) -> VerificationConfig {
    VerificationConfig {
        keys: BTreeMap::from([(
            "k1".to_string(),
            KeyConfig {
                key: key.to_string(),
                algorithm: alg.name().to_string(),
                scope: None,
            },
        )]),
        ..VerificationConfig::default()
    }
}

fn to_tar_gz(bundle: &Bundle) -> Vec<u8> {
    write_tar_gz(bundle, Vec::new()).unwrap()
}

fn read_verified(bytes: &[u8], cfg: VerificationConfig) -> Result<Bundle, BundleError> {
    read_tar_gz(
        bytes,
        &ReadOptions {
            verification: Some(cfg),
            ..ReadOptions::default()
        },
    )
}

/// A signed archive plus the matching verification config.
fn signed_archive(alg: Algorithm) -> (Vec<u8>, VerificationConfig) {
    let src = source_tree();
    let mut bundle = build(src.path());
    let (private, public) = key_pair(alg);
    sign_bundle(&mut bundle, &signing(&private, alg)).unwrap();
    (to_tar_gz(&bundle), verification(&public, alg))
}

fn round_trip(alg: Algorithm) {
    let (archive, cfg) = signed_archive(alg);
    let bundle = read_verified(&archive, cfg).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        r#"{"authz": {"roles": {"admin": ["alice"], "n": 1.50}, "limits": {"max": 3, "name": "x"}}}"#,
    )
    .unwrap();
    assert_eq!(bundle.data, expected);
    // Number literal text survives.
    assert_eq!(bundle.data["authz"]["roles"]["n"].to_string(), "1.50");
    assert_eq!(bundle.modules.len(), 1);
    assert_eq!(bundle.modules[0].path, "authz/policy.rego");
    assert_eq!(bundle.modules[0].rego_version, 1);
    assert_eq!(bundle.manifest.revision, "r1");
    let signer = bundle.verified_signature.unwrap();
    assert_eq!(signer.key_id, "k1");
    assert_eq!(signer.issued_at, Some(1_700_000_000));
    assert_eq!(signer.issuer.as_deref(), Some("lockstep"));
    let mut names: Vec<_> = signer.files.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ".manifest",
            "authz/limits/data.yaml",
            "authz/notes.json",
            "authz/policy.rego",
            "authz/roles/data.json"
        ]
    );
}

#[test]
fn round_trip_es256() {
    round_trip(Algorithm::ES256);
}
#[test]
fn round_trip_es384() {
    round_trip(Algorithm::ES384);
}
#[test]
fn round_trip_es512() {
    round_trip(Algorithm::ES512);
}
#[test]
fn round_trip_rs256() {
    round_trip(Algorithm::RS256);
}
#[test]
fn round_trip_ps256() {
    round_trip(Algorithm::PS256);
}
#[test]
fn round_trip_hs256() {
    round_trip(Algorithm::HS256);
}
#[test]
fn round_trip_rs512_ps384_hs512() {
    round_trip(Algorithm::RS512);
    round_trip(Algorithm::PS384);
    round_trip(Algorithm::HS512);
}

#[test]
fn writer_is_deterministic_and_opa_shaped() {
    let src = source_tree();
    let a = to_tar_gz(&build(src.path()));
    let b = to_tar_gz(&build(src.path()));
    assert_eq!(a, b);
    // gzip header: magic, deflate, no flags, mtime 0, OS 255.
    assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]);
    assert_eq!(&a[4..8], &[0, 0, 0, 0]);
    assert_eq!(a[9], 255);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(a.as_slice()));
    let mut names = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.username().unwrap(), Some(""));
        names.push(String::from_utf8(e.path_bytes().to_vec()).unwrap());
    }
    assert_eq!(
        names,
        vec![
            "/authz/limits/data.yaml",
            "/authz/notes.json",
            "/authz/policy.rego",
            "/authz/roles/data.json",
            "/.manifest"
        ]
    );
}

#[test]
fn signed_layout_ends_with_signatures_then_manifest() {
    let (archive, _) = signed_archive(Algorithm::HS256);
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(archive.as_slice()));
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
        .collect();
    assert_eq!(
        names[names.len() - 2..],
        ["/.signatures.json".to_string(), "/.manifest".to_string()]
    );
}

#[test]
fn long_names_survive_writing() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("{}/{}/data.json", "d".repeat(120), "e".repeat(90));
    write(dir.path(), &long, "1");
    let bundle = build(dir.path());
    let back = read_tar_gz(to_tar_gz(&bundle).as_slice(), &ReadOptions::default()).unwrap();
    assert_eq!(back.file(&long).unwrap().bytes, b"1");
    let very_long = format!("{}/data.json", vec!["f".repeat(60); 5].join("/"));
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &very_long, "2");
    let back = read_tar_gz(
        to_tar_gz(&build(dir.path())).as_slice(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(back.file(&very_long).unwrap().bytes, b"2");
}

#[test]
fn build_sets_revision_roots_and_rego_version() {
    let src = source_tree();
    let opts = BuildOptions {
        revision: Some("r2".into()),
        ..BuildOptions::default()
    };
    let bundle = build_bundle(&[src.path()], &opts).unwrap();
    assert_eq!(bundle.manifest.revision, "r2");
    assert_eq!(bundle.manifest.roots, Some(vec!["authz".to_string()]));
    assert_eq!(bundle.manifest.rego_version, Some(1));
    let manifest: serde_json::Value =
        serde_json::from_slice(&bundle.file(".manifest").unwrap().bytes).unwrap();
    assert_eq!(
        manifest,
        json!({"revision": "r2", "roots": ["authz"], "rego_version": 1})
    );
    // --ignore leaves files out.
    let opts = BuildOptions {
        ignore: vec!["*.json".into()],
        ..BuildOptions::default()
    };
    let bundle = build_bundle(&[src.path()], &opts).unwrap();
    assert!(bundle.file("authz/notes.json").is_none());
    assert!(bundle.file("authz/roles/data.json").is_none());
}

#[test]
fn verified_directory_input_builds_and_resigns() {
    // Sign a directory in place (like `opa sign`), build from it with verification on.
    let src = source_tree();
    let (private, public) = key_pair(Algorithm::ES256);
    let unsigned = lockstep_bundle::read_dir(src.path(), &ReadOptions::default()).unwrap();
    let token =
        lockstep_bundle::sign_files(&unsigned.files, &signing(&private, Algorithm::ES256)).unwrap();
    std::fs::write(
        src.path().join(".signatures.json"),
        signatures_json(&token, None),
    )
    .unwrap();
    let cfg = verification(&public, Algorithm::ES256);
    let verified = lockstep_bundle::read_dir(
        src.path(),
        &ReadOptions {
            verification: Some(cfg.clone()),
            ..ReadOptions::default()
        },
    )
    .unwrap();
    assert!(verified.verified_signature.is_some());
    let opts = BuildOptions {
        verification: Some(cfg.clone()),
        ..BuildOptions::default()
    };
    assert!(build_bundle(&[src.path()], &opts).is_ok());
    // Tamper with the directory: the build refuses it.
    write(src.path(), "authz/notes.json", r#"{"ignored": "changed"}"#);
    let err = build_bundle(&[src.path()], &opts).unwrap_err();
    assert!(
        matches!(err, BundleError::DigestMismatch { ref path, .. } if path == "authz/notes.json"),
        "{err}"
    );
}

// ---- refusals ------------------------------------------------------------------

/// Rewrites one file inside an archive, keeping the signatures file.
fn replace_file(
    archive: &[u8],
    path: &str,
    content: Option<&[u8]>,
    extra: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut entries = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        if name.trim_start_matches('/') == path {
            match content {
                Some(c) => entries.push(file(&name, c)),
                None => continue,
            }
        } else {
            entries.push(file(&name, &bytes));
        }
    }
    if let Some((name, c)) = extra {
        entries.push(file(name, c));
    }
    tar_gz(&entries)
}

#[test]
fn tampered_file_is_refused() {
    let (archive, cfg) = signed_archive(Algorithm::ES256);
    let tampered = replace_file(
        &archive,
        "authz/policy.rego",
        Some(b"package authz\nallow := true\n"),
        None,
    );
    let err = read_verified(&tampered, cfg).unwrap_err().to_string();
    assert!(
        err.starts_with("authz/policy.rego: digest mismatch (want: "),
        "{err}"
    );
}

#[test]
fn reformatted_data_json_still_verifies() {
    // Structured files are hashed canonically: whitespace and key order do not matter.
    let (archive, cfg) = signed_archive(Algorithm::HS256);
    let reformatted = replace_file(
        &archive,
        "authz/roles/data.json",
        Some(b"{\n  \"n\": 1.50,\n  \"admin\": [\"alice\"]\n}"),
        None,
    );
    read_verified(&reformatted, cfg.clone()).unwrap();
    // But a changed number literal does not (1.5 != 1.50 as text, as in OPA).
    let changed = replace_file(
        &archive,
        "authz/roles/data.json",
        Some(br#"{"admin": ["alice"], "n": 1.5}"#),
        None,
    );
    assert!(matches!(
        read_verified(&changed, cfg).unwrap_err(),
        BundleError::DigestMismatch { .. }
    ));
}

#[test]
fn missing_file_is_refused() {
    let (archive, cfg) = signed_archive(Algorithm::HS256);
    let missing = replace_file(&archive, "authz/notes.json", None, None);
    assert_eq!(
        read_verified(&missing, cfg).unwrap_err().to_string(),
        "file(s) [authz/notes.json] specified in bundle signatures but not found in the target bundle"
    );
}

#[test]
fn extra_unsigned_file_is_refused_unless_excluded() {
    let (archive, cfg) = signed_archive(Algorithm::HS256);
    let extra = replace_file(
        &archive,
        "",
        None,
        Some(("/authz/extra.rego", b"package authz.extra\n")),
    );
    assert_eq!(
        read_verified(&extra, cfg.clone()).unwrap_err().to_string(),
        "file authz/extra.rego not included in bundle signature"
    );
    let mut excluding = cfg;
    excluding.exclude_files = vec!["authz/extra.*".into()];
    let bundle = read_verified(&extra, excluding).unwrap();
    assert_eq!(bundle.modules.len(), 2);
}

#[test]
fn wrong_key_is_refused() {
    let (archive, _) = signed_archive(Algorithm::ES256);
    let (_, other_public) = generate_keypair(Algorithm::ES256).unwrap();
    assert_eq!(
        read_verified(&archive, verification(&other_public, Algorithm::ES256))
            .unwrap_err()
            .to_string(),
        "failed to verify JWT signature: crypto/ecdsa: verification error"
    );
    let (archive, _) = signed_archive(Algorithm::HS256);
    assert_eq!(
        read_verified(&archive, verification("not-the-secret", Algorithm::HS256))
            .unwrap_err()
            .to_string(),
        "failed to verify JWT signature: invalid HMAC signature"
    );
}

#[test]
fn unknown_key_id_is_refused() {
    let (archive, mut cfg) = signed_archive(Algorithm::HS256);
    let key = cfg.keys.remove("k1").unwrap();
    cfg.keys.insert("other".into(), key);
    assert_eq!(
        read_verified(&archive, cfg.clone())
            .unwrap_err()
            .to_string(),
        "verification key corresponding to ID k1 not found"
    );
    // The configured key id wins over the token's kid.
    cfg.key_id = Some("other".into());
    read_verified(&archive, cfg).unwrap();
}

#[test]
fn wrong_scope_is_refused() {
    let src = source_tree();
    let mut bundle = build(src.path());
    let (private, public) = key_pair(Algorithm::ES256);
    sign_bundle(
        &mut bundle,
        &SigningConfig {
            scope: Some("write".into()),
            ..signing(&private, Algorithm::ES256)
        },
    )
    .unwrap();
    let archive = to_tar_gz(&bundle);
    let mut cfg = verification(&public, Algorithm::ES256);
    // Token has a scope, config none: mismatch ("" included in the exact comparison).
    assert_eq!(
        read_verified(&archive, cfg.clone())
            .unwrap_err()
            .to_string(),
        "scope mismatch"
    );
    cfg.scope = Some("read".into());
    assert_eq!(
        read_verified(&archive, cfg.clone())
            .unwrap_err()
            .to_string(),
        "scope mismatch"
    );
    cfg.scope = Some("write".into());
    assert_eq!(
        read_verified(&archive, cfg.clone())
            .unwrap()
            .verified_signature
            .unwrap()
            .scope,
        "write"
    );
    // The key's own scope applies when the bundle config has none.
    cfg.scope = None;
    cfg.keys.get_mut("k1").unwrap().scope = Some("write".into());
    read_verified(&archive, cfg).unwrap();
}

/// An archive with the source files and a hand-made `.signatures.json` token.
fn archive_with_token(token: &str) -> Vec<u8> {
    let src = source_tree();
    let mut bundle = build(src.path());
    bundle.signatures = Some(lockstep_bundle::SignaturesConfig {
        signatures: vec![token.to_string()],
        plugin: None,
    });
    to_tar_gz(&bundle)
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn files_payload() -> String {
    let src = source_tree();
    let bundle = build(src.path());
    let files = lockstep_bundle::signing::file_infos(&bundle.files).unwrap();
    json!({"files": files, "keyid": "k1"}).to_string()
}

#[test]
fn alg_none_is_refused() {
    let token = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","kid":"k1"}"#),
        b64(&files_payload())
    );
    let err = read_verified(
        &archive_with_token(&token),
        verification("secret", Algorithm::HS256),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to verify JWT signature: alg \"none\" is not allowed"
    );
}

#[test]
fn hmac_with_rsa_public_key_as_secret_is_refused() {
    // The classic confusion attack: sign HS256 using the verifier's RSA public key PEM as
    // the HMAC secret. The configured algorithm is RS256, so it must fail.
    let public = public_key_pem(&rsa_private()).unwrap();
    let header = b64(r#"{"alg":"HS256","kid":"k1"}"#);
    let payload = b64(&files_payload());
    let input = format!("{header}.{payload}");
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(public.as_bytes()).unwrap();
    hmac::Mac::update(&mut mac, input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(hmac::Mac::finalize(mac).into_bytes());
    let token = format!("{input}.{sig}");
    let err = read_verified(
        &archive_with_token(&token),
        verification(&public, Algorithm::RS256),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to verify JWT signature: token algorithm HS256 does not match the algorithm RS256 configured for the key"
    );
    // The very same token passes only for someone who configured that PEM as an HS256 secret.
    read_verified(
        &archive_with_token(&token),
        verification(&public, Algorithm::HS256),
    )
    .unwrap();
}

#[test]
fn token_alg_different_from_configured_is_refused() {
    let (archive, _) = signed_archive(Algorithm::RS256);
    // HMAC configured, RS256 token.
    assert_eq!(
        read_verified(&archive, verification("secret", Algorithm::HS256)).unwrap_err(),
        BundleError::AlgMismatch {
            header: "RS256".into(),
            configured: "HS256".into()
        }
    );
    // Same RSA key, configured as PS256.
    let public = public_key_pem(&rsa_private()).unwrap();
    assert_eq!(
        read_verified(&archive, verification(&public, Algorithm::PS256)).unwrap_err(),
        BundleError::AlgMismatch {
            header: "RS256".into(),
            configured: "PS256".into()
        }
    );
}

#[test]
fn malformed_tokens_are_refused() {
    let cfg = verification("secret", Algorithm::HS256);
    assert_eq!(
        read_verified(&archive_with_token("abc.def"), cfg.clone())
            .unwrap_err()
            .to_string(),
        "failed to parse JWS: invalid compact serialization: expected 3 segments, found 2"
    );
    let err = read_verified(&archive_with_token("***.e30.x"), cfg.clone()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to base64 decode JWT headers: "),
        "{err}"
    );
    let err = read_verified(
        &archive_with_token(&format!("{}.e30.x", b64("[1]"))),
        cfg.clone(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("failed to parse JWT headers: "),
        "{err}"
    );
    let err = read_verified(
        &archive_with_token(&format!("{}.{}.x", b64(r#"{"alg":"HS256"}"#), b64("nope"))),
        cfg,
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("failed to parse JWT payload: "),
        "{err}"
    );
}

#[test]
fn key_id_empty_is_refused() {
    let src = source_tree();
    let mut bundle = build(src.path());
    sign_bundle(
        &mut bundle,
        &SigningConfig {
            key_id: None,
            ..signing("secret", Algorithm::HS256)
        },
    )
    .unwrap();
    assert_eq!(
        read_verified(
            &to_tar_gz(&bundle),
            verification("secret", Algorithm::HS256)
        )
        .unwrap_err()
        .to_string(),
        "verification key ID is empty"
    );
}

#[test]
fn signature_presence_matrix() {
    let src = source_tree();
    let unsigned = to_tar_gz(&build(src.path()));
    let mut cfg = verification("secret", Algorithm::HS256);
    // Unsigned + keys but no key id: accepted (OPA #8531 behaviour).
    read_verified(&unsigned, cfg.clone()).unwrap();
    cfg.key_id = Some("k1".into());
    assert_eq!(
        read_verified(&unsigned, cfg).unwrap_err().to_string(),
        "bundle missing .signatures.json file"
    );
    let (signed, _) = signed_archive(Algorithm::HS256);
    assert_eq!(
        read_tar_gz(signed.as_slice(), &ReadOptions::default())
            .unwrap_err()
            .to_string(),
        "verification key not provided"
    );
    // --skip-verify reads it anyway.
    read_tar_gz(
        signed.as_slice(),
        &ReadOptions {
            skip_verify: true,
            ..ReadOptions::default()
        },
    )
    .unwrap();
}

#[test]
fn jwt_count_is_exactly_one() {
    let src = source_tree();
    let mut bundle = build(src.path());
    let cfg = verification("secret", Algorithm::HS256);
    bundle.signatures = Some(lockstep_bundle::SignaturesConfig {
        signatures: vec![],
        plugin: None,
    });
    assert_eq!(
        read_verified(&to_tar_gz(&bundle), cfg.clone())
            .unwrap_err()
            .to_string(),
        ".signatures.json: missing JWT (expected exactly one)"
    );
    bundle.signatures = Some(lockstep_bundle::SignaturesConfig {
        signatures: vec!["a.b.c".into(), "d.e.f".into()],
        plugin: None,
    });
    assert_eq!(
        read_verified(&to_tar_gz(&bundle), cfg)
            .unwrap_err()
            .to_string(),
        ".signatures.json: multiple JWTs not supported (expected exactly one)"
    );
}

#[test]
fn verify_bundle_after_skip_verify_read() {
    let (archive, cfg) = signed_archive(Algorithm::ES384);
    let bundle = read_tar_gz(
        archive.as_slice(),
        &ReadOptions {
            skip_verify: true,
            ..ReadOptions::default()
        },
    )
    .unwrap();
    let decoded = lockstep_bundle::verify_bundle(&bundle, Some(&cfg))
        .unwrap()
        .unwrap();
    assert_eq!(decoded.key_id, "k1");
    assert_eq!(
        lockstep_bundle::verify_bundle(&bundle, None).unwrap_err(),
        BundleError::VerificationKeyNotProvided
    );
}
