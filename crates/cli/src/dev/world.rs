//! `godwit dev up --regions …`: a multi-region world on this machine (`godwit_testbed::world`),
//! held by a detached `godwit dev world-daemon` (the WAN router lives in the process that made
//! the testbed). The CLI talks to the daemon over its control socket for `status`, `user`,
//! `fault` and `down`, and to the world's API through the loopback relay `env.json` names.
//! `down` also sweeps the world's namespaces, processes, mounts and cgroups when the daemon
//! is gone (killed), from the prefix in `world.json`.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{DataDirArg, Layout, host, procs, say};

mod control;
mod daemon;
mod faults;

pub(super) use daemon::DaemonArgs;

use control::{Fault, Request, Response, WorldStatus};

/// What `dev up --regions` asked for.
#[derive(Debug, Clone)]
pub(super) struct WorldOptions {
    pub(super) regions: Vec<String>,
    pub(super) hosts_per_region: u32,
    pub(super) prefix: Option<String>,
    pub(super) no_install: bool,
}

/// `godwit dev user <city> -- <command>`.
#[derive(clap::Args, Debug)]
pub(super) struct UserArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Region code or city the user sits in (`syd`, `Sydney`)
    city: String,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `godwit dev fault …`.
#[derive(clap::Args, Debug)]
pub(super) struct FaultArgs {
    #[command(flatten)]
    dir: DataDirArg,
    #[command(subcommand)]
    fault: Fault,
}

/// `<dev dir>/world.json`: written by `up` as soon as the daemon runs, so that `down` can stop
/// and sweep it whatever happened since.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorldState {
    prefix: String,
    pid: u32,
    regions: Vec<String>,
    hosts_per_region: u32,
}

/// Default prefix of a world's network namespaces (one-host clusters use `gw`).
const DEFAULT_PREFIX: &str = "gwr";
/// How long a world may take to start (every step inside has its own deadline too).
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the daemon gets to stop the world after `down` asked it to.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the hidden `godwit dev world-daemon`.
pub(super) fn run_daemon(args: DaemonArgs) -> anyhow::Result<()> {
    daemon::run(args)
}

pub(super) async fn up(layout: &Layout, opts: WorldOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        !layout.state_file.exists(),
        "a one-host dev cluster runs in {}: stop it with `godwit dev down` first",
        layout.data_dir.display()
    );
    if let Some(state) = read_state(layout)? {
        if procs::is_ours(state.pid, &layout.data_dir)
            && let Ok(Response::Status(status)) =
                control::ask(&layout.world_socket, &Request::Status).await
        {
            say(format_args!(
                "the world in {} is already up",
                layout.data_dir.display()
            ));
            print_status(&status);
            return Ok(());
        }
        say("a previous world is half up: removing it first");
        down(layout).await?;
    }
    let prefix = opts.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    anyhow::ensure!(
        (1..=6).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "--name-prefix {prefix:?} must be 1 to 6 lowercase letters or digits"
    );
    host::ensure_programs(opts.no_install)?;
    anyhow::ensure!(
        host::find_program("nsenter").is_some(),
        "nsenter is missing: apt-get install -y util-linux"
    );
    // A fresh world: what an earlier one left (after `down` swept its mounts) goes.
    let swept = godwit_testbed::world::World::sweep(&prefix, &layout.world_dir);
    anyhow::ensure!(
        swept.is_empty(),
        "could not clear a previous world: {}",
        swept[0]
    );
    if layout.world_dir.exists() {
        std::fs::remove_dir_all(&layout.world_dir)
            .with_context(|| format!("remove {}", layout.world_dir.display()))?;
    }
    std::fs::create_dir_all(&layout.logs_dir)
        .with_context(|| format!("create {}", layout.logs_dir.display()))?;
    remove_if_present(&layout.env_file)?;

    let exe = std::env::current_exe().context("find the godwit binary")?;
    let data_dir = layout.data_dir.display().to_string();
    let regions = opts.regions.join(",");
    let hosts = opts.hosts_per_region.to_string();
    let args: Vec<&OsStr> = [
        "dev",
        "world-daemon",
        "--data-dir",
        &data_dir,
        "--prefix",
        &prefix,
        "--regions",
        &regions,
        "--hosts-per-region",
        &hosts,
    ]
    .map(OsStr::new)
    .to_vec();
    let log = layout.log_file("world");
    let pid = procs::spawn_detached(&exe, &args, &log).context("start the world daemon")?;
    let state = WorldState {
        prefix,
        pid,
        regions: opts.regions,
        hosts_per_region: opts.hosts_per_region,
    };
    super::write_json(&layout.world_state_file, &state)?;
    say(format_args!(
        "starting the world {} ({} host(s) per region); log: {}",
        state.regions.join(", "),
        state.hosts_per_region,
        log.display()
    ));
    match wait_ready(layout, &state).await {
        Ok(status) => {
            say("the world is up");
            print_status(&status);
            say(format_args!(
                "the CLI finds its API through {}; users: godwit dev user <city> -- curl -H 'Host: <app>.{}' http://{}/\n\
                 stop it with: godwit dev down --data-dir {data_dir}",
                layout.env_file.display(),
                status.domain,
                status.anycast,
            ));
            Ok(())
        }
        Err(error) => {
            // Leave nothing half-started behind.
            if let Err(down_error) = down(layout).await {
                say(format_args!("cleaning up failed too: {down_error:#}"));
            }
            Err(error.context("start the world"))
        }
    }
}

