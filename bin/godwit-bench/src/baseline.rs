//! The baseline: the same image, prepared by `godwit_runtime::OciRuntime::prepare` (overlay
//! rootfs, netns + veth, `config.json`) under the benchmark's own name prefix and subnet, then
//! started with a bare `runc --root R run -d --bundle <dir> <id>`: no API, agent or shim.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use godwit_image::{Image, ImageStore, PullOptions};
use godwit_runtime::{MachineRuntime, MachineSpec, NetworkSpec, OciConfig, OciRuntime};
use godwit_types::MachineId;
use tokio::time::Instant;

/// Where and how the baseline runs its containers.
#[derive(Debug, Clone)]
pub struct BaselineConfig {
    /// Work directory: `machines/`, `runc/` (runc's `--root`) and `images/` go here.
    pub work_dir: PathBuf,
    pub runc: PathBuf,
    /// Names of netns, veths, cgroups and runc containers start with it (1 to 6 characters).
    pub name_prefix: String,
    /// `a.b.c.d/len`: one /30 per container comes from here.
    pub subnet: String,
    pub cpus: u32,
    pub memory_mb: u64,
}

/// Why a baseline step failed.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("invalid subnet {subnet:?}: want a.b.c.d/len with len 8 to 30")]
    Subnet { subnet: String },
    #[error("subnet {subnet} has no /30 left")]
    SubnetFull { subnet: String },
    #[error("image {reference} has no entrypoint or cmd")]
    NoCommand { reference: String },
    #[error("failed to pull {reference} for the baseline")]
    Pull {
        reference: String,
        #[source]
        source: godwit_image::ImageError,
    },
    #[error("runtime failed to {action} {id}")]
    Runtime {
        action: &'static str,
        id: String,
        #[source]
        source: godwit_runtime::RuntimeError,
    },
    #[error("runtime wrote no bundle at {}", path.display())]
    NoBundle { path: PathBuf },
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`runc run` of {id} failed ({status}): {output}")]
    Runc {
        id: String,
        status: String,
        output: String,
    },
}

/// One container prepared for a bare `runc run`.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: String,
    pub guest_ip: Ipv4Addr,
    /// How long `OciRuntime::prepare` took.
    pub prepare_time: std::time::Duration,
}

/// Prepares, runs and destroys baseline containers.
#[derive(Debug)]
pub struct BareRunc {
    runtime: OciRuntime,
    image: Image,
    cfg: BaselineConfig,
    subnet_base: u32,
    subnet_blocks: u32,
    next_block: u32,
}

// === impl BareRunc ===

impl BareRunc {
    /// Opens the runtime, destroys what an earlier killed run left under the same prefix and
    /// pulls `reference` into the work directory's own image cache.
    pub async fn open(cfg: BaselineConfig, reference: &str) -> Result<Self, BaselineError> {
        let (subnet_base, subnet_blocks) = parse_subnet(&cfg.subnet)?;
        let runtime = OciRuntime::new(OciConfig {
            runc: cfg.runc.clone(),
            name_prefix: cfg.name_prefix.clone(),
            // Never used: the baseline starts containers with runc itself, not the shim.
            ..OciConfig::under(&cfg.work_dir, vec!["/bin/false".to_owned()])
        })
        .map_err(|source| runtime_err("open runtime in", &cfg.work_dir, source))?;
        let store = ImageStore::open(cfg.work_dir.join("images")).map_err(|source| {
            BaselineError::Pull {
                reference: reference.to_owned(),
                source,
            }
        })?;
        let image = store
            .pull(reference, &PullOptions::default())
            .await
            .map_err(|source| BaselineError::Pull {
                reference: reference.to_owned(),
                source,
            })?;
        if image.config.entrypoint.is_empty() && image.config.cmd.is_empty() {
            return Err(BaselineError::NoCommand {
                reference: reference.to_owned(),
            });
        }
        let bare = Self {
            runtime,
            image,
            cfg,
            subnet_base,
            subnet_blocks,
            next_block: 0,
        };
        let leftovers = bare.destroy_all().await?;
        if leftovers > 0 {
            tracing::info!(leftovers, "destroyed baseline containers of an earlier run");
        }
        Ok(bare)
    }

    /// Prepares a fresh container (not timed as part of the run).
    pub async fn prepare(&mut self) -> Result<Prepared, BaselineError> {
        if self.next_block >= self.subnet_blocks {
            return Err(BaselineError::SubnetFull {
                subnet: self.cfg.subnet.clone(),
            });
        }
        let block = self.subnet_base + 4 * self.next_block;
        self.next_block += 1;
        let id = MachineId::generate().as_str().to_owned();
        let guest_ip = Ipv4Addr::from(block + 2);
        let spec = self.spec(&id, Ipv4Addr::from(block + 1), guest_ip);
        let started = Instant::now();
        self.runtime
            .prepare(&spec)
            .await
            .map_err(|source| runtime_err("prepare", &id, source))?;
        Ok(Prepared {
            id,
            guest_ip,
            prepare_time: started.elapsed(),
        })
    }

