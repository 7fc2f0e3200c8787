//! The `data` paths a module defines, read from regorus's parse rather than from the
//! text: a package or rule head may spell one path many ways (`mcp.authz`,
//! `mcp["authz"]`, `mcp["\u0061uthz"]`), and only the parser's decoding says which
//! document a module actually writes. Ownership checks (a REST-written module must
//! stay out of a bundle's roots) use this.

use lockstep_bundle::Module;

use crate::engine::{CompileOptions, parse};
use crate::error::CompileError;

/// What one module defines, as paths without the leading `data`, quoted components
/// decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulePaths {
    /// The package (`["mcp", "authz"]` for `package mcp["authz"]`).
    pub package: Vec<String>,
    /// Per rule (functions and defaults included): the package followed by the static
    /// prefix of the rule's head (`package mcp` + `authz.allow if ...` gives
    /// `["mcp", "authz", "allow"]`; `p[x] := ...` stops at `p`). Every rule is under
    /// the package, so a check over `package` and these covers the whole module, even a
    /// head shape this list cannot read.
    pub rules: Vec<Vec<String>>,
}

impl ModulePaths {
    /// The package, then every rule path.
    pub fn all(&self) -> impl Iterator<Item = &[String]> {
        std::iter::once(self.package.as_slice()).chain(self.rules.iter().map(Vec::as_slice))
    }
}

/// Parses `module` with the settings [`crate::PolicySet::compile`] uses for `opts` and
/// reports the paths it defines. Parse errors are [`CompileError::Policy`] with
/// `rego_parse_error` diagnostics, as from a compilation.
pub fn module_paths(module: &Module, opts: &CompileOptions) -> Result<ModulePaths, CompileError> {
    let info = parse(std::slice::from_ref(module), opts)?
        .into_iter()
        .next()
        .ok_or_else(|| CompileError::Internal("parsed module missing".into()))?;
    let rules = info
        .rules
        .iter()
        .map(|r| {
            let mut path = info.package.clone();
            path.extend(r.ground_prefix());
            path
        })
        .collect();
    Ok(ModulePaths {
        package: info.package,
        rules,
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

    fn paths(src: &str) -> Result<ModulePaths, CompileError> {
        module_paths(
            &Module {
                path: "m.rego".into(),
                source: src.into(),
                rego_version: 1,
            },
            &CompileOptions::default(),
        )
    }

    fn v(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finding1_package_escapes_are_decoded() {
        for src in [
            "package mcp.authz\nallow if true",
            "package mcp[\"authz\"]\nallow if true",
            "package mcp[\"\\u0061uthz\"]\nallow if true",
            "package mcp[\"\\u0061\\u0075thz\"]\nallow if true",
            "# c\n\n  package   mcp[ \"authz\" ] # x\nallow if true",
        ] {
            let p = paths(src).unwrap();
            assert_eq!(p.package, v(&["mcp", "authz"]), "{src}");
            assert_eq!(p.rules, vec![v(&["mcp", "authz", "allow"])], "{src}");
        }
    }

    #[test]
    fn finding1_rule_heads_extend_the_package() {
        // A head must start with a name.
        assert!(paths("package mcp\n\"authz\".allow if true").is_err());
        let p = paths(
            "package mcp\nauthz.allow if true\nauthz[\"\\u0062\"].c := 1\nd[x] := 1 if x := \"k\"\n\
             f(x) := x\ndefault g := 0\ns contains 1\n",
        )
        .unwrap();
        assert_eq!(p.package, v(&["mcp"]));
        assert_eq!(
            p.rules,
            vec![
                v(&["mcp", "authz", "allow"]),
                v(&["mcp", "authz", "b", "c"]),
                v(&["mcp", "d"]),
                v(&["mcp", "f"]),
                v(&["mcp", "g"]),
                v(&["mcp", "s"]),
            ]
        );
        assert_eq!(p.all().count(), 7);
    }

    #[test]
    fn data_prefix_is_a_literal_component_and_imports_do_not_move_heads() {
        // regorus puts `package data.a` at `data.data.a`.
        assert_eq!(
            paths("package data.a\nx := 1").unwrap().package,
            v(&["data", "a"])
        );
        let p = paths("package x\nimport data.mcp.authz as foo\nfoo.allow if true").unwrap();
        assert_eq!(p.rules, vec![v(&["x", "foo", "allow"])]);
        // A head cannot start at `data` or `input`.
        assert!(paths("package x\ndata.mcp.allow if true").is_err());
        assert!(paths("package x\ninput.allow if true").is_err());
    }

    #[test]
    fn parse_errors_are_diagnostics() {
        for src in [
            "x := 1",
            "package a\n\nallow if {\n",
            "package a[1]\n",
            "package mcp . authz\n",
        ] {
            let err = paths(src).unwrap_err();
            let d = err.diagnostics();
            assert!(!d.is_empty(), "{src}: {err}");
            assert!(
                d.iter().all(|d| d.code == "rego_parse_error"),
                "{src}: {err}"
            );
        }
    }
}
