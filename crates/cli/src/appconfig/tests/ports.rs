//! `[[services.ports]]` options: `proxy_proto_options` and `http_options`.

use super::{must_fail, must_parse};

#[test]
fn proxy_proto_and_http_options_reach_the_machine_config() {
    let cfg = must_parse(
        r#"
[http_service]
internal_port = 8080
  [http_service.http_options]
  h2_backend = true

[[services]]
internal_port = 5432
  [[services.ports]]
  port = 5432
  handlers = ["proxy_proto"]
  proxy_proto_options = { version = "v2" }
  [[services.ports]]
  port = 5433
  handlers = ["proxy_proto"]
  [[services.ports]]
  port = 50051
  handlers = ["http"]
  http_options = { h2_backend = true }
"#,
    );
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let configs = cfg.machine_configs("img");
    let services = &configs[0].1.services;
    let http = &services[0].ports;
    assert!(
        http.iter()
            .all(|p| p.http_options.as_ref().and_then(|o| o.h2_backend) == Some(true))
    );
    let ports = &services[1].ports;
    let version = ports[0]
        .proxy_proto_options
        .as_ref()
        .map(|o| o.version.as_str());
    assert_eq!(version, Some("v2"));
    assert_eq!(ports[1].proxy_proto_options, None);
    assert_eq!(
        ports[2].http_options.as_ref().and_then(|o| o.h2_backend),
        Some(true)
    );
    let json = serde_json::to_value(&ports[0]).expect("serializable");
    assert_eq!(json["proxy_proto_options"]["version"], "v2");
    assert!(json.get("http_options").is_none(), "{json}");
}

#[test]
fn unknown_proxy_proto_version_is_an_error() {
    let message = must_fail(
        "[[services]]\ninternal_port = 1\n[[services.ports]]\nport = 1\nhandlers = [\"proxy_proto\"]\nproxy_proto_options = { version = \"v3\" }\n",
    );
    assert!(message.contains("v3"), "{message}");
    assert!(message.contains("proxy_proto_options"), "{message}");
}
