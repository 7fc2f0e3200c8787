//! Synchronized cut-over (issue 14), at the sync engine: late, superseded and
//! partitioned instances do what was announced. (Ten agents and three gateways switching
//! together: `crates/gateway/tests/cutover.rs`.)
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

use lockstep_testkit::cutover::*;
use lockstep_testkit::prelude::*;
use serde_json::Value;

/// The acceptance's data size (its ten agents and three gateways:
/// `crates/gateway/tests/cutover.rs`).
const DATA_BYTES: usize = 1 << 20;

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
        let revs: BTreeSet<&str> = s.iter().map(|x| x.revision.as_str()).collect();
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
    let seen = probe.finish_on("r3");
    let on = first_on(&seen, "r3");
    for (i, s) in f.instances.iter().enumerate() {
        let unc_us = (cutover_of(s)["clock_uncertainty_ms"].as_f64().unwrap() * 1e3) as i64;
        assert!(
            on[i] >= at_us - unc_us,
            "instance-{i} switched {} µs early (uncertainty {unc_us} µs)",
            at_us - on[i]
        );
    }
    let resolution = resolution_ms(&seen, "r3");
    assert!(
        spread_ms(&on) <= 10.0,
        "{on:?}, probe resolution {resolution} ms"
    );

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

/// An instance whose clock estimate is more uncertain than it accepts says so, and the
/// fleet view lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncertain_clock_is_reported() {
    let mut server = TestServer::start().await;
    server
        .publish_ok("main", bundle("r0", 1000, Some(&server.keys)))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = reporting_sync_config(&server, dir.path(), "strict", Some(20));
    // No round trip is shorter than 0 µs.
    cfg.cutover.max_clock_uncertainty = Duration::ZERO;
    let s = lockstep_sync::Syncer::new(cfg).unwrap();
    s.start().await;
    server
        .publish_cutover("main", bundle("r1", 2000, Some(&server.keys)), 200)
        .await;
    let ok = eventually(Duration::from_secs(10), || {
        revision(&s).as_deref() == Some("r1")
    })
    .await;
    assert!(ok);
    let status = serde_json::to_value(s.status_report()).unwrap();
    assert_eq!(
        status["bundles"]["main"]["lockstep"]["clock_uncertain"],
        true
    );
    let mut listed = Value::Null;
    for _ in 0..100 {
        let fleet = server.fleet().await;
        let c = &fleet["bundles"][0]["publications"][0]["cutover"];
        if c["clock_uncertain"] == serde_json::json!(["strict"]) {
            listed = c.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        listed["clock_uncertain"],
        serde_json::json!(["strict"]),
        "{listed}"
    );
    s.shutdown().await;
    server.stop().await;
}

/// The requests an instance makes in a cut-over's window to refine its clock estimate:
/// the real server answers a `HEAD` at once with its times, the sample lands in the
/// clock, and on one machine (one clock: true offset 0) the offset is within the
/// uncertainty the round trip gives it. Without the download token: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_samples_the_server_clock() {
    use lockstep_sync::clock::ServerClock;
    use lockstep_sync::download::{FetchError, sample_clock};
    let server = TestServer::start().await;
    server
        .publish_ok(
            "main",
            bundle_with_data("r1", 1000, Some(&server.keys), 1 << 20),
        )
        .await;
    let http = reqwest::Client::new();
    let url = server.url("/bundles/main");
    let clock = ServerClock::default();
    assert!(!clock.estimate().known());
    for _ in 0..3 {
        let sampled = sample_clock(&http, &server.service(), &url, None, &clock).await;
        assert!(matches!(sampled, Ok(true)), "{sampled:?}");
    }
    let e = clock.estimate();
    assert!(e.known());
    assert!(
        e.offset_us.abs() <= e.uncertainty_us,
        "offset {} µs outside ± {} µs",
        e.offset_us,
        e.uncertainty_us
    );
    let anonymous = service(&server.base(), None);
    let refused = sample_clock(&http, &anonymous, &url, None, &ServerClock::default()).await;
    assert!(
        matches!(refused, Err(FetchError::Http { code: 401, .. })),
        "{refused:?}"
    );
}
