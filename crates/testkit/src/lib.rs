//! lockstep-testkit: what the tests of every lockstep crate share (dev-only, never
//! published). Keys and signed bundles made in memory ([`bundles`]), a real
//! `lockstep-server` on 127.0.0.1 over a temp folder ([`server`]), sync
//! configurations and a plain static bundle server ([`sync`]), started agents
//! ([`agent`]), gateways in front of a recording MCP upstream ([`gateway`]), child
//! processes stopped on drop and Python venvs for the real peers ([`procs`],
//! [`python`]), `/metrics` scraping ([`metrics`]), raw TCP for listener limits
//! ([`raw`]), an OAuth issuer with a JWKS ([`oauth`]), waiting helpers ([`wait`]) and the guide's files ([`fixtures`]).
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
pub mod cutover;
pub mod fixtures;
pub mod gateway;
pub mod metrics;
pub mod oauth;
pub mod procs;
pub mod python;
pub mod raw;
pub mod server;
pub mod sync;
pub mod wait;

/// Everything, for `use lockstep_testkit::prelude::*;` in a test file.
pub mod prelude {
    pub use crate::agent::*;
    pub use crate::bundles::*;
    pub use crate::fixtures::*;
    pub use crate::gateway::*;
    pub use crate::metrics::{sample, scrape};
    pub use crate::oauth::{IssuerKey, TestIssuer};
    pub use crate::procs::{Proc, run, spawn, wait_for_line};
    pub use crate::python::{VenvSpec, mcp_peers, mcp_venv};
    pub use crate::raw::*;
    pub use crate::server::*;
    pub use crate::sync::*;
    pub use crate::wait::*;
}
