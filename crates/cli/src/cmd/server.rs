//! `lockstep server`: the bundle server (`lockstep-server`), configured by a YAML file
//! and/or flags (flags win).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lockstep_bundle::KeyConfig;
use lockstep_server::Config;
use lockstep_server::auth::TokenSource;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server config YAML (store, keys, auth, long_poll, history, fleet...).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:8282).
    #[arg(long)]
    pub listen: Option<String>,
    /// Folder store (default ./lockstep-data unless the config names a store).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// File holding the publisher token.
    #[arg(long)]
    pub publisher_token_file: Option<PathBuf>,
    /// Environment variable holding the publisher token.
    #[arg(long)]
    pub publisher_token_env: Option<String>,
    /// File holding a fleet-wide download token (repeatable).
    #[arg(long)]
    pub download_token_file: Vec<PathBuf>,
    /// Environment variable holding a fleet-wide download token (repeatable).
    #[arg(long)]
    pub download_token_env: Vec<String>,
    /// File holding a status-report token (repeatable).
    #[arg(long)]
    pub status_token_file: Vec<PathBuf>,
    /// Serve bundles without a download token.
    #[arg(long)]
    pub allow_anonymous_download: bool,
    /// Accept bundles without a signature.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Public key (PEM file or inline PEM) that publications must be signed with.
    #[arg(long)]
    pub verification_key: Option<String>,
    #[arg(long, default_value = "default")]
    pub verification_key_id: String,
    /// Algorithm of --verification-key.
    #[arg(long, default_value = "ES256")]
    pub signing_alg: String,
    /// Cap on the long-poll `wait` a client may ask for, in seconds.
    #[arg(long)]
    pub max_wait_seconds: Option<u64>,
    /// Revisions kept for rollback.
    #[arg(long)]
    pub keep_revisions: Option<usize>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

fn file(p: &std::path::Path) -> TokenSource {
    TokenSource {
        file: Some(p.to_path_buf()),
        ..TokenSource::default()
    }
}

fn env(v: &str) -> TokenSource {
    TokenSource {
        env: Some(v.to_string()),
        ..TokenSource::default()
    }
}

/// The configuration: file first, flags over it.
pub fn config(a: &ServerArgs) -> anyhow::Result<Config> {
    let mut c = match &a.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(l) = &a.listen {
        c.listen = Some(l.clone());
    }
    if let Some(s) = &a.store {
        c.store.folder = Some(s.clone());
        c.store.s3 = None;
    }
    if let Some(p) = &a.publisher_token_file {
        c.auth.publisher_token = Some(file(p));
    }
    if let Some(v) = &a.publisher_token_env {
        c.auth.publisher_token = Some(env(v));
    }
    c.auth
        .download_tokens
        .extend(a.download_token_file.iter().map(|p| file(p)));
    c.auth
        .download_tokens
        .extend(a.download_token_env.iter().map(|v| env(v)));
    c.auth
        .status_tokens
        .extend(a.status_token_file.iter().map(|p| file(p)));
    c.auth.allow_anonymous_download |= a.allow_anonymous_download;
    c.publish.allow_unsigned |= a.allow_unsigned;
    if let Some(k) = &a.verification_key {
        c.keys.insert(
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
    if let Some(w) = a.max_wait_seconds {
        c.long_poll.max_wait_seconds = Some(w);
    }
    if let Some(k) = a.keep_revisions {
        c.history.keep_revisions = Some(k);
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        c.tls = Some(lockstep_server::tls::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: a.tls_client_ca.clone(),
        });
    }
    Ok(c)
}

pub fn run(a: &ServerArgs) -> anyhow::Result<ExitCode> {
    let cfg = config(a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let server = lockstep_server::start(&cfg).await?;
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        eprintln!("lockstep server listening on {scheme}://{}", server.addr);
        let stop = server.trigger();
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("shutting down");
            let _ = stop.send(true);
        });
        server.wait().await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
