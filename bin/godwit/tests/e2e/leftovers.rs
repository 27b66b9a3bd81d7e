//! The "`dev down` leaves nothing" check: processes, mounts, network namespaces, links,
//! cgroups and runc containers of one cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Asserts that nothing of the cluster in `data_dir` with `prefix` is left on the host.
pub(crate) fn assert_nothing_left(data_dir: &Path, prefix: &str) {
    let marker = data_dir.display().to_string();
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(&marker) && pid != std::process::id() {
            left.push(format!("process {pid}: {line}"));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    for line in mountinfo.lines() {
        if line
            .split(' ')
            .nth(4)
            .is_some_and(|p| p.starts_with(&marker))
        {
            left.push(format!("mount: {line}"));
        }
    }
    for name in command_lines("ip", &["netns", "list"]) {
        if name.starts_with(&format!("{prefix}-")) {
            left.push(format!("netns {name}"));
        }
    }
    for line in command_lines("ip", &["-o", "link", "show"]) {
        if let Some(name) = line.split(": ").nth(1)
            && name.starts_with(prefix)
        {
            left.push(format!("link {name}"));
        }
    }
    let mut cgroup_dirs = vec![PathBuf::from("/sys/fs/cgroup").join(prefix)];
    for entry in std::fs::read_dir("/sys/fs/cgroup")
        .expect("read /sys/fs/cgroup")
        .flatten()
    {
        cgroup_dirs.push(entry.path().join(prefix));
    }
    for dir in cgroup_dirs {
        if dir.exists() {
            left.push(format!("cgroup {}", dir.display()));
        }
    }
    let runc_root = data_dir.join("dev/agent/runc");
    if runc_root.exists() {
        for id in command_lines(
            "runc",
            &["--root", &runc_root.display().to_string(), "list", "-q"],
        ) {
            left.push(format!("runc container {id}"));
        }
    }
    assert!(
        left.is_empty(),
        "left behind after `dev down`:\n{}",
        left.join("\n")
    );
}

/// The non-empty stdout lines of a command (none if it fails).
pub(crate) fn command_lines(program: &str, args: &[&str]) -> Vec<String> {
    let Ok(output) = Command::new(program).args(args).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}
