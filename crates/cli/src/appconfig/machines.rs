//! From the raw file to a validated [`AppConfig`], and from that to machine configs.

use std::collections::BTreeMap;

use godwit_types::{
    GuestConfig, MachineConfig, MachineService, RestartConfig, RestartPolicy, StopConfig,
};

use super::raw::{RawConfig, RawPort, RawVm};
use super::{
    AppConfig, Ctx, LoadError, Scoped, Seg, Strategy, concurrency, http_ports, resolve_image,
    service_check, split_command,
};

/// `[[vm]] size` presets: (name, cpu_kind, cpus, memory_mb), as the reference system sizes them.
pub(super) const VM_SIZES: &[(&str, &str, u32, u64)] = &[
    ("shared-cpu-1x", "shared", 1, 256),
    ("shared-cpu-2x", "shared", 2, 512),
    ("shared-cpu-4x", "shared", 4, 1024),
    ("shared-cpu-8x", "shared", 8, 2048),
    ("performance-1x", "performance", 1, 2048),
    ("performance-2x", "performance", 2, 4096),
    ("performance-4x", "performance", 4, 8192),
    ("performance-8x", "performance", 8, 16384),
    ("performance-16x", "performance", 16, 32768),
];

const DEFAULT_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

pub(super) fn from_raw(raw: RawConfig, ctx: &Ctx<'_>) -> Result<AppConfig, LoadError> {
    let mut warnings = Vec::new();
    if let Some(app) = &raw.app {
        godwit_types::validate_app_name(app)
            .map_err(|e| ctx.error(&[Seg::Key("app")], e.to_string()))?;
    }
    if let Some(sig) = &raw.kill_signal {
        godwit_types::signal::parse(sig).map_err(|e| ctx.error(&[Seg::Key("kill_signal")], e))?;
    }
    if let Some(t) = raw.kill_timeout
        && t.0 > std::time::Duration::from_secs(300)
    {
        return Err(ctx.error(&[Seg::Key("kill_timeout")], "must be at most 300s"));
    }
    let deploy = raw.deploy.unwrap_or_default();
    let strategy = match deploy.strategy.as_deref() {
        None | Some("rolling") => Strategy::Rolling,
        Some("immediate") => Strategy::Immediate,
        Some(other) => {
            let line = ctx.line_of(&[Seg::Key("deploy"), Seg::Key("strategy")]);
            warnings.push(format!(
                "deploy strategy \"{other}\" (line {line}) is not supported yet: using \"rolling\""
            ));
            Strategy::Rolling
        }
    };

    let mut processes = BTreeMap::new();
    for (group, cmd) in &raw.processes {
        let path = [Seg::Key("processes"), Seg::Key(group)];
        godwit_types::validate_app_name(group).map_err(|_| {
            ctx.error(
                &path,
                "process group names use lowercase letters, digits and '-'",
            )
        })?;
        let argv = split_command(cmd).map_err(|e| ctx.error(&path, e))?;
        if argv.is_empty() {
            return Err(ctx.error(&path, "the command is empty"));
        }
        processes.insert(group.clone(), argv);
    }

    let mut services = Vec::new();
    if let Some(http) = &raw.http_service {
        let checks = http
            .checks
            .iter()
            .map(|c| service_check("http", http.internal_port, c));
        services.push(Scoped {
            value: MachineService {
                protocol: "tcp".into(),
                internal_port: http.internal_port,
                ports: http_ports(http.force_https, http.http_options.as_ref()),
                concurrency: concurrency(http.concurrency.as_ref()),
                autostop: http.auto_stop_machines.clone().map(|a| a.0.into()),
                autostart: http.auto_start_machines,
                min_machines_running: http.min_machines_running,
                checks: checks.collect(),
            },
            processes: http.processes.clone(),
        });
    }
    for (idx, svc) in raw.services.iter().enumerate() {
        if svc.protocol != "tcp" && svc.protocol != "udp" {
            let path = [Seg::Key("services"), Seg::Index(idx), Seg::Key("protocol")];
            return Err(ctx.error(
                &path,
                format!(
                    "{:?} is not supported: use \"tcp\" or \"udp\"",
                    svc.protocol
                ),
            ));
        }
        let tcp = svc
            .tcp_checks
            .iter()
            .map(|c| service_check("tcp", svc.internal_port, c));
        let http = svc
            .http_checks
            .iter()
            .map(|c| service_check("http", svc.internal_port, c));
        services.push(Scoped {
            value: MachineService {
                protocol: svc.protocol.clone(),
                internal_port: svc.internal_port,
                ports: svc
                    .ports
                    .iter()
                    .enumerate()
                    .map(|(port_idx, p)| machine_port(p, ctx, idx, port_idx))
                    .collect::<Result<_, _>>()?,
                concurrency: concurrency(svc.concurrency.as_ref()),
                autostop: svc.auto_stop_machines.clone().map(|a| a.0.into()),
                autostart: svc.auto_start_machines,
                min_machines_running: svc.min_machines_running,
                checks: tcp.chain(http).collect(),
            },
            processes: svc.processes.clone(),
        });
    }

    let mut checks = BTreeMap::new();
    for (name, check) in &raw.checks {
        if check.kind != "tcp" && check.kind != "http" {
            let path = [Seg::Key("checks"), Seg::Key(name), Seg::Key("type")];
            return Err(ctx.error(
                &path,
                format!("{:?} is not supported: use \"tcp\" or \"http\"", check.kind),
            ));
        }
        let http = check.kind == "http";
        let value = godwit_types::ServiceCheck {
            kind: check.kind.clone(),
            port: Some(check.port),
            interval: check.interval,
            timeout: check.timeout,
            grace_period: check.grace_period,
            method: check
                .method
                .clone()
                .or_else(|| http.then(|| "GET".to_owned())),
            path: check.path.clone().or_else(|| http.then(|| "/".to_owned())),
        };
        checks.insert(
            name.clone(),
            Scoped {
                value,
                processes: check.processes.clone(),
            },
        );
    }

    let mut vms = Vec::new();
    for (idx, vm) in raw.vm.iter().enumerate() {
        let guest = guest_config(vm, idx, ctx)?;
        vms.push(Scoped {
            value: guest,
            processes: vm.processes.clone(),
        });
    }

    let mut restarts = Vec::new();
    for (idx, r) in raw.restart.iter().enumerate() {
        let policy = match r.policy.as_deref() {
            None | Some("on-failure") => RestartPolicy::OnFailure,
            Some("always") => RestartPolicy::Always,
            Some("never" | "no") => RestartPolicy::No,
            Some(other) => {
                let path = [Seg::Key("restart"), Seg::Index(idx), Seg::Key("policy")];
                return Err(ctx.error(&path, format!("{other:?} is not a restart policy: use \"always\", \"never\" or \"on-failure\"")));
            }
        };
        restarts.push(Scoped {
            value: RestartConfig {
                policy,
                max_retries: r.retries,
            },
            processes: r.processes.clone(),
        });
    }

    let groups: Vec<&String> = processes.keys().collect();
    let mut check_scope = |section: &str, scope: &[String]| {
        for group in scope {
            if !groups.is_empty() && !groups.contains(&group) {
                warnings.push(format!(
                    "{section} names process group \"{group}\", which [processes] does not define"
                ));
            }
        }
    };
    for s in &services {
        check_scope("a service", &s.processes);
    }
    for (name, c) in &checks {
        check_scope(&format!("check \"{name}\""), &c.processes);
    }
    for v in &vms {
        check_scope("a [[vm]]", &v.processes);
    }

    let experimental = raw.experimental.unwrap_or_default();
    Ok(AppConfig {
        app: raw.app,
        primary_region: raw.primary_region,
        image: raw
            .build
            .and_then(|b| b.image)
            .map(|image| resolve_image(&image, ctx.dir)),
        kill_signal: raw.kill_signal,
        kill_timeout: raw.kill_timeout.map(|t| t.0),
        strategy,
        wait_timeout: deploy.wait_timeout.map_or(DEFAULT_WAIT_TIMEOUT, |t| t.0),
        env: raw.env.into_iter().map(|(k, v)| (k, v.0)).collect(),
        processes,
        services,
        checks,
        vms,
        restarts,
        init: godwit_types::InitConfig {
            exec: experimental.exec,
            entrypoint: experimental.entrypoint,
            cmd: experimental.cmd,
        },
        warnings,
    })
}

