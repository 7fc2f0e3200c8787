//! Bundle ownership of REST-written policies (issue 9, finding 1): a module written
//! through `PUT /v1/policies/{id}` must not define anything under a bundle's roots,
//! however its package or rule heads are spelled. Checked through the Syncer API with
//! a real signed bundle whose roots are `["mcp/authz"]`, by hand and with proptest.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lockstep_bundle::{Bundle, BundleFile, Manifest, SigningConfig};
use lockstep_sync::{Gate, Syncer, WriteError};
use lockstep_testkit::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

const OWNED_POLICY: &str = "package mcp.authz\n\nrevision := \"r1\"\n\ndefault allow := false\n";

/// A signed bundle owning `mcp/authz` only.
fn authz_bundle(keys: &Keys) -> Vec<u8> {
    let mut b = Bundle {
        manifest: Manifest {
            revision: "r1".into(),
            roots: Some(vec!["mcp/authz".into()]),
            ..Manifest::default()
        },
        data: json!({}),
        files: vec![
            BundleFile {
                path: "mcp/authz/data.json".into(),
                bytes: br#"{"users": ["alice"]}"#.to_vec(),
            },
            BundleFile {
                path: "mcp/authz/policy.rego".into(),
                bytes: OWNED_POLICY.as_bytes().to_vec(),
            },
        ],
        ..Bundle::default()
    };
    b.sync_manifest_file().unwrap();
    lockstep_bundle::sign_bundle(
        &mut b,
        &SigningConfig {
            key: keys.private.clone(),
            alg: "ES256".into(),
            key_id: Some(KID.into()),
            issued_at: Some(1000),
            ..SigningConfig::default()
        },
    )
    .unwrap();
    lockstep_bundle::write_tar_gz(&b, Vec::new()).unwrap()
}

/// A Syncer serving [`authz_bundle`], and what keeps its bundle server up.
struct Fixture {
    syncer: Syncer,
    _dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start() -> Fixture {
        let keys = keys();
        let st = StaticServer::default();
        st.set(authz_bundle(&keys));
        let (addr, stop, server) = st.start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = sync_config(
            service(&format!("http://{addr}"), None),
            verification(&keys),
            dir.path(),
            None,
        );
        let syncer = Syncer::new(cfg).unwrap();
        syncer.start().await;
        let up = eventually(Duration::from_secs(10), || syncer.active().is_some()).await;
        assert!(up, "bundle not activated: {:?}", syncer.status_report());
        Fixture {
            syncer,
            _dir: dir,
            stop,
            server,
        }
    }

    async fn stop(self) {
        self.syncer.shutdown().await;
        let _ = self.stop.send(());
        self.server.await.unwrap();
    }
}

/// The document at `path` in what decisions see now.
fn doc(s: &Syncer, path: &str) -> Option<Value> {
    match s.gate() {
        Gate::Serve { active, .. } => active.policy().eval_data_path(path, None).unwrap(),
        Gate::Deny { reason, .. } => panic!("denying: {reason}"),
    }
}

fn owned_doc() -> Value {
    json!({"allow": false, "revision": "r1", "users": ["alice"]})
}

