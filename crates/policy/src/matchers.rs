//! Shared compiled matchers for `regex.*` and `glob.match`.
//!
//! regorus 0.14.1 keeps compiled patterns in an LRU, but every call *clones* the
//! cached `regex::Regex` (a `GlobMatcher` holds one too). A cloned `Regex` starts
//! with an empty cache pool, so each match rebuilds its lazy DFA: about 6-7 µs per
//! call instead of ~50 ns (BENCHMARKS.md, A). Here the compiled matchers live once per
//! process behind `Arc`s in bounded caches, and every evaluation matches on the same
//! object, whose per-thread DFA caches stay warm.
//!
//! They reach both evaluators:
//! - the interpreter through [`install`]: extensions registered under the builtins'
//!   own names. regorus looks a call up as user function, then extension, then
//!   builtin, so the extension wins; `with regex.match as ...` still applies first.
//! - the RVM through [`patch_program`]: a compiled program carries the function
//!   pointers of its builtins (`Program::resolved_builtins`); the entries for these
//!   names are swapped for ours.
//!
//! Semantics are regorus's own (`src/builtins/{regex,glob}.rs`): the same
//! `RegexBuilder` settings (100 KiB NFA limit), the same delimiter rewriting for
//! globs, type errors and invalid patterns are errors (undefined unless builtin
//! errors are strict), an NFA over the size limit is an error whatever the
//! strictness. Four of regorus's differences from OPA are fixed here, each marked
//! `regorus_differs` in `tests/data/matcher_cases.json` and checked against OPA's
//! evaluator by `tests/matchers_opa.rs`: `regex.split` is Go's `Split`,
//! `regex.replace` with an invalid pattern is an error, a `:` glob delimiter
//! delimits, and a delimiter is one character rather than one byte. The others are
//! in docs/opa-differences.md.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use globset::{GlobBuilder, GlobMatcher};
use regex::{Regex, RegexBuilder};
use regorus::{Engine, LimitError, Value};

/// regorus's `REGEX_SIZE_LIMIT`: the compiled NFA's ceiling.
const REGEX_SIZE_LIMIT: usize = 100 * 1024;

/// Cache bounds, per kind (regex, glob). Patterns normally come from policies and
/// data, so a few thousand distinct ones is already unusual; input-supplied
/// patterns cannot grow either cache past these.
const MAX_ENTRIES: usize = 4096;
const MAX_PATTERN_BYTES: usize = 4 * 1024 * 1024;

/// The builtins replaced, with their arity.
pub(crate) const REPLACED: [(&str, u8); 6] = [
    ("regex.match", 2),
    ("regex.find_n", 3),
    ("regex.find_all_string_submatch_n", 3),
    ("regex.split", 2),
    ("regex.replace", 3),
    ("glob.match", 3),
];

/// Why a builtin call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// A type error or an invalid pattern: undefined unless builtin errors are strict.
    #[error("{0}")]
    Builtin(String),
    /// A resource limit: an error even when builtin errors are not strict.
    #[error("regex exceeds the compiled size limit of {0} bytes")]
    TooBig(usize),
}

impl CallError {
    fn limit(&self) -> Option<LimitError> {
        match self {
            CallError::TooBig(limit) => Some(LimitError::RegexSizeLimitExceeded { limit: *limit }),
            CallError::Builtin(_) => None,
        }
    }
}

/// A compiled pattern, or why it does not compile (failures are cached too: a
/// bad pattern repeated per request costs one compilation).
type Compiled<T> = Result<Arc<T>, Failure>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Invalid,
    TooBig,
}

/// A bounded map from pattern to compiled matcher: reads share a lock; when full,
/// the oldest entries go first.
struct Cache<T> {
    inner: RwLock<CacheInner<T>>,
}

