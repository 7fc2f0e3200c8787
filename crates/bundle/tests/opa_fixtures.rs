//! Every OPA fixture case under /work/shared/fixtures/opa, with OPA's verdicts and texts.

mod common;

use std::collections::BTreeMap;

use common::*;
use lockstep_bundle::hash::{HashAlgorithm, hash_file};
use lockstep_bundle::keys::{Algorithm, SigningKey, load_signing_key, parse_verification_key};
use lockstep_bundle::roots::root_paths_overlap;
use lockstep_bundle::signing::signatures_json;
use lockstep_bundle::verify::{FileInfo, check_file, verify_token};
use lockstep_bundle::{
    BundleError, KeyConfig, ReadOptions, VerificationConfig, read_dir, read_tar_gz,
};
use serde_json::{Value, json};

fn opts(verification: VerificationConfig) -> ReadOptions {
    ReadOptions {
        verification: Some(verification),
        ..ReadOptions::default()
    }
}

#[test]
fn case_01_hs256_valid_bundle_tarball() {
    let tgz = tar_gz_from_files_json("01-hs256-valid-bundle/files.json");
    let cfg = verification_from_fixture("01-hs256-valid-bundle/verification.json");
    let bundle = read_tar_gz(tgz.as_slice(), &opts(cfg)).unwrap();
    assert_eq!(
        bundle.data,
        json!({"example1": {"foo": "bar"}, "example2": {"x": true}})
    );
    assert_eq!(bundle.manifest.revision, "quickbrownfaux");
    assert_eq!(bundle.manifest.effective_roots(), vec![String::new()]);
    let signer = bundle.verified_signature.unwrap();
    assert_eq!(signer.key_id, "foo");
    assert_eq!(signer.files.len(), 3);
    // The token on disk is the one inside the archive.
    let token = read_text("01-hs256-valid-bundle/token.jwt");
    assert_eq!(
        bundle.signatures.unwrap().signatures,
        vec![token.trim().to_string()]
    );
}

#[test]
fn case_01_hs256_valid_bundle_directory_and_rewrite() {
    let cfg = verification_from_fixture("01-hs256-valid-bundle/verification.json");
    let bundle = read_dir(fixture("01-hs256-valid-bundle/bundle"), &opts(cfg.clone())).unwrap();
    assert_eq!(
        bundle.data,
        json!({"example1": {"foo": "bar"}, "example2": {"x": true}})
    );
    // Re-writing keeps every signed byte, so the written archive verifies too
    // (OPA's "persisted tarball reloaded from disk" check).
    let mut out = Vec::new();
    lockstep_bundle::write_tar_gz(&bundle, &mut out).unwrap();
    let again = read_tar_gz(out.as_slice(), &opts(cfg)).unwrap();
    assert_eq!(again.data, bundle.data);
}

#[test]
fn case_03_tampered_digest_mismatch() {
    let tgz = tar_gz_from_files_json("03-hs256-tampered-digest-mismatch/files.json");
    let cfg = verification_from_fixture("03-hs256-tampered-digest-mismatch/verification.json");
    let err = read_tar_gz(tgz.as_slice(), &opts(cfg.clone())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a/b/c/data.json: digest mismatch (want: 42cfe6768b57bb5f7503c165c28dd07ac5b813554ebc850f2cc35843e7137b1d, got: a615eeaee21de5179de080de8c3052c8da901138406ba71c38c032845f7d54f4)"
    );
    // The directory form fails the same way (the manifest sorts first and is valid).
    let err = read_dir(
        fixture("03-hs256-tampered-digest-mismatch/bundle"),
        &opts(cfg),
    )
    .unwrap_err();
    assert!(
        matches!(err, BundleError::DigestMismatch { ref path, .. } if path == "a/b/c/data.json"),
        "{err}"
    );
}

#[test]
fn case_04_signed_file_missing() {
    let tgz = tar_gz_from_files_json("04-hs256-signed-file-missing/files.json");
    let cfg = verification_from_fixture("04-hs256-signed-file-missing/verification.json");
    let err = read_tar_gz(tgz.as_slice(), &opts(cfg.clone())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "file(s) [a/b/c/data.json http/policy/policy.rego] specified in bundle signatures but not found in the target bundle"
    );
    let err = read_dir(fixture("04-hs256-signed-file-missing/bundle"), &opts(cfg)).unwrap_err();
    assert!(matches!(err, BundleError::SignedFilesNotFound(_)), "{err}");
}

