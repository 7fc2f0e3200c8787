//! Policies and data written through OPA's REST API (`PUT /v1/policies/{id}`,
//! `PUT/PATCH/DELETE /v1/data/{path}`), kept beside the bundles and compiled with them.
//! Paths are lists of unescaped segments; `[]` is the root of `data`.

use std::collections::BTreeMap;

use lockstep_bundle::Module;
use lockstep_policy::{CompileError, CompileOptions, module_paths};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

/// A REST-written module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayPolicy {
    pub raw: String,
    /// Package path without the leading `data` (`["mcp", "tool_access"]`), as parsed.
    pub package: Vec<String>,
    /// Every path the module may define, for bundle ownership: the package first,
    /// then each rule's path (see [`parse_policy`]).
    pub claims: Vec<Vec<String>>,
}

/// Everything written through the REST API.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    pub policies: BTreeMap<String, OverlayPolicy>,
    /// Always an object.
    pub data: Json,
}

impl Default for Overlay {
    fn default() -> Self {
        Overlay {
            policies: BTreeMap::new(),
            data: Json::Object(Map::new()),
        }
    }
}

impl Overlay {
    /// Drops data and policies under `root` (what OPA does to a bundle's roots at
    /// activation).
    pub fn erase_root(&mut self, root: &[String]) {
        if root.is_empty() {
            self.data = Json::Object(Map::new());
            self.policies.clear();
            return;
        }
        let _ = remove(&mut self.data, root);
        self.policies
            .retain(|_, p| !p.claims.iter().any(|c| segments_overlap(c, root)));
    }
}

/// Why a data write failed (mapped to OPA's status codes by the agent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// 404 `resource_not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 404 `resource_conflict` (OPA's storage write conflict).
    #[error("{0}")]
    Conflict(String),
    /// 400 `invalid_parameter`.
    #[error("{0}")]
    BadPatch(String),
}

/// `/a/b` for messages.
pub fn display_path(path: &[String]) -> String {
    format!("/{}", path.join("/"))
}

/// True when one path is a segment-wise prefix of the other (an empty path owns all).
pub fn segments_overlap(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a.iter().take(n).eq(b.iter().take(n))
}

/// A REST-written module, parsed by regorus as the overlay is compiled (Rego v1, the
/// engine's compile options): its package and claims come from the parser, never
/// from the text, so no spelling of a path (string escapes, brackets, whitespace,
/// comments, ref rule heads) can hide what the module defines.
pub fn parse_policy(
    id: &str,
    raw: String,
    opts: &CompileOptions,
) -> Result<OverlayPolicy, CompileError> {
    let module = Module {
        path: id.to_string(),
        source: raw,
        rego_version: 1,
    };
    let paths = module_paths(&module, opts)?;
    let mut claims: Vec<Vec<String>> = Vec::new();
    for path in paths.all() {
        // regorus reads `package data.a` as `data.data.a`; claim `a` as well, so a
        // `data.` prefix is refused where the plain spelling is (as it always was).
        let stripped = path.strip_prefix(&["data".to_string()][..]);
        for p in std::iter::once(path).chain(stripped) {
            if !claims.iter().any(|c| c.as_slice() == p) {
                claims.push(p.to_vec());
            }
        }
    }
    Ok(OverlayPolicy {
        raw: module.source,
        package: paths.package,
        claims,
    })
}

