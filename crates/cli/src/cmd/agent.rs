//! `lockstep agent`: the decision agent (`lockstep-agent`), configured by OPA's config
//! file (`opa run --server --config-file` style) plus a `lockstep:` section.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;
use lockstep_agent::Overrides;
use lockstep_bundle::KeyConfig;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// OPA configuration file (services, bundles, keys, labels, status, decision_logs,
    /// persistence_directory, and lockstep.{listen,max_staleness,on_stale,skip_verification}).
    #[arg(short, long = "config", alias = "config-file")]
    pub config: PathBuf,
    /// Listen address (overrides lockstep.listen; default 127.0.0.1:8181).
    #[arg(long, alias = "addr")]
    pub listen: Option<String>,
    /// Public key (PEM text or file) added to `keys` under --verification-key-id,
    /// like `opa run --verification-key`.
    #[arg(long)]
    pub verification_key: Option<String>,
    /// Key id of --verification-key (match it with bundles.<name>.signing.keyid).
    #[arg(long, default_value = "default")]
    pub verification_key_id: String,
    /// Algorithm of --verification-key (OPA's default: RS256).
    #[arg(long, default_value = "RS256")]
    pub signing_alg: String,
}

pub fn run(a: &AgentArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let mut keys = BTreeMap::new();
    if let Some(k) = &a.verification_key {
        keys.insert(
            a.verification_key_id.clone(),
            KeyConfig {
                // Inline PEM, or a file that must exist (handed on as an absolute path,
                // which the config's key resolution reads as a file).
                key: lockstep_bundle::keys::KeySource::from_flag(k)
                    .to_config_value()
                    .map_err(|e| anyhow::anyhow!("--verification-key: {e}"))?,
                algorithm: a.signing_alg.clone(),
                scope: None,
            },
        );
    }
    let overrides = Overrides {
        keys,
        listen: a.listen.clone(),
    };
    let cfg = lockstep_agent::config::parse(&text, &|k| std::env::var(k).ok(), &overrides)
        .map_err(|e| anyhow!("{}: {e}", a.config.display()))?;
    for k in &cfg.ignored {
        eprintln!(
            "warning: {}: key {k} is not supported by lockstep and is ignored",
            a.config.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let agent = lockstep_agent::start(cfg).await.map_err(|e| anyhow!(e))?;
        eprintln!("lockstep agent listening on http://{}", agent.addr);
        let stop = agent.trigger();
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("shutting down");
            let _ = stop.send(true);
        });
        agent.wait().await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