fn put(s: &Syncer, src: &str) -> Result<(), WriteError> {
    s.put_policy("x.rego", src.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding1_escaped_package_cannot_escape_bundle_roots() {
    let f = Fixture::start().await;
    let s = &f.syncer;
    assert_eq!(doc(s, "data.mcp.authz"), Some(owned_doc()));

    // The normal spelling, refused with OPA's message.
    let err = put(s, "package mcp.authz\n\nallow if true\n").unwrap_err();
    assert!(matches!(err, WriteError::Owned(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "path /mcp/authz is owned by bundle \"main\""
    );

    // The finding: regorus decodes the escape, so this *is* package mcp.authz. The
    // old text-based check read `\u0061uthz` and let it through.
    let err = put(s, "package mcp[\"\\u0061uthz\"]\n\nallow if true\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "path /mcp/authz is owned by bundle \"main\""
    );

    for src in [
        "package mcp[\"authz\"]\nallow if true",
        "package mcp[\"\\u0061\\u0075\\u0074\\u0068\\u007A\"]\nallow if true",
        "package mcp[\"\\u0061uthz\"].inner\nallow if true",
        "package mcp[ \"authz\" ]\nallow if true",
        "# package other\n\n\tpackage\tmcp[\"authz\"] # package other\nallow if true",
        "package data.mcp.authz\nallow if true",
        "package data[\"mcp\"][\"\\u0061uthz\"]\nallow if true",
        "package mcp[\"authz\"]\nimport rego.v1\nallow := true",
        "package mcp[\"authz\"]\nimport data.other as authz\nallow contains 1",
    ] {
        let err = put(s, src).unwrap_err();
        assert!(matches!(err, WriteError::Owned(_)), "{src:?}: {err:?}");
    }
    assert_eq!(doc(s, "data.mcp.authz"), Some(owned_doc()));
    assert!(s.policies().iter().all(|(id, _)| id != "x.rego"));

    // Paths beside the root are still writable.
    put(s, "package mcp.other\nallow if true").unwrap();
    put(s, "package mcp[\"authz-x\"]\nallow if true").unwrap();
    assert_eq!(doc(s, "data.mcp[\"authz-x\"].allow"), Some(json!(true)));
    assert_eq!(doc(s, "data.mcp.authz"), Some(owned_doc()));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding1_rule_heads_cannot_escape_bundle_roots() {
    let f = Fixture::start().await;
    let s = &f.syncer;
    for src in [
        // A ref head in a parent package.
        "package mcp\n\nauthz.allow if true\n",
        "package mcp\n\nauthz[\"\\u0061llow\"] := true\n",
        "package mcp\n\nauthz[k] := true if k := \"allow\"\n",
        // `package data` names the whole document: its heads land under the root. (The
        // old text check could not read this package at all.)
        "package data\n\nmcp.authz.allow if true\n",
        "package data\n\nmcp[\"\\u0061uthz\"].allow if true\n",
        "package data\n\ndefault mcp.authz.allow := true\n",
        // An import alias does not move a head.
        "package mcp\nimport data.mcp.authz as a\n\nauthz.allow if true\n",
    ] {
        let err = put(s, src).unwrap_err();
        assert!(matches!(err, WriteError::Owned(_)), "{src:?}: {err:?}");
    }
    for src in [
        // A head must start with a name, and not with `data` (regorus will not shadow it).
        "package mcp\n\n\"\\u0061uthz\".allow if true\n",
        "package x\n\ndata.mcp.authz.allow if true\n",
    ] {
        let err = put(s, src).unwrap_err();
        assert!(
            matches!(err, WriteError::Compile { .. }),
            "{src:?}: {err:?}"
        );
    }
    // Imports are not definitions: this writes data.x.a.allow, not data.mcp.authz.
    put(
        s,
        "package x\nimport data.mcp.authz as a\n\na.allow if true\n",
    )
    .unwrap();
    assert_eq!(doc(s, "data.x.a.allow"), Some(json!(true)));
    assert_eq!(doc(s, "data.mcp.authz"), Some(owned_doc()));
    f.stop().await;
}

// ---- proptest -----------------------------------------------------------------

/// A Rego string literal for `s`, each character written plainly or as `\uXXXX`.
fn rego_string(s: &str, escape: &[bool], upper: bool) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        let esc = escape
            .get(i % escape.len().max(1))
            .copied()
            .unwrap_or(false);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if esc => out.push_str("\\/"),
            c if esc && u32::from(c) <= 0xFFFF => {
                if upper {
                    out.push_str(&format!("\\u{:04X}", u32::from(c)));
                } else {
                    out.push_str(&format!("\\u{:04x}", u32::from(c)));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A name that may be written bare (not a keyword).
fn is_ident(s: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "contains", "data", "default", "else", "every", "false", "if", "import", "in",
        "input", "not", "null", "package", "some", "true", "with",
    ];
    if KEYWORDS.contains(&s) {
        return false;
    }
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How one path component after the first is written.
#[derive(Debug, Clone)]
struct Part {
    dot: bool,
    escape: Vec<bool>,
    upper: bool,
    pad: (&'static str, &'static str),
}

fn part() -> impl Strategy<Value = Part> {
    (
        any::<bool>(),
        prop::collection::vec(any::<bool>(), 1..6),
        any::<bool>(),
        prop::sample::select(vec![("", ""), (" ", " "), ("\t", ""), ("", "  ")]),
    )
        .prop_map(|(dot, escape, upper, pad)| Part {
            dot,
            escape,
            upper,
            pad,
        })
}

/// `name` as the next part of a reference.
fn render_part(name: &str, p: &Part) -> String {
    if p.dot && is_ident(name) {
        format!(".{name}")
    } else {
        format!(
            "[{}{}{}]",
            p.pad.0,
            rego_string(name, &p.escape, p.upper),
            p.pad.1
        )
    }
}

/// A reference: the first name plain, the rest as `parts` say.
fn render_ref(names: &[String], parts: &[Part]) -> String {
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        if i == 0 {
            out.push_str(n);
        } else {
            let fallback = Part {
                dot: true,
                escape: vec![false],
                upper: false,
                pad: ("", ""),
            };
            out.push_str(&render_part(n, parts.get(i).unwrap_or(&fallback)));
        }
    }
    out
}

fn extra_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "allow",
        "deny",
        "x",
        "_y1",
        "a-b",
        "a b",
        "é",
        "ü/v",
        "if",
        "data",
        "\u{2028}",
        "𝔘",
        "\"q\"",
        "back\\slash",
        "",
    ])
    .prop_map(str::to_string)
}

/// A module whose package and first rule head together name `path` (non-empty): the
/// package takes some leading names (`package data` when none), the head the rest
/// (`allow` when none are left), in generated spellings.
fn module(path: impl Strategy<Value = Vec<String>>) -> impl Strategy<Value = String> {
    (
        path,
        0usize..4,
        any::<bool>(),
        prop::collection::vec(part(), 8),
        prop::sample::select(vec![
            "{h} if true",
            "{h} := true",
            "{h} contains \"v\"",
            "default {h} := true",
            "{h}[k] := true if k := \"z\"",
            "{h}(v) := v",
            "{h} := 1 if {\n  # }\n  true\n}",
        ]),
        prop::sample::select(vec!["", "# lead\n", "\n\n", "# package mcp.other\n\t\n"]),
        prop::sample::select(vec![
            "",
            " # package mcp.other",
            "\nimport rego.v1",
            "\nimport data.mcp.authz as authz",
            "\nimport data.other.allow",
            "\nimport input.user as u",
        ]),
        prop::sample::select(vec!["", "decoy := 1\n", "# allow := false\n"]),
        any::<bool>(),
    )
        .prop_map(
            |(path, split, data_prefix, parts, rule, lead, after, decoy, tab)| {
                let split = split.min(path.len());
                let (pkg, head) = path.split_at(split);
                let mut pkg_names: Vec<String> = Vec::new();
                if data_prefix || !pkg.first().is_some_and(|p| is_ident(p)) {
                    pkg_names.push("data".into());
                }
                pkg_names.extend(pkg.iter().cloned());
                let mut head: Vec<String> = head.to_vec();
                // A head must start with an identifier: fold a non-identifier first
                // name into the package instead.
                while head.first().is_some_and(|h| !is_ident(h)) {
                    pkg_names.push(head.remove(0));
                }
                if head.is_empty() {
                    head.push("allow".into());
                }
                let sep = if tab { "\t" } else { " " };
                format!(
                    "{lead}package{sep}{}{after}\n\n{decoy}{}\n",
                    render_ref(&pkg_names, &parts),
                    rule.replace("{h}", &render_ref(&head, &parts[4..])),
                )
            },
        )
}

/// Paths under `mcp/authz`.
fn owned_path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(extra_name(), 0..3).prop_map(|extra| {
        let mut path = vec!["mcp".to_string(), "authz".to_string()];
        path.extend(extra);
        path
    })
}

/// Paths near `mcp/authz`: beside it, above it, under it, or look-alikes.
fn near_path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec![
            "mcp",
            "authz",
            "x",
            "authz ",
            "Authz",
            "authz\u{0}",
            "auth",
            "allow",
            "data",
            "other",
            "a-b",
            "é",
        ])
        .prop_map(str::to_string),
        1..4,
    )
}

