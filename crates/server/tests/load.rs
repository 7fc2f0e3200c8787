//! Many held long polls woken by one publish (bounded: N clients on 127.0.0.1, one
//! publish, then the server stops). `LOCKSTEP_LOAD_POLLS` sets N (default 1000).

use lockstep_testkit::prelude::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_long_polls_wake_on_one_publish() {
    let n: usize = std::env::var("LOCKSTEP_LOAD_POLLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let h = TestServer::start().await;
    h.publish("main", bundle("r1", 1000, Some(&h.keys))).await;
    let tag = etag(&h.get("/bundles/main").await);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()
        .unwrap();
    let mut polls = Vec::with_capacity(n);
    for _ in 0..n {
        let http = http.clone();
        let url = h.url("/bundles/main");
        let tag = tag.clone();
        polls.push(tokio::spawn(async move {
            let r = http
                .get(url)
                .bearer_auth(DOWNLOAD)
                .header("if-none-match", tag)
                .header("prefer", "modes=snapshot,delta;wait=30")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let _ = r.bytes().await.unwrap();
            (Instant::now(), status)
        }));
    }
    // Wait until every request is held.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = h.metrics(STATUS).await;
        if m.contains(&format!("lockstep_long_polls_waiting {n}\n")) {
            break;
        }
        assert!(Instant::now() < deadline, "not all polls held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    assert_eq!(
        h.publish("main", bundle("r2", 2000, Some(&h.keys)))
            .await
            .status(),
        201
    );
    let mut last = t;
    for p in polls {
        let (at, status) = p.await.unwrap();
        assert_eq!(status, 200);
        last = last.max(at);
    }
    let all = last.duration_since(t);
    eprintln!("{n} long polls answered with the new bundle {all:?} after the publish started");
    assert!(all < Duration::from_secs(5), "{all:?}");
    h.shutdown().await;
}
