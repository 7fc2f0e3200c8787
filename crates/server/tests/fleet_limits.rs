//! Status reports are bounded and the fleet view is linear in what they hold (issue 9,
//! finding 2): before, one 425 KB report (a 400 KB label, 2,000 made-up bundles) from
//! any status token made `GET /v1/fleet` answer 901 MB, labels and plugins being copied
//! once per reported bundle, and `/metrics` built the same view on every scrape.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use lockstep_server::fleet::{Fleet, IngestError, ReportLimits};
use lockstep_server::metrics::Metrics;
use lockstep_server::model::{Action, HistoryEvent};
use lockstep_server::status::StatusReport;
use lockstep_testkit::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

/// The finding's report: `label_bytes` of label, `made_up` bundles nobody serves, and
/// the served bundle `main`.
fn hostile_report(id: &str, label_bytes: usize, made_up: usize) -> Value {
    let mut bundles = Map::new();
    for i in 0..made_up {
        bundles.insert(format!("b{i:04}"), json!({"active_revision": "x"}));
    }
    bundles.insert(
        "main".into(),
        json!({"name": "main", "active_revision": "r1"}),
    );
    json!({
        "labels": {"id": id, "version": "1.4.0", "pad": "x".repeat(label_bytes)},
        "bundles": bundles,
        "plugins": {"bundle": {"state": "OK"}},
    })
}

