//! The dashboard page in a real browser: headless Chromium loads `/` (token in the
//! `#token=` fragment), runs the page's script against `/v1/fleet`, and the test reads the
//! resulting DOM (`--dump-dom`) and takes a screenshot (`--screenshot`, saved as
//! `<target>/test-output/dashboard.png`).
//!
//! Chromium is `/usr/bin/chromium` (Debian package `chromium`; `LOCKSTEP_CHROMIUM` names
//! another binary). Without it the test fails, unless `LOCKSTEP_SKIP_BROWSER=1`.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one Chromium run may take before its process group is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from(
        std::env::var("LOCKSTEP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("LOCKSTEP_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED: {} not found and LOCKSTEP_SKIP_BROWSER=1",
            path.display()
        );
        return None;
    }
    panic!(
        "{} not found: the dashboard test needs headless Chromium. Install it with \
         `apt-get install -y chromium` (Debian), point LOCKSTEP_CHROMIUM at a Chromium binary, \
         or set LOCKSTEP_SKIP_BROWSER=1 to skip this test",
        path.display()
    );
}

/// Runs headless Chromium with `args` + `url` in its own process group, with a fresh
/// profile; kills the whole group when it exits or after [`BROWSER_TIMEOUT`].
fn run_chromium(bin: &Path, args: &[String], url: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--virtual-time-budget=5000")
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        // Files, not pipes: a renderer that outlives the browser cannot keep a pipe open.
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let pgid = child.id();
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The browser's helpers (zygote, renderer, utility processes) share its group.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let stdout = std::fs::read(&stdout_path).unwrap();
    let stderr = std::fs::read(&stderr_path).unwrap();
    let Some(status) = status else {
        panic!(
            "chromium did not finish within {BROWSER_TIMEOUT:?} (killed); stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        );
    };
    assert!(
        status.success(),
        "chromium exited with {status}; stderr:\n{}",
        String::from_utf8_lossy(&stderr)
    );
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The text of an HTML fragment: tags removed, the few entities the page escapes decoded.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

/// The contents of each `<open ...>...</close>` element in `html` (not nested ones),
/// with the opening tag's attributes.
fn elements<'a>(html: &'a str, tag: &str) -> Vec<(&'a str, &'a str)> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        // `<th` must not match `<thead`.
        if !after.starts_with(['>', ' ']) {
            rest = after;
            continue;
        }
        let gt = after.find('>').unwrap();
        let attrs = &after[..gt];
        let body_start = &after[gt + 1..];
        let end = body_start.find(&close).unwrap_or(body_start.len());
        out.push((attrs, &body_start[..end]));
        rest = &body_start[end..];
    }
    out
}

/// One row of the instance table: id, the revision column marked ●, the row's class.
#[derive(Debug)]
struct Row {
    id: String,
    revision: String,
    class: String,
    behind_for: String,
}

/// Reads the instance table of bundle `bundle` (the first table after its `<h2>`).
fn instance_table(dom: &str, bundle: &str) -> (String, Vec<Row>) {
    let h2 = elements(dom, "h2")
        .into_iter()
        .find(|(_, body)| text(body).starts_with(&format!("{bundle} ")))
        .unwrap_or_else(|| panic!("no <h2> for bundle {bundle} in the DOM:\n{dom}"));
    let heading = text(h2.1);
    let after = &dom[dom.find(h2.1).unwrap()..];
    let table = elements(after, "table")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no instance table after the {bundle} heading:\n{dom}"))
        .1;
    let trs = elements(table, "tr");
    let headers: Vec<String> = elements(trs[0].1, "th")
        .into_iter()
        .map(|(_, b)| text(b))
        .collect();
    assert_eq!(headers[0], "instance", "{headers:?}");
    let mut rows = Vec::new();
    for (attrs, body) in &trs[1..] {
        let cells: Vec<String> = elements(body, "td")
            .into_iter()
            .map(|(_, b)| text(b))
            .collect();
        assert_eq!(cells.len(), headers.len(), "{headers:?} {cells:?}");
        let marked: Vec<&String> = (1..headers.len())
            .filter(|&c| cells[c] == "●")
            .map(|c| &headers[c])
            .collect();
        assert_eq!(marked.len(), 1, "one revision per instance: {cells:?}");
        let behind = headers.iter().position(|h| h == "behind for").unwrap();
        let class = attrs
            .split("class=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("")
            .to_string();
        rows.push(Row {
            id: cells[0].clone(),
            revision: marked[0].trim_end_matches(" (desired)").to_string(),
            class,
            behind_for: cells[behind].clone(),
        });
    }
    (heading, rows)
}

fn output_dir() -> PathBuf {
    // <target>/tmp is CARGO_TARGET_TMPDIR; the screenshot goes to <target>/test-output.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_page_in_headless_chromium() {
    let Some(bin) = chromium() else { return };
    let h = TestServer::start().await;
    assert_eq!(
        h.publish("main", bundle("r1", 1000, Some(&h.keys)))
            .await
            .status(),
        201
    );
    assert_eq!(
        h.publish("main", bundle("r2", 2000, Some(&h.keys)))
            .await
            .status(),
        201
    );
    assert_eq!(
        h.report(&opa_status("opa-current", "main", "r2"))
            .await
            .status(),
        200
    );
    assert_eq!(
        h.report(&opa_status("opa-behind", "main", "r1"))
            .await
            .status(),
        200
    );
    let url = format!("{}/#token={STATUS}", h.base);

    // 1. The DOM after the page's script has drawn the fleet.
    let dom = {
        let (bin, url) = (bin.clone(), url.clone());
        tokio::task::spawn_blocking(move || run_chromium(&bin, &["--dump-dom".into()], &url))
            .await
            .unwrap()
    };
    let dom = String::from_utf8(dom.stdout).unwrap();
    assert!(
        dom.contains("<h1>lockstep fleet</h1>"),
        "not the dashboard:\n{dom}"
    );
    let err = elements(&dom, "div")
        .into_iter()
        .find(|(a, _)| a.contains("id=\"err\""))
        .map(|(_, b)| text(b))
        .unwrap_or_default();
    assert_eq!(err, "", "the page reported an error");
    let (heading, rows) = instance_table(&dom, "main");
    assert!(
        heading.contains("desired r2") && heading.contains("1/2 current"),
        "{heading}"
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let current = rows.iter().find(|r| r.id == "opa-current").unwrap();
    let behind = rows.iter().find(|r| r.id == "opa-behind").unwrap();
    assert_eq!(current.revision, "r2", "{rows:?}");
    assert_eq!(current.class, "ok", "{rows:?}");
    assert_eq!(current.behind_for, "", "{rows:?}");
    assert_eq!(behind.revision, "r1", "{rows:?}");
    assert_eq!(behind.class, "behind", "drifting row not marked: {rows:?}");
    assert!(behind.behind_for.ends_with(" s"), "{rows:?}");

    // 2. A screenshot of the same page.
    let png = output_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    {
        let (bin, url, png) = (bin.clone(), url.clone(), png.clone());
        tokio::task::spawn_blocking(move || {
            run_chromium(
                &bin,
                &[
                    format!("--screenshot={}", png.display()),
                    "--window-size=1280,900".into(),
                ],
                &url,
            )
        })
        .await
        .unwrap();
    }
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 900));
    // A blank 1280×900 page compresses to a few KB; text, tables and colours do not.
    assert!(
        bytes.len() > 20_000,
        "screenshot suspiciously small: {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {} ({} bytes)", png.display(), bytes.len());
    h.shutdown().await;
}
