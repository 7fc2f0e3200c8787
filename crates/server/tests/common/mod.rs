//! Test harness: signed bundles made in memory, servers on 127.0.0.1:0 over a temp folder.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockstep_bundle::keys::{Algorithm, generate_keypair};
use lockstep_bundle::{Bundle, BundleFile, KeyConfig, Manifest, SigningConfig};
use lockstep_server::auth::TokenSource;
use lockstep_server::config::{AuthConfig, Config, FleetConfig, StoreConfig};
use lockstep_server::{RunningServer, start};

pub const PUBLISHER: &str = "publisher-secret";
pub const DOWNLOAD: &str = "download-secret";
pub const STATUS: &str = "status-secret";
pub const KID: &str = "ci";

pub struct Keys {
    pub private: String,
    pub public: String,
}

pub fn keys() -> Keys {
    let (private, public) = generate_keypair(Algorithm::ES256).unwrap();
    Keys { private, public }
}

/// A bundle with one policy, revision `rev`, signed at `iat` (unsigned when `keys` is None).
pub fn bundle(rev: &str, iat: i64, keys: Option<&Keys>) -> Vec<u8> {
    let mut b = Bundle {
        manifest: Manifest {
            revision: rev.to_string(),
            roots: Some(vec!["mcp".to_string()]),
            ..Manifest::default()
        },
        data: serde_json::json!({}),
        files: vec![BundleFile {
            path: "mcp/policy.rego".into(),
            bytes: format!("package mcp\n\nrevision := \"{rev}\"\n").into_bytes(),
        }],
        ..Bundle::default()
    };
    b.sync_manifest_file().unwrap();
    if let Some(k) = keys {
        lockstep_bundle::sign_bundle(
            &mut b,
            &SigningConfig {
                key: k.private.clone(),
                alg: "ES256".into(),
                key_id: Some(KID.into()),
                issued_at: Some(iat),
                ..SigningConfig::default()
            },
        )
        .unwrap();
    }
    lockstep_bundle::write_tar_gz(&b, Vec::new()).unwrap()
}

pub fn write_token(dir: &Path, name: &str, value: &str) -> TokenSource {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    TokenSource {
        file: Some(p),
        ..TokenSource::default()
    }
}

/// The standard test configuration over `store`.
pub fn config(store: &Path, tokens: &Path, keys: &Keys) -> Config {
    let mut key_map = BTreeMap::new();
    key_map.insert(
        KID.to_string(),
        KeyConfig {
            key: keys.public.clone(),
            algorithm: "ES256".into(),
            scope: None,
        },
    );
    Config {
        listen: Some("127.0.0.1:0".into()),
        store: StoreConfig {
            folder: Some(store.to_path_buf()),
            watch_interval_ms: Some(50),
            ..StoreConfig::default()
        },
        keys: key_map,
        auth: AuthConfig {
            publisher_token: Some(write_token(tokens, "publisher", PUBLISHER)),
            download_tokens: vec![write_token(tokens, "download", DOWNLOAD)],
            status_tokens: vec![write_token(tokens, "status", STATUS)],
            ..AuthConfig::default()
        },
        fleet: FleetConfig {
            unreachable_after_seconds: Some(300),
            sync_interval_ms: Some(50),
            forget_after_seconds: None,
            ..FleetConfig::default()
        },
        ..Config::default()
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub server: Option<RunningServer>,
    pub base: String,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with(|_| {}).await
    }

    pub async fn with(edit: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let mut cfg = config(&dir.path().join("store"), dir.path(), &keys);
        edit(&mut cfg);
        let server = start(&cfg).await.unwrap();
        let base = format!("http://{}", server.addr);
        Harness {
            dir,
            keys,
            server: Some(server),
            base,
            http: reqwest::Client::new(),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn publish(&self, name: &str, body: Vec<u8>) -> reqwest::Response {
        publish_to(&self.http, &self.base, name, body).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(DOWNLOAD)
            .send()
            .await
            .unwrap()
    }

    pub async fn fleet(&self) -> serde_json::Value {
        let r = self
            .http
            .get(self.url("/v1/fleet"))
            .bearer_auth(STATUS)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

pub async fn publish_to(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    http.put(format!("{base}/bundles/{name}"))
        .bearer_auth(PUBLISHER)
        .header("x-lockstep-actor", "ci-bot")
        .body(body)
        .send()
        .await
        .unwrap()
}

pub fn etag(r: &reqwest::Response) -> String {
    r.headers()
        .get("etag")
        .expect("etag")
        .to_str()
        .unwrap()
        .to_string()
}

/// OPA's status report (opa.md 4.2 / OPA docs "Status Service API"), for one instance.
pub fn opa_status(id: &str, bundle: &str, revision: &str) -> serde_json::Value {
    serde_json::json!({
        "labels": {"app": "my-example-app", "id": id, "version": "1.4.0"},
        "bundles": {
            bundle: {
                "name": bundle,
                "active_revision": revision,
                "last_successful_download": "2018-01-01T00:00:00.000Z",
                "last_successful_activation": "2018-01-01T00:00:00.000Z",
                "last_request": "2018-01-01T00:00:00.000Z",
                "last_successful_request": "2018-01-01T00:00:00.000Z",
                "type": "snapshot",
                "size": 1024,
                "metrics": {"timer_rego_data_parse_ns": 12345, "timer_rego_module_compile_ns": 12345,
                            "timer_rego_module_parse_ns": 12345, "timer_rego_load_bundles_ns": 12345,
                            "timer_bundle_request_ns": 12345}
            }
        },
        "discovery": {
            "name": "discovery",
            "active_revision": "TEST",
            "last_successful_download": "2018-01-01T00:00:00.000Z",
            "last_successful_activation": "2018-01-01T00:00:00.000Z",
            "last_request": "2018-01-01T00:00:00.000Z",
            "last_successful_request": "2018-01-01T00:00:00.000Z"
        },
        "plugins": {"bundle": {"state": "OK"}, "discovery": {"state": "OK"}, "status": {"state": "OK"}},
        "metrics": {"prometheus": {"go_gc_duration_seconds": {"help": "A summary of the GC invocation durations.", "metrics": [], "name": "go_gc_duration_seconds", "type": 2}}}
    })
}

pub async fn report(h: &Harness, body: &serde_json::Value) -> reqwest::Response {
    h.http
        .post(h.url("/status"))
        .bearer_auth(STATUS)
        .json(body)
        .send()
        .await
        .unwrap()
}
