//! The agent end to end: real HTTP on 127.0.0.1 against a real lockstep server.

use lockstep_testkit::prelude::*;
use std::collections::BTreeMap;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lockstep_agent::Overrides;
use lockstep_bundle::KeyConfig;

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opa_rest_api_shapes_and_write_api() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Beside a bundle the write API is off unless turned on.
    let a = start_agent_with(&server, dir.path(), Some(20), |c| {
        c.write_api = lockstep_agent::WriteApi::On;
    })
    .await;
    let http = reqwest::Client::new();

    // Fail closed before any bundle.
    let (s, rev, b) = post(
        &http,
        &a,
        "/v1/data/mcp/allow",
        json!({"input": {"user": "alice"}}),
    )
    .await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(rev, None);
    assert_eq!(b["code"], "internal_error");
    assert!(
        b["message"].as_str().unwrap().contains("not activated yet"),
        "{b}"
    );
    assert!(b["decision_id"].is_string());
    let h = http.get(url(&a, "/health?bundles")).send().await.unwrap();
    assert_eq!(h.status(), 500);
    assert_eq!(
        h.json::<Value>().await.unwrap(),
        json!({"error": "one or more bundles are not activated"})
    );
    let h = http.get(url(&a, "/health?plugins")).send().await.unwrap();
    assert_eq!(h.status(), 500);
    assert_eq!(
        h.json::<Value>().await.unwrap(),
        json!({"error": "one or more plugins are not up"})
    );
    assert_eq!(
        http.get(url(&a, "/health")).send().await.unwrap().status(),
        200
    );

    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while serving(&http, &a).await.as_deref() != Some("r1") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, rev, b) = post(
        &http,
        &a,
        "/v1/data/mcp/allow?provenance&metrics",
        json!({"input": {"user": "alice"}}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(rev.as_deref(), Some("r1"));
    assert_eq!(b["result"], true);
    assert!(uuid_like(&b["decision_id"]), "{b}");
    assert_eq!(b["provenance"]["bundles"]["main"]["revision"], "r1");
    assert!(b["metrics"]["timer_rego_query_eval_ns"].is_u64());
    let (_, _, b) = post(
        &http,
        &a,
        "/v1/data/mcp/allow",
        json!({"input": {"user": "mallory"}}),
    )
    .await;
    assert_eq!(b["result"], false);
    // GET with ?input=, a package document, an undefined document, a missing input.
    let r: Value = http
        .get(url(&a, "/v1/data/mcp?input=%7B%22user%22%3A%22alice%22%7D"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["result"]["allow"], true);
    assert_eq!(r["result"]["revision"], "r1");
    let (s, _, b) = post(&http, &a, "/v1/data/nothing/here", json!({"input": {}})).await;
    assert_eq!(s, 200);
    assert!(
        b.get("result").is_none() && b["decision_id"].is_string(),
        "{b}"
    );
    let (_, _, b) = post(&http, &a, "/v1/data/mcp/revision", json!({})).await;
    assert_eq!(b["warning"]["code"], "api_usage_warning");
    let r = http
        .post(url(&a, "/v1/data/mcp/allow"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "invalid_parameter"
    );

    // Status, health, metrics. The status is recorded just after the swap that
    // decisions see, so it may trail them for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = get_json(&http, &a, "/v1/status").await;
        if st["result"]["bundles"]["main"]["active_revision"] == "r1" || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let m = &st["result"]["bundles"]["main"];
    assert_eq!(m["active_revision"], "r1", "{st}");
    assert_eq!(m["name"], "main");
    assert_ne!(m["last_successful_request"], "0001-01-01T00:00:00Z");
    assert_ne!(m["last_successful_download"], "0001-01-01T00:00:00Z");
    assert_ne!(m["last_successful_activation"], "0001-01-01T00:00:00Z");
    assert_eq!(st["result"]["plugins"]["bundle"]["state"], "OK");
    assert!(st["result"]["labels"]["id"].is_string());
    assert_eq!(
        http.get(url(&a, "/health?bundles"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(url(&a, "/health?plugins"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(url(&a, "/health?fresh"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = scrape(&http, &url(&a, "/metrics")).await;
    assert!(
        metrics.contains("lockstep_bundle_info{name=\"main\",revision=\"r1\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("lockstep_decisions_total{outcome=\"fail_closed\"} 0"),
        "{metrics}"
    );
    // The decision memo: a repeated decision is a hit, counted on /metrics.
    let memo = |m: &str| {
        let hits = sample(m, "lockstep_decision_memo_hits_total").expect("hits");
        let misses = sample(m, "lockstep_decision_memo_misses_total").expect("misses");
        (hits, misses)
    };
    let (hits, misses) = memo(&metrics);
    assert!(misses >= 1.0, "{metrics}");
    for _ in 0..3 {
        let (_, _, b) = post(
            &http,
            &a,
            "/v1/data/mcp/allow",
            json!({"input": {"user": "alice", "trace": "not read by the policy"}}),
        )
        .await;
        assert_eq!(b["result"], true);
    }
    let after = memo(&scrape(&http, &url(&a, "/metrics")).await);
    assert_eq!(after, (hits + 3.0, misses), "alice was decided before");

    // Data write API (OPAL sends JSON as text/plain).
    let put = |path: &str, body: &str| {
        http.put(url(&a, path))
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.to_string())
            .send()
    };
    let r = put("/v1/data/mcp/users", "[\"bob\"]").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"code": "invalid_parameter", "message": "path /mcp/users is owned by bundle \"main\""})
    );
    assert_eq!(put("/v1/data", "{}").await.unwrap().status(), 400);
    assert_eq!(
        put("/v1/data/teams/a", "{\"members\": [\"bob\"]}")
            .await
            .unwrap()
            .status(),
        204
    );
    let r: Value = http
        .get(url(&a, "/v1/data/teams/a/members"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["result"], json!(["bob"]));
    let r = http
        .patch(url(&a, "/v1/data/teams"))
        .header("content-type", "application/json-patch+json")
        .body(r#"[{"op": "add", "path": "/a/members/-", "value": "carol"}, {"op": "add", "path": "/b", "value": {}}]"#)
        .send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r: Value = http
        .get(url(&a, "/v1/data/teams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["result"],
        json!({"a": {"members": ["bob", "carol"]}, "b": {}})
    );
    let r = http
        .put(url(&a, "/v1/data/teams/a"))
        .header("if-none-match", "*")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(
        http.delete(url(&a, "/v1/data/teams/b"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let r = http
        .delete(url(&a, "/v1/data/teams/b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "resource_not_found"
    );
    let r = http
        .patch(url(&a, "/v1/data/teams"))
        .body(r#"[{"op": "move", "path": "/a"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "bad patch operation: move"
    );

    // Policy API: ids with slashes, text/plain Rego, ownership, compile errors.
    let r = http
        .put(url(&a, "/v1/policies/authz/extra.rego"))
        .header("content-type", "text/plain")
        .body("package extra\n\nallow if data.teams.a.members[_] == input.user\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, rev, b) = post(
        &http,
        &a,
        "/v1/data/extra/allow",
        json!({"input": {"user": "carol"}}),
    )
    .await;
    assert_eq!(b["result"], true);
    assert_eq!(rev.as_deref(), Some("r1"));
    let r = http
        .put(url(&a, "/v1/policies/x.rego"))
        .body("package mcp.sneaky\n\nallow := true\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "path /mcp/sneaky is owned by bundle \"main\""
    );
    let r = http
        .put(url(&a, "/v1/policies/bad.rego"))
        .body("package bad\n\nallow if {\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["message"], "error(s) occurred while compiling module(s)");
    assert!(b["errors"].as_array().is_some_and(|e| !e.is_empty()), "{b}");
    let r: Value = http
        .get(url(&a, "/v1/policies"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = r["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["main/mcp/policy.rego", "authz/extra.rego"]);
    let r: Value = http
        .get(url(&a, "/v1/policies/authz/extra.rego"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        r["result"]["raw"]
            .as_str()
            .unwrap()
            .starts_with("package extra")
    );
    assert_eq!(
        http.delete(url(&a, "/v1/policies/authz/extra.rego"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(url(&a, "/v1/policies/authz/extra.rego"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.delete(url(&a, "/v1/policies/authz/extra.rego"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    a.shutdown().await.unwrap();
    // Decision log: OPA's event shape, one JSON line per decision.
    let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = &events[0];
    assert_eq!(first["error"]["code"], "lockstep_fail_closed");
    let ok = events
        .iter()
        .find(|e| e["result"] == true && e["path"] == "mcp/allow")
        .unwrap();
    assert_eq!(ok["bundles"]["main"]["revision"], "r1");
    assert_eq!(ok["input"], json!({"user": "alice"}));
    assert!(
        ok["decision_id"].is_string()
            && ok["timestamp"].is_string()
            && ok["labels"]["id"].is_string()
    );
    server.stop().await;
}

/// No bundle configured (OPA driven by OPAL): like OPA without bundles, the agent serves
/// whatever the write API stored, from the start, and the calls opal-client 0.9.9 makes
/// get the answers it accepts (`crates/agent/tests/real_opal.rs` runs the real client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bundle_configured_serves_what_the_write_api_stored() {
    let dir = tempfile::tempdir().unwrap();
    // An OPA config with no `bundles:` section.
    let mut cfg = lockstep_agent::config::parse(
        "labels: {id: opal-pdp}\n",
        &|_| None,
        &Overrides {
            listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert!(cfg.sync.bundles.is_empty());
    cfg.sync.persistence_dir = dir.path().to_path_buf();
    let a = lockstep_agent::start(cfg).await.unwrap();
    let http = reqwest::Client::new();

    // Serving at once: nothing loaded is "undefined", not a fail-closed 503, and there
    // is no revision to name.
    let (s, rev, b) = post(&http, &a, "/v1/data/app/authz/allow", json!({"input": {}})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(rev, None);
    assert!(
        b.get("result").is_none() && b["decision_id"].is_string(),
        "{b}"
    );
    // Ready as OPA is with no bundles configured (opal-client probes GET /health).
    for q in ["", "?bundles", "?plugins", "?fresh"] {
        let r = http
            .get(url(&a, &format!("/health{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "/health{q}");
    }

    // A full bundle, as opal-client writes it: list modules, root data (JSON sent as
    // text/plain) → 204, modules by repo path → 200, stale module deleted.
    let r: Value = http
        .get(url(&a, "/v1/policies"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"result": []}));
    let text = |m: reqwest::Method, path: &str, body: &str| {
        http.request(m, url(&a, path))
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.to_string())
            .send()
    };
    let r = text(
        reqwest::Method::PUT,
        "/v1/data",
        r#"{"roles": {"alice": ["admin"]}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let r = text(reqwest::Method::PUT, "/v1/data/opal_source", "{}")
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = text(
        reqwest::Method::PUT,
        "/v1/policies/lib/roles.rego",
        "package app.lib\n\nallowed_roles := {\"admin\"}\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = text(
        reqwest::Method::PUT,
        "/v1/policies/policy.rego",
        "package app.authz\n\ndefault allow := false\n\nallow if {\n    some role in data.roles[input.user]\n    role in data.app.lib.allowed_roles\n}\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // OPAL's health module is a `system.` package.
    let r = text(
        reqwest::Method::PUT,
        "/v1/policies/engine/healthcheck/opal.rego",
        "package system.opal\n\ndefault ready = true\n\nlast_policy_transaction := {\"id\": \"abc\", \"success\": true, \"error\": null}\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (s, rev, b) = post(
        &http,
        &a,
        "/v1/data/app/authz/allow",
        json!({"input": {"user": "alice"}}),
    )
    .await;
    assert_eq!((s, rev, &b["result"]), (200, None, &json!(true)), "{b}");
    let (_, _, b) = post(&http, &a, "/v1/data/system/opal", json!({})).await;
    assert_eq!(b["result"]["ready"], true, "{b}");
    assert_eq!(b["result"]["last_policy_transaction"]["id"], "abc", "{b}");
    let r: Value = http
        .get(url(&a, "/v1/policies"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = r["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "engine/healthcheck/opal.rego",
            "lib/roles.rego",
            "policy.rego"
        ]
    );

    // A delta: new root data, a module deleted (404 once gone, which OPAL accepts), a
    // data path deleted (404 when absent, likewise).
    let r = text(
        reqwest::Method::PUT,
        "/v1/data",
        r#"{"roles": {"alice": ["viewer"]}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let (_, _, b) = post(
        &http,
        &a,
        "/v1/data/app/authz/allow",
        json!({"input": {"user": "alice"}}),
    )
    .await;
    assert_eq!(b["result"], false, "{b}");
    for want in [200, 404] {
        let r = http
            .delete(url(&a, "/v1/policies/lib/roles.rego"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    // The root PUT replaced the whole document (OPA's semantics, and why a root
    // data.json in an OPAL repo races OPAL's data sources written elsewhere).
    let (_, _, b) = post(&http, &a, "/v1/data/opal_source", json!({})).await;
    assert!(b.get("result").is_none(), "{b}");
    let r = text(reqwest::Method::PUT, "/v1/data/opal_source", "{\"k\": 1}")
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for want in [204, 404] {
        let r = http
            .delete(url(&a, "/v1/data/opal_source"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    // A module that does not compile: 400 (OPAL retries it once the batch's other
    // operations are done, then gives up), and nothing changed.
    let r = text(
        reqwest::Method::PUT,
        "/v1/policies/broken.rego",
        "package x\n\nallow if {\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        http.get(url(&a, "/v1/policies/broken.rego"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let st: Value = http
        .get(url(&a, "/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["result"]["bundles"], json!({}), "{st}");
    assert_eq!(st["result"]["labels"]["id"], "opal-pdp", "{st}");
    a.shutdown().await.unwrap();
}

/// With a bundle configured, REST writes are stored but do not open the gate: decisions
/// fail closed until the bundle activates, then serve both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_bundle_not_active_stays_fail_closed_despite_rest_writes() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = start_agent_with(&server, dir.path(), Some(20), |c| {
        c.write_api = lockstep_agent::WriteApi::On;
    })
    .await;
    let http = reqwest::Client::new();
    let r = http
        .put(url(&a, "/v1/policies/extra.rego"))
        .header("content-type", "text/plain")
        .body("package extra\n\nallow := true\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        http.put(url(&a, "/v1/data/teams"))
            .body("{\"a\": 1}")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (s, _, b) = post(&http, &a, "/v1/data/extra/allow", json!({"input": {}})).await;
    assert_eq!(s, 503, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("not activated yet"),
        "{b}"
    );
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while serving(&http, &a).await.as_deref() != Some("r1") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, rev, b) = post(&http, &a, "/v1/data/extra/allow", json!({"input": {}})).await;
    assert_eq!(
        (s, rev.as_deref(), &b["result"]),
        (200, Some("r1"), &json!(true))
    );
    let (_, _, b) = post(&http, &a, "/v1/data/teams/a", json!({"input": {}})).await;
    assert_eq!(b["result"], 1);
    a.shutdown().await.unwrap();
    server.stop().await;
}

fn uuid_like(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_while_revisions_swap() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", bundle("r0", 1000, Some(&server.keys)))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let a = start_agent(&server, dir.path(), Some(30)).await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while serving(&http, &a).await.as_deref() != Some("r0") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let g0 = a.syncer.active().unwrap().generation;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let base = url(&a, "/v1/data/mcp");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, done, base, http) = (stop.clone(), done.clone(), base.clone(), http.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&base)
                    .json(&json!({"input": {"user": "alice"}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let rev = r.headers()["x-lockstep-revision"]
                    .to_str()
                    .unwrap()
                    .to_string();
                let b: Value = r.json().await.unwrap();
                assert_eq!(
                    b["result"]["revision"],
                    rev.as_str(),
                    "result and revision disagree"
                );
                assert_eq!(b["result"]["allow"], true);
                seen.insert(rev);
                done.fetch_add(1, Ordering::Relaxed);
            }
            seen.len()
        }));
    }
    // Each publication waits for its activation, so every one is a swap under load
    // (publishing faster would let the agent skip revisions it never saw).
    let n = 520;
    for i in 1..=n {
        let rev = format!("r{i}");
        server
            .publish_ok(
                "main",
                bundle(&rev, 1000 + i64::from(i), Some(&server.keys)),
            )
            .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.syncer.active().unwrap().revision() != rev {
            assert!(Instant::now() < deadline, "{rev} not active after 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut distinct = 0;
    for c in clients {
        distinct = distinct.max(c.await.unwrap());
    }
    let swaps = a.syncer.active().unwrap().generation - g0;
    eprintln!(
        "{} requests, {swaps} swaps, up to {distinct} revisions seen by one client",
        done.load(Ordering::Relaxed)
    );
    assert!(swaps >= 500, "only {swaps} swaps");
    assert!(done.load(Ordering::Relaxed) > 500);
    a.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_agent_answers_503_and_recovers() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut sync = sync_config(server.service(), server.verification(), dir.path(), Some(1));
    sync.max_staleness = Duration::from_secs(1);
    let a = lockstep_agent::start(agent_config(sync, None))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while serving(&http, &a).await.as_deref() != Some("r1") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await;
    let t = Instant::now();
    loop {
        let (s, rev, b) = post(
            &http,
            &a,
            "/v1/data/mcp/allow",
            json!({"input": {"user": "alice"}}),
        )
        .await;
        if s == 503 {
            assert_eq!(rev.as_deref(), Some("r1"));
            assert!(
                b["message"].as_str().unwrap().contains("policy is stale"),
                "{b}"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "still serving after {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        http.get(url(&a, "/health?fresh"))
            .send()
            .await
            .unwrap()
            .status(),
        500
    );
    server.restart().await;
    let t = Instant::now();
    while serving(&http, &a).await.as_deref() != Some("r1") {
        assert!(t.elapsed() < Duration::from_secs(5), "did not recover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_opa_config_starts_the_agent() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", bundle("git-sha-abc1234", 1000, Some(&server.keys)))
        .await;
    let env = |k: &str| (k == "BUNDLE_TOKEN").then(|| DOWNLOAD.to_string());
    let mut keys = BTreeMap::new();
    keys.insert(
        "prod-key-2025".to_string(),
        KeyConfig {
            key: server.keys.public.clone(),
            algorithm: "ES256".into(),
            scope: None,
        },
    );
    let overrides = Overrides {
        keys,
        listen: Some("127.0.0.1:0".into()),
    };

    // Verbatim: parses, nothing ignored, and starts (the example host is unreachable,
    // so it fails closed and says why).
    let mut cfg = lockstep_agent::config::parse(GUIDE_OPA_CONFIG, &env, &overrides).unwrap();
    assert!(cfg.ignored.is_empty(), "{:?}", cfg.ignored);
    assert_eq!(
        cfg.sync.bundles[0].url(),
        "https://bundle.example.com/bundles/main.tar.gz"
    );
    let dir = tempfile::tempdir().unwrap();
    cfg.sync.persistence_dir = dir.path().to_path_buf();
    let a = lockstep_agent::start(cfg).await.unwrap();
    let http = reqwest::Client::new();
    let (s, _, b) = post(&http, &a, "/v1/data/mcp/allow", json!({"input": {}})).await;
    assert_eq!(s, 503, "{b}");
    a.shutdown().await.unwrap();

    // Pointed at the local server (same file, local URL): serves the published revision.
    let text = GUIDE_OPA_CONFIG.replace("https://bundle.example.com", &server.base());
    let mut cfg = lockstep_agent::config::parse(&text, &env, &overrides).unwrap();
    cfg.sync.persistence_dir = dir.path().to_path_buf();
    let a = lockstep_agent::start(cfg).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while serving(&http, &a).await.as_deref() != Some("git-sha-abc1234") {
        assert!(Instant::now() < deadline, "guide config never activated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Status is recorded just after the swap that decisions see: allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let st = get_json(&http, &a, "/v1/status").await;
        if st["result"]["bundles"]["main"]["active_revision"] == "git-sha-abc1234" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the revision: {st}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.shutdown().await.unwrap();

    // Without a key for signing.keyid it refuses to start, and says how to fix it.
    let e = lockstep_agent::config::parse(GUIDE_OPA_CONFIG, &env, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no keys are configured"), "{e}");
    server.stop().await;
}
