//! Decision counters and latency, registered into the embedder's Prometheus registry
//! (`prometheus-client`), so the agent and the gateway export the same names.

use lockstep_policy::MemoTotals;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
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
    /// `lockstep_decision_memo_{hits,misses}_total`, across revisions.
    pub memo: MemoTotals,
}

impl Default for DecisionMetrics {
    fn default() -> Self {
        Self::with_memo(MemoTotals::default())
    }
}

impl DecisionMetrics {
    /// With the memo counters of the compile options decisions are made with.
    pub fn with_memo(memo: MemoTotals) -> Self {
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
            memo,
        }
    }
}

/// The memo counters, read at scrape time.
#[derive(Debug)]
struct MemoCollector(MemoTotals);

impl Collector for MemoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "decision_memo_hits",
                "Decisions answered from the decision memo",
                self.0.hits(),
            ),
            (
                "decision_memo_misses",
                "Decisions evaluated because the memo had no entry for their footprint",
                self.0.misses(),
            ),
        ] {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(m)?;
        }
        Ok(())
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
        registry.register_collector(Box::new(MemoCollector(self.memo.clone())));
    }

    pub(crate) fn count(&self, outcome: &'static str) {
        self.decisions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}
