//! Decision counters and latency, registered into the embedder's Prometheus registry
//! (`prometheus-client`), so the agent and the gateway export the same names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// What [`crate::Decider`] records per decision.
#[derive(Debug, Clone)]
pub struct DecisionMetrics {
    /// `lockstep_decisions_total{outcome="ok|fail_closed|error"}`.
    pub decisions: Family<OutcomeLabels, Counter>,
    /// `lockstep_decisions_stale_total`: decided from a stale policy (`on_stale: serve`).
    pub stale: Counter,
    /// `lockstep_decision_duration_seconds`: gate + evaluation + interpretation.
    pub duration: Histogram,
}

impl Default for DecisionMetrics {
    fn default() -> Self {
        let decisions = Family::<OutcomeLabels, Counter>::default();
        // Every outcome is present from the start, at 0.
        for outcome in ["ok", "fail_closed", "error"] {
            let _ = decisions.get_or_create(&OutcomeLabels { outcome });
        }
        DecisionMetrics {
            decisions,
            stale: Counter::default(),
            // 1 µs .. ~4 s
            duration: Histogram::new(exponential_buckets(1e-6, 4.0, 12)),
        }
    }
}

impl DecisionMetrics {
    /// Adds these metrics to `registry` (whose prefix gives `lockstep_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "decisions",
            "Decisions answered, by outcome",
            self.decisions.clone(),
        );
        registry.register(
            "decisions_stale",
            "Decisions served from a stale policy (on_stale: serve)",
            self.stale.clone(),
        );
        registry.register(
            "decision_duration_seconds",
            "Time to decide: freshness gate, evaluation and interpretation",
            self.duration.clone(),
        );
    }

    pub(crate) fn count(&self, outcome: &'static str) {
        self.decisions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}
