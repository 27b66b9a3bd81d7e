//! Pulling `docker save` archives and OCI archives produced by skopeo.

use std::process::Command;

use godwit_image::PullOptions;

use crate::support::*;

const SKOPEO: &str = "/usr/bin/skopeo";

#[tokio::test]
async fn docker_archive_from_skopeo() {
    must_have_tool(SKOPEO, "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = must_build_busybox(dir.path());
    let archive = dir.path().join("image.tar");
    must_run(Command::new(SKOPEO).args([
        "copy".to_string(),
        format!("oci:{}:{TAG}", layout.display()),
        format!("docker-archive:{}:hello:1", archive.display()),
    ]));

    let store = must_open_store(dir.path());
    let explicit = format!("docker-archive:{}", archive.display());
    let image = store
        .pull(&explicit, &PullOptions::default())
        .await
        .unwrap();
    assert_busybox_image(&image);
    assert!(image.manifest_digest.starts_with("sha256:"));

    let tagged = format!("docker-archive:{}:hello:1", archive.display());
    let by_tag = store.pull(&tagged, &PullOptions::default()).await.unwrap();
    let plain = archive.display().to_string();
    let by_path = store.pull(&plain, &PullOptions::default()).await.unwrap();
    for other in [&by_tag, &by_path] {
        assert_eq!(other.manifest_digest, image.manifest_digest);
        assert_eq!(other.layers, image.layers);
    }
    let missing = format!("docker-archive:{}:other:2", archive.display());
    assert!(store.pull(&missing, &PullOptions::default()).await.is_err());
    assert!(leftover_tmp(&store).is_empty());
}

#[tokio::test]
async fn oci_archive_from_skopeo() {
    must_have_tool(SKOPEO, "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let (layout, digest) = must_build_busybox(dir.path());
    let archive = dir.path().join("image-oci.tar");
    must_run(Command::new(SKOPEO).args([
        "copy".to_string(),
        format!("oci:{}:{TAG}", layout.display()),
        format!("oci-archive:{}:{TAG}", archive.display()),
    ]));

    let store = must_open_store(dir.path());
    let reference = format!("oci-archive:{}", archive.display());
    let image = store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap();
    assert_busybox_image(&image);
    assert_eq!(
        image.manifest_digest, digest,
        "skopeo copies the manifest unchanged"
    );

    // The same layers as pulling the layout directly: one cache entry, shared.
    let direct = store
        .pull(
            &format!("oci:{}:{TAG}", layout.display()),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(direct.layers, image.layers);
}
