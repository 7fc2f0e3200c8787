//! `lockstep rollback NAME --to REVISION --reason "..."`: re-activate a kept revision.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lockstep_server::publish::{PublishResponse, RollbackRequest};

use super::publish::{RemoteArgs, actor, check, client, runtime, short, with_token};

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Bundle name.
    pub name: String,
    /// Manifest revision (or content id) of a kept revision.
    #[arg(long = "to")]
    pub to: String,
    /// Why (recorded in the history; required).
    #[arg(long)]
    pub reason: String,
    /// Who (default $USER).
    #[arg(long)]
    pub actor: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(a: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let token = a.remote.token()?;
    runtime()?.block_on(async {
        let http = client(&a.remote)?;
        let body = RollbackRequest {
            revision: a.to.clone(),
            reason: a.reason.clone(),
            actor: Some(actor(a.actor.as_deref())),
        };
        let r = with_token(
            http.post(a.remote.url(&format!("/bundles/{}/rollback", a.name))),
            token.as_ref(),
        )
        .json(&body)
        .send()
        .await
        .context("POST rollback")?;
        let resp: PublishResponse = check(r, "rollback").await?.json().await?;
        println!(
            "{}: rolled back to revision {} (id {}, seq {}){}",
            resp.bundle,
            resp.revision,
            short(&resp.id),
            resp.seq,
            resp.previous_revision
                .as_deref()
                .map(|p| format!(", was {p}"))
                .unwrap_or_default()
        );
        Ok(ExitCode::SUCCESS)
    })
}
