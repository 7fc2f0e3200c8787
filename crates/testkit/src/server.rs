//! A real `lockstep-server` on 127.0.0.1 over a temp folder, with token files, and
//! the requests tests make of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep_bundle::KeyConfig;
use lockstep_server::auth::TokenSource;
use lockstep_server::config::{AuthConfig, Config, FleetConfig, StoreConfig};
use lockstep_server::{RunningServer, start};
use lockstep_sync::{Service, Verification};

use crate::bundles::{Keys, keys};
use crate::wait::json_of;

pub const PUBLISHER: &str = "publisher-secret";
pub const DOWNLOAD: &str = "download-secret";
pub const STATUS: &str = "status-secret";
/// The key id every test bundle is signed with.
pub const KID: &str = "ci";

/// Writes `value` to `dir/name` and returns it as a server token source.
pub fn write_token(dir: &Path, name: &str, value: &str) -> TokenSource {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    TokenSource {
        file: Some(p),
        ..TokenSource::default()
    }
}

/// The public key as the server and agents configure it.
pub fn key_map(keys: &Keys) -> BTreeMap<String, KeyConfig> {
    let mut m = BTreeMap::new();
    m.insert(
        KID.to_string(),
        KeyConfig {
            key: keys.public.clone(),
            algorithm: "ES256".into(),
            scope: None,
        },
    );
    m
}

/// The standard test configuration: folder store, the three tokens, fast store
/// watching and fleet sync.
pub fn config(store: &Path, tokens: &Path, keys: &Keys) -> Config {
    Config {
        listen: Some("127.0.0.1:0".into()),
        store: StoreConfig {
            folder: Some(store.to_path_buf()),
            watch_interval_ms: Some(50),
            ..StoreConfig::default()
        },
        keys: key_map(keys),
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

/// A started server; restartable on the same port.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
    /// `http://<addr>`.
    pub base: String,
    pub http: reqwest::Client,
    config: Config,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with(|_| {}).await
    }

    /// Starts with the standard configuration after `edit`.
    pub async fn with(edit: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let mut cfg = config(&dir.path().join("store"), dir.path(), &keys);
        edit(&mut cfg);
        let server = start(&cfg).await.unwrap();
        let addr = server.addr;
        TestServer {
            dir,
            keys,
            server: Some(server),
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            config: cfg,
        }
    }

    /// `http://<addr>` (for code that wants a method).
    pub fn base(&self) -> String {
        self.base.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }

    /// [`TestServer::stop`] by value, for a server the test is done with.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// Starts again on the same address and configuration (retrying while the port
    /// is released).
    pub async fn restart(&mut self) {
        let mut cfg = self.config.clone();
        cfg.listen = Some(self.addr.to_string());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match start(&cfg).await {
                Ok(s) => {
                    self.server = Some(s);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restart: {e}"),
            }
        }
    }

    /// `PUT /bundles/{name}` with the publisher token; the response as it came.
    pub async fn publish(&self, name: &str, body: Vec<u8>) -> reqwest::Response {
        publish_to(&self.http, &self.base, name, body).await
    }

    /// `PUT /bundles/{name}?cutover_ms={ms}`, which must succeed: the publication's
    /// answer (it names the announced `activate_at`).
    pub async fn publish_cutover(&self, name: &str, body: Vec<u8>, ms: u64) -> serde_json::Value {
        self.publish_json(name, body, Some(ms)).await
    }

    /// `PUT /bundles/{name}` (with `?cutover_ms=` when given), which must succeed: the
    /// publication's answer.
    pub async fn publish_json(
        &self,
        name: &str,
        body: Vec<u8>,
        cutover_ms: Option<u64>,
    ) -> serde_json::Value {
        let query = cutover_ms.map_or(String::new(), |ms| format!("?cutover_ms={ms}"));
        let r = self
            .http
            .put(format!("{}/bundles/{name}{query}", self.base))
            .bearer_auth(PUBLISHER)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "publish: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The client the server's helpers use.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// [`TestServer::publish`] that must succeed.
    pub async fn publish_ok(&self, name: &str, body: Vec<u8>) {
        let r = self.publish(name, body).await;
        let status = r.status();
        assert!(
            status.is_success(),
            "publish: {status} {}",
            r.text().await.unwrap()
        );
    }

    /// `GET` with the download token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(DOWNLOAD)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/fleet` (status token), which must answer 200.
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

    /// `GET /metrics` with `token` (publisher or status), as text.
    pub async fn metrics(&self, token: &str) -> String {
        let r = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET /metrics: {}", r.status());
        r.text().await.unwrap()
    }

    /// `POST /status` with the status token.
    pub async fn report(&self, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/status"))
            .bearer_auth(STATUS)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /status` with `token` (status reports are bound to the token that first
    /// reported an instance id).
    pub async fn report_with(&self, token: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/status"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The bundle service as an agent configures it (download token).
    pub fn service(&self) -> Service {
        crate::sync::service(&self.base, Some(DOWNLOAD))
    }

    /// Signature verification with this server's key.
    pub fn verification(&self) -> Verification {
        crate::sync::verification(&self.keys)
    }

    /// The JSON body of `GET path` with the status token.
    pub async fn status_json(&self, path: &str) -> serde_json::Value {
        json_of(self.http.get(self.url(path)).bearer_auth(STATUS)).await
    }
}

/// `PUT {base}/bundles/{name}` with the publisher token.
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

/// The `ETag` header of a response.
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
