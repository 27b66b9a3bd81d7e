//! Machine addresses for tests: a /24 nobody else routes, and where the host sends an address.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};

/// A /24 for one test's machines, out of 10.200.0.0–10.249.255.0. Machines get the same
/// addresses whenever the subnet is the same, and the host routes to the first interface that
/// has one: a subnet routed on the host already (machines left by a killed run, which a test
/// cannot tell from another test's live ones) or taken by a concurrent test would send this
/// test's requests to someone else's veth. So it is chosen unrouted and reserved with a file
/// (created exclusively, removed on drop; a killed run's file only takes its /24 out of use).
pub(crate) struct MachineSubnet {
    pub(crate) cidr: String,
    reservation: PathBuf,
}

impl MachineSubnet {
    const RESERVATIONS: &str = "/tmp/godwit-agent-test-subnets";

    pub(crate) fn reserve() -> anyhow::Result<Self> {
        std::fs::create_dir_all(Self::RESERVATIONS)?;
        for _ in 0..1000 {
            let a = 200 + rand::random::<u8>() % 50;
            let b = rand::random::<u8>();
            let prefix = format!("10.{a}.{b}.");
            if routed_prefixes()?.iter().any(|r| r.starts_with(&prefix)) {
                continue;
            }
            let reservation = Path::new(Self::RESERVATIONS).join(format!("10.{a}.{b}.0"));
            match std::fs::File::create_new(&reservation) {
                Ok(_) => {
                    return Ok(Self {
                        cidr: format!("10.{a}.{b}.0/24"),
                        reservation,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).context("reserve a machine subnet"),
            }
        }
        bail!("no free /24 in 10.200.0.0-10.249.255.0 for machines")
    }
}

impl Drop for MachineSubnet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.reservation);
    }
}

/// `ip route get <ip>`: which interface the host sends a machine's traffic to.
pub(crate) fn route_to(ip: &str) -> String {
    match std::process::Command::new("ip")
        .args(["-4", "route", "get", ip])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Err(e) => format!("ip route get {ip}: {e}"),
    }
}

/// The destinations (`a.b.c.d/len`) of the host's IPv4 routes, from `ip -4 route`.
fn routed_prefixes() -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .context("run `ip -4 route` (apt-get install -y iproute2)")?;
    ensure!(out.status.success(), "ip -4 route failed: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_owned)
        .collect())
}
