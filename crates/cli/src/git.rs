//! The default revision: the current git commit, as the guide's pipeline uses.

use std::path::Path;
use std::process::Command;

/// `git rev-parse HEAD` run in `dir`; `None` outside a work tree or without git.
pub fn head_commit(dir: &Path) -> Option<String> {
    let dir = if dir.is_dir() { dir } else { dir.parent()? };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!sha.is_empty()).then_some(sha)
}
