//! Prometheus metrics (text format, `prometheus-client`).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BundleLabels {
    pub bundle: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub bundle: String,
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub bundle: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub bundle: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub bundle: String,
    pub code: String,
}

type HistogramFamily = Family<BundleLabels, Histogram, fn() -> Histogram>;

fn convergence_histogram() -> Histogram {
    // 10 ms .. ~5.8 h
    Histogram::new(exponential_buckets(0.01, 2.0, 21))
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub instances: Family<RevisionLabels, Gauge>,
    pub drifting: Family<BundleLabels, Gauge>,
    pub unreachable: Family<BundleLabels, Gauge>,
    pub convergence: HistogramFamily,
    pub long_polls_waiting: Gauge,
    pub publishes: Family<ActionLabels, Counter>,
    pub refused: Family<RefusedLabels, Counter>,
    pub downloads: Family<ResponseLabels, Counter>,
    pub status_reports: Counter,
    pub cutover_spread: Family<BundleLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub cutover_late: Family<BundleLabels, Gauge>,
    pub cutover_unprepared: Family<BundleLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("lockstep");
        let instances = Family::<RevisionLabels, Gauge>::default();
        let drifting = Family::<BundleLabels, Gauge>::default();
        let unreachable = Family::<BundleLabels, Gauge>::default();
        let convergence: HistogramFamily = Family::new_with_constructor(convergence_histogram);
        let long_polls_waiting = Gauge::default();
        let publishes = Family::<ActionLabels, Counter>::default();
        let refused = Family::<RefusedLabels, Counter>::default();
        let downloads = Family::<ResponseLabels, Counter>::default();
        let status_reports = Counter::default();
        let cutover_spread =
            Family::<BundleLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let cutover_late = Family::<BundleLabels, Gauge>::default();
        let cutover_unprepared = Family::<BundleLabels, Gauge>::default();
        r.register(
            "cutover_spread_seconds",
            "Latest announced cut-over per bundle: last minus first activation instant reported",
            cutover_spread.clone(),
        );
        r.register(
            "cutover_late_instances",
            "Latest announced cut-over per bundle: instances ready only after the instant",
            cutover_late.clone(),
        );
        r.register(
            "cutover_unprepared_instances",
            "Latest announced cut-over per bundle: reachable instances that neither prepared nor switched after the instant",
            cutover_unprepared.clone(),
        );
        r.register(
            "fleet_instances",
            "Reporting instances per bundle and active revision",
            instances.clone(),
        );
        r.register(
            "fleet_drifting_instances",
            "Instances not on the desired revision (unreachable ones included)",
            drifting.clone(),
        );
        r.register(
            "fleet_unreachable_instances",
            "Instances silent for longer than unreachable_after_seconds",
            unreachable.clone(),
        );
        r.register(
            "convergence_seconds",
            "Time from a publication until every reporting instance reported its revision",
            convergence.clone(),
        );
        r.register(
            "long_polls_waiting",
            "Bundle requests currently held by long polling",
            long_polls_waiting.clone(),
        );
        r.register(
            "publications",
            "Accepted publications and rollbacks",
            publishes.clone(),
        );
        r.register(
            "bundles_refused",
            "Refused publications by reason",
            refused.clone(),
        );
        r.register(
            "bundle_responses",
            "Bundle download answers by status code",
            downloads.clone(),
        );
        r.register(
            "status_reports",
            "Status reports received",
            status_reports.clone(),
        );
        Metrics {
            registry: Mutex::new(r),
            instances,
            drifting,
            unreachable,
            convergence,
            long_polls_waiting,
            publishes,
            refused,
            downloads,
            status_reports,
            cutover_spread,
            cutover_late,
            cutover_unprepared,
        }
    }

    pub fn refuse(&self, bundle: &str, reason: &str) {
        self.refused
            .get_or_create(&RefusedLabels {
                bundle: bundle.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}
