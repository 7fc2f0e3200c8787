//! A small, typed view of the parsed modules, read from regorus's AST JSON export.
//!
//! regorus has no API that lists rules, imports or calls. Its `get_ast_as_json`
//! (feature `ast`) exports every module; this file walks that JSON generically, so a
//! new expression variant in regorus does not break the walk, only what we extract
//! from the node kinds we know (`Var`, `RefDot`, `RefBrack`, `Call`, rule heads).

use serde_json::Value as Json;

use crate::error::{CompileError, SourceLocation};

/// One component of a rule head or function reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RefPart {
    /// A name known when parsing: `a` in `a.b`, `"x.y"` in `p["x.y"]`.
    Name(String),
    /// Computed while evaluating: `x` in `p[x] := 1`.
    Dynamic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleKind {
    /// `p := v`, `p if ...`, `a.b.c := v`, `p[x] := v` (head without `contains`).
    Complete,
    /// `p contains x`.
    Set,
    /// `f(x) := v`.
    Function,
    /// `default p := v` or `default f(_) := v`.
    Default,
}

/// The span of the last static name of a rule head, for renaming duplicate tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSpan {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct RuleInfo {
    pub kind: RuleKind,
    /// The head reference, relative to the package.
    pub head: Vec<RefPart>,
    pub location: SourceLocation,
    /// Byte span of each static name in `head` (None for dynamic parts).
    pub name_spans: Vec<Option<ByteSpan>>,
    pub is_function: bool,
    /// Some body is an `else` branch.
    pub has_else: bool,
    /// The head's value is the implicit or explicit `true`.
    pub value_is_true: bool,
    /// `x := e` statements whose `:=` can be spelled `=` without changing what the
    /// rule means (see [`colon_assignments`]).
    pub colon_assigns: Vec<ColonAssign>,
}

/// A `var := expr` in a rule body: the variable and the byte offset of its `:=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColonAssign {
    pub var: String,
    pub op_start: usize,
}

