//! Manifest roots: the data/policy prefixes a bundle owns (OPA's `RootPathsOverlap`,
//! `RootPathsContain`, and the roots part of `validateAndInjectDefaults`).
//!
//! Roots are `/`-separated and compared segment-wise: `a/b` contains `a/b/c` but not
//! `a/banana`; the root `""` contains everything.

use serde_json::Value;

use crate::error::{BundleError, Result};

fn segments(path: &str) -> Vec<&str> {
    path.split('/').collect()
}

fn root_contains(root: &[&str], other: &[&str]) -> bool {
    if root == [""] {
        return true;
    }
    root.len() <= other.len() && root.iter().zip(other).all(|(a, b)| a == b)
}

/// True when one root is a segment-wise prefix of the other.
pub fn root_paths_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (segments(a), segments(b));
    root_contains(&a, &b) || root_contains(&b, &a)
}

/// True when some root contains `path`.
pub fn root_paths_contain<S: AsRef<str>>(roots: &[S], path: &str) -> bool {
    let path = segments(path);
    roots
        .iter()
        .any(|r| root_contains(&segments(r.as_ref()), &path))
}

/// Refuses two overlapping roots (first pair in order, as OPA).
pub fn check_overlaps(roots: &[String]) -> Result<()> {
    for (i, a) in roots.iter().enumerate() {
        for b in roots.iter().skip(i + 1) {
            if root_paths_overlap(a, b) {
                return Err(BundleError::RootsOverlap(a.clone(), b.clone()));
            }
        }
    }
    Ok(())
}

/// Walks the data tree like OPA's `dfs`: a path inside a root is fine; an object on the
/// way to a root is descended into; anything else is data outside the roots.
pub fn check_data(roots: &[String], data: &Value) -> Result<()> {
    walk(roots, data, String::new())
}

fn walk(roots: &[String], node: &Value, path: String) -> Result<()> {
    let trimmed = path.trim_matches('/');
    if root_paths_contain(roots, trimmed) {
        return Ok(());
    }
    if let Value::Object(map) = node {
        // OPA checks the *path's segments* as if they were roots containing a root; this
        // is the "on the way to a root" test (kept as is, quirks included).
        let path_segments: Vec<&str> = trimmed.split('/').collect();
        if roots.iter().any(|r| root_paths_contain(&path_segments, r)) {
            for (key, child) in map {
                walk(roots, child, format!("{path}/{key}"))?;
            }
            return Ok(());
        }
    }
    Err(BundleError::DataOutsideRoots {
        roots: roots.to_vec(),
        path: trimmed.to_string(),
    })
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
    use serde_json::json;

    fn roots(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn contain_and_overlap() {
        assert!(root_paths_contain(&roots(&[""]), "anything/at/all"));
        assert!(root_paths_contain(&roots(&["a/b"]), "a/b/c"));
        assert!(!root_paths_contain(&roots(&["a/b"]), "a/banana"));
        assert!(!root_paths_contain(&roots(&["a/b"]), "a"));
        assert!(root_paths_overlap("a", "a/b"));
        assert!(!root_paths_overlap("a/b", "a/banana"));
    }

    #[test]
    fn data_checks() {
        let r = roots(&["a", "b", "c/d"]);
        check_data(&r, &json!({"a": 1, "c": {"d": {"x": 1}}})).unwrap();
        assert_eq!(
            check_data(&r, &json!({"a": 1, "c": {"e": "bad"}}))
                .unwrap_err()
                .to_string(),
            "manifest roots [a b c/d] do not permit data at path '/c/e' (hint: check bundle directory structure)"
        );
        assert_eq!(
            check_data(&roots(&[]), &json!({"x": 1}))
                .unwrap_err()
                .to_string(),
            "manifest roots [] do not permit data at path '/' (hint: check bundle directory structure)"
        );
        check_data(&roots(&[]), &json!({})).unwrap_err();
    }
}
