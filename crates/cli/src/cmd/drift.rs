//! `lockstep drift --server URL`: the fleet table; exit 1 when any instance drifts or is
//! unreachable, 0 when every instance is current.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use lockstep_server::fleet::FleetView;

use crate::cli::Format;
use crate::remote::{RemoteArgs, client, fetch_fleet, runtime};

#[derive(Debug, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Only this bundle.
    #[arg(long)]
    pub bundle: Option<String>,
    #[arg(long, value_enum, default_value = "pretty")]
    pub format: Format,
    /// Also exit 1 when fewer than this many reachable instances run a bundle's
    /// published revision (so a gate cannot pass on an empty fleet).
    #[arg(long, default_value_t = 0)]
    pub min_instances: usize,
}

fn dur(s: f64) -> String {
    let s = s.max(0.0);
    if s < 120.0 {
        format!("{s:.0}s")
    } else if s < 7200.0 {
        format!("{:.0}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

/// The table, one line per instance and bundle.
pub fn render(view: &FleetView) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "BUNDLE".into(),
        "INSTANCE".into(),
        "ACTIVE".into(),
        "DESIRED".into(),
        "STATE".into(),
        "BEHIND".into(),
        "LAST REPORT".into(),
    ]];
    for b in &view.bundles {
        let desired = b.desired_revision.clone().unwrap_or_else(|| "-".into());
        if b.instances.is_empty() {
            rows.push([
                b.name.clone(),
                "(no instance reports)".into(),
                "-".into(),
                desired.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for i in &b.instances {
            let state = if i.unreachable {
                "UNREACHABLE"
            } else if i.current {
                "current"
            } else {
                "DRIFT"
            };
            let mut state = state.to_string();
            if let Some(m) = i.message.as_deref().filter(|m| !m.is_empty()) {
                let _ = write!(state, " ({m})");
            }
            rows.push([
                b.name.clone(),
                i.id.clone(),
                i.active_revision.clone().unwrap_or_else(|| "-".into()),
                desired.clone(),
                state,
                match (i.current, i.lag_seconds) {
                    (false, Some(l)) => dur(l),
                    _ => "-".into(),
                },
                format!("{} ago", dur(i.seconds_since_report)),
            ]);
        }
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, w) in r.iter().zip(widths.iter()) {
            let _ = write!(line, "{c:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let (mut drifting, mut unreachable, mut total) = (0, 0, 0);
    for b in &view.bundles {
        drifting += b
            .instances
            .iter()
            .filter(|i| i.drift && !i.unreachable)
            .count();
        unreachable += b.instances_unreachable;
        total += b.instances_total;
    }
    let _ = writeln!(
        out,
        "{total} instance(s): {drifting} drifting, {unreachable} unreachable"
    );
    out
}

pub fn run(a: &DriftArgs) -> anyhow::Result<ExitCode> {
    let token = a.remote.token()?;
    let mut view = runtime()?.block_on(async {
        let http = client(&a.remote)?;
        fetch_fleet(&http, &a.remote, token.as_ref()).await
    })?;
    if let Some(name) = &a.bundle {
        view.bundles.retain(|b| &b.name == name);
        view.drift = view
            .bundles
            .iter()
            .any(|b| b.instances_drifting > 0 || b.instances_unreachable > 0);
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Format::Pretty => print!("{}", render(&view)),
    }
    let mut short = false;
    if a.min_instances > 0 {
        if view.bundles.is_empty() {
            eprintln!("no bundle to check (--min-instances {})", a.min_instances);
            short = true;
        }
        for b in &view.bundles {
            let current = b
                .instances
                .iter()
                .filter(|i| !i.unreachable && !i.drift)
                .count();
            if current < a.min_instances {
                eprintln!(
                    "bundle {}: {current} instances run the published revision, fewer than --min-instances {}",
                    b.name, a.min_instances
                );
                short = true;
            }
        }
    }
    Ok(if view.drift || short {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_drift_and_unreachable() {
        let view: FleetView = serde_json::from_value(serde_json::json!({
            "generated_at": "2026-01-01T00:00:00Z",
            "unreachable_after_seconds": 300,
            "drift": true,
            "instances": [
                {"id": "a", "labels": {"app": "x"}, "last_report": "2026-01-01T00:00:00Z", "seconds_since_report": 3.0, "unreachable": false},
                {"id": "b", "labels": {}, "last_report": "2026-01-01T00:00:00Z", "seconds_since_report": 1.0, "unreachable": false},
                {"id": "c", "labels": {}, "last_report": "2026-01-01T00:00:00Z", "seconds_since_report": 900.0, "unreachable": true}
            ],
            "bundles": [{
                "name": "main", "desired_revision": "r2", "desired_id": "ab", "desired_since": "2026-01-01T00:00:00Z",
                "instances_total": 3, "instances_current": 1, "instances_drifting": 2, "instances_unreachable": 1,
                "converged": false, "publications": [],
                "instances": [
                    {"id": "a", "active_revision": "r2", "current": true, "drift": false, "unreachable": false,
                     "lag_seconds": 0.0, "last_report": "2026-01-01T00:00:00Z", "seconds_since_report": 3.0},
                    {"id": "b", "active_revision": "r1", "current": false, "drift": true, "unreachable": false,
                     "lag_seconds": 600.0, "last_report": "2026-01-01T00:00:00Z", "seconds_since_report": 1.0,
                     "message": "server replied with Not Found"},
                    {"id": "c", "active_revision": "r2", "current": true, "drift": true, "unreachable": true,
                     "lag_seconds": 0.0, "last_report": "2026-01-01T00:00:00Z", "seconds_since_report": 900.0}
                ]
            }]
        }))
        .unwrap();
        let t = render(&view);
        assert!(
            t.contains("b         r1      r2       DRIFT (server replied with Not Found)  10m"),
            "{t}"
        );
        assert!(t.contains("UNREACHABLE"), "{t}");
        assert!(
            t.ends_with("3 instance(s): 1 drifting, 1 unreachable\n"),
            "{t}"
        );
    }
}
