//! The decision memo: one per [`crate::DecisionFn`], so one per entrypoint of one
//! active revision (a new bundle, overlay or data write compiles a new
//! [`crate::PolicySet`], and the memo goes with the old one).
//!
//! A decision depends on the data (fixed for a revision) and on the input, but only
//! on the parts of the input its rules read: its *footprint*. [`footprint`] finds
//! those paths by walking every rule the entrypoint can reach (rules referred to
//! through `data.`, by name in their package or through imports, and functions
//! called), and collects each reference into `input` by its static prefix:
//! `input.request.params.target` reads the value at that path, and
//! `input.request.params[kind]` (a lookup with a computed key, or an iteration)
//! reads the whole object at `input.request.params`. The memo key is the canonical
//! JSON text of the values at those paths (absent paths marked as such), so two
//! inputs that agree on the footprint get the same decision, whatever else differs.
//!
//! The memo is refused, with the reason logged (and kept, [`crate::DecisionFn::memo_status`]),
//! when the analysis cannot bound what the decision depends on: `input` used whole
//! (`x := input`, `json.marshal(input)`) or with a computed key at its root
//! (`input[k]`), a `with` anywhere in the reachable rules, or a call to anything not
//! known to be a pure function of its arguments (`time.*`, `rand.*`, `http.send`,
//! `uuid.*`, `opa.runtime`, `net.lookup_ip_addr`, `print`, ... and every builtin
//! not on [`PURE_BUILTINS`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::ast::AstExport;
use serde_json::Value as Json;

/// Memo bounds and the switch ([`crate::CompileOptions::memo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoOptions {
    /// Off: every decision is evaluated.
    pub enabled: bool,
    /// Decisions kept per entrypoint; the oldest go first.
    pub max_entries: usize,
    /// Bytes of keys and decisions (their JSON text) kept per entrypoint.
    pub max_bytes: usize,
    /// Hits and misses of every memo made with these options: the options are
    /// cloned into each compiled set, so these count across revision swaps
    /// (a process's `/metrics`), while [`MemoStats`] is one memo's.
    pub totals: MemoTotals,
}

impl Default for MemoOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 10_000,
            max_bytes: 16 * 1024 * 1024,
            totals: MemoTotals::default(),
        }
    }
}

