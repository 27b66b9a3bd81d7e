//! `godwit launch` (write a godwit.toml) and `godwit config validate`.

use std::fmt::Write as _;

use anyhow::Context;

use super::find_config;
use crate::appconfig::AppConfig;
use crate::cli::{ConfigValidateArgs, LaunchArgs};
use crate::output;

pub(super) fn launch(args: &LaunchArgs) -> anyhow::Result<()> {
    godwit_types::validate_app_name(&args.name)?;
    let path = args.path.join("godwit.toml");
    if path.exists() && !args.force {
        anyhow::bail!(
            "{} already exists: pass --force to overwrite it",
            path.display()
        );
    }
    let text = render(args);
    // The file we write must be one we can deploy.
    AppConfig::parse(&text, "godwit.toml", &args.path)
        .context("internal error: launch wrote an invalid config")?;
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    output::say(format!(
        "wrote {}; run `godwit deploy` to deploy it",
        path.display()
    ));
    Ok(())
}

fn render(args: &LaunchArgs) -> String {
    let mut text = String::new();
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let _ = writeln!(text, "# Godwit app config (fly.toml-compatible)");
    let _ = writeln!(text, "app = {}", quote(&args.name));
    let _ = writeln!(text, "primary_region = {}", quote(&args.region));
    let _ = writeln!(text, "\n[build]\nimage = {}", quote(&args.image));
    let _ = writeln!(
        text,
        "\n[http_service]\ninternal_port = {}",
        args.internal_port
    );
    text
}

pub(super) fn validate(args: &ConfigValidateArgs) -> anyhow::Result<()> {
    let path = match &args.file {
        Some(p) => p.clone(),
        None => {
            let cwd = std::env::current_dir().context("find the current directory")?;
            find_config(&cwd)
                .context("no godwit.toml or fly.toml in this directory: name a file")?
        }
    };
    let config = AppConfig::load(&path)?;
    for w in &config.warnings {
        output::warn(w);
    }
    let image = config
        .image
        .clone()
        .unwrap_or_else(|| "<--image>".to_owned());
    let configs = config.machine_configs(&image);
    for (group, mc) in &configs {
        mc.validate()
            .map_err(|e| anyhow::anyhow!("process group {group}: {e}"))?;
    }
    if args.json {
        let configs: serde_json::Map<String, serde_json::Value> = configs
            .into_iter()
            .map(|(g, c)| Ok((g, serde_json::to_value(c)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        return output::json(&serde_json::json!({
            "app": config.app,
            "primary_region": config.primary_region,
            "image": config.image,
            "warnings": config.warnings,
            "machine_configs": configs,
        }));
    }
    if config.image.is_none() {
        output::warn("no [build] image: `godwit deploy` will need --image");
    }
    output::say(format!(
        "{} is valid{}",
        path.display(),
        if config.warnings.is_empty() {
            String::new()
        } else {
            format!(" ({} warning(s))", config.warnings.len())
        }
    ));
    Ok(())
}
