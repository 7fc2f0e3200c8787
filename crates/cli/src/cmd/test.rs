//! `lockstep test`: `opa test` on the regorus-based runner.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lockstep_policy::testing::{ExitPolicy, TestOptions, run_tests};
use regex::Regex;

use crate::cli::{Format, TestArgs};
use crate::cmd::load::load_sources;

pub fn run(args: &TestArgs) -> Result<ExitCode> {
    let bundle = load_sources(&args.paths, &args.ignore)?;
    let run = match &args.run {
        Some(re) => Some(
            Regex::new(re)
                .with_context(|| format!("--run {re:?} is not a valid regular expression"))?,
        ),
        None => None,
    };
    let opts = TestOptions {
        run,
        ..TestOptions::default()
    };
    let report = match run_tests(&bundle.modules, &bundle.data, &opts) {
        Ok(r) => r,
        Err(err) => {
            // As `opa test`: a policy that does not compile runs no test, exit 1.
            eprintln!("{err}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", report.to_json())?,
        Format::Pretty => report.write_pretty(&mut out, args.verbose)?,
    }
    let (code, message) = report.exit_code(&ExitPolicy::default());
    if let Some(m) = message {
        eprintln!("{m}");
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
