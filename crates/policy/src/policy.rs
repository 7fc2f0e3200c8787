//! [`PolicySet`]: a compiled bundle, evaluated concurrently through `&self`.
//!
//! The set holds one *prepared* regorus engine (modules, data, analysis). Every
//! evaluation clones it (about 0.13 µs: modules, data and analysis are shared
//! behind `Arc`s) so evaluations never share mutable state and the set is
//! `Send + Sync` without locks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use lockstep_bundle::{Bundle, Module};
use regorus::Engine;
use serde_json::Value as Json;

use crate::ast::rule_path;
use crate::data::{DataDocument, bundle_data, bundle_data_shape};
use crate::decision::{Backend, DecisionFn, compile_rvm, verified_rvm};
use crate::engine::{
    Built, CompileOptions, DeserializeFrom, Extras, Loaded, build, build_reusing, build_with_data,
    data_from_json,
};
use crate::error::{CompileError, EvalError, RvmError};
use crate::memo::{EntryMemo, MemoOptions, MemoStats, MemoStatus};
use crate::per_entrypoint::PerEntrypoint;
use crate::result::ResultSet;
use crate::shadow::{Plan, RvmOptions, RvmSlot};

/// An input document converted once to regorus's value type, so a hot path that
/// evaluates several rules for one request converts it only once.
#[derive(Debug, Clone)]
pub struct Input(pub(crate) regorus::Value);

impl Input {
    pub fn from_json(v: &Json) -> Result<Self, EvalError> {
        regorus::Value::deserialize_from(v)
            .map(Self)
            .map_err(|e| EvalError::Input(e.to_string()))
    }

    pub fn parse_json(text: &str) -> Result<Self, EvalError> {
        regorus::Value::from_json_str(text)
            .map(Self)
            .map_err(|e| EvalError::Input(format!("{e:#}")))
    }
}

/// Entrypoints with a decision memo per compiled set; paths beyond these (a REST
/// client asking for many documents) are evaluated without one.
const MAX_MEMOS: usize = 64;

/// A compiled bundle. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct PolicySet {
    inner: Arc<Inner>,
}

struct Inner {
    /// Prepared template, cloned per evaluation. Never evaluated directly.
    engine: Engine,
    data: regorus::Value,
    /// Canonical paths (`data.a.b`) of every non-function rule's static head:
    /// the paths `eval_rule` can take.
    rule_paths: HashSet<String>,
    packages: Vec<String>,
    /// Packages whose document is exactly an object of single-name rules (no
    /// sub-packages, no data under them): key -> rule path. These can be
    /// evaluated rule by rule, e.g. by the bytecode VM.
    flat_packages: HashMap<String, Vec<(String, String)>>,
    /// Constructs on which regorus's RVM disagrees with its interpreter (and
    /// OPA); while any is present, decision functions use the interpreter.
    rvm_blockers: Vec<String>,
    strict_builtin_errors: bool,
    shared_matchers: bool,
    memo_options: MemoOptions,
    /// Decision memos by entrypoint, made on first use (at most [`MAX_MEMOS`]).
    memos: PerEntrypoint<EntryMemo>,
    /// The bytecode VM per entrypoint, made on first use (at most [`MAX_MEMOS`]) or
    /// by [`PolicySet::use_rvm`], and its verification state ([`crate::shadow`]).
    rvms: PerEntrypoint<RvmSlot>,
    rvm_options: RvmOptions,
    /// The prepared engine of the modules as the RVM compiles them (`loaded.rvm`),
    /// loaded once for every entrypoint's VM (a load is a whole compilation).
    rvm_engine: OnceLock<Result<Engine, RvmError>>,
    /// What the modules alone made: sources for error columns, the RVM's modules, the
    /// memo analyses; shared with the next revision of the same modules.
    loaded: Arc<Loaded>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("packages", &self.inner.packages)
            .field("rego_v0", &self.inner.loaded.rego_v0)
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    /// Compile modules and data into a ready-to-evaluate set.
    ///
    /// Refused, with file:line:col for each problem: parse errors, unsafe
    /// variables, recursion, calls to undefined functions or to OPA builtins
    /// regorus lacks or stubs, rules whose path data also sets, modules mixing
    /// Rego v0 and v1, data that is not an object.
    pub fn compile(
        modules: &[Module],
        data: Json,
        opts: &CompileOptions,
    ) -> Result<Self, CompileError> {
        let data = data_from_json(&data)?;
        let built = build(modules, data, opts, &Extras::default())?;
        Ok(Self::from_built(built))
    }

