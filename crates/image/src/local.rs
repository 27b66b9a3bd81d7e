//! Images on the local disk: OCI image layout directories and tar archives (`docker save`
//! archives or OCI layouts packed as a tar, told apart by content).

use std::fs::File;
use std::io::{BufReader, Read};

use tracing::debug;

use crate::digest::Digest;
use crate::oci::{
    self, ConfigFile, Descriptor, DockerArchiveEntry, Manifest, ManifestOrIndex, REF_NAME,
};
use crate::reference::Source;
use crate::store::Cache;
use crate::unpack::{self, LayerPlan};
use crate::{Image, ImageError};

mod tar_index;

use tar_index::TarIndex;

/// JSON documents larger than this are refused rather than read into memory.
const MAX_JSON: u64 = 8 << 20;

/// Where a local image's files are read from.
#[derive(Debug)]
enum Files {
    Dir(std::path::PathBuf),
    Tar(TarIndex),
}

/// Resolves a local image and unpacks its missing layers. Blocking.
pub(crate) fn pull(cache: &Cache, source: Source, reference: &str) -> Result<Image, ImageError> {
    let (files, tag) = match source {
        Source::Layout { dir, tag } => (Files::Dir(dir), tag),
        Source::Archive { path, tag } => (Files::Tar(TarIndex::scan(&path)?), tag),
        Source::Registry(_) => {
            return Err(ImageError::Unsupported {
                reference: reference.to_owned(),
                reason: "not a local image".to_owned(),
            });
        }
    };
    let is_docker_archive = matches!(&files, Files::Tar(index)
        if index.contains("manifest.json") && !index.contains("index.json"));
    let resolved = if is_docker_archive {
        resolve_docker(&files, reference, tag.as_deref())?
    } else {
        resolve_oci(&files, reference, tag.as_deref())?
    };
    let mut layers = Vec::with_capacity(resolved.layers.len());
    for (plan, name) in &resolved.layers {
        let dir = cache.layer_dir(&plan.key);
        if dir.is_dir() {
            layers.push(dir);
            continue;
        }
        debug!(layer = %plan.key, "unpacking layer");
        layers.push(unpack::ensure_layer(cache, plan, files.open(name)?)?);
    }
    Ok(Image {
        reference: reference.to_owned(),
        manifest_digest: resolved.manifest_digest.to_string(),
        config: resolved.config.image_config(),
        layers,
    })
}

struct Resolved {
    manifest_digest: Digest,
    config: ConfigFile,
    /// Each layer's plan and the file holding its blob.
    layers: Vec<(LayerPlan, String)>,
}

fn resolve_oci(files: &Files, reference: &str, tag: Option<&str>) -> Result<Resolved, ImageError> {
    let not_found = |reason: String| ImageError::NotFound {
        reference: reference.to_owned(),
        reason,
    };
    let index: oci::Index = serde_json::from_slice(&files.read("index.json", None)?)
        .map_err(ImageError::json("index.json"))?;
    let candidates: Vec<Descriptor> = index
        .manifests
        .into_iter()
        .filter(|d| tag.is_none_or(|t| d.annotations.get(REF_NAME).is_some_and(|r| r == t)))
        .collect();
    let mut descriptor = match candidates.as_slice() {
        [] => {
            return Err(not_found(format!(
                "no manifest tagged {tag:?} in index.json"
            )));
        }
        [only] => only.clone(),
        many => oci::pick_platform(many)
            .cloned()
            .ok_or_else(|| not_found("several manifests and none for linux/amd64".to_owned()))?,
    };
    // Follow nested indexes down to an image manifest.
    for _ in 0..4 {
        let digest = Digest::parse(&descriptor.digest)?;
        let bytes = files.read_blob(&digest)?;
        match ManifestOrIndex::parse(&bytes).map_err(ImageError::json("manifest"))? {
            ManifestOrIndex::Manifest(manifest) => {
                return plan_oci(files, digest, &manifest);
            }
            ManifestOrIndex::Index(nested) => {
                descriptor = oci::pick_platform(&nested.manifests)
                    .cloned()
                    .ok_or_else(|| not_found("no linux/amd64 manifest in index".to_owned()))?;
            }
        }
    }
    Err(not_found("image indexes nested too deep".to_owned()))
}

fn plan_oci(files: &Files, digest: Digest, manifest: &Manifest) -> Result<Resolved, ImageError> {
    let config_digest = Digest::parse(&manifest.config.digest)?;
    let config: ConfigFile = serde_json::from_slice(&files.read_blob(&config_digest)?)
        .map_err(ImageError::json("image config"))?;
    let plans = plan_layers(&manifest.layers, &config)?;
    let layers = plans
        .into_iter()
        .map(|plan| {
            let name = format!("blobs/sha256/{}", plan.key.hex());
            (plan, name)
        })
        .collect();
    Ok(Resolved {
        manifest_digest: digest,
        config,
        layers,
    })
}

