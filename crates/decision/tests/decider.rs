//! The one decision path on its own: every outcome is counted, logged in OPA's event
//! shape, and failing closed evaluates nothing.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_decision::{
    Decider, DecisionLogConfig, DecisionLogger, DecisionRequest, Outcome, OutcomeLabels,
};
use lockstep_sync::{SyncConfig, Syncer, Verification};
use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

fn count(d: &Decider, outcome: &'static str) -> u64 {
    d.metrics()
        .decisions
        .get_or_create(&OutcomeLabels { outcome })
        .get()
}

#[tokio::test]
async fn outcomes_are_counted_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let (logger, task) = DecisionLogger::start(&DecisionLogConfig {
        console: false,
        file: Some(log.clone()),
        upload: None,
    })
    .await
    .unwrap()
    .unwrap();
    // No bundle configured: what the write API stores decides (OPAL mode).
    let syncer = Syncer::new(SyncConfig::new(Vec::new(), dir.path().join("opa"))).unwrap();
    syncer
        .put_policy(
            "p.rego",
            "package p\n\nallow if input.user == \"alice\"\n".into(),
        )
        .unwrap();
    let d = Decider::new(syncer, Some(logger));
    let input = json!({"user": "alice"});
    let req = DecisionRequest {
        path: "p/allow",
        input: Some(&input),
        remote: None,
    };
    let ok = d.decide(
        req,
        |p| p.eval_data_path("data.p.allow", Some(&input)),
        |v| Ok::<_, String>(v.cloned()),
    );
    assert!(matches!(
        ok.outcome,
        Outcome::Decided(Some(Value::Bool(true)))
    ));
    let rejected = d.decide(
        req,
        |p| p.eval_data_path("data.p.allow", Some(&input)),
        |_| Err::<(), _>("not a decision".to_string()),
    );
    assert!(matches!(rejected.outcome, Outcome::Rejected(_)));
    let failed = d.decide(
        req,
        |p| p.eval_data_path("data.p[", Some(&input)),
        |v| Ok::<_, String>(v.cloned()),
    );
    assert!(matches!(failed.outcome, Outcome::EvalFailed(_)));
    assert_eq!((count(&d, "ok"), count(&d, "error")), (1, 2));
    assert_ne!(ok.id, rejected.id);
    drop(d);
    task.await.unwrap();
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["decision_id"], json!(ok.id));
    assert_eq!(events[0]["result"], json!(true));
    assert_eq!(events[0]["path"], json!("p/allow"));
    assert_eq!(events[0]["input"], input);
    assert!(events[0].get("error").is_none());
    assert_eq!(events[1]["error"]["code"], json!("eval_error"));
    assert_eq!(
        events[1]["result"],
        json!(true),
        "a rejected decision logs what was evaluated"
    );
    assert_eq!(events[2]["error"]["code"], json!("eval_error"));
}

#[tokio::test]
async fn a_configured_bundle_not_yet_active_fails_closed_without_evaluating() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sync_config(
        service("http://127.0.0.1:9", None),
        Verification::Skip,
        dir.path(),
        None,
    );
    let d = Decider::new(Syncer::new(cfg).unwrap(), None);
    let decided = d.decide(
        DecisionRequest {
            path: "p/allow",
            input: None,
            remote: None,
        },
        |_| panic!("no revision: nothing may be evaluated"),
        |v| Ok::<_, String>(v.cloned()),
    );
    assert_eq!(decided.revision(), None);
    match decided.outcome {
        Outcome::FailClosed(reason) => assert!(reason.contains("not activated yet"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&d, "fail_closed"), 1);
}
