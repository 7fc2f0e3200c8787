//! The `lockstep` binary end to end: the GitOps chain of the guide, exit codes,
//! and the refusals a pipeline relies on.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/policies")
        .canonicalize()
        .unwrap()
}

fn lockstep(args: &[&str], cwd: &Path) -> Output {
    Command::cargo_bin("lockstep")
        .unwrap()
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn example_policies_pass_their_tests_including_go_style_path() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = examples();
    let o = lockstep(&["test", ex.to_str().unwrap(), "-v"], tmp.path());
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("data.mcp.tool_access_test.test_analyst_cannot_write: PASS"),
        "{}",
        stdout(&o)
    );
    // The guide runs `opa test ./policies/... -v`.
    let dotted = format!("{}/...", ex.display());
    let o = lockstep(&["test", &dotted], tmp.path());
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn a_failing_test_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "p/p.rego", "package p\nallow if input.x == 1\n");
    write(
        tmp.path(),
        "p/p_test.rego",
        "package p_test\nimport data.p\ntest_ok if p.allow with input as {\"x\": 1}\ntest_wrong if p.allow with input as {\"x\": 2}\n",
    );
    let o = lockstep(&["test", "p"], tmp.path());
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("data.p_test.test_wrong: FAIL"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("FAIL: 1/2"), "{}", stdout(&o));

    let o = lockstep(&["test", "p", "--run", "test_ok"], tmp.path());
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    let o = lockstep(&["test", "p", "--format", "json"], tmp.path());
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report.as_array().unwrap().len(), 2);
}

#[test]
fn compile_errors_name_the_location_and_fail() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "p/p.rego",
        "package p\n\nallow if {\n  x := input.y\n  z == 1\n}\n",
    );
    let o = lockstep(&["test", "p"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("p.rego:5:"), "{}", stderr(&o));

    let o = lockstep(&["build", "p", "-o", "b.tar.gz"], tmp.path());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("p.rego:5:"), "{}", stderr(&o));
    assert!(
        !tmp.path().join("b.tar.gz").exists(),
        "nothing is written when the policy does not compile"
    );
}

