//! Autostop: machines with autostop on that had no request for a while are stopped, one per
//! app per pass, down to the app's `min_machines_running`.

use std::sync::Arc;
use std::time::Duration;

use godwit_types::MachineState;
use tokio_util::sync::CancellationToken;

use crate::Starter;
use crate::handler::Proxy;

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
            .filter(|t| t.state == MachineState::Started && !t.cordoned)
            .collect();
        let min_running = machines.iter().map(|t| t.min_running).max().unwrap_or(0);
        let Ok(running_count) = u32::try_from(running.len()) else {
            continue;
        };
        if running_count <= min_running {
            continue;
        }
        let idle = running.iter().find(|t| {
            t.autostop
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
        match starter.stop(&app, &idle.machine_id).await {
            Ok(()) => {
                tracing::info!(app = %app, machine_id = %idle.machine_id, "stopped idle machine");
            }
            Err(error) => {
                tracing::warn!(app = %app, machine_id = %idle.machine_id, %error, "autostop failed");
                proxy.loads.undrain(&idle.machine_id);
            }
        }
    }
}
