//! The guides' commands, run as a reader would run them: every ```` ```sh exercised ````
//! block of a guide in `docs/`, in order, as one bash script (`set -euo pipefail`) in an
//! empty directory holding `./policies` (a copy of `examples/policies`), with the
//! `lockstep` under test first on PATH. Background servers a guide starts are stopped
//! with its process group.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lockstep_testkit::prelude::*;

const LOCKSTEP: &str = env!("CARGO_BIN_EXE_lockstep");

/// The `sh exercised` blocks of a markdown text, in order.
fn exercised_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```sh exercised") => {
                current = Some(String::new());
            }
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an `sh exercised` block is not closed");
    blocks
}

/// Guides use the documented default ports (8282, 8181): one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the guide `name` (in `docs/`); panics with its output when a command fails.
fn run_guide(name: &str) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = std::fs::read_to_string(repo_root().join("docs").join(name)).unwrap();
    let blocks = exercised_blocks(&text);
    assert!(!blocks.is_empty(), "{name} has no `sh exercised` block");
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(
        &repo_root().join("examples/policies"),
        &tmp.path().join("policies"),
    );
    let script = tmp.path().join("guide.sh");
    std::fs::write(
        &script,
        format!(
            "set -euo pipefail\n{}\necho GUIDE-DONE\n",
            blocks.join("\n")
        ),
    )
    .unwrap();
    let bin_dir = Path::new(LOCKSTEP).parent().unwrap();
    let log = tmp.path().join("guide.log");
    let mut proc = spawn(
        "guide script",
        Command::new("bash")
            .arg(&script)
            .current_dir(tmp.path())
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            )
            .env_remove("LOCKSTEP_TOKEN")
            .env_remove("LOCKSTEP_SERVER"),
        &log,
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: still running after 120 s:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success() && out.contains("GUIDE-DONE"),
        "{name} failed ({status}):\n{out}"
    );
    // Dropping the guard stops what the guide left running in the background.
    drop(proc);
}

#[test]
fn exercised_blocks_are_found_in_order() {
    let md = "text\n```sh exercised\necho one\n```\n```yaml\nx: 1\n```\n```sh exercised\necho two\n```\n";
    assert_eq!(exercised_blocks(md), ["echo one\n", "echo two\n"]);
}

#[test]
fn migrating_from_opa_and_s3() {
    run_guide("migrate-from-opa.md");
}

#[test]
fn writing_policies_for_the_gateway() {
    run_guide("policy-authors.md");
}

#[test]
fn operating_a_fleet() {
    run_guide("operator-guide.md");
}
