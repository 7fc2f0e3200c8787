//! The guide's layers on one revision: for a request, every configured layer that
//! decides its method is evaluated in order on the same active policy, through
//! lockstep's one decision path ([`lockstep_decision::Decider`]), and the first layer
//! whose `allow` is not `true` denies with its `deny_reason`.

use lockstep_decision::{Decider, DecisionRequest, Outcome};
use lockstep_policy::{EvalError, Input, PolicySet};
use serde_json::{Value, json};

use crate::config::LayerConfig;
use crate::denial::{Denial, DenialKind};
use crate::naming::ListKind;

/// What the layers said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        /// The layers that decided (empty: no layer decides this method).
        layers: Vec<String>,
    },
    Deny {
        layer: String,
        reason: String,
        /// Answer a `tools/call` denial as an `isError` result.
        as_tool_error: bool,
    },
}

/// A verdict with the decision's id and revision, or why there is none.
#[derive(Debug, Clone)]
pub struct Decided {
    pub decision_id: String,
    pub revision: Option<String>,
    /// `Err` is a denial that no layer made: fail closed (no revision, stale) or an
    /// evaluation error.
    pub verdict: Result<Verdict, Denial>,
}

impl Decided {
    /// The denial to answer with, if any.
    pub fn denial(&self) -> Option<Denial> {
        match &self.verdict {
            Ok(Verdict::Allow { .. }) => None,
            Ok(Verdict::Deny { layer, reason, .. }) => Some(Denial {
                kind: DenialKind::Policy,
                reason: reason.clone(),
                layer: Some(layer.clone()),
                decision_id: self.decision_id.clone(),
                revision: self.revision.clone(),
            }),
            Err(d) => Some(d.clone()),
        }
    }
}

/// Evaluates `layers` that apply to `method` in order; the JSON the decision log
/// records: `{"allow": bool, "layer"?: path, "reason"?: text, "layers": [...]}`.
fn evaluate(
    policy: &PolicySet,
    layers: &[&LayerConfig],
    input: &Input,
) -> Result<Option<Value>, EvalError> {
    let mut decided = Vec::new();
    for layer in layers {
        decided.push(layer.path.clone());
        let allow = policy.eval_data_path_input(&layer.rule("allow"), Some(input))?;
        if allow != Some(Value::Bool(true)) {
            let reason = match policy.eval_data_path_input(&layer.rule("deny_reason"), Some(input))
            {
                Ok(Some(Value::String(s))) => s,
                Ok(Some(other)) => other.to_string(),
                // A layer without a deny_reason rule still denies, and says which.
                Ok(None) | Err(_) => format!("denied by {}", layer.path),
            };
            return Ok(Some(json!({
                "allow": false,
                "layer": layer.path,
                "reason": reason,
                "layers": decided,
            })));
        }
    }
    Ok(Some(json!({"allow": true, "layers": decided})))
}

/// Why the layers' evaluation is not a verdict (the gateway then fails closed).
#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    #[error("the layers gave no decision")]
    Undefined,
    #[error("malformed layer decision")]
    Malformed,
}

fn interpret(value: Option<&Value>, layers: &[&LayerConfig]) -> Result<Verdict, VerdictError> {
    let v = value.ok_or(VerdictError::Undefined)?;
    let names = |v: &Value| -> Vec<String> {
        v.get("layers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    match v.get("allow") {
        Some(Value::Bool(true)) => Ok(Verdict::Allow { layers: names(v) }),
        Some(Value::Bool(false)) => {
            let layer = v
                .get("layer")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let as_tool_error = layers
                .iter()
                .any(|l| l.path == layer && l.deny_as_tool_error);
            Ok(Verdict::Deny {
                reason: v
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("denied")
                    .to_string(),
                layer,
                as_tool_error,
            })
        }
        _ => Err(VerdictError::Malformed),
    }
}

/// Decides `input` for `method` with the layers that apply to it. `path` names the
/// decision in the decision log (e.g. `mcp/tools/call`).
pub fn decide(
    decider: &Decider,
    layers: &[LayerConfig],
    method: &str,
    input: &Value,
    path: &str,
) -> Decided {
    decide_list(decider, layers, method, input, ListKind::Tools, &[], path).0
}

/// The layers that decide which entries of a `kind` list a caller sees: those marked
/// `filter_lists` that decide the entries' own method (`tools/call` for tools,
/// `prompts/get` for prompts, `resources/read` for resources), so a list shows what
/// the item requests would allow. None: every entry is shown.
pub fn list_filters(layers: &[LayerConfig], kind: ListKind) -> Vec<&LayerConfig> {
    layers
        .iter()
        .filter(|l| l.filter_lists && l.applies_to(kind.item_method()))
        .collect()
}

/// [`decide`] for a list request, and, on the same revision, which of `entries`
/// (one policy input per listed item of `kind`) the caller may see: each is decided by
/// the [`list_filters`]. The list and its entries are one decision, so a revision
/// swap during the list cannot mix revisions. `visible` has one flag per entry when
/// the list is allowed.
pub fn decide_list(
    decider: &Decider,
    layers: &[LayerConfig],
    method: &str,
    input: &Value,
    kind: ListKind,
    entries: &[Value],
    path: &str,
) -> (Decided, Vec<bool>) {
    let applicable: Vec<&LayerConfig> = layers.iter().filter(|l| l.applies_to(method)).collect();
    let filters = list_filters(layers, kind);
    let d = decider.decide(
        DecisionRequest {
            path,
            input: Some(input),
            remote: None,
        },
        |policy| {
            let converted = Input::from_json(input)?;
            let mut out = evaluate(policy, &applicable, &converted)?;
            if let Some(Value::Object(m)) = &mut out
                && m.get("allow") == Some(&Value::Bool(true))
                && !entries.is_empty()
            {
                let mut visible = Vec::with_capacity(entries.len());
                for e in entries {
                    if filters.is_empty() {
                        visible.push(Value::Bool(true));
                        continue;
                    }
                    let e = Input::from_json(e)?;
                    let shown = match evaluate(policy, &filters, &e)? {
                        Some(v) => v.get("allow") == Some(&Value::Bool(true)),
                        None => false,
                    };
                    visible.push(Value::Bool(shown));
                }
                m.insert("visible".into(), Value::Array(visible));
            }
            Ok(out)
        },
        |value| {
            let visible: Vec<bool> = value
                .and_then(|v| v.get("visible"))
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|b| b == &Value::Bool(true)).collect())
                .unwrap_or_default();
            interpret(value, &applicable).map(|v| (v, visible))
        },
    );
    let revision = d.revision().map(str::to_string);
    let denial = |kind, reason: String| Denial {
        kind,
        reason,
        layer: None,
        decision_id: d.id.clone(),
        revision: revision.clone(),
    };
    let (verdict, visible) = match d.outcome {
        Outcome::Decided((v, visible)) => (Ok(v), visible),
        Outcome::FailClosed(reason) => (
            Err(denial(DenialKind::PolicyUnavailable, reason)),
            Vec::new(),
        ),
        Outcome::EvalFailed(e) => (
            Err(denial(
                DenialKind::PolicyUnavailable,
                format!("policy evaluation failed, failing closed: {e}"),
            )),
            Vec::new(),
        ),
        Outcome::Rejected(e) => (
            Err(denial(
                DenialKind::PolicyUnavailable,
                format!("policy decision unusable, failing closed: {e}"),
            )),
            Vec::new(),
        ),
    };
    (
        Decided {
            decision_id: d.id,
            revision,
            verdict,
        },
        visible,
    )
}
