//! The OCI runtime `config.json` for one machine.

use std::path::Path;

use serde_json::{Value, json};

use crate::MachineSpec;

/// Docker's default capability set.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const CPU_PERIOD_US: u64 = 100_000;
const PIDS_LIMIT: i64 = 4096;
/// Wanted open-file limit; capped at our own hard limit, which runc cannot raise without
/// CAP_SYS_RESOURCE.
const NOFILE_LIMIT: u64 = 65_536;

/// What [`config_json`] needs besides the spec.
#[derive(Debug)]
pub(super) struct BundleParams<'a> {
    pub(super) spec: &'a MachineSpec,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) netns_path: &'a Path,
    pub(super) cgroup_path: &'a str,
    /// memory.memsw.* exists: also cap memory+swap at the memory limit (no swapping).
    pub(super) swap_accounting: bool,
}

pub(super) fn config_json(params: &BundleParams<'_>) -> Value {
    let spec = params.spec;
    let caps: Vec<&str> = CAPABILITIES.to_vec();
    let memory_bytes = spec.memory_mb.saturating_mul(1 << 20);
    let memory_limit = i64::try_from(memory_bytes).unwrap_or(i64::MAX);
    let mut memory = json!({ "limit": memory_limit });
    if params.swap_accounting {
        memory["swap"] = json!(memory_limit);
    }
    let quota = i64::try_from(u64::from(spec.cpus) * CPU_PERIOD_US).unwrap_or(i64::MAX);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": params.uid, "gid": params.gid },
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "hard": nofile_limit(), "soft": nofile_limit() }
            ],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": spec.hostname,
        "mounts": mounts(),
        "linux": {
            "cgroupsPath": params.cgroup_path,
            "resources": {
                "devices": [ { "allow": false, "access": "rwm" } ],
                "memory": memory,
                "cpu": { "quota": quota, "period": CPU_PERIOD_US },
                "pids": { "limit": PIDS_LIMIT },
            },
            "namespaces": [
                { "type": "pid" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" },
                { "type": "network", "path": params.netns_path },
            ],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    })
}

fn nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(NOFILE_LIMIT))
        .unwrap_or(1024)
}

fn mounts() -> Value {
    json!([
        { "destination": "/proc", "type": "proc", "source": "proc",
          "options": ["nosuid", "noexec", "nodev"] },
        { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
        { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
          "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
        { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
          "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
        { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
          "options": ["nosuid", "noexec", "nodev"] },
        { "destination": "/sys", "type": "sysfs", "source": "sysfs",
          "options": ["nosuid", "noexec", "nodev", "ro"] },
        { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
          "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
    ])
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::NetworkSpec;

    #[test]
    fn limits_and_netns_land_in_config() {
        let spec = MachineSpec {
            id: "0123456789abcd".to_owned(),
            layers: vec![PathBuf::from("/l")],
            args: vec!["sh".to_owned()],
            env: vec!["PATH=/bin".to_owned()],
            cwd: "/".to_owned(),
            user: None,
            hostname: "h".to_owned(),
            cpus: 2,
            memory_mb: 32,
            network: NetworkSpec {
                host_ip: "10.0.0.1".parse().expect("ip"),
                guest_ip: "10.0.0.2".parse().expect("ip"),
                prefix_len: 30,
            },
        };
        let config = config_json(&BundleParams {
            spec: &spec,
            uid: 7,
            gid: 8,
            netns_path: Path::new("/var/run/netns/x"),
            cgroup_path: "/gw/0123456789abcd",
            swap_accounting: true,
        });
        let resources = &config["linux"]["resources"];
        assert_eq!(resources["memory"]["limit"], 32 << 20);
        assert_eq!(resources["memory"]["swap"], 32 << 20);
        assert_eq!(resources["cpu"]["quota"], 200_000);
        assert_eq!(config["linux"]["namespaces"][4]["path"], "/var/run/netns/x");
        assert_eq!(config["process"]["user"]["uid"], 7);
        assert_eq!(config["linux"]["cgroupsPath"], "/gw/0123456789abcd");
    }
}
