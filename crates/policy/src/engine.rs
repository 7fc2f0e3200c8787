//! Building one regorus engine from a bundle's modules and data, with the settings
//! that make it behave like OPA, and the compile-time checks regorus lacks.
//!
//! A fresh engine per bundle is not a choice: regorus cannot remove or replace a
//! module, and adding one twice makes every rule conflict with itself.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lockstep_bundle::Module;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, PolicyLengthConfig};

use crate::ast::{AstExport, ModuleInfo, read_modules};
use crate::checks::{check_calls, check_path_conflicts, qualify_local_calls};
use crate::error::{CompileError, Diagnostic, RvmError};
use crate::memo::{MemoOptions, MemoStatus};
use crate::shadow::RvmOptions;
use crate::sources::Sources;

/// How to turn modules and data into an engine. `Default` is what lockstep uses
/// everywhere: OPA's semantics, every check on.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// OPA's default is false: a builtin error (`to_number("x")`) makes the
    /// expression undefined. regorus defaults to true (an error); we set false.
    /// Note regorus documents that not every builtin honours the flag.
    pub strict_builtin_errors: bool,
    /// Refuse calls to undefined functions and to OPA builtins regorus lacks or stubs.
    pub check_calls: bool,
    /// Refuse rules whose path is also set by data, as OPA does.
    pub check_path_conflicts: bool,
    /// Abort any single evaluation after this long (regorus's execution timer).
    pub eval_timeout: Option<Duration>,
    /// regorus's parser limits. Its defaults (1024 columns, 20,000 lines, 1 MiB)
    /// reject generated Rego that OPA loads; ours are far above any hand-written file.
    pub max_columns: u32,
    pub max_lines: usize,
    pub max_file_bytes: usize,
    /// `regex.match`, `regex.find_n`, `regex.find_all_string_submatch_n`,
    /// `regex.split`, `regex.replace` and `glob.match` match on compiled patterns
    /// shared by every evaluation (in both evaluators), instead of regorus's
    /// builtins, which rebuild a regex's lazy DFA on every call (≈ 6 µs each). Off
    /// only to measure the difference; the semantics are OPA's either way, except
    /// four fixes on (see `matchers`).
    pub shared_matchers: bool,
    /// The decision memo ([`crate::MemoStatus`]): per entrypoint of a compiled set,
    /// decisions keyed by the input paths the entrypoint reads.
    pub memo: MemoOptions,
    /// Decisions on regorus's bytecode VM, verified against the interpreter on the
    /// requests themselves ([`crate::RvmOptions`]).
    pub rvm: RvmOptions,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            strict_builtin_errors: false,
            check_calls: true,
            check_path_conflicts: true,
            eval_timeout: None,
            max_columns: 1_000_000,
            max_lines: 10_000_000,
            max_file_bytes: 256 * 1024 * 1024,
            shared_matchers: true,
            memo: MemoOptions::default(),
            rvm: RvmOptions::default(),
        }
    }
}

/// An engine with every module and the data loaded and analysed.
pub(crate) struct Built {
    pub engine: Engine,
    /// What came of the modules alone; a later revision with the same modules and
    /// settings starts from it ([`build_reusing`]).
    pub loaded: Arc<Loaded>,
    /// [`CompileOptions::strict_builtin_errors`], for the RVM (set per VM).
    pub strict_builtin_errors: bool,
    /// [`CompileOptions::shared_matchers`], for the RVM's programs.
    pub shared_matchers: bool,
    pub memo: MemoOptions,
    pub rvm_options: RvmOptions,
}

/// Everything a compilation makes of the modules alone, before any data: parsed,
/// checked, edited and loaded. Revisions that change only data (the common publish:
/// an inventory, a role table) share it instead of parsing, exporting and checking the
/// same Rego again, which is most of a prepare's CPU (about 25 ms of 35 for the example
/// policies) and, on a machine running many instances, most of a cut-over's wait.
pub(crate) struct Loaded {
    key: LoadKey,
    /// Loaded with the edited modules, no data, not prepared: cloned per revision.
    template: Engine,
    /// The modules as written (before any [`Edit`]).
    pub modules: Vec<ModuleInfo>,
    /// The sources the engine was loaded with (after edits), for error columns.
    pub sources: Sources,
    pub rego_v0: bool,
    /// The modules as the RVM should compile them, when they differ (see
    /// [`rvm_assignment_edits`]).
    pub rvm: Option<RvmSources>,
    /// Problems found without the data (calls); reported with the data's.
    call_diags: Vec<Diagnostic>,
    /// The decision memo's analysis per entrypoint (modules only), at most
    /// [`MAX_FOOTPRINTS`].
    footprints: Mutex<HashMap<String, MemoStatus>>,
}

