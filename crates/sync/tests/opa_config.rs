//! OPA's config file as lockstep-sync reads it on its own: the guide's
//! `opa-config.yaml`, ignored keys, OPA's refusal messages.

use std::time::Duration;

use lockstep_bundle::KeyConfig;
use lockstep_sync::opa_config::{Overrides, OwnSections, parse};
use lockstep_sync::{Credentials, OnStale, TokenSource, Verification};
use lockstep_testkit::prelude::*;

fn env(k: &str) -> Option<String> {
    (k == "BUNDLE_TOKEN").then(|| "t0ken".to_string())
}

#[test]
fn guide_opa_config_parses_into_a_sync_config() {
    let k = keys();
    let mut overrides = Overrides::default();
    overrides.keys.insert(
        "prod-key-2025".into(),
        KeyConfig {
            key: k.public.clone(),
            algorithm: "ES256".into(),
            scope: None,
        },
    );
    let c = parse(GUIDE_OPA_CONFIG, &env, &overrides, OwnSections::default()).unwrap();
    assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    let b = &c.sync.bundles[0];
    assert_eq!(b.name, "main");
    assert_eq!(b.url(), "https://bundle.example.com/bundles/main.tar.gz");
    assert_eq!(
        (b.polling.min_delay, b.polling.max_delay),
        (Duration::from_secs(30), Duration::from_secs(120))
    );
    assert_eq!(b.polling.long_polling_timeout, None);
    assert_eq!(
        b.service.credentials,
        Credentials::Bearer {
            scheme: "Bearer".into(),
            token: TokenSource::Inline("t0ken".into()),
        }
    );
    match &b.verification {
        Verification::Required(v) => {
            assert_eq!(v.key_id.as_deref(), Some("prod-key-2025"));
            assert!(v.keys.contains_key("prod-key-2025"));
        }
        Verification::Skip => panic!("verification must be required by default"),
    }
    // Secure defaults: deny when stale, after 300 s.
    assert_eq!(c.sync.on_stale, OnStale::Deny);
    assert_eq!(c.sync.max_staleness, Duration::from_secs(300));
    assert!(!c.sync.labels["id"].is_empty());

    // Without the key it names the fix.
    let e = parse(
        GUIDE_OPA_CONFIG,
        &env,
        &Overrides::default(),
        OwnSections::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no keys are configured"), "{e}");
    assert!(e.starts_with("bundles.main:"), "{e}");
}

#[test]
fn ignored_keys_are_named_and_errors_are_opa_like() {
    let text = r#"
services:
  - name: s
    url: http://127.0.0.1:1/
    tls: {ca_cert: x}
bundles:
  b:
    polling: {min_delay_seconds: 5}
default_decision: /x
plugins: {envoy_ext_authz_grpc: {}}
lockstep: {skip_verification: true, max_staleness: 10s, on_stale: serve, wat: 1, listen: x}
"#;
    let no_own = OwnSections::default();
    let e = parse(text, &|_| None, &Overrides::default(), no_own)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing 'max_delay_seconds'"), "{e}");
    let ok = text.replace(
        "{min_delay_seconds: 5}",
        "{min_delay_seconds: 5, max_delay_seconds: 6, trigger: periodic}",
    );
    let c = parse(&ok, &|_| None, &Overrides::default(), no_own).unwrap();
    assert_eq!(
        c.ignored,
        vec![
            "default_decision",
            "plugins",
            "services.s.tls",
            "lockstep.listen",
            "lockstep.wat",
            "bundles.b.polling.trigger"
        ]
    );
    // What an embedder reads itself is not reported.
    let own = OwnSections {
        top: &["plugins"],
        lockstep: &["listen"],
    };
    let c = parse(&ok, &|_| None, &Overrides::default(), own).unwrap();
    assert_eq!(
        c.ignored,
        vec![
            "default_decision",
            "services.s.tls",
            "lockstep.wat",
            "bundles.b.polling.trigger"
        ]
    );
    assert_eq!(c.sync.bundles[0].url(), "http://127.0.0.1:1/bundles/b");
    assert_eq!(c.sync.bundles[0].verification, Verification::Skip);
    assert_eq!(c.sync.on_stale, OnStale::Serve);
    assert_eq!(c.sync.max_staleness, Duration::from_secs(10));
    assert_eq!(
        c.document["plugins"]["envoy_ext_authz_grpc"],
        serde_json::json!({})
    );
    for (bad, says) in [
        (
            "lockstep: {on_stale: maybe}",
            "lockstep.on_stale: expected deny or serve",
        ),
        (
            "lockstep: {max_staleness: 2d}",
            "lockstep.max_staleness: expected a duration",
        ),
        ("services: 3", "services: expected a mapping or a list"),
        ("services: {s: {}}", "services.s: missing url"),
        ("keys: {k: {key: 'not a key', algorithm: ES256}}", "keys.k:"),
        ("{", "config:"),
    ] {
        let e = parse(bad, &|_| None, &Overrides::default(), no_own)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(says), "{bad}: {e}");
    }
}

