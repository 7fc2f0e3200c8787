//! `lockstep gateway --config gateway.yaml`: the MCP gateway (`lockstep-gateway`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;

use super::agent::shutdown_signal;

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Gateway configuration (listen, upstreams, layers, identity, session, limits,
    /// audit, allowed_origins, and `policy:` in OPA's config format). Paths in it are
    /// relative to the working directory.
    #[arg(short, long = "config")]
    pub config: PathBuf,
    /// Listen address (overrides `listen`; default 127.0.0.1:8383).
    #[arg(long, conflicts_with = "stdio")]
    pub listen: Option<String>,
    /// Serve MCP on stdin/stdout instead of HTTP (for clients that launch local
    /// commands); the caller's API key comes from $LOCKSTEP_GATEWAY_KEY.
    #[arg(long)]
    pub stdio: bool,
}

pub fn run(a: &GatewayArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let mut cfg = lockstep_gateway::config::GatewayConfig::parse(&text)
        .map_err(|e| anyhow!("{}: {e}", a.config.display()))?;
    if let Some(l) = &a.listen {
        cfg.listen = l.clone();
    }
    for k in &cfg.unknown_keys {
        eprintln!(
            "warning: {}: key {k} is not known and is ignored",
            a.config.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if a.stdio {
        let key = std::env::var(lockstep_gateway::KEY_ENV).map_err(|_| {
            anyhow!(
                "--stdio: set {} to the API key of the local caller",
                lockstep_gateway::KEY_ENV
            )
        })?;
        return rt.block_on(async move {
            lockstep_gateway::serve_stdio(cfg, key, tokio::io::stdin(), tokio::io::stdout())
                .await
                .map_err(|e| anyhow!(e))?;
            Ok(ExitCode::SUCCESS)
        });
    }
    rt.block_on(async move {
        let gw = lockstep_gateway::start(cfg).await.map_err(|e| anyhow!(e))?;
        eprintln!("lockstep gateway listening on http://{}/mcp", gw.addr);
        let stop = gw.trigger();
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("shutting down");
            let _ = stop.send(true);
        });
        gw.wait().await?;
        Ok(ExitCode::SUCCESS)
    })
}