struct CacheInner<T> {
    map: HashMap<Arc<str>, Compiled<T>>,
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

impl<T> Cache<T> {
    fn new() -> Self {
        Self {
            inner: RwLock::new(CacheInner {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    fn get_or_compile(&self, key: &str, compile: impl FnOnce() -> Compiled<T>) -> Compiled<T> {
        if let Some(hit) = self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(key)
        {
            return hit.clone();
        }
        let compiled = compile();
        // A key longer than the whole budget is compiled every time, never kept.
        if key.len() > MAX_PATTERN_BYTES {
            return compiled;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(raced) = inner.map.get(key) {
            return raced.clone();
        }
        while inner.map.len() >= MAX_ENTRIES || inner.bytes + key.len() > MAX_PATTERN_BYTES {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            inner.bytes = inner.bytes.saturating_sub(old.len());
            inner.map.remove(&old);
        }
        let key: Arc<str> = Arc::from(key);
        inner.bytes += key.len();
        inner.order.push_back(key.clone());
        inner.map.insert(key, compiled.clone());
        compiled
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}

static REGEXES: LazyLock<Cache<Regex>> = LazyLock::new(Cache::new);
static GLOBS: LazyLock<Cache<GlobMatcher>> = LazyLock::new(Cache::new);

fn regex(pattern: &str) -> Compiled<Regex> {
    REGEXES.get_or_compile(pattern, || {
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Arc::new)
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => Failure::TooBig,
                _ => Failure::Invalid,
            })
    })
}

/// A regex for a builtin call: invalid patterns and oversized ones are errors.
fn regex_for_call(pattern: &str) -> Result<Arc<Regex>, CallError> {
    regex(pattern).map_err(|f| match f {
        Failure::TooBig => CallError::TooBig(REGEX_SIZE_LIMIT),
        Failure::Invalid => CallError::Builtin("invalid regex".to_string()),
    })
}

fn string<'a>(name: &str, v: &'a Value) -> Result<&'a str, CallError> {
    match v {
        Value::String(s) => Ok(s.as_ref()),
        other => Err(CallError::Builtin(format!(
            "`{name}` expects string argument. Got `{other}` instead"
        ))),
    }
}

fn arg<'a>(name: &str, args: &'a [Value], i: usize) -> Result<&'a Value, CallError> {
    args.get(i)
        .ok_or_else(|| CallError::Builtin(format!("`{name}` expects {} arguments", arity(name))))
}

fn arity(name: &str) -> u8 {
    REPLACED
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, a)| *a)
}

/// `n` of `regex.find_n` and friends, checked as regorus does: numeric before the
/// pattern compiles, integral after.
fn number<'a>(name: &str, v: &'a Value) -> Result<&'a Value, CallError> {
    match v {
        Value::Number(_) => Ok(v),
        _ => Err(CallError::Builtin(format!(
            "`{name}` expects numeric argument. Got `{v}` instead"
        ))),
    }
}

/// A negative or huge `n` means all.
fn count(v: &Value) -> Result<usize, CallError> {
    let Value::Number(n) = v else {
        return Err(CallError::Builtin("n must be a number".to_string()));
    };
    if !n.is_integer() {
        return Err(CallError::Builtin("n must be an integer".to_string()));
    }
    Ok(match n.as_i64() {
        Some(n) if n < 0 => usize::MAX,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => usize::MAX,
    })
}

fn array(items: Vec<Value>) -> Value {
    Value::from(items)
}

