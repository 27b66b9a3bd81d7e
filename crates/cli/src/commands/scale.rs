//! `godwit scale count N [--region a,b]`.

use std::time::Duration;

use anyhow::Context;
use godwit_types::Machine;
use godwit_types::api::CreateMachineRequest;

use super::watch::{self, Goal, Watched};
use super::{Ctx, app_name, find_config, group_of};
use crate::appconfig::AppConfig;
use crate::cli::ScaleCountArgs;
use crate::output::{self, Progress};

pub(super) async fn count(ctx: &Ctx, args: &ScaleCountArgs) -> anyhow::Result<()> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    let machines = client.list_machines(&app).await?;
    let group = args.process_group.as_str();
    let mine: Vec<&Machine> = machines
        .iter()
        .filter(|m| group_of(m) == Some(group))
        .collect();
    let regions = if args.region.is_empty() {
        vec![default_region(&mine)?]
    } else {
        args.region.clone()
    };
    let template = mine.first().map(|m| m.config.clone());
    let progress = Progress::new();
    let goal = Goal {
        checks: false,
        timeout: Duration::from_secs(300),
    };
    let want = usize::try_from(args.count).unwrap_or(usize::MAX);
    for region in &regions {
        let here: Vec<&&Machine> = mine.iter().filter(|m| &m.region == region).collect();
        if here.len() < want {
            let config = template.clone().with_context(|| {
                format!("app {app} has no machine in process group {group} to clone: run `godwit deploy` first")
            })?;
            for _ in here.len()..want {
                progress.step(format!("creating a machine in {region}"));
                let req = CreateMachineRequest {
                    config: config.clone(),
                    name: None,
                    region: Some(region.clone()),
                    lease_ttl: None,
                    skip_launch: false,
                };
                let m = client
                    .create_machine(&app, &req)
                    .await
                    .with_context(|| format!("create a machine in {region}"))?;
                let watched = Watched {
                    id: m.id.clone(),
                    last_event_id: 0,
                    instance_id: None,
                };
                let m = watch::until_ready(&client, &app, &watched, goal, &progress).await?;
                progress.done(format!("machine {} is {} in {region}", m.id, m.state));
            }
        } else {
            // Newest first: the oldest machines stay.
            for m in here.iter().rev().take(here.len() - want) {
                progress.step(format!("destroying machine {} in {region}", m.id));
                client
                    .destroy_machine(&app, &m.id, true)
                    .await
                    .with_context(|| format!("destroy machine {}", m.id))?;
                progress.done(format!("destroyed machine {} in {region}", m.id));
            }
        }
    }
    progress.finish();
    output::say(format!(
        "process group {group} of {app} runs {} machine(s) in {}",
        args.count,
        regions.join(", ")
    ));
    Ok(())
}

/// The config's primary region, else the region of the group's first machine.
fn default_region(machines: &[&Machine]) -> anyhow::Result<String> {
    let from_config = std::env::current_dir()
        .ok()
        .and_then(|dir| find_config(&dir))
        .and_then(|path| AppConfig::load(&path).ok())
        .and_then(|c| c.primary_region);
    from_config
        .or_else(|| machines.first().map(|m| m.region.clone()))
        .context("no region: pass --region")
}