fn guest_config(vm: &RawVm, idx: usize, ctx: &Ctx<'_>) -> Result<GuestConfig, LoadError> {
    let at = |key: &'static str| [Seg::Key("vm"), Seg::Index(idx), Seg::Key(key)];
    let mut guest = GuestConfig::default();
    if let Some(size) = &vm.size {
        let Some((_, kind, cpus, mem)) = VM_SIZES.iter().find(|(n, ..)| n == size) else {
            let names: Vec<&str> = VM_SIZES.iter().map(|(n, ..)| *n).collect();
            return Err(ctx.error(
                &at("size"),
                format!("unknown size {size:?}: use one of {}", names.join(", ")),
            ));
        };
        guest = GuestConfig {
            cpu_kind: (*kind).to_owned(),
            cpus: *cpus,
            memory_mb: *mem,
        };
    }
    if let Some(kind) = &vm.cpu_kind {
        guest.cpu_kind = kind.clone();
    }
    if let Some(cpus) = vm.cpus {
        guest.cpus = cpus;
    }
    if let Some(mem) = vm.memory {
        guest.memory_mb = mem.0;
    }
    if let Some(mem) = vm.memory_mb {
        guest.memory_mb = mem;
    }
    guest.validate().map_err(|e| {
        let key = if e.contains("cpu_kind") {
            "cpu_kind"
        } else if e.contains("cpus") {
            "cpus"
        } else if vm.memory_mb.is_some() {
            "memory_mb"
        } else {
            "memory"
        };
        ctx.error(&at(key), e)
    })?;
    Ok(guest)
}

