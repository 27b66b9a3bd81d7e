//! `godwit deploy`: make the app's machines run what godwit.toml says.

use anyhow::Context;
use godwit_types::api::{CreateAppRequest, CreateMachineRequest, UpdateMachineRequest};
use godwit_types::{Machine, MachineConfig};

use super::watch::{self, Goal, Watched};
use super::{Ctx, find_config, group_of, machine_urls};
use crate::appconfig::{AppConfig, Strategy, resolve_image};
use crate::cli::DeployArgs;
use crate::client::ApiClient;
use crate::output::{self, Progress};

pub(super) async fn deploy(ctx: &Ctx, args: DeployArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("find the current directory")?;
    let path = match &args.config {
        Some(p) => p.clone(),
        None => find_config(&cwd).context(
            "no godwit.toml or fly.toml in this directory: run `godwit launch` or pass --config",
        )?,
    };
    let config = AppConfig::load(&path)?;
    for w in &config.warnings {
        output::warn(w);
    }
    let app = args
        .app
        .app
        .clone()
        .or_else(|| config.app.clone())
        .with_context(|| format!("{} has no `app`: add one or pass --app", path.display()))?;
    let image = match &args.image {
        Some(image) => resolve_image(image, &cwd),
        None => config.image.clone().with_context(|| {
            format!(
                "no image: set [build] image in {} or pass --image",
                path.display()
            )
        })?,
    };
    let strategy = match args.strategy.as_deref() {
        Some("immediate") => Strategy::Immediate,
        Some(_) => Strategy::Rolling,
        None => config.strategy,
    };
    let goal = Goal {
        checks: strategy == Strategy::Rolling,
        timeout: args.wait_timeout.unwrap_or(config.wait_timeout),
    };
    let client = ctx.client()?;
    let progress = Progress::new();

    if client.get_app(&app).await?.is_none() {
        progress.step(format!("creating app {app}"));
        let req = CreateAppRequest {
            app_name: app.clone(),
            org_slug: None,
            network: None,
        };
        client
            .create_app(&req)
            .await
            .with_context(|| format!("create app {app}"))?;
        progress.done(format!("created app {app}"));
    }

    let existing = client.list_machines(&app).await?;
    let plan = Plan {
        client: &client,
        app: &app,
        goal,
        progress: &progress,
    };
    let mut deployed = Vec::new();
    for (group, machine_config) in config.machine_configs(&image) {
        let mine: Vec<&Machine> = existing
            .iter()
            .filter(|m| group_of(m) == Some(group.as_str()))
            .collect();
        let done = if mine.is_empty() {
            plan.create(&group, &machine_config, config.primary_region.as_deref())
                .await?
        } else {
            plan.update(&group, &machine_config, &mine, strategy)
                .await?
        };
        deployed.extend(done);
    }
    let groups = config.process_groups();
    for m in &existing {
        if let Some(group) = group_of(m)
            && !groups.iter().any(|g| g == group)
        {
            output::warn(format!(
                "machine {} belongs to process group \"{group}\", which the config no longer has: left as is",
                m.id,
            ));
        }
    }
    progress.finish();

    output::say(format!(
        "deployed {app}: {} machine(s) running {image}",
        deployed.len()
    ));
    for m in &deployed {
        let urls = machine_urls(m);
        let urls = if urls.is_empty() {
            "(no services)".to_owned()
        } else {
            urls.join(" ")
        };
        output::say(format!("  {} {} {} {urls}", m.id, m.region, m.state));
    }
    ctx.say_public_urls(&app, &deployed);
    Ok(())
}

/// One deploy's shared state.
struct Plan<'a> {
    client: &'a ApiClient,
    app: &'a str,
    goal: Goal,
    progress: &'a Progress,
}

impl Plan<'_> {
    /// First deploy of a group: one machine in the primary region.
    async fn create(
        &self,
        group: &str,
        config: &MachineConfig,
        region: Option<&str>,
    ) -> anyhow::Result<Vec<Machine>> {
        self.progress
            .step(format!("creating a machine for process group {group}"));
        let req = CreateMachineRequest {
            config: config.clone(),
            name: None,
            region: region.map(str::to_owned),
            lease_ttl: None,
            skip_launch: false,
        };
        let created = self
            .client
            .create_machine(self.app, &req)
            .await
            .with_context(|| format!("create a machine for process group {group}"))?;
        let watched = Watched {
            id: created.id.clone(),
            last_event_id: 0,
            instance_id: None,
        };
        let ready =
            watch::until_ready(self.client, self.app, &watched, self.goal, self.progress).await?;
        self.progress.done(format!(
            "machine {} ({group}) is {} in {}",
            ready.id, ready.state, ready.region
        ));
        Ok(vec![ready])
    }

    /// Later deploys: every machine of the group gets the new config.
    async fn update(
        &self,
        group: &str,
        config: &MachineConfig,
        machines: &[&Machine],
        strategy: Strategy,
    ) -> anyhow::Result<Vec<Machine>> {
        let mut watched = Vec::new();
        let mut ready = Vec::new();
        for (idx, m) in machines.iter().enumerate() {
            self.progress.step(format!(
                "updating machine {} ({group}, {}/{})",
                m.id,
                idx + 1,
                machines.len()
            ));
            let w = self.update_one(m, config).await?;
            match strategy {
                Strategy::Rolling => {
                    let r = watch::until_ready(self.client, self.app, &w, self.goal, self.progress)
                        .await?;
                    self.progress.done(format!(
                        "machine {} ({group}) updated to version {}",
                        r.id, r.version
                    ));
                    ready.push(r);
                }
                Strategy::Immediate => watched.push(w),
            }
        }
        for w in &watched {
            let r = watch::until_ready(self.client, self.app, w, self.goal, self.progress).await?;
            self.progress.done(format!(
                "machine {} ({group}) updated to version {}",
                r.id, r.version
            ));
            ready.push(r);
        }
        Ok(ready)
    }

    async fn update_one(
        &self,
        machine: &Machine,
        config: &MachineConfig,
    ) -> anyhow::Result<Watched> {
        let last_event_id = watch::last_event_id(self.client, self.app, &machine.id).await;
        let mut config = config.clone();
        // Keep metadata set by others (the group key comes from the new config).
        for (k, v) in &machine.config.metadata {
            config
                .metadata
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        let req = UpdateMachineRequest {
            config,
            current_version: None,
            skip_launch: false,
            region: None,
            name: None,
        };
        let updated = self
            .client
            .update_machine(self.app, &machine.id, &req)
            .await
            .with_context(|| format!("update machine {}", machine.id))?;
        Ok(Watched {
            id: machine.id.clone(),
            last_event_id,
            instance_id: Some(updated.instance_id),
        })
    }
}

/// Re-applies each started machine's own config so it restarts with the app's current
/// secrets, one at a time, waiting for each to start again.
pub(super) async fn refresh_machines(client: &ApiClient, app: &str) -> anyhow::Result<usize> {
    let progress = Progress::new();
    let goal = Goal {
        checks: false,
        timeout: std::time::Duration::from_secs(300),
    };
    let plan = Plan {
        client,
        app,
        goal,
        progress: &progress,
    };
    let machines = client.list_machines(app).await?;
    let mut n = 0;
    for m in machines
        .iter()
        .filter(|m| m.state == godwit_types::MachineState::Started)
    {
        progress.step(format!("updating machine {}", m.id));
        let w = plan.update_one(m, &m.config).await?;
        watch::until_ready(client, app, &w, goal, &progress).await?;
        progress.done(format!("machine {} restarted with the new secrets", m.id));
        n += 1;
    }
    Ok(n)
}
