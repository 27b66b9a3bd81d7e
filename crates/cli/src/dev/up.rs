//! `godwit dev up`: packages, then nats-server, the API, one agent and the proxy, each waited
//! for.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::{DataDirArg, DevState, EnvFile, Layout, Tokens, host, http, procs, proxy, say};

/// `godwit dev up`.
#[derive(clap::Args, Debug)]
pub(super) struct UpArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Region of the dev host (and of machines created without one)
    #[arg(long)]
    region: Option<String>,
    /// Prefix of the names of network namespaces, veths, cgroups and runc containers
    /// (1 to 6 lowercase letters or digits; give each cluster on a host its own)
    #[arg(long)]
    name_prefix: Option<String>,
    /// IPv4 range machine addresses come from (one /30 each)
    #[arg(long)]
    subnet: Option<String>,
    /// Organisation created on first start
    #[arg(long, default_value = "personal")]
    org: String,
    /// Never run apt-get: fail if a needed program is missing
    #[arg(long)]
    no_install: bool,
    /// Apps are reached through the proxy as `<app>.<domain>` [default: godwit.test]
    #[arg(long)]
    domain: Option<String>,
    /// Loopback port of the proxy's plain HTTP listener, standing for port 80 (0: any free
    /// port) [default: 14280]
    #[arg(long, value_name = "PORT")]
    proxy_http_port: Option<u16>,
    /// Loopback port of the proxy's HTTPS listener, standing for port 443 (0: any free port)
    /// [default: 14243]
    #[arg(long, value_name = "PORT")]
    proxy_https_port: Option<u16>,
    /// Seconds to wait for each daemon to become ready
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Start a multi-region world instead: every host in its own network namespace, joined by
    /// a WAN with real city-to-city delays (region codes or cities, comma-separated; the
    /// control plane goes to the region through which state between the others detours least)
    #[arg(long, value_delimiter = ',', value_name = "REGIONS")]
    regions: Vec<String>,
    /// Hosts per region of a multi-region world
    #[arg(long, default_value_t = 1, value_name = "N")]
    hosts_per_region: u32,
}

const DEFAULT_REGION: &str = "local";
const DEFAULT_PREFIX: &str = "gw";
const DEFAULT_SUBNET: &str = "172.30.0.0/16";

