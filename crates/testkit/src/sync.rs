//! Sync configurations pointing at a test server, and a minimal static bundle server
//! (a plain file server: ETag and 304, no long polling).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_bundle::VerificationConfig;
use lockstep_sync::{
    BundleSource, Credentials, Polling, Service, SyncConfig, TokenSource, Verification,
};

use crate::bundles::Keys;
use crate::server::{KID, key_map};

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
    Verification::Required(VerificationConfig {
        keys: key_map(keys),
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
            size_limit_bytes: None,
        }],
        persist_dir.to_path_buf(),
    );
    cfg.max_staleness = Duration::from_secs(30);
    cfg
}

/// [`sync_config`] against `server` that also reports its status there, as `id`.
pub fn reporting_sync_config(
    server: &crate::server::TestServer,
    dir: &Path,
    id: &str,
    long_poll: Option<u64>,
) -> SyncConfig {
    let mut cfg = sync_config(server.service(), server.verification(), dir, long_poll);
    cfg.labels.insert("id".into(), id.to_string());
    cfg.status = Some(lockstep_sync::StatusTarget {
        service: service(&server.base(), Some(crate::server::STATUS)),
        partition: None,
    });
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
