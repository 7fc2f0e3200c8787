//! The scale-out path against a real S3-compatible server: moto's S3 server, started by
//! the test on 127.0.0.1 (`pip install 'moto[server]'`). Skipped, with a message, when moto
//! is not installed, unless `LOCKSTEP_REQUIRE_S3=1`.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_server::config::{S3Config, StoreConfig};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto_available() -> bool {
    Command::new("python3")
        .args(["-c", "import moto.server, flask"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn start_moto() -> Option<(Moto, String)> {
    if !moto_available() {
        if std::env::var("LOCKSTEP_REQUIRE_S3").is_ok_and(|v| v == "1") {
            panic!("moto is not installed and LOCKSTEP_REQUIRE_S3=1");
        }
        eprintln!("SKIPPED: python3 -m moto.server not available (pip install 'moto[server]')");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http.get(&endpoint).send().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .put(format!("{endpoint}/lockstep-test"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    Some((moto, endpoint))
}

#[tokio::test]
async fn two_replicas_over_s3() {
    let Some((_moto, endpoint)) = start_moto().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut cfg = config(&dir.path().join("unused"), dir.path(), &k);
    cfg.store = StoreConfig {
        folder: None,
        s3: Some(S3Config {
            bucket: "lockstep-test".into(),
            prefix: Some("fleet-a".into()),
            endpoint: Some(endpoint.clone()),
            region: Some("us-east-1".into()),
            allow_http: true,
            virtual_hosted_style: None,
            access_key_id: Some(write_token(dir.path(), "ak", "testing")),
            secret_access_key: Some(write_token(dir.path(), "sk", "testing")),
        }),
        watch_interval_ms: Some(100),
    };
    let a = lockstep_server::start(&cfg).await.unwrap();
    let b = lockstep_server::start(&cfg).await.unwrap();
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let http = reqwest::Client::new();

    assert_eq!(
        publish_to(&http, &base_a, "main", bundle("r1", 1000, Some(&k)))
            .await
            .status(),
        201
    );
    let r = http
        .get(format!("{base_b}/bundles/main"))
        .bearer_auth(DOWNLOAD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tag = etag(&r);

    // A long poll held by B wakes after a publish through A.
    let poll = {
        let http = http.clone();
        let url = format!("{base_b}/bundles/main");
        let tag = tag.clone();
        tokio::spawn(async move {
            let r = http
                .get(url)
                .bearer_auth(DOWNLOAD)
                .header("if-none-match", tag)
                .header("prefer", "modes=snapshot,delta;wait=20")
                .send()
                .await
                .unwrap();
            (Instant::now(), r.status().as_u16(), etag(&r))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished());
    assert_eq!(
        publish_to(&http, &base_a, "main", bundle("r2", 2000, Some(&k)))
            .await
            .status(),
        201
    );
    let published = Instant::now();
    let (answered, status, new_tag) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_ne!(new_tag, tag);
    let lag = answered.saturating_duration_since(published);
    assert!(lag < Duration::from_secs(2), "{lag:?}");

    // Rollback protection and rollback through B see A's state.
    assert_eq!(
        publish_to(&http, &base_b, "main", bundle("r0", 10, Some(&k)))
            .await
            .status(),
        409
    );
    let r = http
        .post(format!("{base_b}/bundles/main/rollback"))
        .bearer_auth(PUBLISHER)
        .json(&serde_json::json!({"revision": "r1", "reason": "test", "actor": "s3-test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h: serde_json::Value = http
        .get(format!("{base_a}/bundles/main/history"))
        .bearer_auth(PUBLISHER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["events"][0]["action"], "rollback");
    assert_eq!(h["active"]["revision"], "r1");

    // Concurrent publishes through both replicas: both commit, in some order, no state lost.
    let (ra, rb) = tokio::join!(
        publish_to(&http, &base_a, "main", bundle("r3", 3000, Some(&k))),
        publish_to(&http, &base_b, "main", bundle("r4", 3000, Some(&k))),
    );
    assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (201, 201));
    let h: serde_json::Value = http
        .get(format!("{base_a}/bundles/main/history"))
        .bearer_auth(PUBLISHER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seqs: Vec<u64> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 4, 3, 2, 1]);

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
