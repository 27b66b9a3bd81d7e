//! What is left on the host.

use std::process::Command;

use anyhow::Context;

use super::Env;

fn output(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd} (apt-get install -y runc iproute2)"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Asserts nothing of machine `id` is left on the host.
pub(crate) fn assert_no_leftovers(env: &Env, id: &str) {
    let runc_root = env.data_dir.join("runc");
    let list = output(
        "runc",
        &[
            "--root",
            runc_root.to_str().unwrap(),
            "list",
            "--format",
            "json",
        ],
    )
    .unwrap();
    assert!(!list.contains(id), "runc container left for {id}: {list}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let machine_dir = env.data_dir.join("machines").join(id);
    let machine_path = machine_dir.to_string_lossy().into_owned();
    let leaked: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(machine_path.as_str()))
        .collect();
    assert!(leaked.is_empty(), "mounts left for {id}: {leaked:?}");
    let netns = output("ip", &["netns", "list"]).unwrap();
    assert!(
        !netns.contains(&format!("{}-{id}", env.prefix)),
        "netns left for {id}: {netns}"
    );
    let links = output("ip", &["-o", "link", "show"]).unwrap();
    let veth = format!("{}{}", env.prefix, &id[..8]);
    assert!(!links.contains(&veth), "veth {veth} left: {links}");
    for ctrl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = ctrl.path().join(&env.prefix).join(id);
        assert!(!dir.exists(), "cgroup dir left: {}", dir.display());
    }
    assert!(
        !machine_dir.exists(),
        "machine dir left: {}",
        machine_dir.display()
    );
}
