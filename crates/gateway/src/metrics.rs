//! The gateway's `/metrics` (`prometheus-client`): requests by method, decision and
//! upstream, request latency, upstream failures and list fan-out omissions, plus the
//! decision metrics shared with the agent ([`lockstep_decision::DecisionMetrics`]) and,
//! read at scrape time, the active revision and whether it is fresh.

use std::sync::Mutex;

use lockstep_sync::{Gate, Syncer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// `allow`, `deny`, `refused`.
    pub decision: &'static str,
    /// The upstream the request went to, `""` for none (lists fan out: `*`).
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 50 µs .. ~52 s
    Histogram::new(exponential_buckets(5e-5, 2.0, 21))
}

#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: LatencyFamily,
    pub upstream_failures: Family<UpstreamLabels, Counter>,
    /// Upstreams left out of a list because they failed or were too slow.
    pub list_omissions: Family<UpstreamLabels, Counter>,
    /// Client GET streams open now.
    pub open_streams: Gauge,
    /// Access tokens refused (identity.oauth).
    pub token_refusals: Counter,
}

impl GatewayMetrics {
    pub fn new(decider: &lockstep_decision::Decider) -> GatewayMetrics {
        let mut r = Registry::with_prefix("lockstep");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: LatencyFamily = Family::new_with_constructor(latency);
        let upstream_failures = Family::<UpstreamLabels, Counter>::default();
        let list_omissions = Family::<UpstreamLabels, Counter>::default();
        let open_streams = Gauge::default();
        let token_refusals = Counter::default();
        r.register(
            "gateway_token_refusals",
            "OAuth access tokens refused (bad signature, expired, wrong issuer or audience, ...)",
            token_refusals.clone(),
        );
        r.register(
            "gateway_requests",
            "MCP requests, by method, decision and upstream",
            requests.clone(),
        );
        r.register(
            "gateway_request_duration_seconds",
            "Time from the request's arrival to the end of its answer",
            latency.clone(),
        );
        r.register(
            "gateway_upstream_failures",
            "Exchanges with an upstream that failed (transport, timeout, bad answer)",
            upstream_failures.clone(),
        );
        r.register(
            "gateway_list_omissions",
            "Upstreams left out of a list because they failed or missed the deadline",
            list_omissions.clone(),
        );
        r.register(
            "gateway_open_streams",
            "Client streams open now (2025-11-25 GET streams, 2026-07-28 subscriptions/listen)",
            open_streams.clone(),
        );
        // The same decision metric names as the agent's, so one dashboard reads both.
        decider.metrics().register(&mut r);
        r.register_collector(Box::new(Policy {
            syncer: decider.syncer().clone(),
        }));
        GatewayMetrics {
            registry: Mutex::new(r),
            requests,
            latency,
            upstream_failures,
            list_omissions,
            open_streams,
            token_refusals,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}

/// The active revision and freshness, read from the sync engine at scrape time.
#[derive(Debug)]
struct Policy {
    syncer: Syncer,
}

impl Collector for Policy {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (revision, stale) = match self.syncer.gate() {
            Gate::Serve { active, warning } => {
                (Some(active.revision().to_string()), warning.is_some())
            }
            Gate::Deny { active, .. } => (active.map(|a| a.revision().to_string()), true),
        };
        {
            let mut m = encoder.encode_descriptor(
                "gateway_revision_info",
                "The revision that decides this gateway's requests",
                None,
                MetricType::Gauge,
            )?;
            if let Some(revision) = revision {
                ConstGauge::new(1i64).encode(m.encode_family(&RevisionLabels { revision })?)?;
            }
        }
        let m = encoder.encode_descriptor(
            "gateway_policy_stale",
            "1 while the freshness lease has expired (or no revision is active)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(stale)).encode(m)
    }
}
