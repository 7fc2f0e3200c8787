//! The agent's `/metrics`, through `prometheus-client`: the decision metrics of
//! [`lockstep_decision::DecisionMetrics`], the REST-write counter, and, read from the
//! sync engine and the decision logger at scrape time by [`LiveState`], the active
//! revision per bundle, its freshness and error flags, the policy generation and the
//! decision-log counters.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use lockstep_decision::{Decider, DecisionLogger};
use lockstep_sync::Syncer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    name: String,
    revision: String,
}

/// The agent's registry and its own counters.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Mutex<Registry>,
    /// `lockstep_policy_writes_total`: policy and data writes through the REST API.
    pub writes: Counter,
}

impl AgentMetrics {
    pub fn new(decider: &Decider) -> Self {
        let mut registry = Registry::with_prefix("lockstep");
        decider.metrics().register(&mut registry);
        let writes = Counter::default();
        registry.register(
            "policy_writes",
            "Policy and data writes through the REST API",
            writes.clone(),
        );
        registry.register_collector(Box::new(LiveState {
            syncer: decider.syncer().clone(),
            logger: decider.logger().cloned(),
        }));
        AgentMetrics {
            registry: Mutex::new(registry),
            writes,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}

/// Values owned elsewhere (the sync engine, the log writers), read on each scrape.
#[derive(Debug)]
struct LiveState {
    syncer: Syncer,
    logger: Option<DecisionLogger>,
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

impl Collector for LiveState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rep = self.syncer.status_report();
        {
            let mut m = encoder.encode_descriptor(
                "bundle_info",
                "Active revision of each bundle",
                None,
                MetricType::Gauge,
            )?;
            for (name, b) in &rep.bundles {
                let labels = RevisionLabels {
                    name: name.clone(),
                    revision: b.active_revision.clone(),
                };
                ConstGauge::new(1i64).encode(m.encode_family(&labels)?)?;
            }
        }
        for (metric, help, value) in [
            (
                "bundle_fresh",
                "1 while the freshness lease holds",
                (|b: &lockstep_sync::BundleStatus| b.lockstep.fresh) as fn(&_) -> bool,
            ),
            (
                "bundle_error",
                "1 while the last bundle request or activation failed",
                |b: &lockstep_sync::BundleStatus| b.code.is_some(),
            ),
            (
                "bundle_rollback_refused",
                "1 while the bundle server serves a bundle signed before the active one (refused)",
                |b: &lockstep_sync::BundleStatus| b.lockstep.refused_rollback.is_some(),
            ),
        ] {
            let mut m = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            for (name, b) in &rep.bundles {
                let labels = NameLabels { name: name.clone() };
                ConstGauge::new(i64::from(value(b))).encode(m.encode_family(&labels)?)?;
            }
        }
        if let Some(l) = &self.logger {
            counter(
                &mut encoder,
                "decision_logs_dropped",
                "Decision log events dropped (queue or buffer full, too large)",
                l.dropped_total(),
            )?;
            if let Some(u) = &l.upload_stats {
                counter(
                    &mut encoder,
                    "decision_logs_uploaded",
                    "Decision log events accepted by the log service",
                    u.uploaded_events.load(Ordering::Relaxed),
                )?;
                counter(
                    &mut encoder,
                    "decision_log_upload_failures",
                    "Upload attempts not answered 2xx",
                    u.failed_uploads.load(Ordering::Relaxed),
                )?;
                gauge(
                    &mut encoder,
                    "decision_logs_buffered",
                    "Events waiting for upload",
                    i64::try_from(u.buffered_events.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
                )?;
            }
        }
        let generation = self.syncer.active().map_or(0, |a| a.generation);
        gauge(
            &mut encoder,
            "policy_generation",
            "Activations and REST writes since start",
            i64::try_from(generation).unwrap_or(i64::MAX),
        )
    }
}
