//! Shared state of one server replica.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::Auth;
use crate::body::BodyGate;
use crate::config::Verifications;
use crate::fleet::Fleet;
use crate::hub::Hub;
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    pub verification: Verifications,
    pub allow_unsigned: bool,
    pub keep_revisions: usize,
    /// `cutover:`: how far ahead activation instants are announced.
    pub cutover: crate::config::CutoverConfig,
    pub max_wait: Duration,
    pub max_bundle_bytes: usize,
    /// Publish and rollback bodies (`publish.max_bundle_bytes`, `publish.max_concurrent_uploads`).
    pub uploads: BodyGate,
    /// Status report bodies (4 MiB, `fleet.max_concurrent_reports`).
    pub reports: BodyGate,
    pub prefix: String,
    pub shutdown: watch::Receiver<bool>,
}
