//! Autostop: machines with autostop on that had no request for a while are stopped (or
//! suspended, with `auto_stop_machines = "suspend"`; stopped if the suspend fails), one per
//! app per pass, down to the app's `min_machines_running`. Autostart wakes either kind.

use std::sync::Arc;
use std::time::Duration;

use godwit_types::MachineState;
use tokio_util::sync::CancellationToken;

use crate::Starter;
use crate::handler::Proxy;
use crate::routes::Target;

/// How long a machine being stopped takes no new requests (the replica shows it stopped
/// well before that).
const DRAIN_HOLD: Duration = Duration::from_secs(60);

/// Runs autostop passes every `autostop_interval` until `cancel` fires.
pub(crate) async fn run(proxy: Arc<Proxy>, starter: Arc<dyn Starter>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(proxy.cfg.autostop_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        proxy.upstream.sweep();
        proxy.h1_pool.sweep();
        // Runs to completion: a stop that was asked for is not abandoned halfway.
        pass(&proxy, starter.as_ref()).await;
    }
}

async fn pass(proxy: &Proxy, starter: &dyn Starter) {
    for app in proxy.routes.apps() {
        let Some(routes) = proxy.routes.app(&app) else {
            continue;
        };
        let machines = routes.all();
        let running: Vec<_> = machines
            .iter()
            // A machine already being stopped is not running any more, whatever the replica
            // says yet: counting it could stop one machine too many, and picking it again
            // would ask for the same stop twice.
            .filter(|t| {
                t.state == MachineState::Started
                    && !t.cordoned
                    && !proxy.loads.is_draining(&t.machine_id)
            })
            .collect();
        let min_running = machines.iter().map(|t| t.min_running).max().unwrap_or(0);
        let Ok(running_count) = u32::try_from(running.len()) else {
            continue;
        };
        if running_count <= min_running {
            continue;
        }
        let idle = running.iter().find(|t| {
            // Another host's machine: its worker sees every request to it and stops it.
            t.autostop
                && proxy.is_local(t)
                && proxy
                    .loads
                    .idle_for(&t.machine_id)
                    .is_some_and(|idle| idle >= proxy.cfg.autostop_idle)
        });
        let Some(idle) = idle else { continue };
        if !proxy.loads.try_drain(&idle.machine_id, DRAIN_HOLD) {
            continue;
        }
        proxy.wakers.forget(&idle.machine_id);
        proxy.upgrades.close_for(&idle.machine_id).await;
        match park(starter, &app, idle).await {
            Ok(how) => {
                tracing::info!(app = %app, machine_id = %idle.machine_id, "{how} idle machine");
            }
            Err(error) => {
                tracing::warn!(app = %app, machine_id = %idle.machine_id, %error, "autostop failed");
                proxy.loads.undrain(&idle.machine_id);
            }
        }
    }
}

/// Suspends `target` if its autostop mode says so, stopping it when the suspend fails; else
/// stops it. Says which it did.
async fn park(starter: &dyn Starter, app: &str, target: &Target) -> Result<&'static str, String> {
    if target.suspend {
        match starter.suspend(app, &target.machine_id).await {
            Ok(()) => return Ok("suspended"),
            Err(error) => {
                tracing::warn!(app = %app, machine_id = %target.machine_id, %error, "suspend failed; stopping instead");
            }
        }
    }
    starter
        .stop(app, &target.machine_id)
        .await
        .map(|()| "stopped")
}
