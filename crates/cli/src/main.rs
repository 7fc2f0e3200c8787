//! `lockstep`: the command-line front of every part.
//!
//! Owns argument parsing, reading files named on the command line, exit codes and
//! human-readable output. Must not hold logic a library crate should own: bundle rules
//! live in `lockstep-bundle`, Rego in `lockstep-policy`.
#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod git;
mod remote;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // The demo's own story says what its warnings would (a gateway it cut off from the
    // server, keys it made for the run); everything else logs warnings.
    let default_level = match args.command {
        cli::Command::Demo(_) => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    match cmd::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
