//! Whiteouts and opaque dirs, checked through a real overlayfs mount of the unpacked layers.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use godwit_image::{PullOptions, build_from_layers};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::support::*;

/// Unmounts on drop, so a failing assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn entry(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: Option<&[u8]>) {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).unwrap();
    match data {
        Some(data) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        None => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, &[][..]).unwrap();
        }
    }
}

fn layers() -> Vec<Vec<u8>> {
    let mut lower = tar::Builder::new(Vec::new());
    entry(&mut lower, "a/", None);
    entry(&mut lower, "a/keep", Some(b"keep"));
    entry(&mut lower, "a/gone", Some(b"gone"));
    entry(&mut lower, "o/", None);
    entry(&mut lower, "o/old", Some(b"old"));
    entry(&mut lower, "top.txt", Some(b"top"));
    let mut upper = tar::Builder::new(Vec::new());
    entry(&mut upper, "a/.wh.gone", Some(b""));
    entry(&mut upper, "o/.wh..wh..opq", Some(b""));
    entry(&mut upper, "o/new", Some(b"new"));
    vec![lower.into_inner().unwrap(), upper.into_inner().unwrap()]
}

#[tokio::test]
async fn whiteouts_give_the_right_overlay_view() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    build_from_layers(&layers(), &Default::default(), &layout, TAG).unwrap();
    let store = must_open_store(dir.path());
    let image = store
        .pull(&layout.display().to_string(), &PullOptions::default())
        .await
        .unwrap();
    let [lower, upper] = image.layers.as_slice() else {
        panic!("expected two layers, got {:?}", image.layers);
    };

    // The upper layer holds overlayfs metadata, not the OCI marker files.
    let whiteout = std::fs::symlink_metadata(upper.join("a/gone")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!upper.join("a/.wh.gone").exists());
    assert!(!upper.join("o/.wh..wh..opq").exists());
    let opaque = xattr::get(upper.join("o"), "trusted.overlay.opaque").unwrap();
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));

    let merged = dir.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let options = format!("lowerdir={}:{}", upper.display(), lower.display());
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .unwrap_or_else(|e| panic!("mount overlayfs ({options}): {e}"));
    let _mounted = Mounted(merged.clone());

    let read = |p: &str| std::fs::read_to_string(merged.join(p)).ok();
    assert_eq!(read("a/keep").as_deref(), Some("keep"));
    assert_eq!(read("a/gone"), None, "whiteout must hide the lower file");
    assert_eq!(
        read("o/old"),
        None,
        "opaque dir must hide the lower dir's contents"
    );
    assert_eq!(read("o/new").as_deref(), Some("new"));
    assert_eq!(read("top.txt").as_deref(), Some("top"));
    assert!(!Path::new(&merged.join("a/.wh.gone")).exists());
}
