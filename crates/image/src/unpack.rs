//! Unpacking one layer blob into the content-addressed cache, safely.
//!
//! The blob is decompressed (gzip, zstd or plain tar, sniffed from its first bytes) while two
//! hashers check the compressed digest and the diff id. Entries are written by hand into a fresh
//! temp dir under the cache (see [`entry`]); only a fully unpacked and verified layer is renamed to
//! `layers/sha256/<hex>`, so a refused or corrupt layer leaves nothing behind and concurrent pulls
//! of the same layer cannot see a half-written directory.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::debug;

use crate::ImageError;
use crate::digest::{Digest, HashingReader};
use crate::store::Cache;

mod entry;

/// What is known about a layer before unpacking it.
#[derive(Debug, Clone)]
pub(crate) struct LayerPlan {
    /// The cache key: the blob digest where the manifest gives one.
    pub(crate) key: Digest,
    /// The digest the compressed blob must have, when known.
    pub(crate) blob: Option<Digest>,
    /// The digest the uncompressed tar must have, when known.
    pub(crate) diff_id: Option<Digest>,
}

/// Unpacks `blob` into the cache unless the layer is already there; returns the layer dir.
pub(crate) fn ensure_layer(
    cache: &Cache,
    plan: &LayerPlan,
    blob: impl Read,
) -> Result<PathBuf, ImageError> {
    let final_dir = cache.layer_dir(&plan.key);
    if final_dir.is_dir() {
        return Ok(final_dir);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(cache.tmp_dir())
        .map_err(ImageError::io("create temp dir in", cache.tmp_dir()))?;
    // On any error `tmp` is dropped here, which removes everything written so far.
    unpack_verified(tmp.path(), plan, blob)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io("set permissions on", tmp.path()))?;
    let tmp_path = tmp.keep();
    match fs::rename(&tmp_path, &final_dir) {
        Ok(()) => {
            debug!(layer = %plan.key, "layer unpacked");
            Ok(final_dir)
        }
        Err(_) if final_dir.is_dir() => {
            // Another pull won the race; its copy is as good as ours.
            let _ = fs::remove_dir_all(&tmp_path);
            Ok(final_dir)
        }
        Err(source) => {
            let _ = fs::remove_dir_all(&tmp_path);
            Err(ImageError::Io {
                action: "rename unpacked layer to",
                path: final_dir,
                source,
            })
        }
    }
}

fn unpack_verified(root: &Path, plan: &LayerPlan, blob: impl Read) -> Result<(), ImageError> {
    let layer = plan.key.to_string();
    let read_err = |source: io::Error| ImageError::Layer {
        layer: layer.clone(),
        source,
    };
    let mut raw = HashingReader::new(blob);
    let mut head = [0u8; 4];
    let head_len = read_up_to(&mut raw, &mut head).map_err(read_err)?;
    let diff_id = {
        let stream = io::Cursor::new(&head[..head_len]).chain(&mut raw);
        let decoded: Box<dyn Read + '_> = match &head[..head_len] {
            [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(stream)),
            [0x28, 0xb5, 0x2f, 0xfd] => {
                Box::new(zstd::stream::read::Decoder::new(stream).map_err(read_err)?)
            }
            _ => Box::new(stream),
        };
        let mut tar_stream = HashingReader::new(decoded);
        entry::write_all(root, &layer, &mut tar_stream)?;
        tar_stream.finish().map_err(read_err)?
    };
    let blob_digest = raw.finish().map_err(read_err)?;
    if let Some(expected) = &plan.blob {
        blob_digest.verify(expected, &format!("layer {layer}"))?;
    }
    if let Some(expected) = &plan.diff_id {
        diff_id.verify(expected, &format!("layer {layer} diff id"))?;
    }
    Ok(())
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests;