/// Entrypoints whose memo analysis one module set keeps (a policy set decides a few).
const MAX_FOOTPRINTS: usize = 256;

/// What a [`Loaded`] depends on: reusable only when all of it is equal. Built by
/// destructuring, so a new compile option must be placed on one side or the other.
#[derive(PartialEq)]
struct LoadKey {
    modules: Vec<Module>,
    strict_builtin_errors: bool,
    check_calls: bool,
    eval_timeout: Option<Duration>,
    max_columns: u32,
    max_lines: usize,
    max_file_bytes: usize,
    shared_matchers: bool,
    gather_prints: bool,
    edits: Vec<Edit>,
}

impl LoadKey {
    fn new(modules: &[Module], opts: &CompileOptions, extras: &Extras) -> Self {
        let CompileOptions {
            strict_builtin_errors,
            check_calls,
            // Checked against each revision's data.
            check_path_conflicts: _,
            eval_timeout,
            max_columns,
            max_lines,
            max_file_bytes,
            shared_matchers,
            // Decision-time settings, read from `Built`.
            memo: _,
            rvm: _,
        } = opts.clone();
        let Extras {
            gather_prints,
            edits,
        } = extras.clone();
        Self {
            modules: modules.to_vec(),
            strict_builtin_errors,
            check_calls,
            eval_timeout,
            max_columns,
            max_lines,
            max_file_bytes,
            shared_matchers,
            gather_prints,
            edits,
        }
    }
}

impl Loaded {
    /// The memo analysis of each of `entrypoints`, from one AST export for all the
    /// missing ones.
    pub fn footprints(&self, entrypoints: &[&str]) -> Vec<MemoStatus> {
        let mut known = self
            .footprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut export = None;
        let mut out = Vec::with_capacity(entrypoints.len());
        for e in entrypoints {
            if let Some(status) = known.get(*e) {
                out.push(status.clone());
                continue;
            }
            let status = match export.get_or_insert_with(|| AstExport::of(&self.template)) {
                Ok(export) => crate::memo::footprint(export, e),
                Err(why) => crate::memo::unanalysed(why),
            };
            if known.len() < MAX_FOOTPRINTS {
                known.insert((*e).to_string(), status.clone());
            }
            out.push(status);
        }
        out
    }
}

/// Modules rewritten for regorus's RVM, compiled only if an RVM is asked for.
#[derive(Debug, Clone)]
pub(crate) struct RvmSources {
    modules: Vec<Module>,
    opts: CompileOptions,
    rego_v0: bool,
}

impl RvmSources {
    /// A prepared engine of the rewritten modules with `data`.
    pub fn engine(&self, data: &regorus::Value) -> Result<Engine, RvmError> {
        let sources = Sources::new(&self.modules);
        let mut engine = load(
            &self.modules,
            &self.opts,
            self.rego_v0,
            &Extras::default(),
            &sources,
        )
        .map_err(|e| RvmError::Load(e.to_string()))?;
        engine
            .add_data(data.clone())
            .map_err(|e| RvmError::Load(format!("{e:#}")))?;
        engine
            .eval_query("true".to_string(), false)
            .map_err(|e| RvmError::Load(format!("{e:#}")))?;
        Ok(engine)
    }
}

/// `x := e` → `x = e` wherever that means the same (`ast::colon_assignments`, and
/// `x` is no rule, function or import name visible in the module): regorus 0.14.1's
/// RVM does not fail a body when `:=` binds an undefined value, but does when `=`
/// does. Same length, so every location stays where it was.
fn rvm_assignment_edits(infos: &[ModuleInfo]) -> Vec<Edit> {
    use crate::ast::RefPart;
    let mut edits = Vec::new();
    // Test modules are never compiled for the RVM's entrypoints.
    for (idx, m) in infos
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.file.ends_with("_test.rego"))
    {
        let mut taken: std::collections::HashSet<&str> = ["input", "data"].into_iter().collect();
        for other in infos.iter().filter(|o| o.package == m.package) {
            for r in &other.rules {
                if let Some(RefPart::Name(n)) = r.head.first() {
                    taken.insert(n);
                }
            }
        }
        taken.extend(m.imports.iter().map(|i| i.alias.as_str()));
        for r in &m.rules {
            for a in r
                .colon_assigns
                .iter()
                .filter(|a| !taken.contains(a.var.as_str()))
            {
                edits.push(Edit {
                    module: idx,
                    start: a.op_start,
                    end: a.op_start + 2,
                    text: " =".to_string(),
                });
            }
        }
    }
    edits
}

