//! The last activated bundle on disk: `<dir>/bundles/<name>/bundle.tar.gz` (the raw
//! downloaded bytes, as OPA keeps them) and `bundle.json` (its ETag and revision, so
//! the first request after a restart can be conditional).
//!
//! Also, whether bundles are persisted or not, `<dir>/bundles/<name>/newest_iat.json`:
//! the newest signed issue time (`iat`) this agent has accepted for the bundle, so a
//! restarted agent still refuses a bundle signed before it (rollback protection across
//! restarts; security review finding 7).

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

/// The newest signed issue time accepted for a bundle (`newest_iat.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewestIat {
    pub issued_at: i64,
    /// The revision that carried it (for people reading the file).
    #[serde(default)]
    pub revision: String,
}

pub const NEWEST_IAT_FILE: &str = "newest_iat.json";

/// Where [`NewestIat`] is kept for bundle `name`.
pub fn newest_iat_path(root: &Path, name: &str) -> PathBuf {
    bundle_dir(root, name).join(NEWEST_IAT_FILE)
}

/// Records the newest accepted issue time (atomically).
pub fn save_newest_iat(root: &Path, name: &str, newest: &NewestIat) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(newest).map_err(std::io::Error::other)?;
    write_atomic(&newest_iat_path(root, name), &json)
}

/// The recorded newest issue time, if any. A file that exists but cannot be read or
/// parsed is an error (the caller decides how loudly to say so).
pub fn load_newest_iat(root: &Path, name: &str) -> std::io::Result<Option<NewestIat>> {
    match std::fs::read(newest_iat_path(root, name)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
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

    #[test]
    fn newest_iat_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load_newest_iat(d.path(), "main").unwrap(), None);
        let n = NewestIat {
            issued_at: 2000,
            revision: "r2".into(),
        };
        save_newest_iat(d.path(), "main", &n).unwrap();
        assert_eq!(load_newest_iat(d.path(), "main").unwrap(), Some(n));
        std::fs::write(newest_iat_path(d.path(), "main"), "not json").unwrap();
        assert!(load_newest_iat(d.path(), "main").is_err());
    }
}
