//! Starting and stopping a gateway: the policy section read by `lockstep-sync`'s
//! config parser (the same as the agent's), the sync engine and the decision path,
//! the key files, the audit writer, the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use lockstep_decision::{Decider, DecisionLogger};
use lockstep_sync::Syncer;
use lockstep_sync::opa_config::values::Walker;
use lockstep_sync::opa_config::{self, OwnSections};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api_keys::{ApiIdentity, ApiKeys};
use crate::audit::Audit;
use crate::config::GatewayConfig;
use crate::era::ProtocolVersion;
use crate::front::{Gateway, router};
use crate::metrics::GatewayMetrics;
use crate::session::{SessionKey, SessionSealer};
use crate::upstream::Upstream;
use crate::upstream_token::UpstreamTokens;

/// Why a gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "gateway config: policy: missing (services and bundles, in OPA's format, say where the signed policy comes from)"
    )]
    NoPolicy,
    #[error("gateway config: policy: {0}")]
    Policy(#[from] opa_config::ConfigError),
    #[error(transparent)]
    Sync(#[from] lockstep_sync::StartError),
    #[error(transparent)]
    DecisionLog(#[from] lockstep_decision::LogFileError),
    #[error(
        "gateway config: identity.api_keys_file or identity.oauth is required: every request must carry a credential"
    )]
    NoIdentity,
    #[error(transparent)]
    OAuth(#[from] lockstep_auth::jwt::JwtError),
    #[error(transparent)]
    UpstreamTokens(#[from] crate::upstream_token::TokenError),
    #[error(
        "gateway config: identity.anonymous is only allowed on a loopback listen address (it serves requests that carry no credential)"
    )]
    AnonymousNotLoopback,
    #[error("{what} {path}: {message}")]
    File {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error(transparent)]
    Naming(#[from] crate::naming::NamingError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("audit: {0}")]
    Audit(std::io::Error),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("session key: {0}")]
    Random(String),
}