// === impl AppConfig ===

impl AppConfig {
    /// One machine config per process group, sorted by group: services, checks, size, restart
    /// policy and command that apply to it, env, stop config and the `fly_process_group` metadata.
    pub fn machine_configs(&self, image: &str) -> Vec<(String, MachineConfig)> {
        self.process_groups()
            .into_iter()
            .map(|group| {
                let config = self.machine_config(image, &group);
                (group, config)
            })
            .collect()
    }

    fn machine_config(&self, image: &str, group: &str) -> MachineConfig {
        let applies = |scope: &[String]| scope.is_empty() || scope.iter().any(|g| g == group);
        let mut env = self.env.clone();
        if let Some(region) = &self.primary_region {
            env.entry("PRIMARY_REGION".into())
                .or_insert_with(|| region.clone());
        }
        let mut init = self.init.clone();
        if let Some(cmd) = self.processes.get(group) {
            init.cmd = cmd.clone();
        }
        let stop_config =
            (self.kill_signal.is_some() || self.kill_timeout.is_some()).then(|| StopConfig {
                signal: self.kill_signal.clone(),
                timeout: self.kill_timeout.map(godwit_types::duration::Duration),
            });
        MachineConfig {
            image: image.to_owned(),
            env,
            init,
            guest: self
                .vms
                .iter()
                .find(|v| applies(&v.processes))
                .map(|v| v.value.clone())
                .unwrap_or_default(),
            services: self
                .services
                .iter()
                .filter(|s| applies(&s.processes))
                .map(|s| s.value.clone())
                .collect(),
            checks: self
                .checks
                .iter()
                .filter(|(_, c)| applies(&c.processes))
                .map(|(name, c)| (name.clone(), c.value.clone()))
                .collect(),
            restart: self
                .restarts
                .iter()
                .find(|r| applies(&r.processes))
                .map(|r| r.value.clone())
                .unwrap_or_default(),
            stop_config,
            metadata: BTreeMap::from([("fly_process_group".to_owned(), group.to_owned())]),
            auto_destroy: false,
        }
    }
}

/// One `[[services.ports]]` entry; `proxy_proto_options.version` must be `v1` or `v2`.
fn machine_port(
    raw: &RawPort,
    ctx: &Ctx<'_>,
    service: usize,
    port: usize,
) -> Result<godwit_types::machine::MachinePort, LoadError> {
    let proxy_proto_options = match &raw.proxy_proto_options {
        Some(options) => {
            let version = options.version.as_deref().unwrap_or("v1");
            if version != "v1" && version != "v2" {
                let path = [
                    Seg::Key("services"),
                    Seg::Index(service),
                    Seg::Key("ports"),
                    Seg::Index(port),
                    Seg::Key("proxy_proto_options"),
                    Seg::Key("version"),
                ];
                return Err(ctx.error(&path, format!("{version:?} is not \"v1\" or \"v2\"")));
            }
            Some(godwit_types::machine::ProxyProtoOptions {
                version: version.to_owned(),
            })
        }
        None => None,
    };
    Ok(godwit_types::machine::MachinePort {
        port: raw.port,
        handlers: raw.handlers.clone(),
        force_https: raw.force_https,
        proxy_proto_options,
        http_options: raw.http_options.as_ref().map(http_options),
    })
}

/// `http_options` as the machine config keeps it.
pub(super) fn http_options(raw: &super::raw::RawHttpOptions) -> godwit_types::machine::HttpOptions {
    godwit_types::machine::HttpOptions {
        h2_backend: raw.h2_backend,
    }
}