/// Polls until the daemon wrote `env.json` and answers; fails early if it died.
async fn wait_ready(layout: &Layout, state: &WorldState) -> anyhow::Result<WorldStatus> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let log = layout.log_file("world");
    loop {
        if layout.env_file.exists()
            && let Ok(Response::Status(status)) =
                control::ask(&layout.world_socket, &Request::Status).await
        {
            return Ok(status);
        }
        anyhow::ensure!(
            procs::is_alive(state.pid),
            "the world daemon exited; last lines of {}:\n{}",
            log.display(),
            super::up::tail(&log, 30)
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the world was not up after {START_TIMEOUT:?}; last lines of {}:\n{}",
            log.display(),
            super::up::tail(&log, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn status(layout: &Layout) -> anyhow::Result<()> {
    let Some(state) = read_state(layout)? else {
        say("no world here");
        return Ok(());
    };
    if !procs::is_ours(state.pid, &layout.data_dir) {
        say(format_args!(
            "the world daemon is not running (was pid {}): run `godwit dev down` to sweep what \
             is left",
            state.pid
        ));
        return Ok(());
    }
    match control::ask(&layout.world_socket, &Request::Status).await {
        Ok(Response::Status(status)) => {
            print_status(&status);
            say(format_args!("the world daemon runs (pid {})", state.pid));
        }
        Ok(other) => anyhow::bail!("unexpected answer from the world daemon: {other:?}"),
        Err(error) => say(format_args!(
            "the world daemon (pid {}) runs but does not answer yet: {error:#}",
            state.pid
        )),
    }
    Ok(())
}

fn print_status(status: &WorldStatus) {
    say(format_args!(
        "world {}: regions {} (control plane in {}), API {}, anycast {} (apps: <app>.{})",
        status.prefix,
        status.regions.join(", "),
        status.regions.first().map_or("?", String::as_str),
        status.api_url,
        status.anycast,
        status.domain,
    ));
    say(format_args!(
        "{:<8} {:<7} {:<14} {:<8} state",
        "host", "region", "address", "prefix"
    ));
    for h in &status.hosts {
        let mut state = if h.down { "down" } else { "up" }.to_owned();
        if h.loss_percent > 0.0 {
            state.push_str(&format!(", {}% loss", h.loss_percent));
        }
        say(format_args!(
            "{:<8} {:<7} {:<14} {:<8} {state}",
            h.node, h.region, h.ipv4, h.name_prefix
        ));
    }
    let partitions: Vec<String> = status
        .partitions
        .iter()
        .map(|(a, b)| format!("{a}/{b}"))
        .collect();
    say(format_args!(
        "partitions: {}",
        if partitions.is_empty() {
            "none".to_owned()
        } else {
            partitions.join(", ")
        }
    ));
    if !status.users.is_empty() {
        let users: Vec<String> = status
            .users
            .iter()
            .map(|(city, node)| format!("{city} ({node})"))
            .collect();
        say(format_args!("users: {}", users.join(", ")));
    }
}

/// `godwit dev user`: runs the command in the city's user netns; on success never returns
/// (the process becomes the command, so its stdin, stdout and exit status are the user's).
pub(super) async fn user(args: UserArgs) -> anyhow::Result<()> {
    let layout = Layout::new(args.dir.data_dir)?;
    require_world(&layout)?;
    let request = Request::User { city: args.city };
    let Response::User { netns, .. } = control::ask(&layout.world_socket, &request).await? else {
        anyhow::bail!("unexpected answer from the world daemon");
    };
    let nsenter = host::find_program("nsenter").context("nsenter is missing (util-linux)")?;
    let mut net = std::ffi::OsString::from("--net=");
    net.push(std::path::Path::new(godwit_testbed::NETNS_DIR).join(&netns));
    let error = std::process::Command::new(nsenter)
        .arg(net)
        .arg("--")
        .args(&args.command)
        .exec();
    Err(error).with_context(|| format!("run {:?} in {netns}", args.command))
}

/// `godwit dev fault …`.
pub(super) async fn fault(args: FaultArgs) -> anyhow::Result<()> {
    let layout = Layout::new(args.dir.data_dir)?;
    require_world(&layout)?;
    let request = Request::Fault { fault: args.fault };
    match control::ask(&layout.world_socket, &request).await? {
        Response::Done { message } => {
            say(message);
            Ok(())
        }
        other => anyhow::bail!("unexpected answer from the world daemon: {other:?}"),
    }
}

/// `godwit dev down` of a world: asks the daemon to stop it, waits for the daemon to exit
/// (killing it if it does not), then sweeps whatever is left of the prefix.
pub(super) async fn down(layout: &Layout) -> anyhow::Result<()> {
    let Some(state) = read_state(layout)? else {
        return Ok(());
    };
    if procs::is_ours(state.pid, &layout.data_dir) {
        let ended = match control::ask(&layout.world_socket, &Request::Down).await {
            Ok(_) => {
                say("stopping the world");
                procs::terminate_after(state.pid, &layout.data_dir, STOP_TIMEOUT).await
            }
            Err(error) => {
                say(format_args!(
                    "the world daemon did not answer ({error:#}): SIGTERM"
                ));
                procs::terminate(state.pid, &layout.data_dir, STOP_TIMEOUT).await
            }
        };
        match ended {
            procs::Ended::Terminated | procs::Ended::NotRunning => {}
            procs::Ended::Killed => say(format_args!(
                "killed the world daemon (pid {}): it did not stop within {STOP_TIMEOUT:?}",
                state.pid
            )),
        }
    }
    // Whatever a killed daemon left: its daemons, then namespaces, machines, cgroups, mounts.
    for (pid, line) in procs::mentioning(&layout.data_dir) {
        if procs::runs_one_of(pid, &["nats-server", "runc", "nsenter"]) {
            procs::kill_now(pid).await;
            say(format_args!("killed process {pid} ({line})"));
        }
    }
    let left = godwit_testbed::world::World::sweep(&state.prefix, &layout.world_dir);
    for error in &left {
        say(format_args!("failed to clean up: {error}"));
    }
    for file in [
        &layout.env_file,
        &layout.world_socket,
        &layout.world_state_file,
    ] {
        remove_if_present(file)?;
    }
    anyhow::ensure!(
        left.is_empty(),
        "the world is down but {} thing(s) could not be removed (listed above)",
        left.len()
    );
    say("the world is down; nothing is left running");
    Ok(())
}

fn require_world(layout: &Layout) -> anyhow::Result<()> {
    let state = read_state(layout)?.with_context(|| {
        format!(
            "no world in {}: start one with `godwit dev up --regions ams,syd`",
            layout.data_dir.display()
        )
    })?;
    anyhow::ensure!(
        procs::is_ours(state.pid, &layout.data_dir),
        "the world daemon is not running (was pid {}): `godwit dev down`, then `dev up` again",
        state.pid
    );
    Ok(())
}

fn read_state(layout: &Layout) -> anyhow::Result<Option<WorldState>> {
    super::read_json(&layout.world_state_file)
}

fn remove_if_present(path: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}
