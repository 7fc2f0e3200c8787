//! Test harness shared by lockstep-sync and lockstep-agent tests: signed bundles made
//! in memory, a real `lockstep_server` on 127.0.0.1, a tiny static bundle server, and
//! sync configurations pointing at them.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockstep_bundle::keys::{Algorithm, generate_keypair};
use lockstep_bundle::{Bundle, BundleFile, KeyConfig, Manifest, SigningConfig, VerificationConfig};
use lockstep_server::auth::TokenSource as ServerToken;
use lockstep_server::config::{AuthConfig, Config, StoreConfig};
use lockstep_server::{RunningServer, start};
use lockstep_sync::{
    BundleSource, Credentials, Polling, Service, SyncConfig, TokenSource, Verification,
};

pub const PUBLISHER: &str = "publisher-secret";
pub const DOWNLOAD: &str = "download-secret";
pub const STATUS: &str = "status-secret";
pub const KID: &str = "ci";

#[derive(Clone)]
pub struct Keys {
    pub private: String,
    pub public: String,
}

pub fn keys() -> Keys {
    let (private, public) = generate_keypair(Algorithm::ES256).unwrap();
    Keys { private, public }
}

/// The policy of revision `rev`: `data.mcp.revision == rev`, and `allow` when
/// `input.user` is in `data.mcp.users`.
pub fn policy_source(rev: &str) -> String {
    format!(
        "package mcp\n\nrevision := \"{rev}\"\n\ndefault allow := false\n\nallow if input.user in data.mcp.users\n"
    )
}

/// A bundle with root `mcp`, revision `rev`, signed at `iat` (unsigned without keys).
pub fn bundle(rev: &str, iat: i64, keys: Option<&Keys>) -> Vec<u8> {
    bundle_with(rev, iat, keys, &policy_source(rev))
}

