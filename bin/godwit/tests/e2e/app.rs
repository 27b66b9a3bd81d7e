//! The example app as the tests deploy it: the static `hello` binary and its `godwit.toml`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Writes `dir/godwit.toml`: the example app's file with its image replaced and `env` added.
pub(crate) fn write_app_config(dir: &Path, image: &str, env: &[(&str, &str)]) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello/godwit.toml");
    let text = std::fs::read_to_string(&example).expect("read examples/hello/godwit.toml");
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or_default().trim();
        if key == "image" {
            out.push_str(&format!("image = {image:?}\n"));
            continue;
        }
        if env.iter().any(|(name, _)| *name == key) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[env]" {
            for (name, value) in env {
                out.push_str(&format!("{name} = {value:?}\n"));
            }
        }
    }
    std::fs::write(dir.join("godwit.toml"), out).expect("write godwit.toml");
}

/// The static `hello` binary, built once per test process (cargo's lock makes concurrent
/// builds wait for each other; a built one is reused).
pub(crate) fn static_hello() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from);
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = Command::new(cargo)
                .args(["build", "--release", "-p", "hello", "--target", &triple])
                .arg("--manifest-path")
                .arg(root.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target_dir)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .output()
                .expect("run cargo to build the static hello example");
            assert!(
                output.status.success(),
                "building the static hello example failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            target_dir.join(triple).join("release/hello")
        })
        .clone()
}
