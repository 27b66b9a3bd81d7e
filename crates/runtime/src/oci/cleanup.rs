//! `destroy` and `list`: everything a machine may have left on the host.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::{OciRuntime, is_valid_id, net};
use crate::RuntimeError;
use crate::sys::{io_err, mount_points, pid_alive_with_arg, read_pid, wait_pid_exit};

/// Where cgroup v1 controllers (and the v2 `unified` tree) are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long destroy waits for the shim to record the exit after SIGKILL.
const SHIM_EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long destroy retries removing a cgroup whose last processes are still exiting.
const CGROUP_RMDIR_TIMEOUT: Duration = Duration::from_secs(5);

impl OciRuntime {
    pub(super) async fn destroy_machine(&self, id: &str) -> Result<(), RuntimeError> {
        let paths = self.paths(id);
        let cid = self.container_id(id);
        let runc_state = self.cfg.runc_root.join(&cid);
        if let Err(error) = self.thaw(id).await {
            tracing::warn!(machine_id = %id, %error, "failed to thaw the machine before killing it");
        }
        if runc_state.exists() {
            // Fails if the container already stopped; the delete below still runs.
            let _ = self.runc(["kill", cid.as_str(), "KILL"]).await;
        }
        if let Some(shim) = read_pid(&paths.shim_pid)
            && pid_alive_with_arg(shim, &paths.dir)
        {
            let exited = tokio::time::timeout(SHIM_EXIT_TIMEOUT, wait_pid_exit(shim)).await;
            if !matches!(exited, Ok(Ok(()))) && pid_alive_with_arg(shim, &paths.dir) {
                tracing::warn!(machine_id = %id, shim, "shim did not exit, killing it");
                if let Ok(pid) = i32::try_from(shim) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        if runc_state.exists()
            && let Err(error) = self.runc(["delete", "--force", cid.as_str()]).await
        {
            // Garbage state (e.g. a crash mid-create): its dir is removed below. Live
            // processes would keep the cgroup busy, which fails the destroy further down.
            tracing::warn!(machine_id = %id, %error, "runc delete failed");
        }
        unmount_all_under(&paths.dir)?;
        self.teardown_network(id).await?;
        self.remove_cgroups(id).await?;
        remove_dir_all_if_exists(&paths.dir)?;
        remove_dir_all_if_exists(&runc_state)?;
        tracing::info!(machine_id = %id, "machine destroyed");
        Ok(())
    }

    /// Removes `<prefix>/<id>` under every cgroup controller, then the `<prefix>` parent if
    /// it became empty.
    async fn remove_cgroups(&self, id: &str) -> Result<(), RuntimeError> {
        for controller in cgroup_controllers() {
            let parent = controller.join(&self.cfg.name_prefix);
            let dir = parent.join(id);
            let deadline = Instant::now() + CGROUP_RMDIR_TIMEOUT;
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // EBUSY while the last processes of the cgroup are exiting.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(io_err("remove cgroup", &dir)(e)),
                }
            }
            // Another machine may still use the parent: then this fails, which is fine.
            let _ = std::fs::remove_dir(&parent);
        }
        Ok(())
    }

    pub(super) fn list_machines(&self) -> Result<Vec<String>, RuntimeError> {
        let mut ids = BTreeSet::new();
        let prefix = format!("{}-", self.cfg.name_prefix);
        for name in dir_names(&self.cfg.root)? {
            if is_valid_id(&name) {
                ids.insert(name);
            }
        }
        for dir in [Path::new(net::NETNS_DIR), self.cfg.runc_root.as_path()] {
            for name in dir_names(dir)? {
                if let Some(id) = name.strip_prefix(&prefix)
                    && is_valid_id(id)
                {
                    ids.insert(id.to_owned());
                }
            }
        }
        for controller in cgroup_controllers() {
            for name in dir_names(&controller.join(&self.cfg.name_prefix))? {
                if is_valid_id(&name) {
                    ids.insert(name);
                }
            }
        }
        Ok(ids.into_iter().collect())
    }
}

/// Detaches every mount at or under `dir` (deepest first) and checks none is left, so that
/// removing `dir` can never reach into an image layer.
fn unmount_all_under(dir: &Path) -> Result<(), RuntimeError> {
    for _ in 0..16 {
        let mut mounts: Vec<PathBuf> = mount_points()
            .map_err(io_err("read mounts for", dir))?
            .into_iter()
            .filter(|m| m.starts_with(dir))
            .collect();
        if mounts.is_empty() {
            return Ok(());
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for mount in mounts {
            match umount2(&mount, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(errno) => return Err(io_err("unmount", &mount)(io::Error::from(errno))),
            }
        }
    }
    Err(io_err("unmount everything under", dir)(io::Error::other(
        "mounts keep reappearing",
    )))
}

fn remove_dir_all_if_exists(dir: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", dir)(e)),
        _ => Ok(()),
    }
}

/// Every hierarchy mounted under /sys/fs/cgroup (symlinked aliases included).
fn cgroup_controllers() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Names in `dir`; empty if `dir` does not exist.
fn dir_names(dir: &Path) -> Result<Vec<String>, RuntimeError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("list", dir)(e)),
    }
}
