//! `godwit dev world-daemon`: the process that holds a multi-region world. The WAN router is a
//! thread of the process that made the testbed, so the world lives exactly as long as this
//! process. It relays a loopback port to the API inside the control plane's netns, writes
//! `env.json` once the world is up, and answers the control socket until `down` or SIGTERM.

use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::Context;
use godwit_testbed::world::{API_PORT, DEFAULT_ANYCAST_V4, World, WorldSpec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::control::{self, Request};
use super::faults::Control;
use crate::dev::{DataDirArg, EnvFile, Layout};

/// `godwit dev world-daemon` (hidden: `dev up --regions` starts it).
#[derive(clap::Args, Debug)]
pub(in crate::dev) struct DaemonArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Prefix of the world's network namespaces
    #[arg(long)]
    prefix: String,
    /// Region codes or cities; the first also hosts the control plane
    #[arg(long, value_delimiter = ',', required = true)]
    regions: Vec<String>,
    #[arg(long, default_value_t = 1)]
    hosts_per_region: u32,
}

/// How long a relayed connection may take to reach the API inside the world.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(in crate::dev) fn run(args: DaemonArgs) -> anyhow::Result<()> {
    crate::daemon::init_daemon_tracing();
    let layout = Layout::new(args.dir.data_dir.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let result = runtime.block_on(serve(&layout, args));
    if let Err(error) = &result {
        tracing::error!(error = %format!("{error:#}"), "the world daemon failed");
    }
    result
}

async fn serve(layout: &Layout, args: DaemonArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("find the godwit binary")?;
    let spec = WorldSpec {
        prefix: args.prefix,
        godwit_exe: exe,
        data_dir: layout.world_dir.clone(),
        regions: args.regions,
        hosts_per_region: args.hosts_per_region,
        anycast_v4: DEFAULT_ANYCAST_V4,
    };
    let world = World::start(spec).await.context("start the world")?;
    let cancel = cancel_on_signals()?;

    let relay = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("listen on loopback for the API relay")?;
    let relay_port = relay.local_addr().context("read the relay address")?.port();
    let api_addr = SocketAddr::V4(SocketAddrV4::new(world.cp().ipv4, API_PORT));
    let relay_task = tokio::spawn(relay_api(relay, world.cp().netns.clone(), api_addr));

    match std::fs::remove_file(&layout.world_socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("remove a stale control socket"),
    }
    let control_listener = tokio::net::UnixListener::bind(&layout.world_socket)
        .with_context(|| format!("listen on {}", layout.world_socket.display()))?;
    std::fs::set_permissions(&layout.world_socket, std::fs::Permissions::from_mode(0o600))
        .context("make the control socket private")?;

    let api_url = format!("http://127.0.0.1:{relay_port}");
    let env_file = EnvFile {
        api_url: api_url.clone(),
        token: world.token().to_owned(),
        nats_url: format!("nats://{}:4222", world.cp().ipv4),
        proxy: None,
    };
    crate::dev::write_json(&layout.env_file, &env_file)?;
    tracing::info!(%api_url, "world ready");

    let mut control = Control::new(&world, api_url);
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = control_listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept on the control socket failed");
                continue;
            }
        };
        let mut stopping = false;
        let served = control::serve_one(stream, |request| {
            if matches!(request, Request::Down) {
                stopping = true;
            }
            control.answer(request)
        })
        .await;
        if let Err(error) = served {
            tracing::warn!(error = %format!("{error:#}"), "control request failed");
        }
        if stopping {
            tracing::info!("asked to stop");
            break;
        }
    }
    drop(control);
    drop(control_listener);
    relay_task.abort();
    let _ = std::fs::remove_file(&layout.world_socket);
    let _ = std::fs::remove_file(&layout.env_file);
    // Blocking (API calls, daemons' grace periods): off the async workers.
    let stopped = tokio::task::spawn_blocking(move || world.stop())
        .await
        .context("join the world's teardown")?;
    match stopped {
        Ok(()) => tracing::info!("world stopped"),
        Err(error) => tracing::warn!(%error, "world stopped, leaving something behind"),
    }
    Ok(())
}

/// Accepts on loopback and splices each connection to `api_addr`, connected from inside the
/// control plane's netns.
async fn relay_api(listener: TcpListener, cp_netns: String, api_addr: SocketAddr) {
    loop {
        let mut inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept on the API relay failed");
                continue;
            }
        };
        let netns = cp_netns.clone();
        tokio::spawn(async move {
            let connected = tokio::task::spawn_blocking(move || {
                let stream = godwit_testbed::connect_in(&netns, api_addr, CONNECT_TIMEOUT)?;
                stream.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(stream)
            })
            .await;
            let outbound = match connected {
                Ok(Ok(stream)) => tokio::net::TcpStream::from_std(stream),
                Ok(Err(error)) => Err(error),
                Err(join) => Err(std::io::Error::other(join)),
            };
            let mut outbound = match outbound {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, %api_addr, "relay could not reach the API");
                    return;
                }
            };
            if let Err(error) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
                tracing::debug!(%error, "relayed connection ended");
            }
        });
    }
}

/// A token cancelled by the first SIGTERM or SIGINT.
fn cancel_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let cancel = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watch SIGINT")?;
    let token = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping the world"),
            _ = int.recv() => tracing::info!("SIGINT: stopping the world"),
        }
        token.cancel();
    });
    Ok(cancel)
}
