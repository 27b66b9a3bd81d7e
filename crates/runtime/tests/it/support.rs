//! Test host: a unique name prefix, a temp data dir, a busybox layer, and cleanup on drop.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use godwit_runtime::{MachineRuntime, MachineSpec, NetworkSpec, OciConfig, OciRuntime};
use tokio::time::Instant;

/// Applets linked into the test layer.
const APPLETS: &[&str] = &[
    "sh", "httpd", "echo", "sleep", "cat", "dd", "head", "tail", "ls", "true", "seq", "hostname",
];

/// A runtime with a unique prefix over a temp dir; destroys what it made when dropped.
pub(crate) struct Host {
    pub(crate) cfg: OciConfig,
    pub(crate) rt: OciRuntime,
    pub(crate) layer: PathBuf,
    // Declared last: removed after the machines are destroyed.
    _tmp: tempfile::TempDir,
}

impl Host {
    pub(crate) fn new() -> Self {
        Self::with_logs(1 << 20, 3)
    }

    pub(crate) fn with_logs(log_max_bytes: u64, log_keep: usize) -> Self {
        must_have_tools();
        let tmp = tempfile::Builder::new()
            .prefix("godwit-runtime-it-")
            .tempdir()
            .expect("temp dir");
        let layer = tmp.path().join("layer");
        must_make_busybox_layer(&layer);
        let mut cfg = OciConfig::under(
            &tmp.path().join("data"),
            vec![env!("CARGO_BIN_EXE_godwit-shim").to_owned()],
        );
        cfg.name_prefix = format!("t{:05x}", random() & 0xf_ffff);
        cfg.log_max_bytes = log_max_bytes;
        cfg.log_keep = log_keep;
        let rt = OciRuntime::new(cfg.clone()).expect("runtime");
        let cfg = rt.config().clone();
        Self {
            cfg,
            rt,
            layer,
            _tmp: tmp,
        }
    }

    /// A spec running `args` in the busybox layer, on a random /30.
    pub(crate) fn spec(&self, id: &str, args: &[&str]) -> MachineSpec {
        let base = 0x0a80_0000u32 | ((random() as u32 & 0x1f_ffff) << 2); // 10.128.0.0/9
        MachineSpec {
            id: id.to_owned(),
            layers: vec![self.layer.clone()],
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec!["PATH=/bin".to_owned(), "GREETING=hi".to_owned()],
            cwd: "/".to_owned(),
            user: None,
            hostname: format!("m-{id}"),
            cpus: 1,
            memory_mb: 64,
            network: NetworkSpec {
                host_ip: Ipv4Addr::from(base + 1),
                guest_ip: Ipv4Addr::from(base + 2),
                prefix_len: 30,
            },
        }
    }

    pub(crate) fn machine_dir(&self, id: &str) -> PathBuf {
        self.cfg.root.join(id)
    }

    pub(crate) fn container_id(&self, id: &str) -> String {
        format!("{}-{id}", self.cfg.name_prefix)
    }

    pub(crate) fn veth(&self, id: &str) -> String {
        format!("{}{}h", self.cfg.name_prefix, &id[..8])
    }

    pub(crate) fn cgroup_dir(&self, controller: &str, id: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&self.cfg.name_prefix)
            .join(id)
    }
}

#[allow(clippy::print_stderr)] // test-only: report a failed cleanup without panicking in drop
impl Drop for Host {
    fn drop(&mut self) {
        if std::env::var_os("GODWIT_KEEP_TMP").is_some() {
            eprintln!("GODWIT_KEEP_TMP: keeping {}", self.cfg.root.display());
            self._tmp.disable_cleanup(true);
            return;
        }
        // Drop cannot await, and may run inside the test's runtime: use a thread.
        let cfg = self.cfg.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                let rt = OciRuntime::new(cfg).expect("runtime");
                for id in rt.list().await.unwrap_or_default() {
                    if let Err(e) = rt.destroy(&id).await {
                        eprintln!("cleanup of machine {id} failed: {e}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A fresh 14-hex-character machine id.
pub(crate) fn new_id() -> String {
    format!("{:014x}", random() & 0x00ff_ffff_ffff_ffff)
}

fn random() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn must_have_tools() {
    for (tool, package) in [
        ("/usr/sbin/runc", "runc"),
        ("/bin/busybox", "busybox-static"),
        ("/usr/sbin/ip", "iproute2"),
    ] {
        assert!(
            Path::new(tool).exists() || which(tool),
            "{tool} is missing: install the Debian package {package}"
        );
    }
}

fn which(tool: &str) -> bool {
    let name = Path::new(tool).file_name().expect("tool name");
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).exists()))
        .unwrap_or(false)
}

fn must_make_busybox_layer(layer: &Path) {
    let bin = layer.join("bin");
    std::fs::create_dir_all(&bin).expect("layer bin");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    std::fs::create_dir_all(layer.join("www")).expect("www");
    std::fs::write(layer.join("www/index.html"), "hello from the layer\n").expect("index");
}

/// Polls `check` until it returns `Some`, failing after `timeout` with `what`.
pub(crate) async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP/1.0 GET; the whole response, or `None` if it could not connect.
pub(crate) async fn http_get(ip: Ipv4Addr, port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect((ip, port));
    let mut stream = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    Some(response)
}

/// Mount points (fifth field of /proc/self/mountinfo).
pub(crate) fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

impl Host {
    /// The machine's whole log plus the shim's own log, for assertion messages.
    pub(crate) fn logs(&self, id: &str) -> String {
        let mut text = String::new();
        for file in self.rt.log_files(id) {
            text.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
        text.push_str(
            &std::fs::read_to_string(self.machine_dir(id).join("shim.log")).unwrap_or_default(),
        );
        text
    }
}
