//! `with` mocks of the builtins lockstep provides, as `opa test` runs them
//! (`with io.jwt.decode as [...]`, `with crypto.sha256 as crypto.md5`, `with count as
//! crypto.sha256`).
//!
//! Why a rewrite: regorus resolves a `with` target or replacement only among its own
//! builtins and the bundle's functions, so a name that is an extension is refused at
//! compile time (`use of undefined variable crypto`) or at evaluation (`undefined
//! rule`). When a bundle names a provided builtin in a `with`, every call of it and
//! every `with` reference to it is pointed at a one-line wrapper in a module of our
//! own (`package lockstep_provided`, `io_jwt_decode(a) := io.jwt.decode(a)`), which
//! regorus mocks like any function. A builtin of regorus's own used as a replacement
//! (`with crypto.sha256 as upper`, which regorus refuses as an unsafe variable) gets a
//! wrapper too. Bundles without such a `with` are not touched.

use std::collections::BTreeSet;

use lockstep_bundle::Module;

use super::{PROVIDED, provides};
use crate::ast::ModuleInfo;
use crate::engine::Edit;

/// The wrappers' package.
const PACKAGE: &str = "lockstep_provided";
/// The wrappers' file name (diagnostics name it, so it says what it is).
const FILE: &str = "lockstep-provided-builtins.rego";

/// `w_` + the name with `_` for `.`: never the builtin's own name, so the wrapper's
/// body calls the builtin and not itself.
fn wrapper(name: &str) -> String {
    format!("w_{}", name.replace('.', "_"))
}

/// A builtin of regorus's own, with its arity.
fn regorus_builtin(name: &str) -> Option<u8> {
    regorus::unstable::BUILTINS
        .get(name)
        .map(|(_, arity)| *arity)
}

/// Whether a `with` side is rewritten to a wrapper.
fn wrapped(name: &str, replacement: bool) -> bool {
    provides(name) || (replacement && regorus_builtin(name).is_some())
}

fn wrapper_ref(name: &str) -> String {
    format!("data.{PACKAGE}.{}", wrapper(name))
}

/// The edits and the wrapper module, when some `with` names a provided builtin.
pub(crate) fn rewrite(infos: &[ModuleInfo], modules: &[Module]) -> Option<(Vec<Edit>, Module)> {
    let mocked = infos
        .iter()
        .flat_map(|m| &m.with_refs)
        .any(|w| wrapped(&w.name.join("."), w.replacement));
    if !mocked {
        return None;
    }
    let mut edits = Vec::new();
    let mut used = BTreeSet::new();
    for (idx, (m, module)) in infos.iter().zip(modules).enumerate() {
        for w in &m.with_refs {
            let name = w.name.join(".");
            if wrapped(&name, w.replacement) {
                used.insert(name.clone());
                edits.push(Edit {
                    module: idx,
                    start: w.start,
                    end: w.end,
                    text: wrapper_ref(&name),
                });
            }
        }
        for call in &m.calls {
            let (Some(parts), Some(start)) = (&call.name, call.root_start) else {
                continue;
            };
            let name = parts.join(".");
            // An import alias shadows a builtin's namespace.
            let aliased = parts
                .first()
                .is_some_and(|first| m.imports.iter().any(|i| &i.alias == first));
            let end = start + name.len();
            // Only a call written as the plain dotted name is rewritten.
            if !provides(&name) || aliased || module.source.get(start..end) != Some(name.as_str()) {
                continue;
            }
            used.insert(name.clone());
            edits.push(Edit {
                module: idx,
                start,
                end,
                text: wrapper_ref(&name),
            });
        }
    }
    let rego_version = modules.first().map_or(1, |m| m.rego_version);
    let mut source = format!("package {PACKAGE}\n\n");
    for name in &used {
        let arity = PROVIDED
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.arity)
            .or_else(|| regorus_builtin(name))
            .unwrap_or(0);
        let args: Vec<String> = (0..arity).map(|i| format!("a{i}")).collect();
        let args = args.join(", ");
        // Valid in both Rego versions: no `if` needed for a single-value head.
        source.push_str(&format!("{}({args}) := {name}({args})\n", wrapper(name)));
    }
    Some((
        edits,
        Module {
            path: FILE.to_string(),
            source,
            rego_version,
        },
    ))
}