    /// [`Self::compile`] with data already in the engine's values (a [`DataDocument`]
    /// assembled from several bundles and an overlay).
    pub fn compile_document(
        modules: &[Module],
        data: DataDocument,
        opts: &CompileOptions,
    ) -> Result<Self, CompileError> {
        let built = build(modules, data.0, opts, &Extras::default())?;
        Ok(Self::from_built(built))
    }

    /// [`Self::compile_document`] for the successor of `previous`: when the modules and
    /// settings are the ones `previous` was compiled from (a revision that changes only
    /// data), what the modules alone made is taken from it, not parsed, exported and
    /// checked again, and its memo analyses carry over. The result is the same set
    /// [`Self::compile_document`] makes.
    pub fn compile_document_after(
        previous: &PolicySet,
        modules: &[Module],
        data: DataDocument,
        opts: &CompileOptions,
    ) -> Result<Self, CompileError> {
        let built = build_reusing(
            modules,
            |_| Ok(data.0),
            opts,
            &Extras::default(),
            Some(&previous.inner.loaded),
        )?;
        Ok(Self::from_built(built))
    }

    /// Whether `self` and `other` were compiled from one loading of their modules
    /// ([`Self::compile_document_after`] took it over), for tests and diagnostics.
    pub fn shares_modules_with(&self, other: &PolicySet) -> bool {
        Arc::ptr_eq(&self.inner.loaded, &other.inner.loaded)
    }

    /// [`Self::compile`] for a bundle read with `lazy_data` (`ReadOptions` /
    /// `BuildOptions`): each `data.json` is parsed from `bundle.files` straight
    /// into the engine's values, with OPA's merge-conflict and roots checks, so
    /// no `serde_json` tree of the data is ever built. This is how a large
    /// bundle should be activated: the tree alone is about 8x the JSON's size.
    /// `bundle.data` (YAML data files, which the lazy reader still parses) is
    /// included.
    pub fn compile_bundle(bundle: &Bundle, opts: &CompileOptions) -> Result<Self, CompileError> {
        let data = bundle_data(bundle)?;
        let built = build(&bundle.modules, data, opts, &Extras::default())?;
        Ok(Self::from_built(built))
    }

    /// Every check [`Self::compile_bundle`] makes (Rego, calls, rule/data path conflicts,
    /// data merges, roots, valid JSON), without loading the data into the engine: each
    /// `data.json` is validated in full but kept only as the object keys down to the
    /// depth the rules' paths and the roots reach (`lockstep build`: a 100 MB inventory
    /// nobody's rule path enters costs a scan, not 5-6x its size in engine values).
    pub fn check_bundle(bundle: &Bundle, opts: &CompileOptions) -> Result<(), CompileError> {
        build_with_data(
            &bundle.modules,
            |infos| {
                let rule_depth = infos
                    .iter()
                    .flat_map(|m| {
                        m.rules
                            .iter()
                            .map(|r| m.package.len() + r.ground_prefix().len())
                    })
                    .max()
                    .unwrap_or(0);
                let root_depth = bundle
                    .manifest
                    .effective_roots()
                    .iter()
                    .map(|r| r.split('/').filter(|s| !s.is_empty()).count())
                    .max()
                    .unwrap_or(0);
                // The shape can only refuse more (a roots walk that OPA's quirk takes
                // deeper than the shape reaches): the whole data gives the exact verdict.
                bundle_data_shape(bundle, rule_depth.max(root_depth))
                    .or_else(|_| bundle_data(bundle))
            },
            opts,
            &Extras::default(),
        )
        .map(|_| ())
    }