/// Evaluate one of the [`REPLACED`] builtins.
pub(crate) fn call(name: &str, args: &[Value]) -> Result<Value, CallError> {
    match name {
        "regex.match" => {
            let pattern = string(name, arg(name, args, 0)?)?;
            let value = string(name, arg(name, args, 1)?)?;
            Ok(Value::Bool(regex_for_call(pattern)?.is_match(value)))
        }
        "regex.find_n" => {
            let pattern = string(name, arg(name, args, 0)?)?;
            let value = string(name, arg(name, args, 1)?)?;
            let n = number(name, arg(name, args, 2)?)?;
            let re = regex_for_call(pattern)?;
            let n = count(n)?;
            Ok(array(
                re.find_iter(value)
                    .map(|m| Value::String(m.as_str().into()))
                    .take(n)
                    .collect(),
            ))
        }
        "regex.find_all_string_submatch_n" => {
            let pattern = string(name, arg(name, args, 0)?)?;
            let value = string(name, arg(name, args, 1)?)?;
            let n = number(name, arg(name, args, 2)?)?;
            let re = regex_for_call(pattern)?;
            let n = count(n)?;
            Ok(array(
                re.captures_iter(value)
                    .map(|c| {
                        array(
                            c.iter()
                                .map(|g| Value::String(g.map_or("", |m| m.as_str()).into()))
                                .collect(),
                        )
                    })
                    .take(n)
                    .collect(),
            ))
        }
        "regex.split" => {
            let pattern = string(name, arg(name, args, 0)?)?;
            let value = string(name, arg(name, args, 1)?)?;
            let re = regex_for_call(pattern)?;
            Ok(array(
                go_split(&re, pattern, value)
                    .into_iter()
                    .map(|s| Value::String(s.into()))
                    .collect(),
            ))
        }
        "regex.replace" => {
            let s = string(name, arg(name, args, 0)?)?;
            let pattern = string(name, arg(name, args, 1)?)?;
            let value = string(name, arg(name, args, 2)?)?;
            match regex(pattern) {
                Ok(re) => Ok(Value::String(re.replace_all(s, value).into())),
                Err(Failure::TooBig) => Err(CallError::TooBig(REGEX_SIZE_LIMIT)),
                // OPA: an error (so undefined unless builtin errors are strict).
                // regorus returns undefined even when they are.
                Err(Failure::Invalid) => Err(CallError::Builtin("invalid regex".to_string())),
            }
        }
        "glob.match" => glob_match(args),
        other => Err(CallError::Builtin(format!("no shared matcher for {other}"))),
    }
}

/// Go's `regexp.Split(s, -1)`, which OPA's `regex.split` is: an empty match at
/// the start and the piece after a match that ends the string are dropped (Rust's
/// `split` keeps both: `regex.split("", "abc")` would start and end with "").
fn go_split<'a>(re: &Regex, pattern: &str, s: &'a str) -> Vec<&'a str> {
    if !pattern.is_empty() && s.is_empty() {
        return vec![""];
    }
    let mut out = Vec::new();
    let (mut beg, mut end) = (0, 0);
    for m in re.find_iter(s) {
        end = m.start();
        if m.end() != 0 {
            out.push(s.get(beg..end).unwrap_or_default());
        }
        beg = m.end();
    }
    if end != s.len() {
        out.push(s.get(beg..).unwrap_or_default());
    }
    out
}

/// regorus's placeholder for a `/` (or `:`) that must not act as a separator.
const PLACE_HOLDER: &str = "\0";

fn suppress_unix_style_delimiter(s: &str) -> String {
    s.replace('/', PLACE_HOLDER)
}

/// globset only knows `/` as a separator: each delimiter becomes `/d/`, and a `/`
/// that is not a delimiter becomes the placeholder (regorus's rewriting).
fn make_delimiters_unix_style(s: &str, delimiters: &[char]) -> Result<String, CallError> {
    if s.contains(PLACE_HOLDER) {
        return Err(CallError::Builtin(
            "string contains internal glob placeholder".to_string(),
        ));
    }
    let mut s = if delimiters.contains(&'/') {
        s.to_string()
    } else {
        suppress_unix_style_delimiter(s)
    };
    // regorus also turns a `:` delimiter into the placeholder, which makes it no
    // delimiter at all (`glob.match("a:*", [":"], "a:b:c")` was true; OPA: false).
    for d in delimiters.iter().filter(|d| **d != '/') {
        s = s.replace(*d, &format!("/{d}/"));
    }
    Ok(s)
}

fn glob(rewritten: &str) -> Result<Arc<GlobMatcher>, CallError> {
    GLOBS
        .get_or_compile(rewritten, || {
            GlobBuilder::new(rewritten)
                .literal_separator(true)
                .build()
                .map(|g| Arc::new(g.compile_matcher()))
                .map_err(|_| Failure::Invalid)
        })
        .map_err(|_| CallError::Builtin("invalid glob".to_string()))
}

