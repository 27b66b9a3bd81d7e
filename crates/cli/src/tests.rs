//! Command-line parsing.

use clap::{CommandFactory, Parser};

use crate::cli::{AppsCmd, Cli, Command, ConfigCmd, MachineCmd, ScaleCmd, SecretsCmd};
use crate::commands::CertsCmd;

fn parse(args: &[&str]) -> Cli {
    let argv = std::iter::once("godwit").chain(args.iter().copied());
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn must_reject(args: &[&str]) -> String {
    let argv = std::iter::once("godwit").chain(args.iter().copied());
    match Cli::try_parse_from(argv) {
        Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_command_tree_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn deploy_flags() {
    let cli = parse(&[
        "deploy",
        "-a",
        "hello",
        "-c",
        "x/fly.toml",
        "--strategy",
        "immediate",
        "--wait-timeout",
        "2m",
        "--api-url",
        "http://h:1",
        "--token",
        "t",
    ]);
    assert_eq!(cli.global.api_url.as_deref(), Some("http://h:1"));
    assert_eq!(cli.global.token.as_deref(), Some("t"));
    let Command::Deploy(d) = cli.cmd else {
        panic!("not deploy")
    };
    assert_eq!(d.app.app.as_deref(), Some("hello"));
    assert_eq!(d.config.unwrap().to_str(), Some("x/fly.toml"));
    assert_eq!(d.strategy.as_deref(), Some("immediate"));
    assert_eq!(d.wait_timeout, Some(std::time::Duration::from_secs(120)));
    assert!(must_reject(&["deploy", "--strategy", "canary"]).contains("canary"));
}

#[test]
fn machine_commands() {
    let cli = parse(&[
        "machine",
        "exec",
        "-a",
        "hello",
        "0123456789abcd",
        "sh",
        "-c",
        "echo hi",
    ]);
    let Command::Machine(MachineCmd::Exec(e)) = cli.cmd else {
        panic!("not exec")
    };
    assert_eq!(e.id, "0123456789abcd");
    assert_eq!(e.command, ["sh", "-c", "echo hi"]);
    assert_eq!(e.timeout, 30);

    let cli = parse(&[
        "machine",
        "run",
        "oci:./img",
        "-e",
        "A=1",
        "--port",
        "8080",
        "--region",
        "ams",
        "--",
        "/bin/app",
        "--flag",
    ]);
    let Command::Machine(MachineCmd::Run(r)) = cli.cmd else {
        panic!("not run")
    };
    assert_eq!(r.image, "oci:./img");
    assert_eq!(r.env, ["A=1"]);
    assert_eq!(r.port, Some(8080));
    assert_eq!(r.command, ["/bin/app", "--flag"]);

    let cli = parse(&[
        "machine",
        "stop",
        "a",
        "b",
        "--signal",
        "SIGTERM",
        "--timeout",
        "10s",
    ]);
    let Command::Machine(MachineCmd::Stop(s)) = cli.cmd else {
        panic!("not stop")
    };
    assert_eq!(s.ids, ["a", "b"]);
    assert_eq!(s.signal.as_deref(), Some("SIGTERM"));

    let cli = parse(&["machine", "destroy", "--force", "m1"]);
    let Command::Machine(MachineCmd::Destroy(d)) = cli.cmd else {
        panic!("not destroy")
    };
    assert!(d.force);
    let cli = parse(&["machine", "list", "--json"]);
    assert!(matches!(cli.cmd, Command::Machine(MachineCmd::List(l)) if l.json));
    let cli = parse(&["machine", "suspend", "m1", "m2"]);
    let Command::Machine(MachineCmd::Suspend(s)) = cli.cmd else {
        panic!("not suspend")
    };
    assert_eq!(s.ids, ["m1", "m2"]);
    for cmd in ["start", "stop", "suspend", "restart", "destroy"] {
        assert!(must_reject(&["machine", cmd]).contains("required"), "{cmd}");
    }
}

#[test]
fn logs_scale_secrets_apps_config() {
    let cli = parse(&["logs", "-f", "--machine", "m1", "-n", "5"]);
    let Command::Logs(l) = cli.cmd else {
        panic!("not logs")
    };
    assert!(l.follow);
    assert_eq!(l.machine.as_deref(), Some("m1"));
    assert_eq!(l.tail, Some(5));

    let cli = parse(&["scale", "count", "3", "--region", "ams,iad"]);
    let Command::Scale(ScaleCmd::Count(s)) = cli.cmd else {
        panic!("not scale")
    };
    assert_eq!(s.count, 3);
    assert_eq!(s.region, ["ams", "iad"]);
    assert_eq!(s.process_group, "app");

    let cli = parse(&["secrets", "set", "A=1", "B=two=2", "--stage"]);
    let Command::Secrets(SecretsCmd::Set(s)) = cli.cmd else {
        panic!("not set")
    };
    assert_eq!(s.pairs, ["A=1", "B=two=2"]);
    assert!(s.stage);
    assert!(
        matches!(parse(&["secrets", "unset", "A"]).cmd, Command::Secrets(SecretsCmd::Unset(u)) if u.names == ["A"] && !u.stage)
    );
    assert!(
        matches!(parse(&["apps", "create", "hello"]).cmd, Command::Apps(AppsCmd::Create(a)) if a.name == "hello")
    );
    assert!(
        matches!(parse(&["apps", "destroy", "hello", "-f"]).cmd, Command::Apps(AppsCmd::Destroy(a)) if a.force)
    );
    assert!(
        matches!(parse(&["config", "validate"]).cmd, Command::Config(ConfigCmd::Validate(v)) if v.file.is_none())
    );
    assert!(
        matches!(parse(&["config", "validate", "fly.toml"]).cmd, Command::Config(ConfigCmd::Validate(v)) if v.file.is_some())
    );
}

#[test]
fn certs_commands() {
    let cli = parse(&["certs", "add", "-a", "shop", "www.example.com"]);
    let Command::Certs(CertsCmd::Add(add)) = cli.cmd else {
        panic!("not certs add")
    };
    assert_eq!(add.app.app.as_deref(), Some("shop"));
    assert_eq!(add.hostname, "www.example.com");
    assert_eq!(add.challenge, "http-01", "http-01 unless told");
    assert!(!add.wait);
    assert_eq!(add.wait_timeout, std::time::Duration::from_secs(180));
    let cli = parse(&[
        "certs",
        "add",
        "h.example",
        "--challenge",
        "tls-alpn-01",
        "--wait",
    ]);
    let Command::Certs(CertsCmd::Add(add)) = cli.cmd else {
        panic!("not certs add")
    };
    assert_eq!((add.challenge.as_str(), add.wait), ("tls-alpn-01", true));
    let refused = must_reject(&["certs", "add", "h.example", "--challenge", "dns-01"]);
    assert!(
        refused.contains("dns-01") && refused.contains("tls-alpn-01"),
        "{refused}"
    );
    let refused = must_reject(&["certs", "import", "h.example", "--fullchain", "c.pem"]);
    assert!(refused.contains("--key"), "{refused}");
    assert!(matches!(
        parse(&["certs", "ls", "--json"]).cmd,
        Command::Certs(CertsCmd::List(_))
    ));
    assert!(matches!(
        parse(&["certs", "rm", "h.example"]).cmd,
        Command::Certs(CertsCmd::Remove(_))
    ));
}

#[test]
fn daemon_commands() {
    parse(&[
        "api",
        "--data-dir",
        "/d",
        "--listen",
        "127.0.0.1:0",
        "--nats-url",
        "nats://x:1",
        "--region",
        "ams",
        "--cert-key-file",
        "/d/cert.key",
    ]);
    parse(&["api", "init", "--data-dir", "/d", "--org", "acme"]);
    assert!(must_reject(&["api", "--listen", "x"]).contains("--data-dir"));
    for window in ["1/4", "0.2", "30days"] {
        parse(&["api", "--data-dir", "/d", "--acme-renew-before", window]);
    }
    parse(&["api", "--data-dir", "/d", "--acme-renew-every", "10m"]);
    let refused = must_reject(&["api", "--data-dir", "/d", "--acme-renew-before", "2/1"]);
    assert!(
        refused.contains("share of the certificate's lifetime below 1"),
        "{refused}"
    );
    parse(&[
        "agent",
        "--data-dir",
        "/d",
        "--api-url",
        "http://a",
        "--join-token-file",
        "/t",
        "--host-id",
        "h1",
        "--region",
        "ams",
        "--nats-url",
        "nats://n",
        "--listen",
        "127.0.0.1:0",
        "--advertise-url",
        "http://b",
        "--cpus",
        "2",
        "--memory-mb",
        "1024",
        "--subnet",
        "172.31.0.0/16",
        "--runc",
        "/usr/bin/runc",
        "--name-prefix",
        "gwt1",
    ]);
    parse(&[
        "image", "build", "--binary", "/b", "--out", "/o", "--name", "hello", "--port", "8080",
        "--env", "A=1",
    ]);
}

#[test]
fn pairs() {
    assert_eq!(
        crate::commands::parse_pair("A=b=c").unwrap(),
        ("A".into(), "b=c".into())
    );
    assert!(crate::commands::parse_pair("=x").is_err());
    assert!(crate::commands::parse_pair("novalue").is_err());
}

#[test]
fn endpoint_resolution() {
    use crate::client::Endpoint;
    let dir = tempfile::tempdir().unwrap();
    let flags = Endpoint::resolve(Some("http://a".into()), Some("t".into()), dir.path()).unwrap();
    assert_eq!(
        flags,
        Endpoint {
            api_url: "http://a".into(),
            token: "t".into()
        }
    );
    let missing = Endpoint::resolve(None, None, dir.path())
        .unwrap_err()
        .to_string();
    assert!(missing.contains("godwit dev up"), "{missing}");
    std::fs::create_dir_all(dir.path().join("dev")).unwrap();
    std::fs::write(
        dir.path().join("dev/env.json"),
        r#"{"api_url":"http://dev:1","token":"gw_x","nats_url":"nats://n"}"#,
    )
    .unwrap();
    let dev = Endpoint::resolve(None, None, dir.path()).unwrap();
    assert_eq!(
        dev,
        Endpoint {
            api_url: "http://dev:1".into(),
            token: "gw_x".into()
        }
    );
    // A flag overrides one half of the file.
    let mixed = Endpoint::resolve(Some("http://other".into()), None, dir.path()).unwrap();
    assert_eq!(mixed.api_url, "http://other");
    assert_eq!(mixed.token, "gw_x");
    std::fs::write(dir.path().join("dev/env.json"), "nope").unwrap();
    assert!(
        Endpoint::resolve(None, None, dir.path())
            .unwrap_err()
            .to_string()
            .contains("env.json")
    );
}
