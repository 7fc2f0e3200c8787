//! `lockstep server`, `publish` and `rollback` as separate processes over loopback HTTP.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use assert_cmd::cargo::CommandCargoExt;

/// Kills the server when the test ends, whatever happens.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lockstep(d: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::cargo_bin("lockstep").unwrap();
    c.current_dir(d).args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The active bundle's signed `iat` and manifest revision, as a downloader sees them.
fn active(d: &Path, url: &str) -> (i64, String) {
    let bytes = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth("fleet-secret")
                .send()
                .await
                .unwrap();
            r.error_for_status().unwrap().bytes().await.unwrap()
        });
    std::fs::write(d.join("active.tar.gz"), &bytes).unwrap();
    let out = ok(&lockstep(
        d,
        &[],
        &["inspect", "active.tar.gz", "--format", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v["signature"]["issued_at"].as_i64().unwrap(),
        v["revision"].as_str().unwrap().to_string(),
    )
}

#[test]
fn rollback_with_signing_key_republishes_an_old_revision_with_a_fresh_issue_time() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    ok(&lockstep(
        d,
        &[],
        &["keygen", "--alg", "ES256", "-o", "ci.pem"],
    ));
    std::fs::write(d.join("publisher.tok"), "publisher-secret").unwrap();
    std::fs::write(d.join("fleet.tok"), "fleet-secret").unwrap();
    for (rev, iat) in [("r1", "1700000000"), ("r2", "1700000100")] {
        ok(&lockstep(
            d,
            &[("SOURCE_DATE_EPOCH", iat)],
            &[
                "build",
                ex.to_str().unwrap(),
                "--revision",
                rev,
                "--signing-key",
                "ci.pem",
                "--signing-alg",
                "ES256",
                "--signing-key-id",
                "ci",
                "-o",
                &format!("{rev}.tar.gz"),
            ],
        ));
    }

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server(
        std::process::Command::cargo_bin("lockstep")
            .unwrap()
            .current_dir(d)
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--store",
                "store",
                "--verification-key",
                "ci-pub.pem",
                "--verification-key-id",
                "ci",
                "--publisher-token-file",
                "publisher.tok",
                "--download-token-file",
                "fleet.tok",
            ])
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let remote = ["--server", &base, "--token-file", "publisher.tok"];
    for rev in ["r1", "r2"] {
        let file = format!("{rev}.tar.gz");
        let mut args = vec!["publish", file.as_str(), "--name", "main"];
        args.extend(remote);
        ok(&lockstep(d, &[], &args));
    }
    let url = format!("{base}/bundles/main");
    assert_eq!(active(d, &url), (1700000100, "r2".to_string()));

    // Re-publishing r1 as it is: refused, it was signed before the active bundle.
    let mut args = vec!["publish", "r1.tar.gz", "--name", "main"];
    args.extend(remote);
    let o = lockstep(d, &[], &args);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The re-signing rollback: r1's content, a fresh iat, accepted everywhere.
    let mut args = vec![
        "rollback",
        "main",
        "--to",
        "r1",
        "--reason",
        "r2 broke billing",
        "--signing-key",
        "ci.pem",
        "--signing-alg",
        "ES256",
        "--signing-key-id",
        "ci",
    ];
    args.extend(remote);
    let out = ok(&lockstep(d, &[("SOURCE_DATE_EPOCH", "1700000200")], &args));
    assert!(out.contains("rolled back to revision r1"), "{out}");
    assert_eq!(active(d, &url), (1700000200, "r1".to_string()));

    // Two instances report in OPA's status-plugin format: one on the new r1, one behind.
    let report = |id: &str, rev: &str| {
        let body = serde_json::json!({
            "labels": {"id": id, "version": "1.0.0"},
            "bundles": {"main": {
                "name": "main",
                "active_revision": rev,
                "last_request": "2026-11-25T10:00:00Z",
                "last_successful_request": "2026-11-25T10:00:00Z",
                "last_successful_download": "2026-11-25T10:00:00Z",
                "last_successful_activation": "2026-11-25T10:00:00Z",
                "metrics": {"timer_rego_load_bundles_ns": 1}
            }},
            "plugins": {"bundle": {"state": "OK"}, "status": {"state": "OK"}}
        });
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let r = reqwest::Client::new()
                    .post(format!("{base}/status"))
                    .bearer_auth("fleet-secret")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    r.status().is_success(),
                    "status report refused: {}",
                    r.status()
                );
            });
    };
    report("opa-a", "r1");
    report("opa-b", "r2");
    let drift = |d: &Path| {
        lockstep(
            d,
            &[],
            &["drift", "--server", &base, "--token-file", "fleet.tok"],
        )
    };
    let o = drift(d);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("opa-b"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    report("opa-b", "r1");
    let o = drift(d);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // A key that did not sign r1 may not launder it.
    ok(&lockstep(
        d,
        &[],
        &["keygen", "--alg", "ES256", "-o", "other.pem"],
    ));
    let mut args = vec![
        "rollback",
        "main",
        "--to",
        "r2",
        "--reason",
        "x",
        "--signing-key",
        "other.pem",
        "--signing-alg",
        "ES256",
    ];
    args.extend(remote);
    let o = lockstep(d, &[], &args);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not verify with this signing key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