impl RuleInfo {
    /// The leading static names of the head (`a.b` for `a.b[x] := 1`).
    pub fn ground_prefix(&self) -> Vec<String> {
        self.head
            .iter()
            .map_while(|p| match p {
                RefPart::Name(n) => Some(n.clone()),
                RefPart::Dynamic => None,
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ImportInfo {
    /// e.g. `["data", "mcp", "roles"]`.
    pub path: Vec<String>,
    /// The name the import binds: the alias, or the last path component.
    pub alias: String,
}

#[derive(Debug, Clone)]
pub(crate) struct CallInfo {
    /// `None` when the function reference has a computed part.
    pub name: Option<Vec<String>>,
    pub location: SourceLocation,
    /// Byte offset of the reference's first variable (`greeting` in `greeting(x)`).
    pub root_start: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct ModuleInfo {
    pub file: String,
    /// Package path without the leading `data` (quoted components decoded).
    pub package: Vec<String>,
    pub imports: Vec<ImportInfo>,
    pub rules: Vec<RuleInfo>,
    pub calls: Vec<CallInfo>,
    /// Whether any statement uses `with`.
    pub has_with: bool,
    /// The target and the replacement of every `with`, where each is a plain
    /// reference (`io.jwt.decode`, `data.lib.f`, `input.a`).
    pub with_refs: Vec<WithRef>,
    /// Calls that are whole statements (`io.jwt.decode(t, [h, p, s])`), where OPA
    /// allows an extra, output argument.
    pub statement_calls: Vec<StatementCall>,
}

/// A call written as a statement of a rule body.
#[derive(Debug, Clone)]
pub(crate) struct StatementCall {
    pub name: Vec<String>,
    /// The call's byte range, and each argument's.
    pub start: usize,
    pub end: usize,
    pub args: Vec<(usize, usize)>,
}

/// One side of a `with` modifier.
#[derive(Debug, Clone)]
pub(crate) struct WithRef {
    pub name: Vec<String>,
    /// The `as` side.
    pub replacement: bool,
    /// Byte range of the reference in the module's source.
    pub start: usize,
    pub end: usize,
}

/// regorus's AST export of an engine, parsed once for everything that reads it (the
/// module view below, the decision memo's analysis): an export and its parse cost
/// about 10 ms for the example policies, and used to be paid per reader.
pub(crate) struct AstExport {
    /// One JSON object per module (`ast`, `source`), in the engine's order.
    pub modules: Vec<Json>,
    /// Each module's package, in the same order.
    pub packages: Vec<regorus::PolicyPackageComponents>,
}

impl AstExport {
    pub fn of(engine: &regorus::Engine) -> Result<Self, String> {
        let text = engine
            .get_ast_as_json()
            .map_err(|e| format!("cannot export the AST: {e:#}"))?;
        let json: Json =
            serde_json::from_str(&text).map_err(|e| format!("cannot read the AST export: {e}"))?;
        let packages = engine
            .get_policy_package_components()
            .map_err(|e| format!("cannot read packages: {e:#}"))?;
        let Json::Array(modules) = json else {
            return Err("the AST export is not an array".to_string());
        };
        if modules.len() != packages.len() {
            return Err("the AST export and the package list disagree".to_string());
        }
        Ok(Self { modules, packages })
    }
}

/// Read the engine's modules.
pub(crate) fn read_modules(engine: &regorus::Engine) -> Result<Vec<ModuleInfo>, CompileError> {
    let export = AstExport::of(engine).map_err(CompileError::Internal)?;
    Ok(modules_of(&export))
}

/// The module view of an export. `packages` comes from `get_policy_package_components`,
/// which decodes quoted package components for us.
pub(crate) fn modules_of(export: &AstExport) -> Vec<ModuleInfo> {
    export
        .modules
        .iter()
        .zip(&export.packages)
        .map(|(m, pkg)| read_module(m, pkg.source_file.clone(), pkg.components.clone()))
        .collect()
}

fn read_module(m: &Json, file: String, package: Vec<String>) -> ModuleInfo {
    let contents = m
        .pointer("/source/contents")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let ast = m.get("ast").unwrap_or(&Json::Null);
    let imports = ast
        .get("imports")
        .and_then(Json::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|i| read_import(i, contents))
                .collect()
        })
        .unwrap_or_default();
    let rules = ast
        .get("rules")
        .and_then(Json::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|r| read_rule(r, &file, contents))
                .collect()
        })
        .unwrap_or_default();
    let mut calls = Vec::new();
    let mut with_refs = Vec::new();
    let mut statement_calls = Vec::new();
    if let Some(rules) = ast.get("rules") {
        collect_calls(rules, &file, contents, &mut calls, &mut with_refs);
        collect_statement_calls(rules, &mut statement_calls);
    }
    ModuleInfo {
        file,
        package,
        imports,
        rules,
        calls,
        has_with: !with_refs.is_empty(),
        with_refs,
        statement_calls,
    }
}

fn read_import(i: &Json, contents: &str) -> Option<ImportInfo> {
    let path = ref_names(i.get("refr")?)?;
    // The alias is exported as a bare span; its text is in the source.
    let alias = match i.get("as").and_then(span_of) {
        Some(span) => contents.get(span.start..span.end)?.to_string(),
        None => path.last()?.clone(),
    };
    Some(ImportInfo { path, alias })
}

fn read_rule(r: &Json, file: &str, contents: &str) -> Option<RuleInfo> {
    if let Some(d) = r.get("Default") {
        let refr = d.get("refr")?;
        let (head, name_spans) = ref_parts(refr);
        let is_function = d
            .get("args")
            .and_then(Json::as_array)
            .is_some_and(|a| !a.is_empty());
        return Some(RuleInfo {
            kind: RuleKind::Default,
            head,
            name_spans,
            location: location(d.get("span").or_else(|| refr_span(refr))?, file, contents),
            is_function,
            has_else: false,
            value_is_true: false,
            colon_assigns: Vec::new(),
        });
    }
    let spec = r.get("Spec")?;
    let head = spec.get("head")?;
    let (kind, inner) = if let Some(h) = head.get("Compr") {
        (RuleKind::Complete, h)
    } else if let Some(h) = head.get("Set") {
        (RuleKind::Set, h)
    } else if let Some(h) = head.get("Func") {
        (RuleKind::Function, h)
    } else {
        return None;
    };
    let refr = inner.get("refr")?;
    let (parts, name_spans) = ref_parts(refr);
    let has_else = spec
        .get("bodies")
        .and_then(Json::as_array)
        .is_some_and(|b| {
            b.iter()
                .any(|b| b.get("is_else") == Some(&Json::Bool(true)))
        });
    let value_is_true = match inner.get("assign") {
        None | Some(Json::Null) => true,
        Some(a) => a.pointer("/value/Bool/value") == Some(&Json::Bool(true)),
    };
    Some(RuleInfo {
        kind,
        head: parts,
        name_spans,
        location: location(
            spec.get("span").or_else(|| refr_span(refr))?,
            file,
            contents,
        ),
        is_function: kind == RuleKind::Function,
        has_else,
        value_is_true,
        colon_assigns: colon_assignments(spec, contents),
    })
}

/// The rule's `x := e` statements (comprehension bodies included) where `x` is bound
/// nowhere else in the rule: not by another `:=`, `some`, `every`, a function
/// argument, nor any `=` unification. For those, `x = e` means the same as `x := e`
/// as long as `x` is no rule, function or import of the module's package (checked
/// by the caller, which sees every module). regorus 0.14.1's RVM needs that
/// spelling: it binds `x := <undefined>` and goes on, where the interpreter and OPA
/// fail the body; `x = e` is compiled with a "not undefined" guard.
fn colon_assignments(spec: &Json, contents: &str) -> Vec<ColonAssign> {
    #[derive(Default)]
    struct Walk {
        candidates: Vec<(String, usize, usize)>,
        binders: std::collections::HashMap<String, usize>,
        unified: std::collections::HashSet<String>,
    }
    fn var_names(node: &Json, out: &mut Vec<String>) {
        match node {
            Json::Object(map) => {
                if let Some(name) = map
                    .get("Var")
                    .and_then(|v| v.get("value"))
                    .and_then(Json::as_str)
                {
                    out.push(name.to_string());
                }
                map.values().for_each(|v| var_names(v, out));
            }
            Json::Array(items) => items.iter().for_each(|v| var_names(v, out)),
            _ => {}
        }
    }
    fn span_text(span: &Json, contents: &str) -> Option<String> {
        let s = span_of(span)?;
        contents.get(s.start..s.end).map(str::to_string)
    }
    fn walk(node: &Json, contents: &str, w: &mut Walk) {
        match node {
            Json::Object(map) => {
                if let Some(a) = map.get("AssignExpr") {
                    let op = a.get("op").and_then(Json::as_str);
                    let lhs = a.get("lhs").unwrap_or(&Json::Null);
                    let rhs = a.get("rhs").unwrap_or(&Json::Null);
                    let mut names = Vec::new();
                    var_names(lhs, &mut names);
                    if op == Some("ColEq") {
                        let lhs_var = lhs
                            .get("Var")
                            .and_then(|v| v.get("value"))
                            .and_then(Json::as_str);
                        let lhs_end = lhs.get("Var").and_then(|v| v.get("span")).and_then(span_of);
                        let rhs_start = rhs
                            .as_object()
                            .and_then(|o| o.values().next())
                            .and_then(|v| v.get("span"))
                            .and_then(span_of);
                        // Only values that can be undefined, and never a literal: regorus
                        // reads `x = {"a": y}` as a destructuring pattern.
                        let rhs_kind = rhs.as_object().and_then(|o| o.keys().next());
                        let may_be_undefined = rhs_kind.is_some_and(|k| {
                            matches!(k.as_str(), "RefDot" | "RefBrack" | "Var" | "Call")
                        });
                        if let (Some(var), Some(l), Some(r), true) =
                            (lhs_var, lhs_end, rhs_start, may_be_undefined)
                        {
                            w.candidates.push((var.to_string(), l.end, r.start));
                        }
                        for n in names {
                            *w.binders.entry(n).or_default() += 1;
                        }
                    } else {
                        var_names(rhs, &mut names);
                        w.unified.extend(names);
                    }
                }
                if let Some(vars) = map
                    .get("SomeVars")
                    .and_then(|s| s.get("vars"))
                    .and_then(Json::as_array)
                {
                    for v in vars.iter().filter_map(|v| span_text(v, contents)) {
                        *w.binders.entry(v).or_default() += 1;
                    }
                }
                if let Some(some_in) = map.get("SomeIn") {
                    let mut names = Vec::new();
                    for k in ["key", "value"] {
                        if let Some(e) = some_in.get(k) {
                            var_names(e, &mut names);
                        }
                    }
                    for n in names {
                        *w.binders.entry(n).or_default() += 1;
                    }
                }
                if let Some(every) = map.get("Every") {
                    for k in ["key", "value"] {
                        if let Some(v) = every.get(k).and_then(|s| span_text(s, contents)) {
                            *w.binders.entry(v).or_default() += 1;
                        }
                    }
                }
                if let Some(args) = map.get("Func").and_then(|f| f.get("args")) {
                    let mut names = Vec::new();
                    var_names(args, &mut names);
                    for n in names {
                        *w.binders.entry(n).or_default() += 1;
                    }
                }
                map.values().for_each(|v| walk(v, contents, w));
            }
            Json::Array(items) => items.iter().for_each(|v| walk(v, contents, w)),
            _ => {}
        }
    }
    let mut w = Walk::default();
    walk(spec, contents, &mut w);
    w.candidates
        .into_iter()
        .filter(|(var, _, _)| {
            var != "_" && w.binders.get(var) == Some(&1) && !w.unified.contains(var)
        })
        .filter_map(|(var, from, to)| {
            let between = contents.get(from..to)?;
            let op_start = from + between.find(":=")?;
            Some(ColonAssign { var, op_start })
        })
        .collect()
}

/// Flatten a reference (`Var`, `RefDot`, `RefBrack` chain) into its parts.
fn ref_parts(refr: &Json) -> (Vec<RefPart>, Vec<Option<ByteSpan>>) {
    let mut parts = Vec::new();
    let mut spans = Vec::new();
    push_ref_parts(refr, &mut parts, &mut spans);
    (parts, spans)
}

fn push_ref_parts(refr: &Json, parts: &mut Vec<RefPart>, spans: &mut Vec<Option<ByteSpan>>) {
    if let Some(v) = refr.get("Var") {
        match v.get("value").and_then(Json::as_str) {
            Some(name) => {
                parts.push(RefPart::Name(name.to_string()));
                spans.push(v.get("span").and_then(span_of));
            }
            None => {
                parts.push(RefPart::Dynamic);
                spans.push(None);
            }
        }
    } else if let Some(d) = refr.get("RefDot") {
        if let Some(inner) = d.get("refr") {
            push_ref_parts(inner, parts, spans);
        }
        // `field` is exported as `[span, "name"]`.
        let field = d.get("field").and_then(Json::as_array);
        let name = field.and_then(|f| f.get(1)).and_then(Json::as_str);
        match name {
            Some(name) => {
                parts.push(RefPart::Name(name.to_string()));
                spans.push(field.and_then(|f| f.first()).and_then(span_of));
            }
            None => {
                parts.push(RefPart::Dynamic);
                spans.push(None);
            }
        }
    } else if let Some(b) = refr.get("RefBrack") {
        if let Some(inner) = b.get("refr") {
            push_ref_parts(inner, parts, spans);
        }
        let index = b.get("index");
        match index.and_then(|i| i.get("String")) {
            Some(s) => {
                let name = s.get("value").and_then(Json::as_str).unwrap_or_default();
                parts.push(RefPart::Name(name.to_string()));
                spans.push(None);
            }
            None => {
                parts.push(RefPart::Dynamic);
                spans.push(None);
            }
        }
    } else {
        parts.push(RefPart::Dynamic);
        spans.push(None);
    }
}

/// The static names of a reference, or None if any part is computed.
fn ref_names(refr: &Json) -> Option<Vec<String>> {
    let (parts, _) = ref_parts(refr);
    parts
        .into_iter()
        .map(|p| match p {
            RefPart::Name(n) => Some(n),
            RefPart::Dynamic => None,
        })
        .collect()
}

fn refr_span(refr: &Json) -> Option<&Json> {
    refr.as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.get("span"))
}

