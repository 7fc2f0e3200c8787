//! Test results and their `opa test` renderings (pretty and `--format json`).

use std::io::{self, Write};
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::duration::go_duration;
use crate::error::{Diagnostic, SourceLocation};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    /// The test evaluated to something other than `true`, or was undefined.
    Fail,
    /// Evaluation failed (conflict, time limit, ...).
    Error(Diagnostic),
    /// A `todo_test_*` rule: reported, not run.
    Skip,
}

/// One case of a parametrised test (`test_x[case] if ...`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubResult {
    pub name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fail: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub location: SourceLocation,
    /// `data.mcp.tool_access_test`.
    pub package: String,
    /// `test_analyst_can_read`, or `test_x#01` for a repeated name.
    pub name: String,
    pub duration: Duration,
    pub outcome: Outcome,
    /// What `print` wrote during the test, one line per call.
    pub output: String,
    pub sub_results: Vec<SubResult>,
}

impl TestResult {
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.package, self.name)
    }

    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    fn outcome_word(&self) -> &'static str {
        match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Error(_) => "ERROR",
            Outcome::Skip => "SKIPPED",
        }
    }

    /// `data.pkg.test_x: PASS (1.2ms)`, or `data.pkg.test_x: SKIPPED`.
    pub fn line(&self) -> String {
        match self.outcome {
            Outcome::Skip => format!("{}: SKIPPED", self.full_name()),
            _ => format!(
                "{}: {} ({})",
                self.full_name(),
                self.outcome_word(),
                go_duration(self.duration)
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub error: usize,
    pub skip: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.pass + self.fail + self.error + self.skip
    }
}

/// How the CLI turns a report into an exit code.
#[derive(Debug, Clone, Copy)]
pub struct ExitPolicy {
    /// `opa test -z`: skipped tests do not fail the run.
    pub exit_zero_on_skipped: bool,
    /// Fail when no test ran. OPA needs `--fail-on-empty` for this; lockstep
    /// defaults to it because a CI run that tests nothing is a broken CI run.
    pub fail_on_empty: bool,
}

impl Default for ExitPolicy {
    fn default() -> Self {
        Self {
            exit_zero_on_skipped: false,
            fail_on_empty: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

impl TestReport {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.results {
            match r.outcome {
                Outcome::Pass => c.pass += 1,
                Outcome::Fail => c.fail += 1,
                Outcome::Error(_) => c.error += 1,
                Outcome::Skip => c.skip += 1,
            }
        }
        c
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// OPA's exit codes: 0 when every test passed; 2 when any failed, errored
    /// or was skipped (unless `exit_zero_on_skipped`); 1 with the message
    /// "no test cases found" when nothing ran and `fail_on_empty`.
    pub fn exit_code(&self, policy: &ExitPolicy) -> (i32, Option<&'static str>) {
        if self.results.is_empty() {
            return if policy.fail_on_empty {
                (1, Some("no test cases found"))
            } else {
                (0, None)
            };
        }
        let failing = self.results.iter().any(|r| match r.outcome {
            Outcome::Pass => false,
            Outcome::Skip => !policy.exit_zero_on_skipped,
            Outcome::Fail | Outcome::Error(_) => true,
        });
        (if failing { 2 } else { 0 }, None)
    }

    /// `opa test`'s human format. Without `verbose` only failing, erroring and
    /// skipped tests are listed; with it every test, and a FAILURES section first.
    pub fn write_pretty(&self, out: &mut dyn Write, verbose: bool) -> io::Result<()> {
        let hl = "-".repeat(80);
        let counts = self.counts();
        if counts.fail > 0 && verbose {
            writeln!(out, "FAILURES")?;
            writeln!(out, "{hl}")?;
            for r in self.results.iter().filter(|r| r.outcome == Outcome::Fail) {
                writeln!(out, "{}", r.line())?;
                write_sub_results(out, r, true)?;
                writeln!(out)?;
            }
            writeln!(out, "SUMMARY")?;
            writeln!(out, "{hl}")?;
        }

        let mut dirty = false;
        let mut last_file: Option<&str> = None;
        for r in &self.results {
            if verbose || !r.passed() {
                if last_file != Some(r.location.file.as_str()) {
                    writeln!(out, "{}:", r.location.file)?;
                    last_file = Some(r.location.file.as_str());
                }
                dirty = true;
                writeln!(out, "{}", r.line())?;
                write_sub_results(out, r, verbose)?;
                if !r.output.trim().is_empty() {
                    writeln!(out)?;
                    for line in r.output.trim().lines() {
                        writeln!(out, "  {line}")?;
                    }
                    writeln!(out)?;
                }
            }
            if let Outcome::Error(d) = &r.outcome {
                writeln!(out, "  {d}")?;
            }
        }
        if dirty {
            writeln!(out, "{hl}")?;
        }

        let total = counts.total();
        for (label, n) in [
            ("PASS", counts.pass),
            ("FAIL", counts.fail),
            ("SKIPPED", counts.skip),
            ("ERROR", counts.error),
        ] {
            if n > 0 {
                writeln!(out, "{label}: {n}/{total}")?;
            }
        }
        Ok(())
    }

    /// The pretty report as a string.
    pub fn to_pretty(&self, verbose: bool) -> String {
        let mut buf = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_pretty(&mut buf, verbose);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// `opa test --format json`: an array of results, indented by two spaces.
    pub fn to_json(&self) -> String {
        let items: Vec<JsonResult<'_>> = self.results.iter().map(JsonResult).collect();
        serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_string())
    }
}

fn write_sub_results(out: &mut dyn Write, r: &TestResult, all: bool) -> io::Result<()> {
    for sub in r.sub_results.iter().filter(|s| all || s.fail) {
        let word = if sub.fail { "FAIL" } else { "PASS" };
        writeln!(out, "  {}: {word}", sub.name)?;
    }
    Ok(())
}

/// Serialises one result with OPA's field names: `location`, `package`,
/// `name`, `fail`, `error`, `skip`, `duration` (ns), `output` (base64, as Go
/// encodes `[]byte`), `sub_results`.
struct JsonResult<'a>(&'a TestResult);

impl Serialize for JsonResult<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("location", &r.location)?;
        map.serialize_entry("package", &r.package)?;
        map.serialize_entry("name", &r.name)?;
        match &r.outcome {
            Outcome::Fail => map.serialize_entry("fail", &true)?,
            Outcome::Error(d) => map.serialize_entry("error", d)?,
            Outcome::Skip => map.serialize_entry("skip", &true)?,
            Outcome::Pass => {}
        }
        let nanos = u64::try_from(r.duration.as_nanos()).unwrap_or(u64::MAX);
        map.serialize_entry("duration", &nanos)?;
        if !r.output.is_empty() {
            map.serialize_entry("output", &base64(r.output.as_bytes()))?;
        }
        if !r.sub_results.is_empty() {
            map.serialize_entry("sub_results", &SubResults(&r.sub_results))?;
        }
        map.end()
    }
}

struct SubResults<'a>(&'a [SubResult]);