/// Monotonic hit and miss counts shared by the memos of every revision.
#[derive(Debug, Clone, Default)]
pub struct MemoTotals(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl MemoTotals {
    pub fn hits(&self) -> u64 {
        self.0.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.0.misses.load(Ordering::Relaxed)
    }

    fn count(&self, hit: bool) {
        let c = if hit { &self.0.hits } else { &self.0.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Equal when shared: the counters are state, not configuration.
impl PartialEq for MemoTotals {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MemoTotals {}

/// Hit, miss and eviction counts of one memo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
    pub bytes: usize,
}

/// Whether a decision function memoizes, and on what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoStatus {
    /// Keyed by the values at these input paths (each a list of object keys).
    On { footprint: Vec<Vec<String>> },
    /// With the reason.
    Off { reason: String },
}

/// One path component of a reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    Key(String),
    Dynamic,
}

/// What one rule (one `Spec` or `Default` in the AST) needs.
#[derive(Debug, Default)]
struct RuleNeeds {
    /// `data.` reference prefixes (static part), to find the rules they reach.
    data_refs: Vec<Vec<String>>,
    /// References rooted at a name (a variable, a rule or function of the package,
    /// an import alias): the root and the static part after it.
    local_refs: Vec<Vec<String>>,
    /// Static prefixes of `input` references.
    input_paths: Vec<Vec<String>>,
    /// Calls by dotted name (user functions and builtins alike).
    calls: HashSet<String>,
    /// Why the input this rule reads cannot be bounded.
    unbounded: Option<String>,
}

struct RuleEntry {
    module: usize,
    /// Package + the head's static prefix.
    path: Vec<String>,
    needs: RuleNeeds,
}

struct ModuleEntry {
    package: Vec<String>,
    /// alias -> data path (without `data`).
    imports: HashMap<String, Vec<String>>,
    file: String,
}

/// Builtins (and `print`-like statements) whose result depends on their arguments
/// alone. Everything else stops the memo.
pub(crate) const PURE_BUILTINS: &[&str] = &[
    "abs",
    "all",
    "and",
    "any",
    "array.concat",
    "array.reverse",
    "array.slice",
    "base64.decode",
    "base64.encode",
    "base64.is_valid",
    "base64url.decode",
    "base64url.encode",
    "base64url.encode_no_pad",
    "bits.and",
    "bits.lsh",
    "bits.negate",
    "bits.or",
    "bits.rsh",
    "bits.xor",
    "cast_array",
    "cast_boolean",
    "cast_null",
    "cast_object",
    "cast_set",
    "cast_string",
    "ceil",
    "concat",
    "contains",
    "count",
    "endswith",
    "floor",
    "format_int",
    "glob.match",
    "glob.quote_meta",
    "graph.reachable",
    "graph.reachable_paths",
    "hex.decode",
    "hex.encode",
    "indexof",
    "indexof_n",
    "intersection",
    "is_array",
    "is_boolean",
    "is_null",
    "is_number",
    "is_object",
    "is_set",
    "is_string",
    "json.filter",
    "json.is_valid",
    "json.marshal",
    "json.marshal_with_options",
    "json.match_schema",
    "json.patch",
    "json.remove",
    "json.unmarshal",
    "json.verify_schema",
    "lower",
    "max",
    "min",
    "net.cidr_contains",
    "net.cidr_expand",
    "net.cidr_is_valid",
    "numbers.range",
    "numbers.range_step",
    "object.filter",
    "object.get",
    "object.keys",
    "object.remove",
    "object.subset",
    "object.union",
    "object.union_n",
    "or",
    "plus",
    "product",
    "regex.find_all_string_submatch_n",
    "regex.find_n",
    "regex.is_valid",
    "regex.match",
    "regex.replace",
    "regex.split",
    "regex.template_match",
    "replace",
    "round",
    "semver.compare",
    "semver.is_valid",
    "sort",
    "split",
    "sprintf",
    "startswith",
    "strings.any_prefix_match",
    "strings.any_suffix_match",
    "strings.count",
    "strings.replace_n",
    "strings.reverse",
    "substring",
    "sum",
    "to_number",
    "trim",
    "trim_left",
    "trim_prefix",
    "trim_right",
    "trim_space",
    "trim_suffix",
    "type_name",
    "union",
    "units.parse",
    "units.parse_bytes",
    "upper",
    "urlquery.decode",
    "urlquery.decode_object",
    "urlquery.encode",
    "urlquery.encode_object",
    "walk",
    "yaml.is_valid",
    "yaml.marshal",
    "yaml.unmarshal",
];

/// The input paths `entrypoint` can read, or why they cannot be bounded. Depends on the
/// modules only, so one module set's answer serves every revision that carries it.
pub(crate) fn footprint(export: &AstExport, entrypoint: &str) -> MemoStatus {
    match analyse(export, entrypoint) {
        Ok(footprint) => MemoStatus::On { footprint },
        Err(reason) => MemoStatus::Off {
            reason: reason.to_string(),
        },
    }
}

/// [`footprint`] when the AST could not be exported.
pub(crate) fn unanalysed(why: &str) -> MemoStatus {
    MemoStatus::Off {
        reason: Unbounded::Ast(why.to_string()).to_string(),
    }
}

/// Why the input an entrypoint reads cannot be bounded (so its memo is off).
#[derive(Debug, thiserror::Error)]
enum Unbounded {
    /// The AST export regorus gives could not be read.
    #[error("{0}")]
    Ast(String),
    #[error("{0}: `import input` is not analysed")]
    ImportInput(String),
    #[error("{0} is not a data path")]
    NotDataPath(String),
    #[error("{at}: {why}")]
    Reads { at: String, why: String },
    #[error("{at}: calls {call}, which is not known to be a pure function of its arguments")]
    Impure { at: String, call: String },
}

fn analyse(export: &AstExport, entrypoint: &str) -> Result<Vec<Vec<String>>, Unbounded> {
    let ast_modules = &export.modules;
    let packages = &export.packages;
    let mut modules = Vec::new();
    let mut rules = Vec::new();
    for (idx, (m, pkg)) in ast_modules.iter().zip(packages).enumerate() {
        let ast = m.get("ast").unwrap_or(&Json::Null);
        let contents = m
            .pointer("/source/contents")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let mut imports = HashMap::new();
        for i in ast
            .get("imports")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let Some(Part::Key(root)) = i.get("refr").and_then(|r| ref_path(r).first().cloned())
            else {
                continue;
            };
            let path: Vec<String> = i
                .get("refr")
                .map(ref_path)
                .unwrap_or_default()
                .into_iter()
                .map_while(|p| match p {
                    Part::Key(k) => Some(k),
                    Part::Dynamic => None,
                })
                .collect();
            let alias = match i.get("as").and_then(|s| span_text(s, contents)) {
                Some(a) => a,
                None => path.last().cloned().unwrap_or_default(),
            };
            if root == "data" {
                imports.insert(alias, path.into_iter().skip(1).collect());
            } else if root == "input" {
                return Err(Unbounded::ImportInput(pkg.source_file.clone()));
            }
        }
        for r in ast
            .get("rules")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let (head_ref, node) = if let Some(d) = r.get("Default") {
                (d.get("refr"), d)
            } else if let Some(spec) = r.get("Spec") {
                let head = spec.get("head").unwrap_or(&Json::Null);
                let inner = ["Compr", "Set", "Func"]
                    .iter()
                    .find_map(|k| head.get(*k))
                    .unwrap_or(&Json::Null);
                (inner.get("refr"), spec)
            } else {
                continue;
            };
            let mut path = pkg.components.clone();
            path.extend(
                head_ref
                    .map(ref_path)
                    .unwrap_or_default()
                    .into_iter()
                    .map_while(|p| match p {
                        Part::Key(k) => Some(k),
                        Part::Dynamic => None,
                    }),
            );
            let mut needs = RuleNeeds::default();
            walk(node, &mut needs);
            rules.push(RuleEntry {
                module: idx,
                path,
                needs,
            });
        }
        modules.push(ModuleEntry {
            package: pkg.components.clone(),
            imports,
            file: pkg.source_file.clone(),
        });
    }

    let entry =
        data_path(entrypoint).ok_or_else(|| Unbounded::NotDataPath(entrypoint.to_string()))?;
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut seen: HashSet<usize> = HashSet::new();
    let reach = |prefix: &[String], queue: &mut VecDeque<usize>, seen: &mut HashSet<usize>| {
        for (i, r) in rules.iter().enumerate() {
            let hit = r.path.starts_with(prefix) || prefix.starts_with(&r.path);
            if hit && seen.insert(i) {
                queue.push_back(i);
            }
        }
    };
    reach(&entry, &mut queue, &mut seen);
    let mut inputs: BTreeSet<Vec<String>> = BTreeSet::new();
    while let Some(i) = queue.pop_front() {
        let Some(rule) = rules.get(i) else { continue };
        let Some(module) = modules.get(rule.module) else {
            continue;
        };
        let at = || format!("{} (rule data.{})", module.file, rule.path.join("."));
        if let Some(why) = &rule.needs.unbounded {
            return Err(Unbounded::Reads {
                at: at(),
                why: why.clone(),
            });
        }
        for call in &rule.needs.calls {
            let parts: Vec<String> = call.split('.').map(str::to_string).collect();
            let mut local = module.package.clone();
            local.extend(parts.iter().cloned());
            let user = rules.iter().any(|r| r.path == local)
                || parts
                    .first()
                    .is_some_and(|p| p == "data" || module.imports.contains_key(p));
            if !user && !PURE_BUILTINS.contains(&call.as_str()) && !crate::builtins::is_pure(call) {
                return Err(Unbounded::Impure {
                    at: at(),
                    call: call.clone(),
                });
            }
        }
        for prefix in &rule.needs.data_refs {
            reach(prefix, &mut queue, &mut seen);
        }
        for r in &rule.needs.local_refs {
            let Some((root, rest)) = r.split_first() else {
                continue;
            };
            if let Some(target) = module.imports.get(root) {
                let mut path = target.clone();
                path.extend(rest.iter().cloned());
                reach(&path, &mut queue, &mut seen);
            }
            let mut local = module.package.clone();
            local.extend(r.iter().cloned());
            reach(&local, &mut queue, &mut seen);
        }
        inputs.extend(rule.needs.input_paths.iter().cloned());
    }
    // A path inside another one adds nothing.
    let all: Vec<Vec<String>> = inputs.into_iter().collect();
    Ok(all
        .iter()
        .filter(|p| !all.iter().any(|q| q.len() < p.len() && p.starts_with(q)))
        .cloned()
        .collect())
}

