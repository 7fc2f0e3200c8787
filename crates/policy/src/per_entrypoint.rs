//! A compiled set's per-entrypoint state (decision memos, RVM slots): made on first
//! use, at most a fixed number of entrypoints, dropped with the set.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

pub(crate) struct PerEntrypoint<T> {
    map: RwLock<HashMap<String, Arc<T>>>,
    limit: usize,
}

impl<T> PerEntrypoint<T> {
    pub fn new(limit: usize) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            limit,
        }
    }

    pub fn get(&self, entrypoint: &str) -> Option<Arc<T>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(entrypoint)
            .cloned()
    }

    /// `entrypoint`'s state, made by `make` (under the write lock, so once) if there
    /// is none yet; `None` once `limit` entrypoints have state.
    pub fn get_or_make(&self, entrypoint: &str, make: impl FnOnce() -> T) -> Option<Arc<T>> {
        if let Some(v) = self.get(entrypoint) {
            return Some(v);
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = map.get(entrypoint) {
            return Some(v.clone());
        }
        if map.len() >= self.limit {
            return None;
        }
        let v = Arc::new(make());
        map.insert(entrypoint.to_string(), v.clone());
        Some(v)
    }

    /// The entrypoints that have state.
    pub fn entrypoints(&self) -> Vec<String> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Replaces `entrypoint`'s state (the limit does not apply: the caller asked).
    pub fn set(&self, entrypoint: &str, value: T) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entrypoint.to_string(), Arc::new(value));
    }
}
