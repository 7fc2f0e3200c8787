//! Per-decision latency of the three-layer MCP decision (measured, not asserted).
//!
//!     cargo run --release -p lockstep-policy --example bench_decision
// A benchmark program, not library code: it stops at the first failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Instant;

use lockstep_bundle::Module;
use lockstep_policy::{CompileOptions, DecisionFn, Input, PolicySet};
use serde_json::json;

fn load() -> PolicySet {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies/mcp");
    let modules: Vec<Module> = [
        "tool_access",
        "command_scope",
        "resource_access",
        "decision",
    ]
    .iter()
    .map(|f| Module {
        path: format!("mcp/{f}.rego"),
        source: std::fs::read_to_string(format!("{root}/{f}.rego")).unwrap(),
        rego_version: 1,
    })
    .collect();
    let mut data = json!({"mcp": {}});
    for d in ["roles", "commands", "resources"] {
        let text = std::fs::read_to_string(format!("{root}/{d}/data.json")).unwrap();
        data["mcp"][d] = serde_json::from_str(&text).unwrap();
    }
    PolicySet::compile(&modules, data, &CompileOptions::default()).unwrap()
}

fn median_ns(f: &DecisionFn, inputs: &[Input]) -> (f64, f64) {
    for i in inputs.iter().cycle().take(2_000) {
        f.eval(i).unwrap();
    }
    let mut samples = Vec::with_capacity(20_000);
    for i in inputs.iter().cycle().take(20_000) {
        let t = Instant::now();
        let v = f.eval(i).unwrap();
        samples.push(t.elapsed().as_nanos() as f64);
        std::hint::black_box(v);
    }
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

fn main() {
    let t = Instant::now();
    let policy = load();
    println!("compile (4 modules + data, prepared): {:?}", t.elapsed());
    let inputs: Vec<Input> = [
        json!({"agent": {"role": "analyst"}, "request": {"tool": "read_database", "params": {"target": "orders", "operation": "read", "database": "analytics"}}}),
        json!({"agent": {"role": "analyst"}, "request": {"tool": "write_database", "params": {"target": "orders", "operation": "write", "database": "payroll"}}}),
    ]
    .iter()
    .map(|v| Input::from_json(v).unwrap())
    .collect();
    // `BENCH_ENTRYPOINTS=data.a.b,data.c` times other entrypoints.
    let custom = std::env::var("BENCH_ENTRYPOINTS").unwrap_or_default();
    let entrypoints: Vec<&str> = if custom.is_empty() {
        vec![
            "data.mcp.decision",
            "data.mcp.decision.allow",
            "data.mcp.tool_access.allow",
            "data.mcp.tool_access",
        ]
    } else {
        custom.split(',').collect()
    };
    // `BENCH_RVM_ONLY=1` skips the interpreter (for profiling the RVM alone).
    let rvm_only = std::env::var("BENCH_RVM_ONLY").is_ok();
    for ep in entrypoints {
        if !rvm_only {
            let interp = policy.decision_fn(ep);
            let (m, p99) = median_ns(&interp, &inputs);
            println!(
                "{ep:32} interpreter: median {:>7.0} ns  p99 {:>7.0} ns",
                m, p99
            );
        }
        let rvm = policy.decision_fn_rvm(ep, &inputs);
        let (m, p99) = median_ns(&rvm, &inputs);
        println!(
            "{ep:32} {:?}: median {:>7.0} ns  p99 {:>7.0} ns",
            rvm.backend(),
            m,
            p99
        );
    }
}
