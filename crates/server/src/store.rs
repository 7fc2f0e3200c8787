//! Storage behind `object_store`: one code path for the local folder (LocalFileSystem)
//! and any S3-compatible store.
//!
//! Layout, per bundle `<name>`:
//! - `bundles/<name>/blobs/<sha256>.tar.gz`: bundle bytes, content-addressed;
//! - `bundles/<name>/state/<seq, 20 digits>.json`: the whole [`BundleState`] after change
//!   number `seq`, written with `PutMode::Create` so two replicas publishing at once cannot
//!   both win the same number (the loser re-reads and retries);
//! - `bundles/<name>/current.json`: `{"seq": N}`, a small pointer that replicas read with
//!   `If-None-Match` to notice a change cheaply. It is only a hint: readers always probe
//!   `state/<N+1>` after it, so a pointer left behind by a race costs one extra read.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::StoreConfig;
use crate::error::ConfigError;
use crate::fleet::Instance;
use crate::model::BundleState;

/// Errors of the store layer.
pub type StoreResult<T> = Result<T, object_store::Error>;

#[derive(Debug, Serialize, Deserialize)]
struct Pointer {
    seq: u64,
}

/// What a pointer read found.
#[derive(Debug)]
pub enum PointerRead {
    /// Unchanged since the ETag given.
    NotModified,
    /// No pointer: the bundle was never published.
    Missing,
    Found {
        seq: u64,
        etag: Option<String>,
    },
}

/// The bundle store.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
}

/// States older than this many sequence numbers behind the newest are deleted.
const KEEP_STATE_DOCS: u64 = 20;

