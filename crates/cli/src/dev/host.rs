//! What `godwit dev` needs from the host: programs (installed from Debian when missing), free
//! loopback ports and the machine's size.

use std::path::PathBuf;

use anyhow::Context;

use super::say;

/// Programs the dev cluster runs, and the Debian packages that provide them.
const NEEDED: [(&str, &str); 3] = [
    ("runc", "runc"),
    ("nats-server", "nats-server"),
    ("ip", "iproute2"),
];

/// Installs the Debian packages of missing programs (we run as root), unless told not to.
pub(super) fn ensure_programs(no_install: bool) -> anyhow::Result<()> {
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    anyhow::ensure!(
        !no_install && nix::unistd::geteuid().is_root(),
        "missing Debian packages: {list} (install them with `apt-get install -y {list}`)"
    );
    say(format_args!("installing missing packages: {list}"));
    if !apt_get(&["install", "-y", "--no-install-recommends"], &missing)? {
        // The package lists may be stale or absent (fresh containers): refresh and retry once.
        anyhow::ensure!(apt_get(&["update"], &[])?, "apt-get update failed");
        anyhow::ensure!(
            apt_get(&["install", "-y", "--no-install-recommends"], &missing)?,
            "apt-get install {list} failed"
        );
    }
    Ok(())
}

fn apt_get(args: &[&str], packages: &[&str]) -> anyhow::Result<bool> {
    let status = std::process::Command::new("apt-get")
        .args(args)
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("run apt-get")?;
    Ok(status.success())
}

/// The first `program` on `PATH` (plus the sbin directories, which a non-login root shell may
/// lack).
pub(super) fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `preferred` if it can be bound on loopback (so the API URL survives restarts), else a free
/// port the kernel picks.
pub(super) fn free_port(preferred: Option<u16>, taken: &[u16]) -> anyhow::Result<u16> {
    if let Some(port) = preferred.filter(|p| !taken.contains(p))
        && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    {
        return Ok(port);
    }
    loop {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).context("find a free loopback port")?;
        let port = listener
            .local_addr()
            .context("read a bound address")?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
}

/// CPUs and memory (MB) of this host, offered whole to the dev agent.
pub(super) fn capacity() -> (u32, u64) {
    let cpus = std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
        .unwrap_or(1);
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(1024, |kb| kb / 1024);
    (cpus, memory_mb)
}
