//! PROXY protocol headers (v1, the text form, and v2, the binary form) sent first on a raw
//! TCP connection to a machine, so it learns the client's address.

use std::net::{IpAddr, SocketAddr};

use crate::routes::ProxyProto;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header of `version` for a connection from `client` to the proxy's `local` address.
pub(crate) fn header(version: ProxyProto, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    match version {
        ProxyProto::V1 => v1(client, local).into_bytes(),
        ProxyProto::V2 => v2(client, local),
    }
}

/// The v2 header (command PROXY, stream over IPv4 or IPv6, no TLVs).
pub(crate) fn v2(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    // Version 2, command PROXY.
    out.push(0x21);
    match (client.ip(), local.ip()) {
        (IpAddr::V4(c), IpAddr::V4(l)) => {
            // AF_INET, STREAM; 4 + 4 + 2 + 2 address bytes.
            out.push(0x11);
            out.extend_from_slice(&12_u16.to_be_bytes());
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&l.octets());
        }
        (c, l) => {
            // AF_INET6, STREAM; 16 + 16 + 2 + 2 address bytes.
            out.push(0x21);
            out.extend_from_slice(&36_u16.to_be_bytes());
            for ip in [c, l] {
                let octets = match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    IpAddr::V6(v6) => v6.octets(),
                };
                out.extend_from_slice(&octets);
            }
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());
    out
}

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
    fn v2_headers() {
        let client = "192.0.2.7:51000".parse().expect("literal");
        let local = "198.51.100.1:5432".parse().expect("literal");
        let header = v2(client, local);
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(
            &header[12..],
            &[
                0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1, 0xc7, 0x38, 0x15, 0x38
            ]
        );
        let local6 = "[2001:db8::1]:5432".parse().expect("literal");
        let header = v2(client, local6);
        assert_eq!(header.len(), 16 + 36);
        assert_eq!(&header[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            &header[16..32],
            &"::ffff:192.0.2.7"
                .parse::<std::net::Ipv6Addr>()
                .expect("literal")
                .octets()
        );
    }

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
