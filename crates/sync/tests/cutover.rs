//! Synchronized cut-over (issue 14): instances that receive a revision announced for an
//! instant prepare it at once and swap at that instant by the server's clock, so they
//! switch together; late, superseded and partitioned instances behave as announced.
//! Instances run in process against a real lockstep server; a probe thread reads each
//! one's active revision (what a decision reads) in a tight loop, so the measured
//! switch instants are the swaps themselves, not HTTP round trips.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::time::Duration;

use lockstep_sync::clock::now_us;
use lockstep_testkit::cutover::*;
use lockstep_testkit::prelude::*;
use serde_json::Value;

/// The acceptance's data size and announcement.
const DATA_BYTES: usize = 1 << 20;
const ANNOUNCED_MS: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_instances_switch_at_the_announced_instant() {
    let f = Fleet::start(10, DATA_BYTES).await;
    let keys = f.server.keys.clone();

    // Cut-over on: announced 500 ms ahead.
    let probe = Probe::start(&f.instances);
    let published = f
        .server
        .publish_cutover(
            "main",
            bundle_with_data("r1", 2000, Some(&keys), DATA_BYTES),
            ANNOUNCED_MS,
        )
        .await;
    let at_us = micros(&published["activate_at"]);
    f.wait_all_on("r1", Duration::from_secs(30)).await;
    let seen = probe.finish_on("r1");
    let on = first_on(&seen, "r1");
    let spread_on = spread_ms(&on);
    f.wait_all_recorded("r1", Duration::from_secs(10)).await;
    // The swaps themselves, as each instance recorded them (taken just before its swap).
    let swapped: Vec<i64> = f
        .instances
        .iter()
        .map(|s| micros(&cutover_of(s)["activated_at"]))
        .collect();
    let spread_swaps = spread_ms(&swapped);

    // Nobody switched before the instant (less its clock uncertainty), by the probe and
    // by its own account; nobody was late.
    for (i, s) in f.instances.iter().enumerate() {
        let c = cutover_of(s);
        let unc_us = (c["clock_uncertainty_ms"].as_f64().unwrap() * 1e3) as i64;
        assert!(
            on[i] >= at_us - unc_us,
            "instance-{i} served r1 {} µs before the instant (uncertainty {unc_us} µs)",
            at_us - on[i]
        );
        assert!(micros(&c["activated_at"]) >= at_us - unc_us, "{c}");
        assert_eq!(c["late"], false, "instance-{i}: {c}");
        assert_eq!(c["revision"], "r1");
    }

    // Cut-over off, same fleet, same data: each switches when it is ready.
    let probe = Probe::start(&f.instances);
    let t0 = now_us();
    f.server
        .publish_cutover(
            "main",
            bundle_with_data("r2", 3000, Some(&keys), DATA_BYTES),
            0,
        )
        .await;
    f.wait_all_on("r2", Duration::from_secs(30)).await;
    let off = first_on(&probe.finish_on("r2"), "r2");
    let spread_off = spread_ms(&off);
    eprintln!(
        "cut-over spread, 10 instances, {} KiB data: on (announced {ANNOUNCED_MS} ms ahead) {spread_on:.3} ms seen by the probe, {spread_swaps:.3} ms between the recorded swaps; off {spread_off:.3} ms (first switch {:.1} ms after the publish)",
        DATA_BYTES / 1024,
        (off.iter().min().unwrap() - t0) as f64 / 1e3
    );
    assert!(spread_on <= 10.0, "spread with cut-over: {spread_on} ms");
    assert!(
        spread_on < spread_off,
        "on {spread_on} ms vs off {spread_off} ms"
    );

    // The fleet view and /metrics say the same.
    let mut summary = Value::Null;
    for _ in 0..100 {
        let fleet = f.server.fleet().await;
        let pubs = &fleet["bundles"][0]["publications"];
        if let Some(p) = pubs
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["revision"] == "r1")
            && p["cutover"]["activated"] == 10
        {
            summary = p["cutover"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_micros(50)).await;
    }
    assert_eq!(summary["activated"], 10, "{summary}");
    assert!(summary["spread_ms"].as_f64().unwrap() <= 10.0, "{summary}");
    assert_eq!(summary["late"], serde_json::json!([]));
    assert_eq!(summary["never_prepared"], serde_json::json!([]));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_superseded_and_partitioned_instances_do_what_was_announced() {
    let mut f = Fleet::start(3, DATA_BYTES).await;
    let keys = f.server.keys.clone();

    // Superseded: r1 is prepared everywhere, r2 is published before r1's instant; no
    // instance ever serves r1.
    let probe = Probe::start(&f.instances);
    f.server
        .publish_cutover(
            "main",
            bundle_with_data("r1", 2000, Some(&keys), 64 << 10),
            3_000,
        )
        .await;
    f.wait_all_prepared("r1", Duration::from_secs(10)).await;
    f.server
        .publish_cutover(
            "main",
            bundle_with_data("r2", 3000, Some(&keys), 64 << 10),
            300,
        )
        .await;
    f.wait_all_on("r2", Duration::from_secs(10)).await;
    // Past r1's instant too: its timer found itself superseded.
    tokio::time::sleep(Duration::from_micros(3_200)).await;
    let seen = probe.finish_on("r2");
    for (i, s) in seen.iter().enumerate() {
        let revs: BTreeSet<&str> = s.iter().map(|(r, _)| r.as_str()).collect();
        assert!(!revs.contains("r1"), "instance-{i} served r1: {s:?}");
    }
    assert!(
        f.instances
            .iter()
            .all(|s| revision(s).as_deref() == Some("r2"))
    );

    // Partitioned after delivery: r3 is prepared, then the server stops; the switch
    // still happens at the instant.
    let published = f
        .server
        .publish_cutover(
            "main",
            bundle_with_data("r3", 4000, Some(&keys), 64 << 10),
            1_500,
        )
        .await;
    let at_us = micros(&published["activate_at"]);
    f.wait_all_prepared("r3", Duration::from_secs(10)).await;
    let probe = Probe::start(&f.instances);
    f.server.stop().await;
    f.wait_all_on("r3", Duration::from_secs(10)).await;
    let on = first_on(&probe.finish_on("r3"), "r3");
    for (i, s) in f.instances.iter().enumerate() {
        let unc_us = (cutover_of(s)["clock_uncertainty_ms"].as_f64().unwrap() * 1e3) as i64;
        assert!(
            on[i] >= at_us - unc_us,
            "instance-{i} switched {} µs early (uncertainty {unc_us} µs)",
            at_us - on[i]
        );
    }
    assert!(spread_ms(&on) <= 10.0, "{on:?}");

    // Late: an instant 1 ms after the commit, before any instance can have the bundle
    // ready: each switches when ready and says it was late.
    f.server.restart().await;
    let probe = Probe::start(&f.instances);
    let published = f
        .server
        .publish_cutover(
            "main",
            bundle_with_data("r4", 5000, Some(&keys), 256 << 10),
            1,
        )
        .await;
    let at_us = micros(&published["activate_at"]);
    f.wait_all_on("r4", Duration::from_secs(60)).await;
    let on = first_on(&probe.finish_on("r4"), "r4");
    f.wait_all_recorded("r4", Duration::from_secs(10)).await;
    for (i, s) in f.instances.iter().enumerate() {
        let c = cutover_of(s);
        assert_eq!(c["revision"], "r4", "{c}");
        assert_eq!(c["late"], true, "instance-{i}: {c}");
        assert!(micros(&c["prepared_at"]) > at_us, "{c}");
        assert!(on[i] > at_us);
    }
    let mut late = Value::Null;
    let mut fleet = Value::Null;
    for _ in 0..100 {
        fleet = f.server.fleet().await;
        if let Some(p) = fleet["bundles"][0]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["revision"] == "r4")
            && p["cutover"]["late"]
                .as_array()
                .is_some_and(|l| l.len() == 3)
        {
            late = p["cutover"]["late"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_micros(50)).await;
    }
    assert_eq!(
        late,
        serde_json::json!(["instance-0", "instance-1", "instance-2"]),
        "{fleet}"
    );
    let metrics = f.server.metrics(STATUS).await;
    assert!(
        metrics.contains("lockstep_cutover_late_instances{bundle=\"main\"} 3"),
        "{metrics}"
    );
    f.stop().await;
}
