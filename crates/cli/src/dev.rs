//! `godwit dev`: a whole Godwit cluster on this machine, for trying Godwit and for end-to-end
//! tests.
//!
//! With `--regions`, `up` instead starts a multi-region world (`godwit_testbed::world`: a
//! network namespace per host and for the control plane, joined by an emulated WAN) held by a
//! detached `godwit dev world-daemon`; `user` runs a command as a user in a city and `fault`
//! injects faults, both through the daemon's control socket ([`world`]).
//!
//! `up` starts `nats-server`, `godwit api`, one `godwit agent` and `godwit proxy` (TLS with a
//! local CA, `https://<app>.<domain>`) as detached background processes on loopback
//! (installing missing Debian packages first), `env` prints what the CLI needs, `status` shows what runs, and `down` destroys every machine through the API, stops
//! the daemons and sweeps anything left (runc containers, mounts, network namespaces, veths,
//! cgroups). Every file lives under one data directory, in `<data dir>/dev/`.
//!
//! It launches the daemons through the `godwit` binary itself (`current_exe`), so it depends on
//! no daemon crate except `godwit-runtime` (to destroy leftover machines the way the agent would).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

mod down;
mod host;
mod http;
mod procs;
mod proxy;
mod sweep;
mod tls;
mod up;
mod world;

pub(crate) use proxy::public_url_lines;

/// `godwit dev …`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    #[command(subcommand)]
    cmd: DevCmd,
}

#[derive(clap::Subcommand, Debug)]
enum DevCmd {
    /// Start nats-server, the API, one agent and the proxy in the background; returns once all
    /// are ready
    Up(up::UpArgs),
    /// Print the environment variables the CLI needs (`eval "$(godwit dev env)"`)
    Env(DataDirArg),
    /// Show whether the dev cluster runs
    Status(DataDirArg),
    /// Destroy every machine, stop the daemons and remove everything they left behind
    Down(down::DownArgs),
    /// Run a command as a user in a city of the multi-region world (`dev up --regions`), in a
    /// network namespace with that city's delays to every region
    User(world::UserArgs),
    /// Faults in the multi-region world: hosts or regions down and up, partitions, packet loss
    Fault(world::FaultArgs),
    /// The long-lived process that holds a multi-region world (started by `dev up --regions`)
    #[command(hide = true)]
    WorldDaemon(world::DaemonArgs),
}

/// Where the dev cluster keeps its state.
#[derive(clap::Args, Debug, Clone)]
struct DataDirArg {
    /// Data directory [default: $GODWIT_HOME, else $HOME/.godwit]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The paths of a dev cluster, all under `<data dir>/dev/`.
#[derive(Debug, Clone)]
struct Layout {
    data_dir: PathBuf,
    dev_dir: PathBuf,
    logs_dir: PathBuf,
    nats_dir: PathBuf,
    api_dir: PathBuf,
    agent_dir: PathBuf,
    /// [`DevState`]: ports, names and pids.
    state_file: PathBuf,
    /// [`Tokens`] from `godwit api init` (0600).
    tokens_file: PathBuf,
    /// The agent's join token, read by `godwit agent --join-token-file` (0600).
    join_token_file: PathBuf,
    /// [`EnvFile`], read by the CLI (0600).
    env_file: PathBuf,
    /// The local CA and the `*.<domain>` certificate.
    tls_dir: PathBuf,
    /// The token the proxy starts and stops machines with (0600).
    proxy_token_file: PathBuf,
    /// The cluster certificate key, given to the API and the proxy as `--cert-key-file`
    /// (0600): certificate private keys cross NATS sealed with it.
    cert_key_file: PathBuf,
    /// The multi-region world's data (its daemons' state and logs).
    world_dir: PathBuf,
    /// `world::WorldState`: the world daemon's pid and the world's prefix.
    world_state_file: PathBuf,
    /// The world daemon's control socket (0600).
    world_socket: PathBuf,
}

/// What `up` decided and started; `down` and `status` read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DevState {
    region: String,
    name_prefix: String,
    subnet: String,
    host_id: String,
    nats_port: u16,
    nats_monitor_port: u16,
    api_port: u16,
    agent_port: u16,
    /// Apps are reached through the proxy as `<app>.<domain>`.
    #[serde(default)]
    domain: String,
    /// The proxy's plain HTTP port (it stands for port 80); 0 in state files from before the
    /// proxy.
    #[serde(default)]
    proxy_http_port: u16,
    /// The proxy's HTTPS port (it stands for port 443).
    #[serde(default)]
    proxy_https_port: u16,
    /// Daemon name (`nats`, `api`, `agent`, `proxy`) → pid.
    #[serde(default)]
    pids: BTreeMap<String, u32>,
}

/// The tokens `godwit api init` printed, kept because they are shown only once.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tokens {
    org: String,
    admin_token: String,
    join_token: String,
}

/// `<data dir>/dev/env.json`: how the CLI reaches the dev cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnvFile {
    api_url: String,
    token: String,
    nats_url: String,
    /// How to reach apps through the dev proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proxy: Option<ProxyEnv>,
}

/// The dev proxy, as `env.json` tells the CLI: apps answer at
/// `https://<app>.<domain>:<https_port>` on 127.0.0.1, signed by the CA in `ca_cert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProxyEnv {
    pub(crate) domain: String,
    pub(crate) http_port: u16,
    pub(crate) https_port: u16,
    pub(crate) ca_cert: PathBuf,
}

