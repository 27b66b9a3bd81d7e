//! `godwit dev down`: destroy every machine through the API (so the agent cleans up), stop the
//! daemons, then sweep anything left on the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::{DataDirArg, Layout, http, procs, say, sweep};

/// `godwit dev down`.
#[derive(clap::Args, Debug)]
pub(super) struct DownArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Name prefix to sweep when the cluster's state file is gone [default: the one `up` used,
    /// else gw]
    #[arg(long)]
    name_prefix: Option<String>,
    /// Also delete the whole data directory (apps, tokens, images, logs)
    #[arg(long)]
    purge: bool,
}

/// How long a daemon gets to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);
/// How long the agent gets to destroy the machines.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) async fn down(args: DownArgs) -> anyhow::Result<()> {
    let layout = Layout::new(args.dir.data_dir)?;
    if layout.world_state_file.exists() {
        super::world::down(&layout).await?;
        if args.purge {
            purge(&layout)?;
            say(format_args!("deleted {}", layout.data_dir.display()));
        }
        return Ok(());
    }
    let state = layout.read_state()?;
    let name_prefix = args
        .name_prefix
        .or_else(|| state.as_ref().map(|s| s.name_prefix.clone()))
        .unwrap_or_else(|| "gw".to_owned());

    if let (Some(state), Some(env_file)) = (&state, layout.read_env()?)
        && http::is_healthy(&format!("{}/v1/healthz", state.api_url())).await
        && let Err(error) = destroy_all_machines(&env_file.api_url, &env_file.token).await
    {
        say(format_args!(
            "could not destroy every machine through the API ({error:#}); sweeping instead"
        ));
    }

    if let Some(state) = &state {
        for name in super::DAEMONS.iter().rev() {
            let Some(&pid) = state.pids.get(*name) else {
                continue;
            };
            match procs::terminate(pid, &layout.data_dir, GRACE).await {
                procs::Ended::Terminated => say(format_args!("stopped {name} (pid {pid})")),
                procs::Ended::Killed => say(format_args!(
                    "killed {name} (pid {pid}): it did not exit within {GRACE:?} of SIGTERM"
                )),
                procs::Ended::NotRunning => {}
            }
        }
    }

    let runc = super::host::find_program("runc").unwrap_or_else(|| PathBuf::from("runc"));
    let report = sweep::sweep(&layout, &name_prefix, &runc).await;
    for item in &report.removed {
        say(format_args!("removed {item}"));
    }
    for item in &report.failed {
        say(format_args!("failed to {item}"));
    }
    for file in [&layout.state_file, &layout.env_file] {
        remove_file_if_present(file)?;
    }
    if args.purge {
        purge(&layout)?;
        say(format_args!("deleted {}", layout.data_dir.display()));
    }
    anyhow::ensure!(
        report.failed.is_empty(),
        "the dev cluster is down but {} thing(s) could not be removed (listed above)",
        report.failed.len()
    );
    say("the dev cluster is down; nothing is left running");
    Ok(())
}

/// Destroys (force) every machine of every app of the token's org, then waits until the API
/// lists none.
async fn destroy_all_machines(api_url: &str, token: &str) -> anyhow::Result<()> {
    let client = http::client();
    let apps = http::get_json(&client, &format!("{api_url}/v1/apps"), token).await?;
    let app_names: Vec<String> = apps
        .get("apps")
        .and_then(|apps| apps.as_array())
        .into_iter()
        .flatten()
        .filter_map(|app| Some(app.get("name")?.as_str()?.to_owned()))
        .collect();
    for app in &app_names {
        let machines_url = format!("{api_url}/v1/apps/{app}/machines");
        for id in machine_ids(&client, &machines_url, token).await? {
            http::delete(&client, &format!("{machines_url}/{id}?force=true"), token).await?;
            say(format_args!("destroyed machine {id} of app {app}"));
        }
    }
    let deadline = tokio::time::Instant::now() + DESTROY_TIMEOUT;
    for app in &app_names {
        let machines_url = format!("{api_url}/v1/apps/{app}/machines");
        loop {
            let left = machine_ids(&client, &machines_url, token).await?;
            if left.is_empty() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "machines of app {app} still exist after {DESTROY_TIMEOUT:?}: {}",
                left.join(", ")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Ids of the machines the API lists for an app, except destroyed ones.
async fn machine_ids(
    client: &reqwest::Client,
    machines_url: &str,
    token: &str,
) -> anyhow::Result<Vec<String>> {
    let machines = http::get_json(client, machines_url, token).await?;
    Ok(machines
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m.get("state").and_then(|s| s.as_str()) != Some("destroyed"))
        .filter_map(|m| Some(m.get("id")?.as_str()?.to_owned()))
        .collect())
}

fn remove_file_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}

/// Deletes the data directory, refusing anything that does not look like one of ours.
fn purge(layout: &Layout) -> anyhow::Result<()> {
    let dir = &layout.data_dir;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    anyhow::ensure!(
        dir.parent().is_some() && Some(dir) != home.as_ref(),
        "refusing to delete {}: not a godwit data directory",
        dir.display()
    );
    if !dir.exists() {
        return Ok(());
    }
    anyhow::ensure!(
        layout.dev_dir.is_dir(),
        "refusing to delete {}: it has no dev/ directory, so it is not a dev cluster's",
        dir.display()
    );
    let mounts = godwit_testbed::cleanup::mounts_under(dir);
    anyhow::ensure!(
        mounts.is_empty(),
        "refusing to delete {}: still mounted under it: {}",
        dir.display(),
        mounts
            .iter()
            .map(|m| m.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::fs::remove_dir_all(dir).with_context(|| format!("delete {}", dir.display()))
}