fn rs256_config(key_file: &str, keyid: &str, scope: &str) -> VerificationConfig {
    let key = read_text(&format!("10-rs256-jwt-verification/keys/{key_file}"));
    VerificationConfig {
        keys: BTreeMap::from([(
            "foo".to_string(),
            KeyConfig {
                key,
                algorithm: "RS256".into(),
                scope: None,
            },
        )]),
        key_id: Some(keyid.to_string()).filter(|s| !s.is_empty()),
        scope: Some(scope.to_string()).filter(|s| !s.is_empty()),
        exclude_files: vec![],
    }
}

#[test]
fn case_10_rs256_jwt_verification() {
    let token = read_text("10-rs256-jwt-verification/tokens/signedTokenRS256.jwt");
    let token = token.trim();
    let ok = verify_token(token, &rs256_config("publicKeyValid.pem", "", "write")).unwrap();
    assert_eq!(ok.key_id, "foo");
    assert_eq!(ok.scope, "write");
    assert_eq!(ok.issued_at, Some(1592251406));
    assert_eq!(ok.issuer.as_deref(), Some("JWTService"));
    verify_token(token, &rs256_config("publicKeyValid.pem", "foo", "write")).unwrap();
    assert_eq!(
        verify_token(token, &rs256_config("publicKeyInvalid.pem", "", ""))
            .unwrap_err()
            .to_string(),
        "failed to verify JWT signature: crypto/rsa: verification error"
    );
    assert_eq!(
        verify_token(token, &rs256_config("publicKeyBad.pem", "foo", ""))
            .unwrap_err()
            .to_string(),
        "failed to parse PEM block containing the key"
    );
    // The private key verifies too (OPA accepts private PEM blocks as verification keys),
    // and a missing scope in config is a mismatch.
    assert_eq!(
        verify_token(
            token,
            &rs256_config("privateKey-for-publicKeyValid.pem", "foo", "")
        )
        .unwrap_err(),
        BundleError::ScopeMismatch
    );
}

#[test]
fn case_11_file_hashes() {
    let rows: Vec<Value> =
        serde_json::from_str(&read_text("11-file-hash-canonicalisation/digests.json")).unwrap();
    assert_eq!(rows.len(), 7);
    for row in rows {
        let name = row["name"].as_str().unwrap();
        let content = row["content"].as_str().unwrap();
        let on_disk = std::fs::read(fixture(&format!(
            "11-file-hash-canonicalisation/files{name}"
        )))
        .unwrap();
        assert_eq!(on_disk, content.as_bytes(), "{name}");
        let alg = HashAlgorithm::from_name(row["algorithm"].as_str().unwrap()).unwrap();
        assert_eq!(
            hex::encode(hash_file(alg, name, content.as_bytes()).unwrap()),
            row["hash"].as_str().unwrap(),
            "{name}"
        );
        // And through the verifier, as OPA's test does.
        let mut expected = BTreeMap::from([(
            name.to_string(),
            FileInfo {
                name: name.into(),
                hash: row["hash"].as_str().unwrap().into(),
                algorithm: row["algorithm"].as_str().unwrap().into(),
            },
        )]);
        check_file(name, content.as_bytes(), &mut expected).unwrap();
        assert!(expected.is_empty());
    }
}

#[test]
fn case_11_negative_cases() {
    let rows: Vec<Value> = serde_json::from_str(&read_text(
        "11-file-hash-canonicalisation/negative-cases.json",
    ))
    .unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let mut expected: BTreeMap<String, FileInfo> =
            serde_json::from_value(row["signature_files"].clone()).unwrap();
        let err = check_file(
            row["path"].as_str().unwrap(),
            row["content"].as_str().unwrap().as_bytes(),
            &mut expected,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            row["expected_error"].as_str().unwrap(),
            "{}",
            row["test"]
        );
    }
}

