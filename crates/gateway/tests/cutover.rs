//! Synchronized cut-over across a mixed fleet (issue 14's acceptance): ten agents and
//! three gateways on one lockstep server cut over to a revision with 1 MB of data
//! announced ahead ([`ANNOUNCED_MS`]), then to another with cut-over off. A probe thread reads each
//! instance's active revision in a tight loop (what its next decision reads); the
//! spread is the last minus the first instance seen on the new revision, and no
//! instance may be seen on it before the instant less its clock uncertainty.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use lockstep_sync::clock::now_us;
use lockstep_sync::{StatusTarget, Syncer};
use lockstep_testkit::cutover::{
    Probe, cutover_of, first_on, micros, resolution_ms, revision, spread_ms,
};
use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

const DATA_BYTES: usize = 1 << 20;
/// What the issue asks for. Thirteen instances share this machine's two cores; each
/// prepares the 1 MB-data revision in about 20 ms of CPU because its modules are the
/// active revision's and are not compiled again (`PolicySet::compile_document_after`).
const ANNOUNCED_MS: u64 = 500;

/// The example policies (the gateways' layers) plus `data.mcp.inventory`, 1 MB.
fn revision_bundle(server: &TestServer, rev: &str, iat: i64) -> Vec<u8> {
    example_bundle_with_inventory(rev, iat, Some(&server.keys), DATA_BYTES)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_agents_and_three_gateways_switch_at_the_announced_instant() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", revision_bundle(&server, "r0", 1000))
        .await;
    let mut dirs = Vec::new();
    let mut agents = Vec::new();
    for i in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let base = server.base();
        agents.push(
            start_agent_with(&server, dir.path(), Some(20), |c| {
                c.sync.labels.insert("id".into(), format!("agent-{i}"));
                c.sync.status = Some(StatusTarget {
                    service: service(&base, Some(STATUS)),
                    partition: None,
                });
            })
            .await,
        );
        dirs.push(dir);
    }
    let mut gateways = Vec::new();
    let mut upstreams = Vec::new();
    for i in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let upstream = McpUpstream::default();
        let (url, _task) = upstream.start().await;
        let mut yaml = gateway_yaml(&server, dir.path(), &url, "");
        yaml.push_str(&format!(
            "  status: {{service: bundle-server}}\n  labels: {{id: gateway-{i}}}\n"
        ));
        gateways.push(start_gateway(&yaml).await);
        upstreams.push(upstream);
        dirs.push(dir);
    }
    let instances: Vec<Syncer> = agents
        .iter()
        .map(|a| a.syncer.clone())
        .chain(gateways.iter().map(|g| g.syncer.clone()))
        .collect();
    let all_on = |rev: &'static str| {
        let instances = instances.clone();
        move || {
            instances
                .iter()
                .all(|s| revision(s).as_deref() == Some(rev))
        }
    };
    assert!(eventually(Duration::from_secs(60), all_on("r0")).await);

    // On: announced ANNOUNCED_MS ahead.
    let probe = Probe::start(&instances);
    let published = server
        .publish_cutover("main", revision_bundle(&server, "r1", 2000), ANNOUNCED_MS)
        .await;
    let at_us = micros(&published["activate_at"]);
    assert!(eventually(Duration::from_secs(30), all_on("r1")).await);
    let seen_on = probe.finish_on("r1");
    let on = first_on(&seen_on, "r1");
    let resolution = resolution_ms(&seen_on, "r1");
    let recorded = eventually(Duration::from_secs(10), || {
        instances
            .iter()
            .all(|s| cutover_of(s)["activated_at"].is_string())
    })
    .await;
    assert!(recorded, "not every instance recorded its switch");
    let swaps: Vec<i64> = instances
        .iter()
        .map(|s| micros(&cutover_of(s)["activated_at"]))
        .collect();
    for (i, s) in instances.iter().enumerate() {
        let c = cutover_of(s);
        let unc_us = (c["clock_uncertainty_ms"].as_f64().unwrap() * 1e3) as i64;
        assert!(
            on[i] >= at_us - unc_us,
            "instance {i} was on r1 {} µs before the instant (uncertainty {unc_us} µs)",
            at_us - on[i]
        );
        let ready: Vec<f64> = instances
            .iter()
            .map(|s| {
                (micros(&cutover_of(s)["prepared_at"]) - (at_us - ANNOUNCED_MS as i64 * 1000))
                    as f64
                    / 1e3
            })
            .collect();
        assert_eq!(
            c["late"], false,
            "instance {i}: {c}; ms from the commit to ready, per instance: {ready:?}"
        );
    }

    // Off: each switches when it is ready.
    let probe = Probe::start(&instances);
    let t0 = now_us();
    server
        .publish_cutover("main", revision_bundle(&server, "r2", 3000), 0)
        .await;
    assert!(eventually(Duration::from_secs(30), all_on("r2")).await);
    let off = first_on(&probe.finish_on("r2"), "r2");
    let (spread_on, spread_swaps, spread_off) =
        (spread_ms(&on), spread_ms(&swaps), spread_ms(&off));
    eprintln!(
        "cut-over, 10 agents + 3 gateways, {} KiB of data: ON (announced {ANNOUNCED_MS} ms ahead) spread {spread_on:.3} ms seen by the probe, {spread_swaps:.3} ms between the recorded swaps; OFF spread {spread_off:.3} ms (first switch {:.1} ms after the publish); probe resolution at the switch {resolution:.3} ms",
        DATA_BYTES / 1024,
        (off.iter().min().unwrap() - t0) as f64 / 1e3
    );
    // The probe is the measure: the recorded swaps are each instance's own reading of
    // the server's clock, so they agree with each other even when the estimates are off
    // (CI once saw 11.4 ms by the probe against 1.7 ms between the recorded swaps,
    // before instances refined their estimates in the window).
    assert!(
        spread_on <= 10.0,
        "spread with cut-over: {spread_on} ms seen by a probe of resolution {resolution} ms"
    );
    assert!(spread_swaps <= 10.0, "recorded swaps: {spread_swaps} ms");
    assert!(
        spread_on < spread_off,
        "on {spread_on} ms, off {spread_off} ms"
    );

    // The fleet view names the same cut-over.
    let mut summary = Value::Null;
    for _ in 0..200 {
        let fleet = server.fleet().await;
        if let Some(p) = fleet["bundles"][0]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["revision"] == "r1")
            && p["cutover"]["activated"] == json!(13)
        {
            summary = p["cutover"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(summary["activated"], json!(13), "{summary}");
    assert!(summary["spread_ms"].as_f64().unwrap() <= 10.0, "{summary}");
    assert_eq!(summary["late"], json!([]));
    assert_eq!(summary["never_prepared"], json!([]));

    for a in agents {
        a.shutdown().await.unwrap();
    }
    for g in gateways {
        g.shutdown().await.unwrap();
    }
    server.stop().await;
}
