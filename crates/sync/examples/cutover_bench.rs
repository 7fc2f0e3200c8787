//! Synchronized cut-over, measured (BENCHMARKS.md I): N sync engines (what every agent
//! and gateway runs) long-poll one lockstep server in this process; a revision with
//! `--data-bytes` of data is published announced `--announce-ms` ahead, then another
//! with cut-over off. A probe thread reads each engine's active revision in a tight
//! loop; the spread is the last minus the first engine seen on the new revision.
//!
//! ```text
//! cargo run --release -p lockstep-sync --example cutover_bench -- \
//!     --instances 10,100 --announce-ms 500,3000 --data-bytes 1048576 --rounds 3
//! ```
//!
//! `--announce-ms` pairs with `--instances` (one value applies to all): on 2 cores, 100
//! engines preparing 1 MB each need seconds, and an instant they cannot meet makes
//! them late, which the output says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use lockstep_sync::clock::now_us;
use lockstep_testkit::cutover::{Fleet, Probe, cutover_of, first_on, micros, spread_ms};
use lockstep_testkit::prelude::{bundle_with_data, eventually};

fn list(flag: &str, default: &str) -> Vec<u64> {
    let args: Vec<String> = std::env::args().collect();
    let v = args
        .iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str);
    v.split(',').map(|x| x.trim().parse().unwrap()).collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let instances = list("--instances", "10,100");
    let announce = list("--announce-ms", "500,3000");
    let data = list("--data-bytes", "1048576")[0] as usize;
    let rounds = list("--rounds", "3")[0];
    println!(
        "cut-over spread: {} KiB of data per revision, {rounds} rounds each",
        data / 1024
    );
    for (k, n) in instances.iter().enumerate() {
        let n = *n as usize;
        let ahead = *announce.get(k).unwrap_or(&announce[0]);
        let f = Fleet::start(n, data).await;
        let keys = f.server.keys.clone();
        let mut iat = 2000;
        for round in 0..rounds {
            // On: announced `ahead` ms after the commit.
            iat += 1;
            let rev = format!("on{iat}");
            let probe = Probe::start(&f.instances);
            let t0 = now_us();
            let published = f
                .server
                .publish_cutover(
                    "main",
                    bundle_with_data(&rev, iat, Some(&keys), data),
                    ahead,
                )
                .await;
            let at = micros(&published["activate_at"]);
            f.wait_all_on(&rev, Duration::from_secs(300)).await;
            let on = first_on(&probe.finish_on(&rev), &rev);
            let prepared: Vec<i64> = f
                .instances
                .iter()
                .map(|s| micros(&cutover_of(s)["prepared_at"]))
                .collect();
            let late = f
                .instances
                .iter()
                .filter(|s| cutover_of(s)["late"] == true)
                .count();
            let last_ready_ms = (prepared.iter().max().unwrap() - t0) as f64 / 1e3;
            // Seen on the new revision before the instant less that instance's clock
            // uncertainty (what the acceptance forbids); and the swaps as recorded.
            let early = f
                .instances
                .iter()
                .zip(&on)
                .filter(|(s, t)| {
                    let unc = (cutover_of(s)["clock_uncertainty_ms"]
                        .as_f64()
                        .unwrap_or(0.0)
                        * 1e3) as i64;
                    **t < at - unc
                })
                .count();
            let recorded = eventually(Duration::from_secs(30), || {
                f.instances
                    .iter()
                    .all(|s| cutover_of(s)["activated_at"].is_string())
            })
            .await;
            assert!(recorded);
            let swaps: Vec<i64> = f
                .instances
                .iter()
                .map(|s| micros(&cutover_of(s)["activated_at"]))
                .collect();

            // Off: each engine switches when it is ready.
            iat += 1;
            let rev = format!("off{iat}");
            let probe = Probe::start(&f.instances);
            let t0 = now_us();
            f.server
                .publish_cutover("main", bundle_with_data(&rev, iat, Some(&keys), data), 0)
                .await;
            f.wait_all_on(&rev, Duration::from_secs(300)).await;
            let off = first_on(&probe.finish_on(&rev), &rev);
            println!(
                "  {n:>3} instances, round {round}: ON (announced {ahead} ms ahead) spread {:.3} ms (probe), {:.3} ms (recorded swaps), late {late}/{n}, early {early}, last ready {last_ready_ms:.0} ms after the PUT | OFF spread {:.1} ms (first switch {:.0} ms, last {:.0} ms after the PUT)",
                spread_ms(&on),
                spread_ms(&swaps),
                spread_ms(&off),
                (off.iter().min().unwrap() - t0) as f64 / 1e3,
                (off.iter().max().unwrap() - t0) as f64 / 1e3,
            );
        }
        f.stop().await;
    }
}
