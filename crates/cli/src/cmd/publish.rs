//! `lockstep publish`: upload a signed bundle to a lockstep server, optionally waiting
//! until every reporting instance runs it (progress bar, convergence time).
//! Also holds the HTTP client pieces `rollback` and `drift` share.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use lockstep_server::auth::{Secret, TokenSource};
use lockstep_server::fleet::BundleView;
use lockstep_server::publish::PublishResponse;

use crate::remote::{RemoteArgs, actor, client, fetch_fleet, published, put_bundle, runtime};

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
    /// With --wait: also wait until at least this many instances report the bundle (a
    /// deployment gate must not pass because no instance has reported yet).
    #[arg(long, default_value_t = 0, requires = "wait")]
    pub min_instances: usize,
    /// Give up waiting after this many seconds (exit 1).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Token used to read the fleet view while waiting (default: the publish token).
    #[arg(long)]
    pub view_token_file: Option<PathBuf>,
    /// Synchronized cut-over: announce the activation instant this far ahead of the
    /// commit (`500ms`, `2s`), so every instance prepares the revision first and all
    /// switch at that instant; `0` activates on arrival. Default: the server's
    /// `cutover` setting for the bundle.
    #[arg(long, value_parser = parse_cutover)]
    pub cutover: Option<Duration>,
}

fn parse_cutover(s: &str) -> Result<Duration, String> {
    lockstep_sync::opa_config::values::parse_duration(
        &serde_json::Value::String(s.into()),
        "--cutover",
    )
    .map_err(|e| e.to_string())
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
        let resp = put_bundle(
            &http,
            &a.remote.url(&match a.cutover {
                Some(d) => format!("/bundles/{}?cutover_ms={}", a.name, d.as_millis()),
                None => format!("/bundles/{}", a.name),
            }),
            token.as_ref(),
            &actor(a.actor.as_deref()),
            bytes,
        )
        .await?;
        if resp.unchanged {
            println!(
                "{}: revision {} is already active (seq {})",
                resp.bundle, resp.revision, resp.seq
            );
        } else {
            println!("{}", published("published", &resp));
            if let Some(at) = resp.activate_at {
                println!(
                    "  announced cut-over: instances switch at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                );
            }
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
            a.min_instances,
        )
        .await
    })
}

/// What a cut-over's summary says, in one line.
fn cutover_line(c: &lockstep_server::fleet::CutoverSummary) -> String {
    let mut line = match c.spread_ms {
        Some(ms) => format!(
            "cut-over: {} instances switched within {ms:.1} ms of each other",
            c.activated
        ),
        None => "cut-over: no instance reported its switch instant".to_string(),
    };
    if !c.late.is_empty() {
        line.push_str(&format!(
            "; late (not ready in time): {}",
            c.late.join(", ")
        ));
    }
    if !c.never_prepared.is_empty() {
        line.push_str(&format!(
            "; never prepared: {}",
            c.never_prepared.join(", ")
        ));
    }
    if !c.clock_uncertain.is_empty() {
        line.push_str(&format!(
            "; clock offset too uncertain: {}",
            c.clock_uncertain.join(", ")
        ));
    }
    line
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
    min_instances: usize,
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
            if reachable.is_empty() && min_instances == 0 {
                bar.finish_and_clear();
                println!(
                    "no instance reports bundle {}; nothing to wait for",
                    resp.bundle
                );
                return Ok(ExitCode::SUCCESS);
            }
            if on_it == reachable.len() && on_it >= min_instances.max(1) {
                bar.finish_and_clear();
                let publication = b
                    .publications
                    .iter()
                    .find(|p| p.id == resp.id && p.seq == resp.seq);
                let measured = publication.and_then(|p| p.convergence_seconds);
                if let Some(c) = publication.and_then(|p| p.cutover.as_ref()) {
                    println!("{}", cutover_line(c));
                }
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
                "timed out after {} s: not every instance runs {}{}",
                timeout.as_secs(),
                resp.revision,
                if min_instances > 0 {
                    format!(" (or fewer than --min-instances {min_instances} report)")
                } else {
                    String::new()
                }
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
