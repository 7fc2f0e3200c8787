//! Where a prepare's CPU goes (BENCHMARKS.md I): read, data, compile, package evaluation and
//! warm-up of a 1 MB-data revision of the example policies, six revisions in a row, each
//! compiled after the one before (`cargo run --release -p lockstep-gateway --example prepare_phases`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use lockstep_bundle::{ReadOptions, read_tar_gz};
use lockstep_policy::{CompileOptions, DataDocument, PolicySet};
use std::time::Instant;

fn main() {
    let raw = lockstep_testkit::prelude::example_bundle_with_inventory("r1", 1, None, 1 << 20);
    let opts = CompileOptions::default();
    let mut prev: Option<PolicySet> = None;
    for round in 0..6 {
        let t0 = Instant::now();
        let ro = ReadOptions {
            lazy_data: true,
            skip_verify: true,
            ..ReadOptions::default()
        };
        let bundle = read_tar_gz(raw.as_slice(), &ro).unwrap();
        let t1 = Instant::now();
        let data = DataDocument::from_bundle(&bundle).unwrap();
        let t2 = Instant::now();
        let mut all = DataDocument::empty();
        all.merge(&data);
        let t3 = Instant::now();
        let policy = match &prev {
            Some(p) => PolicySet::compile_document_after(p, &bundle.modules, all, &opts).unwrap(),
            None => PolicySet::compile_document(&bundle.modules, all, &opts).unwrap(),
        };
        let t4 = Instant::now();
        for p in policy.packages_outside_tests() {
            let t = Instant::now();
            policy.eval_query(p, None).unwrap();
            if round == 5 {
                println!("  {p}: {:.2}", t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let t5 = Instant::now();
        let eps: Vec<String> = prev
            .as_ref()
            .map(|p| p.entrypoints_used())
            .unwrap_or_default();
        policy.warm(&eps);
        let t6 = Instant::now();
        let input = serde_json::json!({"agent": {"id": "a", "role": "analyst"}, "tool": "run_query", "method": "tools/call", "arguments": {}});
        for ep in [
            "data.mcp.tool_access.allow",
            "data.mcp.command_scope.allow",
            "data.mcp.resource_access.allow",
            "data.mcp.decision",
        ] {
            policy.eval_data_path(ep, Some(&input)).unwrap();
        }
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        println!(
            "round {round}: read {:.1} data {:.1} merge {:.1} compile {:.1} evalpkgs {:.1} warm {:.1} ({} eps) total {:.1}",
            ms(t0, t1),
            ms(t1, t2),
            ms(t2, t3),
            ms(t3, t4),
            ms(t4, t5),
            ms(t5, t6),
            eps.len(),
            ms(t0, t6)
        );
        prev = Some(policy);
    }
}