/// `data.a.b` -> `["a", "b"]`; `data` -> `[]`.
fn data_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("data")?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let rest = rest.strip_prefix('.')?;
    // Quoted components (`data.a["b.c"]`) are rare in entrypoints; split on dots
    // outside brackets and strip quotes.
    let mut out = Vec::new();
    for part in rest.split('.') {
        let mut p = part;
        while let Some(open) = p.find("[\"") {
            let (head, tail) = p.split_at(open);
            if !head.is_empty() {
                out.push(head.to_string());
            }
            let tail = tail.get(2..)?;
            let close = tail.find("\"]")?;
            out.push(tail.get(..close)?.to_string());
            p = tail.get(close + 2..)?;
        }
        if !p.is_empty() {
            out.push(p.to_string());
        }
    }
    Some(out)
}

fn span_text(span: &Json, contents: &str) -> Option<String> {
    let start = usize::try_from(span.get("start")?.as_u64()?).ok()?;
    let end = usize::try_from(span.get("end")?.as_u64()?).ok()?;
    contents.get(start..end).map(str::to_string)
}

/// A reference chain's parts from its root var: `input.a[x].b` -> input, a, *, b.
fn ref_path(node: &Json) -> Vec<Part> {
    if let Some(v) = node.get("Var") {
        return vec![Part::Key(
            v.get("value")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
        )];
    }
    if let Some(d) = node.get("RefDot") {
        let mut p = d.get("refr").map(ref_path).unwrap_or_default();
        let field = d
            .get("field")
            .and_then(Json::as_array)
            .and_then(|f| f.get(1))
            .and_then(Json::as_str);
        p.push(field.map_or(Part::Dynamic, |f| Part::Key(f.to_string())));
        return p;
    }
    if let Some(b) = node.get("RefBrack") {
        let mut p = b.get("refr").map(ref_path).unwrap_or_default();
        let key = b
            .get("index")
            .and_then(|i| i.get("String"))
            .and_then(|s| s.get("value"))
            .and_then(Json::as_str);
        p.push(key.map_or(Part::Dynamic, |k| Part::Key(k.to_string())));
        return p;
    }
    vec![Part::Dynamic]
}

