//! Debian's `pebble` ACME test server and `pebble-challtestsrv` (its DNS, answering
//! 127.0.0.1 for every name) on free loopback ports; both killed on drop.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running pebble that validates challenges on `127.0.0.1:<http_port>` (HTTP-01) and
/// `127.0.0.1:<tls_port>` (TLS-ALPN-01).
pub(crate) struct Pebble {
    /// The ACME directory URL.
    pub(crate) directory: String,
    /// The CA of pebble's own HTTPS listeners, for the ACME client.
    pub(crate) ca_pem: PathBuf,
    management_port: u16,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Pebble {
    pub(crate) fn start(http_port: u16, tls_port: u16) -> anyhow::Result<Pebble> {
        Self::start_with_validity(http_port, tls_port, None)
    }

    /// Like [`Pebble::start`], issuing certificates valid for `validity` (pebble's
    /// `certificateValidityPeriod`; its default is five years) so that tests can see them
    /// come due for renewal.
    pub(crate) fn start_with_validity(
        http_port: u16,
        tls_port: u16,
        validity: Option<Duration>,
    ) -> anyhow::Result<Pebble> {
        let dir = tempfile::Builder::new()
            .prefix("godwit-pebble-")
            .tempdir()?;
        let mut pebble = Pebble {
            directory: String::new(),
            ca_pem: dir.path().join("listener-ca.pem"),
            management_port: 0,
            dir,
            children: Vec::new(),
        };
        // The TLS certificate of pebble's listeners, from a CA of this test.
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "godwit pebble listener ca");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &ca)?;
        let root = pebble.dir.path().to_owned();
        let path = |name: &str| root.join(name);
        std::fs::write(&pebble.ca_pem, ca.pem())?;
        std::fs::write(path("cert.pem"), cert.pem())?;
        std::fs::write(path("key.pem"), key.serialize_pem())?;

        let dns_port = free_udp_port()?;
        let challtestsrv_management = free_tcp_port()?;
        let child = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args([
                "-management",
                &format!("127.0.0.1:{challtestsrv_management}"),
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(path("challtestsrv.log"))?)
            .stderr(std::fs::File::create(path("challtestsrv.err"))?)
            .spawn()
            .context("run pebble-challtestsrv (apt-get install -y pebble)")?;
        pebble.children.push(child);
        pebble.wait_listening(challtestsrv_management, "challtestsrv")?;

        let listen_port = free_tcp_port()?;
        pebble.management_port = free_tcp_port()?;
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen_port}"),
            "managementListenAddress": format!("127.0.0.1:{}", pebble.management_port),
            "certificate": path("cert.pem"),
            "privateKey": path("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(validity) = validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().into();
        }
        std::fs::write(path("pebble.json"), config.to_string())?;
        let child = Command::new("pebble")
            .arg("-config")
            .arg(path("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(path("pebble.log"))?)
            .stderr(std::fs::File::create(path("pebble.err"))?)
            .spawn()
            .context("run pebble (apt-get install -y pebble)")?;
        pebble.children.push(child);
        pebble.wait_listening(listen_port, "pebble")?;
        pebble.wait_listening(pebble.management_port, "pebble management")?;
        pebble.directory = format!("https://127.0.0.1:{listen_port}/dir");
        Ok(pebble)
    }

    /// PEM of pebble's root CA (new at every start), which issued certificates chain to.
    pub(crate) fn root_pem(&self) -> anyhow::Result<String> {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let output = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(&self.ca_pem)
            .arg(&url)
            .output()
            .context("run curl (apt-get install -y curl)")?;
        if !output.status.success() {
            bail!("GET {url}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// pebble's log, for failure messages.
    pub(crate) fn log(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn wait_listening(&mut self, port: u16, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "{what} exited with {status} before listening:\n{}",
                        self.log()
                    );
                }
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{what} did not listen on {port} within {START_TIMEOUT:?}");
            }
            // Polling a condition with a deadline, not synchronising by sleep.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}
