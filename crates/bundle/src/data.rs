//! Mapping data files onto the data tree (OPA's `getNormalizedPath`, `mktree` and
//! `merge.InterfaceMaps`).
//!
//! A data file's directory is its place in `data`; the root file must be an object; two
//! files may only touch the same key if both values there are objects.

use serde_json::{Map, Value};

/// The data path of a data file: its directory split on `/`, after trimming leading `/`
/// and `.` characters as OPA does (so `.x/data.json` lands at `x`, an OPA quirk).
pub fn data_key(path: &str) -> Vec<String> {
    let dir = match path.rfind('/') {
        Some(i) => path.get(..i).unwrap_or_default(),
        None => "",
    };
    let dir = dir.trim_start_matches(['/', '.']);
    if dir.is_empty() {
        Vec::new()
    } else {
        dir.split('/').map(str::to_string).collect()
    }
}

/// Why a data file could not be placed in the data tree (OPA's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("root value must be object")]
    RootNotObject,
    #[error("failed to insert data file from path {0}")]
    Conflict(String),
}

/// Inserts `value` at `key` into `data`, refusing conflicts without changing `data`.
pub fn insert(
    data: &mut Map<String, Value>,
    key: &[String],
    value: Value,
) -> Result<(), InsertError> {
    let tree = match key.split_first() {
        None => match value {
            Value::Object(m) => m,
            _ => return Err(InsertError::RootNotObject),
        },
        Some((first, rest)) => {
            let mut v = value;
            for k in rest.iter().rev() {
                let mut m = Map::new();
                m.insert(k.clone(), v);
                v = Value::Object(m);
            }
            let mut m = Map::new();
            m.insert(first.clone(), v);
            m
        }
    };
    if has_conflicts(data, &tree) {
        return Err(InsertError::Conflict(key.join("/")));
    }
    merge(data, tree);
    Ok(())
}

fn has_conflicts(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    b.iter().any(|(k, v)| match (a.get(k), v) {
        (None, _) => false,
        (Some(Value::Object(x)), Value::Object(y)) => has_conflicts(x, y),
        _ => true,
    })
}

/// Merges a conflict-free `b` into `a`, moving values (no copies of large subtrees).
fn merge(a: &mut Map<String, Value>, b: Map<String, Value>) {
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(Value::Object(x)), Value::Object(y)) => merge(x, y),
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
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

    #[test]
    fn keys() {
        assert!(data_key("data.json").is_empty());
        assert!(data_key("/data.json").is_empty());
        assert_eq!(
            data_key("roles/bindings/data.json"),
            vec!["roles", "bindings"]
        );
        assert_eq!(data_key("./a/data.yaml"), vec!["a"]);
    }

    #[test]
    fn insert_and_conflicts() {
        let mut d = Map::new();
        insert(&mut d, &[], json!({"a": {"x": 1}})).unwrap();
        insert(&mut d, &["a".into(), "y".into()], json!([1, 2])).unwrap();
        insert(&mut d, &["b".into()], json!("s")).unwrap();
        assert_eq!(
            Value::Object(d.clone()),
            json!({"a": {"x": 1, "y": [1, 2]}, "b": "s"})
        );
        assert_eq!(
            insert(&mut d, &["a".into(), "x".into()], json!(1))
                .unwrap_err()
                .to_string(),
            "failed to insert data file from path a/x"
        );
        assert_eq!(
            insert(&mut d, &[], json!([1])).unwrap_err().to_string(),
            "root value must be object"
        );
        // A conflict deep inside leaves the tree untouched.
        assert!(insert(&mut d, &[], json!({"c": 1, "b": 2})).is_err());
        assert!(d.get("c").is_none());
    }
}
