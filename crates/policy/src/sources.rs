//! Module sources kept for turning regorus's columns into OPA's.

use std::collections::HashMap;
use std::sync::Arc;

use lockstep_bundle::Module;

use crate::ast::opa_column;
use crate::error::Diagnostic;

/// File name -> source text, shared by every clone of a policy set.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    files: Arc<HashMap<String, String>>,
}

impl Sources {
    pub fn new(modules: &[Module]) -> Self {
        Self {
            files: Arc::new(
                modules
                    .iter()
                    .map(|m| (m.path.clone(), m.source.clone()))
                    .collect(),
            ),
        }
    }

    /// regorus counts a tab as 4 columns; OPA counts it as one.
    pub fn fix(&self, mut diag: Diagnostic) -> Diagnostic {
        if let Some(loc) = diag.location.as_mut() {
            let line = self.files.get(&loc.file).and_then(|src| {
                let idx = usize::try_from(loc.row).ok()?.checked_sub(1)?;
                src.lines().nth(idx)
            });
            if let Some(line) = line {
                loc.col = opa_column(line, loc.col);
            }
        }
        diag
    }
}
