//! TLS (HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2 and 1.3) and h2c, with curl as the client.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use godwit_types::MachineState;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::support::{Backend, DOMAIN, HarnessBuilder, host, record};

/// Writes a test CA and a `*.<DOMAIN>` certificate it signed; returns (ca, cert, key) paths.
pub(crate) fn must_make_certs(
    dir: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "godwit test ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca certificate");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec![format!("*.{DOMAIN}")])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write ca");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

/// Runs curl; returns (http version, body).
fn curl(args: &[&str]) -> anyhow::Result<(String, String)> {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_version}"])
        .args(args)
        .output()
        .context("run curl (apt-get install -y curl)")?;
    if !output.status.success() {
        bail!(
            "curl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout)?;
    let (body, version) = text.rsplit_once('\n').context("curl output")?;
    Ok((version.to_owned(), body.to_owned()))
}

fn resolve(addr: SocketAddr) -> String {
    format!("{}:{}:{}", host("hello"), addr.port(), addr.ip())
}

#[tokio::test]
async fn tls_alpn_and_h2c_reach_the_machine_as_http1() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = must_make_certs(dir.path());
    let backend = Backend::start("hello-1").await;
    let harness = HarnessBuilder::new()
        .record(record(
            "m-hello",
            "hello",
            backend.addr,
            MachineState::Started,
        ))
        .https()
        .start_with_tls(Some((cert, key)))
        .await?;
    let https = harness.https.expect("https listener");
    let url = format!("https://{}:{}/tls", host("hello"), https.port());
    let ca = ca.to_str().expect("utf-8 path").to_owned();
    let resolve_https = resolve(https);

    let cases: [(&[&str], &str); 4] = [
        (&["--http2"], "2"),
        (&["--http1.1"], "1.1"),
        (&["--http2", "--tlsv1.3"], "2"),
        (&["--http1.1", "--tlsv1.2", "--tls-max", "1.2"], "1.1"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["--cacert", &ca, "--resolve", &resolve_https];
        args.extend_from_slice(flags);
        args.push(&url);
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let (version, body) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&args)
        })
        .await??;
        assert_eq!(version, want, "{flags:?}");
        let echo: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(echo["name"], "hello-1");
        assert_eq!(echo["version"], "HTTP/1.1", "machines get HTTP/1.1");
        let want_host = format!("{}:{}", host("hello"), https.port());
        assert_eq!(
            echo["headers"]["host"], want_host,
            "the client's Host, port included"
        );
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
        assert_eq!(echo["headers"]["x-forwarded-ssl"], "on");
        assert_eq!(echo["headers"]["fly-forwarded-port"], "443");
        assert_eq!(echo["headers"]["via"], format!("{want} godwit"));
    }

    // h2c with prior knowledge and plain HTTP/1.1 on the http listener.
    let url = format!("http://{}:{}/plain", host("hello"), harness.http.port());
    let resolve_http = resolve(harness.http);
    for (flag, want) in [("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")] {
        let (url, resolve_http) = (url.clone(), resolve_http.clone());
        let (version, body) =
            tokio::task::spawn_blocking(move || curl(&["--resolve", &resolve_http, flag, &url]))
                .await??;
        assert_eq!(version, want, "{flag}");
        let echo: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(echo["name"], "hello-1");
        assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    }
    Ok(())
}