    pub(crate) fn from_built(built: Built) -> Self {
        let Built {
            engine,
            loaded,
            strict_builtin_errors,
            shared_matchers,
            memo: memo_options,
            rvm_options,
        } = built;
        let modules = &loaded.modules;
        let mut rule_paths = HashSet::new();
        let mut packages = Vec::new();
        for m in modules {
            let pkg = rule_path(&m.package);
            if !packages.contains(&pkg) {
                packages.push(pkg);
            }
            for r in m.rules.iter().filter(|r| !r.is_function) {
                let mut path = m.package.clone();
                path.extend(r.ground_prefix());
                rule_paths.insert(rule_path(&path));
            }
        }
        let data = engine.get_data();
        let flat_packages = flat_packages(modules, &data);
        let rvm_blockers = rvm_blockers(modules);
        Self {
            inner: Arc::new(Inner {
                engine,
                data,
                rule_paths,
                packages,
                flat_packages,
                rvm_blockers,
                strict_builtin_errors,
                shared_matchers,
                memo_options,
                memos: PerEntrypoint::new(MAX_MEMOS),
                rvms: PerEntrypoint::new(MAX_MEMOS),
                rvm_options,
                rvm_engine: OnceLock::new(),
                loaded,
            }),
        }
    }

    /// Evaluate an arbitrary Rego query, returning OPA's result set
    /// (empty when the query is undefined).
    pub fn eval_query(&self, query: &str, input: Option<&Json>) -> Result<ResultSet, EvalError> {
        let input = input.map(Input::from_json).transpose()?;
        let mut engine = self.engine_with(input.as_ref());
        let results = engine
            .eval_query(query.to_string(), false)
            .map_err(|e| self.eval_error(&e))?;
        ResultSet::from_regorus(&results)
    }

    /// Evaluate the rule at `path` (`data.mcp.tool_access.allow`). `None` when
    /// undefined. Errors if `path` is not a rule: use [`Self::eval_data_path`]
    /// for packages and data.
    pub fn eval_rule(&self, path: &str, input: Option<&Json>) -> Result<Option<Json>, EvalError> {
        let input = input.map(Input::from_json).transpose()?;
        self.eval_rule_input(path, input.as_ref())
    }

    /// [`Self::eval_rule`] with an already converted input.
    pub fn eval_rule_input(
        &self,
        path: &str,
        input: Option<&Input>,
    ) -> Result<Option<Json>, EvalError> {
        let mut engine = self.engine_with(input);
        let value = engine
            .eval_rule(path.to_string())
            .map_err(|e| self.eval_error(&e))?;
        to_json(value)
    }

    /// The document at a `data` path: a rule, a package (an object of all its
    /// rules, like OPA's `GET /v1/data/mcp/tool_access`), or plain data.
    /// `None` when undefined.
    ///
    /// With an input, decisions go through the entrypoint's memo (see
    /// [`Self::memo_status`]): an input that agrees with an earlier one on every
    /// path the entrypoint reads gets the earlier decision without an evaluation.
    pub fn eval_data_path(
        &self,
        path: &str,
        input: Option<&Json>,
    ) -> Result<Option<Json>, EvalError> {
        let Some(json) = input else {
            return self.eval_data_path_uncached(path, None);
        };
        let memo = self.memo(path);
        let key = memo.as_ref().and_then(|m| m.key_json(json));
        if let (Some(memo), Some(key)) = (&memo, &key)
            && let Some(hit) = memo.get(key)
        {
            return Ok(hit);
        }
        let input = Input::from_json(json)?;
        let value = self.eval_fast(path, &input)?;
        if let (Some(memo), Some(key)) = (memo, key) {
            memo.insert(key, &value);
        }
        Ok(value)
    }

