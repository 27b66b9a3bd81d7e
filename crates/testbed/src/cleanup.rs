//! Sweeping what Godwit's agents leave on the box when they cannot clean up themselves
//! (killed, or cut off): overlay mounts under a data dir and the cgroups of an agent name
//! prefix. Shared by [`crate::world::World`] and `godwit dev down`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long an emptied cgroup may stay busy (its processes still exiting).
const CGROUP_GRACE: Duration = Duration::from_secs(5);

/// Something a sweep could not remove.
#[derive(Debug, thiserror::Error)]
#[error("failed to remove {what}")]
pub struct LeftoverError {
    /// What was left, e.g. `mount /x/y` or `cgroup /sys/fs/cgroup/...`.
    pub what: String,
    #[source]
    pub source: io::Error,
}

/// What a sweep removed (described for people) and what it could not.
#[derive(Debug, Default)]
pub struct Swept {
    pub removed: Vec<String>,
    pub failed: Vec<LeftoverError>,
}

/// Mount points at or under `dir` (canonicalised when it exists), from
/// `/proc/self/mountinfo`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_path(point)))
        .filter(|point| point.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Unmounts (lazily, deepest first) every mount point under `dir`.
pub fn unmount_under(dir: &Path, swept: &mut Swept) {
    for point in mounts_under(dir) {
        match umount2(&point, MntFlags::MNT_DETACH) {
            Ok(()) => swept.removed.push(format!("mount {}", point.display())),
            Err(errno) => swept.failed.push(LeftoverError {
                what: format!("mount {}", point.display()),
                source: errno.into(),
            }),
        }
    }
}

/// The cgroup parents of agent name prefix `tag`: `<hierarchy>/<tag>` under every mounted v1
/// controller, the v2 `unified` tree and a pure v2 root; each real directory once.
pub fn cgroup_dirs(tag: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut tops = vec![root.join(tag)];
    if let Ok(entries) = std::fs::read_dir(root) {
        tops.extend(entries.flatten().map(|entry| entry.path().join(tag)));
    }
    // Some controllers are symlinked aliases (`cpu` → `cpu,cpuacct`): each real dir once.
    let mut tops: Vec<PathBuf> = tops
        .into_iter()
        .filter_map(|dir| std::fs::canonicalize(dir).ok())
        .filter(|dir| dir.is_dir())
        .collect();
    tops.sort();
    tops.dedup();
    tops
}

/// Removes the cgroups runc made for agent name prefix `tag` (`<controller>/<tag>/<id>`):
/// kills the processes still in them, then removes the directories, deepest first, retrying
/// while exiting processes keep them busy.
pub fn remove_cgroups(tag: &str, swept: &mut Swept) {
    for top in cgroup_dirs(tag) {
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
        for dir in &dirs {
            kill_members(dir);
        }
        let mut ok = true;
        for dir in dirs {
            if let Err(source) = rmdir_patiently(&dir) {
                ok = false;
                swept.failed.push(LeftoverError {
                    what: format!("cgroup {}", dir.display()),
                    source,
                });
            }
        }
        if ok {
            swept.removed.push(format!("cgroup {}", top.display()));
        }
    }
}

/// SIGKILLs every process listed in the cgroup's `cgroup.procs`.
fn kill_members(dir: &Path) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // Gone already is fine.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// `dir` and every directory below it.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}

/// `rmdir`, retried while the cgroup is busy; gone already is fine.
fn rmdir_patiently(dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + CGROUP_GRACE;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                // Polling until the cgroup's last process has exited.
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_unescape() {
        assert_eq!(unescape_mount_path("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/end\"), r"/end\");
    }

    #[test]
    fn a_tmpfs_under_a_dir_is_found_and_unmounted() {
        let dir = std::env::temp_dir().join(format!("godwit-sweep-{}", std::process::id()));
        let inner = dir.join("a/b");
        std::fs::create_dir_all(&inner).expect("create dirs");
        nix::mount::mount(
            Some("tmpfs"),
            &inner,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount a tmpfs (tests run as root)");
        let canonical = std::fs::canonicalize(&inner).expect("canonicalize");
        assert_eq!(mounts_under(&dir), vec![canonical]);
        let mut swept = Swept::default();
        unmount_under(&dir, &mut swept);
        assert!(swept.failed.is_empty(), "{:?}", swept.failed);
        assert_eq!(swept.removed.len(), 1, "{:?}", swept.removed);
        assert!(mounts_under(&dir).is_empty());
        std::fs::remove_dir_all(&dir).expect("remove the dir");
    }
}
