//! PROXY protocol headers (v1, the text form) sent first on a raw TCP connection to a
//! machine, so it learns the client's address.

use std::net::{IpAddr, SocketAddr};

/// The v1 header for a connection from `client` to the proxy's `local` address.
pub(crate) fn v1(client: SocketAddr, local: SocketAddr) -> String {
    let (client_ip, local_ip) = match (client.ip(), local.ip()) {
        (IpAddr::V4(c), IpAddr::V4(l)) => return line("TCP4", c.into(), l.into(), client, local),
        (c, l) => (to_v6(c), to_v6(l)),
    };
    line("TCP6", client_ip, local_ip, client, local)
}

fn line(family: &str, src: IpAddr, dst: IpAddr, client: SocketAddr, local: SocketAddr) -> String {
    format!(
        "PROXY {family} {src} {dst} {} {}\r\n",
        client.port(),
        local.port()
    )
}

fn to_v6(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 @ IpAddr::V6(_) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let client = "192.0.2.7:51000".parse().expect("literal");
        let local = "198.51.100.1:5432".parse().expect("literal");
        assert_eq!(
            v1(client, local),
            "PROXY TCP4 192.0.2.7 198.51.100.1 51000 5432\r\n"
        );
        let local6 = "[2001:db8::1]:5432".parse().expect("literal");
        assert_eq!(
            v1(client, local6),
            "PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 51000 5432\r\n"
        );
    }
}
