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
    /// Compact JSON, as written to `/.manifest`.
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, crate::BundleError> {
        serde_json::to_vec(self).map_err(|e| crate::BundleError::ManifestDecode(e.to_string()))
    }

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
    /// `patch.json` of a delta bundle (a bundle is delta iff this has at least one op).
    pub patch: Option<Patch>,
    /// The verified signature, when the bundle was read with verification and was signed.
    pub verified_signature: Option<crate::verify::DecodedSignature>,
}

impl Bundle {
    /// True for a delta bundle (`patch.json` with at least one operation).
    pub fn is_delta(&self) -> bool {
        self.patch.as_ref().is_some_and(|p| !p.data.is_empty())
    }

    /// The file at `path` (no leading `/`).
    pub fn file(&self, path: &str) -> Option<&BundleFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Replaces the `.manifest` file's bytes with the serialised [`Bundle::manifest`]
    /// (call after changing the manifest, before signing or writing).
    pub fn sync_manifest_file(&mut self) -> Result<(), crate::BundleError> {
        let bytes = self.manifest.to_json_bytes()?;
        match self.files.iter_mut().find(|f| f.path == MANIFEST_PATH) {
            Some(f) => f.bytes = bytes,
            None => {
                self.files.push(BundleFile {
                    path: MANIFEST_PATH.to_string(),
                    bytes,
                });
                self.files.sort_by(|a, b| a.path.cmp(&b.path));
            }
        }
        Ok(())
    }
}

/// Path of the manifest file inside a bundle.
pub const MANIFEST_PATH: &str = ".manifest";
/// Path of the signatures file inside a bundle.
pub const SIGNATURES_PATH: &str = ".signatures.json";

/// `patch.json`: `{"data": [{"op", "path", "value"}, ...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    #[serde(default)]
    pub data: Vec<PatchOperation>,
}

/// One delta operation (`upsert`, `remove`, `replace`; others fail at activation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatchOperation {
    #[serde(default)]
    pub op: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub value: Value,
}

/// `.signatures.json`: `{"signatures": ["<JWS>"], "plugin": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignaturesConfig {
    #[serde(default)]
    pub signatures: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}
