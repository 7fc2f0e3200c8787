//! In-memory shape of a bundle, shared by every crate that handles one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `.manifest` file. Unknown fields are kept so a rebuild does not lose them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// OPA writes `"revision":""` when unset, so the field is never omitted.
    #[serde(default)]
    pub revision: String,
    /// `None` means "owns everything" (`[""]`); `Some(vec![])` owns nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roots: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rego_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_rego_versions: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Manifest {
    /// Roots as OPA sees them: missing means `[""]`, slashes trimmed.
    pub fn effective_roots(&self) -> Vec<String> {
        match &self.roots {
            None => vec![String::new()],
            Some(r) => r.iter().map(|s| s.trim_matches('/').to_string()).collect(),
        }
    }
}

/// A Rego module as it sits in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Entry path inside the bundle, without a leading `/` (e.g. `mcp/tool_access.rego`).
    pub path: String,
    pub source: String,
    /// 0 or 1, resolved from `file_rego_versions`, then `rego_version`, then the default (1).
    pub rego_version: i64,
}

/// One file of the archive, byte-exact, for hashing, signing and re-writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Entry path without a leading `/`.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// A fully read (and, if asked, verified) bundle.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    pub manifest: Manifest,
    /// Merged data tree from every `data.json` / `data.yaml`, always an object.
    pub data: Value,
    pub modules: Vec<Module>,
    /// Every file except `.signatures.json`, in sorted path order.
    pub files: Vec<BundleFile>,
    /// The raw `.signatures.json`, when present.
    pub signatures: Option<crate::model::SignaturesConfig>,
}

/// `.signatures.json`: `{"signatures": ["<JWS>"], "plugin": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignaturesConfig {
    #[serde(default)]
    pub signatures: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}
