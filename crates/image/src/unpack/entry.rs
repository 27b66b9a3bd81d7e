//! Writing tar entries into a layer directory without trusting them.
//!
//! Every path is cleaned first (no absolute paths, no `..`), every parent is walked component by
//! component and must be a real directory (never a symlink), files are created with
//! `O_EXCL|O_NOFOLLOW`, hard links must point at an existing non-directory inside the layer, and
//! device nodes are refused. OCI whiteouts become overlayfs whiteouts.

use std::ffi::{OsStr, OsString};
use std::fs::{self, FileTimes, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, fchown, lchown, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use tar::EntryType;
use tracing::debug;

use crate::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why one entry could not be written.
enum Failure {
    Unsafe(&'static str),
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<nix::Error> for Failure {
    fn from(e: nix::Error) -> Self {
        Self::Io(e.into())
    }
}

/// Writes every entry of the tar stream under `root`.
pub(super) fn write_all(root: &Path, layer: &str, tar_stream: impl Read) -> Result<(), ImageError> {
    let read_err = |source: io::Error| ImageError::Layer {
        layer: layer.to_owned(),
        source,
    };
    let mut archive = tar::Archive::new(tar_stream);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        write_one(root, &mut entry).map_err(|failure| match failure {
            Failure::Unsafe(reason) => ImageError::UnsafeEntry {
                layer: layer.to_owned(),
                entry: name,
                reason,
            },
            Failure::Io(source) => ImageError::WriteEntry {
                layer: layer.to_owned(),
                entry: name,
                source,
            },
        })?;
    }
    Ok(())
}

fn write_one<R: Read>(root: &Path, entry: &mut tar::Entry<'_, R>) -> Result<(), Failure> {
    let kind = entry.header().entry_type();
    if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
        return Ok(());
    }
    let components = clean(
        &entry.path_bytes(),
        "absolute path",
        "path escapes the layer root",
    )?;
    let mode = entry.header().mode()? & 0o7777;
    // Empty numeric fields mean 0, as GNU tar reads them.
    let owner = |id: io::Result<u64>| u32::try_from(id.unwrap_or(0));
    let uid = owner(entry.header().uid()).map_err(|_| Failure::Unsafe("uid out of range"))?;
    let gid = owner(entry.header().gid()).map_err(|_| Failure::Unsafe("gid out of range"))?;
    let Some((name, parents)) = components.split_last() else {
        // The layer root itself (`./`): only its mode matters.
        if kind == EntryType::Directory {
            fs::set_permissions(root, fs::Permissions::from_mode(mode))?;
        }
        return Ok(());
    };
    if matches!(kind, EntryType::Char | EntryType::Block) {
        return Err(Failure::Unsafe("device nodes are not allowed"));
    }
    let parent = walk(root, parents, true)?;
    let name_bytes = name.as_bytes();
    if name_bytes == OPAQUE_MARKER.as_bytes() {
        xattr::set(&parent, OPAQUE_XATTR, b"y")?;
        return Ok(());
    }
    if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return Ok(()); // other `.wh..wh.` metadata (aufs) means nothing to overlayfs
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(Failure::Unsafe("invalid whiteout name"));
        }
        let target = parent.join(OsStr::from_bytes(hidden));
        remove_existing(&target)?;
        mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))?;
        return Ok(());
    }
    let path = parent.join(name);
    match kind {
        EntryType::Directory => {
            let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if !is_dir {
                remove_existing(&path)?;
                fs::create_dir(&path)?;
            }
            lchown(&path, Some(uid), Some(gid))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
        EntryType::Regular | EntryType::Continuous => {
            let xattrs = pax_xattrs(entry)?;
            remove_existing(&path)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)?;
            io::copy(entry, &mut file)?;
            fchown(&file, Some(uid), Some(gid))?;
            // After chown, which clears setuid/setgid bits.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            let mtime = UNIX_EPOCH + Duration::from_secs(entry.header().mtime().unwrap_or(0));
            file.set_times(FileTimes::new().set_modified(mtime).set_accessed(mtime))?;
            apply_xattrs(&path, &xattrs);
        }
        EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or(Failure::Unsafe("symlink without a target"))?;
            remove_existing(&path)?;
            symlink(OsStr::from_bytes(&target), &path)?;
            lchown(&path, Some(uid), Some(gid))?;
        }
        EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or(Failure::Unsafe("hard link without a target"))?;
            let target_parts = clean(
                &target,
                "hard link target escapes the layer root",
                "hard link target escapes the layer root",
            )?;
            let Some((target_name, target_parents)) = target_parts.split_last() else {
                return Err(Failure::Unsafe("hard link to the layer root"));
            };
            let target_path = walk(root, target_parents, false)?.join(target_name);
            let meta = fs::symlink_metadata(&target_path)
                .map_err(|_| Failure::Unsafe("hard link target does not exist in the layer"))?;
            if meta.is_dir() {
                return Err(Failure::Unsafe("hard link to a directory"));
            }
            if target_path != path {
                remove_existing(&path)?;
                fs::hard_link(&target_path, &path)?;
            }
        }
        EntryType::Fifo => {
            remove_existing(&path)?;
            nix::unistd::mkfifo(&path, Mode::from_bits_truncate(mode))?;
            lchown(&path, Some(uid), Some(gid))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
        other => debug!(kind = ?other, path = %path.display(), "skipping unsupported tar entry"),
    }
    Ok(())
}

/// Splits a tar path into its normal components, refusing absolute paths and `..`.
fn clean(
    raw: &[u8],
    absolute: &'static str,
    dotdot: &'static str,
) -> Result<Vec<OsString>, Failure> {
    if raw.first() == Some(&b'/') {
        return Err(Failure::Unsafe(absolute));
    }
    let mut parts = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(Failure::Unsafe(dotdot)),
            _ => parts.push(OsStr::from_bytes(part).to_owned()),
        }
    }
    Ok(parts)
}

/// Walks `parts` below `root`, refusing symlinks and non-directories on the way; missing
/// directories are created when `create` is set (as tar does), refused otherwise.
fn walk(root: &Path, parts: &[OsString], create: bool) -> Result<PathBuf, Failure> {
    let mut current = root.to_path_buf();
    for part in parts {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Failure::Unsafe(if create {
                    "path goes through a symlink"
                } else {
                    "hard link target goes through a symlink"
                }));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(Failure::Unsafe("parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&current)?;
                fs::set_permissions(&current, fs::Permissions::from_mode(0o755))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Failure::Unsafe(
                    "hard link target does not exist in the layer",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(current)
}

/// Removes whatever is at `path` (never following a symlink there).
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Extended attributes from PAX headers, except `trusted.*` (which would let a layer forge
/// overlayfs metadata such as opaque dirs or redirects).
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.")
                && !name.starts_with(b"trusted.")
            {
                out.push((
                    OsStr::from_bytes(name).to_owned(),
                    extension.value_bytes().to_vec(),
                ));
            }
        }
    }
    Ok(out)
}

fn apply_xattrs(path: &Path, xattrs: &[(OsString, Vec<u8>)]) {
    for (name, value) in xattrs {
        if let Err(error) = xattr::set(path, name, value) {
            debug!(%error, path = %path.display(), ?name, "could not set xattr");
        }
    }
}
