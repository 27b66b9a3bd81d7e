//! Named network namespaces (`/run/netns/<name>`, as `ip netns` makes them): running `ip`,
//! deleting a namespace with every process inside it, entering one from a fresh thread, and
//! sweeping debris left by a killed run.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum IpError {
    #[error("failed to run `ip {args}`")]
    Spawn {
        args: String,
        #[source]
        source: io::Error,
    },
    #[error("`ip {args}` failed: {stderr}")]
    Status { args: String, stderr: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("failed to list {NETNS_DIR}")]
    List(#[source] io::Error),
    #[error("failed to delete netns {name}")]
    Delete {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Deletes every netns called `<prefix>-*` and kills the processes inside it: the debris of an
/// earlier run that was killed before it could clean up. Returns how many were deleted.
///
/// TUN devices need no sweeping: they vanish with the process that held them or with their
/// netns.
pub fn sweep(prefix: &str) -> Result<usize, SweepError> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(SweepError::List(e)),
    };
    let wanted = format!("{prefix}-");
    let mut deleted = 0;
    for entry in entries {
        let entry = entry.map_err(SweepError::List)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(&wanted) {
            continue;
        }
        delete(&name).map_err(|source| SweepError::Delete {
            name: name.clone(),
            source,
        })?;
        tracing::info!(netns = %name, "swept stale netns");
        deleted += 1;
    }
    Ok(deleted)
}

/// Connects to `addr` from inside the named netns (on a short-lived thread that entered it):
/// the socket stays in that netns for its whole life, so a process in the root netns can
/// relay to addresses only that netns reaches.
pub fn connect_in(
    netns: &str,
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> io::Result<std::net::TcpStream> {
    let ns_file = File::open(path(netns))?;
    let thread = std::thread::Builder::new()
        .name(format!("connect-{netns}"))
        .spawn(move || {
            setns(&ns_file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            drop(ns_file);
            std::net::TcpStream::connect_timeout(&addr, timeout)
        })?;
    thread
        .join()
        .map_err(|_| io::Error::other("the thread connecting in the netns panicked"))?
}

/// Path of the named netns.
pub(crate) fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs `ip <args>`, feeding `stdin` (for `-batch -`) if given.
pub(crate) async fn ip(args: &[&str], stdin: Option<&str>) -> Result<(), IpError> {
    let joined = args.join(" ");
    let spawn_err = |source| IpError::Spawn {
        args: joined.clone(),
        source,
    };
    let mut child = tokio::process::Command::new("ip")
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.map_err(spawn_err)?;
    }
    let output = child.wait_with_output().await.map_err(spawn_err)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(IpError::Status {
            args: joined,
            stderr,
        });
    }
    Ok(())
}

/// Kills every process in the named netns, then unmounts and removes it (what `ip netns del`
/// does). Returns `false` if it did not exist.
pub(crate) fn delete(name: &str) -> io::Result<bool> {
    let ns_path = path(name);
    if !ns_path.exists() {
        return Ok(false);
    }
    // Two passes: a process may fork while the first one runs.
    for _ in 0..2 {
        for pid in pids_in(&ns_path)? {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    match umount2(&ns_path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a half-made netns); just remove the file.
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(&ns_path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Pids (other than ours) whose network namespace is the one mounted at `ns_path`.
fn pids_in(ns_path: &Path) -> io::Result<Vec<i32>> {
    let target = std::fs::metadata(ns_path)?;
    let own = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        // The process may exit at any moment: a failed stat just means it is gone.
        let Ok(ns) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if ns.dev() == target.dev()
            && ns.ino() == target.ino()
            && let Ok(pid) = i32::try_from(pid)
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Runs `f` on a new thread that has entered the named netns; sockets it creates belong to
/// that netns for their whole life, whichever thread uses them later.
pub(crate) fn spawn_in<F, T>(name: &str, f: F) -> io::Result<oneshot::Receiver<io::Result<T>>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let ns_file = File::open(path(name))?;
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(move || {
            let result = setns(&ns_file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from);
            drop(ns_file);
            // The receiver may be gone (caller cancelled); nothing to report to then.
            let _ = tx.send(result.map(|()| f()));
        })?;
    Ok(rx)
}
