//! `lockstep rollback NAME --to REVISION --reason "..."`: re-activate a kept revision.
//!
//! Two ways, because lockstep agents refuse a bundle signed before the active one
//! (rollback protection: a replayed old bundle is how an attacker re-opens a hole):
//! - without a key, the server re-activates the kept bytes. Vanilla OPA takes them;
//!   lockstep agents refuse them (older `iat`), keep the current revision, stay fresh
//!   and report `bundle_rollback_refused` (the fleet view shows them refusing the
//!   rollback); the server's answer carries a warning, printed here.
//! - with `--signing-key`, the kept revision is fetched, verified against that same key
//!   (we only re-sign what we signed), re-signed with a fresh issue time and published
//!   as an explicit rollback: every instance, lockstep agents included, activates it.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lockstep_server::publish::{PublishResponse, RollbackRequest};

use crate::remote::{RemoteArgs, actor, check, client, published, runtime, short, with_token};

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
    /// Re-sign the kept revision with this key (fresh `iat`) so lockstep agents accept it.
    #[command(flatten)]
    pub signing: crate::cli::SigningArgs,
}

pub fn run(a: &RollbackArgs) -> anyhow::Result<ExitCode> {
    if a.signing.signing_key.is_some() {
        return resign(a);
    }
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
        println!("{}", published("rolled back to", &resp));
        if let Some(w) = &resp.warning {
            eprintln!("warning: {w}");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The re-signing rollback: fetch, verify with our own key, re-sign, publish.
fn resign(a: &RollbackArgs) -> anyhow::Result<ExitCode> {
    use lockstep_bundle::{
        KeyConfig, ReadOptions, VerificationConfig, read_tar_gz, sign_bundle, write_tar_gz,
    };
    let cfg = crate::cmd::load::signing_config(&a.signing)?.context("--signing-key")?;
    anyhow::ensure!(
        a.signing.claims_file.is_none(),
        "--claims-file is not used by rollback"
    );
    let token = a.remote.token()?;
    runtime()?.block_on(async {
        let http = client(&a.remote)?;
        let r = with_token(
            http.get(a.remote.url(&format!("/bundles/{}/revisions/{}", a.name, a.to))),
            token.as_ref(),
        )
        .send()
        .await
        .context("GET kept revision")?;
        let bytes = check(r, "fetching the kept revision").await?.bytes().await?;

        // Verify with the public half of the key we are about to sign with.
        let key_material = String::from_utf8(lockstep_bundle::keys::resolve_key_value(&cfg.key)?)
            .context("signing key is not text")?;
        let alg = if cfg.alg.is_empty() { "RS256".to_string() } else { cfg.alg.clone() };
        let public = if alg.starts_with("HS") {
            key_material.clone()
        } else {
            lockstep_bundle::keys::public_key_pem(&key_material)?
        };
        let verification = VerificationConfig {
            keys: [("self".to_string(), KeyConfig { key: public, algorithm: alg, scope: cfg.scope.clone() })].into(),
            key_id: Some("self".to_string()),
            scope: cfg.scope.clone(),
            ..VerificationConfig::default()
        };
        let opts = ReadOptions { verification: Some(verification), lazy_data: true, ..ReadOptions::default() };
        let mut bundle = read_tar_gz(&bytes[..], &opts).map_err(|e| {
            anyhow::anyhow!("kept revision {:?} does not verify with this signing key, refusing to re-sign it: {e}", a.to)
        })?;
        sign_bundle(&mut bundle, &cfg)?;
        let body = write_tar_gz(&bundle, Vec::new())?;
        let r = with_token(http.put(a.remote.url(&format!("/bundles/{}", a.name))), token.as_ref())
            .query(&[
                ("rollback", "true"),
                ("reason", a.reason.as_str()),
                ("actor", actor(a.actor.as_deref()).as_str()),
            ])
            .body(body)
            .send()
            .await
            .context("PUT re-signed revision")?;
        let resp: PublishResponse = check(r, "publishing the re-signed revision").await?.json().await?;
        println!(
            "{}: rolled back to revision {} re-signed now (id {}, seq {}){}",
            resp.bundle,
            resp.revision,
            short(&resp.id),
            resp.seq,
            resp.previous_revision.as_deref().map(|p| format!(", was {p}")).unwrap_or_default()
        );
        Ok(ExitCode::SUCCESS)
    })
}
