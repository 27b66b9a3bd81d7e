//! The dev cluster's proxy: started by `up` on loopback with the local CA's certificate, and
//! the public URLs `deploy` and `status` print for it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use godwit_types::Machine;

use super::{DevState, EnvFile, Layout, ProxyEnv, tls, up};

/// The dev domain unless `--domain` says otherwise: apps are `<app>.godwit.test`.
pub(super) const DEFAULT_DOMAIN: &str = "godwit.test";
/// Loopback ports unlikely to clash with anything, unless flags say otherwise.
pub(super) const DEFAULT_HTTP_PORT: u16 = 14280;
pub(super) const DEFAULT_HTTPS_PORT: u16 = 14243;

/// Makes the TLS files, starts `godwit proxy` (ports standing for 80 and 443) and waits until
/// both its listeners accept connections, which it does only once it has loaded the machines.
pub(super) async fn start(
    layout: &Layout,
    state: &mut DevState,
    exe: &Path,
    admin_token: &str,
    timeout: Duration,
) -> anyhow::Result<ProxyEnv> {
    let tls = tls::ensure(&layout.tls_dir, &state.domain)
        .with_context(|| format!("make the dev TLS files in {}", layout.tls_dir.display()))?;
    super::write_private(&layout.proxy_token_file, admin_token.as_bytes())?;
    let args: Vec<String> = vec![
        "proxy".into(),
        "--nats-url".into(),
        state.nats_url(),
        "--api-url".into(),
        state.api_url(),
        "--token-file".into(),
        layout.proxy_token_file.display().to_string(),
        "--domain".into(),
        state.domain.clone(),
        "--region".into(),
        state.region.clone(),
        "--http-listen".into(),
        format!("127.0.0.1:{}", state.proxy_http_port),
        "--https-listen".into(),
        format!("127.0.0.1:{}", state.proxy_https_port),
        "--cert".into(),
        tls.cert.display().to_string(),
        "--key".into(),
        tls.key.display().to_string(),
        "--http-port".into(),
        "80".into(),
        "--https-port".into(),
        "443".into(),
        "--cert-key-file".into(),
        layout.cert_key_file.display().to_string(),
    ];
    up::launch(layout, state, "proxy", exe, &args)?;
    let ports = [state.proxy_http_port, state.proxy_https_port];
    up::wait_ready(layout, state, "proxy", timeout, || async move {
        for port in ports {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    })
    .await?;
    Ok(ProxyEnv {
        domain: state.domain.clone(),
        http_port: state.proxy_http_port,
        https_port: state.proxy_https_port,
        ca_cert: tls.ca_cert,
    })
}

/// One line about the proxy for `up` and `status`.
pub(super) fn describe(proxy: &ProxyEnv) -> String {
    format!(
        "proxy  https://<app>.{} on 127.0.0.1:{} (http on :{}), CA {}",
        proxy.domain,
        proxy.https_port,
        proxy.http_port,
        proxy.ca_cert.display()
    )
}

/// What `deploy` and `status` print about the app's public URL when the dev cluster behind
/// `api_url` (in `data_dir`) runs a proxy: the URL and a ready-to-paste curl line. Nothing
/// when the API is not the dev cluster's or no machine offers port 443 or 80.
pub(crate) fn public_url_lines(
    data_dir: &Path,
    api_url: &str,
    app: &str,
    machines: &[Machine],
) -> Vec<String> {
    let env_file = super::read_json::<EnvFile>(&data_dir.join("dev").join("env.json"));
    let Ok(Some(EnvFile {
        api_url: dev_api_url,
        proxy: Some(proxy),
        ..
    })) = env_file
    else {
        return Vec::new();
    };
    if dev_api_url.trim_end_matches('/') != api_url.trim_end_matches('/') {
        return Vec::new();
    }
    let offers = |public: u16| {
        machines.iter().any(|m| {
            m.config
                .services
                .iter()
                .flat_map(|s| &s.ports)
                .any(|p| p.port == Some(public))
        })
    };
    let host = format!("{app}.{}", proxy.domain);
    if offers(443) {
        let port = proxy.https_port;
        let url = with_port("https", &host, port, 443);
        vec![
            format!("public URL: https://{host} (through the dev proxy: {url})"),
            format!(
                "  curl --cacert {} --resolve {host}:{port}:127.0.0.1 {url}/",
                proxy.ca_cert.display()
            ),
        ]
    } else if offers(80) {
        let port = proxy.http_port;
        let url = with_port("http", &host, port, 80);
        vec![
            format!("public URL: http://{host} (through the dev proxy: {url})"),
            format!("  curl --resolve {host}:{port}:127.0.0.1 {url}/"),
        ]
    } else {
        Vec::new()
    }
}

fn with_port(scheme: &str, host: &str, port: u16, default: u16) -> String {
    if port == default {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// `--domain`: lower-case DNS labels, at least two of them.
pub(super) fn check_domain(domain: &str) -> anyhow::Result<String> {
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    anyhow::ensure!(
        labels_ok && domain.contains('.'),
        "--domain {domain:?} must be a DNS name like godwit.test"
    );
    Ok(domain)
}
