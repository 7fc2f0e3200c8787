//! Writing bundles as deterministic `.tar.gz` archives.
//!
//! Same bundle in, same bytes out: entries sorted by path (then `/.signatures.json`, then
//! `/.manifest`, the order `opa build` ends with), names with OPA's leading `/`, mode 0644
//! (OPA writes 0600; both read the same everywhere, 0644 suits files served from disk),
//! uid/gid 0, no user/group names, mtime 0, gzip header mtime 0 with OS byte 255
//! ("unknown", as Go writes) and a fixed compression level. No directory entries.
//! Long names (over 100 bytes that cannot use the ustar prefix) get a PAX `path` record.

use std::io::Write;

use crate::error::{BundleError, Result};
use crate::model::{Bundle, MANIFEST_PATH, SIGNATURES_PATH, SignaturesConfig};
use crate::signing::signatures_config_json;

/// Fixed gzip level: changing it changes every archive's bytes. Level 3 of zlib-rs
/// compresses a 100 MB data.json in 0.86 s to 19.2 MB; level 6 (Go's default, what
/// `opa build` uses) takes 1.9 s for 18.1 MB (BENCHMARKS.md, B). Bundles are compressed
/// once and downloaded by every instance, but 6 % more bytes cost less than a second more
/// on every CI build of a big bundle; decompression speed is the same.
pub const COMPRESSION_LEVEL: u32 = 3;

/// Mode of every entry.
pub const ENTRY_MODE: u32 = 0o644;

fn write_err(e: impl std::fmt::Display) -> BundleError {
    BundleError::Write(e.to_string())
}

/// Writes `bundle` as a deterministic gzip-compressed tarball.
pub fn write_tar_gz<W: Write>(bundle: &Bundle, w: W) -> Result<W> {
    write_tar_gz_with(bundle, w, || Ok(bundle.signatures.clone()))
}

/// [`write_tar_gz`] with the signatures supplied late: `signatures` is called after every
/// other file is compressed, just before `.signatures.json` is written (it comes after them
/// in the archive), so a caller can hash and sign on another thread while this one
/// compresses. Its result replaces `bundle.signatures`; the bytes are the same as
/// [`write_tar_gz`] of the signed bundle.
pub fn write_tar_gz_with<W, F>(bundle: &Bundle, w: W, signatures: F) -> Result<W>
where
    W: Write,
    F: FnOnce() -> Result<Option<SignaturesConfig>>,
{
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(w, flate2::Compression::new(COMPRESSION_LEVEL));
    let mut tar = tar::Builder::new(gz);
    let mut files: Vec<_> = bundle
        .files
        .iter()
        .filter(|f| f.path != MANIFEST_PATH)
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for f in files {
        append(&mut tar, &f.path, &f.bytes)?;
    }
    if let Some(signatures) = signatures()? {
        append(
            &mut tar,
            SIGNATURES_PATH,
            &signatures_config_json(&signatures),
        )?;
    }
    if let Some(manifest) = bundle.file(MANIFEST_PATH) {
        append(&mut tar, MANIFEST_PATH, &manifest.bytes)?;
    }
    let gz = tar.into_inner().map_err(write_err)?;
    gz.finish().map_err(write_err)
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let name = format!("/{}", path.trim_start_matches('/'));
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(ENTRY_MODE);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    if !set_ustar_name(&mut header, name.as_bytes()) {
        // Too long for ustar: a PAX record carries the real name (Go, GNU tar read it).
        tar.append_pax_extensions([("path", name.as_bytes())])
            .map_err(write_err)?;
        let short: Vec<u8> = name.bytes().take(100).collect();
        set_field(&mut header.as_old_mut().name, &short);
    }
    header.set_cksum();
    tar.append(&header, bytes).map_err(write_err)
}

/// Stores `name` in the ustar name (and prefix) fields; false if it does not fit.
fn set_ustar_name(header: &mut tar::Header, name: &[u8]) -> bool {
    if name.len() <= 100 {
        set_field(&mut header.as_old_mut().name, name);
        return true;
    }
    // Split at a `/` so that prefix <= 155 and name <= 100 bytes.
    let split = name
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'/' && *i <= 155 && name.len() - i - 1 <= 100 && *i > 0)
        .map(|(i, _)| i)
        .next();
    let (Some(i), Some(ustar)) = (split, header.as_ustar_mut()) else {
        return false;
    };
    set_field(&mut ustar.prefix, name.get(..i).unwrap_or_default());
    set_field(&mut ustar.name, name.get(i + 1..).unwrap_or_default());
    true
}

fn set_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    for (dst, src) in field.iter_mut().zip(value) {
        *dst = *src;
    }
}