    /// [`Self::eval_data_path`] with an already converted input.
    pub fn eval_data_path_input(
        &self,
        path: &str,
        input: Option<&Input>,
    ) -> Result<Option<Json>, EvalError> {
        let Some(input) = input else {
            return self.eval_data_path_uncached(path, None);
        };
        let memo = self.memo(path);
        let key = memo.as_ref().and_then(|m| m.key(&input.0));
        if let (Some(memo), Some(key)) = (&memo, &key)
            && let Some(hit) = memo.get(key)
        {
            return Ok(hit);
        }
        let value = self.eval_fast(path, input)?;
        if let (Some(memo), Some(key)) = (memo, key) {
            memo.insert(key, &value);
        }
        Ok(value)
    }

    /// The entrypoints decided on this set so far (with a memo analysis or a bytecode
    /// VM made for them), sorted: what its successor should [`Self::warm`].
    pub fn entrypoints_used(&self) -> Vec<String> {
        let mut used = self.inner.memos.entrypoints();
        used.extend(self.inner.rvms.entrypoints());
        used.sort();
        used.dedup();
        used
    }

    /// Makes now what the first decision of each of `entrypoints` would make (its memo
    /// analysis, its bytecode VM), evaluating nothing: a revision prepared ahead of a
    /// synchronized switch then answers its first requests as fast as the later ones,
    /// instead of every instance compiling at the same instant.
    pub fn warm(&self, entrypoints: &[String]) {
        if self.inner.memo_options.enabled {
            // One AST export for every analysis still to make.
            let all: Vec<&str> = entrypoints.iter().map(String::as_str).collect();
            self.inner.loaded.footprints(&all);
        }
        for e in entrypoints {
            let _ = self.memo(e);
            let _ = self.rvm_slot(e);
        }
    }

    /// Whether decisions for `entrypoint` are memoized, and on which input paths (or
    /// why not). The analysis runs once per entrypoint and compiled set.
    pub fn memo_status(&self, entrypoint: &str) -> MemoStatus {
        match self.memo(entrypoint) {
            Some(m) => m.status.clone(),
            None => MemoStatus::Off {
                reason: format!("more than {MAX_MEMOS} entrypoints have a memo"),
            },
        }
    }

    /// Hits, misses, evictions and size of `entrypoint`'s memo.
    pub fn memo_stats(&self, entrypoint: &str) -> MemoStats {
        self.memo(entrypoint).map(|m| m.stats()).unwrap_or_default()
    }

    /// The memo of `entrypoint`, made (and its refusal logged) on first use.
    pub(crate) fn memo(&self, entrypoint: &str) -> Option<Arc<EntryMemo>> {
        self.inner.memos.get_or_make(entrypoint, || {
            let memo = EntryMemo::new(
                || {
                    let mut one = self.inner.loaded.footprints(&[entrypoint]);
                    one.pop()
                        .unwrap_or_else(|| crate::memo::unanalysed("not analysed"))
                },
                &self.inner.memo_options,
            );
            match &memo.status {
                MemoStatus::On { footprint } => {
                    tracing::debug!(entrypoint, paths = footprint.len(), "decision memo on")
                }
                MemoStatus::Off { reason } => {
                    tracing::info!(entrypoint, reason = reason.as_str(), "decision memo off")
                }
            }
            memo
        })
    }

    /// Let [`Self::eval_data_path`] (and so an agent's or gateway's decisions) run
    /// `entrypoint` on regorus's bytecode VM at once, if it compiles it and agrees
    /// with the interpreter on every probe (as [`Self::decision_fn_rvm`]): no shadow
    /// phase, rechecks as [`RvmOptions`] says. A refusal is kept: the entrypoint is
    /// then interpreted. Returns which evaluator `entrypoint` now uses, and why.
    pub fn use_rvm(&self, entrypoint: &str, probes: &[Input]) -> Backend {
        let (slot, backend) = match verified_rvm(self, entrypoint, probes) {
            Ok(rvm) => (RvmSlot::compiled(rvm, true), Backend::Rvm),
            Err(reason) => {
                let reason = reason.to_string();
                (
                    RvmSlot::refused(reason.clone()),
                    Backend::Interpreter { reason },
                )
            }
        };
        self.inner.rvms.set(entrypoint, slot);
        backend
    }

