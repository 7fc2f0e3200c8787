//! HTTPS, and client-certificate verification when `tls.client_ca` is set.
// Helpers outside #[test] functions (clippy.toml covers those) fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use lockstep_testkit::prelude::*;
use std::path::Path;

use lockstep_server::tls::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf(vec!["localhost".into(), "127.0.0.1".into()], &issuer);
    let client = leaf(vec!["opa-1".into()], &issuer);
    // A client certificate from another CA.
    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_issuer = Issuer::new(other_params, other_key);
    let stranger = leaf(vec!["mallory".into()], &other_issuer);
    Pki {
        ca_pem: ca_cert.pem(),
        server,
        client,
        stranger,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn client(ca: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn https_with_client_certificates() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut cfg = config(&dir.path().join("store"), dir.path(), &k);
    cfg.tls = Some(TlsConfig {
        cert: write(dir.path(), "server.pem", &p.server.0),
        key: write(dir.path(), "server-key.pem", &p.server.1),
        client_ca: Some(write(dir.path(), "ca.pem", &p.ca_pem)),
    });
    let s = lockstep_server::start(&cfg).await.unwrap();
    let base = format!("https://127.0.0.1:{}", s.addr.port());

    let good = client(&p.ca_pem, Some(&p.client));
    let r = publish_to(&good, &base, "main", bundle("r1", 1000, Some(&k))).await;
    assert_eq!(r.status(), 201);
    let r = good
        .get(format!("{base}/bundles/main"))
        .bearer_auth(DOWNLOAD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.openpolicyagent.bundles"
    );
    // No client certificate, or one from another CA: the handshake fails.
    for c in [
        client(&p.ca_pem, None),
        client(&p.ca_pem, Some(&p.stranger)),
    ] {
        let e = c
            .get(format!("{base}/bundles/main"))
            .bearer_auth(DOWNLOAD)
            .send()
            .await;
        assert!(e.is_err(), "{e:?}");
    }
    // Plain HTTP is not served.
    let e = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health", s.addr.port()))
        .send()
        .await;
    assert!(e.is_err() || !e.unwrap().status().is_success());
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn https_without_client_certificates() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut cfg = config(&dir.path().join("store"), dir.path(), &k);
    cfg.tls = Some(TlsConfig {
        cert: write(dir.path(), "server.pem", &p.server.0),
        key: write(dir.path(), "server-key.pem", &p.server.1),
        client_ca: None,
    });
    let s = lockstep_server::start(&cfg).await.unwrap();
    let base = format!("https://127.0.0.1:{}", s.addr.port());
    let c = client(&p.ca_pem, None);
    assert_eq!(
        c.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A held long poll ends with the server's shutdown.
    publish_to(&c, &base, "main", bundle("r1", 1000, Some(&k))).await;
    let tag = etag(
        &c.get(format!("{base}/bundles/main"))
            .bearer_auth(DOWNLOAD)
            .send()
            .await
            .unwrap(),
    );
    let poll = tokio::spawn({
        let c = c.clone();
        let url = format!("{base}/bundles/main");
        async move {
            c.get(url)
                .bearer_auth(DOWNLOAD)
                .header("if-none-match", tag)
                .header("prefer", "wait=30")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    s.shutdown().await.unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(poll.await.unwrap().unwrap(), 304);
}

#[tokio::test]
async fn bad_tls_files_refuse_startup() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut cfg = config(&dir.path().join("store"), dir.path(), &k);
    cfg.tls = Some(TlsConfig {
        cert: dir.path().join("missing.pem"),
        key: dir.path().join("missing-key.pem"),
        client_ca: None,
    });
    let e = lockstep_server::start(&cfg).await.unwrap_err().to_string();
    assert!(e.contains("tls cert"), "{e}");
}

/// Security review finding 4 on the TLS listener: a client that opens a connection and
/// never finishes the handshake (or its headers) is closed after the header timeout.
#[tokio::test]
async fn finding4_tls_connections_without_a_handshake_are_closed() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut cfg = config(&dir.path().join("store"), dir.path(), &k);
    cfg.tls = Some(TlsConfig {
        cert: write(dir.path(), "server.pem", &p.server.0),
        key: write(dir.path(), "server-key.pem", &p.server.1),
        client_ca: None,
    });
    cfg.listener.header_read_timeout_seconds = Some(0.3);
    let s = lockstep_server::start(&cfg).await.unwrap();
    // Half a ClientHello record header, then nothing.
    let mut c = send_raw(s.addr, &[0x16, 0x03, 0x01]).await;
    let t0 = std::time::Instant::now();
    assert!(closed_within(&mut c, std::time::Duration::from_secs(3)).await);
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
    // Real clients are still served.
    let http = client(&p.ca_pem, None);
    let r = http
        .get(format!("https://127.0.0.1:{}/health", s.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.shutdown().await.unwrap();
}
