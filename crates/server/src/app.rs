//! Shared state of one server replica.

use std::sync::Arc;
use std::time::Duration;

use lockstep_bundle::VerificationConfig;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::fleet::Fleet;
use crate::hub::Hub;
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    pub verification: Option<VerificationConfig>,
    pub allow_unsigned: bool,
    pub keep_revisions: usize,
    pub max_wait: Duration,
    pub max_bundle_bytes: usize,
    pub prefix: String,
    pub shutdown: watch::Receiver<bool>,
}
