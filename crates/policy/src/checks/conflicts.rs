//! OPA's path-conflict check between rules and base documents (data).
//!
//! In OPA a rule and a data value at the same path is a compile error
//! (`rego_compile_error: conflicting rule for data path a/b found`). regorus
//! instead silently lets the data value win, so a bundle whose data shadows a rule
//! would make different decisions than OPA. We replicate OPA's check
//! (`ast.CheckPathConflicts` with `storage.NonEmpty`): a rule's static path
//! conflicts if data holds a value exactly there, or if the deepest existing
//! ancestor of that path in data is not an object.

use std::collections::HashSet;

use regorus::Value;

use crate::ast::ModuleInfo;
use crate::error::Diagnostic;

pub(crate) fn check_path_conflicts(modules: &[ModuleInfo], data: &Value) -> Vec<Diagnostic> {
    let mut seen = HashSet::new();
    let mut diags = Vec::new();
    for m in modules {
        for r in &m.rules {
            let mut path = m.package.clone();
            path.extend(r.ground_prefix());
            if !seen.insert(path.clone()) {
                continue;
            }
            if conflicts(data, &path) {
                diags.push(Diagnostic::new(
                    "rego_compile_error",
                    format!("conflicting rule for data path {} found", path.join("/")),
                    Some(r.location.clone()),
                ));
            }
        }
    }
    diags
}

fn conflicts(data: &Value, path: &[String]) -> bool {
    let mut node = data;
    for (depth, key) in path.iter().enumerate() {
        match node {
            Value::Object(map) => match map.get(&Value::from(key.as_str())) {
                Some(child) => node = child,
                // Missing below an object: no data here, no conflict.
                None => return false,
            },
            // A scalar or array above the rule's path: OPA reports a conflict,
            // except at the root, which is always an object.
            _ => return depth > 0,
        }
    }
    // A value (of any kind, even `{}`) exactly at the rule's path.
    true
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
    use crate::ast::read_modules;
    use serde_json::json;

    fn check(src: &str, data: serde_json::Value) -> Vec<String> {
        let mut e = regorus::Engine::new();
        e.add_policy("p.rego".into(), src.into()).unwrap();
        let data = Value::from_json_str(&data.to_string()).unwrap();
        check_path_conflicts(&read_modules(&e).unwrap(), &data)
            .into_iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn data_at_a_rule_path_conflicts() {
        let d = check("package p\n\nx := 1\n", json!({"p": {"x": 5}}));
        assert_eq!(
            d,
            vec!["p.rego:3:1: rego_compile_error: conflicting rule for data path p/x found"]
        );
    }

    #[test]
    fn scalar_above_a_rule_path_conflicts() {
        let d = check("package p.q\n\nx := 1\n", json!({"p": 1}));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn sibling_data_does_not_conflict() {
        let d = check(
            "package mcp.tool_access\n\nallow := true\ns contains 1\nr[x] := 1 if x := 2\n",
            json!({"mcp": {"roles": {}, "tool_access": {"other": 1}}}),
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn partial_rules_conflict_at_their_static_prefix() {
        let d = check(
            "package p\n\nr[x] := 1 if x := 2\n",
            json!({"p": {"r": {}}}),
        );
        assert_eq!(d.len(), 1);
    }
}
