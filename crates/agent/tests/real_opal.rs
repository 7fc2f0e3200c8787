//! The real OPAL (PyPI `opal-server` and `opal-client` 0.9.9, inline OPA off, policy
//! store URL = the agent) delivers policy and data from a local git repo into an agent
//! that has no bundle configured, and decisions follow the repo's commits: a policy
//! change (one module rewritten, one with a `/` in its id updated, one deleted) and then
//! a `data.json` change. Everything binds 127.0.0.1; every process the test starts runs
//! in its own process group, which a Drop guard stops (SIGTERM, then SIGKILL), also when
//! the test panics.
//!
//! The Python venv lives in `<target>/py-opal` and is created on first run
//! (`pip install --no-deps -r tests/opal-requirements.txt`, under a minute), under a lock so
//! that two test runs do not build it at once. Without network the install fails and so
//! does the test, unless `LOCKSTEP_SKIP_OPAL=1` is set.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lockstep_agent::RunningAgent;
use lockstep_sync::SyncConfig;
use serde_json::{Value, json};

const OPAL_VERSION: &str = "0.9.9";

/// How long each OPAL step (startup, a commit reaching the agent) may take.
const STEP: Duration = Duration::from_secs(60);

fn main_policy(version: &str) -> String {
    format!(
        r#"package app.authz

policy_version := "{version}"

default allow := false

allow if {{
    some role in data.roles[input.user]
    role in data.app.lib.allowed_roles
}}
"#
    )
}

fn roles_lib(roles: &str) -> String {
    format!("package app.lib\n\nallowed_roles := {roles}\n")
}

const LEGACY: &str = "package app.legacy\n\nlegacy := true\n";

/// The venv with OPAL's server and client (`<target>/py-opal`). The pinned set
/// (tests/opal-requirements.txt) skips pip's resolver, which takes minutes on OPAL's
/// dependency tree; a resolved install is the fallback.
fn venv_spec() -> VenvSpec<'static> {
    static PINNED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    static PACKAGES: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    static CHECK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static PACKAGE_REFS: std::sync::OnceLock<[&'static str; 2]> = std::sync::OnceLock::new();
    let packages = PACKAGES.get_or_init(|| {
        [
            format!("opal-server=={OPAL_VERSION}"),
            format!("opal-client=={OPAL_VERSION}"),
        ]
    });
    VenvSpec {
        name: "opal",
        pinned: Some(PINNED.get_or_init(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opal-requirements.txt")
        })),
        packages: PACKAGE_REFS.get_or_init(|| [packages[0].as_str(), packages[1].as_str()]),
        bins: &["opal-server", "opal-client"],
        check: CHECK.get_or_init(|| {
            format!(
                "import importlib.metadata as m, opal_server, opal_client; \
                 assert m.version('opal-server') == m.version('opal-client') == '{OPAL_VERSION}'"
            )
        }),
    }
}

/// Runs git in `repo` without the user's configuration; returns stdout.
fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=lockstep-test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn commit(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"]).trim().to_string()
}

fn write(repo: &Path, file: &str, text: &str) {
    let p = repo.join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The last 60 lines of each OPAL log, for failure messages.
fn logs(dir: &Path) -> String {
    ["opal-server.log", "opal-client.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            format!("\n--- {f} (tail)\n{tail}")
        })
        .collect()
}

