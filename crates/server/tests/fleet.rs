//! Status ingest in OPA's format, the fleet view, drift, unreachable instances,
//! convergence time, metrics.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::time::Duration;

use serde_json::{Value, json};

fn instance<'a>(fleet: &'a Value, bundle: &str, id: &str) -> &'a Value {
    let b = fleet["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == bundle)
        .unwrap_or_else(|| panic!("no bundle {bundle} in {fleet}"));
    b["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no instance {id} in {b}"))
}

/// An instance's own part of the view (labels, plugins, partition: once per instance).
fn instance_info<'a>(fleet: &'a Value, id: &str) -> &'a Value {
    fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no instance {id} in {fleet}"))
}

fn bundle_view<'a>(fleet: &'a Value, bundle: &str) -> &'a Value {
    fleet["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == bundle)
        .unwrap()
}

#[tokio::test]
async fn opa_status_reports_appear_in_the_fleet_view() {
    let h = TestServer::start().await;
    h.publish("authz", bundle("r1", 1000, Some(&h.keys))).await;
    // Credentials: status token or download token; nothing else.
    let body = opa_status("opa-1", "authz", "r1");
    let r = h
        .http
        .post(h.url("/status"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = h
        .http
        .post(h.url("/status"))
        .bearer_auth(PUBLISHER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(h.report(&body).await.status(), 200);
    let r = h
        .http
        .post(h.url("/status/edge-eu"))
        .bearer_auth(DOWNLOAD)
        .json(&opa_status("opa-2", "authz", "r0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No labels.id: refused.
    let r = h
        .report(&json!({"labels": {"version": "1.4.0"}, "bundles": {}}))
        .await;
    assert_eq!(r.status(), 400);

    // Fleet view needs a token.
    assert_eq!(
        h.http
            .get(h.url("/v1/fleet"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let f = h.fleet().await;
    let b = bundle_view(&f, "authz");
    assert_eq!(b["desired_revision"], "r1");
    assert_eq!(b["instances_total"], 2);
    assert_eq!(b["instances_current"], 1);
    assert_eq!(b["instances_drifting"], 1);
    assert_eq!(f["drift"], true);
    let i1 = instance(&f, "authz", "opa-1");
    assert_eq!(i1["active_revision"], "r1");
    assert_eq!(i1["current"], true);
    assert_eq!(i1["drift"], false);
    assert_eq!(i1["lag_seconds"], 0.0);
    assert_eq!(i1["last_successful_activation"], "2018-01-01T00:00:00.000Z");
    // Labels and plugins are the instance's, shown once and not under each bundle.
    assert!(
        i1.get("labels").is_none() && i1.get("plugins").is_none(),
        "{i1}"
    );
    let info1 = instance_info(&f, "opa-1");
    assert_eq!(info1["labels"]["app"], "my-example-app");
    assert_eq!(info1["plugins"]["bundle"]["state"], "OK");
    assert_eq!(info1["unreachable"], false);
    assert!(info1.get("partition").is_none(), "{info1}");
    assert_eq!(f["instances"].as_array().unwrap().len(), 2);
    assert_eq!(instance_info(&f, "opa-2")["partition"], "edge-eu");
    let i2 = instance(&f, "authz", "opa-2");
    assert_eq!(i2["drift"], true);
    assert!(i2["lag_seconds"].as_f64().unwrap() >= 0.0);

    // An instance in error shows the error.
    let mut err = opa_status("opa-2", "authz", "r0");
    err["bundles"]["authz"]["code"] = json!("bundle_error");
    err["bundles"]["authz"]["message"] = json!("server replied with Unauthorized");
    err["bundles"]["authz"]["http_code"] = json!(401);
    err["bundles"]["authz"]["errors"] = json!([{"code": "rego_parse_error", "message": "x", "location": {"file": "a.rego", "row": 1, "col": 1}}]);
    // (opa-2 is bound to the download token that first reported it: finding 5.)
    assert_eq!(h.report_with(DOWNLOAD, &err).await.status(), 200);
    let f = h.fleet().await;
    let i2 = instance(&f, "authz", "opa-2");
    assert_eq!(i2["code"], "bundle_error");
    assert_eq!(i2["message"], "server replied with Unauthorized");
    assert_eq!(i2["errors"][0]["code"], "rego_parse_error");

    // It catches up: converged, with a measured convergence time.
    assert_eq!(
        h.report_with(DOWNLOAD, &opa_status("opa-2", "authz", "r1"))
            .await
            .status(),
        200
    );
    let f = h.fleet().await;
    let b = bundle_view(&f, "authz");
    assert_eq!(b["converged"], true);
    assert_eq!(f["drift"], false);
    let p = &b["publications"][0];
    assert_eq!(p["revision"], "r1");
    assert_eq!(p["action"], "publish");
    assert_eq!(p["actor"], "ci-bot");
    assert!(p["convergence_seconds"].as_f64().unwrap() >= 0.0, "{p}");
    h.shutdown().await;
}

#[tokio::test]
async fn convergence_time_is_measured_per_publication() {
    let h = TestServer::start().await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    for id in ["a", "b"] {
        h.report(&opa_status(id, "main", "r1")).await;
    }
    assert_eq!(bundle_view(&h.fleet().await, "main")["converged"], true);
    h.publish("main", bundle("r2", 2000, Some(&h.keys))).await;
    let f = h.fleet().await;
    let b = bundle_view(&f, "main");
    assert_eq!(b["instances_drifting"], 2);
    assert!(b["publications"][0]["convergence_seconds"].is_null());
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.report(&opa_status("a", "main", "r2")).await;
    assert_eq!(bundle_view(&h.fleet().await, "main")["converged"], false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.report(&opa_status("b", "main", "r2")).await;
    let f = h.fleet().await;
    let b = bundle_view(&f, "main");
    assert_eq!(b["converged"], true);
    let secs = b["publications"][0]["convergence_seconds"]
        .as_f64()
        .unwrap();
    assert!((0.35..3.0).contains(&secs), "{secs}");
    // Repeated reports do not move the measurement.
    h.report(&opa_status("b", "main", "r2")).await;
    let f = h.fleet().await;
    assert_eq!(
        bundle_view(&f, "main")["publications"][0]["convergence_seconds"].as_f64(),
        Some(secs)
    );
    // The histogram saw both publications.
    let m = h.metrics(STATUS).await;
    assert!(
        m.contains(r#"lockstep_convergence_seconds_count{bundle="main"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"lockstep_fleet_instances{bundle="main",revision="r2"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"lockstep_fleet_drifting_instances{bundle="main"} 0"#),
        "{m}"
    );
    assert!(
        m.contains(r#"lockstep_publications_total{bundle="main",action="publish"} 2"#),
        "{m}"
    );
    assert!(m.contains("lockstep_long_polls_waiting 0"), "{m}");
    h.shutdown().await;
}

#[tokio::test]
async fn silent_instances_become_unreachable() {
    let h = TestServer::with(|c| c.fleet.unreachable_after_seconds = Some(1)).await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    h.report(&opa_status("quiet", "main", "r1")).await;
    h.report(&opa_status("chatty", "main", "r1")).await;
    let f = h.fleet().await;
    assert_eq!(f["drift"], false);
    assert_eq!(instance(&f, "main", "quiet")["unreachable"], false);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    h.report(&opa_status("chatty", "main", "r1")).await;
    let f = h.fleet().await;
    let q = instance(&f, "main", "quiet");
    assert_eq!(q["unreachable"], true);
    assert_eq!(q["drift"], true);
    assert!(q["seconds_since_report"].as_f64().unwrap() > 1.0);
    assert_eq!(instance(&f, "main", "chatty")["unreachable"], false);
    assert_eq!(bundle_view(&f, "main")["instances_unreachable"], 1);
    assert_eq!(f["drift"], true);
    let rec_dir = h.store().join("fleet/instances");
    assert_eq!(std::fs::read_dir(&rec_dir).unwrap().count(), 2);
    // A new publication converges without waiting for the unreachable instance.
    h.publish("main", bundle("r2", 2000, Some(&h.keys))).await;
    h.report(&opa_status("chatty", "main", "r2")).await;
    let f = h.fleet().await;
    assert!(bundle_view(&f, "main")["publications"][0]["convergence_seconds"].is_number());
    h.shutdown().await;
}

#[tokio::test]
async fn long_silent_instances_are_forgotten() {
    let h = TestServer::with(|c| {
        c.fleet.unreachable_after_seconds = Some(1);
        c.fleet.forget_after_seconds = Some(2);
    })
    .await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    h.report(&opa_status("gone", "main", "r1")).await;
    h.report(&opa_status("here", "main", "r1")).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    h.report(&opa_status("here", "main", "r1")).await;
    let f = h.fleet().await;
    let b = bundle_view(&f, "main");
    assert_eq!(b["instances_total"], 1, "{b}");
    assert_eq!(f["drift"], false);
    // Its shared record is removed too.
    let rec_dir = h.store().join("fleet/instances");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::fs::read_dir(&rec_dir).unwrap().count() != 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn dashboard_and_health() {
    let h = TestServer::start().await;
    let r = h.http.get(h.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("v1/fleet"));
    let r = h.http.get(h.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.http.get(h.url("/metrics")).send().await.unwrap().status(),
        401
    );
    h.shutdown().await;
}

#[tokio::test]
async fn every_replica_sees_reports_received_by_another() {
    let a = TestServer::start().await;
    let cfg_b = config(&a.store(), a.dir.path(), &a.keys);
    let b = lockstep_server::start(&cfg_b).await.unwrap();
    let base_b = format!("http://{}", b.addr);
    a.publish("main", bundle("r1", 1000, Some(&a.keys))).await;
    // Instance x reports to A, instance y to B.
    assert_eq!(a.report(&opa_status("x", "main", "r1")).await.status(), 200);
    let r = a
        .http
        .post(format!("{base_b}/status"))
        .bearer_auth(STATUS)
        .json(&opa_status("y", "main", "r0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fleet_b = || async {
        a.http
            .get(format!("{base_b}/v1/fleet"))
            .bearer_auth(STATUS)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let fa = a.fleet().await;
        let fb = fleet_b().await;
        let seen = |f: &Value| bundle_view(f, "main")["instances_total"] == 2;
        if seen(&fa) && seen(&fb) {
            assert_eq!(instance(&fb, "main", "x")["active_revision"], "r1");
            assert_eq!(instance(&fa, "main", "y")["active_revision"], "r0");
            assert_eq!(bundle_view(&fb, "main")["instances_drifting"], 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas did not share: {fa} {fb}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // y catches up through B; A sees the fleet converge.
    a.http
        .post(format!("{base_b}/status"))
        .bearer_auth(STATUS)
        .json(&opa_status("y", "main", "r1"))
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let fa = a.fleet().await;
        if bundle_view(&fa, "main")["converged"] == true {
            assert!(bundle_view(&fa, "main")["publications"][0]["convergence_seconds"].is_number());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A never converged: {fa}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.shutdown().await.unwrap();
    a.shutdown().await;
}

/// Security review finding 5: any token that may report status could overwrite any
/// instance's record. The first credential that reports an id now owns it while the
/// record lives; the fleet view says whether an id is bound.
#[tokio::test]
async fn finding5_instance_ids_are_bound_to_the_first_credential() {
    let h = TestServer::with(|c| c.auth.allow_anonymous_status = true).await;
    h.publish_ok("main", bundle("r1", 1000, Some(&h.keys)))
        .await;
    let post = |token: Option<&'static str>, body: Value| {
        let mut r = h.http.post(h.url("/status")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap() }
    };
    assert_eq!(
        post(Some(STATUS), opa_status("i1", "main", "r1"))
            .await
            .status(),
        200
    );
    // The same id from another valid token: refused, the record unchanged.
    let r = post(Some(DOWNLOAD), opa_status("i1", "main", "evil")).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("bound"), "{v}");
    // And without a token (anonymous status allowed): refused too.
    assert_eq!(
        post(None, opa_status("i1", "main", "evil")).await.status(),
        403
    );
    // The owner keeps reporting.
    assert_eq!(
        post(Some(STATUS), opa_status("i1", "main", "r1"))
            .await
            .status(),
        200
    );
    // An id first reported anonymously is unbound, and shown so.
    assert_eq!(
        post(None, opa_status("anon", "main", "r1")).await.status(),
        200
    );
    assert_eq!(
        post(Some(DOWNLOAD), opa_status("anon", "main", "r1"))
            .await
            .status(),
        200
    );
    let fleet = h.fleet().await;
    assert_eq!(instance(&fleet, "main", "i1")["active_revision"], "r1");
    assert_eq!(instance_info(&fleet, "i1")["identity_bound"], true);
    assert_eq!(instance_info(&fleet, "anon")["identity_bound"], false);
    // The binding is shared through the store: a restarted server still refuses.
    let mut h = h;
    h.stop().await;
    h.restart().await;
    let r = h
        .http
        .post(h.url("/status"))
        .bearer_auth(DOWNLOAD)
        .json(&opa_status("i1", "main", "evil"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    h.shutdown().await;
}
