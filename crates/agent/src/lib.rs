//! lockstep-agent: the decision point.
//!
//! Owns OPA's REST API — `/v1/data` decisions (with `decision_id`, `?metrics`,
//! `?provenance`), the policy and data write API that OPAL drives, `/v1/status`,
//! `/health`, `/metrics` — over the active policy kept by `lockstep-sync`, its own
//! sections of OPA's configuration file ([`config`]), and Envoy's ext_authz gRPC
//! service as opa-envoy-plugin serves it ([`envoy`], `plugins.envoy_ext_authz_grpc`)
//! plus Envoy's HTTP mode over the same decision ([`envoy_http`],
//! `plugins.envoy_ext_authz_http`). Every decision goes through
//! [`lockstep_decision::Decider`]; this crate only shapes requests and answers.
//!
//! Must not: know MCP (the gateway does), download or verify bundles itself (that is
//! `lockstep-sync`'s job), evaluate or log a decision outside `lockstep-decision`.
#![forbid(unsafe_code)]

mod access;
pub(crate) mod api;
pub mod config;
pub(crate) mod envoy;
pub(crate) mod envoy_http;
mod metrics;
pub mod upstream_token;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{AgentConfig, ApiTokens, EnvoyConfig, Overrides, WriteApi};
use lockstep_decision::{Decider, DecisionLogger};
pub use lockstep_decision::{DecisionLogConfig, DecisionUpload};
use lockstep_sync::Syncer;
use lockstep_sync::opa_config::ConfigError;

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sync(#[from] lockstep_sync::StartError),
    #[error(transparent)]
    DecisionLog(#[from] lockstep_decision::LogFileError),
    #[error("lockstep.upstream_tokens: {0}")]
    UpstreamTokens(#[from] lockstep_auth::jwt::JwtError),
    #[error("{what} listen on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// A started agent; stop it with [`RunningAgent::shutdown`].
#[derive(Debug)]
pub struct RunningAgent {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The Envoy ext_authz gRPC address actually bound, when configured.
    pub envoy_addr: Option<SocketAddr>,
    /// The Envoy ext_authz HTTP-mode address actually bound, when configured.
    pub envoy_http_addr: Option<SocketAddr>,
    pub syncer: Syncer,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    rest: Rest,
}

/// What is stopped after the REST listener: the Envoy listeners, the sync engine,
/// then the decision-log writer (which ends when the last sender is gone).
#[derive(Debug)]
struct Rest {
    envoy: Option<JoinHandle<std::io::Result<()>>>,
    envoy_http: Option<JoinHandle<std::io::Result<()>>>,
    syncer: Syncer,
    logger: Option<JoinHandle<()>>,
    state: Arc<api::AppState>,
}

impl Rest {
    async fn stop(self) -> std::io::Result<()> {
        join_http(self.envoy).await?;
        join_http(self.envoy_http).await?;
        self.syncer.shutdown().await;
        drop(self.state);
        if let Some(h) = self.logger {
            let _ = h.await;
        }
        Ok(())
    }
}

impl RunningAgent {
    /// Stops the HTTP server, the sync tasks and the decision-log writer.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.serve.await.map_err(std::io::Error::other)?;
        self.rest.stop().await?;
        served
    }

    /// Waits until the server stops (after [`RunningAgent::trigger`] or an error).
    pub async fn wait(self) -> std::io::Result<()> {
        let served = self.serve.await.map_err(std::io::Error::other)?;
        let _ = self.shutdown.send(true);
        self.rest.stop().await?;
        served
    }

    /// A handle that stops the agent when sent `true`.
    pub fn trigger(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

async fn join_http(h: Option<JoinHandle<std::io::Result<()>>>) -> std::io::Result<()> {
    match h {
        Some(h) => h.await.map_err(std::io::Error::other)?,
        None => Ok(()),
    }
}

async fn bind(
    addr: &str,
    what: &'static str,
) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let err = |source| StartError::Listen {
        what,
        addr: addr.to_string(),
        source,
    };
    let l = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let a = l.local_addr().map_err(err)?;
    Ok((l, a))
}

/// Loads persisted bundles, starts syncing, binds and serves.
pub async fn start(cfg: AgentConfig) -> Result<RunningAgent, StartError> {
    cfg.log_ignored();
    let syncer = Syncer::new(cfg.sync.clone())?;
    let logger = DecisionLogger::start(&cfg.decision_logs).await?;
    let (logger, logger_task) = match logger {
        Some((l, h)) => (Some(l), Some(h)),
        None => (None, None),
    };
    let (listener, addr) = bind(&cfg.listen, "REST API").await?;
    let (envoy_listener, envoy_addr) = match &cfg.envoy {
        Some(e) => {
            let (l, a) = bind(&e.bind_addr()?, "envoy ext_authz").await?;
            (Some(l), Some(a))
        }
        None => (None, None),
    };
    let (http_listener, envoy_http_addr) = match &cfg.envoy_http {
        Some(e) => {
            let (l, a) = bind(&e.bind_addr()?, "envoy ext_authz (HTTP)").await?;
            (Some(l), Some(a))
        }
        None => (None, None),
    };
    syncer.start().await;
    let decider = Decider::new(syncer.clone(), logger);
    let upstream_tokens = match &cfg.upstream_tokens {
        Some(t) => Some(upstream_token::TokenCheck::new(t)?),
        None => None,
    };
    let state = Arc::new(api::AppState {
        metrics: metrics::AgentMetrics::new(&decider),
        decider,
        upstream_tokens,
    });
    let bundles_configured = !cfg.sync.bundles.is_empty();
    let access = access::Access {
        tokens: cfg.tokens.clone(),
        write_enabled: cfg.write_api.enabled(bundles_configured),
    };
    if !access.tokens.required() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the REST API is open to anyone who can reach this address: configure lockstep.authentication");
    }
    if access.write_enabled && bundles_configured {
        tracing::warn!(
            "the policy and data write API is on beside signed bundles (lockstep.write_api: on)"
        );
    }
    let router = api::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        Arc::new(access),
        access::check,
    ));
    let (tx, mut rx) = watch::channel(false);
    let envoy = match (envoy_listener, &cfg.envoy) {
        (Some(l), Some(e)) => {
            let svc = envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
                envoy::ExtAuthz::new(state.clone(), e),
            );
            let mut erx = tx.subscribe();
            tracing::info!(addr = ?envoy_addr, path = %e.path, "envoy ext_authz gRPC listening");
            // Served by lockstep-listen (HTTP/2 with prior knowledge, as Envoy's gRPC
            // client speaks it), so it has the same header, idle and connection limits
            // as every other listener (security review finding 4).
            let app = tonic::service::Routes::new(svc).into_axum_router();
            Some(tokio::spawn(lockstep_listen::serve(
                l,
                None,
                app,
                cfg.listener,
                async move {
                    let _ = erx.wait_for(|v| *v).await;
                },
            )))
        }
        _ => None,
    };
    let envoy_http = match (http_listener, &cfg.envoy_http) {
        (Some(l), Some(e)) => {
            let app = envoy_http::router(
                envoy::ExtAuthz::new(state.clone(), e),
                e.path_prefix.clone(),
            );
            let mut hrx = tx.subscribe();
            tracing::info!(addr = ?envoy_http_addr, path = %e.path, "envoy ext_authz HTTP listening");
            Some(tokio::spawn(lockstep_listen::serve(
                l,
                None,
                app,
                cfg.listener,
                async move {
                    let _ = hrx.wait_for(|v| *v).await;
                },
            )))
        }
        _ => None,
    };
    let serve = tokio::spawn(lockstep_listen::serve(
        listener,
        None,
        router,
        cfg.listener,
        async move {
            let _ = rx.wait_for(|v| *v).await;
        },
    ));
    tracing::info!(%addr, bundles = cfg.sync.bundles.len(), "lockstep agent listening");
    Ok(RunningAgent {
        addr,
        envoy_addr,
        envoy_http_addr,
        syncer: syncer.clone(),
        shutdown: tx,
        serve,
        rest: Rest {
            envoy,
            envoy_http,
            syncer,
            logger: logger_task,
            state,
        },
    })
}
