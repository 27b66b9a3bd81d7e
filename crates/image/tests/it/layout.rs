//! Building an image from a binary and pulling it from an OCI layout directory.

use std::os::unix::fs::PermissionsExt;

use godwit_image::{ImageError, PullOptions, build_from_binary, build_from_layers};

use crate::support::*;

#[tokio::test]
async fn build_then_pull_from_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, digest) = must_build_busybox(dir.path());
    assert!(digest.starts_with("sha256:"));

    let again = build_from_binary(
        BUSYBOX.as_ref(),
        &dir.path().join("again"),
        &busybox_options(),
    );
    assert_eq!(again.unwrap(), digest, "builds must be reproducible");

    let store = must_open_store(dir.path());
    let reference = format!("oci:{}:{TAG}", layout.display());
    let image = store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(image.reference, reference);
    assert_eq!(image.manifest_digest, digest);
    assert_busybox_image(&image);
    let layer = &image.layers[0];
    assert!(layer.starts_with(store.root().join("layers/sha256")));
    let mode = |p: &str| {
        std::fs::metadata(layer.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("busybox"), 0o755);
    assert_eq!(mode("tmp"), 0o1777);
    assert!(layer.join("etc").is_dir());
    assert!(leftover_tmp(&store).is_empty());

    // A second pull is a cache hit: it works even with the layer blob gone from the layout.
    for blob in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap().path();
        if std::fs::metadata(&blob).unwrap().len() > 100_000 {
            std::fs::remove_file(blob).unwrap();
        }
    }
    let plain_path = layout.display().to_string();
    let second = store
        .pull(&plain_path, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(second.manifest_digest, digest);
    assert_eq!(second.layers, image.layers);
}

#[tokio::test]
async fn unknown_tag_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = must_build_busybox(dir.path());
    let store = must_open_store(dir.path());
    let reference = format!("oci:{}:nope", layout.display());
    let err = store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn layer_with_wrong_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let config = Default::default();
    build_from_layers(&[tar_with_file("a.txt", b"genuine")], &config, &layout, TAG).unwrap();
    // Swap the layer blob for another valid layer under the original's name.
    let other = dir.path().join("other");
    build_from_layers(&[tar_with_file("a.txt", b"tampered")], &config, &other, TAG).unwrap();
    let layer_blob = |root: &std::path::Path| {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
        let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join("blobs/sha256").join(&manifest_digest[7..])).unwrap(),
        )
        .unwrap();
        let digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
        root.join("blobs/sha256").join(&digest[7..])
    };
    std::fs::copy(layer_blob(&other), layer_blob(&layout)).unwrap();

    let store = must_open_store(dir.path());
    let err = store
        .pull(&layout.display().to_string(), &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(leftover_tmp(&store).is_empty());
    let cached = std::fs::read_dir(store.root().join("layers/sha256"))
        .unwrap()
        .count();
    assert_eq!(cached, 0, "a refused layer must not be cached");
}

pub(crate) fn tar_with_file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_path(name).unwrap();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_share_one_cache_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, digest) = must_build_busybox(dir.path());
    let store = must_open_store(dir.path());
    let reference = format!("oci:{}:{TAG}", layout.display());
    let pulls = (0..4).map(|_| {
        let store = store.clone();
        let reference = reference.clone();
        tokio::spawn(async move { store.pull(&reference, &PullOptions::default()).await })
    });
    let images: Vec<_> = futures_join(pulls).await;
    for image in &images {
        assert_eq!(image.manifest_digest, digest);
        assert_eq!(image.layers, images[0].layers);
    }
    assert_busybox_image(&images[0]);
    assert!(
        leftover_tmp(&store).is_empty(),
        "losing racers must clean up"
    );
    let cached = std::fs::read_dir(store.root().join("layers/sha256"))
        .unwrap()
        .count();
    assert_eq!(cached, 1);
}

async fn futures_join(
    handles: impl Iterator<Item = tokio::task::JoinHandle<Result<godwit_image::Image, ImageError>>>,
) -> Vec<godwit_image::Image> {
    let mut images = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        images.push(handle.await.unwrap().unwrap());
    }
    images
}
