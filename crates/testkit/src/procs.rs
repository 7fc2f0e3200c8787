//! Child processes a test starts: each in its own process group, stopped (TERM, then
//! KILL for the whole group) when its guard is dropped, so no peer outlives a test.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A started process group; dropping it stops the whole group.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
}

impl Proc {
    fn signal_group(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        if self.running() {
            self.signal_group("TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Also reaches workers or children that outlived the leader.
        self.signal_group("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped {} (process group {pid})", self.name);
    }
}

/// Starts `cmd` in a new process group with stdout and stderr to `log`.
pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc { name, child }
}

/// Runs `cmd` to completion; `Err` has its output.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().map_err(|e| anyhow::anyhow!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Waits (blocking) until `log` has a line starting with `prefix`, and returns that
/// line; panics with the log after `within`. For peers that announce `READY …`.
pub fn wait_for_line(log: &Path, prefix: &str, what: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.starts_with(prefix)) {
            return l.to_string();
        }
        assert!(Instant::now() < deadline, "{what} never ready:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