async fn fleet_text(h: &TestServer) -> String {
    h.http
        .get(h.url("/v1/fleet"))
        .bearer_auth(STATUS)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn metrics_text(h: &TestServer) -> String {
    h.http
        .get(h.url("/metrics"))
        .bearer_auth(STATUS)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn refused(h: &TestServer, body: &Value) -> String {
    let r = h.report(body).await;
    assert_eq!(r.status(), 413);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "request_too_large", "{b}");
    b["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn finding2_oversize_status_reports_are_refused_and_the_view_stays_small() {
    let h = TestServer::start().await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    assert_eq!(
        h.report(&opa_status("opa-1", "main", "r1")).await.status(),
        200
    );
    let before = fleet_text(&h).await;

    // The finding's 425 KB report.
    let body = hostile_report("attacker", 400_000, 2000);
    assert!(body.to_string().len() > 420_000);
    let m = refused(&h, &body).await;
    assert_eq!(
        m,
        "status report has 2001 bundles; at most 64 are accepted (fleet.max_bundles_per_report)"
    );
    // Each limit on its own.
    let m = refused(&h, &hostile_report("attacker", 400_000, 0)).await;
    assert_eq!(
        m,
        "status report label \"pad\" is longer than 4096 bytes (fleet.max_label_bytes)"
    );
    let mut many = hostile_report("attacker", 0, 0);
    for i in 0..64 {
        many["labels"][format!("l{i}")] = json!("v");
    }
    assert!(refused(&h, &many).await.contains("(fleet.max_labels)"));
    let mut plugins = hostile_report("attacker", 0, 0);
    plugins["plugins"] = json!({"p": "x".repeat(17_000)});
    assert!(
        refused(&h, &plugins)
            .await
            .contains("(fleet.max_plugins_bytes)")
    );
    let mut status = hostile_report("attacker", 0, 0);
    status["bundles"]["main"]["errors"] = json!(vec![json!({"message": "e".repeat(100)}); 200]);
    assert!(
        refused(&h, &status)
            .await
            .contains("status of bundle \"main\"")
    );

    // Nothing of them reached the view or the metrics.
    let after = fleet_text(&h).await;
    assert!(!after.contains("attacker"), "{after}");
    assert!(
        after.len() < before.len() + 256,
        "{} -> {}",
        before.len(),
        after.len()
    );
    let m = metrics_text(&h).await;
    assert!(!m.contains("b0001") && m.len() < 16 * 1024, "{m}");
    h.shutdown().await;
}

#[tokio::test]
async fn finding2_view_is_linear_even_with_the_limits_raised() {
    // An operator may raise the limits: the report is then taken, but the made-up
    // bundles are not kept and the label appears once, not once per bundle.
    let h = TestServer::with(|c| {
        c.fleet.max_bundles_per_report = Some(5000);
        c.fleet.max_label_bytes = Some(1 << 20);
    })
    .await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    let body = hostile_report("attacker", 400_000, 2000);
    let size = body.to_string().len();
    assert_eq!(h.report(&body).await.status(), 200);
    let text = fleet_text(&h).await;
    assert!(
        text.len() < 400_000 + 8 * 1024,
        "view of {} bytes for a {size}-byte report",
        text.len()
    );
    let f: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = f["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main"]);
    assert_eq!(f["bundles"][0]["instances"][0]["id"], "attacker");
    assert!(f["bundles"][0]["instances"][0].get("labels").is_none());
    assert_eq!(
        f["instances"][0]["labels"]["pad"].as_str().unwrap().len(),
        400_000
    );
    // Scrapes count without building the view.
    let m = metrics_text(&h).await;
    assert!(
        m.contains(r#"lockstep_fleet_instances{bundle="main",revision="r1"} 1"#),
        "{m}"
    );
    assert!(!m.contains("b0001") && m.len() < 16 * 1024);
    // The shared record holds what the view holds.
    let dir = h.store().join("fleet/instances");
    let rec = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
    let rec: Value = serde_json::from_slice(&std::fs::read(rec.path()).unwrap()).unwrap();
    assert_eq!(
        rec["bundles"].as_object().unwrap().len(),
        1,
        "{}",
        rec["bundles"]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn finding2_statuses_of_bundles_not_served_are_dropped() {
    let h = TestServer::start().await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    let mut body = opa_status("opa-1", "main", "r1");
    for i in 0..10 {
        body["bundles"][format!("made-up-{i}")] = json!({"active_revision": "x"});
    }
    assert_eq!(h.report(&body).await.status(), 200);
    let f: Value = serde_json::from_str(&fleet_text(&h).await).unwrap();
    assert_eq!(f["bundles"].as_array().unwrap().len(), 1, "{f}");
    assert_eq!(f["bundles"][0]["name"], "main");
    assert_eq!(f["bundles"][0]["instances_total"], 1);
    // A bundle published later is taken from the next report on.
    h.publish("made-up-3", bundle("m3", 1000, Some(&h.keys)))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.report(&body).await.status(), 200);
    let f: Value = serde_json::from_str(&fleet_text(&h).await).unwrap();
    let names: Vec<&str> = f["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["made-up-3", "main"]);
    h.shutdown().await;
}

// ---- proptest: Fleet::ingest on any JSON -------------------------------------

const LIMITS: ReportLimits = ReportLimits {
    max_bundles: 8,
    max_labels: 8,
    max_label_bytes: 64,
    max_plugins_bytes: 256,
    max_bundle_status_bytes: 512,
};
const SERVED: [&str; 2] = ["main", "other"];

/// Mostly short strings, sometimes long ones (over the label limit).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["", "a", "id", "main", "other", "é", "\u{0}", " "])
            .prop_map(str::to_string),
        1 => (0usize..600, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        2 => any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 48, 12, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..12)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn bundle_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(SERVED.to_vec()).prop_map(str::to_string),
        text(),
    ]
}

/// A bundle status: mostly OPA's fields, sometimes anything.
fn bundle_status() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => (
            prop_oneof![3 => Just("r1".to_string()), 1 => text()],
            prop::collection::vec(json_value(), 0..3),
            json_value()
        )
            .prop_map(|(rev, errors, code)| json!({
                "active_revision": rev, "errors": errors, "http_code": code,
                "message": "m", "code": "bundle_error"
            })),
        1 => json_value(),
    ]
}

