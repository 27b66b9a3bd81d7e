//! Per-machine network: a named netns holding `eth0`, the peer of a host-side veth.

use std::ffi::OsStr;
use std::path::Path;

use super::{MachinePaths, OciRuntime};
use crate::sys::{checked, io_err, write_atomic};
use crate::{MachineSpec, RuntimeError};

/// Where `ip netns` keeps named namespaces.
pub(super) const NETNS_DIR: &str = "/var/run/netns";

impl OciRuntime {
    /// Creates the netns and veth pair with addresses and routes, starting over if an
    /// earlier attempt did not finish (`net.done` is written last).
    pub(super) async fn setup_network(
        &self,
        spec: &MachineSpec,
        paths: &MachinePaths,
    ) -> Result<(), RuntimeError> {
        let netns = self.container_id(&spec.id);
        let veth = self.veth_host(&spec.id);
        if paths.net_done.exists() && netns_exists(&netns) && link_exists(&veth) {
            return Ok(());
        }
        self.teardown_network(&spec.id).await?;
        let net = &spec.network;
        let host_cidr = format!("{}/{}", net.host_ip, net.prefix_len);
        // Our own veth is gone now: any address left in this subnet belongs to another
        // interface, and the kernel would route the machine's traffic there instead.
        let taken = checked(
            OsStr::new("ip"),
            ["-o", "-4", "addr", "show", "to", host_cidr.as_str()],
        )
        .await?;
        if let Some(line) = String::from_utf8_lossy(&taken).lines().next() {
            let dev = line.split_whitespace().nth(1).unwrap_or("?");
            return Err(RuntimeError::InvalidSpec {
                id: spec.id.clone(),
                reason: format!(
                    "subnet {host_cidr} is already in use on {dev}; give the machine a free \
                     subnet (or remove what holds it)"
                ),
            });
        }
        let guest_cidr = format!("{}/{}", net.guest_ip, net.prefix_len);
        let host_ip = net.host_ip.to_string();
        let steps: [&[&str]; 8] = [
            &["netns", "add", &netns],
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
            &["addr", "add", &host_cidr, "dev", &veth],
            &["link", "set", &veth, "up"],
            &["-n", &netns, "addr", "add", &guest_cidr, "dev", "eth0"],
            &["-n", &netns, "link", "set", "eth0", "up"],
            &["-n", &netns, "link", "set", "lo", "up"],
            &["-n", &netns, "route", "add", "default", "via", &host_ip],
        ];
        for args in steps {
            ip(args).await?;
        }
        write_atomic(&paths.net_done, b"").map_err(io_err("write", &paths.net_done))?;
        Ok(())
    }

    /// Deletes the veth pair (synchronously, both ends) and then the netns. Ok if absent.
    pub(super) async fn teardown_network(&self, id: &str) -> Result<(), RuntimeError> {
        let netns = self.container_id(id);
        let veth = self.veth_host(id);
        if link_exists(&veth)
            && let Err(e) = ip(&["link", "del", &veth]).await
            && link_exists(&veth)
        {
            return Err(e);
        }
        if netns_exists(&netns)
            && let Err(e) = ip(&["netns", "del", &netns]).await
            && netns_exists(&netns)
        {
            return Err(e);
        }
        Ok(())
    }
}

pub(super) fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

pub(super) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

async fn ip(args: &[&str]) -> Result<(), RuntimeError> {
    checked(OsStr::new("ip"), args).await.map(drop)
}