    /// Which evaluator decides `entrypoint` now ([`crate::shadow`]): the RVM once it
    /// has been verified (on probes, or on its shadow decisions and not retired),
    /// otherwise the interpreter, and why.
    pub fn backend(&self, entrypoint: &str) -> Backend {
        if !self.inner.rvm_options.enabled {
            return Backend::Interpreter {
                reason: "the RVM is turned off".to_string(),
            };
        }
        let Some(slot) = self.inner.rvms.get(entrypoint) else {
            return Backend::Interpreter {
                reason: "not evaluated with an input yet".to_string(),
            };
        };
        if slot.verified(&self.inner.rvm_options) {
            return Backend::Rvm;
        }
        let reason = slot.interpreter_reason().unwrap_or_else(|| {
            format!(
                "shadow: {} of {} decisions checked against the interpreter",
                slot.decisions(),
                self.inner.rvm_options.verify_first
            )
        });
        Backend::Interpreter { reason }
    }

    /// The RVM slot of `entrypoint`, compiled on first use.
    fn rvm_slot(&self, entrypoint: &str) -> Option<Arc<RvmSlot>> {
        if !self.inner.rvm_options.enabled {
            return None;
        }
        self.inner
            .rvms
            .get_or_make(entrypoint, || match compile_rvm(self, entrypoint) {
                Ok(rvm) => {
                    tracing::debug!(
                        entrypoint,
                        "bytecode VM compiled, shadowing the interpreter"
                    );
                    RvmSlot::compiled(rvm, false)
                }
                Err(e) => {
                    tracing::debug!(entrypoint, reason = %e, "bytecode VM refused");
                    RvmSlot::refused(e.to_string())
                }
            })
    }

    /// One decision: on the RVM where [`crate::shadow`] lets it answer, otherwise
    /// (and whenever it fails) on the interpreter.
    fn eval_fast(&self, path: &str, input: &Input) -> Result<Option<Json>, EvalError> {
        let Some(slot) = self.rvm_slot(path) else {
            return self.eval_data_path_uncached(path, Some(input));
        };
        match slot.plan(&self.inner.rvm_options) {
            Plan::Interpret => self.eval_data_path_uncached(path, Some(input)),
            Plan::Serve(rvm) => match rvm.eval(self.data(), input).map(to_json) {
                Ok(Ok(value)) => Ok(value),
                _ => self.eval_data_path_uncached(path, Some(input)),
            },
            Plan::Check(rvm) => {
                let slow = self.eval_data_path_uncached(path, Some(input));
                let fast = rvm.eval(self.data(), input).ok().map(to_json);
                let fast = match &fast {
                    Some(Ok(v)) => Some(v),
                    _ => None,
                };
                slot.compare(path, fast, &slow);
                slow
            }
        }
    }

    /// [`Self::eval_data_path_input`] without the memo.
    pub(crate) fn eval_data_path_uncached(
        &self,
        path: &str,
        input: Option<&Input>,
    ) -> Result<Option<Json>, EvalError> {
        if self.is_rule_path(path) {
            let mut engine = self.engine_with(input);
            match engine.eval_rule(path.to_string()) {
                Ok(v) => return to_json(v),
                // regorus refuses some rule shapes (e.g. prefixes of ref heads)
                // that a query handles; anything else is a real evaluation error.
                Err(e) if format!("{e:#}").contains("not a valid rule path") => {}
                Err(e) => return Err(self.eval_error(&e)),
            }
        }
        let mut engine = self.engine_with(input);
        let results = engine
            .eval_query(path.to_string(), false)
            .map_err(|e| self.eval_error(&e))?;
        let set = ResultSet::from_regorus(&results)?;
        Ok(set.into_first_value())
    }

    /// A reusable evaluator for one entrypoint (a rule or a package), using the
    /// interpreter: OPA's semantics for all of Rego. See [`DecisionFn`].
    pub fn decision_fn(&self, entrypoint: &str) -> DecisionFn {
        DecisionFn::interpreter_only(self.clone(), entrypoint)
    }