/// `POST /v1/data/app/authz` with `{"input": {"user": user}}`: (status, body).
async fn authz(http: &reqwest::Client, agent: &RunningAgent, user: &str) -> (u16, Value) {
    let r = http
        .post(url(agent, "/v1/data/app/authz"))
        .json(&json!({"input": {"user": user}}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    match http.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn policy_ids(http: &reqwest::Client, agent: &RunningAgent) -> Vec<String> {
    let (s, b) = get_json(http, &url(agent, "/v1/policies")).await;
    assert_eq!(s, 200, "{b}");
    let mut ids: Vec<String> = b["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort_unstable();
    ids
}

/// Polls `check` every 100 ms until it returns `Ok`; panics with the last `Err` (and
/// the OPAL logs) after [`STEP`].
async fn eventually<F, Fut>(what: &str, dir: &Path, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let t0 = Instant::now();
    loop {
        match check().await {
            Ok(()) => return t0.elapsed(),
            Err(last) => {
                if t0.elapsed() > STEP {
                    panic!("{what}: not within {STEP:?}; last: {last}{}", logs(dir));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(policy_version, allow)` for `user`, or why there is none yet.
async fn decision(
    http: &reqwest::Client,
    agent: &RunningAgent,
    user: &str,
) -> Result<(String, bool), String> {
    let (s, b) = authz(http, agent, user).await;
    if s != 200 {
        return Err(format!("{s} {b}"));
    }
    match (
        b["result"]["policy_version"].as_str(),
        b["result"]["allow"].as_bool(),
    ) {
        (Some(v), Some(a)) => Ok((v.to_string(), a)),
        _ => Err(b.to_string()),
    }
}

fn expect(got: Result<(String, bool), String>, want: (&str, bool)) -> Result<(), String> {
    match got {
        Ok((v, a)) if v == want.0 && a == want.1 => Ok(()),
        Ok(other) => Err(format!("decision {other:?}, want {want:?}")),
        Err(e) => Err(e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opal_delivers_git_policy_and_data_changes_into_the_agent() {
    let t0 = Instant::now();
    if std::env::var("LOCKSTEP_SKIP_OPAL").as_deref() == Ok("1") {
        eprintln!("LOCKSTEP_SKIP_OPAL=1: skipping the real OPAL test");
        return;
    }
    let spec = venv_spec();
    let venv = tokio::task::block_in_place(|| spec.ensure()).unwrap_or_else(|e| {
        panic!(
            "could not install opal-server=={OPAL_VERSION} and opal-client=={OPAL_VERSION} \
             into {} (no network?); set LOCKSTEP_SKIP_OPAL=1 to skip this test.\n{e}",
            spec.dir().display()
        )
    });
    eprintln!("venv ready in {:?}", t0.elapsed());

    // The agent: no bundle configured, so OPAL's writes are its only source.
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut sync = SyncConfig::new(Vec::new(), work.join("persist"));
    sync.labels.insert("id".into(), "real-opal-agent".into());
    let agent = lockstep_agent::start(agent_config(sync, Some(&work.join("decisions.jsonl"))))
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Empty before OPAL: no modules, the package is undefined (200 without `result`).
    assert!(policy_ids(&http, &agent).await.is_empty());
    let (s, b) = authz(&http, &agent, "alice").await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("result").is_none(), "{b}");

    // The policy repo: branch master, Rego at the root and in subdirectories, data.json
    // at the root (OPAL writes it to the whole data document: PUT /v1/data).
    let repo = work.join("policy-repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "master"]);
    write(&repo, "policy.rego", &main_policy("v1"));
    write(&repo, "lib/roles.rego", &roles_lib(r#"{"admin"}"#));
    write(&repo, "legacy/old.rego", LEGACY);
    write(
        &repo,
        "data.json",
        &json!({"roles": {"alice": ["admin"], "bob": ["viewer"]}}).to_string(),
    );
    let c1 = commit(&repo, "initial");

    let (srv_port, cli_port) = (free_port(), free_port());
    let base_env = |cmd: &mut Command| {
        // OPAL settings of the caller's environment must not leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OPAL_") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(work)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("OPAL_LOG_COLORIZE", "false")
            // ddtrace is imported (APM off) and would still send traces and telemetry
            // to localhost:8126.
            .env("DD_TRACE_ENABLED", "false")
            .env("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
            .env("DD_REMOTE_CONFIGURATION_ENABLED", "false")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
    };
    let mut server_cmd = Command::new(venv.join("bin/opal-server"));
    base_env(&mut server_cmd);
    server_cmd
        .arg("run")
        .env("OPAL_SERVER_HOST", "127.0.0.1")
        .env("OPAL_SERVER_BIND_PORT", srv_port.to_string())
        .env("OPAL_SERVER_WORKER_COUNT", "1")
        .env("OPAL_POLICY_REPO_URL", format!("file://{}", repo.display()))
        .env("OPAL_POLICY_REPO_MAIN_BRANCH", "master")
        .env("OPAL_POLICY_REPO_POLLING_INTERVAL", "1")
        .env("OPAL_POLICY_REPO_CLONE_PATH", work.join("server-clones"))
        .env("OPAL_LEADER_LOCK_FILE_PATH", work.join("leader.lock"))
        .env("OPAL_AUTH_JWKS_STATIC_DIR", work.join("jwks"))
        // The default data source (served by opal-server itself, `{}`) would be written
        // to the root of data, racing the repo's root data.json; give it its own path.
        .env(
            "OPAL_DATA_CONFIG_SOURCES",
            json!({"config": {"entries": [{
                "url": format!("http://127.0.0.1:{srv_port}/policy-data"),
                "topics": ["policy_data"],
                "dst_path": "/opal_source",
            }]}})
            .to_string(),
        );
    let server = spawn(
        "opal-server",
        &mut server_cmd,
        &work.join("opal-server.log"),
    );
    let took = eventually("opal-server serves GET /policy", work, || {
        let http = http.clone();
        async move {
            match get_json(&http, &format!("http://127.0.0.1:{srv_port}/policy?path=.")).await {
                (200, _) => Ok(()),
                (s, b) => Err(format!("{s} {b}")),
            }
        }
    })
    .await;
    eprintln!("opal-server serving bundles after {took:?}");

    let mut client_cmd = Command::new(venv.join("bin/opal-client"));
    base_env(&mut client_cmd);
    client_cmd
        .arg("run")
        .env("OPAL_SERVER_URL", format!("http://127.0.0.1:{srv_port}"))
        .env("OPAL_INLINE_OPA_ENABLED", "false")
        .env("OPAL_POLICY_STORE_URL", format!("http://{}", agent.addr))
        .env("OPAL_CLIENT_API_SERVER_HOST", "127.0.0.1")
        .env("OPAL_CLIENT_API_SERVER_PORT", cli_port.to_string())
        .env("OPAL_CLIENT_API_SERVER_WORKER_COUNT", "1")
        .env("OPAL_STORE_BACKUP_PATH", work.join("backup/opa.json"))
        // OPAL's own `package system.opal` module, rewritten after every transaction.
        .env("OPAL_OPA_HEALTH_CHECK_POLICY_ENABLED", "true");
    let client = spawn(
        "opal-client",
        &mut client_cmd,
        &work.join("opal-client.log"),
    );

    // 1. Initial sync: three modules (two ids with '/'), the root data, OPAL's health
    //    module; alice (admin) allowed, bob (viewer) not.
    let (h, ag) = (&http, &agent);
    let took = eventually(
        "initial policy and data in the agent",
        work,
        || async move {
            expect(decision(h, ag, "alice").await, ("v1", true))?;
            expect(decision(h, ag, "bob").await, ("v1", false))
        },
    )
    .await;
    eprintln!("initial sync in the agent {took:?} after opal-client started");
    let ids = policy_ids(&http, &agent).await;
    for id in ["policy.rego", "lib/roles.rego", "legacy/old.rego"] {
        assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
    }
    let (s, b) = get_json(&http, &url(&agent, "/v1/policies/lib/roles.rego")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["raw"], roles_lib(r#"{"admin"}"#));
    let (_, b) = get_json(&http, &url(&agent, "/v1/data/roles")).await;
    assert_eq!(
        b["result"],
        json!({"alice": ["admin"], "bob": ["viewer"]}),
        "{b}"
    );
    // OPAL's client considers every write accepted: ready (a policy and a data
    // transaction succeeded) and healthy (the last of each succeeded, /health answers).
    eventually("opal-client /ready and /healthy", work, || {
        let http = http.clone();
        async move {
            for ep in ["ready", "healthy"] {
                let (s, b) = get_json(&http, &format!("http://127.0.0.1:{cli_port}/{ep}")).await;
                if s != 200 {
                    return Err(format!("/{ep}: {s} {b}"));
                }
            }
            Ok(())
        }
    })
    .await;
    // Its health module reached the agent and names the commit the agent holds.
    let c1 = &c1;
    eventually(
        "system.opal names the initial commit",
        work,
        || async move {
            let (s, b) = get_json(h, &url(ag, "/v1/data/system/opal")).await;
            match (
                s,
                &b["result"]["ready"],
                &b["result"]["last_policy_transaction"]["id"],
            ) {
                (200, Value::Bool(true), Value::String(id)) if id == c1 => Ok(()),
                _ => Err(format!("{s} {b}")),
            }
        },
    )
    .await;

    // 2. A policy change: the main module rewritten, the library (id with '/') now
    //    allows editors too, a module deleted.
    write(&repo, "policy.rego", &main_policy("v2"));
    write(
        &repo,
        "lib/roles.rego",
        &roles_lib(r#"{"admin", "editor"}"#),
    );
    std::fs::remove_file(repo.join("legacy/old.rego")).unwrap();
    let t_commit = Instant::now();
    let c2 = commit(&repo, "policy: editors may act; drop legacy");
    let took = eventually("policy change in the agent", work, || async move {
        expect(decision(h, ag, "alice").await, ("v2", true))?;
        expect(decision(h, ag, "bob").await, ("v2", false))?;
        let ids = policy_ids(h, ag).await;
        if ids.iter().any(|i| i == "legacy/old.rego") {
            return Err(format!("legacy/old.rego still there: {ids:?}"));
        }
        Ok(())
    })
    .await;
    eprintln!("policy commit {c2:.8} → decision changed after {took:?}");
    assert!(t_commit.elapsed() < STEP);
    let (s, b) = get_json(&http, &url(&agent, "/v1/data/app/legacy")).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("result").is_none(), "{b}");

    // 3. A data change: bob becomes an editor, which the new policy allows.
    write(
        &repo,
        "data.json",
        &json!({"roles": {"alice": ["admin"], "bob": ["editor"]}}).to_string(),
    );
    let c3 = commit(&repo, "data: bob is an editor");
    let took = eventually("data change in the agent", work, || async move {
        expect(decision(h, ag, "bob").await, ("v2", true))?;
        expect(decision(h, ag, "carol").await, ("v2", false))
    })
    .await;
    eprintln!("data commit {c3:.8} → decision changed after {took:?}");
    let (_, b) = get_json(&http, &url(&agent, "/v1/data/roles/bob")).await;
    assert_eq!(b["result"], json!(["editor"]), "{b}");
    let c3 = &c3;
    eventually("system.opal names the last commit", work, || async move {
        let (s, b) = get_json(h, &url(ag, "/v1/data/system/opal")).await;
        match &b["result"]["last_policy_transaction"]["id"] {
            Value::String(id) if id == c3 => Ok(()),
            _ => Err(format!("{s} {b}")),
        }
    })
    .await;
    // No write was refused along the way: OPAL counted no failed transaction.
    let (_, b) = get_json(&http, &url(&agent, "/v1/data/system/opal")).await;
    let o = &b["result"];
    assert_eq!(o["healthy"], true, "{b}");
    assert_eq!(o["transaction_policy_statistics"]["failed"], 0, "{b}");
    assert_eq!(o["transaction_data_statistics"]["failed"], 0, "{b}");
    assert!(
        o["transaction_policy_statistics"]["successful"]
            .as_u64()
            .is_some_and(|n| n >= 3),
        "{b}"
    );

    // The decisions were logged with the agent's labels.
    drop(client);
    drop(server);
    agent.shutdown().await.unwrap();
    let lines = std::fs::read_to_string(work.join("decisions.jsonl")).unwrap();
    let last = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .rfind(|e| e["input"]["user"] == "bob")
        .expect("a decision for bob");
    assert_eq!(last["result"]["allow"], true);
    assert_eq!(last["labels"]["id"], "real-opal-agent");
    eprintln!("done in {:?}", t0.elapsed());
}
