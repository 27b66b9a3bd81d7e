//! The nats-server of one region: its own JetStream domain (the region code), joined to the
//! other regions by leaf-node connections.
//!
//! Topology: hub and spoke. One region's server listens for leaf connections (the hub);
//! every other region's server connects to it. A full mesh of leaf connections does not work
//! on nats-server 2.9: the servers detect the cycle ("Loop detected for leafnode account")
//! and drop the connections that close it. Through the hub, every region reaches every
//! other region's JetStream API as `$JS.<region>.API`. The cost: traffic between two spokes
//! crosses the hub (two WAN hops), and while the hub is unreachable spokes do not exchange
//! updates (each keeps serving what it has; mirrors catch up when the hub is back).

use std::fmt::Write as _;
use std::path::PathBuf;

/// One region's nats-server, for [`region_server_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionServer {
    /// The server's name, unique in the whole system (e.g. `godwit-ams`).
    pub name: String,
    /// The JetStream domain: the region code (e.g. `ams`).
    pub domain: String,
    /// Client address, `host:port` (e.g. `127.0.0.1:4222`; port `-1` picks a free one).
    pub listen: String,
    /// HTTP monitoring address (`/healthz`, `/varz`, `/jsz`), if any.
    pub monitor: Option<String>,
    /// Where to accept leaf connections from other regions' servers (set on the hub).
    pub leaf_listen: Option<String>,
    /// Leaf connections to make (`nats-leaf://host:port` of the hub; empty on the hub).
    pub leaf_remotes: Vec<String>,
    /// The JetStream store directory.
    pub store_dir: PathBuf,
}

/// The nats-server configuration file (`nats-server -c FILE`) for `server`.
pub fn region_server_config(server: &RegionServer) -> String {
    let mut config = String::new();
    // Writing to a String cannot fail; `let _` keeps the builder readable.
    let _ = writeln!(config, "server_name: {}", quote(&server.name));
    let _ = writeln!(config, "listen: {}", quote(&server.listen));
    if let Some(monitor) = &server.monitor {
        let _ = writeln!(config, "http: {}", quote(monitor));
    }
    let _ = writeln!(config, "jetstream {{");
    let store_dir = server.store_dir.to_string_lossy();
    let _ = writeln!(config, "  store_dir: {}", quote(&store_dir));
    let _ = writeln!(config, "  domain: {}", quote(&server.domain));
    let _ = writeln!(config, "}}");
    if server.leaf_listen.is_some() || !server.leaf_remotes.is_empty() {
        let _ = writeln!(config, "leafnodes {{");
        if let Some(listen) = &server.leaf_listen {
            let _ = writeln!(config, "  listen: {}", quote(listen));
        }
        if !server.leaf_remotes.is_empty() {
            let _ = writeln!(config, "  remotes: [");
            for url in &server.leaf_remotes {
                let _ = writeln!(config, "    {{ url: {} }}", quote(url));
            }
            let _ = writeln!(config, "  ]");
        }
        let _ = writeln!(config, "}}");
    }
    config
}

/// Whether `region` can be a region code: a JetStream domain and part of a bucket name
/// (non-empty; ASCII letters, digits, `-` and `_`).
pub(crate) fn is_valid_region(region: &str) -> bool {
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A double-quoted string of the configuration language (JSON escaping is accepted).
fn quote(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_and_spoke_configs() {
        let hub = RegionServer {
            name: "godwit-ams".to_owned(),
            domain: "ams".to_owned(),
            listen: "127.0.0.1:4222".to_owned(),
            monitor: Some("127.0.0.1:8222".to_owned()),
            leaf_listen: Some("0.0.0.0:7422".to_owned()),
            leaf_remotes: Vec::new(),
            store_dir: PathBuf::from("/var/lib/godwit/nats \"ams\""),
        };
        assert_eq!(
            region_server_config(&hub),
            "server_name: \"godwit-ams\"\nlisten: \"127.0.0.1:4222\"\nhttp: \"127.0.0.1:8222\"\n\
             jetstream {\n  store_dir: \"/var/lib/godwit/nats \\\"ams\\\"\"\n  domain: \"ams\"\n}\n\
             leafnodes {\n  listen: \"0.0.0.0:7422\"\n}\n"
        );
        let spoke = RegionServer {
            name: "godwit-syd".to_owned(),
            domain: "syd".to_owned(),
            monitor: None,
            leaf_listen: None,
            leaf_remotes: vec!["nats-leaf://10.0.0.1:7422".to_owned()],
            ..hub
        };
        let config = region_server_config(&spoke);
        assert!(!config.contains("http:"), "{config}");
        assert!(
            config.contains(
                "leafnodes {\n  remotes: [\n    { url: \"nats-leaf://10.0.0.1:7422\" }\n  ]\n}\n"
            ),
            "{config}"
        );
    }

    #[test]
    fn region_codes() {
        for region in ["ams", "us-east_1", "SYD2"] {
            assert!(is_valid_region(region), "{region}");
        }
        for region in ["", "a.b", "a b", "a>", "*"] {
            assert!(!is_valid_region(region), "{region}");
        }
    }
}
