//! Autostart: one start per machine at a time, however many requests wait for it, then
//! waiting until the machine's port accepts TCP connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use tracing::Instrument as _;

use crate::Starter;
use crate::metrics::Metrics;
use crate::routes::Target;
use godwit_types::MachineState;

/// How long a woken machine counts as started when the replica has not caught up yet.
const AWAKE_FOR: Duration = Duration::from_secs(30);
/// How often the port of a starting machine is tried.
const CONNECT_EVERY: Duration = Duration::from_millis(20);

/// The outcome of a start, shared by every request waiting for it.
type Outcome = Option<Result<(), String>>;

#[derive(Debug)]
pub(crate) struct Wakers {
    starter: Arc<dyn Starter>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    machines: Mutex<HashMap<String, Wake>>,
    /// How many entries of `machines` are `Awake`: lets `caught_up` skip the lock.
    awake: AtomicUsize,
}

#[derive(Debug)]
enum Wake {
    Starting(watch::Receiver<Outcome>),
    /// Started (port open) at this instant, from a record last updated at `from` (the
    /// `updated_at` of the stopped or suspended record the wake began with).
    Awake {
        at: Instant,
        from: u64,
    },
}

// === impl Wakers ===

impl Wakers {
    pub(crate) fn new(starter: Arc<dyn Starter>, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Wakers {
            starter,
            timeout,
            metrics,
            machines: Mutex::new(HashMap::new()),
            awake: AtomicUsize::new(0),
        }
    }

    /// Whether `target` was started by this proxy recently and answered on its port, and
    /// the replica has not since said it is down again: a stop published after the wake
    /// began (a newer record that is stopped, suspended, failed or gone) ends the wake even
    /// when no request saw the started record in between.
    pub(crate) fn is_awake(&self, target: &Target) -> bool {
        let stopped_since = |from: u64| {
            target.updated_at > from
                && matches!(
                    target.state,
                    MachineState::Stopped
                        | MachineState::Suspended
                        | MachineState::Failed
                        | MachineState::Destroyed
                )
        };
        matches!(
            self.lock().get(&target.machine_id),
            Some(Wake::Awake { at, from }) if at.elapsed() < AWAKE_FOR && !stopped_since(*from)
        )
    }

    /// Whether a start of `machine_id` is in progress.
    pub(crate) fn is_starting(&self, machine_id: &str) -> bool {
        matches!(self.lock().get(machine_id), Some(Wake::Starting(_)))
    }

    /// Forgets that `machine_id` was woken (it is being stopped).
    pub(crate) fn forget(&self, machine_id: &str) {
        let mut machines = self.lock();
        if matches!(machines.get(machine_id), Some(Wake::Awake { .. })) {
            machines.remove(machine_id);
            self.awake.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The replica says `machine_id` is started: the wake entry is no longer needed, and
    /// keeping it would hide a stop. Cheap when nothing is awake (the usual case).
    pub(crate) fn caught_up(&self, machine_id: &str) {
        if self.awake.load(Ordering::Relaxed) != 0 {
            self.forget(machine_id);
        }
    }

    /// Starts `target` unless a start is already running, and waits for the outcome. The
    /// start runs in its own task: a request that goes away does not cancel it.
    pub(crate) async fn wake(self: &Arc<Self>, app: &str, target: &Target) -> Result<(), String> {
        let mut outcome = self.begin(app, target);
        let result = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| "the start task ended without an outcome".to_owned())?
            .clone();
        result.unwrap_or_else(|| Err("no outcome".to_owned()))
    }

    /// Starts `target` in the background unless a start is already running.
    pub(crate) fn wake_in_background(self: &Arc<Self>, app: &str, target: &Target) {
        drop(self.begin(app, target));
    }

    fn begin(self: &Arc<Self>, app: &str, target: &Target) -> watch::Receiver<Outcome> {
        let mut machines = self.lock();
        if let Some(Wake::Starting(outcome)) = machines.get(&target.machine_id) {
            return outcome.clone();
        }
        let (tx, rx) = watch::channel(None);
        let old = machines.insert(target.machine_id.clone(), Wake::Starting(rx.clone()));
        if matches!(old, Some(Wake::Awake { .. })) {
            self.awake.fetch_sub(1, Ordering::Relaxed);
        }
        drop(machines);
        self.metrics.autostart(app);
        let wakers = Arc::clone(self);
        let (app, machine_id, addr) = (app.to_owned(), target.machine_id.clone(), target.addr);
        let from = target.updated_at;
        let span = tracing::info_span!("autostart", app = %app, machine_id = %machine_id);
        tokio::spawn(
            async move {
                let result = wakers.start_and_wait(&app, &machine_id, addr).await;
                let mut machines = wakers.lock();
                match &result {
                    Ok(()) => {
                        tracing::info!("machine started on demand");
                        let awake = Wake::Awake {
                            at: Instant::now(),
                            from,
                        };
                        let old = machines.insert(machine_id, awake);
                        if !matches!(old, Some(Wake::Awake { .. })) {
                            wakers.awake.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "autostart failed");
                        if let Some(Wake::Awake { .. }) = machines.remove(&machine_id) {
                            wakers.awake.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
                drop(machines);
                tx.send_replace(Some(result));
            }
            .instrument(span),
        );
        rx
    }

    async fn start_and_wait(
        &self,
        app: &str,
        machine_id: &str,
        addr: SocketAddr,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        tokio::time::timeout_at(deadline, self.starter.start(app, machine_id))
            .await
            .map_err(|_| format!("start of {machine_id} took longer than {:?}", self.timeout))??;
        wait_for_port(addr, deadline).await.map_err(|()| {
            format!(
                "machine {machine_id} did not accept connections on {addr} within {:?}",
                self.timeout
            )
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Wake>> {
        self.machines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Polls a TCP connect to `addr` until it succeeds or `deadline` passes.
pub(crate) async fn wait_for_port(addr: SocketAddr, deadline: Instant) -> Result<(), ()> {
    loop {
        let attempt = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await;
        match attempt {
            Ok(Ok(_)) => return Ok(()),
            Err(_) => return Err(()),
            Ok(Err(_)) if Instant::now() + CONNECT_EVERY >= deadline => return Err(()),
            Ok(Err(_)) => tokio::time::sleep(CONNECT_EVERY).await,
        }
    }
}