/// The value at `path`.
pub fn get<'a>(doc: &'a Json, path: &[String]) -> Option<&'a Json> {
    let mut node = doc;
    for seg in path {
        node = match node {
            Json::Object(m) => m.get(seg)?,
            Json::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

/// `PUT`: sets `path` to `value`, creating missing parent objects.
pub fn put(doc: &mut Json, path: &[String], value: Json) -> Result<(), PathError> {
    let Some((last, parents)) = path.split_last() else {
        if !value.is_object() {
            return Err(PathError::BadPatch(
                "root document must be an object".into(),
            ));
        }
        *doc = value;
        return Ok(());
    };
    let mut node = doc;
    for (i, seg) in parents.iter().enumerate() {
        node = match node {
            Json::Object(m) => m
                .entry(seg.clone())
                .or_insert_with(|| Json::Object(Map::new())),
            Json::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => {
                    return Err(PathError::NotFound(format!(
                        "storage_not_found_error: {}: document does not exist",
                        display_path(path.get(..=i).unwrap_or_default())
                    )));
                }
            },
            _ => {
                return Err(PathError::Conflict(format!(
                    "storage_write_conflict_error: {}",
                    display_path(path.get(..i).unwrap_or_default())
                )));
            }
        };
    }
    match node {
        Json::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Json::Array(a) => {
            let slot = last.parse::<usize>().ok().and_then(|i| a.get_mut(i));
            match slot {
                Some(s) => {
                    *s = value;
                    Ok(())
                }
                None => Err(PathError::NotFound(format!(
                    "storage_not_found_error: {}: document does not exist",
                    display_path(path)
                ))),
            }
        }
        _ => Err(PathError::Conflict(format!(
            "storage_write_conflict_error: {}",
            display_path(parents)
        ))),
    }
}

/// `DELETE`: removes `path`; 404 when absent.
pub fn remove(doc: &mut Json, path: &[String]) -> Result<Json, PathError> {
    let not_found = || {
        PathError::NotFound(format!(
            "storage_not_found_error: {}: document does not exist",
            display_path(path)
        ))
    };
    let Some((last, parents)) = path.split_last() else {
        let old = std::mem::replace(doc, Json::Object(Map::new()));
        return Ok(old);
    };
    let mut node = doc;
    for seg in parents {
        node = match node {
            Json::Object(m) => m.get_mut(seg).ok_or_else(not_found)?,
            Json::Array(a) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or_else(not_found)?,
            _ => return Err(not_found()),
        };
    }
    match node {
        Json::Object(m) => m.remove(last).ok_or_else(not_found),
        Json::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(not_found()),
        },
        _ => Err(not_found()),
    }
}

/// One JSON Patch operation as OPA accepts it.
#[derive(Debug, Clone, Deserialize)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    #[serde(default)]
    pub value: Option<Json>,
}

/// RFC 6901 pointer to segments (`~1` → `/`, `~0` → `~`).
pub fn pointer_segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// `PATCH`: `add`, `remove`, `replace` at `base + op.path`; all or nothing.
pub fn patch(doc: &mut Json, base: &[String], ops: &[PatchOp]) -> Result<(), PathError> {
    let mut work = doc.clone();
    for op in ops {
        let mut path = base.to_vec();
        path.extend(pointer_segments(&op.path));
        match op.op.as_str() {
            "add" => {
                let value = op.value.clone().unwrap_or(Json::Null);
                add(&mut work, &path, value)?;
            }
            "remove" => {
                remove(&mut work, &path)?;
            }
            "replace" => {
                if get(&work, &path).is_none() {
                    return Err(PathError::NotFound(format!(
                        "storage_not_found_error: {}: document does not exist",
                        display_path(&path)
                    )));
                }
                put(&mut work, &path, op.value.clone().unwrap_or(Json::Null))?;
            }
            other => return Err(PathError::BadPatch(format!("bad patch operation: {other}"))),
        }
    }
    *doc = work;
    Ok(())
}

/// JSON Patch `add`: the parent must exist; arrays take an index or `-`.
fn add(doc: &mut Json, path: &[String], value: Json) -> Result<(), PathError> {
    let Some((last, parents)) = path.split_last() else {
        return put(doc, path, value);
    };
    let missing = || {
        PathError::NotFound(format!(
            "storage_not_found_error: {}: document does not exist",
            display_path(parents)
        ))
    };
    let mut node = doc;
    for seg in parents {
        node = match node {
            Json::Object(m) => m.get_mut(seg).ok_or_else(missing)?,
            Json::Array(a) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or_else(missing)?,
            _ => return Err(missing()),
        };
    }
    match node {
        Json::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Json::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(missing)?
            };
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(PathError::Conflict(format!(
            "storage_write_conflict_error: {}",
            display_path(parents)
        ))),
    }
}