fn read(what: &'static str, path: &std::path::Path) -> Result<String, StartError> {
    std::fs::read_to_string(path).map_err(|e| StartError::File {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn session_key(path: &std::path::Path) -> Result<SessionKey, StartError> {
    SessionKey::parse(&read("session key file", path)?).map_err(|e| StartError::File {
        what: "session key file",
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A started gateway; stop it with [`RunningGateway::shutdown`].
#[derive(Debug)]
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub syncer: Syncer,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// Stops the listener, the sync engine, and flushes the audit and decision logs.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.serve.await.map_err(std::io::Error::other)?;
        self.syncer.shutdown().await;
        for t in self.tasks {
            let _ = t.await;
        }
        served
    }

    /// Waits until the listener stops.
    pub async fn wait(self) -> std::io::Result<()> {
        let served = self.serve.await.map_err(std::io::Error::other)?;
        self.syncer.shutdown().await;
        served
    }

    pub fn trigger(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// A gateway built but not yet serving: the state every front door shares, the sync
/// engine, and the writer tasks to wait for at the end.
pub(crate) struct Built {
    pub gw: Arc<Gateway>,
    pub syncer: Syncer,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Reads the key files and the policy section, starts the writers and the sync engine.
/// `loopback` says whether the front door is a loopback listener (Host checks).
pub(crate) async fn build(cfg: GatewayConfig, loopback: bool) -> Result<Built, StartError> {
    for k in &cfg.unknown_keys {
        tracing::warn!(key = %k, "gateway configuration key not known: ignored");
    }
    let policy = cfg.policy.as_ref().ok_or(StartError::NoPolicy)?;
    let opa = opa_config::parse(
        &policy.to_string(),
        &|k| std::env::var(k).ok(),
        &opa_config::Overrides::default(),
        OwnSections {
            top: &[lockstep_decision::log_config::SECTION],
            lockstep: &[],
        },
    )?;
    let mut w = Walker {
        ignored: opa.ignored.clone(),
    };
    let logs = lockstep_decision::parse_decision_logs(
        opa.document.get(lockstep_decision::log_config::SECTION),
        &opa.services,
        &mut w,
    )?;
    for k in &w.ignored {
        tracing::warn!(key = %format!("policy.{k}"), "configuration key not supported by lockstep: ignored");
    }
    let mut sync = opa.sync;
    sync.labels
        .insert("agent".into(), "lockstep-gateway".into());

    let api_keys = match (&cfg.identity.api_keys_file, &cfg.identity.oauth) {
        (None, None) => return Err(StartError::NoIdentity),
        (None, Some(_)) => ApiKeys::default(),
        (Some(keys_file), _) => ApiKeys::parse(&read("identity.api_keys_file", keys_file)?)
            .map_err(|e| StartError::File {
                what: "identity.api_keys_file",
                path: keys_file.display().to_string(),
                message: e.to_string(),
            })?,
    };
    let oauth = match &cfg.identity.oauth {
        None => None,
        Some(o) => Some(Arc::new(crate::oauth::validator(o)?)),
    };
    let introspector = match &cfg.identity.oauth {
        None => None,
        Some(o) => crate::oauth::introspector(o)?.map(Arc::new),
    };
    let anonymous = match &cfg.identity.anonymous {
        None => None,
        Some(_) if !loopback => return Err(StartError::AnonymousNotLoopback),
        Some(a) => {
            tracing::warn!(
                id = %a.id,
                "identity.anonymous is set: requests without a credential are served as this identity"
            );
            Some(ApiIdentity {
                id: a.id.clone(),
                role: a.role.clone(),
                scopes: a.scopes.clone(),
                claims: serde_json::Map::new(),
            })
        }
    };
    let current = match &cfg.session.key_file {
        Some(p) => session_key(p)?,
        None => {
            tracing::warn!(
                "session.key_file not set: sessions are sealed with a key made at start, so they do not survive a restart or reach another replica"
            );
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| StartError::Random(e.to_string()))?;
            SessionKey::from_bytes(k)
        }
    };
    let previous = cfg
        .session
        .previous_key_files
        .iter()
        .map(|p| session_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let naming = cfg.naming()?;
    let upstream_tokens = match &cfg.upstream_tokens {
        None => None,
        Some(t) => {
            let tokens = Arc::new(UpstreamTokens::load(t.clone())?);
            keep_reloading(&tokens);
            Some(tokens)
        }
    };
    let upstreams = cfg
        .upstreams
        .iter()
        .map(|u| {
            let up = Upstream::new(u)?;
            Ok::<_, StartError>(match (&upstream_tokens, &u.token_audience) {
                (Some(t), Some(aud)) => up.with_tokens(t.clone(), aud.clone()),
                _ => up,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let (audit, audit_task) = Audit::start(&cfg.audit).await.map_err(StartError::Audit)?;
    let syncer = Syncer::new(sync)?;
    let (logger, logger_task) = match DecisionLogger::start(&logs).await? {
        Some((l, h)) => (Some(l), Some(h)),
        None => (None, None),
    };
    syncer.start().await;
    let decider = Decider::new(syncer.clone(), logger);
    let gw = Arc::new(Gateway {
        metrics: GatewayMetrics::new(&decider),
        decider,
        naming,
        upstreams,
        api_keys,
        oauth,
        introspector,
        upstream_tokens,
        anonymous,
        sealer: SessionSealer::new(current, previous),
        audit,
        loopback,
        supported: ProtocolVersion::ALL.to_vec(),
        streams: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_streams)),
        cfg,
    });
    let mut tasks = vec![audit_task];
    tasks.extend(logger_task);
    Ok(Built { gw, syncer, tasks })
}

/// Reads the key files, starts syncing the policy, binds and serves.
pub async fn start(cfg: GatewayConfig) -> Result<RunningGateway, StartError> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: cfg.listen.clone(),
        source,
    })?;
    let Built { gw, syncer, tasks } = build(cfg, addr.ip().is_loopback()).await?;
    let app = router(gw.clone());
    let (tx, mut rx) = watch::channel(false);
    // The accept loop of the server and the agent: header and idle timeouts and a
    // connection limit (its defaults), graceful shutdown.
    let serve = tokio::spawn(lockstep_listen::serve(
        listener,
        None,
        app,
        lockstep_listen::Limits::default(),
        async move {
            let _ = rx.wait_for(|v| *v).await;
        },
    ));
    tracing::info!(%addr, upstreams = gw.upstreams.len(), "lockstep gateway listening");
    // The writers end when the last handle to them is gone: the gateway state.
    drop(gw);
    Ok(RunningGateway {
        addr,
        syncer,
        shutdown: tx,
        serve,
        tasks,
    })
}

/// Reads `upstream_tokens.keys_dir` again every second while the gateway lives (a key
/// added there is published at once; see `upstream_token`).
fn keep_reloading(tokens: &Arc<UpstreamTokens>) {
    let weak = Arc::downgrade(tokens);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let Some(t) = weak.upgrade() else {
                return;
            };
            if let Err(e) = t.reload() {
                tracing::warn!(error = %e, "upstream token keys not reloaded; the previous ones stay");
            }
        }
    });
}