pub(super) async fn up(args: UpArgs) -> anyhow::Result<()> {
    let layout = Layout::new(args.dir.data_dir.clone())?;
    if !args.regions.is_empty() {
        let world = super::world::WorldOptions {
            regions: args.regions,
            hosts_per_region: args.hosts_per_region,
            prefix: args.name_prefix,
            no_install: args.no_install,
        };
        return super::world::up(&layout, world).await;
    }
    anyhow::ensure!(
        !layout.world_state_file.exists(),
        "a multi-region world runs in {}: stop it with `godwit dev down` first",
        layout.data_dir.display()
    );
    for dir in [&layout.logs_dir, &layout.nats_dir, &layout.agent_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let previous = layout.read_state()?;
    if let Some(state) = &previous
        && is_up(&layout, state).await
    {
        say(format_args!(
            "the dev cluster in {} is already up: API at {}",
            layout.data_dir.display(),
            state.api_url()
        ));
        print_usage(&layout);
        return Ok(());
    }
    if let Some(state) = &previous {
        // Half up (a daemon died, or the machine rebooted): stop what is left, start afresh.
        for (name, &pid) in state.pids.iter().rev() {
            if procs::terminate(pid, &layout.data_dir, Duration::from_secs(10)).await
                != procs::Ended::NotRunning
            {
                say(format_args!("stopped the leftover {name} (pid {pid})"));
            }
        }
    }
    host::ensure_programs(args.no_install)?;
    let state = plan(&args, previous.as_ref())?;
    layout.write_state(&state)?;
    let timeout = Duration::from_secs(args.timeout);
    match start_all(&layout, state, &args.org, timeout).await {
        Ok(state) => {
            say(format_args!(
                "the dev cluster is up: API at {}, region {}, host {}",
                state.api_url(),
                state.region,
                state.host_id
            ));
            print_usage(&layout);
            Ok(())
        }
        Err(error) => {
            // Leave nothing half-started behind.
            if let Some(state) = layout.read_state().ok().flatten() {
                for &pid in state.pids.values().rev() {
                    procs::terminate(pid, &layout.data_dir, Duration::from_secs(5)).await;
                }
            }
            Err(error.context(format!(
                "start the dev cluster (logs in {})",
                layout.logs_dir.display()
            )))
        }
    }
}

/// Whether every daemon of `state` runs and the API answers.
async fn is_up(layout: &Layout, state: &DevState) -> bool {
    let all_running = super::DAEMONS.iter().all(|name| {
        state
            .pids
            .get(*name)
            .is_some_and(|&pid| procs::is_ours(pid, &layout.data_dir))
    });
    all_running
        && layout.env_file.exists()
        && http::is_healthy(&format!("{}/v1/healthz", state.api_url())).await
}

fn print_usage(layout: &Layout) {
    if let Some(proxy) = layout.read_env().ok().flatten().and_then(|e| e.proxy) {
        say(proxy::describe(&proxy));
    }
    let dir = layout.data_dir.display();
    say(format_args!(
        "the CLI finds it through {}; in another shell: eval \"$(godwit dev env --data-dir {dir})\"\n\
         logs: {}\nstop it with: godwit dev down --data-dir {dir}",
        layout.env_file.display(),
        layout.logs_dir.display(),
    ));
}

/// Names, addresses and ports: flags first, then what the previous run used, then defaults.
fn plan(args: &UpArgs, previous: Option<&DevState>) -> anyhow::Result<DevState> {
    let pick = |flag: &Option<String>, old: Option<&String>, default: &str| {
        flag.clone()
            .or_else(|| old.cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    let region = pick(&args.region, previous.map(|p| &p.region), DEFAULT_REGION);
    let name_prefix = pick(
        &args.name_prefix,
        previous.map(|p| &p.name_prefix),
        DEFAULT_PREFIX,
    );
    anyhow::ensure!(
        (1..=6).contains(&name_prefix.len())
            && name_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "--name-prefix {name_prefix:?} must be 1 to 6 lowercase letters or digits"
    );
    let subnet = pick(&args.subnet, previous.map(|p| &p.subnet), DEFAULT_SUBNET);
    let domain = proxy::check_domain(&pick(
        &args.domain,
        previous.map(|p| &p.domain).filter(|d| !d.is_empty()),
        proxy::DEFAULT_DOMAIN,
    ))?;
    // A flag wins (0: any port), then the previous run's port, then the fixed default.
    let proxy_port = |flag: Option<u16>, old: Option<u16>, default: u16| match flag {
        Some(0) => None,
        Some(port) => Some(port),
        None => old.filter(|&p| p != 0).or(Some(default)),
    };
    let mut taken = Vec::new();
    let mut port = |old: Option<u16>| -> anyhow::Result<u16> {
        let port = host::free_port(old, &taken)?;
        taken.push(port);
        Ok(port)
    };
    Ok(DevState {
        host_id: format!("{name_prefix}-{region}-1"),
        nats_port: port(previous.map(|p| p.nats_port))?,
        nats_monitor_port: port(previous.map(|p| p.nats_monitor_port))?,
        api_port: port(previous.map(|p| p.api_port))?,
        agent_port: port(previous.map(|p| p.agent_port))?,
        proxy_http_port: port(proxy_port(
            args.proxy_http_port,
            previous.map(|p| p.proxy_http_port),
            proxy::DEFAULT_HTTP_PORT,
        ))?,
        proxy_https_port: port(proxy_port(
            args.proxy_https_port,
            previous.map(|p| p.proxy_https_port),
            proxy::DEFAULT_HTTPS_PORT,
        ))?,
        domain,
        region,
        name_prefix,
        subnet,
        pids: Default::default(),
    })
}

async fn start_all(
    layout: &Layout,
    mut state: DevState,
    org: &str,
    timeout: Duration,
) -> anyhow::Result<DevState> {
    let exe = std::env::current_exe().context("find the godwit binary")?;
    let nats = host::find_program("nats-server").context("nats-server is not installed")?;
    let runc = host::find_program("runc").context("runc is not installed")?;

    // NATS with JetStream, its store under the data dir.
    let nats_args: Vec<String> = vec![
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        state.nats_port.to_string(),
        "-m".into(),
        state.nats_monitor_port.to_string(),
        "-js".into(),
        "-sd".into(),
        layout.nats_dir.display().to_string(),
        "-n".into(),
        format!("{}-nats", state.host_id),
    ];
    launch(layout, &mut state, "nats", &nats, &nats_args)?;
    let monitor = format!("http://127.0.0.1:{}/healthz", state.nats_monitor_port);
    wait_ready(layout, &state, "nats", timeout, || {
        http::is_healthy(&monitor)
    })
    .await?;

    let tokens = init_api(layout, &exe, org).await?;
    super::write_private(&layout.join_token_file, tokens.join_token.as_bytes())?;
    // One certificate key for the API and the proxy; kept across `down`/`up` like the API's
    // data, so published certificates still open.
    godwit_state::seal::SealKey::load(&layout.cert_key_file, true).with_context(|| {
        format!(
            "read or create the certificate key {}",
            layout.cert_key_file.display()
        )
    })?;

    let api_args: Vec<String> = vec![
        "api".into(),
        "--data-dir".into(),
        layout.api_dir.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", state.api_port),
        "--nats-url".into(),
        state.nats_url(),
        "--region".into(),
        state.region.clone(),
        "--cert-key-file".into(),
        layout.cert_key_file.display().to_string(),
    ];
    launch(layout, &mut state, "api", &exe, &api_args)?;
    let api_health = format!("{}/v1/healthz", state.api_url());
    wait_ready(layout, &state, "api", timeout, || {
        http::is_healthy(&api_health)
    })
    .await?;

    let (cpus, memory_mb) = host::capacity();
    let agent_args: Vec<String> = vec![
        "agent".into(),
        "--data-dir".into(),
        layout.agent_dir.display().to_string(),
        "--api-url".into(),
        state.api_url(),
        "--join-token-file".into(),
        layout.join_token_file.display().to_string(),
        "--host-id".into(),
        state.host_id.clone(),
        "--region".into(),
        state.region.clone(),
        "--nats-url".into(),
        state.nats_url(),
        "--listen".into(),
        format!("127.0.0.1:{}", state.agent_port),
        "--advertise-url".into(),
        state.agent_url(),
        "--cpus".into(),
        cpus.to_string(),
        "--memory-mb".into(),
        memory_mb.to_string(),
        "--subnet".into(),
        state.subnet.clone(),
        "--runc".into(),
        runc.display().to_string(),
        "--name-prefix".into(),
        state.name_prefix.clone(),
    ];
    launch(layout, &mut state, "agent", &exe, &agent_args)?;
    let client = http::client();
    let hosts_url = format!("{}/v1/hosts", state.api_url());
    let host_id = state.host_id.clone();
    wait_ready(layout, &state, "agent", timeout, || {
        http::host_registered(&client, &hosts_url, &tokens.admin_token, &host_id)
    })
    .await?;

    let proxy = proxy::start(layout, &mut state, &exe, &tokens.admin_token, timeout).await?;
    let env_file = EnvFile {
        api_url: state.api_url(),
        token: tokens.admin_token.clone(),
        nats_url: state.nats_url(),
        proxy: Some(proxy),
    };
    super::write_json(&layout.env_file, &env_file)?;
    Ok(state)
}

/// Starts one daemon detached and records its pid at once, so `down` finds it even if `up`
/// fails later.
pub(super) fn launch(
    layout: &Layout,
    state: &mut DevState,
    name: &str,
    program: &Path,
    args: &[String],
) -> anyhow::Result<()> {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let pid = procs::spawn_detached(program, &args, &layout.log_file(name))
        .with_context(|| format!("start {name}"))?;
    tracing::info!(daemon = name, pid, "started");
    state.pids.insert(name.to_owned(), pid);
    layout.write_state(state)
}

/// Polls `ready` until it is true; fails early, with the log's tail, if the daemon died.
pub(super) async fn wait_ready<F, Fut>(
    layout: &Layout,
    state: &DevState,
    name: &str,
    timeout: Duration,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let pid = state.pids.get(name).copied().unwrap_or_default();
    loop {
        if ready().await {
            return Ok(());
        }
        let log = layout.log_file(name);
        if !procs::is_alive(pid) {
            anyhow::bail!(
                "{name} exited while starting; last lines of {}:\n{}",
                log.display(),
                tail(&log, 30)
            );
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{name} was not ready after {timeout:?}; last lines of {}:\n{}",
                log.display(),
                tail(&log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `godwit api init` the first time; later, reads the tokens it printed then.
async fn init_api(layout: &Layout, exe: &Path, org: &str) -> anyhow::Result<Tokens> {
    if let Some(tokens) = super::read_json::<Tokens>(&layout.tokens_file)? {
        return Ok(tokens);
    }
    let output = tokio::process::Command::new(exe)
        .arg("api")
        .arg("init")
        .arg("--data-dir")
        .arg(&layout.api_dir)
        .arg("--org")
        .arg(org)
        .output()
        .await
        .context("run `godwit api init`")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "`godwit api init` failed ({}): {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    // The JSON object may follow a human-readable line.
    let json = stdout.find('{').map_or("", |start| &stdout[start..]);
    let tokens: Tokens = serde_json::from_str(json.trim()).with_context(|| {
        format!(
            "`godwit api init` printed no tokens ({} was initialised before and its tokens \
             are lost; remove the data dir with `godwit dev down --purge`): {stdout}",
            layout.api_dir.display()
        )
    })?;
    super::write_json(&layout.tokens_file, &tokens)?;
    Ok(tokens)
}

/// The last `n` lines of a log file (for error messages).
pub(super) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