    /// Like [`Self::decision_fn`], but through regorus's bytecode VM when it
    /// compiles the entrypoint and agrees with the interpreter on every probe;
    /// the interpreter otherwise ([`DecisionFn::backend`] says which and why).
    pub fn decision_fn_rvm(&self, entrypoint: &str, probes: &[Input]) -> DecisionFn {
        DecisionFn::with_rvm(self.clone(), entrypoint, probes)
    }

    /// Whether `path` is the static path of a (non-function) rule.
    pub fn is_rule_path(&self, path: &str) -> bool {
        self.inner.rule_paths.contains(path)
    }

    /// For a package whose document is an object of single-name rules: each
    /// rule's key and path. `None` for rules, data, nested or mixed packages.
    pub(crate) fn flat_package(&self, path: &str) -> Option<&[(String, String)]> {
        self.inner.flat_packages.get(path).map(Vec::as_slice)
    }

    /// Why decision functions cannot use the RVM for this bundle (empty if they can).
    pub fn rvm_blockers(&self) -> &[String] {
        &self.inner.rvm_blockers
    }

    /// Package paths (`data.mcp.tool_access`), in module order, deduplicated.
    pub fn packages(&self) -> &[String] {
        &self.inner.packages
    }

    /// [`Self::packages`] less those declared only in test files (`*_test.rego`): what
    /// decisions can read. Evaluating a test package runs its tests, which for the
    /// example policies is six times the cost of evaluating the rest.
    pub fn packages_outside_tests(&self) -> Vec<&str> {
        let outside: HashSet<String> = self
            .inner
            .loaded
            .modules
            .iter()
            .filter(|m| !m.file.ends_with("_test.rego"))
            .map(|m| rule_path(&m.package))
            .collect();
        self.inner
            .packages
            .iter()
            .filter(|p| outside.contains(*p))
            .map(String::as_str)
            .collect()
    }

    /// Whether the modules were parsed as Rego v0.
    pub fn is_rego_v0(&self) -> bool {
        self.inner.loaded.rego_v0
    }

    /// Whether builtin errors are errors rather than undefined ([`CompileOptions`]).
    pub(crate) fn strict_builtin_errors(&self) -> bool {
        self.inner.strict_builtin_errors
    }

    /// Whether evaluations use the shared compiled matchers ([`CompileOptions`]).
    pub(crate) fn shared_matchers(&self) -> bool {
        self.inner.shared_matchers
    }

    /// The engine the RVM compiles from: the modules with `:=` spelled `=` where
    /// regorus's RVM needs it, or the evaluation engine itself.
    pub(crate) fn rvm_engine(&self) -> Result<Engine, RvmError> {
        match &self.inner.loaded.rvm {
            Some(rvm) => self
                .inner
                .rvm_engine
                .get_or_init(|| rvm.engine(&self.inner.data))
                .clone(),
            None => Ok(self.engine_with(None)),
        }
    }

    pub(crate) fn data(&self) -> &regorus::Value {
        &self.inner.data
    }

    /// An evaluation error, with OPA's columns.
    pub(crate) fn eval_error(&self, e: &anyhow::Error) -> EvalError {
        match EvalError::from_regorus(e) {
            EvalError::Eval(d) => EvalError::Eval(self.inner.loaded.sources.fix(d)),
            other => other,
        }
    }

    /// A clone of the prepared engine, with the input set.
    pub(crate) fn engine_with(&self, input: Option<&Input>) -> Engine {
        let mut engine = self.inner.engine.clone();
        if let Some(input) = input {
            engine.set_input(input.0.clone());
        }
        engine
    }
}