pub fn bundle_with(rev: &str, iat: i64, keys: Option<&Keys>, rego: &str) -> Vec<u8> {
    let mut b = Bundle {
        manifest: Manifest {
            revision: rev.to_string(),
            roots: Some(vec!["mcp".to_string()]),
            ..Manifest::default()
        },
        data: serde_json::json!({}),
        files: vec![
            BundleFile {
                path: "mcp/data.json".into(),
                bytes: br#"{"users": ["alice"]}"#.to_vec(),
            },
            BundleFile {
                path: "mcp/policy.rego".into(),
                bytes: rego.as_bytes().to_vec(),
            },
        ],
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

/// Flips one byte of the policy inside a signed bundle, keeping the signature.
pub fn tampered(rev: &str, iat: i64, keys: &Keys) -> Vec<u8> {
    let good = bundle(rev, iat, Some(keys));
    let b = lockstep_bundle::read_tar_gz(
        good.as_slice(),
        &lockstep_bundle::ReadOptions {
            skip_verify: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut b = b;
    for f in &mut b.files {
        if f.path == "mcp/policy.rego" {
            f.bytes = policy_source(&format!("{rev}-evil")).into_bytes();
        }
    }
    lockstep_bundle::write_tar_gz(&b, Vec::new()).unwrap()
}

pub fn write_token(dir: &Path, name: &str, value: &str) -> ServerToken {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    ServerToken {
        file: Some(p),
        ..ServerToken::default()
    }
}

pub fn server_config(store: &Path, tokens: &Path, keys: &Keys, listen: &str) -> Config {
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
        listen: Some(listen.into()),
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
        ..Config::default()
    }
}

/// A real lockstep server over a temp folder; restartable on the same port.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
}

impl Server {
    pub async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let cfg = server_config(&dir.path().join("store"), dir.path(), &keys, "127.0.0.1:0");
        let server = start(&cfg).await.unwrap();
        let addr = server.addr;
        Server {
            dir,
            keys,
            server: Some(server),
            addr,
            http: reqwest::Client::new(),
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }

    /// Starts again on the same address (retrying while the port is released).
    pub async fn restart(&mut self) {
        let cfg = server_config(
            &self.dir.path().join("store"),
            self.dir.path(),
            &self.keys,
            &self.addr.to_string(),
        );
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

    pub async fn publish(&self, name: &str, body: Vec<u8>) {
        let r = self
            .http
            .put(format!("{}/bundles/{name}", self.base()))
            .bearer_auth(PUBLISHER)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "publish: {} {}",
            r.status(),
            r.text().await.unwrap()
        );
    }

    pub async fn fleet(&self) -> serde_json::Value {
        json_of(
            self.http
                .get(format!("{}/v1/fleet", self.base()))
                .bearer_auth(STATUS),
        )
        .await
    }

    pub fn service(&self) -> Service {
        service(&self.base(), Some(DOWNLOAD))
    }

    pub fn verification(&self) -> Verification {
        verification(&self.keys)
    }
}

pub fn service(url: &str, token: Option<&str>) -> Service {
    Service {
        name: "bundle-server".into(),
        url: url.to_string(),
        credentials: match token {
            Some(t) => Credentials::Bearer {
                scheme: "Bearer".into(),
                token: TokenSource::Inline(t.to_string()),
            },
            None => Credentials::None,
        },
        headers: BTreeMap::new(),
        response_header_timeout: Duration::from_secs(10),
    }
}

pub fn verification(keys: &Keys) -> Verification {
    let mut m = BTreeMap::new();
    m.insert(
        KID.to_string(),
        KeyConfig {
            key: keys.public.clone(),
            algorithm: "ES256".into(),
            scope: None,
        },
    );
    Verification::Required(VerificationConfig {
        keys: m,
        key_id: Some(KID.into()),
        ..VerificationConfig::default()
    })
}

/// One bundle `main` from `service`, long polling for `long_poll` seconds when set.
pub fn sync_config(
    service: Service,
    verification: Verification,
    persist_dir: &Path,
    long_poll: Option<u64>,
) -> SyncConfig {
    let mut cfg = SyncConfig::new(
        vec![BundleSource {
            name: "main".into(),
            service,
            resource: "bundles/main".into(),
            polling: Polling {
                min_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(200),
                long_polling_timeout: long_poll.map(Duration::from_secs),
            },
            verification,
            persist: true,
        }],
        persist_dir.to_path_buf(),
    );
    cfg.max_staleness = Duration::from_secs(30);
    cfg
}

/// A minimal bundle server whose answer the test controls: `bytes` with a strong
/// ETag derived from them, `If-None-Match` → 304, no long polling,
/// `Content-Type: application/gzip` (a plain file server).
#[derive(Clone, Default)]
pub struct StaticServer {
    pub body: Arc<Mutex<Option<Vec<u8>>>>,
    pub requests: Arc<Mutex<u64>>,
}

impl StaticServer {
    pub fn set(&self, bytes: Vec<u8>) {
        *self.body.lock().unwrap() = Some(bytes);
    }

    pub async fn start(
        &self,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::IntoResponse;
        let me = self.clone();
        let app = axum::Router::new().route(
            "/bundles/{name}",
            axum::routing::get(move |headers: HeaderMap| {
                let me = me.clone();
                async move {
                    *me.requests.lock().unwrap() += 1;
                    let Some(body) = me.body.lock().unwrap().clone() else {
                        return StatusCode::NOT_FOUND.into_response();
                    };
                    let etag = format!(
                        "\"{:x}-{}\"",
                        body.iter()
                            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b))),
                        body.len()
                    );
                    let inm = headers
                        .get(header::IF_NONE_MATCH)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if inm == etag {
                        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
                    }
                    (
                        StatusCode::OK,
                        [
                            (header::ETAG, etag),
                            (header::CONTENT_TYPE, "application/gzip".to_string()),
                        ],
                        body,
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        (addr, tx, h)
    }
}

/// Waits until `f` is true, polling every 5 ms, for at most `within`.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn tmp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Sends `request` and returns its JSON body.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}
