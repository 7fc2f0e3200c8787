//! Per-decision latency of the MCP policies in process (criterion; measured,
//! never asserted). Results and commands: BENCHMARKS.md.
//!
//!     cargo bench -p lockstep-policy --bench decision
//!
//! The policy set is the whole `examples/policies` bundle as `lockstep build`
//! reads it (tests included, as an agent would load it). For each entrypoint,
//! evaluator and input (allowed / denied):
//! - `json`: the request arrives as JSON text, is parsed and evaluated, and the
//!   decision comes back as a JSON value (the boundary OPA's anchor measures);
//! - `value`: the request is already converted ([`Input`]), only evaluation
//!   and the conversion of the result are timed.
// A benchmark program, not library code: it stops at the first failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use lockstep_bundle::{BuildOptions, build_bundle};
use lockstep_policy::{Backend, CompileOptions, DecisionFn, Input, PolicySet};

const ALLOWED: &str = r#"{"agent":{"role":"analyst"},"request":{"tool":"read_database","params":{"target":"orders","operation":"read","database":"analytics"}}}"#;
const DENIED: &str = r#"{"agent":{"role":"analyst"},"request":{"tool":"write_database","params":{"target":"orders","operation":"write","database":"payroll"}}}"#;

const ENTRYPOINTS: [&str; 3] = [
    "data.mcp.tool_access.allow",
    "data.mcp.decision.allow",
    "data.mcp.decision",
];

fn policy() -> PolicySet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    let bundle = build_bundle(&[dir], &BuildOptions::default()).unwrap();
    PolicySet::compile(&bundle.modules, bundle.data, &CompileOptions::default()).unwrap()
}

fn bench(c: &mut Criterion) {
    let policy = policy();
    let inputs = [("allowed", ALLOWED), ("denied", DENIED)];
    let probes: Vec<Input> = inputs
        .iter()
        .map(|(_, text)| Input::parse_json(text).unwrap())
        .collect();
    for entrypoint in ENTRYPOINTS {
        let mut fns: Vec<(&str, DecisionFn)> =
            vec![("interpreter", policy.decision_fn(entrypoint))];
        let rvm = policy.decision_fn_rvm(entrypoint, &probes);
        match rvm.backend() {
            Backend::Rvm => fns.push(("rvm", rvm)),
            Backend::Interpreter { reason } => {
                eprintln!("{entrypoint}: no RVM benchmark ({reason})");
            }
        }
        let mut group = c.benchmark_group(entrypoint);
        for (mode, f) in &fns {
            for ((label, text), input) in inputs.iter().zip(&probes) {
                // Same answer as the interpreter, or the numbers mean nothing.
                assert_eq!(
                    f.eval(input).unwrap(),
                    f.eval_interpreter(input).unwrap(),
                    "{entrypoint} {mode} {label}"
                );
                group.bench_function(format!("{mode}/{label}/value"), |b| {
                    b.iter(|| f.eval(black_box(input)).unwrap())
                });
                group.bench_function(format!("{mode}/{label}/json"), |b| {
                    b.iter(|| {
                        let input = Input::parse_json(black_box(text)).unwrap();
                        f.eval(&input).unwrap()
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
