//! Turning a machine row and its image into the runtime's [`MachineSpec`].

use std::collections::BTreeMap;

use godwit_image::ImageConfig;
use godwit_runtime::{MachineSpec, NetworkSpec};

use crate::db::MachineRow;
use crate::ipam::LINK_PREFIX_LEN;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The machine's argv: `init.exec`, else entrypoint + cmd where an overridden entrypoint drops
/// the image's cmd unless `init.cmd` is given (OCI/Docker rules).
pub(crate) fn argv(init: &godwit_types::InitConfig, image: &ImageConfig) -> Vec<String> {
    if !init.exec.is_empty() {
        return init.exec.clone();
    }
    let (entrypoint, image_cmd) = if init.entrypoint.is_empty() {
        (image.entrypoint.clone(), image.cmd.clone())
    } else {
        (init.entrypoint.clone(), Vec::new())
    };
    let cmd = if init.cmd.is_empty() {
        image_cmd
    } else {
        init.cmd.clone()
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// Image env, then config env, then secrets, then the platform's variables.
pub(crate) fn env(row: &MachineRow, image: &ImageConfig, host_id: &str) -> Vec<String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
    for entry in &image.env {
        if let Some((key, value)) = entry.split_once('=') {
            vars.insert(key.to_owned(), value.to_owned());
        }
    }
    vars.extend(row.config.env.clone());
    vars.extend(row.secrets.clone());
    let primary_region = row
        .config
        .metadata
        .get("primary_region")
        .or_else(|| row.metadata.get("primary_region"))
        .cloned()
        .unwrap_or_else(|| row.region.clone());
    let platform = [
        ("MACHINE_ID", row.id.clone()),
        ("APP_NAME", row.app.clone()),
        ("REGION", row.region.clone()),
        ("PRIVATE_IP", row.private_ip.to_string()),
        ("MACHINE_VERSION", row.version.to_string()),
        ("IMAGE_REF", row.config.image.clone()),
        ("HOST_ID", host_id.to_owned()),
    ];
    for (key, value) in platform {
        vars.insert(format!("FLY_{key}"), value.clone());
        vars.insert(format!("GODWIT_{key}"), value);
    }
    vars.insert("PRIMARY_REGION".to_owned(), primary_region.clone());
    vars.insert("GODWIT_PRIMARY_REGION".to_owned(), primary_region);
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The full runtime spec; `None` if the machine has no resolved image yet.
pub(crate) fn machine_spec(row: &MachineRow, host_id: &str) -> Option<MachineSpec> {
    let image = row.image.as_ref()?;
    let cwd = image
        .config
        .working_dir
        .clone()
        .filter(|d| d.starts_with('/'))
        .unwrap_or_else(|| "/".to_owned());
    let user = image
        .config
        .user
        .clone()
        .filter(|u| !u.is_empty() && u.split(':').all(|p| p.parse::<u32>().is_ok()));
    Some(MachineSpec {
        id: row.id.clone(),
        layers: image.layers.clone(),
        args: argv(&row.config.init, &image.config),
        env: env(row, &image.config, host_id),
        cwd,
        user,
        hostname: row.id.clone(),
        cpus: row.config.guest.cpus,
        memory_mb: row.config.guest.memory_mb,
        network: NetworkSpec {
            host_ip: row.host_ip,
            guest_ip: row.private_ip,
            prefix_len: LINK_PREFIX_LEN,
        },
    })
}

#[cfg(test)]
mod tests {
    use godwit_types::InitConfig;

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn argv_follows_oci_rules() {
        let image = ImageConfig {
            entrypoint: strings(&["/bin/app"]),
            cmd: strings(&["serve"]),
            ..ImageConfig::default()
        };
        let init = |exec: &[&str], ep: &[&str], cmd: &[&str]| InitConfig {
            exec: strings(exec),
            entrypoint: strings(ep),
            cmd: strings(cmd),
        };
        assert_eq!(
            argv(&init(&[], &[], &[]), &image),
            strings(&["/bin/app", "serve"])
        );
        assert_eq!(
            argv(&init(&[], &[], &["x"]), &image),
            strings(&["/bin/app", "x"])
        );
        assert_eq!(argv(&init(&[], &["/sh"], &[]), &image), strings(&["/sh"]));
        assert_eq!(
            argv(&init(&[], &["/sh"], &["-c", "y"]), &image),
            strings(&["/sh", "-c", "y"])
        );
        assert_eq!(
            argv(&init(&["/e", "1"], &["/sh"], &["z"]), &image),
            strings(&["/e", "1"])
        );
    }
}