/// Constructs measured to evaluate differently in regorus 0.14.1's RVM than in
/// its interpreter (see tests/eval.rs): `else` chains (the RVM skips the else
/// branch when the first body fails late), partial-object rules (an undefined
/// value becomes the string "<undefined>"), and complete rules defined several
/// times with non-`true` values (a conflict is undefined instead of an error).
/// Test files (`*_test.rego`) are skipped: production entrypoints never reach them.
fn rvm_blockers(modules: &[crate::ast::ModuleInfo]) -> Vec<String> {
    use crate::ast::{RefPart, RuleKind};
    let mut out = Vec::new();
    // Per complete-rule path: definitions, whether any has a non-`true` value,
    // and where the first one is.
    let mut complete: HashMap<Vec<String>, (usize, bool, String)> = HashMap::new();
    for m in modules.iter().filter(|m| !m.file.ends_with("_test.rego")) {
        for r in m.rules.iter().filter(|r| !r.is_function) {
            let at = &r.location;
            if r.has_else {
                out.push(format!("{at}: else chain"));
            }
            if r.kind == RuleKind::Complete && r.head.contains(&RefPart::Dynamic) {
                out.push(format!("{at}: partial object rule"));
            }
            if r.kind == RuleKind::Complete {
                let mut path = m.package.clone();
                path.extend(r.ground_prefix());
                let e = complete.entry(path).or_insert((0, false, at.to_string()));
                e.0 += 1;
                e.1 |= !r.value_is_true;
            }
        }
    }
    let mut several: Vec<String> = complete
        .into_values()
        .filter(|(n, valued, _)| *n > 1 && *valued)
        .map(|(_, _, at)| format!("{at}: complete rule defined several times with values"))
        .collect();
    several.sort();
    out.extend(several);
    out
}

fn flat_packages(
    modules: &[crate::ast::ModuleInfo],
    data: &regorus::Value,
) -> HashMap<String, Vec<(String, String)>> {
    use crate::ast::RefPart;
    let mut out: HashMap<Vec<String>, Option<Vec<(String, String)>>> = HashMap::new();
    for m in modules {
        let entry = out
            .entry(m.package.clone())
            .or_insert_with(|| Some(Vec::new()));
        for r in m.rules.iter().filter(|r| !r.is_function) {
            let key = match r.head.as_slice() {
                [RefPart::Name(n)] | [RefPart::Name(n), RefPart::Dynamic] => Some(n.clone()),
                _ => None,
            };
            match (key, entry.as_mut()) {
                (Some(key), Some(rules)) => {
                    if !rules.iter().any(|(k, _)| *k == key) {
                        let mut path = m.package.clone();
                        path.push(key.clone());
                        rules.push((key, rule_path(&path)));
                    }
                }
                // A multi-part head (`a.b.c := 1`) nests objects: not flat.
                (None, _) => *entry = None,
                (_, None) => {}
            }
        }
    }
    let all: Vec<Vec<String>> = out.keys().cloned().collect();
    out.into_iter()
        .filter_map(|(pkg, rules)| {
            let rules = rules.filter(|r| !r.is_empty())?;
            let has_child = all
                .iter()
                .any(|o| o.len() > pkg.len() && o.starts_with(&pkg));
            let mut node = data;
            for c in &pkg {
                node = &node[c.as_str()];
            }
            let has_data = *node != regorus::Value::Undefined;
            (!has_child && !has_data).then(|| (rule_path(&pkg), rules))
        })
        .collect()
}

