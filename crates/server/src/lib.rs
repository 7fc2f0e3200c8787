//! The lockstep bundle server.
//!
//! Owns: storage behind `object_store` (a local folder by default, any S3-compatible store
//! for scale-out with stateless replicas), bundle download with OPA's protocol (strong
//! ETags, `If-None-Match` → 304, long polling with `Prefer: wait=N` woken by a `watch`
//! channel per bundle), authentication (bearer tokens, constant-time), publication with
//! signature verification and rollback protection, revision history and rollback, OPA
//! status-report ingest, the fleet model (drift, lag, unreachable instances, convergence
//! time per publication), Prometheus metrics and the dashboard page.
//!
//! Must not: evaluate policy (that is `lockstep-policy`'s job), or hold a signing key.
#![forbid(unsafe_code)]

pub(crate) mod app;
pub mod auth;
pub(crate) mod body;
pub mod config;
pub(crate) mod dashboard;
pub mod error;
pub mod fleet;
pub(crate) mod fleetsync;
pub(crate) mod hub;
pub(crate) mod longpoll;
pub mod metrics;
pub mod model;
pub mod publish;
pub(crate) mod routes;
pub mod status;
pub(crate) mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::ConfigError;

use crate::app::AppState;
use crate::fleet::Fleet;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Store;

/// A started server; stop it with [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    watcher: JoinHandle<()>,
    sync: JoinHandle<()>,
}

impl RunningServer {
    /// Signals shutdown (held long polls answer 304 at once) and waits for the server to stop.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after [`RunningServer::trigger`] or an error).
    pub async fn wait(self) -> std::io::Result<()> {
        let r = self.serve.await.map_err(std::io::Error::other)?;
        let _ = self.shutdown.send(true);
        let _ = self.watcher.await;
        let _ = self.sync.await;
        r
    }

    /// A handle that stops the server when sent `true`.
    pub fn trigger(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Validates the configuration, opens the store, loads every bundle, binds and serves.
pub async fn start(config: &Config) -> Result<RunningServer, ConfigError> {
    let limits = config.listen_limits()?;
    let auth = config.auth()?;
    let verification = config.verification()?;
    if verification.base.is_none() && !config.publish.allow_unsigned {
        return Err(ConfigError::Invalid(
            "no verification keys configured (keys:) and publish.allow_unsigned is false: nothing could be published".into(),
        ));
    }
    if verification.base.is_some() && config.publish.allow_unsigned {
        tracing::warn!(
            "publish.allow_unsigned is on while verification keys are configured: unsigned bundles are accepted, though never over a signed active revision except as an explicit rollback"
        );
    }
    let store = Store::open(&config.store)?;
    let metrics = Arc::new(Metrics::new());
    let fleet = Arc::new(
        Fleet::new(
            Duration::from_secs(config.unreachable_after_seconds()),
            Duration::from_secs(config.forget_after_seconds()),
            metrics.clone(),
        )
        .with_limits(config.report_limits()),
    );
    let hub = Arc::new(
        Hub::new(store, fleet.clone()).with_read_back_check(hub::ReadBackCheck {
            verification: verification.clone(),
            allow_unsigned: config.publish.allow_unsigned,
            max_bundle_bytes: config.max_bundle_bytes(),
        }),
    );
    hub.load_all()
        .await
        .map_err(|e| ConfigError::Store(e.to_string()))?;
    let mut sync_state = fleetsync::SyncState::default();
    fleetsync::sync_once(&hub.store, &fleet, &mut sync_state)
        .await
        .map_err(|e| ConfigError::Store(e.to_string()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let fleet_for_sync = fleet.clone();
    let app = Arc::new(AppState {
        hub: hub.clone(),
        fleet,
        metrics,
        auth,
        verification,
        allow_unsigned: config.publish.allow_unsigned,
        keep_revisions: config.keep_revisions(),
        cutover: config.cutover()?,
        max_wait: Duration::from_secs(config.max_wait_seconds()),
        max_bundle_bytes: config.max_bundle_bytes(),
        uploads: body::BodyGate::new(
            config.max_bundle_bytes(),
            "publish.max_bundle_bytes",
            config.max_concurrent_uploads(),
        ),
        reports: body::BodyGate::new(
            config::MAX_STATUS_BODY_BYTES,
            "the status report limit",
            config.max_concurrent_reports(),
        ),
        prefix: config.prefix(),
        shutdown: shutdown_rx.clone(),
    });
    let listener = bind(config.listen())
        .await
        .map_err(|e| ConfigError::Listen {
            addr: config.listen().to_string(),
            message: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| ConfigError::Listen {
        addr: config.listen().to_string(),
        message: e.to_string(),
    })?;
    let sync = tokio::spawn(fleetsync::run(
        hub.store.clone(),
        fleet_for_sync,
        Duration::from_millis(config.fleet_sync_interval_ms()),
        shutdown_rx.clone(),
        sync_state,
    ));
    let watcher = tokio::spawn(hub.watch(
        Duration::from_millis(config.watch_interval_ms()),
        shutdown_rx.clone(),
    ));
    let tls = match &config.tls {
        None => None,
        Some(tls) => Some(Arc::new(tls::server_config(tls)?)),
    };
    let router = routes::router(app);
    let mut stop = shutdown_rx;
    let serve = tokio::spawn(lockstep_listen::serve(
        listener,
        tls,
        router,
        limits,
        async move {
            let _ = stop.wait_for(|v| *v).await;
        },
    ));
    tracing::info!(%addr, "lockstep server listening");
    Ok(RunningServer {
        addr,
        shutdown: shutdown_tx,
        serve,
        watcher,
        sync,
    })
}

/// Binds with a large accept backlog (a fleet reconnecting at once after a restart
/// arrives as one burst; the kernel caps the value at `somaxconn`).
async fn bind(listen: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => return socket.listen(4096),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to listen on")))
}
