//! OPA's query result set, as `opa eval` and the `/v1/query` API return it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::EvalError;

/// `[{"expressions": [...], "bindings": {...}}, ...]`: one entry per way the
/// query is satisfied. Empty when the query is undefined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResultSet(pub Vec<QueryResult>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    pub expressions: Vec<ExpressionValue>,
    /// Variables bound by the query. OPA omits the key when there are none.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub bindings: Map<String, Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpressionValue {
    pub value: Json,
    /// The expression's text in the query.
    pub text: String,
    pub location: QueryLocation,
}

/// Position of an expression in the query text (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryLocation {
    pub row: u32,
    pub col: u32,
}

impl ResultSet {
    pub(crate) fn from_regorus(results: &regorus::QueryResults) -> Result<Self, EvalError> {
        // regorus's QueryResults serialises to OPA's shape (`{"result": [...]}`,
        // key omitted when empty); going through JSON keeps us independent of its
        // field types.
        let json = serde_json::to_value(results).map_err(|e| EvalError::Output(e.to_string()))?;
        match json.get("result") {
            None => Ok(Self::default()),
            Some(list) => serde_json::from_value(list.clone())
                .map(Self)
                .map_err(|e| EvalError::Output(e.to_string())),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first expression's value of the first result: what a single-ref
    /// query (`data.x.y`) evaluates to. `None` when undefined.
    pub fn into_first_value(self) -> Option<Json> {
        self.0
            .into_iter()
            .next()
            .and_then(|r| r.expressions.into_iter().next())
            .map(|e| e.value)
    }

    /// `opa eval`'s JSON output: `{"result": [...]}`, or `{}` when undefined.
    pub fn to_eval_output(&self) -> Json {
        let mut out = Map::new();
        if !self.0.is_empty() {
            out.insert(
                "result".to_string(),
                serde_json::to_value(self).unwrap_or(Json::Null),
            );
        }
        Json::Object(out)
    }
}
