//! The world's nats-server configurations: one JetStream hub in the control plane's netns and
//! one server per region (on the region's first host) joined to it as a leaf node.
//!
//! There is one JetStream domain, [`HUB_DOMAIN`], and every bucket lives at the hub: the
//! daemons open plain buckets, not per-region ones, so a domain per region would split their
//! state. The region servers run without JetStream. A leaf without JetStream does not pass
//! `$JS.API.>` and `$KV.>` on to the hub by itself (nats-server 2.9 logs "JetStream Not
//! Extended" and denies them on the leaf connection), so each region server maps them to the
//! hub's domain prefix (`$JS.hub.API.…`), which the hub maps back: clients of a region server
//! use plain JetStream and KV subjects as if JetStream were local. Plain NATS traffic stays
//! local to each region server.

use std::net::Ipv4Addr;
use std::path::Path;

/// Client port of every server (each in its own netns).
pub(super) const CLIENT_PORT: u16 = 4222;
/// Monitoring port, on 127.0.0.1 inside the server's netns.
pub(super) const MONITOR_PORT: u16 = 8222;
/// Where the hub accepts the region servers' leaf connections.
pub(super) const LEAF_PORT: u16 = 7422;
/// The hub's JetStream domain.
pub(super) const HUB_DOMAIN: &str = "hub";

/// The hub: JetStream on, accepting leaf connections.
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

/// A region server: no JetStream of its own, one leaf connection to the hub at `hub`, and the
/// JetStream and KV subjects mapped to the hub's domain.
pub(super) fn region_config(name: &str, hub: Ipv4Addr) -> String {
    format!(
        "server_name: {name}\n\
         listen: {listen}\n\
         http: {monitor}\n\
         mappings {{\n  {js}: {js_hub}\n  {kv}: {kv_hub}\n}}\n\
         leafnodes {{\n  remotes: [\n    {{ url: {url} }}\n  ]\n}}\n",
        name = quote(name),
        listen = quote(&format!("0.0.0.0:{CLIENT_PORT}")),
        monitor = quote(&format!("127.0.0.1:{MONITOR_PORT}")),
        url = quote(&format!("nats-leaf://{hub}:{LEAF_PORT}")),
        js = quote("$JS.API.>"),
        js_hub = quote(&format!("$JS.{HUB_DOMAIN}.API.>")),
        kv = quote("$KV.>"),
        kv_hub = quote(&format!("$JS.{HUB_DOMAIN}.API.$KV.>")),
    )
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
        let region = region_config("w-syd", Ipv4Addr::new(198, 18, 0, 1));
        assert!(!region.contains("jetstream"), "{region}");
        assert!(
            region.contains(
                "mappings {\n  \"$JS.API.>\": \"$JS.hub.API.>\"\n  \"$KV.>\": \"$JS.hub.API.$KV.>\"\n}\n"
            ),
            "{region}"
        );
        assert!(
            region.contains("remotes: [\n    { url: \"nats-leaf://198.18.0.1:7422\" }\n  ]"),
            "{region}"
        );
    }
}
