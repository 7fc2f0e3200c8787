//! An `opa test`-compatible runner.
//!
//! Semantics, as in OPA:
//! - every rule whose head has a static component starting with `test_` is a
//!   test, in any module (not only `*_test.rego`); `todo_test_*` rules are
//!   reported as SKIPPED and not run;
//! - a test passes when it evaluates to `true`; `false`, any other value or
//!   undefined is FAIL; an evaluation error is ERROR;
//! - a name defined several times in a package is several tests: `test_x`,
//!   `test_x#01`, `test_x#02`, ... (see `discover`);
//! - `with input as`, `with data.x as`, and mocks of builtins and functions
//!   (`with sprintf as f`, `with glob.match as false`) work;
//! - `print` output is captured per test;
//! - each test is limited to 5 s by default (OPA's `--timeout`).
//!
//! Differences from OPA (deliberate or imposed by regorus):
//! - results are ordered by file name, then position in the file (OPA's order
//!   follows its parallel workers and module map);
//! - no traces: `-v` shows no evaluation trace under failures, and
//!   `--var-values`/`--explain` have nothing to show;
//! - parametrised tests (`test_x[case] if ...`) report the cases that evaluated
//!   to `true`/`false`, but a case whose body fails is invisible without OPA's
//!   tracer; a parametrised test with no passing case is reported as FAIL;
//! - functions named `test_*` and `default test_*` rules are not tests.

mod discover;
mod duration;
mod report;

use std::time::{Duration, Instant};

use lockstep_bundle::Module;
use regex::Regex;
use regorus::Engine;
use serde_json::Value as Json;

use crate::engine::{CompileOptions, Extras, build, data_from_json};
use crate::error::{CompileError, Diagnostic};
use crate::sources::Sources;
use discover::{TestCase, discover};

pub use duration::go_duration;
pub use report::{Counts, ExitPolicy, Outcome, SubResult, TestReport, TestResult};

#[derive(Debug, Clone)]
pub struct TestOptions {
    /// `opa test --run`: only tests whose full name (`data.pkg.test_x`) matches.
    pub run: Option<Regex>,
    /// `opa test --timeout` (default 5 s). Longer tests are ERROR.
    pub timeout: Duration,
    /// Compilation settings (the compile-time checks apply to tests too).
    pub compile: CompileOptions,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            run: None,
            timeout: Duration::from_secs(5),
            compile: CompileOptions::default(),
        }
    }
}

/// Compile `modules` (policies and tests together) with `data` and run every
/// test. A compile error means no test ran, as with `opa test` (exit code 1).
pub fn run_tests(
    modules: &[Module],
    data: &Json,
    opts: &TestOptions,
) -> Result<TestReport, CompileError> {
    let mut compile = opts.compile.clone();
    compile.eval_timeout = Some(opts.timeout);
    let mut extras = Extras {
        gather_prints: true,
        edits: Vec::new(),
    };

    let data = data_from_json(data)?;
    let mut built = build(modules, data.clone(), &compile, &extras)?;
    let found = discover(&built.loaded.modules);
    if !found.renames.is_empty() {
        // Later definitions of a repeated test name get their own rule name.
        extras.edits = found.renames;
        built = build(modules, data, &compile, &extras)?;
    }

    let mut results = Vec::new();
    for case in &found.cases {
        if let Some(re) = &opts.run
            && !re.is_match(&format!("{}.{}", case.package, case.name))
        {
            continue;
        }
        results.push(run_case(&built.engine, &built.loaded.sources, case));
    }
    Ok(TestReport { results })
}

fn run_case(prepared: &Engine, sources: &Sources, case: &TestCase) -> TestResult {
    let mut result = TestResult {
        location: case.location.clone(),
        package: case.package.clone(),
        name: case.name.clone(),
        duration: Duration::ZERO,
        outcome: Outcome::Skip,
        output: String::new(),
        sub_results: Vec::new(),
    };
    if case.skip {
        return result;
    }

    // A clone per test: `with` and prints cannot leak from one test to the next.
    let mut engine = prepared.clone();
    let started = Instant::now();
    let evaluated = if case.parametrised {
        engine
            .eval_query(case.eval_path.clone(), false)
            .map(|r| {
                r.result
                    .into_iter()
                    .next()
                    .and_then(|r| r.expressions.into_iter().next())
            })
            .map(|e| e.map_or(regorus::Value::Undefined, |e| e.value))
    } else {
        engine.eval_rule(case.eval_path.clone())
    };
    result.duration = started.elapsed();
    result.output = captured_output(&mut engine);

    result.outcome = match evaluated {
        Err(e) => Outcome::Error(sources.fix(Diagnostic::from_regorus(&e, "eval_internal_error"))),
        Ok(value) if case.parametrised => {
            result.sub_results = sub_results(&value);
            let all_pass =
                !result.sub_results.is_empty() && result.sub_results.iter().all(|s| !s.fail);
            if all_pass {
                Outcome::Pass
            } else {
                Outcome::Fail
            }
        }
        Ok(regorus::Value::Bool(true)) => Outcome::Pass,
        Ok(_) => Outcome::Fail,
    };
    result
}

/// regorus prefixes each print with `file:line: `; OPA's test output has only the text.
fn captured_output(engine: &mut Engine) -> String {
    let Ok(prints) = engine.take_prints() else {
        return String::new();
    };
    let mut out = String::new();
    for line in prints {
        out.push_str(strip_location(&line));
        out.push('\n');
    }
    out
}

fn strip_location(line: &str) -> &str {
    // `<file>:<digits>: <message>`; files do not contain ": " followed by digits.
    let mut search = 0;
    while let Some(pos) = line
        .get(search..)
        .and_then(|s| s.find(':'))
        .map(|p| p + search)
    {
        let rest = line.get(pos + 1..).unwrap_or_default();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && let Some(msg) = rest.get(digits..).and_then(|r| r.strip_prefix(": "))
        {
            return msg;
        }
        search = pos + 1;
    }
    line
}

/// The cases of a parametrised test: `{case: true|false|{nested...}}`.
fn sub_results(value: &regorus::Value) -> Vec<SubResult> {
    let mut out = Vec::new();
    if let regorus::Value::Object(map) = value {
        for (k, v) in map.iter() {
            let name = match k {
                regorus::Value::String(s) => s.to_string(),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            let fail = match v {
                regorus::Value::Bool(b) => !b,
                nested @ regorus::Value::Object(_) => {
                    let inner = sub_results(nested);
                    inner.is_empty() || inner.iter().any(|s| s.fail)
                }
                _ => true,
            };
            out.push(SubResult { name, fail });
        }
    }
    out
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
    fn print_prefix_is_removed() {
        assert_eq!(
            strip_location("mcp/x_test.rego:31: roles: {1}"),
            "roles: {1}"
        );
        assert_eq!(strip_location("C:/a.rego:3: t: 1"), "t: 1");
        assert_eq!(strip_location("no prefix"), "no prefix");
    }
}
