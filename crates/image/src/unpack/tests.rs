use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn header(path: &str, kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_path(path).unwrap();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size as u64);
    header.set_mtime(1_000_000);
    header
}

/// A layer with the things real images contain: absolute symlinks, in-layer hard links,
/// setuid files, and a file that replaces an earlier symlink of the same name.
fn friendly_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |mut h: tar::Header, link: Option<&str>, data: &[u8]| {
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(header("./", tar::EntryType::Directory, 0o755, 0), None, b"");
    add(
        header("usr/bin/", tar::EntryType::Directory, 0o755, 0),
        None,
        b"",
    );
    add(
        header("bin", tar::EntryType::Symlink, 0o777, 0),
        Some("/usr/bin"),
        b"",
    );
    add(
        header("usr/bin/su", tar::EntryType::Regular, 0o4755, 2),
        None,
        b"su",
    );
    add(
        header("usr/bin/su2", tar::EntryType::Link, 0o4755, 0),
        Some("usr/bin/su"),
        b"",
    );
    add(
        header("swap", tar::EntryType::Symlink, 0o777, 0),
        Some("/etc/passwd"),
        b"",
    );
    add(
        header("swap", tar::EntryType::Regular, 0o600, 4),
        None,
        b"real",
    );
    add(header("fifo", tar::EntryType::Fifo, 0o644, 0), None, b"");
    b.into_inner().unwrap()
}

fn unpack(
    blob: &[u8],
    blob_digest: Option<Digest>,
    diff_id: &[u8],
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::for_tests(dir.path());
    let plan = LayerPlan {
        key: Digest::of(blob),
        blob: blob_digest,
        diff_id: Some(Digest::of(diff_id)),
    };
    let layer = ensure_layer(&cache, &plan, blob).unwrap();
    (dir, layer)
}

fn check_friendly(layer: &Path) {
    assert_eq!(
        fs::read_link(layer.join("bin")).unwrap(),
        Path::new("/usr/bin")
    );
    let su = fs::metadata(layer.join("usr/bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755, "setuid bit kept");
    assert_eq!(su.mtime(), 1_000_000);
    let su2 = fs::metadata(layer.join("usr/bin/su2")).unwrap();
    assert_eq!(su.ino(), su2.ino(), "hard link within the layer");
    let swap = fs::symlink_metadata(layer.join("swap")).unwrap();
    assert!(swap.is_file());
    assert_eq!(fs::read(layer.join("swap")).unwrap(), b"real");
    assert!(
        fs::symlink_metadata(layer.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        fs::metadata(layer).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn plain_tar_layer() {
    let tar = friendly_layer();
    let (_dir, layer) = unpack(&tar, Some(Digest::of(&tar)), &tar);
    check_friendly(&layer);
}

#[test]
fn gzip_layer() {
    let tar = friendly_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    let (_dir, layer) = unpack(&blob, Some(Digest::of(&blob)), &tar);
    check_friendly(&layer);
}

#[test]
fn zstd_layer() {
    let tar = friendly_layer();
    let blob = zstd::encode_all(&tar[..], 3).unwrap();
    let (_dir, layer) = unpack(&blob, Some(Digest::of(&blob)), &tar);
    check_friendly(&layer);
}

#[test]
fn wrong_diff_id_is_refused_and_cleaned_up() {
    let tar = friendly_layer();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::for_tests(dir.path());
    let plan = LayerPlan {
        key: Digest::of(&tar),
        blob: None,
        diff_id: Some(Digest::of(b"something else")),
    };
    let err = ensure_layer(&cache, &plan, &tar[..]).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert!(!cache.layer_dir(&plan.key).exists());
    assert_eq!(fs::read_dir(cache.tmp_dir()).unwrap().count(), 0);
}
