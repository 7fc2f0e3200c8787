//! The one decision path: freshness gate → evaluate on the active revision →
//! interpret → metric → decision-log event. The agent's REST API, both Envoy modes
//! and the MCP gateway call [`Decider::decide`]; each only turns the [`Decision`] into
//! its own wire answer.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use lockstep_policy::{EvalError, PolicySet};
use lockstep_sync::{Active, Gate, Syncer};
use serde_json::Value as Json;

use crate::event::{DecisionEvent, EventError, bundle_revisions};
use crate::logger::DecisionLogger;
use crate::metrics::DecisionMetrics;

/// What is being decided, as the decision log records it.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRequest<'a> {
    /// The decision's path under `data`, slash-separated (logged as `path`).
    pub path: &'a str,
    pub input: Option<&'a Json>,
    /// The caller's address (logged as `requested_by`).
    pub remote: Option<SocketAddr>,
}

/// How a decision ended.
#[derive(Debug)]
pub enum Outcome<T, E> {
    /// Evaluated and interpreted.
    Decided(T),
    /// No revision may decide now (none active yet, or the lease expired with
    /// `on_stale: deny`): the reason, for the caller's denial.
    FailClosed(String),
    /// The policy could not be evaluated.
    EvalFailed(EvalError),
    /// Evaluated, but the result is not a decision the caller understands (undefined,
    /// wrong shape).
    Rejected(E),
}

/// One decision: its id, the revision that made it, and the outcome.
#[derive(Debug)]
pub struct Decision<T, E> {
    pub id: String,
    /// The active state the decision was made with (or, when failing closed, the one
    /// that was too stale to use, if any).
    pub active: Option<Arc<Active>>,
    /// Set when the lease expired and `on_stale: serve` decided anyway.
    pub stale_warning: Option<String>,
    pub outcome: Outcome<T, E>,
    /// Nanoseconds in evaluation alone.
    pub eval_ns: u64,
    /// Nanoseconds from the start of [`Decider::decide`] to the outcome.
    pub total_ns: u64,
}

impl<T, E> Decision<T, E> {
    /// The revision that decided (empty revisions, as with OPAL-only policies, are none).
    pub fn revision(&self) -> Option<&str> {
        self.active
            .as_deref()
            .map(Active::revision)
            .filter(|r| !r.is_empty())
    }
}

fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Decides against the sync engine's active revision; cheap to clone.
#[derive(Debug, Clone)]
pub struct Decider {
    syncer: Syncer,
    logger: Option<DecisionLogger>,
    metrics: DecisionMetrics,
}

/// The memo counters every revision the syncer compiles shares.
fn syncer_memo(syncer: &Syncer) -> lockstep_policy::MemoTotals {
    syncer.config().compile.memo.totals.clone()
}

impl Decider {
    pub fn new(syncer: Syncer, logger: Option<DecisionLogger>) -> Self {
        let metrics = DecisionMetrics::with_memo(syncer_memo(&syncer));
        Decider {
            syncer,
            logger,
            metrics,
        }
    }

    pub fn syncer(&self) -> &Syncer {
        &self.syncer
    }

    pub fn logger(&self) -> Option<&DecisionLogger> {
        self.logger.as_ref()
    }

    pub fn metrics(&self) -> &DecisionMetrics {
        &self.metrics
    }

    /// Decides `req` with one active revision: `eval` evaluates on its policy,
    /// `interpret` turns the result into what the caller answers with. The metric and
    /// the decision-log event are recorded here, whatever the outcome.
    pub fn decide<T, E: Display>(
        &self,
        req: DecisionRequest<'_>,
        eval: impl FnOnce(&PolicySet) -> Result<Option<Json>, EvalError>,
        interpret: impl FnOnce(Option<&Json>) -> Result<T, E>,
    ) -> Decision<T, E> {
        let t0 = Instant::now();
        let id = uuid::Uuid::new_v4().to_string();
        let (active, warning) = match self.syncer.gate() {
            Gate::Deny { reason, active } => {
                let error = EventError {
                    code: "lockstep_fail_closed",
                    message: reason.clone(),
                };
                self.finish(
                    &req,
                    &id,
                    active.as_deref(),
                    None,
                    Some(error),
                    "fail_closed",
                    t0,
                );
                return Decision {
                    id,
                    active,
                    stale_warning: None,
                    outcome: Outcome::FailClosed(reason),
                    eval_ns: 0,
                    total_ns: nanos(t0),
                };
            }
            Gate::Serve { active, warning } => (active, warning),
        };
        let t_eval = Instant::now();
        let evaluated = eval(active.policy());
        let eval_ns = nanos(t_eval);
        let (outcome, result, error, label) = match evaluated {
            Err(e) => {
                let error = EventError {
                    code: "eval_error",
                    message: e.to_string(),
                };
                (Outcome::EvalFailed(e), None, Some(error), "error")
            }
            Ok(value) => match interpret(value.as_ref()) {
                Ok(t) => (Outcome::Decided(t), value, None, "ok"),
                Err(e) => {
                    let error = EventError {
                        code: "eval_error",
                        message: e.to_string(),
                    };
                    (Outcome::Rejected(e), value, Some(error), "error")
                }
            },
        };
        if label == "ok" && warning.is_some() {
            self.metrics.stale.inc();
        }
        self.finish(&req, &id, Some(&active), result, error, label, t0);
        Decision {
            id,
            active: Some(active),
            stale_warning: warning,
            outcome,
            eval_ns,
            total_ns: nanos(t0),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        req: &DecisionRequest<'_>,
        id: &str,
        active: Option<&Active>,
        result: Option<Json>,
        error: Option<EventError>,
        label: &'static str,
        t0: Instant,
    ) {
        self.metrics.count(label);
        self.metrics.duration.observe(t0.elapsed().as_secs_f64());
        if let Some(l) = &self.logger {
            let event = DecisionEvent {
                labels: self.syncer.config().labels.clone(),
                decision_id: id.to_string(),
                bundles: bundle_revisions(active),
                path: req.path.to_string(),
                input: req.input.cloned(),
                result,
                error,
                requested_by: DecisionEvent::requested_by(req.remote),
                timestamp: Utc::now(),
            };
            l.log(event.to_json());
        }
    }
}
