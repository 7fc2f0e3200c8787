//! The data document of a bundle, built straight into regorus values.
//!
//! A bundle read with `lazy_data` keeps its `data.json` files as bytes and never
//! builds a `serde_json` tree (about 8 bytes of tree per byte of JSON). Here
//! each file is parsed once, into the value type the engine keeps anyway, and
//! placed at its data path with the checks OPA does on activation: two files
//! may only meet where both are objects (`merge.InterfaceMaps`), and every
//! value must lie inside the manifest's roots.

use lockstep_bundle::canonical::{JsonShape, RawJsonError, json_shape};
use lockstep_bundle::data::{InsertError, data_key};
use lockstep_bundle::{Bundle, BundleError, roots};
use regorus::Value;

use crate::error::CompileError;

/// `bundle.data` (the files the reader did parse, e.g. YAML) plus every
/// `data.json` of `bundle.files`. The bundle must have been read with
/// `lazy_data`: otherwise its `data.json` files are already in `bundle.data`
/// and placing them again is reported as a merge conflict.
pub(crate) fn bundle_data(bundle: &Bundle) -> Result<Value, CompileError> {
    bundle_data_with(bundle, |_, text| Value::from_json_str(text))
}

/// A data document in the engine's own values, kept between compilations: clones share
/// their subtrees, so merging several bundles' data (and the REST-written overlay) into
/// one document costs a walk over the top levels, not a copy of the data.
#[derive(Debug, Clone)]
pub struct DataDocument(pub(crate) Value);

impl DataDocument {
    /// `{}`.
    pub fn empty() -> Self {
        Self(Value::new_object())
    }

    /// A bundle's data, parsed from its files straight into engine values with OPA's
    /// merge and roots checks (see [`crate::PolicySet::compile_bundle`]). The bundle must
    /// have been read with `lazy_data`.
    pub fn from_bundle(bundle: &Bundle) -> Result<Self, CompileError> {
        bundle_data(bundle).map(Self)
    }

    pub fn from_json(json: &serde_json::Value) -> Result<Self, CompileError> {
        crate::engine::data_from_json(json).map(Self)
    }

    /// Merges `other` in: objects merge key by key, anything else replaces what is there
    /// (the overlay's rule: a later writer wins).
    pub fn merge(&mut self, other: &DataDocument) {
        merge_over(&mut self.0, &other.0);
    }
}