fn glob_match(args: &[Value]) -> Result<Value, CallError> {
    let name = "glob.match";
    let pattern = string(name, arg(name, args, 0)?)?;
    let delimiters = arg(name, args, 1)?;
    let value = string(name, arg(name, args, 2)?)?;
    let items = match delimiters {
        Value::Null => {
            // No delimiters at all: `/` must not separate either.
            let value = suppress_unix_style_delimiter(value);
            let matcher = glob(&suppress_unix_style_delimiter(pattern))?;
            return Ok(Value::Bool(matcher.is_match(value.as_str())));
        }
        Value::Array(items) => items,
        _ => {
            return Err(CallError::Builtin(format!("{name} requires string array")));
        }
    };
    let mut chars = Vec::with_capacity(items.len());
    for (idx, d) in items.iter().enumerate() {
        let Value::String(d) = d else {
            return Err(CallError::Builtin(format!(
                "`{name}` expects string element at index {idx}. Got `{d}` instead"
            )));
        };
        chars.push(d);
    }
    // One character each (OPA: a rune; regorus counts bytes, refusing `"é"`).
    if chars.iter().any(|d| d.chars().count() > 1) {
        return Err(CallError::Builtin(
            "delimiters must be single character".to_string(),
        ));
    }
    let mut delimiters: Vec<char> = chars.iter().filter_map(|d| d.chars().next()).collect();
    if delimiters.is_empty() {
        delimiters.push('.');
    }
    let rewritten = make_delimiters_unix_style(pattern, &delimiters)?;
    let value = make_delimiters_unix_style(value, &delimiters)?;
    Ok(Value::Bool(glob(&rewritten)?.is_match(value.as_str())))
}

/// A call's result as regorus's builtin dispatch would report it: with non-strict
/// builtin errors, an error is undefined, except a resource limit.
fn interpreter_result<const STRICT: bool>(name: &str, args: &[Value]) -> anyhow::Result<Value> {
    match call(name, args) {
        Ok(v) => Ok(v),
        Err(e) => match e.limit() {
            Some(limit) => Err(anyhow::Error::new(limit)),
            None if STRICT => Err(anyhow::Error::new(e)),
            None => Ok(Value::Undefined),
        },
    }
}

/// Register the shared matchers on a fresh engine (before any evaluation).
pub(crate) fn install(engine: &mut Engine, strict: bool) -> anyhow::Result<()> {
    // Zero-sized closures: regorus clones an extension on every call made through a
    // cloned engine (`Rc::make_mut`), and boxing a zero-sized value allocates nothing.
    macro_rules! add {
        ($strict:literal) => {
            engine.add_extension(
                "regex.match".into(),
                2,
                Box::new(|a: Vec<Value>| interpreter_result::<$strict>("regex.match", &a)),
            )?;
            engine.add_extension(
                "regex.find_n".into(),
                3,
                Box::new(|a: Vec<Value>| interpreter_result::<$strict>("regex.find_n", &a)),
            )?;
            engine.add_extension(
                "regex.find_all_string_submatch_n".into(),
                3,
                Box::new(|a: Vec<Value>| {
                    interpreter_result::<$strict>("regex.find_all_string_submatch_n", &a)
                }),
            )?;
            engine.add_extension(
                "regex.split".into(),
                2,
                Box::new(|a: Vec<Value>| interpreter_result::<$strict>("regex.split", &a)),
            )?;
            engine.add_extension(
                "regex.replace".into(),
                3,
                Box::new(|a: Vec<Value>| interpreter_result::<$strict>("regex.replace", &a)),
            )?;
            engine.add_extension(
                "glob.match".into(),
                3,
                Box::new(|a: Vec<Value>| interpreter_result::<$strict>("glob.match", &a)),
            )?;
        };
    }
    if strict {
        add!(true);
    } else {
        add!(false);
    }
    Ok(())
}

/// The RVM's view of a call: it turns errors into undefined itself when builtin
/// errors are not strict, and lets a [`LimitError`] through.
fn rvm_result(name: &str, args: &[Value]) -> anyhow::Result<Value> {
    call(name, args).map_err(|e| match e.limit() {
        Some(limit) => anyhow::Error::new(limit),
        None => anyhow::Error::new(e),
    })
}

