use std::path::Path;

use godwit_types::RestartPolicy;

use super::*;

mod ports;

fn parse(source: &str) -> Result<AppConfig, LoadError> {
    AppConfig::parse(source, "godwit.toml", Path::new("/srv/app"))
}

fn must_parse(source: &str) -> AppConfig {
    parse(source).unwrap_or_else(|e| panic!("parse failed: {e}"))
}

/// The error's text, which is what the user sees.
fn must_fail(source: &str) -> String {
    match parse(source) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_http_service() {
    let cfg = must_parse(
        r#"
app = "hello"
primary_region = "ams"

[build]
image = "oci:../../target/hello-image"

[http_service]
internal_port = 8080
force_https = true

[[http_service.checks]]
interval = "10s"
timeout = 2000
path = "/healthz"
"#,
    );
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(cfg.app.as_deref(), Some("hello"));
    assert_eq!(cfg.image.as_deref(), Some("oci:/target/hello-image"));
    let configs = cfg.machine_configs("img");
    assert_eq!(configs.len(), 1);
    let (group, mc) = &configs[0];
    assert_eq!(group, "app");
    assert_eq!(mc.image, "img");
    assert_eq!(mc.metadata["fly_process_group"], "app");
    assert_eq!(mc.env["PRIMARY_REGION"], "ams");
    assert_eq!(mc.services.len(), 1);
    let svc = &mc.services[0];
    assert_eq!(svc.internal_port, 8080);
    assert_eq!(svc.ports.len(), 2);
    assert_eq!(svc.ports[0].port, Some(80));
    assert_eq!(svc.ports[0].handlers, ["http"]);
    assert_eq!(svc.ports[0].force_https, Some(true));
    assert_eq!(svc.ports[1].port, Some(443));
    assert_eq!(svc.ports[1].handlers, ["tls", "http"]);
    assert_eq!(svc.checks.len(), 1);
    let check = &svc.checks[0];
    assert_eq!(check.kind, "http");
    assert_eq!(check.port, Some(8080));
    assert_eq!(check.path.as_deref(), Some("/healthz"));
    assert_eq!(check.interval.map(|d| d.0.as_secs()), Some(10));
    assert_eq!(check.timeout.map(|d| d.0.as_millis()), Some(2000));
    mc.validate().unwrap();
    assert_eq!(cfg.strategy, Strategy::Rolling);
}

/// The reference system's documented sample (fly.md §2), with keys Godwit ignores.
#[test]
fn fly_toml_sample_parses_with_warnings() {
    let cfg = must_parse(
        r#"
app = "my-app"
primary_region = "iad"
kill_signal = "SIGTERM"
kill_timeout = 10
swap_size_mb = 512
console_command = "/bin/sh"

[build]
image = "registry.example.com/my-app:1"
dockerfile = "Dockerfile"

[deploy]
strategy = "immediate"
release_command = "migrate"

[env]
LOG_LEVEL = "debug"
PORT = 8080
DEBUG = true

[processes]
web = "bin/server --port 8080"
worker = "bin/worker 'two words'"

[http_service]
internal_port = 8080
auto_stop_machines = "stop"
auto_start_machines = true
min_machines_running = 0
processes = ["web"]
  [http_service.concurrency]
  type = "requests"
  soft_limit = 200
  hard_limit = 250
  [http_service.tls_options]
  alpn = ["h2"]

[[services]]
protocol = "tcp"
internal_port = 5432
processes = ["worker"]
  [[services.ports]]
  port = 5432
  [[services.tcp_checks]]
  interval = "15s"

[checks.alive]
type = "tcp"
port = 8080
processes = ["web"]

[[vm]]
size = "shared-cpu-2x"
memory = "1gb"
processes = ["web"]

[[vm]]
cpus = 2
memory = 512
processes = ["worker"]

[[restart]]
policy = "always"
processes = ["worker"]

[[mounts]]
source = "data"
destination = "/data"

[[statics]]
guest_path = "/app/public"
url_prefix = "/static"
"#,
    );
    assert_eq!(
        cfg.warnings,
        [
            "unsupported key \"swap_size_mb\" (line 6): ignored",
            "unsupported key \"console_command\" (line 7): ignored",
            "unsupported key \"build.dockerfile\" (line 11): ignored",
            "unsupported key \"deploy.release_command\" (line 15): ignored",
            "unsupported key \"http_service.tls_options\" (line 36): ignored",
            "unsupported key \"mounts\" (line 67): ignored",
            "unsupported key \"statics\" (line 71): ignored",
        ]
    );
    assert_eq!(cfg.strategy, Strategy::Immediate);
    assert_eq!(cfg.image.as_deref(), Some("registry.example.com/my-app:1"));
    let configs = cfg.machine_configs("img");
    let groups: Vec<&str> = configs.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(groups, ["web", "worker"]);

    let web = &configs[0].1;
    assert_eq!(web.init.cmd, ["bin/server", "--port", "8080"]);
    assert_eq!(web.metadata["fly_process_group"], "web");
    assert_eq!(web.env["PORT"], "8080");
    assert_eq!(web.env["DEBUG"], "true");
    assert_eq!(web.services.len(), 1);
    assert_eq!(web.services[0].internal_port, 8080);
    let conc = web.services[0].concurrency.as_ref().unwrap();
    assert_eq!(
        (conc.kind.as_str(), conc.soft_limit, conc.hard_limit),
        ("requests", 200, Some(250))
    );
    assert_eq!(web.services[0].autostop, Some(serde_json::json!("stop")));
    assert_eq!(web.checks.keys().collect::<Vec<_>>(), ["alive"]);
    assert_eq!(
        (
            web.guest.cpu_kind.as_str(),
            web.guest.cpus,
            web.guest.memory_mb
        ),
        ("shared", 2, 1024)
    );
    assert_eq!(web.restart.policy, RestartPolicy::OnFailure);
    let stop = web.stop_config.as_ref().unwrap();
    assert_eq!(stop.signal.as_deref(), Some("SIGTERM"));
    assert_eq!(stop.timeout.map(|d| d.0.as_secs()), Some(10));
    web.validate().unwrap();

    let worker = &configs[1].1;
    assert_eq!(worker.init.cmd, ["bin/worker", "two words"]);
    assert_eq!(worker.services.len(), 1);
    assert_eq!(worker.services[0].internal_port, 5432);
    assert_eq!(worker.services[0].checks[0].kind, "tcp");
    assert!(worker.checks.is_empty());
    assert_eq!((worker.guest.cpus, worker.guest.memory_mb), (2, 512));
    assert_eq!(worker.restart.policy, RestartPolicy::Always);
    worker.validate().unwrap();
}

#[test]
fn unsupported_strategy_warns_and_rolls() {
    let cfg = must_parse("[deploy]\nstrategy = \"bluegreen\"\n");
    assert_eq!(cfg.strategy, Strategy::Rolling);
    assert_eq!(
        cfg.warnings,
        ["deploy strategy \"bluegreen\" (line 2) is not supported yet: using \"rolling\""]
    );
}

#[test]
fn unsupported_keys_nested_in_arrays() {
    let cfg = must_parse(
        "[[services]]\ninternal_port = 1\nauto_rollback = 1\n[[services.http_checks]]\nheaders = {a = \"b\"}\n",
    );
    assert_eq!(
        cfg.warnings,
        [
            "unsupported key \"services[0].auto_rollback\" (line 3): ignored",
            "unsupported key \"services[0].http_checks[0].headers\" (line 5): ignored",
        ]
    );
}

#[test]
fn vm_presets_and_memory_units() {
    for (text, cpus, mem, kind) in [
        ("size = \"performance-2x\"", 2, 4096, "performance"),
        ("memory = \"512mb\"", 1, 512, "shared"),
        ("memory = \"2GB\"", 1, 2048, "shared"),
        ("memory = 768", 1, 768, "shared"),
        ("memory_mb = 300\ncpus = 4", 4, 300, "shared"),
        (
            "size = \"shared-cpu-1x\"\nmemory = \"1gb\"",
            1,
            1024,
            "shared",
        ),
    ] {
        let cfg = must_parse(&format!("[[vm]]\n{text}\n"));
        let guest = &cfg.machine_configs("i")[0].1.guest;
        assert_eq!(
            (guest.cpus, guest.memory_mb, guest.cpu_kind.as_str()),
            (cpus, mem, kind),
            "{text}"
        );
    }
    // No [[vm]]: the default size.
    let configs = must_parse("").machine_configs("i");
    assert_eq!(
        (configs[0].1.guest.cpus, configs[0].1.guest.memory_mb),
        (1, 256)
    );
}

#[test]
fn image_paths_resolve_against_the_config_dir() {
    let dir = Path::new("/srv/app");
    for (given, want) in [
        ("oci:./img", "oci:/srv/app/img"),
        ("oci:../img:v1", "oci:/srv/img:v1"),
        ("oci:/abs/img", "oci:/abs/img"),
        ("./layout", "/srv/app/layout"),
        ("../x/layout", "/srv/x/layout"),
        ("hello.tar", "/srv/app/hello.tar"),
        (
            "docker-archive:out/hello.tar",
            "docker-archive:/srv/app/out/hello.tar",
        ),
        ("/abs/hello.tar", "/abs/hello.tar"),
        (
            "registry.example.com:5000/hello:1",
            "registry.example.com:5000/hello:1",
        ),
        ("nginx", "nginx"),
    ] {
        assert_eq!(resolve_image(given, dir), want, "{given}");
    }
}

#[test]
fn split_commands() {
    assert_eq!(split_command("a  b\tc").unwrap(), ["a", "b", "c"]);
    assert_eq!(
        split_command(r#"sh -c "echo \"hi\" there""#).unwrap(),
        ["sh", "-c", "echo \"hi\" there"]
    );
    assert_eq!(split_command("x 'a b' ''").unwrap(), ["x", "a b", ""]);
    assert!(
        split_command("x 'open")
            .unwrap_err()
            .contains("unclosed quote")
    );
}

#[test]
fn wrong_type_names_line_and_key() {
    let err = must_fail("app = \"hello\"\n\n[http_service]\ninternal_port = \"eighty\"\n");
    assert_eq!(
        err,
        "godwit.toml line 4, key `http_service.internal_port`: expected an integer, found string \"eighty\""
    );
}

#[test]
fn out_of_range_port() {
    let err = must_fail("[[services]]\ninternal_port = 70000\n");
    assert!(
        err.starts_with("godwit.toml line 2, key `services[0].internal_port`: "),
        "{err}"
    );
    assert!(err.contains("70000") && err.contains("0 to 65535"), "{err}");
}

#[test]
fn syntax_error_names_line_and_key() {
    let err = must_fail("app = \"x\"\nprimary_region = \n");
    assert!(
        err.starts_with("godwit.toml line 2, key `primary_region`: "),
        "{err}"
    );
    let err = must_fail("app = \"x\"\n[http_service\n");
    assert!(err.starts_with("godwit.toml line 2: "), "{err}");
    let err = must_fail("app = \"x\"\napp = \"y\"\n");
    assert!(err.starts_with("godwit.toml line 2, key `app`: "), "{err}");
    assert!(err.contains("duplicate"), "{err}");
}

#[test]
fn missing_required_field() {
    let err = must_fail("[checks.alive]\ntype = \"tcp\"\n");
    assert!(
        err.starts_with("godwit.toml line 1, key `checks.alive`: "),
        "{err}"
    );
    assert!(err.contains("missing field `port`"), "{err}");
}

#[test]
fn semantic_errors_point_at_the_value() {
    let cases = [
        ("app = \"Bad_Name\"\n", "line 1, key `app`: ", "invalid"),
        (
            "kill_signal = \"SIGFOO\"\n",
            "line 1, key `kill_signal`: ",
            "SIGTERM",
        ),
        (
            "kill_timeout = \"10m\"\n",
            "line 1, key `kill_timeout`: ",
            "300s",
        ),
        (
            "kill_timeout = \"soon\"\n",
            "line 1, key `kill_timeout`: ",
            "\"soon\"",
        ),
        (
            "\n[[vm]]\nsize = \"huge\"\n",
            "line 3, key `vm[0].size`: ",
            "shared-cpu-1x",
        ),
        (
            "[[vm]]\nmemory = \"12zb\"\n",
            "line 2, key `vm[0].memory`: ",
            "unit",
        ),
        (
            "[[vm]]\nmemory = 16\n",
            "line 2, key `vm[0].memory`: ",
            "64 to 262144",
        ),
        (
            "[[vm]]\ncpu_kind = \"gpu\"\n",
            "line 2, key `vm[0].cpu_kind`: ",
            "performance",
        ),
        (
            "[[restart]]\npolicy = \"sometimes\"\n",
            "line 2, key `restart[0].policy`: ",
            "on-failure",
        ),
        (
            "[checks.x]\nport = 1\ntype = \"grpc\"\n",
            "line 3, key `checks.x.type`: ",
            "tcp",
        ),
        (
            "[processes]\nweb = \"\"\n",
            "line 2, key `processes.web`: ",
            "empty",
        ),
        (
            "[processes]\nweb = \"a 'b\"\n",
            "line 2, key `processes.web`: ",
            "quote",
        ),
        (
            "[[services]]\nprotocol = \"sctp\"\n",
            "line 2, key `services[0].protocol`: ",
            "tcp",
        ),
        (
            "[http_service]\nauto_stop_machines = \"maybe\"\n",
            "line 2, key `http_service.auto_stop_machines`: ",
            "suspend",
        ),
        (
            "[[http_service.checks]]\ninterval = \"often\"\n",
            "line 2, key `http_service.checks[0].interval`: ",
            "\"often\"",
        ),
        ("[env]\nA = [1]\n", "line 2, key `env.A`: ", "string"),
        ("services = 3\n", "line 1, key `services`: ", "array"),
        (
            "[deploy]\nwait_timeout = -1\n",
            "line 2, key `deploy.wait_timeout`: ",
            "negative",
        ),
    ];
    for (source, location, detail) in cases {
        let err = must_fail(source);
        assert!(
            err.starts_with(&format!("godwit.toml {location}")),
            "{source:?}: {err}"
        );
        assert!(err.contains(detail), "{source:?}: {err}");
    }
}

#[test]
fn process_scopes_naming_unknown_groups_warn() {
    let cfg = must_parse("[processes]\nweb = \"w\"\n[http_service]\nprocesses = [\"wbe\"]\n");
    assert_eq!(
        cfg.warnings,
        ["a service names process group \"wbe\", which [processes] does not define"]
    );
    // The service applies to no group.
    assert!(cfg.machine_configs("i")[0].1.services.is_empty());
}

#[test]
fn load_reads_the_file_and_resolves_against_its_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fly.toml");
    std::fs::write(
        &path,
        "[build]\nimage = \"oci:./img\"\n[http_service]\ninternal_port = \"x\"\n",
    )
    .unwrap();
    let err = AppConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with("fly.toml line 4, key `http_service.internal_port`"),
        "{err}"
    );
    std::fs::write(&path, "[build]\nimage = \"oci:./img\"\n").unwrap();
    let cfg = AppConfig::load(&path).unwrap();
    assert_eq!(
        cfg.image.unwrap(),
        format!("oci:{}/img", dir.path().display())
    );
    let missing = AppConfig::load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, LoadError::Read { .. }));
}

#[test]
fn top_level_and_experimental() {
    let cfg = must_parse(
        "[experimental]\nentrypoint = [\"/bin/sh\"]\ncmd = [\"-c\", \"x\"]\n[checks.web]\ntype = \"http\"\nport = 8080\npath = \"/healthz\"\n[[restart]]\npolicy = \"never\"\nretries = 3\n",
    );
    let mc = &cfg.machine_configs("i")[0].1;
    assert_eq!(mc.init.entrypoint, ["/bin/sh"]);
    assert_eq!(mc.init.cmd, ["-c", "x"]);
    let check = &mc.checks["web"];
    assert_eq!(
        (
            check.kind.as_str(),
            check.port,
            check.path.as_deref(),
            check.method.as_deref()
        ),
        ("http", Some(8080), Some("/healthz"), Some("GET"))
    );
    assert_eq!(mc.restart.policy, RestartPolicy::No);
    assert_eq!(mc.restart.max_retries, Some(3));
    assert!(mc.stop_config.is_none());
}
