//! The example policy set: every test passes under the runner.

mod common;

use lockstep_policy::testing::{ExitPolicy, Outcome, TestOptions, run_tests};

#[test]
fn example_policy_tests_all_pass() {
    let (modules, data) = common::load_dir(&common::examples_dir());
    let report = run_tests(&modules, &data, &TestOptions::default()).unwrap();
    let failing: Vec<String> = report
        .results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{} {:?}", r.full_name(), r.outcome))
        .collect();
    assert!(
        failing.is_empty(),
        "{failing:#?}\n{}",
        report.to_pretty(true)
    );
    assert!(report.counts().pass >= 40, "{}", report.to_pretty(true));
    assert_eq!(report.exit_code(&ExitPolicy::default()), (0, None));
    // The guide's two tests, verbatim.
    for name in ["test_analyst_can_read", "test_analyst_cannot_write"] {
        let r = report.results.iter().find(|r| r.name == name).unwrap();
        assert_eq!(r.package, "data.mcp.tool_access_test");
        assert_eq!(r.location.file, "mcp/tool_access_test.rego");
        assert_eq!(r.outcome, Outcome::Pass);
    }
}

#[test]
#[ignore = "prints the verbose report for a human"]
fn show_report() {
    let (modules, data) = common::load_dir(&common::examples_dir());
    let report = run_tests(&modules, &data, &TestOptions::default()).unwrap();
    println!("{}", report.to_pretty(true));
}
