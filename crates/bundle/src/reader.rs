//! Reading bundles from `.tar.gz` streams and from directories, defensively.
//!
//! Hardening beyond OPA (deliberate differences, all refusals are typed errors):
//! - entry names with a `..` segment are refused (OPA uses names as-is); a leading `/` and
//!   `.` segments are normalised away (`/a`, `./a` and `a` are the same file);
//! - symlinks, hardlinks, devices, fifos and sparse files are refused (OPA silently skips
//!   them), so what is verified is exactly what is served;
//! - duplicate entries (after normalisation) are refused (OPA lets later ones win or merge);
//! - limits on compressed bytes, decompressed bytes (counted as they are produced, headers
//!   are not trusted), bytes per file (OPA's 1 GiB default) and number of entries; reading
//!   stops as soon as one is crossed, so a gzip bomb costs little;
//! - the gzip stream must be complete (OPA stops at the tar end marker without checking
//!   the gzip trailer).

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use crate::assemble::{RawEntry, assemble};
use crate::error::{BundleError, Result};
use crate::glob::go_match_lenient;
use crate::model::Bundle;
use crate::verify::VerificationConfig;

/// Resource limits for reading one bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes read from the compressed stream (default 512 MiB).
    pub max_compressed_bytes: u64,
    /// Bytes produced by decompression, tar headers included (default 2 GiB).
    pub max_uncompressed_bytes: u64,
    /// Bytes of any single file (default 1 GiB, OPA's `size_limit_bytes` default).
    pub max_file_bytes: u64,
    /// Entries (files and directories) in the archive or directory (default 100 000).
    pub max_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_compressed_bytes: 512 * 1024 * 1024,
            max_uncompressed_bytes: 2 * 1024 * 1024 * 1024,
            max_file_bytes: 1024 * 1024 * 1024,
            max_files: 100_000,
        }
    }
}

/// How to read a bundle.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub limits: Limits,
    /// Keys etc. for signature verification; `None` accepts only unsigned bundles
    /// (a signed one fails with `verification key not provided`), unless `skip_verify`.
    pub verification: Option<VerificationConfig>,
    /// Do not look at signatures at all (OPA's `--skip-verify`).
    pub skip_verify: bool,
    /// Go `filepath.Match` globs of files/directories to leave out of directory bundles,
    /// matched against the base name and the relative path.
    pub ignore: Vec<String>,
    /// OPA's lazy loading mode: `data.json` files are only checked to be valid JSON (and an
    /// object at the root), not parsed into [`Bundle::data`], which stays `{}`; the data
    /// roots and merge-conflict checks are left to whoever loads the data from
    /// [`Bundle::files`] (OPA does them at activation). Keeps memory near the archive size.
    pub lazy_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trip {
    Compressed,
    Uncompressed,
}

/// Counts bytes through a reader and fails once `limit` is passed, recording why.
struct Counted<R> {
    inner: R,
    count: u64,
    limit: u64,
    kind: Trip,
    tripped: Rc<Cell<Option<Trip>>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count = self.count.saturating_add(n as u64);
        if self.count > self.limit {
            self.tripped.set(Some(self.kind));
            return Err(io::Error::other("bundle size limit exceeded"));
        }
        Ok(n)
    }
}

fn archive_error(e: &io::Error, tripped: &Cell<Option<Trip>>, limits: &Limits) -> BundleError {
    match tripped.get() {
        Some(Trip::Compressed) => BundleError::CompressedTooLarge {
            limit: limits.max_compressed_bytes,
        },
        Some(Trip::Uncompressed) => BundleError::UncompressedTooLarge {
            limit: limits.max_uncompressed_bytes,
        },
        None => BundleError::Archive(e.to_string()),
    }
}

/// Normalises an entry name: drops a leading `/`, empty and `.` segments; refuses `..`.
/// `None` for names that denote the root itself (`/`, `./`).
pub(crate) fn normalize_entry_name(name: &str) -> Result<Option<String>> {
    let mut parts = Vec::new();
    for seg in name.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(BundleError::PathTraversal(name.to_string())),
            s => parts.push(s),
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    })
}

