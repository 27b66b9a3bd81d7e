//! The agent in-process or as a real child process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use godwit_agent::AgentConfig;
use tokio_util::sync::CancellationToken;

use super::{AGENT_BIN, Client, Env, wait_until};

/// The agent running inside the test process.
pub(crate) struct InProcAgent {
    pub(crate) client: Client,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), godwit_agent::RunError>>>,
}

impl InProcAgent {
    pub(crate) async fn start(env: &Env) -> anyhow::Result<Self> {
        Self::start_with(env, env.config()).await
    }

    /// Starts it with `cfg` (its `advertise_url` is set here).
    pub(crate) async fn start_with(env: &Env, mut cfg: AgentConfig) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("info,godwit_agent=debug")
            .try_init();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        cfg.advertise_url = base.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(godwit_agent::run(cfg, listener, cancel.clone()));
        let client = wait_healthy(&base, &env.data_dir).await?;
        Ok(Self {
            client,
            cancel,
            task: Some(task),
        })
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for InProcAgent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn wait_healthy(base: &str, data_dir: &Path) -> anyhow::Result<Client> {
    let http = reqwest::Client::new();
    let health = format!("{base}/v1/healthz");
    wait_until("agent healthz", Duration::from_secs(60), || async {
        let resp = http.get(&health).send().await.ok()?;
        (resp.status() == 200).then_some(())
    })
    .await?;
    let token = std::fs::read_to_string(data_dir.join("agent.token"))?;
    Ok(Client::new(base.to_owned(), token.trim().to_owned()))
}

/// The agent as a real child process (killable with SIGKILL).
pub(crate) struct ProcAgent {
    pub(crate) client: Client,
    pub(crate) child: Child,
}

impl ProcAgent {
    pub(crate) async fn start(env: &Env, crash_at: Option<&str>, n: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&env.data_dir)?;
        let config_path = env.data_dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec(&env.config())?)?;
        let addr_file = env.data_dir.join("listen.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::File::create(env.tmp.path().join(format!("agent-{n}.log")))?;
        let mut cmd = Command::new(AGENT_BIN);
        cmd.arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        match crash_at {
            Some(at) => cmd.env(godwit_agent::CRASH_AT_ENV, at),
            None => cmd.env_remove(godwit_agent::CRASH_AT_ENV),
        };
        let child = cmd.spawn().context("spawn godwit-agent-test")?;
        let mut agent = Self {
            client: Client::new(String::new(), String::new()),
            child,
        };
        let addr = wait_until("agent listen.addr", Duration::from_secs(60), || async {
            std::fs::read_to_string(&addr_file).ok()
        })
        .await?;
        agent.client = wait_healthy(&format!("http://{addr}"), &env.data_dir).await?;
        Ok(agent)
    }

    /// Waits for the process to die and asserts it was SIGKILLed.
    pub(crate) async fn must_be_killed(&mut self) {
        use std::os::unix::process::ExitStatusExt as _;
        let status = wait_until("agent exit", Duration::from_secs(60), || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
        .unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "agent should die by SIGKILL: {status:?}"
        );
    }

    pub(crate) async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = wait_until("agent exit", Duration::from_secs(30), || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await;
    }
}

impl Drop for ProcAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
