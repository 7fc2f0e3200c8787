//! Policies and data written through OPA's REST API: the ownership check against
//! the bundles' roots, then a recompilation with the new overlay.

use super::types::{ActivationError, DataWrite, WriteError, WriteOutcome, compile_details};
use super::{Inner, State, Syncer, lock, root_segments};
use crate::overlay::{Overlay, display_path, parse_policy, segments_overlap};

impl Syncer {
    /// `PUT /v1/policies/{id}`.
    pub fn put_policy(&self, id: &str, raw: String) -> Result<(), WriteError> {
        if raw.trim().is_empty() {
            return Err(WriteError::BadRequest("empty module".into()));
        }
        let inner = &self.inner;
        // Paths as regorus parses them: the text may spell an owned path many ways.
        let policy =
            parse_policy(id, raw, &inner.cfg.compile).map_err(|e| WriteError::Compile {
                message: "error(s) occurred while compiling module(s)".into(),
                errors: compile_details(&e),
            })?;
        let mut st = lock(&inner.state);
        for claim in &policy.claims {
            if let Some(msg) = owner_of(&st, claim, false) {
                return Err(WriteError::Owned(msg));
            }
        }
        if st
            .overlay
            .policies
            .get(id)
            .is_some_and(|p| p.raw == policy.raw)
        {
            return Ok(());
        }
        let mut overlay = st.overlay.clone();
        overlay.policies.insert(id.to_string(), policy);
        inner.recompile(&mut st, overlay)
    }

    /// `DELETE /v1/policies/{id}`.
    pub fn delete_policy(&self, id: &str) -> Result<(), WriteError> {
        let inner = &self.inner;
        let mut st = lock(&inner.state);
        if !st.overlay.policies.contains_key(id) {
            return Err(WriteError::NotFound(format!(
                "storage_not_found_error: policy id {id:?}"
            )));
        }
        let mut overlay = st.overlay.clone();
        overlay.policies.remove(id);
        inner.recompile(&mut st, overlay)
    }

    /// Every module: bundle modules as `<bundle>/<path>`, then REST-written ones.
    pub fn policies(&self) -> Vec<(String, String)> {
        let st = lock(&self.inner.state);
        let mut out: Vec<(String, String)> = st
            .bundles
            .values()
            .flat_map(|l| l.modules.iter().map(|m| (m.path.clone(), m.source.clone())))
            .collect();
        out.extend(
            st.overlay
                .policies
                .iter()
                .map(|(id, p)| (id.clone(), p.raw.clone())),
        );
        out
    }

    /// `PUT/PATCH/DELETE /v1/data/{path}`.
    pub fn write_data(&self, path: &[String], op: DataWrite) -> Result<WriteOutcome, WriteError> {
        let inner = &self.inner;
        let mut st = lock(&inner.state);
        if let Some(msg) = owner_of(&st, path, true) {
            return Err(WriteError::Owned(msg));
        }
        let mut overlay = st.overlay.clone();
        match op {
            DataWrite::Put {
                value,
                if_none_match,
            } => {
                if if_none_match && crate::overlay::get(&overlay.data, path).is_some() {
                    return Ok(WriteOutcome::NotModified);
                }
                crate::overlay::put(&mut overlay.data, path, value)?;
            }
            DataWrite::Patch(ops) => crate::overlay::patch(&mut overlay.data, path, &ops)?,
            DataWrite::Delete => {
                crate::overlay::remove(&mut overlay.data, path)?;
            }
        }
        inner.recompile(&mut st, overlay)?;
        Ok(WriteOutcome::Written)
    }
}

/// Which bundle owns `path` (OPA's `checkPathScope`), as OPA's refusal message.
fn owner_of(st: &State, path: &[String], is_data: bool) -> Option<String> {
    for (name, l) in &st.bundles {
        if l.info.roots.iter().any(|r| r.is_empty()) {
            return Some(format!("all paths owned by bundle {name:?}"));
        }
    }
    if is_data && path.is_empty() && !st.bundles.is_empty() {
        return Some("can't write to document root with bundle roots configured".into());
    }
    for (name, l) in &st.bundles {
        for r in &l.info.roots {
            if segments_overlap(&root_segments(r), path) {
                return Some(format!(
                    "path {} is owned by bundle {name:?}",
                    display_path(path)
                ));
            }
        }
    }
    None
}

impl Inner {
    pub(super) fn recompile(&self, st: &mut State, overlay: Overlay) -> Result<(), WriteError> {
        let policy = self.compile_all(st, &overlay, None).map_err(|e| match e {
            ActivationError::Compile(c) => WriteError::Compile {
                message: "error(s) occurred while compiling module(s)".into(),
                errors: compile_details(&c),
            },
            other => WriteError::Compile {
                message: other.to_string(),
                errors: Vec::new(),
            },
        })?;
        st.overlay = overlay;
        // Freed off the caller's thread and outside the state lock, like an activation's.
        super::activation::free_later(self.install(st, policy), std::time::Duration::ZERO);
        Ok(())
    }
}