/// The static prefix of a reference chain, after its root.
fn static_prefix(parts: &[Part]) -> Vec<String> {
    parts
        .iter()
        .skip(1)
        .map_while(|p| match p {
            Part::Key(k) => Some(k.clone()),
            Part::Dynamic => None,
        })
        .collect()
}

/// The computed keys of a chain (`x` in `input.a[x]`), and a root that is not a
/// variable (`f(x).y`): walked for what they read.
fn walk_indexes(node: &Json, needs: &mut RuleNeeds) {
    if let Some(d) = node.get("RefDot") {
        if let Some(r) = d.get("refr") {
            walk_indexes(r, needs);
        }
    } else if let Some(b) = node.get("RefBrack") {
        if let Some(r) = b.get("refr") {
            walk_indexes(r, needs);
        }
        if let Some(i) = b.get("index") {
            walk(i, needs);
        }
    } else if node.get("Var").is_none() {
        walk(node, needs);
    }
}

fn walk(node: &Json, needs: &mut RuleNeeds) {
    match node {
        Json::Object(map) => {
            if map
                .get("with_mods")
                .and_then(Json::as_array)
                .is_some_and(|w| !w.is_empty())
            {
                needs.unbounded.get_or_insert("uses `with`".to_string());
            }
            if map.contains_key("RefDot") || map.contains_key("RefBrack") {
                let parts = ref_path(node);
                match parts.first() {
                    Some(Part::Key(root)) if root == "input" => {
                        if parts.get(1) == Some(&Part::Dynamic) {
                            needs.unbounded =
                                Some("reads `input` through a computed key at its root".into());
                        }
                        needs.input_paths.push(static_prefix(&parts));
                    }
                    Some(Part::Key(root)) if root == "data" => {
                        needs.data_refs.push(static_prefix(&parts));
                    }
                    Some(Part::Key(root)) => {
                        let mut r = vec![root.clone()];
                        r.extend(static_prefix(&parts));
                        needs.local_refs.push(r);
                    }
                    _ => {}
                }
                walk_indexes(node, needs);
                return;
            }
            if let Some(v) = map
                .get("Var")
                .and_then(|v| v.get("value"))
                .and_then(Json::as_str)
            {
                match v {
                    "input" => {
                        needs
                            .unbounded
                            .get_or_insert("uses `input` as a whole".to_string());
                    }
                    "data" => needs.data_refs.push(Vec::new()),
                    _ => needs.local_refs.push(vec![v.to_string()]),
                }
                return;
            }
            if let Some(call) = map.get("Call") {
                if let Some(fcn) = call.get("fcn") {
                    let parts = ref_path(fcn);
                    let name: Option<Vec<String>> = parts
                        .iter()
                        .map(|p| match p {
                            Part::Key(k) => Some(k.clone()),
                            Part::Dynamic => None,
                        })
                        .collect();
                    match name {
                        Some(name) => {
                            if let Some(root) = name.first() {
                                if root == "data" {
                                    needs.data_refs.push(name.iter().skip(1).cloned().collect());
                                } else {
                                    needs.local_refs.push(name.clone());
                                }
                            }
                            needs.calls.insert(name.join("."));
                        }
                        None => {
                            needs
                                .unbounded
                                .get_or_insert("calls a computed function".to_string());
                        }
                    }
                }
                if let Some(params) = call.get("params") {
                    walk(params, needs);
                }
                return;
            }
            map.values().for_each(|v| walk(v, needs));
        }
        Json::Array(items) => items.iter().for_each(|v| walk(v, needs)),
        _ => {}
    }
}