/// Modules near the owned root, and Rego-ish token soup (mostly invalid).
fn soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "package",
        "mcp",
        "authz",
        "data",
        ".",
        "[",
        "]",
        "\"",
        "\\u0061",
        "\\",
        "`",
        " ",
        "\t",
        "\n",
        "#",
        "if",
        "true",
        ":=",
        "=",
        "{",
        "}",
        "(",
        ")",
        "allow",
        "contains",
        "default",
        "import",
        "as",
        "rego.v1",
        "\"authz\"",
        "\"\\u0061uthz\"",
        "x",
        "1",
        "é",
        "\u{0}",
        "\r",
        ";",
        "some",
        "in",
        "every",
        "with",
        "input",
        "*",
        "-",
        "not",
    ]);
    prop_oneof![
        module(near_path()),
        module(owned_path()),
        prop::collection::vec(token.clone(), 0..40).prop_map(|t| t.concat()),
        prop::collection::vec(token, 0..20).prop_map(|t| format!("package mcp\n{}", t.concat())),
        any::<String>(),
    ]
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

#[test]
fn finding1_proptest_owned_paths_are_refused_in_any_spelling() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(Fixture::start());
    let s = f.syncer.clone();
    let mut owned = runner(256);
    let result = owned.run(&module(owned_path()), |src| {
        let res = put(&s, &src);
        prop_assert!(
            matches!(res, Err(WriteError::Owned(_))),
            "not refused as owned: {:?}\n{}",
            res,
            src
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(doc(&s, "data.mcp.authz"), Some(owned_doc()));

    // Anything at all: no panic, and nothing accepted changes the bundle's document.
    let mut any = runner(256);
    let accepted = AtomicU32::new(0);
    let result = any.run(&soup(), |src| {
        if put(&s, &src).is_ok() {
            accepted.fetch_add(1, Ordering::Relaxed);
            let now = doc(&s, "data.mcp.authz");
            prop_assert_eq!(now, Some(owned_doc()), "{}", src);
            s.delete_policy("x.rego").unwrap();
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("soup: {} of 256 accepted", accepted.into_inner());
    rt.block_on(f.stop());
}
