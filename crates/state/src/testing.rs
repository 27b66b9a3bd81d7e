//! A real `nats-server` with JetStream for tests: free ports, a temporary store, killed on
//! drop. Needs the `nats-server` binary on `PATH` (Debian package `nats-server`).
//!
//! [`NatsServer::start_region`] starts one region's server (its own JetStream domain, leaf
//! connections to the hub; see [`crate::region_server_config`]), for tests of regional
//! buckets with several servers on loopback.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer `/healthz` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `nats-server -js` on 127.0.0.1.
#[derive(Debug)]
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    /// The client port.
    pub port: u16,
    /// The HTTP monitoring port (`/healthz`, `/jsz`).
    pub monitor_port: u16,
    /// The port accepting leaf connections, on a region server started with `leaf_listen`.
    pub leaf_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    region: Option<Region>,
}

/// How a region server is configured.
#[derive(Debug)]
struct Region {
    domain: String,
    leaf_listen: bool,
    leaf_remotes: Vec<String>,
}

/// Why a test nats-server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartNatsError {
    #[error("failed to run nats-server (is it installed? apt-get install -y nats-server)")]
    Spawn(#[source] std::io::Error),
    #[error("failed to create a temporary directory for nats-server")]
    TempDir(#[source] std::io::Error),
    #[error("failed to write the nats-server configuration file")]
    Config(#[source] std::io::Error),
    #[error("nats-server exited with {status} before it was ready; its log:\n{log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("nats-server was not healthy within {timeout:?}; its log:\n{log}")]
    NotReady { timeout: Duration, log: String },
}

impl NatsServer {
    /// Starts a server on free ports with a fresh store, and waits until it is healthy
    /// (JetStream included).
    pub fn start() -> Result<Self, StartNatsError> {
        Self::start_with(None)
    }

    /// Starts the server of region `domain`: JetStream domain `domain`, accepting leaf
    /// connections when `leaf_listen` (the hub; see [`NatsServer::leaf_url`]) and connecting
    /// to every `leaf_remotes` URL (`nats-leaf://…`, the hub's). Waits until it is healthy and
    /// its leaf connections are up, so start the hub first. Restarts keep every port, so the
    /// spokes of a restarted hub reconnect by themselves.
    pub fn start_region(
        domain: &str,
        leaf_listen: bool,
        leaf_remotes: &[String],
    ) -> Result<Self, StartNatsError> {
        Self::start_with(Some(Region {
            domain: domain.to_owned(),
            leaf_listen,
            leaf_remotes: leaf_remotes.to_vec(),
        }))
    }

    /// `nats-leaf://127.0.0.1:<port>` of a hub, for the `leaf_remotes` of the others.
    pub fn leaf_url(&self) -> Option<String> {
        self.leaf_port
            .map(|port| format!("nats-leaf://127.0.0.1:{port}"))
    }

    /// The JetStream domain of a region server.
    pub fn domain(&self) -> Option<&str> {
        self.region.as_ref().map(|region| region.domain.as_str())
    }

    fn start_with(region: Option<Region>) -> Result<Self, StartNatsError> {
        let dir = tempfile::Builder::new()
            .prefix("godwit-nats-")
            .tempdir()
            .map_err(StartNatsError::TempDir)?;
        let mut server = NatsServer {
            url: String::new(),
            port: 0,
            monitor_port: 0,
            leaf_port: None,
            dir,
            child: None,
            region,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Kills the server (SIGKILL, like a crash) and starts it again on the same ports with
    /// the same store.
    pub fn restart(&mut self) -> Result<(), StartNatsError> {
        self.stop();
        self.spawn()
    }

    /// Kills the server and reaps it. Connected clients start reconnecting.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: either way it is gone after `wait`.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Starts the process: on ports chosen by the server the first time, on the same ports
    /// after that.
    fn spawn(&mut self) -> Result<(), StartNatsError> {
        let (port, monitor_port) = if self.port == 0 {
            ("-1".to_owned(), "-1".to_owned())
        } else {
            (self.port.to_string(), self.monitor_port.to_string())
        };
        let mut command = Command::new("nats-server");
        match &self.region {
            None => {
                command
                    .args(["-js", "-a", "127.0.0.1", "-p", &port, "-m", &monitor_port])
                    .arg("-sd")
                    .arg(self.store_dir());
            }
            Some(region) => {
                let leaf_port = self.leaf_port.map_or("-1".to_owned(), |p| p.to_string());
                let config = crate::region_server_config(&crate::RegionServer {
                    name: format!("godwit-test-{}", region.domain),
                    domain: region.domain.clone(),
                    listen: format!("127.0.0.1:{port}"),
                    monitor: Some(format!("127.0.0.1:{monitor_port}")),
                    leaf_listen: region.leaf_listen.then(|| format!("127.0.0.1:{leaf_port}")),
                    leaf_remotes: region.leaf_remotes.clone(),
                    store_dir: self.store_dir(),
                });
                let path = self.dir.path().join("nats-server.conf");
                std::fs::write(&path, config).map_err(StartNatsError::Config)?;
                command.arg("-c").arg(path);
            }
        }
        let child = command
            .arg("--ports_file_dir")
            .arg(self.dir.path())
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(StartNatsError::Spawn)?;
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let ports_file = self.dir.path().join(format!("nats-server_{pid}.ports"));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(StartNatsError::Exited {
                    status,
                    log: read_log(&self.log_path()),
                });
            }
            if self.port == 0
                && let Some((port, monitor_port)) = read_ports(&ports_file)
            {
                self.port = port;
                self.monitor_port = monitor_port;
            }
            if self.port != 0 && healthy(self.monitor_port) && self.leaves_ready() {
                self.url = format!("nats://127.0.0.1:{}", self.port);
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(StartNatsError::NotReady {
                    timeout: START_TIMEOUT,
                    log: read_log(&self.log_path()),
                });
            }
            // Polling a condition with a deadline, not synchronising by sleep.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// === impl NatsServer (region servers) ===

impl NatsServer {
    /// Whether a region server's leaf connections are up (and, the first time, learns the
    /// port it accepts them on). Always true for a plain server.
    fn leaves_ready(&mut self) -> bool {
        let Some(region) = &self.region else {
            return true;
        };
        let Some(varz) = get_json(self.monitor_port, "/varz") else {
            return false;
        };
        if region.leaf_listen && self.leaf_port.is_none() {
            let port = varz
                .pointer("/leaf/port")
                .and_then(serde_json::Value::as_u64);
            match port.and_then(|port| u16::try_from(port).ok()) {
                Some(port) if port != 0 => self.leaf_port = Some(port),
                _ => return false,
            }
        }
        let connected = varz
            .get("leafnodes")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        connected >= u64::try_from(region.leaf_remotes.len()).unwrap_or(u64::MAX)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client and monitoring ports from the server's ports file, once it is complete.
fn read_ports(path: &Path) -> Option<(u16, u16)> {
    let text = std::fs::read_to_string(path).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port_of = |name: &str| -> Option<u16> {
        let url = ports.get(name)?.get(0)?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    };
    Some((port_of("nats")?, port_of("monitoring")?))
}

/// Whether `GET /healthz` on the monitoring port answers 200 (JetStream is up).
fn healthy(monitor_port: u16) -> bool {
    get(monitor_port, "/healthz").is_some()
}

/// The JSON body of a 200 answer to `GET path` on the monitoring port.
fn get_json(monitor_port: u16, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&get(monitor_port, path)?).ok()
}

/// The body of a 200 answer to `GET path` on the monitoring port.
fn get(monitor_port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", monitor_port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    if !(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")) {
        return None;
    }
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some(body.to_owned())
}

fn read_log(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}
