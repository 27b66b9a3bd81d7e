//! `godwit status` and `godwit logs`.

use godwit_types::api::LogLine;

use super::{Ctx, app_name, machine_table, machine_urls};
use crate::cli::{LogsArgs, ReadArgs};
use crate::output;

pub(super) async fn status(ctx: &Ctx, args: &ReadArgs) -> anyhow::Result<()> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    let info = client.get_app(&app).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "app {app} not found: create it with `godwit apps create {app}` or `godwit deploy`"
        )
    })?;
    let machines = client.list_machines(&app).await?;
    if args.json {
        return output::json(&serde_json::json!({ "app": info, "machines": machines }));
    }
    output::say(format!(
        "App {} (org {}, {})",
        info.name, info.organization.slug, info.status
    ));
    if machines.is_empty() {
        output::say("no machines: run `godwit deploy`");
        return Ok(());
    }
    machine_table(&machines);
    let urls: Vec<String> = machines.iter().flat_map(machine_urls).collect();
    if !urls.is_empty() {
        output::say(format!("URLs: {}", urls.join(" ")));
    }
    ctx.say_public_urls(&app, &machines);
    Ok(())
}

pub(super) async fn logs(ctx: &Ctx, args: &LogsArgs) -> anyhow::Result<()> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    let json = args.json;
    let tail = args.tail.or(Some(100));
    client
        .logs(&app, args.machine.as_deref(), args.follow, tail, |line| {
            print_line(&line, json)
        })
        .await?;
    Ok(())
}

fn print_line(line: &LogLine, json: bool) {
    if json {
        if let Ok(text) = serde_json::to_string(line) {
            output::say(text);
        }
        return;
    }
    output::say(format!(
        "{} {} [{}] {}: {}",
        output::timestamp(line.timestamp),
        line.machine_id,
        line.region,
        line.stream,
        line.message
    ));
}
