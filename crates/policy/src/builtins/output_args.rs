//! OPA's output-argument form for the builtins lockstep provides: a call written as
//! a statement with one argument more than the builtin takes binds the result to that
//! argument (`io.jwt.decode(t, [h, p, s])` is `[h, p, s] = io.jwt.decode(t)`). regorus
//! knows the form for its own builtins only, and calls its variables unsafe for an
//! extension, so such a statement is rewritten to the `=` form before compiling.

use lockstep_bundle::Module;

use super::PROVIDED;
use crate::ast::ModuleInfo;
use crate::engine::Edit;

/// One edit per statement that calls a provided builtin with an output argument.
pub(crate) fn edits(infos: &[ModuleInfo], modules: &[Module]) -> Vec<Edit> {
    let mut out = Vec::new();
    for (idx, (m, module)) in infos.iter().zip(modules).enumerate() {
        for call in &m.statement_calls {
            let name = call.name.join(".");
            let Some(p) = PROVIDED.iter().find(|p| p.name == name) else {
                continue;
            };
            let arity = usize::from(p.arity);
            if call.args.len() != arity + 1 || arity == 0 {
                continue;
            }
            let Some(&(out_start, out_end)) = call.args.last() else {
                continue;
            };
            // Everything before the output argument, less the comma that separates it
            // (argument spans may stop short of a string's closing quote).
            let (Some(output), Some(head)) = (
                module.source.get(out_start..out_end),
                module.source.get(call.start..out_start),
            ) else {
                continue;
            };
            let Some(head) = head.trim_end().strip_suffix(',') else {
                continue;
            };
            out.push(Edit {
                module: idx,
                start: call.start,
                end: call.end,
                text: format!("{output} = {head})"),
            });
        }
    }
    out
}
