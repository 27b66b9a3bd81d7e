//! Pause and resume: `runc pause` / `runc resume`, which freeze and thaw every process of the
//! container through its freezer cgroup. Memory, rootfs, network namespace and veth stay as
//! they are, so a resume takes milliseconds.

use std::path::{Path, PathBuf};

use super::OciRuntime;
use crate::{RuntimeError, Status};

impl OciRuntime {
    pub(super) async fn pause_machine(&self, id: &str) -> Result<(), RuntimeError> {
        match self.machine_status(id).await? {
            Status::Paused { .. } => return Ok(()),
            Status::Running { .. } => {}
            Status::Absent | Status::Prepared | Status::Exited(_) => {
                return Err(RuntimeError::NotRunning { id: id.to_owned() });
            }
        }
        let cid = self.container_id(id);
        if let Err(error) = self.runc(["pause", cid.as_str()]).await {
            // Lost a race with another pause: that is what was asked for.
            if self.is_frozen(id) {
                return Ok(());
            }
            return Err(error);
        }
        tracing::info!(machine_id = %id, "machine paused");
        Ok(())
    }

    pub(super) async fn resume_machine(&self, id: &str) -> Result<(), RuntimeError> {
        match self.machine_status(id).await? {
            Status::Running { .. } => return Ok(()),
            Status::Paused { .. } => {}
            Status::Absent | Status::Prepared | Status::Exited(_) => {
                return Err(RuntimeError::NotRunning { id: id.to_owned() });
            }
        }
        self.thaw(id).await?;
        tracing::info!(machine_id = %id, "machine resumed");
        Ok(())
    }

    /// Thaws the container if its cgroup is frozen, whatever state runc records (a frozen
    /// process cannot act on a signal, SIGKILL included on some kernels, until thawed).
    pub(super) async fn thaw(&self, id: &str) -> Result<(), RuntimeError> {
        if !self.is_frozen(id) {
            return Ok(());
        }
        let cid = self.container_id(id);
        match self.runc(["resume", cid.as_str()]).await {
            Ok(_) => Ok(()),
            Err(_) if !self.is_frozen(id) => Ok(()),
            Err(runc_error) => {
                // runc lost the container (e.g. its state dir is gone): thaw the cgroup itself.
                let Some((file, thawed)) = self.freezer_file(id) else {
                    return Err(runc_error);
                };
                tracing::warn!(machine_id = %id, error = %runc_error, "runc resume failed; thawing the cgroup directly");
                std::fs::write(&file, thawed).map_err(crate::sys::io_err("write", &file))
            }
        }
    }

    /// Whether the machine's freezer cgroup is frozen (or freezing).
    pub(super) fn is_frozen(&self, id: &str) -> bool {
        let Some((file, _)) = self.freezer_file(id) else {
            return false;
        };
        std::fs::read_to_string(file).is_ok_and(|state| {
            let state = state.trim();
            state == "FROZEN" || state == "FREEZING" || state == "1"
        })
    }

    /// The file holding the freezer state and what to write there to thaw: cgroup v1
    /// `freezer.state` (`THAWED`), else cgroup v2 `cgroup.freeze` (`0`).
    fn freezer_file(&self, id: &str) -> Option<(PathBuf, &'static str)> {
        let relative = self.cgroup_path(id);
        let relative = relative.trim_start_matches('/');
        let v1 = Path::new("/sys/fs/cgroup/freezer")
            .join(relative)
            .join("freezer.state");
        if v1.exists() {
            return Some((v1, "THAWED"));
        }
        let v2 = Path::new("/sys/fs/cgroup")
            .join(relative)
            .join("cgroup.freeze");
        v2.exists().then_some((v2, "0"))
    }
}