#[test]
fn finding8_a_missing_key_file_in_keys_is_refused_at_start() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing.key");
    let cfg = |key: &str| {
        format!(
            "services: {{s: {{url: \"http://127.0.0.1:1/\"}}}}\nbundles: {{b: {{service: s, signing: {{keyid: k}}}}}}\nkeys: {{k: {{key: \"{key}\", algorithm: HS256}}}}\n"
        )
    };
    // Before: the path string itself became the HMAC secret.
    let e = parse(
        &cfg(&missing.display().to_string()),
        &|_| None,
        &Overrides::default(),
        OwnSections::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("keys.k") && e.contains("missing.key"), "{e}");
    // A readable file is read; OPA's inline HMAC secret (no slash) stays inline.
    std::fs::write(&missing, "from-the-file").unwrap();
    let c = parse(
        &cfg(&missing.display().to_string()),
        &|_| None,
        &Overrides::default(),
        OwnSections::default(),
    )
    .unwrap();
    let Verification::Required(v) = &c.sync.bundles[0].verification else {
        panic!("verification required")
    };
    assert_eq!(v.keys["k"].key, "from-the-file");
    let c = parse(
        &cfg("inline-secret"),
        &|_| None,
        &Overrides::default(),
        OwnSections::default(),
    )
    .unwrap();
    let Verification::Required(v) = &c.sync.bundles[0].verification else {
        panic!("verification required")
    };
    assert_eq!(v.keys["k"].key, "inline-secret");
}