/// The memo key of an input: each footprint path's value as canonical JSON text
/// (objects with sorted keys), `~` for an absent one, each followed by NUL (which
/// JSON text never contains unescaped). `V` starts keys of converted inputs, `J`
/// those of JSON inputs: the two spell numbers differently, so they never share.
pub(crate) fn key_of_value(
    footprint: &[Vec<regorus::Value>],
    input: &regorus::Value,
) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(64);
    key.push(b'V');
    for path in footprint {
        let mut v = Some(input);
        for k in path {
            v = match v {
                Some(regorus::Value::Object(o)) => o.get(k),
                _ => None,
            };
        }
        match v {
            None | Some(regorus::Value::Undefined) => key.push(b'~'),
            Some(v) => serde_json::to_writer(&mut key, v).ok()?,
        }
        key.push(0);
    }
    Some(key)
}

/// [`key_of_value`] for a JSON input.
pub(crate) fn key_of_json(footprint: &[Vec<String>], input: &Json) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(64);
    key.push(b'J');
    for path in footprint {
        let mut v = Some(input);
        for k in path {
            v = v.and_then(|v| v.as_object()).and_then(|o| o.get(k));
        }
        match v {
            None => key.push(b'~'),
            Some(v) => serde_json::to_writer(&mut key, v).ok()?,
        }
        key.push(0);
    }
    Some(key)
}

