//! Hostile layers are refused with the entry named, and nothing outside the cache is touched.

use std::path::Path;

use godwit_image::{ImageError, PullOptions, build_from_layers};

use crate::support::*;

const ORIGINAL: &[u8] = b"original sentinel";

/// Appends an entry with a raw (unvalidated) path and link name.
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    path: &str,
    link: &str,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    assert!(
        path.len() < 100 && link.len() < 100,
        "raw names must fit the header"
    );
    {
        let old = header.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        header.set_device_major(1).unwrap();
        header.set_device_minor(3).unwrap();
    }
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

/// Pulls an image whose single layer holds `entries`; expects a refusal naming `bad_entry`.
async fn must_refuse(
    name: &str,
    entries: impl FnOnce(&mut tar::Builder<Vec<u8>>, &Path),
    bad_entry: impl FnOnce(&Path) -> String,
    reason: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let sentinel = outside.join("sentinel");
    std::fs::write(&sentinel, ORIGINAL).unwrap();

    let mut builder = tar::Builder::new(Vec::new());
    entries(&mut builder, &sentinel);
    let layout = dir.path().join("layout");
    build_from_layers(
        &[builder.into_inner().unwrap()],
        &Default::default(),
        &layout,
        TAG,
    )
    .unwrap();
    let store = must_open_store(dir.path());
    let err = store
        .pull(&layout.display().to_string(), &PullOptions::default())
        .await
        .expect_err(name);

    let ImageError::UnsafeEntry {
        layer,
        entry,
        reason: got,
    } = &err
    else {
        panic!("{name}: expected UnsafeEntry, got {err:?}");
    };
    assert!(layer.starts_with("sha256:"), "{name}: {layer}");
    assert_eq!(*entry, bad_entry(&sentinel), "{name}");
    assert_eq!(*got, reason, "{name}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("entry {entry:?}: {reason}")),
        "{name}: {message}"
    );

    assert_eq!(
        std::fs::read(&sentinel).unwrap(),
        ORIGINAL,
        "{name}: sentinel changed"
    );
    let outside_entries = std::fs::read_dir(&outside).unwrap().count();
    assert_eq!(
        outside_entries, 1,
        "{name}: something was created next to the sentinel"
    );
    assert!(
        leftover_tmp(&store).is_empty(),
        "{name}: temp dirs left behind"
    );
    let cached = std::fs::read_dir(store.root().join("layers/sha256"))
        .unwrap()
        .count();
    assert_eq!(cached, 0, "{name}: a refused layer was cached");
}

/// `../` repeated enough to climb from anywhere in the temp dir to `/`, then `path`.
fn climbing(path: &Path) -> String {
    let depth = path.components().count() + 4;
    let relative = path.display().to_string();
    format!(
        "{}{}",
        "../".repeat(depth),
        relative.trim_start_matches('/')
    )
}

use tar::EntryType::{Block, Char, Link, Regular, Symlink};

#[tokio::test]
async fn absolute_path_is_refused() {
    must_refuse(
        "absolute",
        |b, sentinel| raw_entry(b, Regular, &sentinel.display().to_string(), "", b"pwned"),
        |sentinel| sentinel.display().to_string(),
        "absolute path",
    )
    .await;
}

#[tokio::test]
async fn dotdot_path_is_refused() {
    must_refuse(
        "dotdot",
        |b, sentinel| raw_entry(b, Regular, &climbing(sentinel), "", b"pwned"),
        climbing,
        "path escapes the layer root",
    )
    .await;
}

#[tokio::test]
async fn write_through_symlink_is_refused() {
    must_refuse(
        "symlink",
        |b, sentinel| {
            let outside = sentinel.parent().unwrap().display().to_string();
            raw_entry(b, Symlink, "escape", &outside, b"");
            raw_entry(b, Regular, "escape/sentinel", "", b"pwned");
        },
        |_| "escape/sentinel".to_string(),
        "path goes through a symlink",
    )
    .await;
}

#[tokio::test]
async fn hard_link_escape_is_refused() {
    must_refuse(
        "hardlink dotdot",
        |b, sentinel| raw_entry(b, Link, "grab", &climbing(sentinel), b""),
        |_| "grab".to_string(),
        "hard link target escapes the layer root",
    )
    .await;
    must_refuse(
        "hardlink absolute",
        |b, sentinel| raw_entry(b, Link, "grab", &sentinel.display().to_string(), b""),
        |_| "grab".to_string(),
        "hard link target escapes the layer root",
    )
    .await;
    must_refuse(
        "hardlink through symlink",
        |b, sentinel| {
            let outside = sentinel.parent().unwrap().display().to_string();
            raw_entry(b, Symlink, "escape", &outside, b"");
            raw_entry(b, Link, "grab", "escape/sentinel", b"");
            raw_entry(b, Regular, "grab", "", b"pwned");
        },
        |_| "grab".to_string(),
        "hard link target goes through a symlink",
    )
    .await;
}

#[tokio::test]
async fn device_nodes_are_refused() {
    for kind in [Char, Block] {
        must_refuse(
            "device",
            |b, _| raw_entry(b, kind, "dev/mem", "", b""),
            |_| "dev/mem".to_string(),
            "device nodes are not allowed",
        )
        .await;
    }
}
