//! The world's nats-server configurations, in the layout godwit-state's regional buckets
//! expect (`godwit_state::region_server_config`; the world depends on no godwit crate, so it
//! writes the same files itself): one JetStream domain per server, hub and spoke.
//!
//! The hub runs in the control plane's netns with JetStream domain [`HUB_DOMAIN`] and accepts
//! leaf connections. Each region's server (on the region's first host) has JetStream domain
//! `<region>` and one leaf connection to the hub. Every region's agents write their records
//! to their own region's buckets (`godwit_machines_<region>`, ...), and every server holds a
//! mirror of every other region's, fed through the hub (`$JS.<region>.API`). The hub is a
//! region without hosts: the API reads the mirrors there (its own, empty, buckets are
//! `…_hub`), so every daemon lists it among `--regions` (see [`state_regions`]).

use std::net::Ipv4Addr;
use std::path::Path;

/// Client port of every server (each in its own netns).
pub(super) const CLIENT_PORT: u16 = 4222;
/// Monitoring port, on 127.0.0.1 inside the server's netns.
pub(super) const MONITOR_PORT: u16 = 8222;
/// Where the hub accepts the region servers' leaf connections.
pub(super) const LEAF_PORT: u16 = 7422;
/// The hub's JetStream domain, and the API's state region.
pub(super) const HUB_DOMAIN: &str = "hub";

/// The hub: JetStream domain [`HUB_DOMAIN`], accepting leaf connections.
pub(super) fn hub_config(name: &str, store_dir: &Path) -> String {
    format!(
        "server_name: {name}\n\
         listen: {listen}\n\
         http: {monitor}\n\
         jetstream {{\n  store_dir: {store}\n  domain: {domain}\n}}\n\
         leafnodes {{\n  listen: {leaf}\n}}\n",
        name = quote(name),
        domain = quote(HUB_DOMAIN),
        listen = quote(&format!("0.0.0.0:{CLIENT_PORT}")),
        monitor = quote(&format!("127.0.0.1:{MONITOR_PORT}")),
        store = quote(&store_dir.to_string_lossy()),
        leaf = quote(&format!("0.0.0.0:{LEAF_PORT}")),
    )
}

/// Region `region`'s server: JetStream domain `region`, one leaf connection to the hub at
/// `hub`.
pub(super) fn region_config(name: &str, region: &str, hub: Ipv4Addr, store_dir: &Path) -> String {
    format!(
        "server_name: {name}\n\
         listen: {listen}\n\
         http: {monitor}\n\
         jetstream {{\n  store_dir: {store}\n  domain: {domain}\n}}\n\
         leafnodes {{\n  remotes: [\n    {{ url: {url} }}\n  ]\n}}\n",
        name = quote(name),
        domain = quote(region),
        listen = quote(&format!("0.0.0.0:{CLIENT_PORT}")),
        monitor = quote(&format!("127.0.0.1:{MONITOR_PORT}")),
        store = quote(&store_dir.to_string_lossy()),
        url = quote(&format!("nats-leaf://{hub}:{LEAF_PORT}")),
    )
}

/// The `--regions` every daemon gets: the world's regions and the hub, comma-separated.
pub(super) fn state_regions(regions: &[String]) -> String {
    let mut all: Vec<&str> = regions.iter().map(String::as_str).collect();
    all.push(HUB_DOMAIN);
    all.join(",")
}

/// A double-quoted string of the configuration language (JSON escaping is accepted).
fn quote(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_and_region_configs() {
        let hub = hub_config("w-cp", Path::new("/tmp/a \"b\""));
        assert_eq!(
            hub,
            "server_name: \"w-cp\"\nlisten: \"0.0.0.0:4222\"\nhttp: \"127.0.0.1:8222\"\n\
             jetstream {\n  store_dir: \"/tmp/a \\\"b\\\"\"\n  domain: \"hub\"\n}\n\
             leafnodes {\n  listen: \"0.0.0.0:7422\"\n}\n"
        );
        let region = region_config(
            "w-syd",
            "syd",
            Ipv4Addr::new(198, 18, 0, 1),
            Path::new("/d/syd-js"),
        );
        assert_eq!(
            region,
            "server_name: \"w-syd\"\nlisten: \"0.0.0.0:4222\"\nhttp: \"127.0.0.1:8222\"\n\
             jetstream {\n  store_dir: \"/d/syd-js\"\n  domain: \"syd\"\n}\n\
             leafnodes {\n  remotes: [\n    { url: \"nats-leaf://198.18.0.1:7422\" }\n  ]\n}\n"
        );
        assert_eq!(state_regions(&["ams".into(), "syd".into()]), "ams,syd,hub");
    }
}
