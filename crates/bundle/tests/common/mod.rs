//! Helpers shared by the integration tests: fixture paths and hand-made archives.
// Test helpers shared by several test crates (each uses a part of them); they fail
// loudly, like the tests that call them.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::PathBuf;

use lockstep_bundle::{KeyConfig, VerificationConfig};

/// Root of the OPA fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/opa")
}

pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures().join(rel);
    assert!(p.exists(), "missing fixture {}", p.display());
    p
}

pub fn read_text(rel: &str) -> String {
    std::fs::read_to_string(fixture(rel)).unwrap()
}

/// One archive entry for [`tar_gz`].
pub struct Entry {
    pub name: String,
    pub kind: tar::EntryType,
    pub content: Vec<u8>,
    pub link: Option<String>,
    /// Size written into the header (defaults to the content length).
    pub header_size: Option<u64>,
}

pub fn file(name: &str, content: &[u8]) -> Entry {
    Entry {
        name: name.into(),
        kind: tar::EntryType::Regular,
        content: content.to_vec(),
        link: None,
        header_size: None,
    }
}

pub fn special(name: &str, kind: tar::EntryType, link: Option<&str>) -> Entry {
    Entry {
        name: name.into(),
        kind,
        content: Vec::new(),
        link: link.map(str::to_string),
        header_size: None,
    }
}

/// A raw tar (not gzipped) with names written verbatim (leading `/`, `..` and all).
pub fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let name = e.name.as_bytes();
        assert!(name.len() <= 100);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_size(e.header_size.unwrap_or(e.content.len() as u64));
        if let Some(link) = &e.link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        builder.append(&h, e.content.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    gzip(&tar_bytes(entries))
}

/// Builds a tar.gz from a fixture `files.json` (`[[name, content], ...]`, order kept).
pub fn tar_gz_from_files_json(rel: &str) -> Vec<u8> {
    let pairs: Vec<(String, String)> = serde_json::from_str(&read_text(rel)).unwrap();
    tar_gz(
        &pairs
            .iter()
            .map(|(n, c)| file(n, c.as_bytes()))
            .collect::<Vec<_>>(),
    )
}

/// The fixtures' neutral `verification.json` as our config.
pub fn verification_from_fixture(rel: &str) -> VerificationConfig {
    let v: serde_json::Value = serde_json::from_str(&read_text(rel)).unwrap();
    let keys = v["keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, k)| {
            (
                id.clone(),
                KeyConfig {
                    key: k["key"].as_str().unwrap().to_string(),
                    algorithm: k["algorithm"].as_str().unwrap().to_string(),
                    scope: None,
                },
            )
        })
        .collect();
    let non_empty =
        |s: &serde_json::Value| s.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    VerificationConfig {
        keys,
        key_id: non_empty(&v["keyid"]),
        scope: non_empty(&v["scope"]),
        exclude_files: v["exclude_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
    }
}
