//! Sharing the fleet between replicas: each status report that changes something (or is
//! a heartbeat, see [`crate::fleet::Fleet::ingest`]) is written to
//! `fleet/instances/<sha256(id)>.json`; every replica lists that folder each sync interval
//! and reads only the records whose ETag changed, so a report received by any replica
//! shows in every replica's `/v1/fleet` within one interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use tokio::sync::watch;

use crate::fleet::Fleet;
use crate::store::{Store, StoreResult};

/// What was last read, per stored record.
#[derive(Debug, Default)]
pub struct SyncState {
    seen: HashMap<Path, String>,
}

/// One pass: list, read what changed, merge.
pub async fn sync_once(store: &Store, fleet: &Fleet, st: &mut SyncState) -> StoreResult<()> {
    let listed = store.list_instances().await?;
    let mut keep = HashMap::with_capacity(listed.len());
    let now = chrono::Utc::now();
    for (path, tag, modified) in listed {
        // Records of instances silent past `forget_after` are removed (any replica may).
        if (now - modified).to_std().unwrap_or_default() > fleet.forget_after() {
            if let Err(e) = store.delete_instance(&path).await {
                tracing::warn!(%path, error = %e, "forgetting an instance record");
            }
            continue;
        }
        if st.seen.get(&path) != Some(&tag) {
            match store.get_instance(&path).await {
                Ok(rec) => fleet.merge(rec),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => {
                    tracing::warn!(%path, error = %e, "reading an instance record");
                    continue;
                }
            }
        }
        keep.insert(path, tag);
    }
    st.seen = keep;
    Ok(())
}

/// The sync task.
pub async fn run(
    store: Store,
    fleet: Arc<Fleet>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut st: SyncState,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = sync_once(&store, &fleet, &mut st).await {
            tracing::warn!(error = %e, "syncing the fleet view from the store");
        }
    }
}
