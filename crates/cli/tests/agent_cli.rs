//! `lockstep agent --config opa-config.yaml` with the guide's file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use lockstep_bundle::keys::{Algorithm, generate_keypair};
use lockstep_testkit::fixtures::GUIDE_OPA_CONFIG;

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn guide_config_starts_the_agent_and_it_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = generate_keypair(Algorithm::ES256).unwrap();
    let key = dir.path().join("signing-key-pub.pem");
    std::fs::write(&key, public).unwrap();
    let cfg = dir.path().join("opa-config.yaml");
    // The guide's file with an unreachable bundle server.
    let text = GUIDE_OPA_CONFIG.replace("https://bundle.example.com", "http://127.0.0.1:9");
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("lockstep"))
        .args(["agent", "--config"])
        .arg(&cfg)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--verification-key-id",
            "prod-key-2025",
            "--signing-alg",
            "ES256",
            "--verification-key",
        ])
        .arg(&key)
        .env("BUNDLE_TOKEN", "local-token")
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = Kill(child);
    let mut addr = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("lockstep agent listening on ") {
            addr = Some(a.to_string());
            break;
        }
    }
    let addr = addr.expect("agent did not start");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{addr}/v1/data/mcp/tool_access/allow"))
            .body(r#"{"input": {"agent": {"role": "analyst"}, "request": {"tool": "read_database"}}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let b: serde_json::Value = r.json().await.unwrap();
        assert_eq!(b["code"], "internal_error");
        assert!(b["message"].as_str().unwrap().contains("not activated yet"), "{b}");
        let h = http.get(format!("{addr}/health")).send().await.unwrap();
        assert_eq!(h.status(), 200);
        let st: serde_json::Value = http.get(format!("{addr}/v1/status")).send().await.unwrap().json().await.unwrap();
        assert_eq!(st["result"]["bundles"]["main"]["name"], "main");
    });
}
