//! Bundle download: ETag/304, long polling, download auth, two replicas over one store.

use lockstep_testkit::prelude::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn etag_and_304() {
    let h = TestServer::start().await;
    assert_eq!(h.get("/bundles/main").await.status(), 404);
    let body = bundle("r1", 1000, Some(&h.keys));
    assert_eq!(h.publish("main", body.clone()).await.status(), 201);
    let r = h.get("/bundles/main").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.openpolicyagent.bundles"
    );
    let tag = etag(&r);
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() == 66,
        "{tag}"
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), body);
    // The guide's resource form.
    let r = h.get("/bundles/main.tar.gz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(etag(&r), tag);
    // Conditional requests.
    for inm in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"x\", {tag}"),
        "*".into(),
    ] {
        let r = h
            .http
            .get(h.url("/bundles/main"))
            .bearer_auth(DOWNLOAD)
            .header("if-none-match", inm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304);
        assert_eq!(etag(&r), tag);
    }
    let r = h
        .http
        .get(h.url("/bundles/main"))
        .bearer_auth(DOWNLOAD)
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Same bytes again: unchanged, same ETag.
    let r = h.publish("main", body).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["unchanged"], true);
    h.shutdown().await;
}

#[tokio::test]
async fn long_poll_wakes_on_publish_and_times_out_with_304() {
    let h = TestServer::start().await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    let tag = etag(&h.get("/bundles/main").await);

    // Timeout: 304 after about `wait` seconds.
    let t = Instant::now();
    let r = h
        .http
        .get(h.url("/bundles/main"))
        .bearer_auth(DOWNLOAD)
        .header("if-none-match", &tag)
        .header("prefer", "modes=snapshot,delta;wait=1")
        .send()
        .await
        .unwrap();
    let waited = t.elapsed();
    assert_eq!(r.status(), 304);
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // Wake-up: a held request answers within 100 ms of the publish.
    let http = h.http.clone();
    let url = h.url("/bundles/main");
    let tag2 = tag.clone();
    let poll = tokio::spawn(async move {
        let r = http
            .get(url)
            .bearer_auth(DOWNLOAD)
            .header("if-none-match", tag2)
            .header("prefer", "modes=snapshot,delta;wait=30")
            .send()
            .await
            .unwrap();
        (Instant::now(), r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "long poll answered before any change");
    let body2 = bundle("r2", 2000, Some(&h.keys));
    let publish_started = Instant::now();
    let pr = h.publish("main", body2.clone()).await;
    let published = Instant::now();
    assert_eq!(pr.status(), 201);
    let (answered, r) = poll.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.openpolicyagent.bundles"
    );
    assert_ne!(etag(&r), tag);
    assert_eq!(r.bytes().await.unwrap().to_vec(), body2);
    // The long poll must answer no later than 100 ms after the publish completed
    // (it is woken before the publisher even gets its answer).
    let latency = answered.saturating_duration_since(published);
    assert!(latency < Duration::from_millis(100), "latency {latency:?}");
    assert!(answered >= publish_started);
    h.shutdown().await;
}

#[tokio::test]
async fn long_poll_wait_is_capped() {
    let h = TestServer::with(|c| c.long_poll.max_wait_seconds = Some(1)).await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    let tag = etag(&h.get("/bundles/main").await);
    let t = Instant::now();
    let r = h
        .http
        .get(h.url("/bundles/main"))
        .bearer_auth(DOWNLOAD)
        .header("if-none-match", &tag)
        .header("prefer", "modes=snapshot,delta;wait=600")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(t.elapsed() < Duration::from_secs(3));
    h.shutdown().await;
}

#[tokio::test]
async fn download_needs_a_token() {
    let h = TestServer::start().await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    let r = h.http.get(h.url("/bundles/main")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    for bad in ["nope", PUBLISHER, ""] {
        let r = h
            .http
            .get(h.url("/bundles/main"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
    }
    // The status token can report but not download.
    let r = h
        .http
        .get(h.url("/bundles/main"))
        .bearer_auth(STATUS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    h.shutdown().await;
}

#[tokio::test]
async fn per_bundle_download_tokens() {
    let h = TestServer::with(|c| {
        let dir = c.store.folder.clone().unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = write_token(&dir, "team-a-token", "team-a-secret");
        t.bundles = vec!["team-a".into()];
        c.auth.download_tokens.push(t);
    })
    .await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    h.publish("team-a", bundle("a1", 1000, Some(&h.keys))).await;
    let get = |name: &str| {
        h.http
            .get(h.url(&format!("/bundles/{name}")))
            .bearer_auth("team-a-secret")
            .send()
    };
    assert_eq!(get("team-a").await.unwrap().status(), 200);
    assert_eq!(get("main").await.unwrap().status(), 401);
    // The fleet-wide token fetches both.
    assert_eq!(h.get("/bundles/team-a").await.status(), 200);
    assert_eq!(h.get("/bundles/main").await.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn finding10_scoped_download_tokens_see_only_their_bundles() {
    let h = TestServer::with(|c| {
        let dir = c.store.folder.clone().unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = write_token(&dir, "team-a-token", "team-a-secret");
        t.bundles = vec!["team-a".into()];
        c.auth.download_tokens.push(t);
    })
    .await;
    h.publish_ok("main", bundle("r1", 1000, Some(&h.keys)))
        .await;
    h.publish_ok("team-a", bundle("a1", 1000, Some(&h.keys)))
        .await;
    let r = h.report(&opa_status("m-1", "main", "r1")).await;
    assert_eq!(r.status(), 200);
    let r = h
        .report_with("team-a-secret", &opa_status("a-1", "team-a", "a1"))
        .await;
    assert_eq!(r.status(), 200);
    let get = |path: &str| h.http.get(h.url(path)).bearer_auth("team-a-secret").send();
    assert_eq!(get("/bundles/team-a/history").await.unwrap().status(), 200);
    assert_eq!(get("/bundles/main/history").await.unwrap().status(), 403);
    let view: serde_json::Value = get("/v1/fleet").await.unwrap().json().await.unwrap();
    let names = |v: &serde_json::Value, key: &str, field: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[field].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&view, "bundles", "name"), vec!["team-a"], "{view}");
    assert_eq!(names(&view, "instances", "id"), vec!["a-1"], "{view}");
    assert_eq!(get("/metrics").await.unwrap().status(), 403);
    // A fleet-wide token still sees everything.
    let all = h.fleet().await;
    assert_eq!(names(&all, "bundles", "name").len(), 2, "{all}");
    assert_eq!(names(&all, "instances", "id").len(), 2, "{all}");
    h.shutdown().await;
}

#[tokio::test]
async fn anonymous_download_only_when_allowed() {
    let h = TestServer::with(|c| {
        c.auth.download_tokens.clear();
        c.auth.allow_anonymous_download = true;
    })
    .await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    let r = h.http.get(h.url("/bundles/main")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn secure_by_default_startup() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let base = config(&dir.path().join("store"), dir.path(), &k);

    let mut c = base.clone();
    c.auth.publisher_token = None;
    let e = lockstep_server::start(&c).await.unwrap_err().to_string();
    assert!(e.contains("no publisher token"), "{e}");

    let mut c = base.clone();
    c.auth.download_tokens.clear();
    let e = lockstep_server::start(&c).await.unwrap_err().to_string();
    assert!(e.contains("--allow-anonymous-download"), "{e}");

    let mut c = base.clone();
    c.auth.publisher_token = Some(lockstep_server::auth::TokenSource {
        env: Some("LOCKSTEP_TEST_UNSET_VARIABLE".into()),
        ..Default::default()
    });
    let e = lockstep_server::start(&c).await.unwrap_err().to_string();
    assert!(e.contains("LOCKSTEP_TEST_UNSET_VARIABLE"), "{e}");

    let mut c = base.clone();
    c.keys.clear();
    let e = lockstep_server::start(&c).await.unwrap_err().to_string();
    assert!(e.contains("allow_unsigned"), "{e}");

    // Secrets never appear in Debug output of the loaded auth.
    let auth = base.auth().unwrap();
    let dbg = format!("{auth:?}");
    assert!(!dbg.contains(PUBLISHER) && !dbg.contains(DOWNLOAD) && !dbg.contains(STATUS));
}

#[tokio::test]
async fn two_replicas_over_one_folder_store_wake_their_long_polls() {
    let a = TestServer::start().await;
    // Replica B: same store folder, same keys and tokens.
    let mut cfg_b = config(&a.store(), a.dir.path(), &a.keys);
    cfg_b.store.watch_interval_ms = Some(50);
    let b = lockstep_server::start(&cfg_b).await.unwrap();
    let base_b = format!("http://{}", b.addr);

    a.publish("main", bundle("r1", 1000, Some(&a.keys))).await;
    // B learns the bundle from the store on first request.
    let r = a
        .http
        .get(format!("{base_b}/bundles/main"))
        .bearer_auth(DOWNLOAD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    for (round, publish_via_b) in [(2i64, false), (3, true)] {
        let cur = etag(&a.get("/bundles/main").await);
        let mut polls = Vec::new();
        for base in [&a.base, &base_b, &a.base, &base_b] {
            let http = a.http.clone();
            let url = format!("{base}/bundles/main");
            let cur = cur.clone();
            polls.push(tokio::spawn(async move {
                let r = http
                    .get(url)
                    .bearer_auth(DOWNLOAD)
                    .header("if-none-match", cur)
                    .header("prefer", "modes=snapshot,delta;wait=20")
                    .send()
                    .await
                    .unwrap();
                (Instant::now(), r.status().as_u16(), etag(&r))
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(polls.iter().all(|p| !p.is_finished()));
        let body = bundle(&format!("r{round}"), 1000 * round, Some(&a.keys));
        let via = if publish_via_b { &base_b } else { &a.base };
        assert_eq!(publish_to(&a.http, via, "main", body).await.status(), 201);
        let published = Instant::now();
        let mut tags = Vec::new();
        for p in polls {
            let (answered, status, tag) = p.await.unwrap();
            assert_eq!(status, 200);
            // The other replica notices within a few watch intervals (50 ms here).
            let lag = answered.saturating_duration_since(published);
            assert!(lag < Duration::from_secs(1), "round {round}: {lag:?}");
            assert_ne!(tag, cur);
            tags.push(tag);
        }
        tags.dedup();
        assert_eq!(tags.len(), 1, "every replica serves the same revision");
    }
    b.shutdown().await.unwrap();
    a.shutdown().await;
}

#[tokio::test]
async fn configurable_path_prefix() {
    let h = TestServer::with(|c| c.bundle_path_prefix = Some("/opa/b/".into())).await;
    let r = h
        .http
        .put(h.url("/opa/b/main"))
        .bearer_auth(PUBLISHER)
        .body(bundle("r1", 1000, Some(&h.keys)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(h.get("/opa/b/main.tar.gz").await.status(), 200);
    assert_eq!(h.get("/bundles/main").await.status(), 404);
    h.shutdown().await;
}
