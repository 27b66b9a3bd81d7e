//! Running commands and code inside a node's netns.

use super::{ExecError, NodeError, Testbed};
use crate::netns;

// === impl Testbed ===

impl Testbed {
    /// A command that runs `program` inside the node's netns (through `ip netns exec`).
    pub fn command(
        &self,
        node: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<tokio::process::Command, NodeError> {
        let (info, _) = self.lookup(node)?;
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &info.netns]).arg(program);
        Ok(cmd)
    }

    /// Runs `args[0] args[1..]` inside the node's netns to completion and returns its output
    /// (a non-zero exit is not an error; check `status`).
    pub async fn exec(&self, node: &str, args: &[&str]) -> Result<std::process::Output, ExecError> {
        let Some((program, rest)) = args.split_first() else {
            return Err(ExecError::Empty);
        };
        let mut cmd = self.command(node, program)?;
        cmd.args(rest).kill_on_drop(true);
        cmd.output().await.map_err(|source| ExecError::Spawn {
            node: node.to_owned(),
            source,
        })
    }

    /// Runs `f` on a fresh thread inside the node's netns. Sockets made there stay in that
    /// netns, so a listener or client socket can be made here and used from anywhere (e.g.
    /// handed to tokio with `from_std`).
    pub async fn run_in<F, T>(&self, node: &str, f: F) -> Result<T, ExecError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (info, _) = self.lookup(node)?;
        let spawn_err = |source| ExecError::Spawn {
            node: node.to_owned(),
            source,
        };
        let rx = netns::spawn_in(&info.netns, f).map_err(spawn_err)?;
        let result = rx.await.map_err(|_| ExecError::Panicked {
            node: node.to_owned(),
        })?;
        result.map_err(spawn_err)
    }
}