/// Reads and validates a gzip-compressed tar bundle.
pub fn read_tar_gz(reader: impl Read, opts: &ReadOptions) -> Result<Bundle> {
    let entries = read_tar_gz_entries(reader, &opts.limits)?;
    assemble(entries, opts)
}

pub(crate) fn read_tar_gz_entries(reader: impl Read, limits: &Limits) -> Result<Vec<RawEntry>> {
    let tripped = Rc::new(Cell::new(None));
    let mut compressed = Counted {
        inner: reader,
        count: 0,
        limit: limits.max_compressed_bytes,
        kind: Trip::Compressed,
        tripped: Rc::clone(&tripped),
    };
    let mut magic = [0u8; 2];
    match compressed.read_exact(&mut magic) {
        Ok(()) if magic == [0x1f, 0x8b] => {}
        Ok(()) => return Err(BundleError::NotGzip),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(BundleError::NotGzip),
        Err(e) => return Err(archive_error(&e, &tripped, limits)),
    }
    let gz = flate2::read::MultiGzDecoder::new(io::Cursor::new(magic).chain(compressed));
    let uncompressed = Counted {
        inner: gz,
        count: 0,
        limit: limits.max_uncompressed_bytes,
        kind: Trip::Uncompressed,
        tripped: Rc::clone(&tripped),
    };
    let mut archive = tar::Archive::new(uncompressed);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut count: u64 = 0;
    {
        let entries = archive
            .entries()
            .map_err(|e| archive_error(&e, &tripped, limits))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| archive_error(&e, &tripped, limits))?;
            count += 1;
            if count > limits.max_files {
                return Err(BundleError::TooManyFiles {
                    limit: limits.max_files,
                });
            }
            let name_bytes = entry.path_bytes();
            let name = std::str::from_utf8(&name_bytes)
                .map_err(|_| {
                    BundleError::InvalidEntryName(String::from_utf8_lossy(&name_bytes).into_owned())
                })?
                .to_string();
            use tar::EntryType as T;
            let kind = match entry.header().entry_type() {
                T::Regular => None,
                T::Directory | T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {
                    continue;
                }
                T::Symlink => Some("symlink"),
                T::Link => Some("hardlink"),
                T::Char => Some("character device"),
                T::Block => Some("block device"),
                T::Fifo => Some("fifo"),
                T::GNUSparse => Some("sparse file"),
                T::Continuous => Some("contiguous file"),
                _ => Some("entry of unknown type"),
            };
            if let Some(kind) = kind {
                return Err(BundleError::UnsupportedEntryType {
                    name,
                    kind: kind.to_string(),
                });
            }
            let path = normalize_entry_name(&name)?
                .ok_or_else(|| BundleError::InvalidEntryName(name.clone()))?;
            let size = entry.size();
            if size > limits.max_file_bytes {
                return Err(BundleError::FileTooLarge {
                    path: name.trim_start_matches('/').to_string(),
                    size,
                    limit: limits.max_file_bytes,
                });
            }
            if !seen.insert(path.clone()) {
                return Err(BundleError::DuplicateEntry(name));
            }
            // The header size is only a capacity hint, bounded by the limits; the
            // uncompressed counter enforces the real budget while reading.
            let hint = size
                .min(limits.max_uncompressed_bytes)
                .min(limits.max_file_bytes);
            let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| archive_error(&e, &tripped, limits))?;
            if bytes.len() as u64 != size {
                return Err(BundleError::Archive(format!(
                    "unexpected EOF in entry '{name}'"
                )));
            }
            out.push(RawEntry { name, path, bytes });
        }
    }
    // Drain what follows the tar end marker so a truncated or corrupt gzip stream is
    // noticed (still under the decompression limit).
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| archive_error(&e, &tripped, limits))?;
    Ok(out)
}

