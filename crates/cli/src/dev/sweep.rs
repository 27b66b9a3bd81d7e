//! Removes whatever a dev cluster left on the host after its daemons stopped: machines the
//! agent still had (through the runtime's own `destroy`), stray processes, mounts under the
//! data dir, network namespaces and veths with the cluster's name prefix, and its cgroups.

use std::path::{Path, PathBuf};

use godwit_runtime::{MachineRuntime, OciConfig, OciRuntime};
use godwit_testbed::cleanup;

use super::{Layout, procs};

/// What the sweep removed, and what it could not.
#[derive(Debug, Default)]
pub(super) struct SweepReport {
    pub(super) removed: Vec<String>,
    pub(super) failed: Vec<String>,
}

// === impl SweepReport ===

impl SweepReport {
    /// Adds what a [`cleanup`] step removed and could not.
    pub(super) fn absorb(&mut self, swept: cleanup::Swept) {
        self.removed.extend(swept.removed);
        self.failed.extend(
            swept
                .failed
                .iter()
                .map(|e| format!("remove {}: {}", e.what, e.source)),
        );
    }
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
    remove_cgroups(name_prefix, &mut report);
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
    let mut swept = cleanup::Swept::default();
    cleanup::unmount_under(dir, &mut swept);
    report.absorb(swept);
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

/// The cluster's cgroups, their processes killed first.
fn remove_cgroups(name_prefix: &str, report: &mut SweepReport) {
    let mut swept = cleanup::Swept::default();
    cleanup::remove_cgroups(name_prefix, &mut swept);
    report.absorb(swept);
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
    fn veth_names() {
        assert!(is_machine_veth("gw0123abcdh", "gw"));
        assert!(is_machine_veth("t1a2b0123abcdg", "t1a2b"));
        assert!(!is_machine_veth("gw0123abcdx", "gw"));
        assert!(!is_machine_veth("gw0123abch", "gw"));
        assert!(!is_machine_veth("eth0", "gw"));
        assert!(!is_machine_veth("gwz123abcdh", "gw"));
    }
}
