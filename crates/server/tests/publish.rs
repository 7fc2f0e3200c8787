//! Publication: credentials, signatures, rollback protection, rollback, history.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(clippy::unwrap_used)]

use lockstep_testkit::prelude::*;
use serde_json::{Value, json};

async fn code(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn publish_needs_the_publisher_token() {
    let h = TestServer::start().await;
    let body = bundle("r1", 1000, Some(&h.keys));
    for token in [None, Some(DOWNLOAD), Some(STATUS), Some("publisher-secre")] {
        let mut req = h.http.put(h.url("/bundles/main")).body(body.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status(), 401, "{token:?}");
    }
    assert_eq!(h.get("/bundles/main").await.status(), 404);
    assert_eq!(h.publish("main", body).await.status(), 201);
    h.shutdown().await;
}

#[tokio::test]
async fn publish_refuses_bad_signatures_and_unsigned_bundles() {
    let h = TestServer::start().await;
    // Signed by a key the server does not trust (same key id).
    let stranger = keys();
    let (s, v) = code(h.publish("main", bundle("r1", 1000, Some(&stranger))).await).await;
    assert_eq!(s, 400);
    assert_eq!(v["code"], "bad_signature", "{v}");
    // Tampered after signing: a signed file's bytes changed.
    let good = bundle("r1", 1000, Some(&h.keys));
    let mut b = lockstep_bundle::read_tar_gz(
        &good[..],
        &lockstep_bundle::ReadOptions {
            skip_verify: true,
            ..Default::default()
        },
    )
    .unwrap();
    for f in &mut b.files {
        if f.path.ends_with(".rego") {
            f.bytes = b"package mcp\n\nallow := true\n".to_vec();
        }
    }
    let tampered = lockstep_bundle::write_tar_gz(&b, Vec::new()).unwrap();
    let (s, v) = code(h.publish("main", tampered).await).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_signature")), "{v}");
    // Unsigned.
    let (s, v) = code(h.publish("main", bundle("r1", 1000, None)).await).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("unsigned")), "{v}");
    // Not a bundle.
    let (s, v) = code(h.publish("main", b"not gzip".to_vec()).await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalid_bundle")),
        "{v}"
    );
    assert_eq!(h.get("/bundles/main").await.status(), 404);
    // Refusals are counted.
    let m = h.metrics(PUBLISHER).await;
    assert!(
        m.contains(r#"lockstep_bundles_refused_total{bundle="main",reason="bad_signature"} 2"#),
        "{m}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn unsigned_bundles_when_configured() {
    let h = TestServer::with(|c| {
        c.keys.clear();
        c.publish.allow_unsigned = true;
    })
    .await;
    assert_eq!(h.publish("main", bundle("u1", 0, None)).await.status(), 201);
    assert_eq!(h.get("/bundles/main").await.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn finding9_unsigned_never_replaces_signed_unless_rollback() {
    // Keys and allow_unsigned both set.
    let h = TestServer::with(|c| c.publish.allow_unsigned = true).await;
    assert_eq!(h.publish("main", bundle("u0", 0, None)).await.status(), 201);
    assert_eq!(
        h.publish("main", bundle("s1", 2000, Some(&h.keys)))
            .await
            .status(),
        201,
        "signed over unsigned is a normal publish"
    );
    let tag = etag(&h.get("/bundles/main").await);
    let (s, v) = code(h.publish("main", bundle("u1", 0, None)).await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("unsigned_over_signed")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("\"s1\""), "{v}");
    assert_eq!(etag(&h.get("/bundles/main").await), tag, "s1 stays active");
    let r = h
        .http
        .put(h.url("/bundles/main?rollback=true&reason=back%20to%20unsigned"))
        .bearer_auth(PUBLISHER)
        .body(bundle("u1", 0, None))
        .send()
        .await
        .unwrap();
    let (s, v) = code(r).await;
    assert_eq!((s, v["revision"].as_str()), (201, Some("u1")), "{v}");
    h.shutdown().await;
}

#[tokio::test]
async fn finding12_store_errors_do_not_reach_clients() {
    let h = TestServer::start().await;
    h.publish_ok("main", bundle("r1", 1000, Some(&h.keys)))
        .await;
    // Break the store under the server: the blob folder becomes a file.
    let blobs = h.store().join("bundles/main/blobs");
    std::fs::remove_dir_all(&blobs).unwrap();
    std::fs::write(&blobs, b"not a folder").unwrap();
    let (s, v) = code(h.publish("main", bundle("r2", 2000, Some(&h.keys))).await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (500, Some("internal_error")),
        "{v}"
    );
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("error_id"), "{v}");
    let store = h.store().display().to_string();
    assert!(
        !msg.contains(&store) && !msg.contains("blobs") && !msg.contains("directory"),
        "the store's error text leaked: {msg}"
    );
    h.shutdown().await;
}

/// `bundle(rev, iat)` signed with the server's key and the payload `scope`.
fn signed_with_scope(rev: &str, iat: i64, keys: &Keys, scope: Option<&str>) -> Vec<u8> {
    let unsigned = bundle(rev, iat, None);
    let mut b = lockstep_bundle::read_tar_gz(
        &unsigned[..],
        &lockstep_bundle::ReadOptions {
            skip_verify: true,
            ..Default::default()
        },
    )
    .unwrap();
    lockstep_bundle::sign_bundle(
        &mut b,
        &lockstep_bundle::SigningConfig {
            key: keys.private.clone(),
            alg: "ES256".into(),
            key_id: Some(KID.into()),
            issued_at: Some(iat),
            scope: scope.map(str::to_string),
            ..Default::default()
        },
    )
    .unwrap();
    lockstep_bundle::write_tar_gz(&b, Vec::new()).unwrap()
}

#[tokio::test]
async fn finding12_a_bundle_scope_binds_signatures_to_one_bundle() {
    let h = TestServer::with(|c| {
        c.verification
            .get_or_insert_with(Default::default)
            .bundle_scopes
            .insert("main".into(), "bundle/main".into());
    })
    .await;
    for (scope, what) in [
        (None, "no scope"),
        (Some("bundle/other"), "another bundle's scope"),
    ] {
        let (s, v) = code(
            h.publish("main", signed_with_scope("r1", 1000, &h.keys, scope))
                .await,
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("bad_signature")),
            "{what}: {v}"
        );
        assert!(v["message"].as_str().unwrap().contains("scope"), "{v}");
    }
    let for_main = signed_with_scope("r1", 1000, &h.keys, Some("bundle/main"));
    assert_eq!(h.publish("main", for_main.clone()).await.status(), 201);
    // The same signed bytes are refused under a name they were not signed for.
    let (s, v) = code(h.publish("other", for_main).await).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_signature")), "{v}");
    // Bundles without an entry keep the server-wide scope (none).
    assert_eq!(
        h.publish("other", signed_with_scope("o1", 1000, &h.keys, None))
            .await
            .status(),
        201
    );
    h.shutdown().await;
}

#[tokio::test]
async fn older_revision_refused_unless_rollback() {
    let h = TestServer::start().await;
    assert_eq!(
        h.publish("main", bundle("r2", 2000, Some(&h.keys)))
            .await
            .status(),
        201
    );
    let old = bundle("r1", 1000, Some(&h.keys));
    let (s, v) = code(h.publish("main", old.clone()).await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("older_revision")),
        "{v}"
    );
    // A refused bundle leaves nothing in the store.
    let blobs = std::fs::read_dir(h.store().join("bundles/main/blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1);
    let tag = etag(&h.get("/bundles/main").await);
    // Explicit rollback through PUT needs a reason.
    let r = h
        .http
        .put(h.url("/bundles/main?rollback=true"))
        .bearer_auth(PUBLISHER)
        .body(old.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = h
        .http
        .put(h.url("/bundles/main?rollback=true&reason=r2%20breaks%20login&actor=alice"))
        .bearer_auth(PUBLISHER)
        .body(old)
        .send()
        .await
        .unwrap();
    let (s, v) = code(r).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["action"], "rollback");
    assert_eq!(v["revision"], "r1");
    assert_eq!(v["previous_revision"], "r2");
    // Finding 6: the operator is told lockstep agents will refuse it.
    assert!(
        v["warning"]
            .as_str()
            .is_some_and(|w| w.contains("bundle_rollback_refused") && w.contains("--signing-key")),
        "{v}"
    );
    assert_ne!(etag(&h.get("/bundles/main").await), tag);
    // Same iat is not older.
    assert_eq!(
        h.publish("main", bundle("r1b", 1000, Some(&h.keys)))
            .await
            .status(),
        201
    );
    h.shutdown().await;
}

#[tokio::test]
async fn rollback_reactivates_a_kept_revision_and_is_recorded() {
    let h = TestServer::with(|c| c.history.keep_revisions = Some(3)).await;
    let r1 = bundle("r1", 1000, Some(&h.keys));
    for (rev, iat) in [("r1", 1000), ("r2", 2000), ("r3", 3000)] {
        assert_eq!(
            h.publish("main", bundle(rev, iat, Some(&h.keys)))
                .await
                .status(),
            201
        );
    }
    let rb = |body: Value, token: &'static str| {
        h.http
            .post(h.url("/bundles/main/rollback"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    // Credentials, reason, known revision.
    let body = json!({"revision": "r1", "reason": "r3 denies every tool", "actor": "alice"});
    assert_eq!(rb(body.clone(), DOWNLOAD).await.unwrap().status(), 401);
    assert_eq!(
        rb(json!({"revision": "r1", "reason": " "}), PUBLISHER)
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        rb(json!({"revision": "nope", "reason": "x"}), PUBLISHER)
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        rb(json!({"revision": "r3", "reason": "x"}), PUBLISHER)
            .await
            .unwrap()
            .status(),
        409
    );
    let (s, v) = code(rb(body, PUBLISHER).await.unwrap()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revision"], "r1");
    // r1's exact bytes are served again.
    let r = h.get("/bundles/main").await;
    assert_eq!(r.headers()["x-lockstep-revision"], "r1");
    assert_eq!(r.bytes().await.unwrap().to_vec(), r1);
    // A newer publication after a rollback is accepted (r4 newer than r3).
    // History.
    let hist: Value = h
        .http
        .get(h.url("/bundles/main/history"))
        .bearer_auth(PUBLISHER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = hist["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["action"], "rollback");
    assert_eq!(events[0]["revision"], "r1");
    assert_eq!(events[0]["previous_revision"], "r3");
    assert_eq!(events[0]["actor"], "alice");
    assert_eq!(events[0]["reason"], "r3 denies every tool");
    assert_eq!(events[1]["action"], "publish");
    assert_eq!(events[1]["actor"], "ci-bot");
    assert!(events[1]["at"].as_str().unwrap().contains('T'));
    assert_eq!(hist["active"]["revision"], "r1");
    let revs: Vec<&str> = hist["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_str().unwrap())
        .collect();
    assert_eq!(revs, ["r3", "r2", "r1"]);
    // Keeping 3: a fourth publication drops r1... but r1 is active, so it stays served.
    assert_eq!(
        h.publish("main", bundle("r4", 4000, Some(&h.keys)))
            .await
            .status(),
        201
    );
    let hist: Value = h
        .http
        .get(h.url("/bundles/main/history"))
        .bearer_auth(PUBLISHER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revs: Vec<&str> = hist["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_str().unwrap())
        .collect();
    assert_eq!(revs, ["r4", "r3", "r2"]);
    assert_eq!(
        rb(json!({"revision": "r1", "reason": "x"}), PUBLISHER)
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(
        !h.store()
            .join("bundles/main/blobs")
            .join(format!("{}.tar.gz", hex_sha(&r1)))
            .exists()
    );
    h.shutdown().await;
}

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn state_survives_a_restart() {
    let h = TestServer::start().await;
    let body = bundle("r1", 1000, Some(&h.keys));
    h.publish("main", body.clone()).await;
    let tag = etag(&h.get("/bundles/main").await);
    let cfg = config(&h.store(), h.dir.path(), &h.keys);
    let TestServer {
        dir,
        keys,
        server,
        http,
        ..
    } = h;
    server.unwrap().shutdown().await.unwrap();
    let s = lockstep_server::start(&cfg).await.unwrap();
    let r = http
        .get(format!("http://{}/bundles/main", s.addr))
        .bearer_auth(DOWNLOAD)
        .send()
        .await
        .unwrap();
    assert_eq!(etag(&r), tag);
    // Rollback protection holds across restarts.
    let r = publish_to(
        &http,
        &format!("http://{}", s.addr),
        "main",
        bundle("r0", 10, Some(&keys)),
    )
    .await;
    assert_eq!(r.status(), 409);
    s.shutdown().await.unwrap();
    drop(dir);
}

/// Security review finding 11: the server served whatever it read back from the store.
/// Bytes that do not hash to their content id, or that do not verify with the server's
/// keys, are now not served (the store is writable by every replica and its operators).
#[tokio::test]
async fn finding11_bundles_read_back_from_the_store_are_verified() {
    let mut h = TestServer::start().await;
    let good = bundle("r1", 1000, Some(&h.keys));
    h.publish_ok("main", good.clone()).await;
    let blobs = h.store().join("bundles/main/blobs");
    let evil = tampered("r1", 1000, &h.keys);
    // 1. The blob is replaced in place: its hash no longer matches the content id.
    h.stop().await;
    std::fs::write(blobs.join(format!("{}.tar.gz", hex_sha(&good))), &evil).unwrap();
    h.restart().await;
    let r = h.get("/bundles/main").await;
    assert_ne!(r.status(), 200);
    // 2. The state is rewritten to point at a tampered blob stored under its own hash:
    //    the hash matches, the signature does not.
    h.stop().await;
    std::fs::write(blobs.join(format!("{}.tar.gz", hex_sha(&evil))), &evil).unwrap();
    for e in std::fs::read_dir(h.store().join("bundles/main/state")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(&hex_sha(&good), &hex_sha(&evil));
        std::fs::write(&p, text).unwrap();
    }
    h.restart().await;
    let r = h.get("/bundles/main").await;
    assert_ne!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_ne!(body.as_ref(), evil.as_slice());
    // A new, good publication is served again.
    h.publish_ok("main", bundle("r2", 2000, Some(&h.keys)))
        .await;
    assert_eq!(h.get("/bundles/main").await.status(), 200);
    h.shutdown().await;
}
