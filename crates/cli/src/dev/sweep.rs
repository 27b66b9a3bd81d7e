//! Removes whatever a dev cluster left on the host after its daemons stopped: machines the
//! agent still had (through the runtime's own `destroy`), stray processes, mounts under the
//! data dir, network namespaces and veths with the cluster's name prefix, and its cgroups.

use std::path::{Path, PathBuf};
use std::time::Duration;

use godwit_runtime::{MachineRuntime, OciConfig, OciRuntime};

use super::{Layout, procs};

/// What the sweep removed, and what it could not.
#[derive(Debug, Default)]
pub(super) struct SweepReport {
    pub(super) removed: Vec<String>,
    pub(super) failed: Vec<String>,
}

/// Sweeps everything of the cluster with `name_prefix` whose files live in `layout`.
pub(super) async fn sweep(layout: &Layout, name_prefix: &str, runc: &Path) -> SweepReport {
    let mut report = SweepReport::default();
    destroy_machines(layout, name_prefix, runc, &mut report).await;
    for (pid, line) in procs::mentioning(&layout.data_dir) {
        // Only our own daemons and shims, nats-server and runc: never, say, a user's `tail -f`
        // of a log file.
        if !procs::runs_one_of(pid, &["nats-server", "runc"]) {
            continue;
        }
        procs::kill_now(pid).await;
        report.removed.push(format!("process {pid} ({line})"));
    }
    unmount_under(&layout.data_dir, &mut report);
    remove_netns(name_prefix, &mut report).await;
    remove_veths(name_prefix, &mut report).await;
    remove_cgroups(name_prefix, &mut report).await;
    report
}

/// Destroys every machine the agent's runtime still has resources for.
async fn destroy_machines(
    layout: &Layout,
    name_prefix: &str,
    runc: &Path,
    report: &mut SweepReport,
) {
    if !layout.agent_dir.join("machines").exists() && !layout.agent_dir.join("runc").exists() {
        return;
    }
    let shim = std::env::current_exe()
        .map(|exe| vec![exe.display().to_string(), "shim".to_owned()])
        .unwrap_or_else(|_| vec!["godwit".to_owned(), "shim".to_owned()]);
    let mut cfg = OciConfig::under(&layout.agent_dir, shim);
    cfg.runc = runc.to_owned();
    cfg.name_prefix = name_prefix.to_owned();
    let runtime = match OciRuntime::new(cfg) {
        Ok(runtime) => runtime,
        Err(error) => {
            report
                .failed
                .push(format!("open the machine runtime: {error:#}"));
            return;
        }
    };
    let ids = match runtime.list().await {
        Ok(ids) => ids,
        Err(error) => {
            report.failed.push(format!("list machines: {error:#}"));
            return;
        }
    };
    for id in ids {
        match runtime.destroy(&id).await {
            Ok(()) => report
                .removed
                .push(format!("machine {id} (runc, mount, netns, cgroup)")),
            Err(error) => report
                .failed
                .push(format!("destroy machine {id}: {error:#}")),
        }
    }
}

/// Unmounts (lazily, deepest first) every mount point under `dir`.
fn unmount_under(dir: &Path, report: &mut SweepReport) {
    let mut points = mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        match nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => report.removed.push(format!("mount {}", point.display())),
            Err(error) => report
                .failed
                .push(format!("unmount {}: {error}", point.display())),
        }
    }
}

/// Mount points at or under `dir`, from /proc/self/mountinfo.
pub(super) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_path(point)))
        .filter(|point| point.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = raw.get(i + 1..i + 4)
            && let Ok(value) = u8::from_str_radix(octal, 8)
        {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Network namespaces named `<prefix>-…`.
pub(super) async fn netns_with_prefix(name_prefix: &str) -> Vec<String> {
    let wanted = format!("{name_prefix}-");
    let Some(text) = ip(&["netns", "list"]).await else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&wanted))
        .map(str::to_owned)
        .collect()
}

async fn remove_netns(name_prefix: &str, report: &mut SweepReport) {
    for name in netns_with_prefix(name_prefix).await {
        match ip(&["netns", "del", &name]).await {
            Some(_) => report.removed.push(format!("network namespace {name}")),
            None => report
                .failed
                .push(format!("delete network namespace {name}")),
        }
    }
}

/// Links named like the runtime's veths: `<prefix>` + 8 hex digits + `h` or `g`.
pub(super) async fn veths_with_prefix(name_prefix: &str) -> Vec<String> {
    let Some(text) = ip(&["-o", "link", "show"]).await else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|name| is_machine_veth(name, name_prefix))
        .map(str::to_owned)
        .collect()
}

fn is_machine_veth(name: &str, name_prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(name_prefix) else {
        return false;
    };
    let rest = rest.as_bytes();
    rest.len() == 9 && matches!(rest[8], b'h' | b'g') && rest[..8].iter().all(u8::is_ascii_hexdigit)
}

async fn remove_veths(name_prefix: &str, report: &mut SweepReport) {
    for name in veths_with_prefix(name_prefix).await {
        match ip(&["link", "del", &name]).await {
            Some(_) => report.removed.push(format!("veth {name}")),
            // Deleting one end of a pair removes the other: it may be gone already.
            None if !veths_with_prefix(name_prefix).await.contains(&name) => {}
            None => report.failed.push(format!("delete veth {name}")),
        }
    }
}

/// The cluster's cgroup parents: `<hierarchy>/<prefix>` under every mounted v1 controller, the
/// v2 `unified` tree and a pure v2 root.
pub(super) fn cgroup_dirs(name_prefix: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(name_prefix)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            dirs.push(entry.path().join(name_prefix));
        }
    }
    // Some controllers are symlinked aliases (`cpu` → `cpu,cpuacct`): keep each real dir once.
    let mut dirs: Vec<PathBuf> = dirs
        .into_iter()
        .filter_map(|dir| std::fs::canonicalize(dir).ok())
        .filter(|dir| dir.is_dir())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

async fn remove_cgroups(name_prefix: &str, report: &mut SweepReport) {
    for dir in cgroup_dirs(name_prefix) {
        match remove_cgroup_tree(&dir).await {
            Ok(()) => report.removed.push(format!("cgroup {}", dir.display())),
            Err(error) => report
                .failed
                .push(format!("remove cgroup {}: {error}", dir.display())),
        }
    }
}

/// Kills the processes of a cgroup tree, then removes its directories, children first.
async fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let children: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    for child in children {
        Box::pin(remove_cgroup_tree(&child)).await?;
    }
    let procs_file = dir.join("cgroup.procs");
    for pid in std::fs::read_to_string(&procs_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse::<u32>().ok())
    {
        procs::kill_now(pid).await;
    }
    // A cgroup whose last process just died can stay busy for a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs `ip args`; its stdout on success.
async fn ip(args: &[&str]) -> Option<String> {
    let program = super::host::find_program("ip").unwrap_or_else(|| PathBuf::from("ip"));
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/end\"), r"/end\");
    }

    #[test]
    fn veth_names() {
        assert!(is_machine_veth("gw0123abcdh", "gw"));
        assert!(is_machine_veth("t1a2b0123abcdg", "t1a2b"));
        assert!(!is_machine_veth("gw0123abcdx", "gw"));
        assert!(!is_machine_veth("gw0123abch", "gw"));
        assert!(!is_machine_veth("eth0", "gw"));
        assert!(!is_machine_veth("gwz123abcdh", "gw"));
    }
}