/// Settings only the test runner needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    pub gather_prints: bool,
    /// Source edits to apply before loading (renamed duplicate tests).
    pub edits: Vec<Edit>,
}

/// A replacement of `start..end` (byte offsets) in module number `module`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edit {
    pub module: usize,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// The data document as a regorus value; it must be an object.
pub(crate) fn data_from_json(data: &serde_json::Value) -> Result<regorus::Value, CompileError> {
    if !data.is_object() {
        return Err(CompileError::Data(format!(
            "the data document must be an object, got {}",
            json_kind(data)
        )));
    }
    regorus::Value::deserialize_from(data).map_err(|e| CompileError::Data(e.to_string()))
}

pub(crate) fn build(
    modules: &[Module],
    data: regorus::Value,
    opts: &CompileOptions,
    extras: &Extras,
) -> Result<Built, CompileError> {
    build_with_data(modules, |_| Ok(data), opts, extras)
}

/// [`build`] with the data made once the modules are parsed: a caller that only checks a
/// bundle needs no more of its data than the rules' paths reach.
pub(crate) fn build_with_data(
    modules: &[Module],
    data: impl FnOnce(&[ModuleInfo]) -> Result<regorus::Value, CompileError>,
    opts: &CompileOptions,
    extras: &Extras,
) -> Result<Built, CompileError> {
    build_reusing(modules, data, opts, extras, None)
}

/// [`build_with_data`] starting from `previous` when it was made of the same modules with
/// the same settings: only the data is new, so only what depends on it is redone (the
/// rule/data path conflicts, loading the data, regorus's preparation).
pub(crate) fn build_reusing(
    modules: &[Module],
    data: impl FnOnce(&[ModuleInfo]) -> Result<regorus::Value, CompileError>,
    opts: &CompileOptions,
    extras: &Extras,
    previous: Option<&Arc<Loaded>>,
) -> Result<Built, CompileError> {
    let key = LoadKey::new(modules, opts, extras);
    let loaded = match previous {
        Some(p) if p.key == key => Arc::clone(p),
        _ => Arc::new(load_modules(modules, opts, extras, key)?),
    };
    let data = data(&loaded.modules)?;
    let mut diags = loaded.call_diags.clone();
    // Before add_data: once loaded, regorus would silently let data win.
    if opts.check_path_conflicts {
        diags.extend(check_path_conflicts(&loaded.modules, &data));
    }
    if !diags.is_empty() {
        return Err(CompileError::Policy(diags));
    }
    if !matches!(data, regorus::Value::Object(_)) {
        return Err(CompileError::Data(
            "the data document must be an object".to_string(),
        ));
    }
    let mut engine = loaded.template.clone();
    engine
        .add_data(data)
        .map_err(|e| CompileError::Data(format!("{e:#}")))?;

    // The first evaluation runs regorus's analysis (unsafe variables, recursion,
    // scheduling) and marks the engine prepared: clones made after it share the
    // analysis instead of redoing it on every request. A trivial query prepares
    // without evaluating any rule, so no rule can fail here on the empty input.
    engine.eval_query("true".to_string(), false).map_err(|e| {
        CompileError::Policy(vec![
            loaded
                .sources
                .fix(Diagnostic::from_regorus(&e, "rego_compile_error")),
        ])
    })?;

    Ok(Built {
        engine,
        loaded,
        strict_builtin_errors: opts.strict_builtin_errors,
        shared_matchers: opts.shared_matchers,
        memo: opts.memo.clone(),
        rvm_options: opts.rvm.clone(),
    })
}

