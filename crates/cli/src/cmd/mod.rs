//! One handler per subcommand. Each returns the process exit code; `Err` means the
//! command could not run at all (exit 2), a refusal it was asked to detect is exit 1.

pub mod agent;
mod build;
mod demo;
pub mod drift;
mod eval;
pub mod gateway;
mod inspect;
mod keygen;
mod load;
pub mod publish;
pub mod rollback;
pub mod server;
mod sign;
mod test;
mod verify;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Test(a) => test::run(&a),
        Command::Build(a) => build::run(&a),
        Command::Sign(a) => sign::run(&a),
        Command::Verify(a) => verify::run(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Keygen(a) => keygen::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Server(a) => server::run(&a),
        Command::Publish(a) => publish::run(&a),
        Command::Rollback(a) => rollback::run(&a),
        Command::Drift(a) => drift::run(&a),
        Command::Agent(a) => agent::run(&a),
        Command::Gateway(a) => gateway::run(&a),
    }
}
