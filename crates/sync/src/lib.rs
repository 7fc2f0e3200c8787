//! lockstep-sync: the client side of bundle distribution.
//!
//! Owns:
//! - **download** of OPA bundles with OPA's protocol: `If-None-Match` with the last
//!   activated ETag, periodic polling (`min_delay`..`max_delay` with uniform jitter) and
//!   long polling (`Prefer: modes=snapshot,delta;wait=N`, kept only while 200s carry
//!   `Content-Type: application/vnd.openpolicyagent.bundles`, as OPA does);
//! - **backoff** with jitter on errors (OPA's base 100 ms, factor 1.6, jitter 0.2);
//! - **activation**: verify the signature (required by default; skipping it is an
//!   explicit, logged choice) → refuse rollbacks (signed `iat` older than the active
//!   one's) → compile a fresh [`lockstep_policy::PolicySet`] → evaluate once → swap
//!   atomically. A bundle that fails any step leaves the active one in place and is
//!   reported;
//! - **persistence** of the last activated bundle's raw bytes (tmp + fsync + rename),
//!   verified again when loaded at start;
//! - the **freshness lease**: every successful answer from the bundle server (200 or
//!   304, long polls included) proves the instance current; without proof for
//!   `max_staleness` the instance denies (`on_stale: deny`, the default) or keeps
//!   serving and says so (`serve`); before any bundle is active every decision denies;
//! - the policies and data written through OPA's REST API (the overlay), compiled
//!   together with the bundles;
//! - **status reports** in OPA's status-plugin format;
//! - **OPA's config file** for all of the above ([`opa_config`]), so every process that
//!   embeds this engine reads the same file the same way.
//!
//! Must not: serve HTTP (that is `lockstep-agent`'s job) or know MCP.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod clock;
pub mod config;
pub mod download;
mod engine;
pub mod opa_config;
pub mod overlay;
pub(crate) mod persist;
pub mod status;

pub use config::{
    BundleSource, Credentials, OnStale, Polling, Service, StatusTarget, SyncConfig, TokenSource,
    Verification,
};
pub use engine::{
    Active, ActiveBundle, DataWrite, Gate, StartError, Syncer, WriteError, WriteOutcome,
};
pub use status::{BundleStatus, ROLLBACK_REFUSED, StatusReport};

/// `Content-Type` a bundle server sends on a 200 to keep a client in long-poll mode.
pub use lockstep_bundle::protocol::BUNDLE_CONTENT_TYPE;