/// The span of the leftmost variable of a reference (`crypto` in `crypto.sha256`).
fn root_var_span(refr: &Json) -> Option<&Json> {
    if let Some(v) = refr.get("Var") {
        return v.get("span");
    }
    let inner = refr
        .get("RefDot")
        .or_else(|| refr.get("RefBrack"))
        .and_then(|r| r.get("refr"))?;
    root_var_span(inner)
}

fn span_of(span: &Json) -> Option<ByteSpan> {
    let start = usize::try_from(span.get("start")?.as_u64()?).ok()?;
    let end = usize::try_from(span.get("end")?.as_u64()?).ok()?;
    Some(ByteSpan { start, end })
}

/// A span's location with OPA's column: regorus counts a tab as 4 columns, OPA
/// as one character, so the column is recomputed from the byte offset.
fn location(span: &Json, file: &str, contents: &str) -> SourceLocation {
    let num = |k: &str| {
        span.get(k)
            .and_then(Json::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    let col = span_of(span)
        .and_then(|s| contents.get(..s.start))
        .map(|before| {
            let line = before.rsplit('\n').next().unwrap_or_default();
            u32::try_from(line.chars().count() + 1).unwrap_or(u32::MAX)
        })
        .unwrap_or_else(|| num("col"));
    SourceLocation {
        file: file.to_string(),
        row: num("line"),
        col,
    }
}

/// Convert a regorus column (tab = 4) on `line` to OPA's (tab = 1).
pub(crate) fn opa_column(line: &str, regorus_col: u32) -> u32 {
    let mut visual = 1u32;
    let mut col = 1u32;
    for ch in line.chars() {
        if visual >= regorus_col {
            break;
        }
        visual = visual.saturating_add(if ch == '\t' { 4 } else { 1 });
        col = col.saturating_add(1);
    }
    col
}

/// Every `Call` node below `node`, and both sides of every `with`.
fn collect_calls(
    node: &Json,
    file: &str,
    contents: &str,
    out: &mut Vec<CallInfo>,
    with_refs: &mut Vec<WithRef>,
) {
    match node {
        Json::Object(map) => {
            for w in map
                .get("with_mods")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                for side in ["refr", "as"] {
                    let Some(r) = w.get(side) else { continue };
                    // A side that is not a plain reference (a value) still marks the
                    // statement as using `with`.
                    let name = ref_names(r).filter(|n| !n.is_empty());
                    let span = refr_span(r).and_then(span_of);
                    with_refs.push(match (name, span) {
                        (Some(name), Some(s)) => WithRef {
                            name,
                            replacement: side == "as",
                            start: s.start,
                            end: s.end,
                        },
                        _ => WithRef {
                            name: Vec::new(),
                            replacement: side == "as",
                            start: 0,
                            end: 0,
                        },
                    });
                }
            }
            if let Some(call) = map.get("Call")
                && let Some(fcn) = call.get("fcn")
            {
                // The root variable's span: a call's own span points at its `(`.
                let root = root_var_span(fcn);
                let span = root.or_else(|| call.get("span"));
                out.push(CallInfo {
                    name: ref_names(fcn),
                    location: span
                        .map(|s| location(s, file, contents))
                        .unwrap_or(SourceLocation {
                            file: file.to_string(),
                            row: 0,
                            col: 0,
                        }),
                    root_start: root.and_then(span_of).map(|s| s.start),
                });
            }
            for v in map.values() {
                collect_calls(v, file, contents, out, with_refs);
            }
        }
        Json::Array(items) => {
            for v in items {
                collect_calls(v, file, contents, out, with_refs);
            }
        }
        _ => {}
    }
}

/// Every call that is a statement by itself (`literal.Expr.expr.Call`).
fn collect_statement_calls(node: &Json, out: &mut Vec<StatementCall>) {
    match node {
        Json::Object(map) => {
            if let Some(call) = map
                .get("literal")
                .and_then(|l| l.get("Expr"))
                .and_then(|e| e.get("expr"))
                .and_then(|e| e.get("Call"))
                && let Some(name) = call.get("fcn").and_then(ref_names)
                && let Some(span) = call.get("span").and_then(span_of)
            {
                let args: Option<Vec<(usize, usize)>> =
                    call.get("params").and_then(Json::as_array).and_then(|ps| {
                        ps.iter()
                            .map(|p| refr_span(p).and_then(span_of).map(|s| (s.start, s.end)))
                            .collect()
                    });
                // The call's own span starts at its `(`; the name's root starts it.
                let start = call
                    .get("fcn")
                    .and_then(root_var_span)
                    .and_then(span_of)
                    .map_or(span.start, |s| s.start);
                if let Some(args) = args {
                    out.push(StatementCall {
                        name,
                        start,
                        end: span.end,
                        args,
                    });
                }
            }
            for v in map.values() {
                collect_statement_calls(v, out);
            }
        }
        Json::Array(items) => {
            for v in items {
                collect_statement_calls(v, out);
            }
        }
        _ => {}
    }
}

/// `data.a.b["c.d"]`: the canonical rule path regorus accepts for a package path.
pub(crate) fn rule_path(components: &[String]) -> String {
    let mut out = String::from("data");
    for c in components {
        if is_identifier(c) {
            out.push('.');
            out.push_str(c);
        } else {
            out.push('[');
            // serde_json's string escaping is also valid Rego string syntax.
            out.push_str(&Json::String(c.clone()).to_string());
            out.push(']');
        }
    }
    out
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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

    fn info(src: &str) -> ModuleInfo {
        let mut e = regorus::Engine::new();
        e.add_policy("m.rego".into(), src.into()).unwrap();
        read_modules(&e).unwrap().remove(0)
    }

    #[test]
    fn reads_package_imports_rules_and_calls() {
        let m = info(
            "package p.q[\"x.y\"]\nimport data.lib as l\nimport data.other\n\
             test_a if { l.f(1); count([]) == 0 }\nd.e[x] := 1 if x := 2\n\
             s contains 1\ng(x) := x\ndefault h(_) := 0\n",
        );
        assert_eq!(m.package, vec!["p", "q", "x.y"]);
        assert_eq!(m.imports[0].path, vec!["data", "lib"]);
        assert_eq!(m.imports[0].alias, "l");
        assert_eq!(m.imports[1].alias, "other");
        let kinds: Vec<_> = m.rules.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            vec![
                RuleKind::Complete,
                RuleKind::Complete,
                RuleKind::Set,
                RuleKind::Function,
                RuleKind::Default
            ]
        );
        assert_eq!(m.rules[0].location.row, 4);
        assert_eq!(m.rules[1].ground_prefix(), vec!["d", "e"]);
        assert_eq!(m.rules[1].head[2], RefPart::Dynamic);
        assert!(m.rules[4].is_function);
        let names: Vec<_> = m
            .calls
            .iter()
            .map(|c| c.name.clone().unwrap().join("."))
            .collect();
        assert_eq!(names, vec!["l.f", "count"]);
        assert_eq!(m.calls[0].location.row, 4);
    }

    #[test]
    fn rule_paths_quote_non_identifiers() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            rule_path(&c(&["mcp", "tool_access", "allow"])),
            "data.mcp.tool_access.allow"
        );
        assert_eq!(
            rule_path(&c(&["graph", "1.0.0", "deny"])),
            "data.graph[\"1.0.0\"].deny"
        );
    }
}
