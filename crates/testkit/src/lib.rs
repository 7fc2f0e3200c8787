//! lockstep-testkit: what the tests of every lockstep crate share (dev-only, never
//! published). Keys and signed bundles made in memory ([`bundles`]), a real
//! `lockstep-server` on 127.0.0.1 over a temp folder ([`server`]), sync
//! configurations and a plain static bundle server ([`sync`]), started agents
//! ([`agent`]), child processes stopped on drop and Python venvs for the real peers
//! ([`procs`], [`python`]), `/metrics` scraping ([`metrics`]), waiting helpers
//! ([`wait`]) and the guide's files ([`fixtures`]).
//!
//! Must not: be a dependency of anything but tests, examples and benchmarks.
//!
//! Test support fails loudly: a harness that cannot start panics with the reason,
//! which is what a test wants, hence the allowances below.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod agent;
pub mod bundles;
pub mod fixtures;
pub mod metrics;
pub mod procs;
pub mod python;
pub mod server;
pub mod sync;
pub mod wait;

pub use bundles::{Keys, bundle, bundle_with, keys, policy_source, tampered};
pub use server::{DOWNLOAD, KID, PUBLISHER, STATUS, TestServer};
pub use wait::{eventually, free_port, json_of, tmp_path};
