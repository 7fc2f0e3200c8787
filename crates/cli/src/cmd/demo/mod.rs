//! `lockstep demo`: the guide's story in one command, on embedded defaults, everything
//! on 127.0.0.1 and in this process. Policies are tested, built and signed (v1 and the
//! guide's patch, v2); a bundle server starts on a folder store; six gateways, each in
//! front of its own MCP tool server, load v1: three long-poll the server, three poll
//! on a timer the way the guide configures OPA. An analyst agent calls tools through
//! all of them; v2 is published, its switch announced 500 ms ahead (synchronized
//! cut-over), while every gateway is being called, and each one's switch is timed; then one long-polling gateway is cut off from the server and
//! denies once its lease runs out. Everything started is stopped at the end (or at
//! Ctrl-C with `--keep`).

mod bundles;
mod display;
mod fleet;
mod probe;
mod relay;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lockstep_gateway::denial::POLICY_UNAVAILABLE;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use self::bundles::{Prepared, V1, V2};
use self::display::Display;
use self::fleet::{ANALYST_KEY, Fleet, MAX_STALENESS, Mode, POLL_MAX_SECONDS, POLL_MIN_SECONDS};
use self::probe::{Answer, Call, Caller};
use crate::cli::{DemoArgs, Format};
use crate::remote::put_bundle;

pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    let out = Display::new(args.format == Format::Json);
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let Some(prepared) = bundles::prepare(&dir, &out)? else {
        return Ok(ExitCode::from(1));
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let facts = rt.block_on(story(&dir, &prepared, &out, args.keep));
    out.finish();
    let facts = facts?;
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&facts)?);
    } else {
        println!(
            "demo complete: {}",
            if args.dir.is_some() {
                format!("files kept in {}", dir.display())
            } else {
                "temporary files removed".to_string()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts the fleet, tells the story, stops the fleet (after Ctrl-C with `keep`).
async fn story(dir: &Path, p: &Prepared, out: &Display, keep: bool) -> Result<Value> {
    let home = dir.join("fleet");
    if home.exists() {
        std::fs::remove_dir_all(&home)
            .with_context(|| format!("clearing {} from an earlier run", home.display()))?;
    }
    std::fs::create_dir_all(&home)?;
    let mut fleet = Fleet::start_server(&home, &p.public_pem).await?;
    let facts = chapters(&home, p, out, &mut fleet).await;
    if keep && facts.is_ok() {
        out.working("running until Ctrl-C");
        println!(
            "fleet page: {}/  (drift view: lockstep drift --server {})",
            fleet.base, fleet.base
        );
        for i in &fleet.instances {
            println!("  {:<11} {}  (analyst key {ANALYST_KEY})", i.name, i.url);
        }
        println!("press Ctrl-C to stop everything");
        super::agent::shutdown_signal().await;
    }
    out.working("stopping the fleet");
    fleet.shutdown().await;
    facts
}

async fn chapters(home: &Path, p: &Prepared, out: &Display, fleet: &mut Fleet) -> Result<Value> {
    let started = Instant::now();
    let http = reqwest::Client::new();
    let bundle_url = format!("{}/bundles/main", fleet.base);

    out.working("starting the bundle server and publishing v1");
    let v1 = put_bundle(
        &http,
        &bundle_url,
        Some(fleet.token()),
        "demo",
        p.v1.clone(),
    )
    .await?;
    out.line(format!(
        "6. lockstep server on {} (folder store {}): published {} (seq {})",
        fleet.base,
        home.join("store").display(),
        v1.revision,
        v1.seq
    ));

    out.working("starting six gateways and their MCP servers");
    for i in 1..=3 {
        fleet
            .add(
                home,
                &format!("lockstep-{i}"),
                Mode::LongPolling,
                &p.public_pem,
            )
            .await?;
    }
    for i in 1..=3 {
        fleet
            .add(home, &format!("polling-{i}"), Mode::Polling, &p.public_pem)
            .await?;
    }
    fleet.ready(Duration::from_secs(20)).await?;
    out.line(format!(
        "7. six MCP gateways, each in front of its own MCP server, all on {V1}:\n   \
         lockstep-1..3 long-poll the server (max_staleness {} s);\n   \
         polling-1..3 poll every {POLL_MIN_SECONDS}-{POLL_MAX_SECONDS} s, the guide's OPA setting \
         (30-120 s) ten times faster",
        MAX_STALENESS.as_secs()
    ));

    let caller = Caller::new(ANALYST_KEY)?;
    let v1_calls = calls_everywhere(&caller, fleet, &Call::ALL).await?;
    out.line("8. the analyst agent calls three tools through every gateway:");
    let v1_identical = report_calls(out, &v1_calls);

    out.line(format!(
        "9. publishing {V2} (the guide's patch: analysts lose run_query), its switch announced \
         {} ms ahead, while every gateway is called with run_query:",
        CUTOVER.as_millis()
    ));
    let switch = switch_over(&http, &bundle_url, fleet, &caller, p, out).await?;
    let window = |mode: Mode| -> (u64, u64) {
        // In whole milliseconds first, so the window is the spread of the times shown.
        let times: Vec<u64> = switch
            .times
            .iter()
            .zip(&fleet.instances)
            .filter(|(_, i)| i.mode == mode)
            .map(|(t, _)| ms(*t))
            .collect();
        let first = times.iter().min().copied().unwrap_or_default();
        let last = times.iter().max().copied().unwrap_or_default();
        (last - first, last)
    };
    let (lockstep_window, lockstep_last) = window(Mode::LongPolling);
    let (polling_window, polling_last) = window(Mode::Polling);
    out.line(format!(
        "   drift window: lockstep {lockstep_window} ms (all three on {V2} {lockstep_last} ms after \
         the publish started); polling {polling_window} ms (last {:.1} s after)",
        polling_last as f64 / 1000.0
    ));
    // The callers see a switch one call late; the gateways record the swap itself.
    let recorded = recorded_swaps(&http, fleet).await;
    let swaps = recorded.as_ref().map(|r| r.spread_us);
    if let Some(r) = &recorded {
        let when = if r.late.is_empty() {
            "at the announced instant".to_string()
        } else {
            format!("{} not ready by the instant (late)", r.late.join(", "))
        };
        out.line(format!(
            "   as the gateways recorded it: lockstep-1..3 swapped within {:.3} ms of each other, \
             {when}",
            r.spread_us as f64 / 1000.0
        ));
    }

    let v2_calls = calls_everywhere(&caller, fleet, &[Call::RunQuery, Call::ReadDatabase]).await?;
    out.line(format!("10. the same calls under {V2}:"));
    report_calls(out, &v2_calls);
    let run_query_denied_everywhere = v2_calls
        .iter()
        .filter(|c| c.call == Call::RunQuery.tool())
        .all(|c| !c.answer.allowed && c.answer.revision.as_deref() == Some(V2));

    let cutoff = cut_off(fleet, &caller, out).await?;

    Ok(json!({
        "server": fleet.base,
        "fleet_page": format!("{}/", fleet.base),
        "instances": fleet.instances.iter().map(|i| json!({
            "name": i.name, "mode": i.mode.as_str(), "url": i.url,
        })).collect::<Vec<_>>(),
        "v1": {
            "revision": V1,
            "decisions": v1_calls,
            "identical": v1_identical,
        },
        "v2": {
            "revision": V2,
            "change": "analysts lose run_query",
            "publish_ms": ms(switch.publish),
            "cutover_ms": ms(CUTOVER),
            "switches": switch.times.iter().zip(&fleet.instances).map(|(t, i)| json!({
                "instance": i.name, "mode": i.mode.as_str(), "after_publish_ms": ms(*t),
            })).collect::<Vec<_>>(),
            "drift_window_ms": lockstep_window,
            "recorded_swap_spread_us": swaps,
            "late_for_the_instant": recorded.as_ref().map(|r| r.late.clone()),
            "last_after_publish_ms": lockstep_last,
            "decisions": v2_calls,
            "run_query_denied_everywhere": run_query_denied_everywhere,
        },
        "polling": {
            "min_delay_seconds": POLL_MIN_SECONDS,
            "max_delay_seconds": POLL_MAX_SECONDS,
            "scaled_from": "the guide's opa-config.yaml: min_delay_seconds 30, max_delay_seconds 120",
            "drift_window_ms": polling_window,
            "last_after_publish_ms": polling_last,
        },
        "cutoff": cutoff,
        "elapsed_ms": ms(started.elapsed()),
    }))
}

/// The long-polling gateways' swaps to v2, as each recorded it in its status.
struct Swaps {
    /// Microseconds between the first and the last.
    spread_us: i64,
    /// Those that were not ready by the announced instant.
    late: Vec<String>,
}

/// [`Swaps`] from the fleet view; `None` if the gateways have not all reported their
/// swap within 5 s.
async fn recorded_swaps(http: &reqwest::Client, fleet: &Fleet) -> Option<Swaps> {
    let names: Vec<&str> = fleet
        .instances
        .iter()
        .filter(|i| i.mode == Mode::LongPolling)
        .map(|i| i.name.as_str())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let view: Option<lockstep_server::fleet::FleetView> =
            match http.get(format!("{}/v1/fleet", fleet.base)).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
        let swaps: Vec<(String, i64, bool)> = view
            .iter()
            .flat_map(|v| v.bundles.iter())
            .flat_map(|b| b.instances.iter())
            .filter(|i| names.contains(&i.id.as_str()))
            .filter_map(|i| {
                let c = i.cutover.as_ref().filter(|c| c.revision == V2)?;
                Some((i.id.clone(), c.activated_at?.timestamp_micros(), c.late))
            })
            .collect();
        if swaps.len() == names.len() {
            let first = swaps.iter().map(|s| s.1).min()?;
            let last = swaps.iter().map(|s| s.1).max()?;
            return Some(Swaps {
                spread_us: last - first,
                late: swaps.into_iter().filter(|s| s.2).map(|s| s.0).collect(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// How far ahead v2's switch is announced: time for three gateways on a laptop to
/// prepare it.
const CUTOVER: Duration = Duration::from_millis(500);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(serde::Serialize)]
struct Decided {
    instance: String,
    call: &'static str,
    #[serde(flatten)]
    answer: Answer,
}

/// Every call of `calls` through every gateway.
async fn calls_everywhere(caller: &Caller, fleet: &Fleet, calls: &[Call]) -> Result<Vec<Decided>> {
    let mut all = Vec::new();
    for &call in calls {
        for i in &fleet.instances {
            all.push(Decided {
                instance: i.name.clone(),
                call: call.tool(),
                answer: caller.call(&i.url, call).await?,
            });
        }
    }
    Ok(all)
}

/// One line per call: the same answer on every instance, or each instance's. True when
/// every call got the same answer everywhere.
fn report_calls(out: &Display, decided: &[Decided]) -> bool {
    let mut identical = true;
    let mut tools: Vec<&str> = decided.iter().map(|d| d.call).collect();
    tools.dedup();
    for tool in tools {
        let answers: Vec<&Decided> = decided.iter().filter(|d| d.call == tool).collect();
        let Some(first) = answers.first() else {
            continue;
        };
        if answers.iter().all(|d| d.answer == first.answer) {
            out.line(format!(
                "   analyst {tool:<15} {:<5} on all {} ({})",
                first.answer.verdict(),
                answers.len(),
                first.answer.revision.as_deref().unwrap_or("no revision"),
            ));
            if let Some(r) = first
                .answer
                .reason
                .as_deref()
                .filter(|_| !first.answer.allowed)
            {
                out.line(format!("           reason: {r}"));
            }
        } else {
            identical = false;
            for d in answers {
                out.line(format!(
                    "   analyst {tool:<15} {:<11} {}",
                    d.instance,
                    d.answer.summary()
                ));
            }
        }
    }
    identical
}

struct Switch {
    /// How long the publish request took.
    publish: Duration,
    /// Per instance (fleet order): from the start of the publish to the first call
    /// that instance answered by v2.
    times: Vec<Duration>,
}

/// Publishes v2 while every instance is called with `run_query` (long-polling ones
/// back to back, polling ones every 20 ms), and times each one's first answer by v2.
async fn switch_over(
    http: &reqwest::Client,
    bundle_url: &str,
    fleet: &Fleet,
    caller: &Caller,
    p: &Prepared,
    out: &Display,
) -> Result<Switch> {
    let names: Vec<String> = fleet.instances.iter().map(|i| i.name.clone()).collect();
    let table = out.table(&names);
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Result<Instant>)>();
    let mut probes = Vec::new();
    for (idx, inst) in fleet.instances.iter().enumerate() {
        let (caller, url, tx) = (caller.clone(), inst.url.clone(), tx.clone());
        let pause = match inst.mode {
            Mode::LongPolling => Duration::from_millis(1),
            Mode::Polling => Duration::from_millis(20),
        };
        probes.push(tokio::spawn(async move {
            loop {
                match caller.call(&url, Call::RunQuery).await {
                    Ok(a) if a.revision.as_deref() == Some(V2) => {
                        let _ = tx.send((idx, Ok(Instant::now())));
                        return;
                    }
                    Ok(_) => tokio::time::sleep(pause).await,
                    Err(e) => {
                        let _ = tx.send((idx, Err(e)));
                        return;
                    }
                }
            }
        }));
        table.update(
            idx,
            format!("{V1}  {:<12} run_query ALLOW", inst.mode.as_str()),
        );
    }
    drop(tx);
    let t0 = Instant::now();
    // Announced CUTOVER ahead: the long-polling three prepare v2 on arrival and switch at
    // the same instant (synchronized cut-over); the polling three get it later and
    // switch on arrival.
    let announced = format!("{bundle_url}?cutover_ms={}", CUTOVER.as_millis());
    let published = put_bundle(http, &announced, Some(fleet.token()), "demo", p.v2.clone()).await;
    let publish = t0.elapsed();
    if let Err(e) = published {
        probes.iter().for_each(tokio::task::JoinHandle::abort);
        return Err(e);
    }
    let deadline = t0 + Duration::from_secs(POLL_MAX_SECONDS * 2 + 10);
    let mut times: Vec<Option<Duration>> = vec![None; fleet.instances.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while times.iter().any(Option::is_none) {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some((idx, Ok(at))) => {
                    let t = at.saturating_duration_since(t0);
                    if let Some(slot) = times.get_mut(idx) {
                        *slot = Some(t);
                    }
                    let mode = fleet.instances.get(idx).map_or("", |i| i.mode.as_str());
                    table.done(idx, format!("{V2}  {mode:<12} run_query DENY  after {} ms", ms(t)));
                }
                Some((idx, Err(e))) => {
                    probes.iter().for_each(tokio::task::JoinHandle::abort);
                    let name = names.get(idx).map_or("?", String::as_str);
                    return Err(e.context(format!("{name} stopped answering")));
                }
                None => break,
            },
            _ = tick.tick() => {
                if Instant::now() > deadline {
                    probes.iter().for_each(tokio::task::JoinHandle::abort);
                    bail!("not every gateway switched to {V2} within {:?}", deadline - t0);
                }
                for (idx, t) in times.iter().enumerate() {
                    if t.is_none() {
                        let mode = fleet.instances.get(idx).map_or("", |i| i.mode.as_str());
                        table.update(idx, format!(
                            "{V1}  {mode:<12} run_query ALLOW  still, {:.1} s after the publish",
                            t0.elapsed().as_secs_f64()
                        ));
                    }
                }
            }
        }
    }
    let times = times
        .into_iter()
        .map(|t| t.context("a probe ended without an answer by v2"))
        .collect::<Result<Vec<_>>>()?;
    Ok(Switch { publish, times })
}

/// Cuts `lockstep-3` off from the server and calls `read_database` through it until it
/// fails closed; the other long-polling gateways keep allowing it.
async fn cut_off(fleet: &Fleet, caller: &Caller, out: &Display) -> Result<Value> {
    let victim = fleet
        .instances
        .iter()
        .rev()
        .find(|i| i.mode == Mode::LongPolling)
        .context("no long-polling gateway")?;
    let before = caller.call(&victim.url, Call::ReadDatabase).await?;
    if !before.allowed {
        bail!(
            "{} denied read_database before the cut-off: {before:?}",
            victim.name
        );
    }
    out.line(format!(
        "11. {} is cut off from the bundle server (its connections closed, new ones refused):",
        victim.name
    ));
    out.working(format!(
        "calling read_database through {} until it fails closed",
        victim.name
    ));
    let cut = Instant::now();
    victim.cut_off();
    let deadline = cut + MAX_STALENESS * 5;
    let denied = loop {
        let a = caller.call(&victim.url, Call::ReadDatabase).await?;
        if !a.allowed {
            break a;
        }
        if Instant::now() > deadline {
            bail!(
                "{} still allowed read_database {deadline:?} after the cut-off",
                victim.name
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let after = cut.elapsed();
    let reason = denied.reason.clone().unwrap_or_default();
    out.line(format!(
        "   {} denies read_database {} ms after the cut-off (max_staleness {} s), \
         code {}: {reason}",
        victim.name,
        ms(after),
        MAX_STALENESS.as_secs(),
        denied.code.unwrap_or_default(),
    ));
    let mut others_allow = true;
    for i in fleet
        .instances
        .iter()
        .filter(|i| i.mode == Mode::LongPolling && i.name != victim.name)
    {
        let a = caller.call(&i.url, Call::ReadDatabase).await?;
        others_allow &= a.allowed;
        out.line(format!("   {:<11} read_database {}", i.name, a.summary()));
    }
    Ok(json!({
        "instance": victim.name,
        "max_staleness_ms": ms(MAX_STALENESS),
        "denied_after_ms": ms(after),
        "stale_denial": denied.code == Some(POLICY_UNAVAILABLE),
        "code": denied.code,
        "reason": reason,
        "others_still_allow": others_allow,
    }))
}
