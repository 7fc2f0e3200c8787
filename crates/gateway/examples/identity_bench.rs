//! The gateway's identity costs per call, in process (BENCHMARKS.md H):
//! checking an OAuth access token with the issuer's keys cached, minting an ephemeral
//! upstream token, and, for scale, looking up an API key.
//!
//!   cargo run --release -p lockstep-gateway --example identity_bench [-- --n 20000]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use lockstep_auth::jwt::{JwtConfig, JwtValidator};
use lockstep_gateway::api_keys::ApiKeys;
use lockstep_gateway::config::UpstreamTokensConfig;
use lockstep_gateway::upstream_token::{Grant, UpstreamTokens, arguments_sha256};
use lockstep_testkit::prelude::*;
use serde_json::json;

/// A throwaway Ed25519 key for this benchmark only.
const BENCH_ED25519: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINlHH94nznz2OI9b7hNeFgEyIA6hWT6le/eI8g4PrLzo\n-----END PRIVATE KEY-----\n";

/// Median per-operation time over 10 batches of `n / 10`.
fn per_op(n: usize, mut f: impl FnMut()) -> Duration {
    let batch = (n / 10).max(1);
    let mut t: Vec<Duration> = (0..10)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..batch {
                f();
            }
            t0.elapsed() / batch as u32
        })
        .collect();
    t.sort();
    t[5]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let mut n = 20_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--n" => n = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (first, validate, mint, mint_ed, digest, key) = rt.block_on(async {
        let issuer = TestIssuer::start().await;
        let audience = "http://127.0.0.1:8383/mcp";
        let token = issuer.token(&issuer.claims(audience, "agent-7", "analyst"));
        let mut uncached_cfg = JwtConfig::new(&issuer.issuer, &issuer.jwks_uri, audience);
        uncached_cfg.max_cached_tokens = 0;
        let uncached = JwtValidator::new(uncached_cfg).unwrap();
        uncached.validate(&token).await.unwrap(); // fetches and caches the key set
        let first = {
            let t0 = Instant::now();
            for _ in 0..n / 10 {
                uncached.validate(&token).await.unwrap();
            }
            t0.elapsed() / (n / 10) as u32
        };
        let v =
            JwtValidator::new(JwtConfig::new(&issuer.issuer, &issuer.jwks_uri, audience)).unwrap();
        v.validate(&token).await.unwrap(); // fetches and caches the key set
        let validate = {
            let batch = (n / 10).max(1);
            let mut t = Vec::new();
            for _ in 0..10 {
                let t0 = Instant::now();
                for _ in 0..batch {
                    v.validate(&token).await.unwrap();
                }
                t.push(t0.elapsed() / batch as u32);
            }
            t.sort();
            t[5]
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k1.pem"), keys().private).unwrap();
        let tokens = UpstreamTokens::load(UpstreamTokensConfig {
            issuer: "https://gateway.example".into(),
            keys_dir: dir.path().to_path_buf(),
            lifetime: Duration::from_secs(60),
            activation_delay: Duration::ZERO,
        })
        .unwrap();
        let args = json!({"target": "users", "operation": "read", "database": "analytics"});
        let grant = || Grant {
            audience: "https://db.internal/mcp",
            subject: "agent-7",
            scope: "tools/call:read_database".into(),
            arguments_sha256: Some(arguments_sha256(&args)),
            decision_id: Some("0b7c7c5e-5d0e-4a4f-9d64-6f1d2a1f3c11"),
            revision: Some("r1"),
        };
        let ed_dir = tempfile::tempdir().unwrap();
        std::fs::write(ed_dir.path().join("ed.pem"), BENCH_ED25519).unwrap();
        let ed_tokens = UpstreamTokens::load(UpstreamTokensConfig {
            issuer: "https://gateway.example".into(),
            keys_dir: ed_dir.path().to_path_buf(),
            lifetime: Duration::from_secs(60),
            activation_delay: Duration::ZERO,
        })
        .unwrap();
        let mint_ed = per_op(n, || {
            std::hint::black_box(ed_tokens.mint(&grant()).unwrap());
        });
        let mint = per_op(n, || {
            let g = Grant {
                audience: "https://db.internal/mcp",
                subject: "agent-7",
                scope: "tools/call:read_database".into(),
                arguments_sha256: Some(arguments_sha256(&args)),
                decision_id: Some("0b7c7c5e-5d0e-4a4f-9d64-6f1d2a1f3c11"),
                revision: Some("r1"),
            };
            std::hint::black_box(tokens.mint(&g).unwrap());
        });
        let digest = per_op(n, || {
            std::hint::black_box(arguments_sha256(&args));
        });
        let keys_file = format!(
            "keys:\n{}",
            (0..100)
                .map(|i| format!(
                    "  - key: lsk_bench_{i:04}_0123456789abcdef0123456789\n    id: k{i}\n"
                ))
                .collect::<String>()
        );
        let api = ApiKeys::parse(&keys_file).unwrap();
        let key = per_op(n, || {
            std::hint::black_box(api.authenticate("lsk_bench_0099_0123456789abcdef0123456789"));
        });
        (first, validate, mint, mint_ed, digest, key)
    });
    println!("| operation, per call | µs |");
    println!("| --- | ---: |");
    println!(
        "| OAuth access token, first check (ES256 signature with the JWKS cached, iss, aud, exp, nbf) | {:.1} |",
        us(first)
    );
    println!(
        "| OAuth access token, same token again (checked-token cache, exp re-checked) | {:.1} |",
        us(validate)
    );
    println!(
        "| upstream token minted, ES256 key (signature, claims, argument digest) | {:.1} |",
        us(mint)
    );
    println!(
        "| upstream token minted, Ed25519 key (EdDSA) | {:.1} |",
        us(mint_ed)
    );
    println!(
        "|   of which the argument digest (canonical JSON + SHA-256) | {:.1} |",
        us(digest)
    );
    println!(
        "| API key lookup (100 keys, constant time) | {:.1} |",
        us(key)
    );
}