#[test]
fn finding7_min_issued_at_is_parsed_per_bundle_or_for_all() {
    let base = "services: {s: {url: \"http://127.0.0.1:1/\"}}\nbundles: {a: {service: s}, b: {service: s}}\n";
    let p = |ls: &str| {
        parse(
            &format!("{base}lockstep: {{skip_verification: true, {ls}}}\n"),
            &|_| None,
            &Overrides::default(),
            OwnSections::default(),
        )
    };
    let c = p("min_issued_at: 1700000000").unwrap();
    assert_eq!(c.sync.min_issued_at["a"], 1_700_000_000);
    assert_eq!(c.sync.min_issued_at["b"], 1_700_000_000);
    assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    let c = p("min_issued_at: {a: \"2025-06-01T00:00:00Z\"}").unwrap();
    assert_eq!(c.sync.min_issued_at["a"], 1_748_736_000);
    assert!(!c.sync.min_issued_at.contains_key("b"));
    for (bad, says) in [
        ("min_issued_at: {c: 1}", "no such bundle"),
        ("min_issued_at: yesterday", "RFC 3339"),
        ("min_issued_at: -5", "non-negative"),
    ] {
        let e = p(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_decision_fast_path_is_on_by_default_and_configurable() {
    let base = "services: {s: {url: 'http://127.0.0.1:1/'}}\nbundles: {b: {service: s}}\n";
    let no_own = OwnSections::default();
    let read = |lockstep: &str| {
        let text = format!("{base}lockstep: {{skip_verification: true, {lockstep}}}\n");
        parse(&text, &|_| None, &Overrides::default(), no_own).map(|c| c.sync.compile)
    };
    let defaults = lockstep_policy::CompileOptions::default();
    let c = read("on_stale: deny").unwrap();
    assert!(c.memo.enabled && c.rvm.enabled);
    assert_eq!(c.rvm, defaults.rvm);

    let c = read("decision_memo: false, bytecode_vm: false").unwrap();
    assert!(!c.memo.enabled && !c.rvm.enabled);
    let c = read(
        "decision_memo: {max_entries: 5, max_bytes: '4096'}, \
         bytecode_vm: {verify_first: 1000, recheck_every: 10}",
    )
    .unwrap();
    assert!(c.memo.enabled && c.rvm.enabled);
    assert_eq!((c.memo.max_entries, c.memo.max_bytes), (5, 4096));
    assert_eq!((c.rvm.verify_first, c.rvm.recheck_every), (1000, 10));
    let c = read("bytecode_vm: {enabled: false, verify_first: 3}").unwrap();
    assert!(!c.rvm.enabled);

    for (bad, says) in [
        (
            "decision_memo: 3",
            "lockstep.decision_memo: expected true, false or an object",
        ),
        (
            "decision_memo: {max_entries: -1}",
            "lockstep.decision_memo.max_entries:",
        ),
        (
            "bytecode_vm: {recheck_every: 0}",
            "lockstep.bytecode_vm.recheck_every: must be at least 1",
        ),
        (
            "bytecode_vm: {enabled: maybe}",
            "lockstep.bytecode_vm.enabled:",
        ),
    ] {
        let e = read(bad).unwrap_err().to_string();
        assert!(e.starts_with(says), "{bad}: {e}");
    }
    // An unknown setting is named, like every other ignored key.
    let text = format!("{base}lockstep: {{skip_verification: true, bytecode_vm: {{fast: 1}}}}\n");
    let c = parse(&text, &|_| None, &Overrides::default(), no_own).unwrap();
    assert_eq!(c.ignored, vec!["lockstep.bytecode_vm.fast"]);
}

#[test]
fn cutover_settings_are_on_by_default_and_configurable() {
    let base = "services: {s: {url: 'http://127.0.0.1:1/'}}\nbundles: {b: {service: s}}\n";
    let read = |lockstep: &str| {
        let text = format!("{base}lockstep: {{skip_verification: true, {lockstep}}}\n");
        parse(
            &text,
            &|_| None,
            &Overrides::default(),
            OwnSections::default(),
        )
        .map(|c| c.sync.cutover)
    };
    let d = read("on_stale: deny").unwrap();
    assert!(d.enabled);
    assert_eq!(d.max_clock_uncertainty, Duration::from_millis(50));
    assert_eq!(d.max_hold, Duration::from_secs(600));
    assert!(!read("cutover: false").unwrap().enabled);
    let c = read("cutover: {max_clock_uncertainty: 5ms, max_hold: 30s}").unwrap();
    assert!(c.enabled);
    assert_eq!(c.max_clock_uncertainty, Duration::from_millis(5));
    assert_eq!(c.max_hold, Duration::from_secs(30));
    let e = read("cutover: 3").unwrap_err().to_string();
    assert!(
        e.contains("lockstep.cutover: expected true, false or an object"),
        "{e}"
    );
    let e = read("cutover: {max_hold: soon}").unwrap_err().to_string();
    assert!(e.contains("lockstep.cutover.max_hold"), "{e}");
}

#[test]
fn size_limit_bytes_is_read_per_bundle() {
    let p = |b: &str| {
        parse(
            &format!(
                "services: {{s: {{url: \"http://127.0.0.1:1/\"}}}}\nbundles: {{a: {{service: s{b}}}}}\nlockstep: {{skip_verification: true}}\n"
            ),
            &|_| None,
            &Overrides::default(),
            OwnSections::default(),
        )
    };
    let c = p(", size_limit_bytes: 2048").unwrap();
    assert_eq!(c.sync.bundles[0].size_limit_bytes, Some(2048));
    assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    assert_eq!(p("").unwrap().sync.bundles[0].size_limit_bytes, None);
    let e = p(", size_limit_bytes: -1").unwrap_err().to_string();
    assert!(e.contains("non-negative"), "{e}");
}