fn merge_over(into: &mut Value, from: &Value) {
    let (Value::Object(_), Value::Object(b)) = (&*into, from) else {
        *into = from.clone();
        return;
    };
    let Ok(a) = into.as_object_mut() else {
        return;
    };
    for (k, v) in b.iter() {
        match a.get_mut(k) {
            Some(existing) => merge_over(existing, v),
            None => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

/// [`bundle_data`] reduced to the object keys `depth` levels deep from the data root
/// (values below, and every non-object, become `null`): enough for the path checks
/// (rule/data conflicts, roots) that only look that deep. A file that another data file
/// is merged into, or that sits inside another, is loaded whole: merge conflicts can lie
/// at any depth.
pub(crate) fn bundle_data_shape(bundle: &Bundle, depth: usize) -> Result<Value, CompileError> {
    let keys: Vec<Vec<String>> = data_files(bundle).map(|f| data_key(&f.path)).collect();
    let eager = bundle.data.as_object().is_some_and(|o| !o.is_empty());
    bundle_data_with(bundle, |key, text| {
        let merged = eager
            || keys
                .iter()
                .any(|other| other != key && (other.starts_with(key) || key.starts_with(other)));
        if merged {
            return Value::from_json_str(text);
        }
        let levels = depth.saturating_sub(key.len()).max(1);
        json_shape(text.as_bytes(), levels)
            .map(|shape| shape_value(&shape))
            .map_err(|e| match e {
                RawJsonError::Invalid(m) | RawJsonError::Io(m) => anyhow::Error::msg(m),
            })
    })
}

fn shape_value(shape: &JsonShape) -> Value {
    match shape {
        JsonShape::Other => Value::Null,
        JsonShape::Object(members) => {
            let mut object = Value::new_object();
            if let Ok(map) = object.as_object_mut() {
                for (k, v) in members {
                    // A later duplicate replaces an earlier one, as in Go.
                    map.insert(Value::from(k.as_str()), shape_value(v));
                }
            }
            object
        }
    }
}

fn data_files(bundle: &Bundle) -> impl Iterator<Item = &lockstep_bundle::BundleFile> {
    bundle
        .files
        .iter()
        .filter(|f| f.path.rsplit('/').next() == Some("data.json"))
}

/// `bundle.data` plus every `data.json`, each file turned into a value by `parse`
/// (given its data path and text).
fn bundle_data_with(
    bundle: &Bundle,
    parse: impl Fn(&[String], &str) -> anyhow::Result<Value>,
) -> Result<Value, CompileError> {
    let mut root = crate::engine::data_from_json(&bundle.data)?;
    for file in data_files(bundle) {
        let load_error = |message: String| {
            CompileError::Data(
                BundleError::DataLoad {
                    path: file.path.clone(),
                    message,
                }
                .to_string(),
            )
        };
        let text = std::str::from_utf8(&file.bytes).map_err(|e| load_error(e.to_string()))?;
        let key = data_key(&file.path);
        let value = parse(&key, text).map_err(|e| load_error(format!("{e:#}")))?;
        insert(&mut root, &key, value).map_err(|e| load_error(e.to_string()))?;
    }
    if bundle.patch.as_ref().is_none_or(|p| p.data.is_empty()) {
        check_roots(&bundle.manifest.effective_roots(), &root)
            .map_err(|e| CompileError::Data(e.to_string()))?;
    }
    Ok(root)
}

/// OPA's `mktree` + `merge.InterfaceMaps`: `value` goes at `key`; where it meets
/// existing data, both sides must be objects all the way down.
fn insert(root: &mut Value, key: &[String], value: Value) -> Result<(), InsertError> {
    let conflict = || InsertError::Conflict(key.join("/"));
    let Some((last, parents)) = key.split_last() else {
        if !matches!(value, Value::Object(_)) {
            return Err(InsertError::RootNotObject);
        }
        return merge(root, value).map_err(|()| conflict());
    };
    let mut node = root;
    for k in parents {
        let map = node.as_object_mut().map_err(|_| conflict())?;
        node = map.get_or_insert_with(Value::from(k.as_str()), Value::new_object);
    }
    let map = node.as_object_mut().map_err(|_| conflict())?;
    let k = Value::from(last.as_str());
    match map.get_mut(&k) {
        None => {
            map.insert(k, value);
            Ok(())
        }
        Some(existing) => merge(existing, value).map_err(|()| conflict()),
    }
}

/// Merges object `b` into object `a`; anything else meeting is a conflict.
fn merge(a: &mut Value, b: Value) -> Result<(), ()> {
    let (Value::Object(_), Value::Object(b)) = (&*a, b) else {
        return Err(());
    };
    let a = a.as_object_mut().map_err(|_| ())?;
    for (k, v) in b.iter() {
        match a.get_mut(k) {
            None => {
                a.insert(k.clone(), v.clone());
            }
            Some(existing) => merge(existing, v.clone())?,
        }
    }
    Ok(())
}

/// [`lockstep_bundle::roots::check_data`] over regorus values.
fn check_roots(roots: &[String], data: &Value) -> Result<(), BundleError> {
    walk(roots, data, String::new())
}

fn walk(roots: &[String], node: &Value, path: String) -> Result<(), BundleError> {
    let trimmed = path.trim_matches('/');
    if roots::root_paths_contain(roots, trimmed) {
        return Ok(());
    }
    if let Value::Object(map) = node {
        // OPA's "on the way to a root" test, quirks included (see roots.rs).
        let segments: Vec<&str> = trimmed.split('/').collect();
        if roots
            .iter()
            .any(|r| roots::root_paths_contain(&segments, r))
        {
            for (key, child) in map.iter() {
                let key = match key {
                    Value::String(s) => s.to_string(),
                    other => other.to_string(),
                };
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
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    fn v(s: &str) -> Value {
        Value::from_json_str(s).unwrap()
    }

    #[test]
    fn documents_merge_objects_and_later_values_win_without_touching_the_source() {
        let base = DataDocument(v(r#"{"a": {"x": 1, "y": {"k": 1}}, "b": [1]}"#));
        let mut merged = DataDocument::empty();
        merged.merge(&base);
        merged.merge(&DataDocument(v(
            r#"{"a": {"y": {"k": 2}, "z": 3}, "b": "s"}"#,
        )));
        assert_eq!(
            merged.0,
            v(r#"{"a": {"x": 1, "y": {"k": 2}, "z": 3}, "b": "s"}"#)
        );
        // The merge wrote into its own copy of the shared subtrees.
        assert_eq!(base.0, v(r#"{"a": {"x": 1, "y": {"k": 1}}, "b": [1]}"#));
    }

    #[test]
    fn insert_merges_objects_and_refuses_conflicts() {
        let mut d = Value::new_object();
        insert(&mut d, &[], v(r#"{"a": {"x": 1}}"#)).unwrap();
        insert(&mut d, &["a".into(), "y".into()], v("[1, 2]")).unwrap();
        insert(&mut d, &["b".into()], v(r#""s""#)).unwrap();
        insert(&mut d, &["a".into()], v(r#"{"z": {"q": true}}"#)).unwrap();
        assert_eq!(
            d,
            v(r#"{"a": {"x": 1, "y": [1, 2], "z": {"q": true}}, "b": "s"}"#)
        );
        assert_eq!(
            insert(&mut d, &["a".into(), "x".into()], v("1"))
                .unwrap_err()
                .to_string(),
            "failed to insert data file from path a/x"
        );
        assert_eq!(
            insert(&mut d, &["b".into(), "c".into()], v("1"))
                .unwrap_err()
                .to_string(),
            "failed to insert data file from path b/c"
        );
        assert_eq!(
            insert(&mut d, &[], v("[1]")).unwrap_err().to_string(),
            "root value must be object"
        );
    }

    #[test]
    fn roots_are_checked_like_the_bundle_reader() {
        let r: Vec<String> = ["a", "b", "c/d"].iter().map(|s| s.to_string()).collect();
        check_roots(&r, &v(r#"{"a": 1, "c": {"d": {"x": 1}}}"#)).unwrap();
        assert_eq!(
            check_roots(&r, &v(r#"{"a": 1, "c": {"e": "bad"}}"#))
                .unwrap_err()
                .to_string(),
            "manifest roots [a b c/d] do not permit data at path '/c/e' (hint: check bundle directory structure)"
        );
    }
}
