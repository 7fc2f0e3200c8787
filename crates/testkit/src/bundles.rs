//! ES256 keys and signed bundles made in memory.

use lockstep_bundle::keys::{Algorithm, generate_keypair};
use lockstep_bundle::{Bundle, BundleFile, Manifest, SigningConfig};

use crate::server::KID;

/// An ES256 key pair (PEM).
#[derive(Clone)]
pub struct Keys {
    pub private: String,
    pub public: String,
}

pub fn keys() -> Keys {
    let (private, public) = generate_keypair(Algorithm::ES256).unwrap();
    Keys { private, public }
}

/// The policy of revision `rev`: `data.mcp.revision == rev`, and `allow` when
/// `input.user` is in `data.mcp.users`.
pub fn policy_source(rev: &str) -> String {
    format!(
        "package mcp\n\nrevision := \"{rev}\"\n\ndefault allow := false\n\nallow if input.user in data.mcp.users\n"
    )
}

/// A bundle with root `mcp`, revision `rev`, signed at `iat` (unsigned without keys).
pub fn bundle(rev: &str, iat: i64, keys: Option<&Keys>) -> Vec<u8> {
    bundle_with(rev, iat, keys, &policy_source(rev))
}

/// [`bundle`] with the policy text `rego` as `mcp/policy.rego`.
pub fn bundle_with(rev: &str, iat: i64, keys: Option<&Keys>, rego: &str) -> Vec<u8> {
    mcp_bundle(rev, iat, keys, br#"{"users": ["alice"]}"#.to_vec(), rego)
}

/// A bundle with root `mcp` of `mcp/data.json` and `mcp/policy.rego`.
fn mcp_bundle(rev: &str, iat: i64, keys: Option<&Keys>, data_json: Vec<u8>, rego: &str) -> Vec<u8> {
    let b = Bundle {
        manifest: Manifest {
            revision: rev.to_string(),
            roots: Some(vec!["mcp".to_string()]),
            ..Manifest::default()
        },
        data: serde_json::json!({}),
        files: vec![
            BundleFile {
                path: "mcp/data.json".into(),
                bytes: data_json,
            },
            BundleFile {
                path: "mcp/policy.rego".into(),
                bytes: rego.as_bytes().to_vec(),
            },
        ],
        ..Bundle::default()
    };
    seal(b, keys, iat)
}

/// [`bundle`] whose `data.mcp.inventory` is about `data_bytes` of JSON (one string per
/// item), so activation has real data to parse: the size of the cut-over and
/// activation measurements.
pub fn bundle_with_data(rev: &str, iat: i64, keys: Option<&Keys>, data_bytes: usize) -> Vec<u8> {
    let items: Vec<String> = (0..data_bytes / 48)
        .map(|i| format!("{rev}-item-{i:08}-abcdefghijklmnopqrstuvwx"))
        .collect();
    let data = serde_json::json!({"users": ["alice"], "inventory": items});
    mcp_bundle(
        rev,
        iat,
        keys,
        serde_json::to_vec(&data).unwrap(),
        &policy_source(rev),
    )
}

/// The repository's example policies (`examples/policies`: the guide's three layers)
/// as a bundle of revision `rev`, signed at `iat` when `keys` are given.
pub fn example_bundle(rev: &str, iat: i64, keys: Option<&Keys>) -> Vec<u8> {
    example_bundle_with(rev, iat, keys, |_| {})
}

/// [`example_bundle`] after `edit` changed a copy of the policy directory.
pub fn example_bundle_with(
    rev: &str,
    iat: i64,
    keys: Option<&Keys>,
    edit: impl FnOnce(&std::path::Path),
) -> Vec<u8> {
    let src = repo_root().join("examples/policies");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    copy_dir(&src, &dir);
    edit(&dir);
    let b = lockstep_bundle::build_bundle(
        &[dir],
        &lockstep_bundle::BuildOptions {
            revision: Some(rev.to_string()),
            ..lockstep_bundle::BuildOptions::default()
        },
    )
    .unwrap();
    seal(b, keys, iat)
}

/// [`example_bundle`] plus `data.mcp.inventory`: about `data_bytes` of strings that
/// name `rev` (a large data-only revision of the gateways' layers).
pub fn example_bundle_with_inventory(
    rev: &str,
    iat: i64,
    keys: Option<&Keys>,
    data_bytes: usize,
) -> Vec<u8> {
    example_bundle_with(rev, iat, keys, |dir| {
        let items: Vec<String> = (0..data_bytes / 48)
            .map(|i| format!("{rev}-item-{i:08}-abcdefghijklmnopqrstuvwx"))
            .collect();
        std::fs::create_dir_all(dir.join("mcp/inventory")).unwrap();
        std::fs::write(
            dir.join("mcp/inventory/data.json"),
            serde_json::to_vec(&items).unwrap(),
        )
        .unwrap();
    })
}

/// The repository's root directory.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Copies the directory tree `from` to `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Writes `b` as a tar.gz, signed with `keys` at `iat` when given (its manifest file
/// brought in line first).
pub fn seal(mut b: Bundle, keys: Option<&Keys>, iat: i64) -> Vec<u8> {
    b.sync_manifest_file().unwrap();
    if let Some(k) = keys {
        lockstep_bundle::sign_bundle(
            &mut b,
            &SigningConfig {
                key: k.private.clone(),
                alg: "ES256".into(),
                key_id: Some(KID.into()),
                issued_at: Some(iat),
                ..SigningConfig::default()
            },
        )
        .unwrap();
    }
    lockstep_bundle::write_tar_gz(&b, Vec::new()).unwrap()
}

/// A bundle signed for `rev` whose policy was then replaced: the signature no longer
/// matches.
pub fn tampered(rev: &str, iat: i64, keys: &Keys) -> Vec<u8> {
    let good = bundle(rev, iat, Some(keys));
    let b = lockstep_bundle::read_tar_gz(
        good.as_slice(),
        &lockstep_bundle::ReadOptions {
            skip_verify: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut b = b;
    for f in &mut b.files {
        if f.path == "mcp/policy.rego" {
            f.bytes = policy_source(&format!("{rev}-evil")).into_bytes();
        }
    }
    lockstep_bundle::write_tar_gz(&b, Vec::new()).unwrap()
}
