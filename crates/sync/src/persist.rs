//! The last activated bundle on disk: `<dir>/bundles/<name>/bundle.tar.gz` (the raw
//! downloaded bytes, as OPA keeps them) and `bundle.json` (its ETag and revision, so
//! the first request after a restart can be conditional).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is kept next to the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub size: u64,
}

/// A bundle name as a single, safe directory name.
fn dir_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

pub fn bundle_dir(root: &Path, name: &str) -> PathBuf {
    root.join("bundles").join(dir_name(name))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Directory fsync makes the rename durable; not supported everywhere.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Saves the bundle bytes, then its metadata.
pub fn save(root: &Path, name: &str, bytes: &[u8], meta: &Meta) -> std::io::Result<()> {
    let dir = bundle_dir(root, name);
    write_atomic(&dir.join("bundle.tar.gz"), bytes)?;
    let json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
    write_atomic(&dir.join("bundle.json"), &json)
}

/// Loads a persisted bundle, if there is one.
pub fn load(root: &Path, name: &str) -> std::io::Result<Option<(Vec<u8>, Meta)>> {
    let dir = bundle_dir(root, name);
    let bytes = match std::fs::read(dir.join("bundle.tar.gz")) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = std::fs::read(dir.join("bundle.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
        .unwrap_or_default();
    Ok(Some((bytes, meta)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_tmp_left() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path(), "main").unwrap().is_none());
        let meta = Meta {
            etag: Some("\"x\"".into()),
            revision: "r1".into(),
            size: 3,
        };
        save(d.path(), "main", b"abc", &meta).unwrap();
        save(d.path(), "main", b"abcd", &meta).unwrap();
        let (b, m) = load(d.path(), "main").unwrap().unwrap();
        assert_eq!(b, b"abcd");
        assert_eq!(m, meta);
        let names: Vec<_> = std::fs::read_dir(bundle_dir(d.path(), "main"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(dir_name("../x/y"), "_x_y");
    }
}