pub(crate) fn to_json(value: regorus::Value) -> Result<Option<Json>, EvalError> {
    if value == regorus::Value::Undefined {
        return Ok(None);
    }
    serde_json::to_value(&value)
        .map(Some)
        .map_err(|e| EvalError::Output(e.to_string()))
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

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn policy_set_is_send_and_sync() {
        assert_send_sync::<PolicySet>();
        assert_send_sync::<Input>();
    }

    fn compile(src: &str, rvm: RvmOptions) -> PolicySet {
        let opts = CompileOptions {
            memo: MemoOptions {
                enabled: false,
                ..MemoOptions::default()
            },
            rvm,
            ..CompileOptions::default()
        };
        let module = Module {
            path: "p.rego".into(),
            source: src.into(),
            rego_version: 1,
        };
        PolicySet::compile(&[module], serde_json::json!({}), &opts).unwrap()
    }

    /// A set whose `data.p.r` runs on the RVM of a different rule: it stands in for
    /// an RVM bug no blocker knows about (every disagreement measured so far is
    /// refused up front, so none is left to test with).
    fn with_wrong_rvm(rvm: RvmOptions) -> PolicySet {
        let p = compile(
            "package p

r := input.x
",
            rvm.clone(),
        );
        let wrong = compile(
            "package p

r := input.y
",
            rvm,
        );
        let slot = RvmSlot::compiled(compile_rvm(&wrong, "data.p.r").unwrap(), false);
        p.inner.rvms.set("data.p.r", slot);
        p
    }

    fn reason(b: Backend) -> String {
        match b {
            Backend::Interpreter { reason } => reason,
            Backend::Rvm => panic!("expected the interpreter"),
        }
    }

    fn opts(verify_first: u64, recheck_every: u64) -> RvmOptions {
        RvmOptions {
            enabled: true,
            verify_first,
            recheck_every,
        }
    }

    #[test]
    fn a_disagreement_in_the_shadow_phase_retires_the_rvm_before_it_answers() {
        let p = with_wrong_rvm(opts(8, 4));
        let eval = |input: serde_json::Value| p.eval_data_path("data.p.r", Some(&input)).unwrap();
        // Where both agree (x and y equal), nothing changes.
        assert_eq!(eval(serde_json::json!({"x": 1, "y": 1})), Some(1.into()));
        assert!(reason(p.backend("data.p.r")).contains("shadow: 1 of 8"));
        // The first request that tells them apart retires it; the interpreter answers.
        for _ in 0..20 {
            assert_eq!(eval(serde_json::json!({"x": 1, "y": 2})), Some(1.into()));
        }
        let why = reason(p.backend("data.p.r"));
        assert!(
            why.contains("disagreed") && why.contains("RVM 2, interpreter 1"),
            "{why}"
        );
    }

    #[test]
    fn after_the_shadow_phase_a_recheck_catches_a_disagreement_and_retires_the_rvm() {
        // Every decision rechecked: the disagreeing one is answered by the interpreter.
        let p = with_wrong_rvm(opts(2, 1));
        let eval = |input: serde_json::Value| p.eval_data_path("data.p.r", Some(&input)).unwrap();
        for x in 0..3 {
            assert_eq!(eval(serde_json::json!({"x": x, "y": x})), Some(x.into()));
        }
        assert_eq!(p.backend("data.p.r"), Backend::Rvm);
        assert_eq!(eval(serde_json::json!({"x": 1, "y": 2})), Some(1.into()));
        assert!(reason(p.backend("data.p.r")).contains("disagreed"));
        // Retired for good.
        assert_eq!(eval(serde_json::json!({"x": 5, "y": 6})), Some(5.into()));

        // Between rechecks the RVM answers alone, so its answer is what is served:
        // that is the risk `recheck_every` bounds, shown here with a known-wrong RVM.
        let p = with_wrong_rvm(opts(1, 1000));
        assert_eq!(
            eval_on(&p, serde_json::json!({"x": 0, "y": 0})),
            Some(0.into())
        );
        assert_eq!(p.backend("data.p.r"), Backend::Rvm);
        assert_eq!(
            eval_on(&p, serde_json::json!({"x": 1, "y": 2})),
            Some(2.into())
        );
    }

    fn eval_on(p: &PolicySet, input: serde_json::Value) -> Option<Json> {
        p.eval_data_path("data.p.r", Some(&input)).unwrap()
    }

    #[test]
    fn an_rvm_error_or_undefined_is_compared_like_any_answer() {
        // The wrong RVM says undefined where the interpreter has a value.
        let p = with_wrong_rvm(opts(4, 4));
        assert_eq!(eval_on(&p, serde_json::json!({"x": 3})), Some(3.into()));
        assert!(reason(p.backend("data.p.r")).contains("RVM undefined, interpreter 3"));
    }
}