impl Serialize for SubResults<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for sub in self.0 {
            map.serialize_entry(&sub.name, sub)?;
        }
        map.end()
    }
}

/// Standard base64 with padding (what Go's encoding/json does for `[]byte`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |n: u32| {
        ALPHABET
            .get((n & 63) as usize)
            .map_or('=', |b| char::from(*b))
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
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

    fn result(name: &str, file: &str, outcome: Outcome) -> TestResult {
        TestResult {
            location: SourceLocation {
                file: file.into(),
                row: 3,
                col: 1,
            },
            package: "data.p".into(),
            name: name.into(),
            duration: Duration::from_micros(150),
            outcome,
            output: String::new(),
            sub_results: vec![],
        }
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hello\n"), "aGVsbG8K");
    }

    #[test]
    fn quiet_report_lists_only_problems() {
        let report = TestReport {
            results: vec![
                result("test_a", "p_test.rego", Outcome::Pass),
                result("test_b", "p_test.rego", Outcome::Fail),
            ],
        };
        let hl = "-".repeat(80);
        assert_eq!(
            report.to_pretty(false),
            format!("p_test.rego:\ndata.p.test_b: FAIL (150µs)\n{hl}\nPASS: 1/2\nFAIL: 1/2\n")
        );
        assert_eq!(report.exit_code(&ExitPolicy::default()), (2, None));
    }

    #[test]
    fn all_pass_quiet_is_one_line() {
        let report = TestReport {
            results: vec![result("test_a", "f.rego", Outcome::Pass)],
        };
        assert_eq!(report.to_pretty(false), "PASS: 1/1\n");
        assert_eq!(report.exit_code(&ExitPolicy::default()), (0, None));
    }

    #[test]
    fn verbose_report_has_failures_then_summary() {
        let mut printed = result("test_c", "b.rego", Outcome::Pass);
        printed.output = "hello\n".into();
        let report = TestReport {
            results: vec![
                result("test_a", "a.rego", Outcome::Fail),
                printed,
                result("todo_test_d", "b.rego", Outcome::Skip),
                result(
                    "test_e",
                    "b.rego",
                    Outcome::Error(Diagnostic::new("eval_conflict_error", "boom", None)),
                ),
            ],
        };
        let hl = "-".repeat(80);
        let expected = format!(
            "FAILURES\n{hl}\ndata.p.test_a: FAIL (150µs)\n\nSUMMARY\n{hl}\n\
             a.rego:\ndata.p.test_a: FAIL (150µs)\n\
             b.rego:\ndata.p.test_c: PASS (150µs)\n\n  hello\n\n\
             data.p.todo_test_d: SKIPPED\n\
             data.p.test_e: ERROR (150µs)\n  eval_conflict_error: boom\n\
             {hl}\nPASS: 1/4\nFAIL: 1/4\nSKIPPED: 1/4\nERROR: 1/4\n"
        );
        assert_eq!(report.to_pretty(true), expected);
    }

    #[test]
    fn json_uses_opa_field_names() {
        let mut r = result("test_b", "p_test.rego", Outcome::Fail);
        r.output = "hi\n".into();
        let report = TestReport {
            results: vec![r, result("todo_test_x", "p_test.rego", Outcome::Skip)],
        };
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"location": {"file": "p_test.rego", "row": 3, "col": 1}, "package": "data.p",
                 "name": "test_b", "fail": true, "duration": 150000, "output": "aGkK"},
                {"location": {"file": "p_test.rego", "row": 3, "col": 1}, "package": "data.p",
                 "name": "todo_test_x", "skip": true, "duration": 150000}
            ])
        );
    }

    #[test]
    fn skips_fail_the_run_unless_told_otherwise() {
        let report = TestReport {
            results: vec![result("todo_test_a", "f.rego", Outcome::Skip)],
        };
        assert_eq!(report.exit_code(&ExitPolicy::default()).0, 2);
        let lenient = ExitPolicy {
            exit_zero_on_skipped: true,
            ..ExitPolicy::default()
        };
        assert_eq!(report.exit_code(&lenient).0, 0);
    }

    #[test]
    fn an_empty_report_fails_by_default() {
        let empty = TestReport::default();
        assert_eq!(
            empty.exit_code(&ExitPolicy::default()),
            (1, Some("no test cases found"))
        );
        let opa_default = ExitPolicy {
            fail_on_empty: false,
            ..ExitPolicy::default()
        };
        assert_eq!(empty.exit_code(&opa_default), (0, None));
    }
}
