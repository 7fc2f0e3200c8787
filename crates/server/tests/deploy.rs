//! deploy/ (Prometheus rules, Grafana dashboard) uses only metric names the server
//! exports: every `lockstep_*` name in those files appears in a real `/metrics` answer.

use lockstep_testkit::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;

/// `lockstep_...` identifiers in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("lockstep_") {
        let boundary = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/'));
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        if boundary {
            out.insert(name);
        }
    }
    out
}

#[tokio::test]
async fn deploy_files_use_exported_metric_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut used = BTreeSet::new();
    for f in [
        "deploy/prometheus/lockstep-rules.yml",
        "deploy/prometheus/lockstep-rules.test.yml",
        "deploy/grafana/lockstep-dashboard.json",
    ] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{f}: no lockstep_ metric names");
        used.extend(names);
    }

    // A server with every metric family populated: a publication, a refusal, a status
    // report (fleet gauges, convergence histogram), a bundle download.
    let h = TestServer::start().await;
    assert_eq!(
        h.publish("main", bundle("r1", 1000, Some(&h.keys)))
            .await
            .status(),
        201
    );
    assert_eq!(
        h.publish("main", bundle("r0", 500, None)).await.status(),
        400
    );
    assert_eq!(
        h.report(&opa_status("opa-1", "main", "r1")).await.status(),
        200
    );
    assert_eq!(h.get("/bundles/main").await.status(), 200);
    let m = h.metrics(STATUS).await;
    let exported: BTreeSet<String> = m
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "deploy/ uses metric names the server does not export: {missing:?}\nexported: {exported:?}"
    );
    h.shutdown().await;
}