#[test]
fn case_12_signing_key_parsing() {
    let key_path = |f: &str| {
        fixture(&format!("12-signing-key-parsing/keys/{f}"))
            .display()
            .to_string()
    };
    for (file, alg) in [
        ("rsa4096-pkcs1-private.pem", Algorithm::RS256),
        ("rsa2048-pkcs8-private.pem", Algorithm::RS256),
        ("ec-p256-sec1-private.pem", Algorithm::ES256),
        ("ec-p256-pkcs8-private.pem", Algorithm::ES256),
    ] {
        let key = load_signing_key(&key_path(file), alg).unwrap();
        let expected_rsa = alg == Algorithm::RS256;
        assert_eq!(matches!(key, SigningKey::Rsa(_)), expected_rsa, "{file}");
        assert_eq!(matches!(key, SigningKey::P256(_)), !expected_rsa, "{file}");
    }
    // Inline PEM string, not a path.
    let inline = read_text("12-signing-key-parsing/keys/rsa1024-pkcs1-private-inline.pem");
    assert!(matches!(
        load_signing_key(&inline, Algorithm::RS256).unwrap(),
        SigningKey::Rsa(_)
    ));
    // A path that does not exist is treated as key text, which is not PEM.
    assert_eq!(
        load_signing_key("private.pem", Algorithm::RS256)
            .unwrap_err()
            .to_string(),
        "failed to parse PEM block containing the key"
    );
    // HMAC: the raw string.
    assert!(
        matches!(load_signing_key("mysecret", Algorithm::HS256).unwrap(), SigningKey::Hmac(k) if k == b"mysecret")
    );
    // The single-line public key is accepted and matches the 4096-bit private key.
    let single = read_text("12-signing-key-parsing/keys/rsa4096-public-single-line.txt");
    assert!(!single.trim().contains('\n'));
    let public = parse_verification_key(&single, Algorithm::RS256).unwrap();
    let private =
        load_signing_key(&key_path("rsa4096-pkcs1-private.pem"), Algorithm::RS256).unwrap();
    let token = lockstep_bundle::jws::sign(b"{}", &private, Algorithm::RS256, None).unwrap();
    lockstep_bundle::jws::verify(
        &lockstep_bundle::jws::decode(&token).unwrap(),
        &public,
        Algorithm::RS256,
    )
    .unwrap();
}

#[test]
fn case_13_signatures_json_bytes() {
    let token = read_text("13-signatures-json-writer-format/token.jwt");
    let expected = std::fs::read(fixture(
        "13-signatures-json-writer-format/expected.signatures.json",
    ))
    .unwrap();
    assert_eq!(signatures_json(token.trim(), None), expected);
}

#[test]
fn case_14_roots_validation() {
    let cases: Vec<Value> =
        serde_json::from_str(&read_text("14-roots-validation/cases.json")).unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let note = case["note"].as_str().unwrap();
        let entries: Vec<Entry> = case["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| file(f[0].as_str().unwrap(), f[1].as_str().unwrap().as_bytes()))
            .collect();
        let result = read_tar_gz(tar_gz(&entries).as_slice(), &ReadOptions::default());
        let want = case["err"].as_str().unwrap();
        match result {
            Ok(_) => assert!(
                want.is_empty(),
                "{note}: expected error containing {want:?}"
            ),
            Err(e) => {
                assert!(!want.is_empty(), "{note}: unexpected error {e}");
                assert!(
                    e.to_string().contains(want),
                    "{note}: {e} does not contain {want:?}"
                );
            }
        }
    }
}

#[test]
fn case_14_data_outside_roots_full_text() {
    let entries = [
        file(
            "/.manifest",
            br#"{"revision": "abcd", "roots": ["a", "b", "c/d"]}"#,
        ),
        file("/data.json", br#"{"a": 1}"#),
        file("/c/e/data.json", br#""bad bad bad""#),
    ];
    assert_eq!(
        read_tar_gz(tar_gz(&entries).as_slice(), &ReadOptions::default())
            .unwrap_err()
            .to_string(),
        "manifest roots [a b c/d] do not permit data at path '/c/e' (hint: check bundle directory structure)"
    );
}

#[test]
fn case_14_root_paths_overlap() {
    let cases: Vec<Value> =
        serde_json::from_str(&read_text("14-roots-validation/root-paths-overlap.json")).unwrap();
    assert_eq!(cases.len(), 8);
    for c in cases {
        assert_eq!(
            root_paths_overlap(c["a"].as_str().unwrap(), c["b"].as_str().unwrap()),
            c["overlap"].as_bool().unwrap(),
            "{}",
            c["note"]
        );
    }
}
