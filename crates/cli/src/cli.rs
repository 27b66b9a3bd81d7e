//! The command line: every command and flag (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands::CertsCmd;
use crate::daemon::{AgentArgs, ApiArgs, ImageCmd, ProxyArgs};
use crate::dev::DevArgs;

#[derive(Parser, Debug)]
#[command(
    name = "godwit",
    version,
    about = "Godwit: a self-hosted developer cloud"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) cmd: Command,
}

/// How to reach the API (else `<data dir>/dev/env.json`).
#[derive(Args, Debug, Clone)]
pub(crate) struct GlobalArgs {
    /// API URL
    #[arg(long, global = true, env = "GODWIT_API_URL", value_name = "URL")]
    pub(crate) api_url: Option<String>,
    /// API token
    #[arg(long, global = true, env = "GODWIT_API_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Write a godwit.toml for a new app
    Launch(LaunchArgs),
    /// Create or update the app's machines from godwit.toml (or fly.toml)
    Deploy(DeployArgs),
    /// Show the app and its machines
    Status(ReadArgs),
    /// Manage machines one by one
    #[command(subcommand)]
    Machine(MachineCmd),
    /// Show the app's logs
    Logs(LogsArgs),
    /// Change how many machines run
    #[command(subcommand)]
    Scale(ScaleCmd),
    /// Manage the app's secrets
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Manage apps
    #[command(subcommand)]
    Apps(AppsCmd),
    /// Manage certificates for the app's custom hostnames
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Work with godwit.toml / fly.toml
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Build OCI images
    #[command(subcommand)]
    Image(ImageCmd),
    /// Run a whole cluster on this machine
    Dev(DevArgs),
    /// Run the control plane (daemon)
    #[command(hide = true)]
    Api(ApiArgs),
    /// Run a host agent (daemon)
    #[command(hide = true)]
    Agent(AgentArgs),
    /// Run the edge proxy (daemon)
    #[command(hide = true)]
    Proxy(ProxyArgs),
}

/// Which app: `--app`, else the `app` of godwit.toml / fly.toml in this directory.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct AppArg {
    /// App name [default: `app` in ./godwit.toml or ./fly.toml]
    #[arg(short, long)]
    pub(crate) app: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct ReadArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Print the API's JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct LaunchArgs {
    /// App name
    #[arg(long)]
    pub(crate) name: String,
    /// Primary region
    #[arg(long, default_value = "local")]
    pub(crate) region: String,
    /// Image: registry reference, OCI layout directory (`oci:./dir`) or archive
    #[arg(long)]
    pub(crate) image: String,
    /// The port the app listens on
    #[arg(long, default_value_t = 8080)]
    pub(crate) internal_port: u16,
    /// Directory to write godwit.toml into
    #[arg(long, default_value = ".")]
    pub(crate) path: PathBuf,
    /// Overwrite an existing godwit.toml
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Args, Debug)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Config file [default: ./godwit.toml, else ./fly.toml]
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Image to deploy instead of `[build] image`
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// Override `[deploy] strategy`
    #[arg(long, value_parser = ["rolling", "immediate"])]
    pub(crate) strategy: Option<String>,
    /// How long to wait for each machine to be started and healthy (e.g. `2m`)
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) wait_timeout: Option<std::time::Duration>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum MachineCmd {
    /// Create and start a machine from an image
    Run(MachineRunArgs),
    /// List the app's machines
    #[command(alias = "ls")]
    List(ReadArgs),
    /// Show one machine
    Status(MachineReadArgs),
    /// Start stopped machines (resumes suspended ones)
    Start(MachineIdsArgs),
    /// Stop machines
    Stop(MachineStopArgs),
    /// Suspend started machines: freeze them, memory kept; `start` resumes them
    Suspend(MachineIdsArgs),
    /// Restart machines
    Restart(MachineStopArgs),
    /// Destroy machines
    #[command(alias = "rm")]
    Destroy(MachineDestroyArgs),
    /// Run a command in a machine
    Exec(MachineExecArgs),
}

