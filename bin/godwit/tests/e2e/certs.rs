//! `godwit certs` against a real dev cluster: a certificate made with rcgen is imported, shown
//! with its expiry and removed; bad files are refused naming the file; `add` on an API without
//! an ACME directory fails with the API's reason. No output ever holds the private key.

use std::path::Path;
use std::process::Output;

use rcgen::{CertificateParams, DnType, KeyPair};

use crate::harness::DevCluster;

const APP: &str = "shop";
const HOST: &str = "www.shop-example.test";
/// The `not_after` the test certificate gets, and how the CLI prints it.
const NOT_AFTER_DAY: (i32, u8, u8) = (2040, 1, 2);
const NOT_AFTER_TEXT: &str = "2040-01-02T00:00:00Z";
const NOT_AFTER_MS: u64 = 2_209_075_200_000;
const ISSUER_CN: &str = "Shop Test CA";

/// (chain PEM, key PEM) of a self-signed certificate for `HOST`.
fn must_self_signed() -> (String, String) {
    let key = KeyPair::generate().expect("generate a key");
    let mut params = CertificateParams::new(vec![HOST.to_owned()]).expect("certificate params");
    let (year, month, day) = NOT_AFTER_DAY;
    params.not_after = rcgen::date_time_ymd(year, month, day);
    params
        .distinguished_name
        .push(DnType::CommonName, ISSUER_CN);
    let cert = params.self_signed(&key).expect("self-sign");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a PEM file");
    path.display().to_string()
}

/// Both streams of a finished command, for messages and "no key here" checks.
fn streams(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `certs import` of `HOST` into `APP`.
fn import<'a>(chain_file: &'a str, key_file: &'a str) -> [&'a str; 9] {
    [
        "certs",
        "import",
        "-a",
        APP,
        HOST,
        "--fullchain",
        chain_file,
        "--key",
        key_file,
    ]
}

/// Runs a command that must fail; returns its output.
fn must_fail(cluster: &DevCluster, args: &[&str]) -> String {
    let output = cluster.godwit(cluster.tmp_path(), args);
    let text = streams(&output);
    assert!(
        !output.status.success(),
        "`godwit {}` succeeded:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
fn certs_import_list_show_remove_and_add_without_acme() {
    let mut cluster = DevCluster::start();
    let dir = cluster.tmp_path().to_owned();
    cluster.must_godwit(&dir, &["apps", "create", APP]);
    let (chain, key) = must_self_signed();
    let (_, other_key) = must_self_signed();
    let chain_file = write(&dir, "fullchain.pem", &chain);
    let key_file = write(&dir, "key.pem", &key);
    let other_key_file = write(&dir, "other-key.pem", &other_key);
    let key_body = key.lines().nth(1).expect("a PEM key has a body line");

    // Files the wrong way round: refused before upload, naming the flags.
    let text = must_fail(&cluster, &import(&key_file, &chain_file));
    assert!(
        text.contains(&format!("--fullchain {key_file} holds no certificate"))
            && text.contains("wrong way round"),
        "swapped files are named:\n{text}"
    );
    // A key of another certificate: the API's reason, naming the key file.
    let text = must_fail(&cluster, &import(&chain_file, &other_key_file));
    assert!(
        text.contains(&format!("{other_key_file} was refused"))
            && text.contains("private_key does not match the certificate")
            && text.contains("HTTP 422"),
        "a mismatched key is refused naming the file:\n{text}"
    );
    assert!(!text.contains(key_body), "an error shows key material");

    // Import, then list and show it with its expiry and issuer.
    let imported = cluster.must_godwit(&dir, &import(&chain_file, &key_file));
    assert!(
        imported.contains(HOST) && imported.contains(NOT_AFTER_TEXT),
        "import says what was stored:\n{imported}"
    );
    let listed = cluster.must_godwit(&dir, &["certs", "list", "-a", APP]);
    let row = listed
        .lines()
        .find(|l| l.starts_with(HOST))
        .unwrap_or_else(|| panic!("list has a row for {HOST}:\n{listed}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..4],
        [HOST, "custom", "ready", NOT_AFTER_TEXT],
        "{listed}"
    );
    assert!(row.contains(ISSUER_CN), "the issuer is listed:\n{listed}");
    let listed_json = cluster.must_godwit(&dir, &["certs", "list", "-a", APP, "--json"]);
    let list: serde_json::Value = serde_json::from_str(&listed_json).expect("list --json");
    assert_eq!(list["certificates"][0]["hostname"], HOST, "{listed_json}");
    assert_eq!(
        list["certificates"][0]["not_after"], NOT_AFTER_MS,
        "{listed_json}"
    );
    let shown = cluster.must_godwit(&dir, &["certs", "show", "-a", APP, HOST]);
    for field in [
        "source:     custom",
        "status:     ready",
        &format!("not after:  {NOT_AFTER_TEXT}"),
        &format!("app:        {APP}"),
    ] {
        assert!(shown.contains(field), "show has {field:?}:\n{shown}");
    }
    let shown_json = cluster.must_godwit(&dir, &["certs", "show", "-a", APP, HOST, "--json"]);
    let cert: serde_json::Value = serde_json::from_str(&shown_json).expect("show --json");
    assert_eq!(cert["not_after"], NOT_AFTER_MS, "{shown_json}");
    assert_eq!(cert["status"], "ready", "{shown_json}");
    for text in [&imported, &listed, &listed_json, &shown, &shown_json] {
        assert!(
            !text.contains(key_body) && !text.contains("PRIVATE KEY"),
            "key material printed:\n{text}"
        );
    }

    // Remove: gone from list and show.
    let removed = cluster.must_godwit(&dir, &["certs", "remove", "-a", APP, HOST]);
    assert!(removed.contains(HOST), "{removed}");
    let listed = cluster.must_godwit(&dir, &["certs", "list", "-a", APP]);
    assert!(
        listed.contains(&format!("app {APP} has no certificates")),
        "{listed}"
    );
    let text = must_fail(&cluster, &["certs", "show", "-a", APP, HOST]);
    assert!(
        text.contains(&format!("app {APP} has no certificate for {HOST}"))
            && text.contains("HTTP 404"),
        "show of a removed certificate gives the API's 404:\n{text}"
    );

    // ACME without a directory configured (dev clusters have none): the API's reason, exit 1.
    let output = cluster.godwit(&dir, &["certs", "add", "-a", APP, HOST, "--wait"]);
    let text = streams(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("this api has no acme directory configured")
            && text.contains("HTTP 422")
            && text.contains(&format!("godwit certs import {HOST}")),
        "add gives the API's reason:\n{text}"
    );

    cluster.down();
}