/// The daemons, in start order (`down` stops them in reverse).
const DAEMONS: [&str; 4] = ["nats", "api", "agent", "proxy"];

/// Runs `godwit dev …`.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    match args.cmd {
        DevCmd::Up(up_args) => block_on(up::up(up_args)),
        DevCmd::Env(dir) => env(&Layout::new(dir.data_dir)?),
        DevCmd::Status(dir) => block_on(async { status(&Layout::new(dir.data_dir)?).await }),
        DevCmd::Down(down_args) => block_on(down::down(down_args)),
        DevCmd::User(user_args) => block_on(world::user(user_args)),
        DevCmd::Fault(fault_args) => block_on(world::fault(fault_args)),
        DevCmd::WorldDaemon(daemon_args) => world::run_daemon(daemon_args),
    }
}

/// Runs a command's future on a fresh single-threaded runtime.
fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(fut)
}

fn env(layout: &Layout) -> anyhow::Result<()> {
    let env_file = layout.read_env()?.with_context(|| {
        format!(
            "no dev cluster in {}: run `godwit dev up` first",
            layout.data_dir.display()
        )
    })?;
    say(format_args!(
        "export GODWIT_API_URL={}\nexport GODWIT_API_TOKEN={}",
        env_file.api_url, env_file.token
    ));
    if let Some(proxy) = &env_file.proxy {
        say(format_args!("export GODWIT_CA={}", proxy.ca_cert.display()));
    }
    Ok(())
}

async fn status(layout: &Layout) -> anyhow::Result<()> {
    if layout.world_state_file.exists() {
        return world::status(layout).await;
    }
    let Some(state) = layout.read_state()? else {
        say(format_args!(
            "no dev cluster in {} (run `godwit dev up`)",
            layout.data_dir.display()
        ));
        return Ok(());
    };
    let mut all_up = true;
    for name in DAEMONS {
        let line = match state.pids.get(name) {
            Some(&pid) if procs::is_ours(pid, &layout.data_dir) => format!("running (pid {pid})"),
            Some(&pid) => {
                all_up = false;
                format!("not running (was pid {pid})")
            }
            None => {
                all_up = false;
                "not started".to_owned()
            }
        };
        say(format_args!("{name:<6} {line}"));
    }
    if let Some(proxy) = layout.read_env()?.and_then(|env_file| env_file.proxy) {
        say(format_args!("{}", proxy::describe(&proxy)));
    }
    let api_url = state.api_url();
    let healthy = http::is_healthy(&format!("{api_url}/v1/healthz")).await;
    say(format_args!(
        "api    {api_url} ({})\nregion {}, host {}, data dir {}",
        if healthy { "healthy" } else { "not answering" },
        state.region,
        state.host_id,
        layout.data_dir.display()
    ));
    if all_up && healthy {
        say("the dev cluster is up");
    } else {
        say("the dev cluster is not fully up: run `godwit dev up` (or `godwit dev down`)");
    }
    Ok(())
}

/// Writes one line of user-facing output to stdout.
fn say(message: impl std::fmt::Display) {
    // Output is best-effort: a closed stdout (e.g. `| head`) must not fail the command.
    let _ = writeln!(std::io::stdout().lock(), "{message}");
}

/// Writes `contents` to `path` with mode 0600, atomically (temp file + rename).
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("parse {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).context("serialize dev state")?;
    write_private(path, &bytes)
}

// === impl Layout ===

impl Layout {
    /// The layout under `data_dir`, or under `$GODWIT_HOME` / `$HOME/.godwit`.
    fn new(data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let data_dir = match data_dir {
            Some(dir) => dir,
            None => default_data_dir()?,
        };
        let data_dir = if data_dir.is_absolute() {
            data_dir
        } else {
            std::env::current_dir()
                .context("find the current directory")?
                .join(data_dir)
        };
        let dev_dir = data_dir.join("dev");
        Ok(Self {
            logs_dir: dev_dir.join("logs"),
            nats_dir: dev_dir.join("nats"),
            api_dir: dev_dir.join("api"),
            agent_dir: dev_dir.join("agent"),
            state_file: dev_dir.join("state.json"),
            tokens_file: dev_dir.join("tokens.json"),
            join_token_file: dev_dir.join("join-token"),
            env_file: dev_dir.join("env.json"),
            tls_dir: dev_dir.join("tls"),
            proxy_token_file: dev_dir.join("proxy-token"),
            cert_key_file: dev_dir.join("cert.key"),
            world_dir: dev_dir.join("world"),
            world_state_file: dev_dir.join("world.json"),
            world_socket: dev_dir.join("world.sock"),
            dev_dir,
            data_dir,
        })
    }

    fn log_file(&self, daemon: &str) -> PathBuf {
        self.logs_dir.join(format!("{daemon}.log"))
    }

    fn read_state(&self) -> anyhow::Result<Option<DevState>> {
        read_json(&self.state_file)
    }

    fn write_state(&self, state: &DevState) -> anyhow::Result<()> {
        write_json(&self.state_file, state)
    }

    fn read_env(&self) -> anyhow::Result<Option<EnvFile>> {
        read_json(&self.env_file)
    }
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("GODWIT_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither GODWIT_HOME nor HOME is set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".godwit"))
}

// === impl DevState ===

impl DevState {
    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    fn agent_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.agent_port)
    }
}
