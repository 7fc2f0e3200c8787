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
    #[arg(long)]
    pub listen: Option<String>,
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