    /// `runc --root R run -d --bundle <bundle> <container id>` on the bundle `prepare` wrote;
    /// returns once runc exits (the container then runs detached).
    pub async fn run(&self, id: &str) -> Result<(), BaselineError> {
        let bundle = self.bundle_dir(id);
        let config = bundle.join("config.json");
        if !config.is_file() {
            return Err(BaselineError::NoBundle { path: config });
        }
        // The container's stdio: its output would otherwise hold our pipes open forever.
        let log_path = bundle.join("bare-runc.log");
        let log = std::fs::File::create(&log_path).map_err(|source| BaselineError::Io {
            action: "create",
            path: log_path.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| BaselineError::Io {
            action: "reopen",
            path: log_path.clone(),
            source,
        })?;
        let status = tokio::process::Command::new(&self.cfg.runc)
            .arg("--root")
            .arg(&self.runtime.config().runc_root)
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(self.container_id(id))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .status()
            .await
            .map_err(|source| BaselineError::Io {
                action: "run",
                path: self.cfg.runc.clone(),
                source,
            })?;
        if status.success() {
            return Ok(());
        }
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        Err(BaselineError::Runc {
            id: id.to_owned(),
            status: status.to_string(),
            output: output.trim().to_owned(),
        })
    }

    /// Kills and deletes the container, then lets the runtime remove everything else.
    pub async fn destroy(&self, id: &str) -> Result<(), BaselineError> {
        let runc_state = self.runtime.config().runc_root.join(self.container_id(id));
        if runc_state.exists() {
            // The runtime's destroy does this too; doing it here does not depend on its naming.
            let _ = tokio::process::Command::new(&self.cfg.runc)
                .arg("--root")
                .arg(&self.runtime.config().runc_root)
                .args(["delete", "--force"])
                .arg(self.container_id(id))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        self.runtime
            .destroy(id)
            .await
            .map_err(|source| runtime_err("destroy", id, source))
    }

    /// Destroys every container this prefix has anything for; returns how many.
    pub async fn destroy_all(&self) -> Result<usize, BaselineError> {
        let ids = self
            .runtime
            .list()
            .await
            .map_err(|source| runtime_err("list", "containers", source))?;
        for id in &ids {
            self.destroy(id).await?;
        }
        Ok(ids.len())
    }

    /// Where `prepare` put the bundle (`config.json` + `rootfs/`) of `id`.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.runtime.config().root.join(id)
    }

    /// runc's id for the container: `<prefix>-<id>`, as the runtime names it (also the netns).
    fn container_id(&self, id: &str) -> String {
        format!("{}-{id}", self.cfg.name_prefix)
    }

    /// The spec the agent would build for this image without config overrides.
    fn spec(&self, id: &str, host_ip: Ipv4Addr, guest_ip: Ipv4Addr) -> MachineSpec {
        let image = &self.image.config;
        let mut env =
            vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
        env.extend(image.env.iter().cloned());
        env.push(format!("FLY_MACHINE_ID={id}"));
        env.push(format!("FLY_PRIVATE_IP={guest_ip}"));
        env.push("FLY_REGION=bare".to_owned());
        MachineSpec {
            id: id.to_owned(),
            layers: self.image.layers.clone(),
            args: image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
            env,
            cwd: image
                .working_dir
                .clone()
                .filter(|d| d.starts_with('/'))
                .unwrap_or_else(|| "/".to_owned()),
            user: image
                .user
                .clone()
                .filter(|u| !u.is_empty() && u.split(':').all(|p| p.parse::<u32>().is_ok())),
            hostname: id.to_owned(),
            cpus: self.cfg.cpus,
            memory_mb: self.cfg.memory_mb,
            network: NetworkSpec {
                host_ip,
                guest_ip,
                prefix_len: 30,
            },
        }
    }
}

fn runtime_err(
    action: &'static str,
    id: impl AsRef<Path>,
    source: godwit_runtime::RuntimeError,
) -> BaselineError {
    BaselineError::Runtime {
        action,
        id: id.as_ref().display().to_string(),
        source,
    }
}

/// `a.b.c.d/len` → (network address, number of /30 blocks).
fn parse_subnet(subnet: &str) -> Result<(u32, u32), BaselineError> {
    let bad = || BaselineError::Subnet {
        subnet: subnet.to_owned(),
    };
    let (addr, len) = subnet.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) {
        return Err(bad());
    }
    let mask = u32::MAX << (32 - len);
    Ok((u32::from(addr) & mask, 1 << (30 - len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_split_into_slash_30s() {
        let (base, blocks) = parse_subnet("172.31.7.9/16").unwrap();
        assert_eq!(Ipv4Addr::from(base), Ipv4Addr::new(172, 31, 0, 0));
        assert_eq!(blocks, 16_384);
        assert_eq!(parse_subnet("10.0.0.0/30").unwrap().1, 1);
        for bad in ["10.0.0.0", "10.0.0.0/31", "10.0.0/24", "10.0.0.0/x"] {
            assert!(parse_subnet(bad).is_err(), "{bad}");
        }
    }
}