/// A status report: OPA's shape with random contents and sizes, or any JSON at all.
fn report_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (
            prop_oneof![
                6 => prop::sample::select(vec!["i1", "i2", "i3", "i4"]).prop_map(Value::from),
                1 => json_value(),
            ],
            prop::collection::btree_map(
                text(),
                prop_oneof![
                    3 => prop::sample::select(vec!["v", "1.4.0", ""]).prop_map(Value::from),
                    1 => json_value(),
                ],
                0..10
            ),
            prop::collection::btree_map(bundle_name(), bundle_status(), 0..6),
            prop::option::weighted(0.2, bundle_status()),
            prop_oneof![
                3 => Just(json!({"bundle": {"state": "OK"}})),
                1 => json_value(),
            ],
        )
            .prop_map(|(id, labels, bundles, legacy, plugins)| {
                let mut labels: Map<String, Value> = labels.into_iter().collect();
                labels.insert("id".into(), id);
                let mut r = json!({
                    "labels": labels,
                    "bundles": bundles.into_iter().collect::<Map<_, _>>(),
                    "plugins": plugins,
                });
                if let Some(l) = legacy {
                    r["bundle"] = l;
                }
                r
            }),
        1 => json_value(),
    ]
}

/// Most bytes one instance may put in the view: its own part once, and a status per
/// served bundle (every field counted at its limit, with room for JSON's escaping).
fn per_instance_bound() -> usize {
    let escaped = |n: usize| 6 * n + 2;
    let own = escaped(256) * 2 // id, partition
        + LIMITS.max_labels * (escaped(LIMITS.max_label_bytes) + LIMITS.max_label_bytes + 4)
        + LIMITS.max_plugins_bytes
        + 512;
    own + SERVED.len() * (escaped(256) + LIMITS.max_bundle_status_bytes + 512)
}

#[test]
fn finding2_proptest_ingest_never_panics_and_the_view_stays_bounded() {
    let fleet = Fleet::new(
        Duration::from_secs(300),
        Duration::from_secs(3600),
        Arc::new(Metrics::new()),
    )
    .with_limits(LIMITS);
    for (seq, name) in SERVED.iter().enumerate() {
        fleet.on_activation(
            name,
            "r1",
            &HistoryEvent {
                activate_at: None,
                seq: seq as u64 + 1,
                action: Action::Publish,
                id: format!("{name}-id"),
                revision: "r1".into(),
                previous_revision: None,
                at: Utc::now(),
                actor: "ci".into(),
                reason: None,
            },
        );
    }
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let accepted = AtomicUsize::new(0);
    let result = runner.run(
        &(report_json(), prop::option::of(text())),
        |(body, partition)| {
            let now = Utc::now();
            if let Ok(report) = serde_json::from_value::<StatusReport>(body) {
                match fleet.ingest(&report, partition.as_deref(), now) {
                    Ok(_) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(
                        IngestError::Invalid(_)
                        | IngestError::TooLarge(_)
                        | IngestError::Forbidden(_),
                    ) => {}
                }
            }
            fleet.update_gauges();
            let view = fleet.view(now);
            let size = serde_json::to_string(&view).unwrap().len();
            let bound = 4096 + view.instances.len() * per_instance_bound();
            prop_assert!(
                size <= bound,
                "view of {} bytes for {} instances (bound {})",
                size,
                view.instances.len(),
                bound
            );
            let names: BTreeSet<&str> = view.bundles.iter().map(|b| b.name.as_str()).collect();
            prop_assert!(names.iter().all(|n| SERVED.contains(n)), "{:?}", names);
            for b in &view.bundles {
                prop_assert!(b.instances.len() <= view.instances.len());
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // Enough got through for the bound to be tested on real instances.
    let accepted = accepted.into_inner();
    eprintln!("{accepted} of 256 reports accepted");
    assert!(accepted >= 16, "{accepted}");
    assert!(!fleet.view(Utc::now()).instances.is_empty());
}