/// The modules parsed, read, checked for calls and edited into the engine that every
/// revision of them clones.
fn load_modules(
    modules: &[Module],
    opts: &CompileOptions,
    extras: &Extras,
    key: LoadKey,
) -> Result<Loaded, CompileError> {
    let rego_v0 = single_rego_version(modules)?;
    let mut sources = Sources::new(modules);
    let mut engine = load(modules, opts, rego_v0, extras, &sources)?;
    let mut infos = read_modules(&engine)?;
    // OPA's output-argument calls of provided builtins become `=` statements; parsed
    // again (only bundles that write them pay for it).
    let rewritten;
    let outputs = crate::builtins::output_args::edits(&infos, modules);
    let modules = if outputs.is_empty() {
        modules
    } else {
        rewritten = apply_edits(modules, &outputs);
        sources = Sources::new(&rewritten);
        engine = load(&rewritten, opts, rego_v0, extras, &sources)?;
        infos = read_modules(&engine)?;
        &rewritten[..]
    };
    let call_diags = if opts.check_calls {
        check_calls(&infos)
    } else {
        Vec::new()
    };

    let mut edits = extras.edits.clone();
    let mut wrappers = None;
    if infos.iter().any(|m| m.has_with) {
        edits.extend(qualify_local_calls(&infos));
        // `with` naming a builtin lockstep provides: calls go through mockable wrappers.
        if let Some((mock_edits, module)) = crate::builtins::mocks::rewrite(&infos, modules) {
            edits.extend(mock_edits);
            wrappers = Some(module);
        }
    }
    let with_wrappers = |mut edited: Vec<Module>| {
        edited.extend(wrappers.iter().cloned());
        edited
    };
    let rvm = rvm_assignment_edits(&infos);
    let rvm = (!rvm.is_empty()).then(|| RvmSources {
        modules: with_wrappers(apply_edits(modules, &[edits.clone(), rvm].concat())),
        opts: opts.clone(),
        rego_v0,
    });
    let sources = if edits.is_empty() || !call_diags.is_empty() {
        sources
    } else {
        let edited = with_wrappers(apply_edits(modules, &edits));
        let sources = Sources::new(&edited);
        engine = load(&edited, opts, rego_v0, extras, &sources)?;
        sources
    };
    Ok(Loaded {
        key,
        template: engine,
        modules: infos,
        sources,
        rego_v0,
        rvm,
        call_diags,
        footprints: Mutex::new(HashMap::new()),
    })
}

/// Every module parsed, not compiled: what each declares, as regorus reads it (with
/// the same settings a compilation uses), for callers that must know a module's
/// paths before compiling it.
pub(crate) fn parse(
    modules: &[Module],
    opts: &CompileOptions,
) -> Result<Vec<ModuleInfo>, CompileError> {
    let rego_v0 = single_rego_version(modules)?;
    let sources = Sources::new(modules);
    let engine = load(modules, opts, rego_v0, &Extras::default(), &sources)?;
    read_modules(&engine)
}

/// A configured engine with every module parsed; all parse errors reported.
fn load(
    modules: &[Module],
    opts: &CompileOptions,
    rego_v0: bool,
    extras: &Extras,
    sources: &Sources,
) -> Result<Engine, CompileError> {
    let mut engine = configured_engine(opts, rego_v0, extras)?;
    let mut diags = Vec::new();
    for m in modules {
        if let Err(e) = engine.add_policy(m.path.clone(), m.source.clone()) {
            diags.push(sources.fix(Diagnostic::from_regorus(&e, "rego_parse_error")));
        }
    }
    if diags.is_empty() {
        Ok(engine)
    } else {
        Err(CompileError::Policy(diags))
    }
}

/// Apply edits to module sources (from the end of each file, so earlier
/// offsets stay valid). Edits outside the text are ignored.
fn apply_edits(modules: &[Module], edits: &[Edit]) -> Vec<Module> {
    let mut out = modules.to_vec();
    for (idx, module) in out.iter_mut().enumerate() {
        let mut mine: Vec<&Edit> = edits.iter().filter(|e| e.module == idx).collect();
        mine.sort_by_key(|e| std::cmp::Reverse(e.start));
        for e in mine {
            if module.source.get(e.start..e.end).is_some() {
                module.source.replace_range(e.start..e.end, &e.text);
            }
        }
    }
    out
}

