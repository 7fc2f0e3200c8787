//! Finding `test_*` rules, and giving repeated test names their own identity.
//!
//! OPA runs every rule whose name (any static component of its head, up to the
//! first one that matches) starts with `test_`, and marks `todo_test_*` rules as
//! skipped. When the same test name is defined several times in a package, OPA's
//! runner renames the later definitions `test_x#01`, `test_x#02`, ... and runs each
//! definition as its own test. regorus merges same-named definitions into one
//! rule, so we do what OPA does by renaming the later definitions in the source
//! text (to a valid identifier, reported under OPA's `#NN` name) before loading.

use std::collections::HashMap;

use crate::ast::{ModuleInfo, RefPart, RuleKind, rule_path};
use crate::engine::Edit;
use crate::error::SourceLocation;

pub(crate) const TEST_PREFIX: &str = "test_";
pub(crate) const SKIP_PREFIX: &str = "todo_test_";

/// One test case to run.
#[derive(Debug, Clone)]
pub(crate) struct TestCase {
    /// `data.pkg` as OPA prints it.
    pub package: String,
    /// The test's name as reported (`test_x`, `a.test_x`, `test_x#01`).
    pub name: String,
    /// The canonical path to evaluate (uses the renamed identifier for duplicates).
    pub eval_path: String,
    pub location: SourceLocation,
    pub skip: bool,
    /// The head continues past the test name (`test_x[case] if ...`): a
    /// parametrised test whose value is an object of sub-results.
    pub parametrised: bool,
}

pub(crate) struct Discovery {
    /// In OPA's report order: by file, then by position in the file.
    pub cases: Vec<TestCase>,
    /// Renames giving each later definition of a repeated name its own rule.
    pub renames: Vec<Edit>,
}

pub(crate) fn discover(modules: &[ModuleInfo]) -> Discovery {
    let mut order: Vec<usize> = (0..modules.len()).collect();
    order.sort_by(|a, b| {
        let fa = modules.get(*a).map(|m| &m.file);
        let fb = modules.get(*b).map(|m| &m.file);
        fa.cmp(&fb)
    });

    let mut seen: HashMap<(Vec<String>, Vec<String>), usize> = HashMap::new();
    let mut cases = Vec::new();
    let mut renames = Vec::new();
    for idx in order {
        let Some(m) = modules.get(idx) else { continue };
        for rule in &m.rules {
            // Functions cannot be queried as tests, and a `default` belongs to
            // the test it provides a value for.
            if rule.is_function || rule.kind == RuleKind::Default {
                continue;
            }
            let Some((name_idx, name)) = test_name(&rule.head) else {
                continue;
            };
            let head_names: Vec<String> = rule
                .head
                .iter()
                .take(name_idx + 1)
                .filter_map(|p| match p {
                    RefPart::Name(n) => Some(n.clone()),
                    RefPart::Dynamic => None,
                })
                .collect();
            let count = seen
                .entry((m.package.clone(), head_names.clone()))
                .or_insert(0);
            let dup = *count;
            *count += 1;

            let mut eval_names = head_names.clone();
            let mut display = head_names.clone();
            if dup > 0 {
                // Only names with a source span (identifiers) can be renamed;
                // a quoted `p["test_x"]` stays merged with its first definition.
                let span = rule.name_spans.get(name_idx).copied().flatten();
                let Some(span) = span else { continue };
                let ident = format!("{name}__lockstep_dup_{dup:02}");
                renames.push(Edit {
                    module: idx,
                    start: span.start,
                    end: span.end,
                    text: ident.clone(),
                });
                if let Some(last) = eval_names.last_mut() {
                    *last = ident;
                }
                if let Some(last) = display.last_mut() {
                    *last = format!("{name}#{dup:02}");
                }
            }
            let mut path = m.package.clone();
            path.extend(eval_names);
            cases.push(TestCase {
                package: rule_path(&m.package),
                name: display.join("."),
                eval_path: rule_path(&path),
                location: rule.location.clone(),
                skip: name.starts_with(SKIP_PREFIX),
                parametrised: rule.head.len() > name_idx + 1,
            });
        }
    }
    Discovery { cases, renames }
}

/// The index and text of the head component that makes this rule a test.
fn test_name(head: &[RefPart]) -> Option<(usize, &str)> {
    for (i, part) in head.iter().enumerate() {
        match part {
            RefPart::Name(n) if n.starts_with(TEST_PREFIX) || n.starts_with(SKIP_PREFIX) => {
                return Some((i, n));
            }
            RefPart::Name(_) => {}
            RefPart::Dynamic => return None,
        }
    }
    None
}
