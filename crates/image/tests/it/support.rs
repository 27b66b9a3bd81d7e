//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use godwit_image::{BuildOptions, ImageStore, build_from_binary};

pub(crate) const BUSYBOX: &str = "/bin/busybox";
pub(crate) const TAG: &str = "v1";

/// Fails with a clear message when a tool the test needs is missing.
pub(crate) fn must_have_tool(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package `{package}` (apt-get install -y {package})"
    );
}

/// Runs a command and fails the test (with its output) unless it succeeds.
pub(crate) fn must_run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the busybox image as an OCI layout under `dir`; returns the layout dir and digest.
pub(crate) fn must_build_busybox(dir: &Path) -> (PathBuf, String) {
    must_have_tool(BUSYBOX, "busybox-static");
    let layout = dir.join("layout");
    let digest = build_from_binary(Path::new(BUSYBOX), &layout, &busybox_options()).unwrap();
    (layout, digest)
}

pub(crate) fn busybox_options() -> BuildOptions {
    BuildOptions {
        name: "busybox".into(),
        tag: TAG.into(),
        env: vec!["GREETING=hello".into()],
        exposed_port: Some(8080),
    }
}

pub(crate) fn must_open_store(dir: &Path) -> ImageStore {
    ImageStore::open(dir.join("store")).unwrap()
}

/// Entries left in the store's work dir (must be empty after every pull, good or bad).
pub(crate) fn leftover_tmp(store: &ImageStore) -> Vec<PathBuf> {
    std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Checks that an unpacked busybox image is what was built.
pub(crate) fn assert_busybox_image(image: &godwit_image::Image) {
    assert_eq!(image.config.entrypoint, vec!["/busybox".to_string()]);
    assert!(image.config.env.contains(&"GREETING=hello".to_string()));
    assert_eq!(image.config.exposed_ports, vec!["8080/tcp".to_string()]);
    assert_eq!(image.layers.len(), 1);
    let unpacked = image.layers[0].join("busybox");
    assert_eq!(
        std::fs::read(&unpacked).unwrap(),
        std::fs::read(BUSYBOX).unwrap()
    );
    let out = Command::new(&unpacked)
        .args(["echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}
