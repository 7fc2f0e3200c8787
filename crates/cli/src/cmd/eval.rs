//! `lockstep eval`: a small `opa eval` for debugging one decision.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use lockstep_policy::{CompileOptions, PolicySet};
use serde_json::Value;

use crate::cli::{EvalArgs, Format};
use crate::cmd::load::{load_sources, read_document};

pub fn run(args: &EvalArgs) -> Result<ExitCode> {
    let bundle = load_sources(&args.data, &[])?;
    let policy = PolicySet::compile(&bundle.modules, bundle.data, &CompileOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();

    if let Some(lines) = &args.input_lines {
        // Batch mode: one compact result per input line, for scripts and differential tests.
        let file =
            std::fs::File::open(lines).with_context(|| format!("reading {}", lines.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let input: Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not JSON", lines.display(), n + 1))?;
            let rs = policy
                .eval_query(&args.query, Some(&input))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            writeln!(out, "{}", rs.to_eval_output())?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let input = args.input.as_deref().map(read_document).transpose()?;
    let rs = policy
        .eval_query(&args.query, input.as_ref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let allowed =
        rs.0.first()
            .and_then(|r| r.expressions.first())
            .is_some_and(|e| e.value == Value::Bool(true));
    match args.format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rs.to_eval_output())?
        )?,
        Format::Pretty => match rs.clone().into_first_value() {
            Some(v) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
            None => writeln!(out, "undefined")?,
        },
    }
    Ok(if args.fail_defined_false && !allowed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