#[derive(Args, Debug)]
pub(crate) struct MachineRunArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Image reference or path
    pub(crate) image: String,
    /// Command (replaces the image's CMD)
    #[arg(trailing_var_arg = true)]
    pub(crate) command: Vec<String>,
    /// Region
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// Machine name
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Environment variable, `NAME=VALUE` (repeatable)
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    pub(crate) env: Vec<String>,
    /// Port the machine listens on (adds a tcp service on it)
    #[arg(short, long)]
    pub(crate) port: Option<u16>,
    /// CPUs
    #[arg(long)]
    pub(crate) cpus: Option<u32>,
    /// Memory, e.g. `512mb` or `1gb`
    #[arg(long)]
    pub(crate) memory: Option<String>,
    /// Restart policy: no, always, on-failure
    #[arg(long, value_parser = ["no", "always", "on-failure"])]
    pub(crate) restart: Option<String>,
    /// Print the API's JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct MachineReadArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Machine id
    pub(crate) id: String,
    /// Print the API's JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct MachineIdsArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Machine ids
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct MachineStopArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Machine ids
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
    /// Signal to send (default: the machine's kill_signal)
    #[arg(short, long)]
    pub(crate) signal: Option<String>,
    /// Grace period before SIGKILL, e.g. `10s`
    #[arg(long)]
    pub(crate) timeout: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct MachineDestroyArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Machine ids
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
    /// Destroy even if running
    #[arg(short, long)]
    pub(crate) force: bool,
}

#[derive(Args, Debug)]
pub(crate) struct MachineExecArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Machine id
    pub(crate) id: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub(crate) command: Vec<String>,
    /// Seconds before the command is killed
    #[arg(long, default_value_t = 30)]
    pub(crate) timeout: u64,
    /// Print the API's JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Keep streaming new lines
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Only this machine
    #[arg(short, long)]
    pub(crate) machine: Option<String>,
    /// How many recent lines to show
    #[arg(short = 'n', long)]
    pub(crate) tail: Option<u32>,
    /// Print one JSON object per line
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ScaleCmd {
    /// Run exactly N machines of a process group in each region
    Count(ScaleCountArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ScaleCountArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Machines per region
    pub(crate) count: u32,
    /// Regions, comma-separated [default: the primary region]
    #[arg(long, value_delimiter = ',')]
    pub(crate) region: Vec<String>,
    /// Process group
    #[arg(long, default_value = crate::appconfig::DEFAULT_GROUP)]
    pub(crate) process_group: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SecretsCmd {
    /// Set secrets (`NAME=VALUE ...`) and update running machines
    Set(SecretsSetArgs),
    /// List secret names and digests (never values)
    #[command(alias = "ls")]
    List(ReadArgs),
    /// Remove secrets and update running machines
    Unset(SecretsUnsetArgs),
}

#[derive(Args, Debug)]
pub(crate) struct SecretsSetArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// `NAME=VALUE` pairs
    #[arg(required = true, value_name = "NAME=VALUE")]
    pub(crate) pairs: Vec<String>,
    /// Do not update machines now; they pick the secrets up on the next deploy
    #[arg(long)]
    pub(crate) stage: bool,
}

#[derive(Args, Debug)]
pub(crate) struct SecretsUnsetArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// Secret names
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
    /// Do not update machines now
    #[arg(long)]
    pub(crate) stage: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AppsCmd {
    /// Create an app
    Create(AppsCreateArgs),
    /// List apps
    #[command(alias = "ls")]
    List(AppsListArgs),
    /// Destroy an app and its machines
    Destroy(AppsDestroyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct AppsCreateArgs {
    /// App name
    pub(crate) name: String,
    /// Organisation slug
    #[arg(long)]
    pub(crate) org: Option<String>,
    /// Print the API's JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct AppsListArgs {
    /// Print the API's JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct AppsDestroyArgs {
    /// App name
    pub(crate) name: String,
    /// Also destroy its machines (otherwise an app with machines is refused)
    #[arg(short, long)]
    pub(crate) force: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCmd {
    /// Check a godwit.toml or fly.toml without deploying
    Validate(ConfigValidateArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ConfigValidateArgs {
    /// The file [default: ./godwit.toml, else ./fly.toml]
    pub(crate) file: Option<PathBuf>,
    /// Print the machine configs it would deploy as JSON
    #[arg(long)]
    pub(crate) json: bool,
}