/// Deep-merges `from` into `into` (objects merge key by key, anything else replaces).
pub fn deep_merge(into: &mut Json, from: Json) {
    match (into, from) {
        (Json::Object(a), Json::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Vec<String> {
        pointer_segments(s)
    }

    fn policy(src: &str) -> Result<OverlayPolicy, CompileError> {
        parse_policy("x.rego", src.into(), &CompileOptions::default())
    }

    #[test]
    fn packages() {
        assert_eq!(
            policy("# c\npackage mcp.tool_access\n\nallow := true")
                .unwrap()
                .package,
            p("/mcp/tool_access")
        );
        let quoted = policy("package a[\"b-c\"].d # x\nr := 1").unwrap();
        assert_eq!(quoted.package, p("/a/b-c/d"));
        assert_eq!(quoted.claims, vec![p("/a/b-c/d"), p("/a/b-c/d/r")]);
        assert!(policy("x := 1").is_err());
    }

    #[test]
    fn finding1_claims_come_from_the_parser() {
        let escaped = policy("package mcp[\"\\u0061uthz\"]\nallow if true").unwrap();
        assert_eq!(escaped.package, p("/mcp/authz"));
        assert_eq!(escaped.claims, vec![p("/mcp/authz"), p("/mcp/authz/allow")]);
        let head = policy("package mcp\nauthz[\"\\u0061llow\"] if true").unwrap();
        assert_eq!(head.claims, vec![p("/mcp"), p("/mcp/authz/allow")]);
        let prefixed = policy("package data.mcp.authz\nallow if true").unwrap();
        assert_eq!(
            prefixed.claims,
            vec![
                p("/data/mcp/authz"),
                p("/mcp/authz"),
                p("/data/mcp/authz/allow"),
                p("/mcp/authz/allow")
            ]
        );
        // Activation of a bundle owning a claimed path erases the policy.
        let mut o = Overlay::default();
        o.policies.insert("x".into(), head);
        o.erase_root(&p("/mcp/authz/allow"));
        assert!(o.policies.is_empty());
    }

    #[test]
    fn put_get_remove_patch() {
        let mut d = json!({});
        put(&mut d, &p("/a/b/c"), json!(1)).unwrap();
        assert_eq!(d, json!({"a": {"b": {"c": 1}}}));
        assert!(matches!(
            put(&mut d, &p("/a/b/c/d"), json!(1)),
            Err(PathError::Conflict(_))
        ));
        assert_eq!(get(&d, &p("/a/b")), Some(&json!({"c": 1})));
        patch(
            &mut d,
            &p("/a"),
            &[
                PatchOp {
                    op: "add".into(),
                    path: "/l".into(),
                    value: Some(json!([1])),
                },
                PatchOp {
                    op: "add".into(),
                    path: "/l/-".into(),
                    value: Some(json!(2)),
                },
                PatchOp {
                    op: "replace".into(),
                    path: "/b/c".into(),
                    value: Some(json!(3)),
                },
            ],
        )
        .unwrap();
        assert_eq!(d, json!({"a": {"b": {"c": 3}, "l": [1, 2]}}));
        let bad = [PatchOp {
            op: "move".into(),
            path: "/x".into(),
            value: None,
        }];
        assert_eq!(
            patch(&mut d, &[], &bad).unwrap_err().to_string(),
            "bad patch operation: move"
        );
        let missing = [PatchOp {
            op: "add".into(),
            path: "/x/y".into(),
            value: None,
        }];
        assert!(matches!(
            patch(&mut d, &[], &missing),
            Err(PathError::NotFound(_))
        ));
        remove(&mut d, &p("/a/l")).unwrap();
        assert!(matches!(
            remove(&mut d, &p("/a/l")),
            Err(PathError::NotFound(_))
        ));
        assert!(segments_overlap(&p("/a"), &p("/a/b")));
        assert!(!segments_overlap(&p("/a/c"), &p("/a/b")));
        assert!(segments_overlap(&[], &p("/a/b")));
    }
}