/// Point a compiled program's [`REPLACED`] builtins at the shared matchers. Returns
/// how many call targets were replaced.
pub(crate) fn patch_program(program: &mut regorus::rvm::program::Program) -> usize {
    let mut patched = 0;
    let names: Vec<String> = program
        .builtin_info_table
        .iter()
        .map(|b| b.name.clone())
        .collect();
    for (name, slot) in names.iter().zip(program.resolved_builtins.iter_mut()) {
        // Non-capturing closures coerce to the field's function-pointer type, which
        // also gives them their argument types.
        match name.as_str() {
            "regex.match" => slot.0 = |_, _, args, _| rvm_result("regex.match", args),
            "regex.find_n" => slot.0 = |_, _, args, _| rvm_result("regex.find_n", args),
            "regex.find_all_string_submatch_n" => {
                slot.0 = |_, _, args, _| rvm_result("regex.find_all_string_submatch_n", args)
            }
            "regex.split" => slot.0 = |_, _, args, _| rvm_result("regex.split", args),
            "regex.replace" => slot.0 = |_, _, args, _| rvm_result("regex.replace", args),
            "glob.match" => slot.0 = |_, _, args, _| rvm_result("glob.match", args),
            _ => continue,
        }
        patched += 1;
    }
    patched
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

    #[test]
    fn the_cache_is_bounded_and_keeps_failures() {
        let cache: Cache<u8> = Cache::new();
        for i in 0..MAX_ENTRIES + 10 {
            let _ = cache.get_or_compile(&format!("p{i}"), || Ok(Arc::new(1)));
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        let mut compiled = 0;
        for _ in 0..3 {
            let r = cache.get_or_compile("bad", || {
                compiled += 1;
                Err(Failure::Invalid)
            });
            assert_eq!(r, Err(Failure::Invalid));
        }
        assert_eq!(compiled, 1);
    }

    /// One rule per replaced builtin, reading its arguments from `input.a`.
    pub(crate) const TABLE_MODULE: &str = "package t

regex_match := regex.match(input.a[0], input.a[1])

regex_find_n := regex.find_n(input.a[0], input.a[1], input.a[2])

regex_find_all_string_submatch_n := regex.find_all_string_submatch_n(input.a[0], input.a[1], input.a[2])

regex_split := regex.split(input.a[0], input.a[1])

regex_replace := regex.replace(input.a[0], input.a[1], input.a[2])

glob_match := glob.match(input.a[0], input.a[1], input.a[2])
";

    fn cases() -> Vec<(String, serde_json::Value, bool)> {
        let text = include_str!("../tests/data/matcher_cases.json");
        let cases: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        cases
            .into_iter()
            .map(|c| {
                let rule = format!("data.t.{}", c["f"].as_str().unwrap().replace('.', "_"));
                let differs = c["regorus_differs"] == serde_json::json!(true);
                (rule, serde_json::json!({"a": c["args"]}), differs)
            })
            .collect()
    }

    /// An outcome with the error text left out (locations and wording differ).
    #[derive(Debug, Clone, PartialEq)]
    enum Outcome {
        Value(Value),
        Error,
    }

    fn outcome(r: anyhow::Result<Value>) -> Outcome {
        match r {
            Ok(v) => Outcome::Value(v),
            Err(_) => Outcome::Error,
        }
    }

    /// regorus alone: its own builtins, in the interpreter and in the RVM.
    fn regorus_alone(strict: bool, rule: &str, input: &Value) -> (Outcome, Outcome) {
        let mut engine = Engine::new();
        engine.set_strict_builtin_errors(strict);
        engine
            .add_policy("t.rego".into(), TABLE_MODULE.into())
            .unwrap();
        engine.set_input(input.clone());
        let interpreted = outcome(engine.clone().eval_rule(rule.to_string()));
        let compiled = engine.compile_with_entrypoint(&rule.into()).unwrap();
        let program =
            regorus::languages::rego::compiler::Compiler::compile_from_policy(&compiled, &[rule])
                .unwrap();
        let mut vm = regorus::rvm::RegoVM::new();
        vm.load_program(program);
        vm.set_strict_builtin_errors(strict);
        vm.set_data(Value::new_object()).unwrap();
        vm.set_input(input.clone());
        let rvm = outcome(
            vm.execute_entry_point_by_name(rule)
                .map_err(anyhow::Error::new),
        );
        (interpreted, rvm)
    }

    #[test]
    fn semantics_are_regorus_own_on_both_evaluators() {
        use crate::{CompileOptions, Input, PolicySet};
        let module = lockstep_bundle::Module {
            path: "t.rego".into(),
            source: TABLE_MODULE.into(),
            rego_version: 1,
        };
        let mut compared = 0;
        for strict in [false, true] {
            let opts = CompileOptions {
                strict_builtin_errors: strict,
                ..CompileOptions::default()
            };
            let policy =
                PolicySet::compile(std::slice::from_ref(&module), serde_json::json!({}), &opts)
                    .unwrap();
            for (rule, input, differs) in cases() {
                let input = Input::from_json(&input).unwrap();
                let (mut want_interpreted, mut want_rvm) = regorus_alone(strict, &rule, &input.0);
                let mut engine = policy.engine_with(Some(&input));
                let got_interpreted = outcome(engine.eval_rule(rule.clone()));
                let rvm = crate::decision::compile_rvm(&policy, &rule).unwrap();
                let got_rvm = outcome(
                    rvm.eval(policy.data(), &input)
                        .map_err(|e| anyhow::anyhow!(e)),
                );
                if differs {
                    // Fixed towards OPA (tests/matchers_opa.rs), so regorus is no
                    // reference; the RVM must still agree with the interpreter, up
                    // to regorus's RVM turning builtin errors into undefined even
                    // when they are strict (seen on every erroring case above).
                    want_interpreted = got_interpreted.clone();
                    want_rvm = match &got_interpreted {
                        Outcome::Error => Outcome::Value(Value::Undefined),
                        v => v.clone(),
                    };
                }
                assert_eq!(
                    got_interpreted, want_interpreted,
                    "interpreter, strict={strict}: {rule} {:?}",
                    input.0
                );
                assert_eq!(
                    got_rvm, want_rvm,
                    "RVM, strict={strict}: {rule} {:?}",
                    input.0
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 2 * cases().len());
    }

    fn is_cached<T>(cache: &Cache<T>, key: &str) -> bool {
        cache
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .contains_key(key)
    }

    #[test]
    fn both_evaluators_match_through_the_shared_caches() {
        use crate::{CompileOptions, Input, PolicySet};
        let module = lockstep_bundle::Module {
            path: "t.rego".into(),
            source: TABLE_MODULE.into(),
            rego_version: 1,
        };
        let policy = PolicySet::compile(
            std::slice::from_ref(&module),
            serde_json::json!({}),
            &CompileOptions::default(),
        )
        .unwrap();
        let rvm = crate::decision::compile_rvm(&policy, "data.t.regex_match").unwrap();
        let input = Input::from_json(&serde_json::json!({"a": ["^only-rvm$", "x"]})).unwrap();
        assert_eq!(rvm.eval(policy.data(), &input).unwrap(), Value::Bool(false));
        assert!(is_cached(&REGEXES, "^only-rvm$"));

        let input = Input::from_json(&serde_json::json!({"a": ["^only-interp$", "x"]})).unwrap();
        let v = policy
            .eval_rule_input("data.t.regex_match", Some(&input))
            .unwrap();
        assert_eq!(v, Some(serde_json::json!(false)));
        assert!(is_cached(&REGEXES, "^only-interp$"));

        let input =
            Input::from_json(&serde_json::json!({"a": ["only-glob.*", ["."], "only-glob.x"]}))
                .unwrap();
        let v = policy
            .eval_rule_input("data.t.glob_match", Some(&input))
            .unwrap();
        assert_eq!(v, Some(serde_json::json!(true)));
        assert!(is_cached(&GLOBS, "only-glob/./*"));
    }

    #[test]
    fn one_compiled_regex_is_shared() {
        let a = regex("^shared-[0-9]+$").unwrap();
        let b = regex("^shared-[0-9]+$").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
