//! The agent's listeners against slow and idle clients (security review finding 4):
//! the REST API, the Envoy HTTP-mode listener and the Envoy gRPC listener close
//! unfinished request heads after `lockstep.listener.header_read_timeout` and stop at
//! `max_connections`.

use std::time::{Duration, Instant};

use lockstep_agent::EnvoyConfig;
use lockstep_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding4_agent_listeners_close_unfinished_headers() {
    let server = TestServer::start().await;
    server
        .publish_ok("main", bundle("r1", 1000, Some(&server.keys)))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent_with(&server, dir.path(), None, |c| {
        c.listener.header_read_timeout = Duration::from_millis(300);
        c.envoy_http = Some(EnvoyConfig {
            addr: "127.0.0.1:0".into(),
            ..EnvoyConfig::default()
        });
        c.envoy = Some(EnvoyConfig {
            addr: "127.0.0.1:0".into(),
            ..EnvoyConfig::default()
        });
    })
    .await;
    let http_addr = agent.envoy_http_addr.unwrap();
    // gRPC: an HTTP/2 preface cut short is the unfinished head there.
    let grpc_addr = agent.envoy_addr.unwrap();
    let mut s = send_raw(grpc_addr, b"PRI * HTTP/2.0\r\n").await;
    let t0 = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "gRPC {grpc_addr}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    for addr in [agent.addr, http_addr] {
        let mut s = send_raw(addr, b"POST /v1/da").await;
        let t0 = Instant::now();
        assert!(
            closed_within(&mut s, Duration::from_secs(3)).await,
            "{addr}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    // Whole requests are still served.
    let mut s = send_raw(agent.addr, &request_head("GET", "/health", &[])).await;
    assert!(
        status_within(&mut s, Duration::from_secs(3))
            .await
            .is_some()
    );
    agent.shutdown().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding4_agent_connections_beyond_the_limit_are_not_served() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent_with(&server, dir.path(), None, |c| {
        c.listener.max_connections = 1;
    })
    .await;
    let held = send_raw(agent.addr, b"").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut next = send_raw(agent.addr, &request_head("GET", "/health", &[])).await;
    assert_eq!(
        status_within(&mut next, Duration::from_millis(700)).await,
        None
    );
    drop(held);
    assert!(
        status_within(&mut next, Duration::from_secs(3))
            .await
            .is_some()
    );
    agent.shutdown().await.unwrap();
    server.shutdown().await;
}