/// The memo of one entrypoint of one revision.
#[derive(Debug)]
pub(crate) struct EntryMemo {
    pub status: MemoStatus,
    footprint: Vec<Vec<String>>,
    footprint_values: Vec<Vec<regorus::Value>>,
    memo: Memo,
}

impl EntryMemo {
    /// `footprint` is asked only when the memo is on.
    pub fn new(footprint: impl FnOnce() -> MemoStatus, options: &MemoOptions) -> Self {
        let status = if options.enabled {
            footprint()
        } else {
            MemoStatus::Off {
                reason: "the decision memo is turned off".to_string(),
            }
        };
        let footprint = match &status {
            MemoStatus::On { footprint } => footprint.clone(),
            MemoStatus::Off { .. } => Vec::new(),
        };
        let footprint_values = footprint
            .iter()
            .map(|p| p.iter().map(|k| regorus::Value::from(k.as_str())).collect())
            .collect();
        Self {
            status,
            footprint,
            footprint_values,
            memo: Memo::new(options.clone()),
        }
    }

    pub fn is_on(&self) -> bool {
        matches!(self.status, MemoStatus::On { .. })
    }

    /// The key of a converted input, when memoizing.
    pub fn key(&self, input: &regorus::Value) -> Option<Vec<u8>> {
        self.is_on()
            .then(|| key_of_value(&self.footprint_values, input))
            .flatten()
    }

    /// The key of a JSON input, when memoizing.
    pub fn key_json(&self, input: &Json) -> Option<Vec<u8>> {
        self.is_on()
            .then(|| key_of_json(&self.footprint, input))
            .flatten()
    }

    pub fn get(&self, key: &[u8]) -> Option<Option<Json>> {
        self.memo.get(key)
    }

    pub fn insert(&self, key: Vec<u8>, value: &Option<Json>) {
        self.memo.insert(key, value);
    }

    pub fn stats(&self) -> MemoStats {
        self.memo.stats()
    }
}

/// Bounded map from key to decision; reads share the lock.
pub(crate) struct Memo {
    options: MemoOptions,
    inner: RwLock<MemoInner>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Default)]
struct MemoInner {
    map: HashMap<Arc<[u8]>, (Option<Json>, usize)>,
    order: VecDeque<Arc<[u8]>>,
    bytes: usize,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Memo {
    pub fn new(options: MemoOptions) -> Self {
        Self {
            options,
            inner: RwLock::new(MemoInner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Option<Json>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        match inner.map.get(key) {
            Some((v, _)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.options.totals.count(true);
                Some(v.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.options.totals.count(false);
                None
            }
        }
    }

    pub fn insert(&self, key: Vec<u8>, value: &Option<Json>) {
        let size = key.len()
            + value.as_ref().map_or(0, |v| {
                serde_json::to_vec(v).map_or(usize::MAX / 2, |t| t.len())
            });
        if size > self.options.max_bytes || self.options.max_entries == 0 {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.map.contains_key(key.as_slice()) {
            return;
        }
        while inner.map.len() >= self.options.max_entries
            || inner.bytes + size > self.options.max_bytes
        {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, n)) = inner.map.remove(&old) {
                inner.bytes = inner.bytes.saturating_sub(n);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        let key: Arc<[u8]> = Arc::from(key);
        inner.bytes += size;
        inner.order.push_back(key.clone());
        inner.map.insert(key, (value.clone(), size));
    }

    pub fn stats(&self) -> MemoStats {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        MemoStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: inner.map.len(),
            bytes: inner.bytes,
        }
    }
}