/// Reads and validates a directory bundle. Entry names are relative to `dir`; dot files
/// and dot directories are skipped except `.manifest` and `.signatures.json`.
pub fn read_dir(dir: impl AsRef<Path>, opts: &ReadOptions) -> Result<Bundle> {
    let entries = read_dir_entries(dir.as_ref(), &opts.limits, &opts.ignore)?;
    assemble(entries, opts)
}

pub(crate) fn read_dir_entries(
    dir: &Path,
    limits: &Limits,
    ignore: &[String],
) -> Result<Vec<RawEntry>> {
    let mut out = Vec::new();
    let mut budget = Budget { count: 0, bytes: 0 };
    walk_dir(dir, "", limits, ignore, &mut budget, &mut out)?;
    Ok(out)
}

struct Budget {
    count: u64,
    bytes: u64,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> BundleError {
    BundleError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn is_ignored(ignore: &[String], base: &str, rel: &str) -> bool {
    ignore
        .iter()
        .any(|p| go_match_lenient(p, base) || go_match_lenient(p, rel))
}

fn walk_dir(
    dir: &Path,
    prefix: &str,
    limits: &Limits,
    ignore: &[String],
    budget: &mut Budget,
    out: &mut Vec<RawEntry>,
) -> Result<()> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| io_err(dir, e))?;
    // Sorted so the file order (and thus which error comes first) is reproducible.
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let path = child.path();
        let base = child
            .file_name()
            .to_str()
            .ok_or_else(|| BundleError::InvalidEntryName(path.display().to_string()))?
            .to_string();
        let rel = if prefix.is_empty() {
            base.clone()
        } else {
            format!("{prefix}/{base}")
        };
        if base.starts_with('.') && base != ".manifest" && base != ".signatures.json" {
            continue;
        }
        if is_ignored(ignore, &base, &rel) {
            continue;
        }
        let file_type = child.file_type().map_err(|e| io_err(&path, e))?;
        budget.count += 1;
        if budget.count > limits.max_files {
            return Err(BundleError::TooManyFiles {
                limit: limits.max_files,
            });
        }
        if file_type.is_dir() {
            walk_dir(&path, &rel, limits, ignore, budget, out)?;
            continue;
        }
        if !file_type.is_file() {
            let kind = if file_type.is_symlink() {
                "symlink"
            } else {
                "special file"
            };
            return Err(BundleError::UnsupportedEntryType {
                name: rel,
                kind: kind.to_string(),
            });
        }
        out.push(RawEntry {
            bytes: read_limited(&path, &rel, limits, budget)?,
            name: rel.clone(),
            path: rel,
        });
    }
    Ok(())
}

fn read_limited(path: &Path, rel: &str, limits: &Limits, budget: &mut Budget) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    if len > limits.max_file_bytes {
        return Err(BundleError::FileTooLarge {
            path: rel.to_string(),
            size: len,
            limit: limits.max_file_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // `take` guards against a file that grows while being read.
    file.take(limits.max_file_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(path, e))?;
    let read = bytes.len() as u64;
    if read > limits.max_file_bytes {
        return Err(BundleError::FileTooLarge {
            path: rel.to_string(),
            size: read,
            limit: limits.max_file_bytes,
        });
    }
    budget.bytes += read;
    if budget.bytes > limits.max_uncompressed_bytes {
        return Err(BundleError::UncompressedTooLarge {
            limit: limits.max_uncompressed_bytes,
        });
    }
    Ok(bytes)
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

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_entry_name("/a/b.rego").unwrap().unwrap(),
            "a/b.rego"
        );
        assert_eq!(normalize_entry_name("./a//b").unwrap().unwrap(), "a/b");
        assert_eq!(normalize_entry_name("/").unwrap(), None);
        for bad in ["/../x", "a/../../x", "..", "a/..", "a/../b"] {
            assert!(
                matches!(
                    normalize_entry_name(bad),
                    Err(BundleError::PathTraversal(_))
                ),
                "{bad}"
            );
        }
    }
}
