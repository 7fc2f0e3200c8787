//! What `deploy/` ships, run here where it can be: no container engine runs on this
//! machine, so the compose fleet runs as processes on 127.0.0.1 from its own files
//! (container paths and service names rewritten, nothing else), set up by its own
//! `setup.sh`, fed by the GitHub Actions workflow's own `run:` steps; and every config
//! the Kubernetes manifests carry is parsed by the parser that would read it.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

const LOCKSTEP: &str = env!("CARGO_BIN_EXE_lockstep");

/// `text` with each `(from, to)` replaced, in order; every `from` must occur.
fn localize(text: &str, map: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in map {
        assert!(out.contains(from), "{from:?} not in:\n{out}");
        out = out.replace(from, to);
    }
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The analyst's key from the API key file `setup.sh` wrote.
fn analyst_key(secrets: &Path) -> String {
    let keys: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&secrets.join("api-keys.yaml"))).unwrap();
    keys["keys"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|k| k["role"].as_str() == Some("analyst"))
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs the `run:` steps of `job` in the workflow, as a push to main would, in `work`:
/// steps that `uses:` an action or install lockstep are skipped (the binary under test
/// is on PATH), `${{ secrets.* }}` / `${{ vars.* }}` come from `context`.
fn run_workflow_job(
    workflow: &serde_yaml_ng::Value,
    job: &str,
    work: &Path,
    context: &BTreeMap<String, String>,
) -> Vec<String> {
    let steps = workflow["jobs"][job]["steps"]
        .as_sequence()
        .unwrap_or_else(|| panic!("workflow has no job {job}"));
    let bin_dir = Path::new(LOCKSTEP).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let mut ran = Vec::new();
    for step in steps {
        let name = step["name"].as_str().unwrap_or("(unnamed)").to_string();
        let Some(script) = step["run"].as_str() else {
            continue;
        };
        if name.starts_with("Install lockstep") {
            assert!(script.contains("cargo install --locked --git"), "{script}");
            continue;
        }
        let mut cmd = Command::new("bash");
        cmd.arg("-eo")
            .arg("pipefail")
            .arg("-c")
            .arg(script)
            .current_dir(work)
            .env("PATH", &path)
            .env("GITHUB_SHA", &context["GITHUB_SHA"])
            .env("GITHUB_ACTOR", "ci-bot");
        if let Some(env) = step["env"].as_mapping() {
            for (k, v) in env {
                let v = v.as_str().unwrap();
                let key = v
                    .trim()
                    .strip_prefix("${{")
                    .and_then(|r| r.strip_suffix("}}"))
                    .map(str::trim)
                    .unwrap_or_else(|| panic!("step {name:?}: env {v:?} is not an expression"));
                let value = context
                    .get(key)
                    .unwrap_or_else(|| panic!("step {name:?} needs {key}, which the test lacks"));
                cmd.env(k.as_str().unwrap(), value);
            }
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "workflow step {job}/{name:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran.push(name);
    }
    ran
}

struct Gateway {
    url: String,
    name: String,
    _proc: Proc,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_fleet_runs_from_its_own_files_and_the_workflow_deploys_to_it() {
    let Some(venv) = mcp_venv() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // All of deploy/: compose.yaml and setup.sh reach the shipped rules and dashboard.
    copy_dir(&repo_root().join("deploy"), &tmp.path().join("deploy"));
    let compose = tmp.path().join("deploy/compose");
    std::fs::remove_dir_all(compose.join("secrets")).ok();
    run(Command::new(compose.join("setup.sh"))
        .arg(repo_root().join("examples/policies"))
        .env("LOCKSTEP", LOCKSTEP))
    .unwrap();
    let secrets = compose.join("secrets");
    let secret_dir = format!("{}/", secrets.display());
    let server_port = free_port();

    let server_yaml = tmp.path().join("server.yaml");
    std::fs::write(
        &server_yaml,
        localize(
            &read(&compose.join("server.yaml")),
            &[
                ("0.0.0.0:8282", format!("127.0.0.1:{server_port}")),
                (
                    "/var/lib/lockstep",
                    tmp.path().join("server-state").display().to_string(),
                ),
                ("/etc/lockstep/", secret_dir.clone()),
                ("/run/secrets/", secret_dir.clone()),
            ],
        ),
    )
    .unwrap();
    let server_log = tmp.path().join("server.log");
    let _server = spawn(
        "lockstep server",
        Command::new(LOCKSTEP)
            .args(["server", "--config"])
            .arg(&server_yaml),
        &server_log,
    );
    wait_for_line(
        &server_log,
        "lockstep server listening",
        "the bundle server",
        Duration::from_secs(20),
    );

    let mut gateways = Vec::new();
    let mut upstreams = Vec::new();
    for x in ["a", "b", "c"] {
        let mcp_log = tmp.path().join(format!("mcp-{x}.log"));
        let mcp = spawn(
            "compose mcp-server",
            Command::new(venv.join("bin/python"))
                .arg(compose.join("mcp-server/server.py"))
                .args(["--port", "0", "--name", &format!("mcp-{x}")]),
            &mcp_log,
        );
        let ready = wait_for_line(&mcp_log, "READY", "the MCP server", Duration::from_secs(30));
        let mcp_port = ready.split_whitespace().nth(1).unwrap().to_string();
        upstreams.push(mcp);

        let port = free_port();
        let yaml = tmp.path().join(format!("gateway-{x}.yaml"));
        std::fs::write(
            &yaml,
            localize(
                &read(&compose.join(format!("gateway-{x}.yaml"))),
                &[
                    ("0.0.0.0:8383", format!("127.0.0.1:{port}")),
                    (
                        &format!("http://mcp-{x}:8000/mcp"),
                        format!("http://127.0.0.1:{mcp_port}/mcp"),
                    ),
                    (
                        "http://bundle-server:8282",
                        format!("http://127.0.0.1:{server_port}"),
                    ),
                    (
                        "/var/lib/lockstep",
                        tmp.path().join(format!("gw-{x}")).display().to_string(),
                    ),
                    (
                        "/run/secrets/api-keys",
                        format!("{secret_dir}api-keys.yaml"),
                    ),
                    ("/run/secrets/", secret_dir.clone()),
                    ("/etc/lockstep/", secret_dir.clone()),
                ],
            ),
        )
        .unwrap();
        let log = tmp.path().join(format!("gateway-{x}.log"));
        let proc = spawn(
            "lockstep gateway",
            Command::new(LOCKSTEP)
                .args(["gateway", "--config"])
                .arg(&yaml),
            &log,
        );
        wait_for_line(
            &log,
            "lockstep gateway listening",
            "a gateway",
            Duration::from_secs(20),
        );
        assert!(
            !read(&log).contains("is not known"),
            "gateway-{x}.yaml has keys the gateway ignores:\n{}",
            read(&log)
        );
        gateways.push(Gateway {
            url: format!("http://127.0.0.1:{port}/mcp"),
            name: format!("mcp-{x}"),
            _proc: proc,
        });
    }

    // The workflow, as on a push to main: the PR job's steps, then the deploy job's
    // (build and sign with the key from "secrets", verify, publish --wait, drift gate).
    let work = tmp.path().join("policy-repo");
    copy_dir(
        &repo_root().join("examples/policies"),
        &work.join("policies"),
    );
    std::fs::copy(
        secrets.join("signing-key-pub.pem"),
        work.join("policies-signing-key-pub.pem"),
    )
    .unwrap();
    let sha = "3f2c1b0a9e8d7c6b5a49382716f5e4d3c2b1a098".to_string();
    let context: BTreeMap<String, String> = [
        ("GITHUB_SHA", sha.clone()),
        (
            "vars.LOCKSTEP_SERVER",
            format!("http://127.0.0.1:{server_port}"),
        ),
        ("vars.SIGNING_KEY_ID", "compose-key".into()),
        ("vars.MIN_INSTANCES", "3".into()),
        ("vars.LOCKSTEP_GIT_URL", "unused".into()),
        ("vars.LOCKSTEP_REV", "unused".into()),
        (
            "secrets.POLICY_SIGNING_KEY",
            read(&secrets.join("signing-key.pem")),
        ),
        (
            "secrets.LOCKSTEP_PUBLISH_TOKEN",
            read(&secrets.join("publisher-token")),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let workflow: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(
        &repo_root().join("deploy/github-actions/policy-deploy.yml"),
    ))
    .unwrap();
    let ran_test = run_workflow_job(&workflow, "test", &work, &context);
    assert!(ran_test.len() >= 2, "{ran_test:?}");
    let ran_deploy = run_workflow_job(&workflow, "deploy", &work, &context);
    assert!(
        ran_deploy.iter().any(|s| s.starts_with("Publish"))
            && ran_deploy.iter().any(|s| s.starts_with("Drift gate")),
        "{ran_deploy:?}"
    );

    // Every gateway now decides by the commit the workflow built, and its calls reach
    // its own MCP server (the Python SDK, whose answer names it).
    let http = reqwest::Client::new();
    let key = analyst_key(&secrets);
    for gw in &gateways {
        for (tool, allowed) in [("read_database", true), ("write_database", false)] {
            let (body, headers) = modern_call(
                1,
                tool,
                json!({"target": "orders", "operation": if allowed {"read"} else {"write"},
                       "database": "analytics"}),
            );
            let mut req = http.post(&gw.url).bearer_auth(&key).json(&body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let r = req.send().await.unwrap();
            let rev = r
                .headers()
                .get("x-lockstep-revision")
                .map(|v| v.to_str().unwrap().to_string());
            let status = r.status();
            let answer: Value = r.json().await.unwrap();
            assert_eq!(
                rev.as_deref(),
                Some(sha.as_str()),
                "{} {tool}: {status} {answer}",
                gw.url
            );
            if allowed {
                let text = answer["result"]["content"][0]["text"].as_str().unwrap();
                assert!(
                    text.contains(&format!("\"server\": \"{}\"", gw.name)),
                    "{answer}"
                );
            } else {
                assert_eq!(answer["error"]["code"], -31001, "{answer}");
            }
        }
    }

    // Prometheus scrapes the server with the status token (prometheus.yml).
    let prom: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&compose.join("prometheus.yml"))).unwrap();
    let server_job = &prom["scrape_configs"][0];
    assert_eq!(
        server_job["authorization"]["credentials_file"].as_str(),
        Some("/run/secrets/status-token")
    );
    let metrics = http
        .get(format!("http://127.0.0.1:{server_port}/metrics"))
        .bearer_auth(read(&secrets.join("status-token")).trim())
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("lockstep_fleet_instances"), "{text}");
    drop(gateways);
    drop(upstreams);
}

/// Every configuration the Kubernetes manifests carry, read by the parser that reads it
/// in the pod (mount paths pointed at real files).
#[test]
fn every_config_in_the_kubernetes_manifests_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    run(Command::new(LOCKSTEP)
        .args(["keygen", "--alg", "ES256", "-o"])
        .arg(d.join("signing-key.pem")))
    .unwrap();
    for f in [
        "publisher-token",
        "download-token",
        "status-token",
        "session-key",
    ] {
        std::fs::write(d.join(f), "0".repeat(64)).unwrap();
    }
    std::fs::write(
        d.join("api-keys.yaml"),
        "keys:\n  - {key: lsk_0123456789abcdef0123456789, id: a, role: analyst}\n",
    )
    .unwrap();
    let dir = format!("{}/", d.display());
    let paths = |text: &str| {
        text.replace("/etc/lockstep/keys/", &dir)
            .replace("/etc/lockstep/tokens/", &dir)
            .replace("/etc/lockstep/gateway/", &dir)
            .replace("/etc/lockstep/agent/", &dir)
            .replace("/var/lib/lockstep", &d.join("state").display().to_string())
    };
    let mut seen = Vec::new();
    for file in ["server.yaml", "gateway.yaml", "agent-sidecar.yaml"] {
        let text = read(&repo_root().join("deploy/k8s").join(file));
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
            if doc["kind"].as_str() != Some("ConfigMap") {
                continue;
            }
            for (name, body) in doc["data"].as_mapping().unwrap() {
                let name = name.as_str().unwrap();
                let body = paths(body.as_str().unwrap());
                match name {
                    "server.yaml" => {
                        let p = d.join("server.yaml");
                        std::fs::write(&p, &body).unwrap();
                        let cfg = lockstep_server::Config::from_file(&p)
                            .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
                        assert!(cfg.store.s3.is_some(), "replicas share an S3 store");
                    }
                    "gateway.yaml" => {
                        let cfg = lockstep_gateway::config::GatewayConfig::parse(&body)
                            .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
                        assert!(cfg.unknown_keys.is_empty(), "{:?}", cfg.unknown_keys);
                    }
                    "opa-config.yaml" => {
                        let cfg = lockstep_agent::config::parse(
                            &body,
                            &|_| None,
                            &lockstep_agent::config::Overrides::default(),
                        )
                        .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
                        assert!(cfg.ignored.is_empty(), "{:?}", cfg.ignored);
                        assert_eq!(
                            cfg.listen, "127.0.0.1:8181",
                            "a sidecar's API stays in the pod"
                        );
                    }
                    other => panic!("{file}: a ConfigMap key no test reads: {other}"),
                }
                seen.push(name.to_string());
            }
        }
    }
    seen.sort();
    assert_eq!(seen, ["gateway.yaml", "opa-config.yaml", "server.yaml"]);
}