impl Store {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Store { inner }
    }

    /// Opens the configured store: the S3 one if given, else the folder (created if
    /// missing), else `./lockstep-data`.
    pub fn open(cfg: &StoreConfig) -> Result<Store, ConfigError> {
        if let Some(s3) = &cfg.s3 {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&s3.bucket)
                .with_allow_http(s3.allow_http);
            if let Some(endpoint) = &s3.endpoint {
                b = b
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(s3.virtual_hosted_style.unwrap_or(false));
            } else if let Some(v) = s3.virtual_hosted_style {
                b = b.with_virtual_hosted_style_request(v);
            }
            if let Some(region) = &s3.region {
                b = b.with_region(region);
            }
            if let Some(k) = &s3.access_key_id {
                b = b.with_access_key_id(k.load()?.expose());
            }
            if let Some(k) = &s3.secret_access_key {
                b = b.with_secret_access_key(k.load()?.expose());
            }
            let s = b.build().map_err(|e| ConfigError::Store(e.to_string()))?;
            let inner: Arc<dyn ObjectStore> =
                match s3.prefix.as_deref().map(|p| p.trim_matches('/')) {
                    Some(p) if !p.is_empty() => {
                        Arc::new(object_store::prefix::PrefixStore::new(s, Path::from(p)))
                    }
                    _ => Arc::new(s),
                };
            return Ok(Store::new(inner));
        }
        let folder = cfg
            .folder
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("lockstep-data"));
        std::fs::create_dir_all(&folder)
            .map_err(|e| ConfigError::Store(format!("cannot create {}: {e}", folder.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&folder)
            .map_err(|e| ConfigError::Store(e.to_string()))?;
        Ok(Store::new(Arc::new(fs)))
    }

    fn pointer_path(name: &str) -> Path {
        Path::from(format!("bundles/{name}/current.json"))
    }
    fn state_path(name: &str, seq: u64) -> Path {
        Path::from(format!("bundles/{name}/state/{seq:020}.json"))
    }
    fn blob_path(name: &str, id: &str) -> Path {
        Path::from(format!("bundles/{name}/blobs/{id}.tar.gz"))
    }

    /// Names of every bundle that has a `bundles/<name>/` folder.
    pub async fn list_bundles(&self) -> StoreResult<Vec<String>> {
        let listing = self
            .inner
            .list_with_delimiter(Some(&Path::from("bundles")))
            .await?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| crate::routes::valid_bundle_name(n))
            .collect())
    }

    /// Reads the pointer, conditionally on `etag`.
    pub async fn read_pointer(&self, name: &str, etag: Option<&str>) -> StoreResult<PointerRead> {
        let opts = GetOptions {
            if_none_match: etag.map(str::to_string),
            ..Default::default()
        };
        match self.inner.get_opts(&Self::pointer_path(name), opts).await {
            Ok(r) => {
                let etag = r.meta.e_tag.clone();
                let bytes = r.bytes().await?;
                let p: Pointer = serde_json::from_slice(&bytes).map_err(|e| json_err(&e))?;
                Ok(PointerRead::Found { seq: p.seq, etag })
            }
            Err(object_store::Error::NotModified { .. }) => Ok(PointerRead::NotModified),
            Err(object_store::Error::NotFound { .. }) => Ok(PointerRead::Missing),
            Err(e) => Err(e),
        }
    }

    async fn read_state(&self, name: &str, seq: u64) -> StoreResult<Option<BundleState>> {
        match self.inner.get(&Self::state_path(name, seq)).await {
            Ok(r) => {
                let bytes = r.bytes().await?;
                Ok(Some(
                    serde_json::from_slice(&bytes).map_err(|e| json_err(&e))?,
                ))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The newest state at or after `from_seq` (the pointer's value), probing forward.
    pub async fn latest_state_from(
        &self,
        name: &str,
        from_seq: u64,
    ) -> StoreResult<Option<BundleState>> {
        let mut best = if from_seq == 0 {
            None
        } else {
            self.read_state(name, from_seq).await?
        };
        let mut next = from_seq.saturating_add(1);
        while let Some(s) = self.read_state(name, next).await? {
            best = Some(s);
            next = next.saturating_add(1);
        }
        Ok(best)
    }

    /// The newest state of a bundle, or `None` if it was never published.
    pub async fn latest_state(&self, name: &str) -> StoreResult<Option<BundleState>> {
        let from = match self.read_pointer(name, None).await? {
            PointerRead::Found { seq, .. } => seq,
            _ => 0,
        };
        self.latest_state_from(name, from).await
    }

    /// Writes the next state; `Ok(false)` when another writer took that sequence number.
    pub async fn commit_state(&self, state: &BundleState) -> StoreResult<bool> {
        if !self.create_state(state).await? {
            return Ok(false);
        }
        self.after_commit(&state.name, state.seq).await?;
        Ok(true)
    }

    /// The commit itself: creates the state document for `state.seq`, or `Ok(false)` when
    /// another writer took that sequence number. The state is authoritative from here on;
    /// [`Self::after_commit`] only maintains the pointer hint and prunes old documents, so a
    /// publisher can wake its clients in between.
    pub async fn create_state(&self, state: &BundleState) -> StoreResult<bool> {
        let body = serde_json::to_vec_pretty(state).map_err(|e| json_err(&e))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&Self::state_path(&state.name, state.seq), body.into(), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// Points `current.json` at the committed `seq` and drops state documents no longer needed.
    pub async fn after_commit(&self, name: &str, seq: u64) -> StoreResult<()> {
        self.write_pointer(name, seq).await?;
        // Old state documents are not needed (each holds the whole history): best effort.
        if seq > KEEP_STATE_DOCS {
            let old = Self::state_path(name, seq - KEEP_STATE_DOCS);
            let _ = self.inner.delete(&old).await;
        }
        Ok(())
    }

    /// Points `current.json` at `seq`, then re-points it if a newer state appeared meanwhile.
    async fn write_pointer(&self, name: &str, mut seq: u64) -> StoreResult<()> {
        loop {
            let body = serde_json::to_vec(&Pointer { seq }).map_err(|e| json_err(&e))?;
            self.inner
                .put(&Self::pointer_path(name), PutPayload::from(body))
                .await?;
            let next = seq.saturating_add(1);
            match self.inner.head(&Self::state_path(name, next)).await {
                Ok(_) => seq = next,
                Err(object_store::Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn instance_path(id: &str) -> Path {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(id.as_bytes()));
        Path::from(format!("fleet/instances/{h}.json"))
    }

    /// Writes one instance's last report for the other replicas.
    pub async fn put_instance(&self, inst: &Instance) -> StoreResult<()> {
        let body = serde_json::to_vec(inst).map_err(|e| json_err(&e))?;
        self.inner
            .put(&Self::instance_path(&inst.id), PutPayload::from(body))
            .await
            .map(|_| ())
    }

    /// Every stored instance record: location, ETag (or modification time), last write.
    pub async fn list_instances(
        &self,
    ) -> StoreResult<Vec<(Path, String, chrono::DateTime<chrono::Utc>)>> {
        use futures::TryStreamExt;
        let metas: Vec<object_store::ObjectMeta> = self
            .inner
            .list(Some(&Path::from("fleet/instances")))
            .try_collect()
            .await?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let tag = m.e_tag.clone().unwrap_or_else(|| {
                    format!("{}-{}", m.last_modified.timestamp_micros(), m.size)
                });
                (m.location, tag, m.last_modified)
            })
            .collect())
    }

    pub async fn delete_instance(&self, location: &Path) -> StoreResult<()> {
        match self.inner.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn get_instance(&self, location: &Path) -> StoreResult<Instance> {
        let bytes = self.inner.get(location).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| json_err(&e))
    }

    pub async fn put_blob(&self, name: &str, id: &str, bytes: Bytes) -> StoreResult<()> {
        self.inner
            .put(&Self::blob_path(name, id), PutPayload::from(bytes))
            .await
            .map(|_| ())
    }

    pub async fn get_blob(&self, name: &str, id: &str) -> StoreResult<Bytes> {
        self.inner
            .get(&Self::blob_path(name, id))
            .await?
            .bytes()
            .await
    }

    pub async fn delete_blob(&self, name: &str, id: &str) -> StoreResult<()> {
        match self.inner.delete(&Self::blob_path(name, id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn json_err(e: &serde_json::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "lockstep",
        source: e.to_string().into(),
    }
}
