//! `godwit apps create|list|destroy` and `godwit secrets set|list|unset`.

use std::collections::BTreeMap;

use godwit_types::api::{CreateAppRequest, SetSecretsRequest};

use super::{Ctx, app_name, deploy, parse_pair};
use crate::cli::{AppsCmd, SecretsCmd};
use crate::output;

pub(super) async fn apps(ctx: &Ctx, cmd: AppsCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        AppsCmd::Create(args) => {
            godwit_types::validate_app_name(&args.name)?;
            let req = CreateAppRequest {
                app_name: args.name.clone(),
                org_slug: args.org,
                network: None,
            };
            let created = client.create_app(&req).await?;
            if args.json {
                return output::json(&created);
            }
            output::say(format!("created app {}", args.name));
        }
        AppsCmd::List(args) => {
            let list = client.list_apps().await?;
            if args.json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .apps
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.organization.slug.clone(),
                        a.status.clone(),
                        a.machine_count.to_string(),
                        output::timestamp(a.created_at),
                    ]
                })
                .collect();
            output::table(&["NAME", "ORG", "STATUS", "MACHINES", "CREATED"], &rows);
        }
        AppsCmd::Destroy(args) => {
            match client.delete_app(&args.name, args.force).await {
                Err(e) if e.status() == Some(409) && !args.force => {
                    anyhow::bail!("{e}: pass --force to destroy its machines too");
                }
                other => other?,
            };
            output::say(format!("destroyed app {}", args.name));
        }
    }
    Ok(())
}

pub(super) async fn secrets(ctx: &Ctx, cmd: SecretsCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        SecretsCmd::Set(args) => {
            let app = app_name(&args.app)?;
            let values: BTreeMap<String, String> = args
                .pairs
                .iter()
                .map(|p| parse_pair(p))
                .collect::<Result<_, _>>()?;
            let names: Vec<String> = values.keys().cloned().collect();
            let resp = client
                .set_secrets(&app, &SetSecretsRequest { values })
                .await?;
            output::say(format!(
                "set {} (secrets version {})",
                names.join(", "),
                resp.version
            ));
            after_change(&client, &app, args.stage).await
        }
        SecretsCmd::Unset(args) => {
            let app = app_name(&args.app)?;
            for name in &args.names {
                client.unset_secret(&app, name).await?;
            }
            output::say(format!("unset {}", args.names.join(", ")));
            after_change(&client, &app, args.stage).await
        }
        SecretsCmd::List(args) => {
            let app = app_name(&args.app)?;
            let resp = client.list_secrets(&app).await?;
            if args.json {
                return output::json(&resp);
            }
            let rows: Vec<Vec<String>> = resp
                .secrets
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.digest.clone(),
                        s.version.to_string(),
                        output::timestamp(s.created_at),
                    ]
                })
                .collect();
            output::table(&["NAME", "DIGEST", "VERSION", "CREATED"], &rows);
            Ok(())
        }
    }
}

async fn after_change(
    client: &crate::client::ApiClient,
    app: &str,
    stage: bool,
) -> anyhow::Result<()> {
    if stage {
        output::say("staged: machines pick the change up on the next deploy");
        return Ok(());
    }
    let n = deploy::refresh_machines(client, app).await?;
    output::say(format!("updated {n} running machine(s)"));
    Ok(())
}
