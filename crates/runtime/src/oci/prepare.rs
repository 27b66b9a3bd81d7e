//! `prepare`: directories, the overlay rootfs, /etc files, network, then config.json last.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::mount::MsFlags;

use super::{MachinePaths, OciRuntime, bundle};
use crate::sys::{io_err, mount_points, write_atomic};
use crate::{MachineSpec, RuntimeError};

impl OciRuntime {
    pub(super) async fn prepare_machine(&self, spec: &MachineSpec) -> Result<(), RuntimeError> {
        let (uid, gid) = validate(spec)?;
        let paths = self.paths(&spec.id);
        for dir in [
            &paths.dir,
            &paths.upper,
            &paths.work,
            &paths.rootfs,
            &paths.logs,
        ] {
            std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        mount_rootfs(spec, &paths)?;
        write_etc_files(&paths.rootfs, spec)
            .map_err(io_err("write /etc files in", &paths.rootfs))?;
        self.setup_network(spec, &paths).await?;
        let config = bundle::config_json(&bundle::BundleParams {
            spec,
            uid,
            gid,
            netns_path: &Path::new(super::net::NETNS_DIR).join(self.container_id(&spec.id)),
            cgroup_path: &self.cgroup_path(&spec.id),
            swap_accounting: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
                .exists(),
        });
        let bytes = serde_json::to_vec_pretty(&config).map_err(|source| RuntimeError::State {
            path: paths.config.clone(),
            source,
        })?;
        write_atomic(&paths.config, &bytes).map_err(io_err("write", &paths.config))?;
        tracing::info!(machine_id = %spec.id, "machine prepared");
        Ok(())
    }
}

/// Checks what runc and the kernel would reject later with worse messages; returns (uid, gid).
fn validate(spec: &MachineSpec) -> Result<(u32, u32), RuntimeError> {
    let bad = |reason: String| RuntimeError::InvalidSpec {
        id: spec.id.clone(),
        reason,
    };
    if spec.args.is_empty() {
        return Err(bad("args is empty".to_owned()));
    }
    if !spec.cwd.starts_with('/') {
        return Err(bad(format!("cwd {:?} is not absolute", spec.cwd)));
    }
    if spec.cpus == 0 || spec.memory_mb == 0 {
        return Err(bad("cpus and memory_mb must be positive".to_owned()));
    }
    for layer in &spec.layers {
        let text = layer.to_string_lossy();
        if !layer.is_absolute() || text.contains([':', ',', '\n']) {
            return Err(bad(format!(
                "layer {text} must be absolute without ':', ',' or newline"
            )));
        }
        if !layer.is_dir() {
            return Err(bad(format!("layer {text} is not a directory")));
        }
    }
    let net = &spec.network;
    if !(1..=31).contains(&net.prefix_len) || net.host_ip == net.guest_ip {
        return Err(bad(format!(
            "network {}/{} -> {} is not a point-to-point subnet",
            net.host_ip, net.prefix_len, net.guest_ip
        )));
    }
    let mask = u32::MAX << (32 - u32::from(net.prefix_len));
    if u32::from(net.host_ip) & mask != u32::from(net.guest_ip) & mask {
        return Err(bad(format!(
            "{} and {} are not in one /{} subnet",
            net.host_ip, net.guest_ip, net.prefix_len
        )));
    }
    parse_user(spec.user.as_deref()).ok_or_else(|| {
        bad(format!(
            "user {:?} is not numeric uid[:gid]",
            spec.user.as_deref().unwrap_or_default()
        ))
    })
}

fn parse_user(user: Option<&str>) -> Option<(u32, u32)> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Some((0, 0));
    };
    match user.split_once(':') {
        Some((uid, gid)) => Some((uid.parse().ok()?, gid.parse().ok()?)),
        None => {
            let uid = user.parse().ok()?;
            Some((uid, uid))
        }
    }
}

/// Mounts the overlay unless `rootfs` already is a mount point.
fn mount_rootfs(spec: &MachineSpec, paths: &MachinePaths) -> Result<(), RuntimeError> {
    let mounted = mount_points()
        .map_err(io_err("read mounts for", &paths.rootfs))?
        .contains(&paths.rootfs);
    if mounted {
        return Ok(());
    }
    let mut lowers: Vec<String> = spec
        .layers
        .iter()
        .rev()
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    if lowers.is_empty() {
        std::fs::create_dir_all(&paths.empty_lower)
            .map_err(io_err("create", &paths.empty_lower))?;
        lowers.push(paths.empty_lower.to_string_lossy().into_owned());
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        paths.upper.display(),
        paths.work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &paths.rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|errno| RuntimeError::Io {
        action: "mount overlay on",
        path: paths.rootfs.clone(),
        source: io::Error::from(errno),
    })
}

/// Writes /etc/hostname, /etc/hosts and /etc/resolv.conf through the merged rootfs (so they
/// land in the upper layer) where the image has none. Never follows the image's symlinks.
fn write_etc_files(rootfs: &Path, spec: &MachineSpec) -> io::Result<()> {
    let etc = rootfs.join("etc");
    match std::fs::symlink_metadata(&etc) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            tracing::warn!(machine_id = %spec.id, "image /etc is not a directory, not writing hosts files");
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().mode(0o755).create(&etc)?;
        }
        Err(e) => return Err(e),
    }
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
        spec.network.guest_ip, spec.hostname
    );
    let files = [
        ("hostname", format!("{}\n", spec.hostname)),
        ("hosts", hosts),
        ("resolv.conf", resolv_conf()),
    ];
    for (name, content) in files {
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(etc.join(name));
        match opened {
            Ok(mut file) => file.write_all(content.as_bytes())?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The host's non-loopback name servers (a loopback resolver is unreachable from the netns).
fn resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers: Vec<&str> = host
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .filter(|s| !s.starts_with("127.") && *s != "::1")
        .collect();
    let servers = if servers.is_empty() {
        vec!["1.1.1.1"]
    } else {
        servers
    };
    servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_user;

    #[test]
    fn users_parse_numeric_only() {
        assert_eq!(parse_user(None), Some((0, 0)));
        assert_eq!(parse_user(Some("1000")), Some((1000, 1000)));
        assert_eq!(parse_user(Some("1000:50")), Some((1000, 50)));
        assert_eq!(parse_user(Some("nobody")), None);
        assert_eq!(parse_user(Some("1:x")), None);
    }
}