/// regorus applies `set_rego_v0` to the whole engine, so all modules must agree.
fn single_rego_version(modules: &[Module]) -> Result<bool, CompileError> {
    let mut v0_file = None;
    let mut v1_file = None;
    for m in modules {
        match m.rego_version {
            0 => v0_file = v0_file.or(Some(&m.path)),
            1 => v1_file = v1_file.or(Some(&m.path)),
            version => {
                return Err(CompileError::InvalidRegoVersion {
                    file: m.path.clone(),
                    version,
                });
            }
        }
    }
    match (v0_file, v1_file) {
        (Some(v0), Some(v1)) => Err(CompileError::MixedRegoVersions {
            v0_file: v0.clone(),
            v1_file: v1.clone(),
        }),
        (v0, _) => Ok(v0.is_some()),
    }
}

fn configured_engine(
    opts: &CompileOptions,
    rego_v0: bool,
    extras: &Extras,
) -> Result<Engine, CompileError> {
    let mut engine = Engine::new();
    // Before any module: `regex.*` and `glob.match` match on shared compiled
    // patterns instead of regorus's per-call clones (see `matchers`).
    if opts.shared_matchers {
        crate::matchers::install(&mut engine, opts.strict_builtin_errors).map_err(|e| {
            CompileError::Internal(format!("registering the shared matchers: {e:#}"))
        })?;
    }
    // The OPA builtins regorus lacks (`crypto.*`, `io.jwt.*`, `net.cidr_*`; see
    // `builtins`).
    crate::builtins::install(&mut engine, opts.strict_builtin_errors)
        .map_err(|e| CompileError::Internal(format!("registering lockstep's builtins: {e:#}")))?;
    engine.set_rego_v0(rego_v0);
    engine.set_strict_builtin_errors(opts.strict_builtin_errors);
    engine.set_gather_prints(extras.gather_prints);
    let defaults = PolicyLengthConfig::default();
    engine.set_policy_length_config(PolicyLengthConfig {
        max_col: NonZeroU32::new(opts.max_columns).unwrap_or(defaults.max_col),
        max_file_bytes: NonZeroUsize::new(opts.max_file_bytes).unwrap_or(defaults.max_file_bytes),
        max_lines: NonZeroUsize::new(opts.max_lines).unwrap_or(defaults.max_lines),
    });
    if let Some(limit) = opts.eval_timeout {
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit,
            // Check the clock often enough for a ms-scale limit to be honoured.
            check_interval: NonZeroU32::MIN,
        });
    }
    Ok(engine)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// serde_json -> regorus without cloning the JSON tree.
pub(crate) trait DeserializeFrom: Sized {
    fn deserialize_from(v: &serde_json::Value) -> Result<Self, serde_json::Error>;
}

impl DeserializeFrom for regorus::Value {
    fn deserialize_from(v: &serde_json::Value) -> Result<Self, serde_json::Error> {
        use serde::Deserialize;
        regorus::Value::deserialize(v)
    }
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

    fn module(path: &str, source: &str, rego_version: i64) -> Module {
        Module {
            path: path.into(),
            source: source.into(),
            rego_version,
        }
    }

    #[test]
    fn mixed_versions_are_refused_with_both_files_named() {
        let err = single_rego_version(&[
            module("a.rego", "package a", 1),
            module("b.rego", "package b", 0),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("b.rego is v0") && text.contains("a.rego is v1"),
            "{text}"
        );
    }

    #[test]
    fn unknown_rego_version_is_refused() {
        let err = single_rego_version(&[module("a.rego", "package a", 2)]).unwrap_err();
        assert!(matches!(
            err,
            CompileError::InvalidRegoVersion { version: 2, .. }
        ));
    }

    #[test]
    fn every_parse_error_is_reported() {
        let err = build(
            &[
                module("a.rego", "package a\n\nx := \n", 1),
                module("b.rego", "package b\n\ny if {\n", 1),
            ],
            regorus::Value::new_object(),
            &CompileOptions::default(),
            &Extras::default(),
        )
        .err()
        .unwrap();
        let diags = err.diagnostics();
        assert_eq!(diags.len(), 2, "{err}");
        assert!(diags.iter().all(|d| d.code == "rego_parse_error"));
        assert_eq!(diags[0].location.as_ref().unwrap().file, "a.rego");
        assert_eq!(diags[1].location.as_ref().unwrap().file, "b.rego");
    }

    #[test]
    fn data_must_be_an_object() {
        let err = data_from_json(&serde_json::json!([1])).err().unwrap();
        assert_eq!(
            err.to_string(),
            "invalid data: the data document must be an object, got an array"
        );
    }
}
