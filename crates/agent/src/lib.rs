//! lockstep-agent: the decision point.
//!
//! Owns OPA's REST API — `/v1/data` decisions (with `decision_id`, `?metrics`,
//! `?provenance`), the policy and data write API that OPAL drives, `/v1/status`,
//! `/health`, `/metrics` — over the active policy kept by `lockstep-sync`, OPA's
//! configuration file format ([`config`]), and decision logs in OPA's event shape
//! ([`decision_log`]). Envoy ext_authz belongs here too (not built yet).
//!
//! Must not: know MCP (the gateway does), download or verify bundles itself (that is
//! `lockstep-sync`'s job).
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod decision_log;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{AgentConfig, DecisionLogConfig, Overrides};
use lockstep_sync::Syncer;

/// A started agent; stop it with [`RunningAgent::shutdown`].
#[derive(Debug)]
pub struct RunningAgent {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    pub syncer: Syncer,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    logger: Option<JoinHandle<()>>,
    state: Arc<api::AppState>,
}

impl RunningAgent {
    /// Stops the HTTP server, the sync tasks and the decision-log writer.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.serve.await.map_err(std::io::Error::other)?;
        self.syncer.shutdown().await;
        // The writer ends when the last sender is gone.
        drop(self.state);
        if let Some(h) = self.logger {
            let _ = h.await;
        }
        served
    }

    /// Waits until the server stops (after [`RunningAgent::trigger`] or an error).
    pub async fn wait(self) -> std::io::Result<()> {
        let served = self.serve.await.map_err(std::io::Error::other)?;
        let _ = self.shutdown.send(true);
        self.syncer.shutdown().await;
        drop(self.state);
        if let Some(h) = self.logger {
            let _ = h.await;
        }
        served
    }

    /// A handle that stops the agent when sent `true`.
    pub fn trigger(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Loads persisted bundles, starts syncing, binds and serves.
pub async fn start(cfg: AgentConfig) -> Result<RunningAgent, String> {
    cfg.log_ignored();
    let syncer = Syncer::new(cfg.sync.clone())?;
    let logger = decision_log::DecisionLogger::start(&cfg.decision_logs).await?;
    let (logger, logger_task) = match logger {
        Some((l, h)) => (Some(l), Some(h)),
        None => (None, None),
    };
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", cfg.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listen on {}: {e}", cfg.listen))?;
    syncer.start().await;
    let state = Arc::new(api::AppState {
        syncer: syncer.clone(),
        logger,
        metrics: api::Metrics::default(),
    });
    let router = api::router(state.clone());
    let (tx, mut rx) = watch::channel(false);
    let serve = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.wait_for(|v| *v).await;
        })
        .await
    });
    tracing::info!(%addr, bundles = cfg.sync.bundles.len(), "lockstep agent listening");
    Ok(RunningAgent {
        addr,
        syncer,
        shutdown: tx,
        serve,
        logger: logger_task,
        state,
    })
}
