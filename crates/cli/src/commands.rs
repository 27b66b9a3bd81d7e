//! The user-facing commands (everything but the daemons and `dev`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use godwit_types::Machine;

use crate::appconfig::{AppConfig, FILE_NAMES};
use crate::cli::{AppArg, Command, GlobalArgs};
use crate::client::{ApiClient, Endpoint};
use crate::output;

mod apps;
mod certs;
mod deploy;
mod launch;
mod machine;
mod scale;
mod status;
mod watch;

pub(crate) use certs::CertsCmd;

/// Runs a command that talks to the API (or reads a file).
pub(crate) async fn run(global: GlobalArgs, cmd: Command) -> anyhow::Result<()> {
    let ctx = Ctx { global };
    match cmd {
        Command::Launch(args) => launch::launch(&args),
        Command::Config(crate::cli::ConfigCmd::Validate(args)) => launch::validate(&args),
        Command::Deploy(args) => deploy::deploy(&ctx, args).await,
        Command::Status(args) => status::status(&ctx, &args).await,
        Command::Logs(args) => status::logs(&ctx, &args).await,
        Command::Machine(cmd) => machine::run(&ctx, cmd).await,
        Command::Scale(crate::cli::ScaleCmd::Count(args)) => scale::count(&ctx, &args).await,
        Command::Secrets(cmd) => apps::secrets(&ctx, cmd).await,
        Command::Apps(cmd) => apps::apps(&ctx, cmd).await,
        Command::Certs(cmd) => certs::run(&ctx, cmd).await,
        Command::Image(_)
        | Command::Dev(_)
        | Command::Api(_)
        | Command::Agent(_)
        | Command::Proxy(_) => {
            anyhow::bail!("internal error: daemon command dispatched as a client command")
        }
    }
}

/// What every client command needs.
#[derive(Debug)]
struct Ctx {
    global: GlobalArgs,
}

impl Ctx {
    fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(&self.endpoint()?))
    }

    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        Ok(Endpoint::resolve(
            self.global.api_url.clone(),
            self.global.token.clone(),
            &crate::client::data_dir(),
        )?)
    }

    /// Prints the app's public URL through the dev cluster's proxy, with a curl line, when the
    /// API is the dev cluster's.
    fn say_public_urls(&self, app: &str, machines: &[Machine]) {
        let Ok(endpoint) = self.endpoint() else {
            return;
        };
        let data_dir = crate::client::data_dir();
        for line in crate::dev::public_url_lines(&data_dir, &endpoint.api_url, app, machines) {
            output::say(line);
        }
    }
}

/// The config file in this directory, if any: godwit.toml first, then fly.toml.
fn find_config(dir: &Path) -> Option<PathBuf> {
    FILE_NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// `--app`, else `app` from the config file in this directory.
fn app_name(arg: &AppArg) -> anyhow::Result<String> {
    if let Some(app) = &arg.app {
        return Ok(app.clone());
    }
    let dir = std::env::current_dir().context("find the current directory")?;
    let Some(path) = find_config(&dir) else {
        anyhow::bail!("no app given: pass --app NAME or run in a directory with a godwit.toml");
    };
    let config = AppConfig::load(&path)?;
    config
        .app
        .with_context(|| format!("{} has no `app`: pass --app NAME", path.display()))
}

/// The process group a machine belongs to; `None` for machines that `deploy` did not make
/// (e.g. `machine run`), which deploys leave alone.
fn group_of(machine: &Machine) -> Option<&str> {
    machine
        .config
        .metadata
        .get("fly_process_group")
        .map(String::as_str)
}

/// `http://<private_ip>:<port>` for each service of the machine.
fn machine_urls(machine: &Machine) -> Vec<String> {
    if machine.private_ip.is_empty() {
        return Vec::new();
    }
    machine
        .config
        .services
        .iter()
        .map(|s| format!("http://{}:{}", machine.private_ip, s.internal_port))
        .collect()
}

/// "2/2 passing", or "-" without checks.
fn checks_summary(machine: &Machine) -> String {
    if machine.checks.is_empty() {
        return "-".into();
    }
    let passing = machine
        .checks
        .iter()
        .filter(|c| c.status == godwit_types::CheckStatus::Passing)
        .count();
    format!("{passing}/{} passing", machine.checks.len())
}

/// Machine rows for `status` and `machine list`.
fn machine_table(machines: &[Machine]) {
    let rows: Vec<Vec<String>> = machines
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.name.clone(),
                group_of(m).unwrap_or("-").to_owned(),
                m.region.clone(),
                m.state.to_string(),
                checks_summary(m),
                m.version.to_string(),
                m.private_ip.clone(),
                m.config.image.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "NAME",
            "GROUP",
            "REGION",
            "STATE",
            "CHECKS",
            "VERSION",
            "PRIVATE IP",
            "IMAGE",
        ],
        &rows,
    );
}

/// Parses `NAME=VALUE`.
pub(crate) fn parse_pair(pair: &str) -> anyhow::Result<(String, String)> {
    match pair.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => anyhow::bail!("{pair:?} is not NAME=VALUE"),
    }
}
