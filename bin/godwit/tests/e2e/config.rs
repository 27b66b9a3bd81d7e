//! Malformed `godwit.toml` / `fly.toml`: a clear error naming the line, before anything is
//! deployed (no cluster needed: the API URL points nowhere).

use std::path::Path;
use std::process::Command;

use crate::harness::GODWIT;

fn godwit_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(GODWIT)
        .args(args)
        .current_dir(dir)
        .env("GODWIT_HOME", dir.join("no-cluster"))
        .env("GODWIT_API_URL", "http://127.0.0.1:9")
        .env("GODWIT_API_TOKEN", "gw_not_a_token")
        .output()
        .expect("run godwit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn malformed_config_files_name_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");

    // A TOML syntax error on line 4.
    std::fs::write(
        dir.path().join("godwit.toml"),
        "app = \"hello\"\nprimary_region = \"local\"\n\n[http_service\ninternal_port = 8080\n",
    )
    .expect("write godwit.toml");
    let (ok, text) = godwit_in(dir.path(), &["deploy"]);
    assert!(!ok, "deploy of a malformed file succeeded:\n{text}");
    assert!(text.contains("line 4"), "the error names line 4:\n{text}");
    assert!(!text.contains("panicked"), "{text}");

    // A wrong type on line 5, in a fly.toml.
    let fly = dir.path().join("fly");
    std::fs::create_dir_all(&fly).expect("mkdir");
    std::fs::write(
        fly.join("fly.toml"),
        "app = \"hello\"\nprimary_region = \"local\"\n\n[http_service]\n  internal_port = \"eighty\"\n",
    )
    .expect("write fly.toml");
    let (ok, text) = godwit_in(&fly, &["config", "validate", "fly.toml"]);
    assert!(!ok, "validate of a malformed file succeeded:\n{text}");
    assert!(text.contains("line 5"), "the error names line 5:\n{text}");
    assert!(
        text.contains("internal_port"),
        "the error names the key:\n{text}"
    );
    let (ok, text) = godwit_in(&fly, &["deploy"]);
    assert!(!ok, "deploy of a malformed fly.toml succeeded:\n{text}");
    assert!(text.contains("line 5"), "deploy names line 5 too:\n{text}");

    // The example app's own file is valid.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello/godwit.toml");
    let (ok, text) = godwit_in(
        dir.path(),
        &["config", "validate", &example.display().to_string()],
    );
    assert!(ok, "examples/hello/godwit.toml must validate:\n{text}");
}