/// Pairs manifest layers with the config's diff ids.
pub(crate) fn plan_layers(
    layers: &[Descriptor],
    config: &ConfigFile,
) -> Result<Vec<LayerPlan>, ImageError> {
    let diff_ids = &config.rootfs.diff_ids;
    let check_diff_ids = diff_ids.len() == layers.len();
    layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let key = Digest::parse(&layer.digest)?;
            let diff_id = match check_diff_ids {
                true => Some(Digest::parse(&diff_ids[i])?),
                false => None,
            };
            Ok(LayerPlan {
                blob: Some(key.clone()),
                key,
                diff_id,
            })
        })
        .collect()
}

fn resolve_docker(
    files: &Files,
    reference: &str,
    tag: Option<&str>,
) -> Result<Resolved, ImageError> {
    let entries: Vec<DockerArchiveEntry> =
        serde_json::from_slice(&files.read("manifest.json", None)?)
            .map_err(ImageError::json("manifest.json"))?;
    let matches_tag = |e: &&DockerArchiveEntry| {
        tag.is_none_or(|t| e.repo_tags.iter().flatten().any(|r| repo_tag_matches(r, t)))
    };
    let entry = entries
        .iter()
        .find(matches_tag)
        .ok_or_else(|| ImageError::NotFound {
            reference: reference.to_owned(),
            reason: format!("no image tagged {tag:?} in manifest.json"),
        })?;
    let config_bytes = files.read(&entry.config, None)?;
    let config: ConfigFile =
        serde_json::from_slice(&config_bytes).map_err(ImageError::json("image config"))?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(ImageError::Unsupported {
            reference: reference.to_owned(),
            reason: "layer count differs from the config's diff ids".to_owned(),
        });
    }
    // A docker archive has no manifest: describe it as the OCI manifest of its uncompressed
    // layers, which gives a stable digest. Layers are keyed and checked by diff id.
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let diff_id = Digest::parse(diff_id)?;
        descriptors.push(descriptor(
            oci::MEDIA_LAYER_TAR,
            &diff_id,
            files.size(name)?,
        ));
        let plan = LayerPlan {
            key: diff_id.clone(),
            blob: None,
            diff_id: Some(diff_id),
        };
        layers.push((plan, name.clone()));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
        config: descriptor(
            oci::MEDIA_CONFIG,
            &Digest::of(&config_bytes),
            config_bytes.len() as u64,
        ),
        layers: descriptors,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(ImageError::json("manifest"))?;
    Ok(Resolved {
        manifest_digest: Digest::of(&manifest_bytes),
        config,
        layers,
    })
}

/// Whether a `RepoTags` entry (`docker.io/library/hello:1`) is what the user asked for
/// (`hello:1`, `library/hello:1`, the full name, or just the tag `1`).
fn repo_tag_matches(repo_tag: &str, wanted: &str) -> bool {
    let short = repo_tag.strip_prefix("docker.io/").unwrap_or(repo_tag);
    let shorter = short.strip_prefix("library/").unwrap_or(short);
    let tag_only = repo_tag.rsplit_once(':').map(|(_, tag)| tag);
    [repo_tag, short, shorter].contains(&wanted)
        || (!wanted.contains(':') && tag_only == Some(wanted))
}

pub(crate) fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.to_string(),
        size,
        annotations: Default::default(),
        platform: None,
    }
}

// === impl Files ===

impl Files {
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, ImageError> {
        match self {
            Files::Dir(dir) => {
                let path = dir.join(name);
                let file = File::open(&path).map_err(ImageError::io("open", path))?;
                Ok(Box::new(BufReader::new(file)))
            }
            Files::Tar(index) => index.open(name),
        }
    }

    fn size(&self, name: &str) -> Result<u64, ImageError> {
        match self {
            Files::Dir(dir) => {
                let path = dir.join(name);
                let meta = std::fs::metadata(&path).map_err(ImageError::io("stat", path))?;
                Ok(meta.len())
            }
            Files::Tar(index) => index.size(name),
        }
    }

    /// Reads a small file (JSON), checking its digest when one is given.
    fn read(&self, name: &str, digest: Option<&Digest>) -> Result<Vec<u8>, ImageError> {
        let mut bytes = Vec::new();
        self.open(name)?
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|source| ImageError::Io {
                action: "read",
                path: name.into(),
                source,
            })?;
        if let Some(expected) = digest {
            Digest::of(&bytes).verify(expected, &format!("blob {name}"))?;
        }
        Ok(bytes)
    }

    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        self.read(&format!("blobs/sha256/{}", digest.hex()), Some(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::repo_tag_matches;

    #[test]
    fn repo_tags_match_short_and_full_names() {
        let full = "docker.io/library/hello:1";
        for yes in [full, "library/hello:1", "hello:1", "1"] {
            assert!(repo_tag_matches(full, yes), "{yes}");
        }
        for no in ["hello:2", "other:1", "2", "hello"] {
            assert!(!repo_tag_matches(full, no), "{no}");
        }
        assert!(repo_tag_matches(
            "127.0.0.1:5000/app:v1",
            "127.0.0.1:5000/app:v1"
        ));
    }
}
