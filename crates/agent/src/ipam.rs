//! Machine addresses: one /30 per machine out of the host's subnet (host .1, guest .2).

use std::net::Ipv4Addr;

/// The host's machine subnet, e.g. `172.30.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subnet {
    base: u32,
    prefix_len: u8,
}

/// A machine's point-to-point link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) host_ip: Ipv4Addr,
    pub(crate) guest_ip: Ipv4Addr,
}

/// Every machine gets a /30.
pub(crate) const LINK_PREFIX_LEN: u8 = 30;

// === impl Subnet ===

impl std::str::FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("subnet {s:?} is not an IPv4 network like \"172.30.0.0/16\"");
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.trim().parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.trim().parse().map_err(|_| bad())?;
        if prefix_len > LINK_PREFIX_LEN {
            return Err(format!(
                "subnet {s:?} is too small: machines need /30s, use a prefix of at most /30"
            ));
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        Ok(Self {
            base: u32::from(addr) & mask,
            prefix_len,
        })
    }
}

impl Subnet {
    /// How many /30s fit.
    fn n_links(self) -> u32 {
        1 << (LINK_PREFIX_LEN - self.prefix_len)
    }

    fn link(self, idx: u32) -> Link {
        let net = self.base + idx * 4;
        Link {
            host_ip: Ipv4Addr::from(net + 1),
            guest_ip: Ipv4Addr::from(net + 2),
        }
    }

    /// The lowest /30 whose guest address is not in `used`, or `None` when all are taken.
    pub(crate) fn allocate(self, used: &[Ipv4Addr]) -> Option<Link> {
        (0..self.n_links())
            .map(|idx| self.link(idx))
            .find(|link| !used.contains(&link.guest_ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_link() {
        let subnet: Subnet = "10.9.1.77/24".parse().unwrap();
        let first = subnet.allocate(&[]).unwrap();
        assert_eq!(first.host_ip, Ipv4Addr::new(10, 9, 1, 1));
        assert_eq!(first.guest_ip, Ipv4Addr::new(10, 9, 1, 2));
        let second = subnet.allocate(&[first.guest_ip]).unwrap();
        assert_eq!(second.guest_ip, Ipv4Addr::new(10, 9, 1, 6));
        // a freed address is reused
        let again = subnet
            .allocate(&[second.guest_ip])
            .expect("first link is free again");
        assert_eq!(again, first);
    }

    #[test]
    fn exhausts() {
        let subnet: Subnet = "10.9.1.0/29".parse().unwrap();
        let a = subnet.allocate(&[]).unwrap();
        let b = subnet.allocate(&[a.guest_ip]).unwrap();
        assert_eq!(subnet.allocate(&[a.guest_ip, b.guest_ip]), None);
    }

    #[test]
    fn rejects_bad_subnets() {
        for bad in ["10.0.0.0", "10.0.0.0/31", "nope/16", "10.0.0.0/x"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }
}
