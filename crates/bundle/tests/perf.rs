//! Large-bundle timing and memory checks (ignored by default; run in release, one at a time,
//! so each process's peak RSS is its own):
//!
//! ```text
//! cargo test -p lockstep-bundle --release --test perf -- --ignored --nocapture build_and_sign_100mb
//! cargo test -p lockstep-bundle --release --test perf -- --ignored --nocapture read_and_verify_100mb
//! ```
//! Targets: <= 3 s each and peak RSS <= 4x the data size. `LOCKSTEP_PERF_MB` changes the size;
//! `LOCKSTEP_PERF_LAZY=1` uses `lazy_data` (data kept as bytes, not parsed into a tree).
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use lockstep_bundle::{
    BuildOptions, KeyConfig, ReadOptions, SigningConfig, VerificationConfig, build_bundle,
    read_tar_gz, sign_bundle, write_tar_gz,
};

fn lazy() -> bool {
    std::env::var("LOCKSTEP_PERF_LAZY").is_ok_and(|v| v == "1")
}

fn target_mb() -> usize {
    std::env::var("LOCKSTEP_PERF_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// Writes a data.json of about `mb` MiB: many user objects with strings, numbers, arrays.
fn write_data(dir: &Path, mb: usize) -> usize {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(
        dir.join("app/policy.rego"),
        "package app\n\nallow if input.user == \"u1\"\n",
    )
    .unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("app/data.json")).unwrap());
    let target = mb * 1024 * 1024;
    let mut written = 0;
    written += f.write(b"{\"users\": {").unwrap();
    let mut i = 0u64;
    while written < target {
        let rec = format!(
            "{}\"user{i:09}\": {{\"name\": \"User Number {i}\", \"email\": \"user{i}@example.com\", \"roles\": [\"reader\", \"team-{}\"], \"active\": {}, \"score\": {}.{}}}",
            if i == 0 { "" } else { ", " },
            i % 97,
            i.is_multiple_of(3),
            i % 1000,
            i % 100
        );
        f.write_all(rec.as_bytes()).unwrap();
        written += rec.len();
        i += 1;
    }
    f.write_all(b"}}").unwrap();
    f.flush().unwrap();
    written + 2
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Shared between the two tests so each can run in its own process.
fn archive_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("lockstep-perf-bundle.tar.gz")
}

const SECRET: &str = "perf-secret";

fn signing() -> SigningConfig {
    SigningConfig {
        key: SECRET.into(),
        alg: "HS256".into(),
        key_id: Some("k".into()),
        ..SigningConfig::default()
    }
}

#[test]
#[ignore = "slow; run in release"]
fn build_and_sign_100mb() {
    let dir = tempfile::tempdir().unwrap();
    let size = write_data(dir.path(), target_mb());
    let before = peak_rss_bytes();
    let start = Instant::now();
    let mut bundle = build_bundle(
        &[dir.path()],
        &BuildOptions {
            lazy_data: lazy(),
            ..BuildOptions::default()
        },
    )
    .unwrap();
    let built = start.elapsed();
    println!(
        "after build: peak {} MB, lazy={}",
        peak_rss_bytes() >> 20,
        lazy()
    );
    sign_bundle(&mut bundle, &signing()).unwrap();
    let signed = start.elapsed();
    println!("after sign: peak {} MB", peak_rss_bytes() >> 20);
    let out = std::fs::File::create(archive_path()).unwrap();
    write_tar_gz(&bundle, std::io::BufWriter::new(out)).unwrap();
    let total = start.elapsed();
    let peak = peak_rss_bytes();
    println!(
        "data {} MB: build {:?}, +sign {:?}, +write {:?}; peak RSS {} MB (before {} MB) = {:.2}x data",
        size >> 20,
        built,
        signed,
        total,
        peak >> 20,
        before >> 20,
        peak as f64 / size as f64
    );
}

#[test]
#[ignore = "slow; run in release"]
fn read_and_verify_100mb() {
    let dir = tempfile::tempdir().unwrap();
    let mut size = 0;
    if !archive_path().exists() {
        // No archive from `build_and_sign_100mb`: make one here (the peak RSS then
        // includes the build; run the build test first for a clean number).
        size = write_data(dir.path(), target_mb());
        let mut bundle = build_bundle(
            &[dir.path()],
            &BuildOptions {
                lazy_data: true,
                ..BuildOptions::default()
            },
        )
        .unwrap();
        sign_bundle(&mut bundle, &signing()).unwrap();
        let out = std::fs::File::create(archive_path()).unwrap();
        write_tar_gz(&bundle, std::io::BufWriter::new(out)).unwrap();
    }
    let opts = ReadOptions {
        verification: Some(VerificationConfig {
            keys: BTreeMap::from([(
                "k".into(),
                KeyConfig {
                    key: SECRET.into(),
                    algorithm: "HS256".into(),
                    scope: None,
                },
            )]),
            ..VerificationConfig::default()
        }),
        lazy_data: lazy(),
        ..ReadOptions::default()
    };
    let before = peak_rss_bytes();
    let start = Instant::now();
    let file = std::fs::File::open(archive_path()).unwrap();
    let bundle = read_tar_gz(std::io::BufReader::new(file), &opts).unwrap();
    let elapsed = start.elapsed();
    if size == 0 {
        size = bundle.files.iter().map(|f| f.bytes.len()).sum();
    }
    let peak = peak_rss_bytes();
    assert!(bundle.verified_signature.is_some());
    println!(
        "data {} MB: read+verify {:?}; peak RSS {} MB (before {} MB) = {:.2}x data",
        size >> 20,
        elapsed,
        peak >> 20,
        before >> 20,
        peak as f64 / size as f64
    );
}
