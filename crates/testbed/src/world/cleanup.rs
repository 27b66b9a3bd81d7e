//! What the world's agents leave on the box when they cannot clean up themselves (killed, or
//! their host cut off): machine namespaces and the processes in them, cgroups, and overlay
//! mounts under the data dir.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, umount2};

use super::StopError;

/// How long an emptied cgroup may stay busy (its processes still exiting).
const CGROUP_GRACE: Duration = Duration::from_secs(5);

/// The agent name prefix of host number `n` (1-based, at most 99) of the world `prefix`:
/// `w` + 3 base-36 digits of a hash of the prefix + `n`, so that at most 6 characters, and
/// the same for a rerun with the same prefix (which can then sweep a killed run's debris).
pub(super) fn host_tag(prefix: &str, n: u32) -> String {
    // FNV-1a: stable across runs and Rust versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in prefix.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut tag = String::from("w");
    for _ in 0..3 {
        let digit = usize::try_from(hash % 36).expect("below 36");
        tag.push(char::from(DIGITS[digit]));
        hash /= 36;
    }
    format!("{tag}{n}")
}

/// Deletes the machine namespaces of agent name prefix `tag` (killing what runs in them).
pub(super) fn sweep_machine_netns(tag: &str, errors: &mut Vec<StopError>) {
    match crate::sweep(tag) {
        Ok(0) => {}
        Ok(n) => tracing::info!(tag, netns = n, "swept machine namespaces"),
        Err(source) => errors.push(StopError::Sweep {
            prefix: tag.to_owned(),
            source,
        }),
    }
}

/// Removes the cgroups runc made for agent name prefix `tag` (`<controller>/<tag>/<id>`),
/// deepest first, retrying while their exiting processes keep them busy.
pub(super) fn remove_cgroups(tag: &str, errors: &mut Vec<StopError>) {
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
    for top in tops {
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
        for dir in dirs {
            if let Err(source) = rmdir_patiently(&dir) {
                errors.push(StopError::Leftover {
                    what: format!("cgroup {}", dir.display()),
                    source,
                });
            }
        }
    }
}

/// Unmounts (lazily, deepest first) every mount point under `dir`.
pub(super) fn unmount_under(dir: &Path, errors: &mut Vec<StopError>) {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_path(point)))
        .filter(|point| point.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in points {
        if let Err(errno) = umount2(&point, MntFlags::MNT_DETACH) {
            errors.push(StopError::Leftover {
                what: format!("mount {}", point.display()),
                source: errno.into(),
            });
        }
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
    fn host_tags_are_short_stable_and_distinct() {
        let tag = host_tag("gwe2ew", 12);
        assert_eq!(tag, host_tag("gwe2ew", 12));
        assert!(tag.len() <= 6, "{tag}");
        assert!(tag.starts_with('w'), "{tag}");
        assert!(
            tag.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{tag}"
        );
        assert_ne!(host_tag("gwe2ew", 1), host_tag("gwe2ew", 2));
        assert_ne!(host_tag("a", 1), host_tag("b", 1));
    }

    #[test]
    fn mount_paths_unescape() {
        assert_eq!(unescape_mount_path("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