#[test]
fn no_tests_is_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "p/p.rego", "package p\nallow := true\n");
    let o = lockstep(&["test", "p"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no test cases found"));
}

fn round_trip(alg: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ex = examples();
    let o = lockstep(&["keygen", "--alg", alg, "-o", "k.pem"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lockstep(
        &[
            "build",
            ex.to_str().unwrap(),
            "--revision",
            "r1",
            "--signing-key",
            "k.pem",
            "--signing-alg",
            alg,
            "--signing-key-id",
            "prod-key-2025",
            "-o",
            "bundle.tar.gz",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lockstep(
        &[
            "verify",
            "bundle.tar.gz",
            "--verification-key",
            "k-pub.pem",
            "--verification-key-id",
            "prod-key-2025",
            "--signing-alg",
            alg,
            "--format",
            "json",
        ],
        d,
    );
    assert!(o.status.success(), "{alg}: {}{}", stdout(&o), stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["revision"], "r1");
    assert_eq!(v["key_id"], "prod-key-2025");

    let o = lockstep(&["inspect", "bundle.tar.gz", "--format", "json"], d);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["revision"], "r1");
    assert_eq!(v["roots"], serde_json::json!(["mcp"]));
    assert_eq!(v["signature"]["key_id"], "prod-key-2025");
    assert_eq!(v["signature"]["algorithm"], alg);
    assert!(
        v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "data.mcp.decision")
    );

    // A key of another pair is refused.
    lockstep(&["keygen", "--alg", alg, "-o", "other.pem"], d);
    let o = lockstep(
        &[
            "verify",
            "bundle.tar.gz",
            "--verification-key",
            "other-pub.pem",
            "--signing-alg",
            alg,
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(1), "{alg}: {}", stdout(&o));
    assert!(
        stderr(&o).contains("failed to verify JWT signature"),
        "{alg}: {}",
        stderr(&o)
    );
}

#[test]
fn build_sign_verify_round_trip_es256() {
    round_trip("ES256");
}

#[test]
fn build_sign_verify_round_trip_rs256() {
    round_trip("RS256");
}

#[test]
fn build_sign_verify_round_trip_hs256() {
    round_trip("HS256");
}

#[test]
fn builds_are_byte_identical_and_revision_defaults_to_git_head() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let repo = d.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    for entry in walk(&examples()) {
        let rel = entry.strip_prefix(examples()).unwrap();
        let to = repo.join("policies").join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .current_dir(&repo)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    git(&["init", "-q"]);
    git(&[
        "-c",
        "user.email=ci@example.com",
        "-c",
        "user.name=ci",
        "add",
        ".",
    ]);
    git(&[
        "-c",
        "user.email=ci@example.com",
        "-c",
        "user.name=ci",
        "commit",
        "-qm",
        "policies",
    ]);
    let head = git(&["rev-parse", "HEAD"]).trim().to_string();

    lockstep(&["keygen", "--alg", "ES256", "-o", "k.pem"], d);
    let build = |out: &str| {
        let o = Command::cargo_bin("lockstep")
            .unwrap()
            .current_dir(d)
            .env("SOURCE_DATE_EPOCH", "1764000000")
            .args([
                "build",
                "repo/policies",
                "--signing-key",
                "k.pem",
                "--signing-alg",
                "ES256",
                "-o",
                out,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(d.join(out)).unwrap()
    };
    let a = build("a.tar.gz");
    let b = build("b.tar.gz");
    assert_eq!(a, b, "same inputs must give a byte-identical bundle");

    let o = lockstep(&["inspect", "a.tar.gz", "--format", "json"], d);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["revision"], head);
    assert_eq!(v["signature"]["issued_at"], 1764000000);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The example policies built into `d/b.tar.gz`, signed with a new ES256 key
/// (`d/k.pem`, `d/k-pub.pem`), and unpacked into `d/u`, which it returns.
fn signed_and_unpacked(d: &Path) -> PathBuf {
    let ex = examples();
    lockstep(&["keygen", "--alg", "ES256", "-o", "k.pem"], d);
    let o = lockstep(
        &[
            "build",
            ex.to_str().unwrap(),
            "--signing-key",
            "k.pem",
            "--signing-alg",
            "ES256",
            "-o",
            "b.tar.gz",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let unpacked = d.join("u");
    std::fs::create_dir_all(&unpacked).unwrap();
    let st = std::process::Command::new("tar")
        .current_dir(&unpacked)
        .args(["xzf", "../b.tar.gz"])
        .status()
        .unwrap();
    assert!(st.success());
    unpacked
}

#[test]
fn a_tampered_bundle_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ex = examples();
    // Unpacked; then grant analyst write access, keeping the old signature.
    let unpacked = signed_and_unpacked(d);
    let roles = unpacked.join("mcp/roles/data.json");
    let text = std::fs::read_to_string(&roles)
        .unwrap()
        .replace("\"run_query\"]", "\"run_query\", \"write_database\"]");
    std::fs::write(&roles, text).unwrap();
    let o = lockstep(&["verify", "u", "--verification-key", "k-pub.pem"], d);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("mcp/roles/data.json: digest mismatch"),
        "{}",
        stderr(&o)
    );

    // Re-sign the tampered tree (a legitimate signer), then add a file nobody signed.
    let o = lockstep(
        &[
            "sign",
            "u",
            "--signing-key",
            "k.pem",
            "--signing-alg",
            "ES256",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    write(
        &unpacked,
        "mcp/extra.rego",
        "package mcp.extra\nallow := true\n",
    );
    let o = lockstep(&["verify", "u", "--verification-key", "k-pub.pem"], d);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("file mcp/extra.rego not included in bundle signature"),
        "{}",
        stderr(&o)
    );

    // An unsigned bundle is refused when a key is configured.
    let o = lockstep(&["build", ex.to_str().unwrap(), "-o", "unsigned.tar.gz"], d);
    assert!(o.status.success());
    let o = lockstep(
        &[
            "verify",
            "unsigned.tar.gz",
            "--verification-key",
            "k-pub.pem",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bundle missing .signatures.json file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn eval_answers_a_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "in.json",
        r#"{"agent":{"role":"analyst"},"request":{"tool":"write_database","params":{"target":"t"}}}"#,
    );
    let ex = examples();
    let o = lockstep(
        &[
            "eval",
            "-d",
            ex.to_str().unwrap(),
            "-i",
            "in.json",
            "data.mcp.decision",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let decision = &v["result"][0]["expressions"][0]["value"];
    assert_eq!(decision["allow"], false);
    assert!(
        decision["reasons"]
            .to_string()
            .contains("role 'analyst' has no access to tool 'write_database'")
    );
}

#[test]
fn demo_tells_its_story_in_plain_lines_off_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let o = lockstep(&["demo", "--dir", "work"], tmp.path());
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("verify: valid"), "{out}");
    assert!(out.contains("digest mismatch"), "{out}");
    assert!(
        out.contains("analyst write_database  DENY  on all 6 (demo-v1)"),
        "{out}"
    );
    assert!(out.contains("drift window: lockstep"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no terminal escapes in a pipe: {out}"
    );
    // --dir keeps what the demo made: the signed bundles and each gateway's audit.
    let work = tmp.path().join("work");
    assert!(work.join("bundle-v2.tar.gz").is_file());
    let audit = std::fs::read_to_string(work.join("fleet/lockstep-1/audit.jsonl")).unwrap();
    assert!(audit.contains("demo-v2"), "{audit}");
}

/// The guide's CI step passes the key as PEM text from a secret, with `-b`.
#[test]
fn guide_build_flags_with_inline_pem_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    lockstep(&["keygen", "--alg", "ES256", "-o", "signing-key.pem"], d);
    let pem = std::fs::read_to_string(d.join("signing-key.pem")).unwrap();
    let ex = examples();
    let o = lockstep(
        &[
            "build",
            "-b",
            ex.to_str().unwrap(),
            "--signing-key",
            &pem,
            "--signing-alg",
            "ES256",
            "-o",
            "bundle.tar.gz",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lockstep(
        &[
            "verify",
            "bundle.tar.gz",
            "--verification-key",
            "signing-key-pub.pem",
        ],
        d,
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// Security review finding 8: `--verification-key /run/secrets/missing.key --signing-alg
/// HS256` used the path string itself as the HMAC secret, so a bundle signed with that
/// string verified. A named key file that cannot be read is now an error everywhere a
/// key is given on the command line.
#[test]
fn finding8_missing_key_file_on_the_command_line_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let missing = d.join("secrets/missing.key").display().to_string();
    // Sign with the path string as the secret (what the old code would verify with).
    write(d, "as-secret.key", &missing);
    let ex = examples();
    let o = lockstep(
        &[
            "build",
            ex.to_str().unwrap(),
            "--revision",
            "r1",
            "--signing-key",
            "as-secret.key",
            "--signing-alg",
            "HS256",
            "-o",
            "bundle.tar.gz",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lockstep(
        &[
            "verify",
            "bundle.tar.gz",
            "--verification-key",
            &missing,
            "--signing-alg",
            "HS256",
        ],
        d,
    );
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("missing.key") && stderr(&o).contains("no such file"),
        "{}",
        stderr(&o)
    );
    // The same without a slash: a command-line key is a file unless it is inline PEM.
    let o = lockstep(
        &[
            "build",
            ex.to_str().unwrap(),
            "--signing-key",
            "missing.key",
            "--signing-alg",
            "HS256",
            "-o",
            "other.tar.gz",
        ],
        d,
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("--signing-key"), "{}", stderr(&o));
}

/// OPA's bundle-reader behaviours on `verify` and `inspect` (issue 15): comma lists in
/// `--exclude-files-verify`, `--size-limit-bytes` with OPA's text, and a delta bundle
/// that also carries data refused with OPA's text even though data is read lazily.
#[test]
fn reader_parity_with_opa_flags_and_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let unpacked = signed_and_unpacked(d);
    write(&unpacked, "notes/a.txt.json", "{}");
    write(&unpacked, "extra/b.json", "{}");
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "u", "--verification-key", "k-pub.pem"];
        args.extend_from_slice(extra);
        lockstep(&args, d)
    };
    // Two unsigned files: one excluded is not enough, a comma list of both is.
    let o = verify(&["--exclude-files-verify", "notes/*"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let o = verify(&["--exclude-files-verify", "notes/*,extra/*"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // The per-file limit, with OPA's text.
    let o = lockstep(&["inspect", "b.tar.gz", "--size-limit-bytes", "64"], d);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("exceeded max size (64 bytes)"),
        "{}",
        stderr(&o)
    );
    let o = verify(&[
        "--exclude-files-verify",
        "notes/*,extra/*",
        "--size-limit-bytes",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("exceeded max size (64 bytes)"),
        "{}",
        stderr(&o)
    );

    // A delta bundle with a data file.
    let delta = d.join("delta");
    write(&delta, ".manifest", r#"{"roots": ["x"]}"#);
    write(
        &delta,
        "patch.json",
        r#"{"data": [{"op": "upsert", "path": "/x/a", "value": 1}]}"#,
    );
    write(&delta, "x/data.json", r#"{"y": 1}"#);
    for args in [
        vec!["inspect", "delta"],
        vec!["verify", "delta", "--verification-key", "k-pub.pem"],
    ] {
        let o = lockstep(&args, d);
        assert!(!o.status.success(), "{args:?}: {}", stdout(&o));
        assert!(
            stderr(&o)
                .contains("delta bundle expected to contain only patch file but data files found"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
