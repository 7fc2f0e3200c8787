//! lockstep-sync against a real lockstep server, a controllable static server and
//! Python's `http.server` (a plain file server, as in the guide).
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::io::BufRead;
use std::time::{Duration, Instant};

use lockstep_sync::{Gate, OnStale, StatusTarget, Syncer};

/// The revision served now, or the deny reason.
fn served(s: &Syncer) -> Result<String, String> {
    match s.gate() {
        Gate::Serve { active, .. } => {
            // The policy's own answer must match the revision reported with it.
            let v = active
                .policy()
                .eval_data_path("data.mcp.revision", None)
                .unwrap()
                .unwrap();
            assert_eq!(v.as_str().unwrap(), active.revision());
            Ok(active.revision().to_string())
        }
        Gate::Deny { reason, .. } => Err(reason),
    }
}

fn status_of(s: &Syncer) -> serde_json::Value {
    serde_json::to_value(s.status_report()).unwrap()["bundles"]["main"].clone()
}

async fn wait_served(s: &Syncer, rev: &str, within: Duration) {
    let ok = eventually(within, || served(s).as_deref() == Ok(rev)).await;
    assert!(
        ok,
        "not serving {rev}: {:?} status {}",
        served(s),
        status_of(s)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_activation_status_and_fleet() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = reporting_sync_config(&server, dir.path(), "agent-1", Some(20));
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let s = Syncer::new(cfg).unwrap();
    s.start().await;
    wait_served(&s, "r1", Duration::from_secs(5)).await;
    // Let the agent park its long poll, then publish: one round trip.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    server
        .publish_ok("main", bundle("r2", 2000, Some(&server.keys)))
        .await;
    wait_served(&s, "r2", Duration::from_secs(2)).await;
    let took = t0.elapsed();
    eprintln!("publish -> active: {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    // The status is recorded just after the swap that decisions see.
    let recorded = eventually(Duration::from_secs(5), || {
        status_of(&s)["active_revision"] == "r2"
    })
    .await;
    assert!(recorded, "status never recorded r2");
    let st = status_of(&s);
    assert_eq!(st["active_revision"], "r2");
    assert!(st.get("code").is_none(), "{st}");
    assert_eq!(st["lockstep"]["fresh"], true);
    assert_ne!(st["last_successful_activation"], "0001-01-01T00:00:00Z");
    assert!(s.bundles_ready());
    // The status report reached the server: the agent is in the fleet view at r2.
    let mut found = false;
    for _ in 0..100 {
        let fleet = server.fleet().await;
        if fleet.to_string().contains("agent-1") && fleet.to_string().contains("\"r2\"") {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "agent not in fleet view: {}", server.fleet().await);
    s.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_older_bundles_are_refused() {
    let keys = keys();
    let st = StaticServer::default();
    let (addr, stop, h) = st.start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = sync_config(
        service(&format!("http://{addr}"), None),
        verification(&keys),
        dir.path(),
        None,
    );
    st.set(bundle("r1", 2000, Some(&keys)));
    let s = Syncer::new(cfg).unwrap();
    s.start().await;
    wait_served(&s, "r1", Duration::from_secs(5)).await;

    st.set(tampered("r2", 3000, &keys));
    let refused = eventually(Duration::from_secs(5), || {
        status_of(&s)["message"]
            .as_str()
            .is_some_and(|m| m.contains("digest") || m.contains("hash"))
    })
    .await;
    assert!(refused, "{}", status_of(&s));
    assert_eq!(served(&s).unwrap(), "r1");
    assert_eq!(status_of(&s)["active_revision"], "r1");

    st.set(bundle("r0", 1000, Some(&keys)));
    let refused = eventually(Duration::from_secs(5), || {
        status_of(&s)["message"]
            .as_str()
            .is_some_and(|m| m.contains("refusing rollback"))
    })
    .await;
    assert!(refused, "{}", status_of(&s));
    assert_eq!(served(&s).unwrap(), "r1");

    // Unsigned is refused too (verification is required by default).
    st.set(bundle("u1", 5000, None));
    let refused = eventually(Duration::from_secs(5), || {
        status_of(&s)["message"]
            .as_str()
            .is_some_and(|m| m.contains("not signed") || m.contains("missing .signatures.json"))
    })
    .await;
    assert!(refused, "{}", status_of(&s));
    assert_eq!(served(&s).unwrap(), "r1");

    st.set(bundle("r3", 4000, Some(&keys)));
    wait_served(&s, "r3", Duration::from_secs(5)).await;
    // The status is recorded just after the swap that decisions see.
    let cleared = eventually(Duration::from_secs(2), || {
        let st = status_of(&s);
        st.get("code").is_none() && st["active_revision"] == "r3"
    })
    .await;
    assert!(cleared, "{}", status_of(&s));
    s.shutdown().await;
    let _ = stop.send(());
    h.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_server_down_serves_persisted_revision() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let cfg = sync_config(
        server.service(),
        server.verification(),
        dir.path(),
        Some(20),
    );
    let a = Syncer::new(cfg.clone()).unwrap();
    a.start().await;
    wait_served(&a, "r1", Duration::from_secs(5)).await;
    // Persistence happens right after activation.
    let persisted = dir.path().join("bundles/main/bundle.tar.gz");
    assert!(eventually(Duration::from_secs(2), || persisted.exists()).await);
    a.shutdown().await;
    server.stop().await;

    let b = Syncer::new(cfg.clone()).unwrap();
    b.start().await;
    assert_eq!(served(&b).unwrap(), "r1");
    assert!(b.active().unwrap().bundles["main"].from_disk);
    assert!(b.bundles_ready());
    b.shutdown().await;

    // A persisted file that no longer verifies is refused at start: fail closed.
    std::fs::write(&persisted, tampered("r1", 1000, &server.keys)).unwrap();
    let c = Syncer::new(cfg).unwrap();
    c.start().await;
    let reason = served(&c).unwrap_err();
    assert!(reason.contains("not activated yet"), "{reason}");
    // (The refusal is logged and reported; the next download error replaces it.)
    assert!(c.active().is_none());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_any_bundle_every_decision_denies() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = sync_config(
        server.service(),
        server.verification(),
        dir.path(),
        Some(20),
    );
    let s = Syncer::new(cfg).unwrap();
    let reason = served(&s).unwrap_err();
    assert!(reason.contains("not activated yet"), "{reason}");
    s.start().await;
    let ok = eventually(Duration::from_secs(5), || {
        served(&s).is_err_and(|r| r.contains("server replied with Not Found"))
    })
    .await;
    assert!(ok, "{:?}", served(&s));
    assert!(!s.bundles_ready());
    s.shutdown().await;
    server.stop().await;
}

async fn stale_case(on_stale: OnStale) {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let mut cfg = sync_config(server.service(), server.verification(), dir.path(), Some(1));
    let max = Duration::from_secs(2);
    cfg.max_staleness = max;
    cfg.on_stale = on_stale;
    let s = Syncer::new(cfg).unwrap();
    s.start().await;
    wait_served(&s, "r1", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(served(&s).unwrap(), "r1", "long-poll 304s keep the lease");

    server.stop().await;
    let stopped = Instant::now();
    let flipped = eventually(max + Duration::from_secs(2), || match on_stale {
        OnStale::Deny => served(&s).is_err(),
        OnStale::Serve => matches!(
            s.gate(),
            Gate::Serve {
                warning: Some(_),
                ..
            }
        ),
    })
    .await;
    let took = stopped.elapsed();
    assert!(flipped, "never went stale");
    assert!(
        took <= max + Duration::from_secs(1),
        "went stale after {took:?}"
    );
    match s.gate() {
        Gate::Deny { reason, .. } => {
            assert!(reason.contains("policy is stale"), "{reason}");
            assert!(reason.contains("on_stale: deny"), "{reason}");
        }
        Gate::Serve { warning, active } => {
            assert_eq!(active.revision(), "r1");
            assert!(warning.unwrap().contains("on_stale: serve"));
        }
    }
    assert_eq!(status_of(&s)["lockstep"]["fresh"], false);

    server.restart().await;
    let back = Instant::now();
    let ok = eventually(Duration::from_secs(5), || {
        matches!(s.gate(), Gate::Serve { warning: None, .. })
    })
    .await;
    assert!(ok, "did not recover: {:?}", served(&s));
    eprintln!(
        "stale after {took:?}, fresh again {:?} after the server returned",
        back.elapsed()
    );
    assert_eq!(served(&s).unwrap(), "r1");
    s.shutdown().await;
    server.stop().await;
}

/// A long poll configured longer than the lease must not make a healthy agent go stale
/// at the end of every long poll: the wait is shortened to half the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_longer_than_the_lease_stays_fresh() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let mut cfg = sync_config(
        server.service(),
        server.verification(),
        dir.path(),
        Some(30),
    );
    cfg.max_staleness = Duration::from_secs(2);
    let s = Syncer::new(cfg).unwrap();
    s.start().await;
    wait_served(&s, "r1", Duration::from_secs(5)).await;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(
            served(&s).unwrap(),
            "r1",
            "went stale with a healthy server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_denies_within_max_staleness_and_recovers() {
    stale_case(OnStale::Deny).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_with_on_stale_serve_keeps_serving_flagged() {
    stale_case(OnStale::Serve).await;
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` (no ETag, no long polling), as the guide suggests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_file_server_without_long_polling() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 not available; skipping");
        return;
    }
    let keys = keys();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bundles")).unwrap();
    let file = root.path().join("bundles/main.tar.gz");
    std::fs::write(&file, bundle("r1", 1000, Some(&keys))).unwrap();
    let mut child = std::process::Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(root.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Child(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sync_config(
        service(&format!("http://127.0.0.1:{port}"), None),
        verification(&keys),
        dir.path(),
        // Asked for, but a plain file server never sends the bundle content type:
        // the agent falls back to periodic polling as OPA does.
        Some(10),
    );
    cfg.bundles[0].resource = "/bundles/main.tar.gz".into();
    let s = Syncer::new(cfg).unwrap();
    s.start().await;
    wait_served(&s, "r1", Duration::from_secs(5)).await;
    let first = s.active().unwrap().bundles["main"].activated_at;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Identical 200s renew the lease without re-activating.
    assert_eq!(s.active().unwrap().bundles["main"].activated_at, first);
    assert_eq!(status_of(&s)["lockstep"]["fresh"], true);
    std::fs::write(&file, bundle("r2", 2000, Some(&keys))).unwrap();
    wait_served(&s, "r2", Duration::from_secs(3)).await;
    s.shutdown().await;
    drop(child);
}

/// Security review finding 6: a server-side rollback (without re-signing) serves a
/// bundle signed before the one agents hold. They refuse it (rollback protection), and
/// before the fix never got a freshness confirmation again, so they denied everything
/// after `max_staleness`. Now the refusal is reported and freshness keeps being
/// confirmed for the revision held; the fleet view says they refuse a rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding6_server_side_rollback_keeps_agents_fresh_and_reports_the_refusal() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sync_config(
        server.service(),
        server.verification(),
        dir.path(),
        Some(20),
    );
    cfg.max_staleness = Duration::from_secs(2);
    cfg.labels.insert("id".into(), "agent-rb".into());
    cfg.status = Some(StatusTarget {
        service: service(&server.base(), Some(STATUS)),
        partition: None,
    });
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    server
        .publish_ok("main", bundle("r2", 2000, Some(&server.keys)))
        .await;
    let s = Syncer::new(cfg).unwrap();
    s.start().await;
    wait_served(&s, "r2", Duration::from_secs(5)).await;
    // The operator rolls back on the server without re-signing.
    let r = server
        .http
        .post(server.url("/bundles/main/rollback"))
        .bearer_auth(PUBLISHER)
        .json(&serde_json::json!({"revision": "r1", "reason": "r2 breaks login"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["warning"]
            .as_str()
            .is_some_and(|w| w.contains("re-sign")),
        "{body}"
    );
    let refused = eventually(Duration::from_secs(5), || {
        status_of(&s)["code"] == lockstep_sync::ROLLBACK_REFUSED
    })
    .await;
    assert!(refused, "{}", status_of(&s));
    let st = status_of(&s);
    assert!(
        st["message"]
            .as_str()
            .is_some_and(|m| m.contains("refusing rollback") && m.contains("\"r1\"")),
        "{st}"
    );
    assert_eq!(st["lockstep"]["refused_rollback"]["revision"], "r1");
    assert_eq!(st["active_revision"], "r2");
    // Well past max_staleness, the revision held is still served and fresh.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(served(&s).unwrap(), "r2");
    assert_eq!(status_of(&s)["lockstep"]["fresh"], true);
    // The fleet view shows the instance as refusing the rollback, not as current.
    let mut seen = serde_json::Value::Null;
    let mut shown = false;
    for _ in 0..100 {
        seen = server.fleet().await;
        shown = seen["bundles"][0]["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["id"] == "agent-rb"))
            .is_some_and(|i| i["refusing_rollback"] == true && i["current"] == false);
        if shown {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(shown, "{seen}");
    assert_eq!(seen["bundles"][0]["instances_refusing_rollback"], 1);
    // A newer signed publication is taken, and the refusal clears.
    server
        .publish_ok("main", bundle("r3", 3000, Some(&server.keys)))
        .await;
    wait_served(&s, "r3", Duration::from_secs(5)).await;
    let cleared = eventually(Duration::from_secs(2), || {
        let st = status_of(&s);
        st.get("code").is_none() && st["lockstep"].get("refused_rollback").is_none()
    })
    .await;
    assert!(cleared, "{}", status_of(&s));
    s.shutdown().await;
    server.shutdown().await;
}

/// Security review finding 7: with persistence off (the default) a restarted agent
/// accepted an older signed bundle its previous process had refused. The newest signed
/// `iat` is now remembered in the persistence directory whatever `persist` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding7_rollback_protection_survives_a_restart_without_persistence() {
    let keys = keys();
    let st = StaticServer::default();
    let (addr, stop, h) = st.start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = sync_config(
            service(&format!("http://{addr}"), None),
            verification(&keys),
            dir.path(),
            None,
        );
        c.bundles[0].persist = false;
        c
    };
    st.set(bundle("r2", 2000, Some(&keys)));
    let s = Syncer::new(cfg()).unwrap();
    s.start().await;
    wait_served(&s, "r2", Duration::from_secs(5)).await;
    s.shutdown().await;
    assert!(!dir.path().join("bundles/main/bundle.tar.gz").exists());
    assert!(dir.path().join("bundles/main/newest_iat.json").exists());

    // The server now serves an older signed bundle; a new process refuses it.
    st.set(bundle("r1", 1000, Some(&keys)));
    let s = Syncer::new(cfg()).unwrap();
    s.start().await;
    let refused = eventually(Duration::from_secs(5), || {
        status_of(&s)["code"] == lockstep_sync::ROLLBACK_REFUSED
    })
    .await;
    assert!(refused, "{}", status_of(&s));
    assert!(
        status_of(&s)["message"]
            .as_str()
            .is_some_and(|m| m.contains("accepted before")),
        "{}",
        status_of(&s)
    );
    // Nothing older is active: decisions fail closed.
    assert!(served(&s).is_err());
    // A bundle as new as the remembered one or newer is taken.
    st.set(bundle("r3", 3000, Some(&keys)));
    wait_served(&s, "r3", Duration::from_secs(5)).await;
    s.shutdown().await;
    let _ = stop.send(());
    h.await.unwrap();
}

/// `lockstep.min_issued_at`: bundles signed before it are refused from the first start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding7_min_issued_at_refuses_older_bundles() {
    let keys = keys();
    let st = StaticServer::default();
    let (addr, stop, h) = st.start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sync_config(
        service(&format!("http://{addr}"), None),
        verification(&keys),
        dir.path(),
        None,
    );
    cfg.min_issued_at.insert("main".into(), 1500);
    st.set(bundle("r1", 1000, Some(&keys)));
    let s = Syncer::new(cfg).unwrap();
    s.start().await;
    let refused = eventually(Duration::from_secs(5), || {
        status_of(&s)["message"]
            .as_str()
            .is_some_and(|m| m.contains("lockstep.min_issued_at"))
    })
    .await;
    assert!(refused, "{}", status_of(&s));
    assert!(served(&s).is_err());
    st.set(bundle("r2", 2000, Some(&keys)));
    wait_served(&s, "r2", Duration::from_secs(5)).await;
    s.shutdown().await;
    let _ = stop.send(());
    h.await.unwrap();
}
