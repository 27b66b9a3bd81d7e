//! The on-disk cache and [`ImageStore`], the entry point for pulls.
//!
//! Layout under the root:
//! - `layers/sha256/<hex>`: unpacked layers, ready to be overlayfs lower dirs;
//! - `pins/sha256/<hex>.json`: what a digest-pinned registry reference resolved to, so pulling it
//!   again needs no network;
//! - `tmp/`: work in progress (unpack dirs, downloads), renamed or removed when done.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::digest::Digest;
use crate::reference::Source;
use crate::{Image, ImageConfig, ImageError, PullOptions, local, registry};

/// How old an entry of `tmp/` must be before [`ImageStore::open`] treats it as debris.
const STALE_WORK: Duration = Duration::from_secs(24 * 60 * 60);

/// A cache of unpacked image layers shared by every machine on a host.
#[derive(Debug, Clone)]
pub struct ImageStore {
    cache: Arc<Cache>,
}

/// Paths inside the cache.
#[derive(Debug)]
pub(crate) struct Cache {
    root: PathBuf,
}

/// What a pinned reference resolved to (stored under `pins/`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PinRecord {
    pub(crate) manifest_digest: String,
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<String>,
}

// === impl ImageStore ===

impl ImageStore {
    /// Opens (creates) a cache rooted at `root` (e.g. `<data>/images`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let cache = Cache { root: root.into() };
        for dir in [
            cache.root.join("layers/sha256"),
            cache.root.join("pins/sha256"),
            cache.tmp_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(ImageError::io("create", dir))?;
        }
        cache.remove_stale_work();
        Ok(Self {
            cache: Arc::new(cache),
        })
    }

    /// The cache root this store was opened on.
    pub fn root(&self) -> &Path {
        &self.cache.root
    }

    /// Resolves and caches an image; returns when every layer is unpacked. Idempotent and cheap
    /// when already cached (a second pull of a digest-pinned or local reference does no
    /// network/layer work). Concurrent pulls of the same image do not corrupt the cache.
    #[tracing::instrument(skip_all, fields(reference = %reference), err)]
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> Result<Image, ImageError> {
        let image = match Source::parse(reference)? {
            Source::Registry(parsed) => {
                registry::pull(&self.cache, parsed, reference, opts).await?
            }
            local_source => {
                let cache = Arc::clone(&self.cache);
                let given = reference.to_owned();
                tokio::task::spawn_blocking(move || local::pull(&cache, local_source, &given))
                    .await
                    .map_err(ImageError::Task)??
            }
        };
        info!(digest = %image.manifest_digest, layers = image.layers.len(), "image ready");
        Ok(image)
    }
}

// === impl Cache ===

impl Cache {
    pub(crate) fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(digest.hex())
    }

    /// A cache at `root` with its directories created.
    #[cfg(test)]
    pub(crate) fn for_tests(root: &Path) -> Self {
        let store = ImageStore::open(root).expect("open test cache");
        Self {
            root: store.cache.root.clone(),
        }
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Removes work left in `tmp/` by a process killed mid-pull. Only old entries go: another
    /// process may be pulling into the same cache right now.
    fn remove_stale_work(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok());
            if age.is_some_and(|age| age > STALE_WORK) {
                let path = entry.path();
                let removed = match entry.file_type() {
                    Ok(kind) if kind.is_dir() => fs::remove_dir_all(&path),
                    _ => fs::remove_file(&path),
                };
                match removed {
                    Ok(()) => info!(path = %path.display(), "removed stale temp entry"),
                    Err(error) => {
                        warn!(%error, path = %path.display(), "cannot remove stale temp entry")
                    }
                }
            }
        }
    }

    fn pin_file(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("pins/sha256")
            .join(format!("{}.json", digest.hex()))
    }

    /// The image a pinned digest resolved to before, if every one of its layers is still cached.
    pub(crate) fn load_pin(&self, reference: &str, pinned: &Digest) -> Option<Image> {
        let bytes = fs::read(self.pin_file(pinned)).ok()?;
        let record: PinRecord = serde_json::from_slice(&bytes).ok()?;
        let layers = record
            .layers
            .iter()
            .map(|d| Digest::parse(d).map(|d| self.layer_dir(&d)))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        if !layers.iter().all(|dir| dir.is_dir()) {
            return None;
        }
        Some(Image {
            reference: reference.to_owned(),
            manifest_digest: record.manifest_digest,
            config: record.config,
            layers,
        })
    }

    /// Records what a pinned digest resolved to (written to a temp file, then renamed).
    pub(crate) fn save_pin(&self, pinned: &Digest, record: &PinRecord) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec(record).map_err(ImageError::json("pin record"))?;
        let target = self.pin_file(pinned);
        let mut tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(ImageError::io("create temp file in", self.tmp_dir()))?;
        tmp.write_all(&bytes)
            .map_err(ImageError::io("write", tmp.path().to_owned()))?;
        tmp.persist(&target)
            .map_err(|e| ImageError::io("write", target)(e.error))?;
        Ok(())
    }
}
