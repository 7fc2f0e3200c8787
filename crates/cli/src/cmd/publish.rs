//! `lockstep publish`: upload a signed bundle to a lockstep server, optionally waiting
//! until every reporting instance runs it (progress bar, convergence time).
//! Also holds the HTTP client pieces `rollback` and `drift` share.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use lockstep_server::auth::{Secret, TokenSource};
use lockstep_server::fleet::{BundleView, FleetView};
use lockstep_server::publish::PublishResponse;

/// Where the server is and how to authenticate.
#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// Server base URL, e.g. http://127.0.0.1:8282
    #[arg(long, env = "LOCKSTEP_SERVER")]
    pub server: String,
    /// File holding the bearer token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token (default LOCKSTEP_TOKEN, if set).
    #[arg(long)]
    pub token_env: Option<String>,
    /// PEM CA certificate to trust for an https server (besides the system's roots).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (with --client-key).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl RemoteArgs {
    pub fn token(&self) -> anyhow::Result<Option<Secret>> {
        let src = match (&self.token_file, &self.token_env) {
            (Some(f), _) => TokenSource {
                file: Some(f.clone()),
                ..TokenSource::default()
            },
            (None, Some(v)) => TokenSource {
                env: Some(v.clone()),
                ..TokenSource::default()
            },
            (None, None) if std::env::var_os("LOCKSTEP_TOKEN").is_some() => TokenSource {
                env: Some("LOCKSTEP_TOKEN".into()),
                ..TokenSource::default()
            },
            (None, None) => return Ok(None),
        };
        Ok(Some(src.load()?))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn client(remote: &RemoteArgs) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("lockstep/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10));
    if let Some(ca) = &remote.cacert {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).context("--cacert")?);
    }
    if let (Some(cert), Some(key)) = (&remote.client_cert, &remote.client_key) {
        let mut pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).with_context(|| format!("reading {}", key.display()))?);
        b = b.identity(reqwest::Identity::from_pem(&pem).context("--client-cert/--client-key")?);
    }
    b.build().context("building the HTTP client")
}

pub fn with_token(req: reqwest::RequestBuilder, token: Option<&Secret>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t.expose()),
        None => req,
    }
}

/// Turns a non-2xx answer into an error carrying the server's message.
pub async fn check(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or(body);
    bail!("{what}: server replied {status}: {message}")
}

pub async fn fetch_fleet(
    http: &reqwest::Client,
    remote: &RemoteArgs,
    token: Option<&Secret>,
) -> anyhow::Result<FleetView> {
    let r = with_token(http.get(remote.url("/v1/fleet")), token)
        .send()
        .await
        .context("GET /v1/fleet")?;
    Ok(check(r, "fleet view").await?.json().await?)
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Signed bundle tar.gz.
    pub bundle: PathBuf,
    /// Bundle name on the server.
    #[arg(long, default_value = "main")]
    pub name: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Who publishes (recorded in the history; default $USER).
    #[arg(long)]
    pub actor: Option<String>,
    /// Wait until every reporting instance runs the new revision.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit 1).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Token used to read the fleet view while waiting (default: the publish token).
    #[arg(long)]
    pub view_token_file: Option<PathBuf>,
}

pub fn actor(a: Option<&str>) -> String {
    a.map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "lockstep-cli".into())
}

pub fn run(a: &PublishArgs) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&a.bundle).with_context(|| format!("reading {}", a.bundle.display()))?;
    let token = a.remote.token()?;
    let view_token = match &a.view_token_file {
        Some(f) => Some(
            TokenSource {
                file: Some(f.clone()),
                ..TokenSource::default()
            }
            .load()?,
        ),
        None => token.clone(),
    };
    runtime()?.block_on(async {
        let http = client(&a.remote)?;
        let started = Instant::now();
        let r = with_token(
            http.put(a.remote.url(&format!("/bundles/{}", a.name))),
            token.as_ref(),
        )
        .header("x-lockstep-actor", actor(a.actor.as_deref()))
        .body(bytes)
        .send()
        .await
        .context("PUT bundle")?;
        let resp: PublishResponse = check(r, "publish").await?.json().await?;
        if resp.unchanged {
            println!(
                "{}: revision {} is already active (seq {})",
                resp.bundle, resp.revision, resp.seq
            );
        } else {
            println!(
                "{}: published revision {} (id {}, seq {}){}",
                resp.bundle,
                resp.revision,
                short(&resp.id),
                resp.seq,
                resp.previous_revision
                    .as_deref()
                    .map(|p| format!(", was {p}"))
                    .unwrap_or_default()
            );
        }
        if !a.wait {
            return Ok(ExitCode::SUCCESS);
        }
        wait_for_convergence(
            &http,
            &a.remote,
            view_token.as_ref(),
            &resp,
            started,
            Duration::from_secs(a.timeout),
        )
        .await
    })
}

pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Polls the fleet view until every reachable instance reporting the bundle runs the
/// published revision; prints the convergence time.
pub async fn wait_for_convergence(
    http: &reqwest::Client,
    remote: &RemoteArgs,
    token: Option<&Secret>,
    resp: &PublishResponse,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} instances on {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(resp.revision.clone());
    loop {
        let fleet = fetch_fleet(http, remote, token).await?;
        let b: Option<&BundleView> = fleet.bundles.iter().find(|b| b.name == resp.bundle);
        if let Some(b) = b {
            let reachable: Vec<_> = b.instances.iter().filter(|i| !i.unreachable).collect();
            let on_it = reachable
                .iter()
                .filter(|i| i.active_revision.as_deref() == Some(resp.revision.as_str()))
                .count();
            bar.set_length(reachable.len() as u64);
            bar.set_position(on_it as u64);
            if b.desired_id.as_deref() != Some(resp.id.as_str()) {
                bar.abandon();
                bail!(
                    "a newer publication ({}) replaced {} while waiting",
                    b.desired_revision.as_deref().unwrap_or("?"),
                    resp.revision
                );
            }
            if reachable.is_empty() {
                bar.finish_and_clear();
                println!(
                    "no instance reports bundle {}; nothing to wait for",
                    resp.bundle
                );
                return Ok(ExitCode::SUCCESS);
            }
            if on_it == reachable.len() {
                bar.finish_and_clear();
                let measured = b
                    .publications
                    .iter()
                    .find(|p| p.id == resp.id && p.seq == resp.seq)
                    .and_then(|p| p.convergence_seconds);
                match measured {
                    Some(s) => println!(
                        "converged: {} instances on {} in {s:.3} s after publication",
                        reachable.len(),
                        resp.revision
                    ),
                    None => println!(
                        "converged: {} instances on {} ({:.1} s after the upload started)",
                        reachable.len(),
                        resp.revision,
                        started.elapsed().as_secs_f64()
                    ),
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
        if started.elapsed() >= timeout {
            bar.abandon();
            eprintln!(
                "timed out after {} s: not every instance runs {}",
                timeout.as_secs(),
                resp.revision
            );
            if let Some(b) = b {
                for i in b.instances.iter().filter(|i| i.drift) {
                    eprintln!(
                        "  {} on {}{}",
                        i.id,
                        i.active_revision.as_deref().unwrap_or("(none)"),
                        if i.unreachable { " (unreachable)" } else { "" }
                    );
                }
            }
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
