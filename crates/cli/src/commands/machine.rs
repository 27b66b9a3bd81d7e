//! `godwit machine run|list|status|start|stop|restart|destroy|exec`.

use std::collections::BTreeMap;

use godwit_types::api::{CreateMachineRequest, ExecRequest, StopRequest};
use godwit_types::machine::MachinePort;
use godwit_types::{MachineConfig, MachineService, RestartConfig, RestartPolicy};

use super::{Ctx, app_name, checks_summary, group_of, machine_table, machine_urls, parse_pair};
use crate::cli::{MachineCmd, MachineRunArgs};
use crate::output;

pub(super) async fn run(ctx: &Ctx, cmd: MachineCmd) -> anyhow::Result<()> {
    match cmd {
        MachineCmd::Run(args) => machine_run(ctx, args).await,
        MachineCmd::List(args) => {
            let app = app_name(&args.app)?;
            let machines = ctx.client()?.list_machines(&app).await?;
            if args.json {
                return output::json(&machines);
            }
            if machines.is_empty() {
                output::say(format!("app {app} has no machines"));
            } else {
                machine_table(&machines);
            }
            Ok(())
        }
        MachineCmd::Status(args) => {
            let app = app_name(&args.app)?;
            let m = ctx.client()?.get_machine(&app, &args.id).await?;
            if args.json {
                return output::json(&m);
            }
            output::say(format!("Machine {} ({})", m.id, m.name));
            output::say(format!("  app:        {}", m.app));
            output::say(format!("  group:      {}", group_of(&m).unwrap_or("-")));
            output::say(format!("  state:      {}", m.state));
            output::say(format!("  region:     {} (host {})", m.region, m.host_id));
            output::say(format!(
                "  version:    {} (instance {})",
                m.version, m.instance_id
            ));
            output::say(format!("  image:      {}", m.config.image));
            output::say(format!("  private ip: {}", m.private_ip));
            output::say(format!("  checks:     {}", checks_summary(&m)));
            for url in machine_urls(&m) {
                output::say(format!("  url:        {url}"));
            }
            if !m.events.is_empty() {
                output::say("  events:");
                for e in m.events.iter().rev().take(10) {
                    output::say(format!(
                        "    {} {} {} ({})",
                        output::timestamp(e.timestamp),
                        e.kind,
                        e.status,
                        e.source
                    ));
                }
            }
            Ok(())
        }
        MachineCmd::Start(args) => {
            let app = app_name(&args.app)?;
            let client = ctx.client()?;
            for id in &args.ids {
                client.machine_action(&app, id, "start", None).await?;
                output::say(format!("machine {id} started"));
            }
            Ok(())
        }
        MachineCmd::Suspend(args) => {
            let app = app_name(&args.app)?;
            let client = ctx.client()?;
            for id in &args.ids {
                client.machine_action(&app, id, "suspend", None).await?;
                output::say(format!("machine {id} suspended"));
            }
            Ok(())
        }
        MachineCmd::Stop(args) => stop_or_restart(ctx, args, "stop").await,
        MachineCmd::Restart(args) => stop_or_restart(ctx, args, "restart").await,
        MachineCmd::Destroy(args) => {
            let app = app_name(&args.app)?;
            let client = ctx.client()?;
            for id in &args.ids {
                match client.destroy_machine(&app, id, args.force).await {
                    Err(e) if matches!(e.status(), Some(409 | 412)) && !args.force => {
                        anyhow::bail!("{e}: stop it first or pass --force");
                    }
                    other => other?,
                };
                output::say(format!("machine {id} destroyed"));
            }
            Ok(())
        }
        MachineCmd::Exec(args) => {
            let app = app_name(&args.app)?;
            let req = ExecRequest {
                command: args.command.clone(),
                cmd: None,
                timeout: Some(args.timeout),
            };
            let resp = ctx.client()?.exec(&app, &args.id, &req).await?;
            if args.json {
                return output::json(&resp);
            }
            use std::io::Write;
            let _ = std::io::stdout().lock().write_all(resp.stdout.as_bytes());
            let _ = std::io::stderr().lock().write_all(resp.stderr.as_bytes());
            if resp.exit_code != 0 {
                anyhow::bail!("command exited with code {}", resp.exit_code);
            }
            Ok(())
        }
    }
}

async fn stop_or_restart(
    ctx: &Ctx,
    args: crate::cli::MachineStopArgs,
    action: &str,
) -> anyhow::Result<()> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    let timeout = args
        .timeout
        .as_deref()
        .map(str::parse::<godwit_types::duration::Duration>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    for id in &args.ids {
        if action == "stop" {
            let body = StopRequest {
                signal: args.signal.clone(),
                timeout,
            };
            client.machine_action(&app, id, "stop", Some(&body)).await?;
            output::say(format!("machine {id} stopped"));
        } else {
            let mut query = Vec::new();
            if let Some(sig) = &args.signal {
                query.push(format!("signal={sig}"));
            }
            if let Some(t) = timeout {
                query.push(format!("timeout={}", t.0.as_secs()));
            }
            let path_action = if query.is_empty() {
                "restart".to_owned()
            } else {
                format!("restart?{}", query.join("&"))
            };
            client.machine_action(&app, id, &path_action, None).await?;
            output::say(format!("machine {id} restarted"));
        }
    }
    Ok(())
}

async fn machine_run(ctx: &Ctx, args: MachineRunArgs) -> anyhow::Result<()> {
    let app = app_name(&args.app)?;
    let cwd = std::env::current_dir()?;
    let env: BTreeMap<String, String> = args
        .env
        .iter()
        .map(|p| parse_pair(p))
        .collect::<Result<_, _>>()?;
    let mut config = MachineConfig {
        image: crate::appconfig::resolve_image(&args.image, &cwd),
        env,
        ..MachineConfig::default()
    };
    config.init.cmd = args.command.clone();
    if let Some(cpus) = args.cpus {
        config.guest.cpus = cpus;
    }
    if let Some(mem) = &args.memory {
        config.guest.memory_mb =
            crate::appconfig::parse_memory(mem).map_err(|e| anyhow::anyhow!("--memory: {e}"))?;
    }
    if let Some(policy) = &args.restart {
        let policy = match policy.as_str() {
            "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            _ => RestartPolicy::OnFailure,
        };
        config.restart = RestartConfig {
            policy,
            max_retries: None,
        };
    }
    if let Some(port) = args.port {
        config.services.push(MachineService {
            protocol: "tcp".into(),
            internal_port: port,
            ports: vec![MachinePort {
                port: Some(port),
                handlers: Vec::new(),
                force_https: None,
                proxy_proto_options: None,
                http_options: None,
            }],
            concurrency: None,
            autostop: None,
            autostart: None,
            min_machines_running: None,
            checks: Vec::new(),
        });
    }
    let req = CreateMachineRequest {
        config,
        name: args.name.clone(),
        region: args.region.clone(),
        lease_ttl: None,
        skip_launch: false,
    };
    let m = ctx.client()?.create_machine(&app, &req).await?;
    if args.json {
        return output::json(&m);
    }
    output::say(format!(
        "machine {} ({}) is {} in {}",
        m.id, m.name, m.state, m.region
    ));
    for url in machine_urls(&m) {
        output::say(format!("  {url}"));
    }
    Ok(())
}
