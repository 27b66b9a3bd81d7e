//! The route table: the machines replica indexed by app, and what a machine offers on a
//! public port.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};

use godwit_state::{Change, Replica};
use godwit_types::{MachineRecord, MachineService, MachineState};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

/// Machines by app, following the replica.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    inner: RwLock<Index>,
    /// Fired on every change, so queued requests look again.
    pub(crate) changed: Notify,
}

/// A machine as a request target on one public port.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) machine_id: String,
    pub(crate) region: String,
    pub(crate) addr: SocketAddr,
    pub(crate) state: MachineState,
    pub(crate) cordoned: bool,
    pub(crate) soft_limit: u32,
    pub(crate) hard_limit: Option<u32>,
    pub(crate) autostart: bool,
    pub(crate) autostop: bool,
    pub(crate) min_running: u32,
}

#[derive(Debug, Default)]
struct Index {
    /// app → key → record.
    apps: HashMap<String, HashMap<String, Arc<MachineRecord>>>,
    /// key → app, for deletes.
    apps_by_key: HashMap<String, String>,
}

/// Soft limit when a service names no concurrency (the reference system's default).
const DEFAULT_SOFT_LIMIT: u32 = 20;

// === impl RouteTable ===

impl RouteTable {
    /// Builds the table from the (ready) replica and keeps it following changes until
    /// `cancel` fires.
    pub(crate) fn follow(replica: Replica<MachineRecord>, cancel: CancellationToken) -> Arc<Self> {
        let table = Arc::new(RouteTable::default());
        let mut changes = replica.subscribe();
        table.load(&replica);
        let follower = Arc::clone(&table);
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    () = cancel.cancelled() => break,
                    change = changes.recv() => change,
                };
                match change {
                    Ok(change) => follower.apply(change),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "route table fell behind, reloading");
                        follower.load(&replica);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
                follower.changed.notify_waiters();
            }
        });
        table
    }

    /// Whether any machine record exists for `app`.
    pub(crate) fn has_app(&self, app: &str) -> bool {
        self.read().apps.get(app).is_some_and(|m| !m.is_empty())
    }

    /// Every app with machines.
    pub(crate) fn apps(&self) -> Vec<String> {
        self.read().apps.keys().cloned().collect()
    }

    /// The machines of `app` that offer a service on public `port`.
    pub(crate) fn targets(&self, app: &str, port: u16) -> Vec<Target> {
        let index = self.read();
        let Some(machines) = index.apps.get(app) else {
            return Vec::new();
        };
        machines
            .values()
            .filter_map(|record| Target::from_record(record, port))
            .collect()
    }

    /// Every machine of `app` that has any service (for autostop, whatever the port).
    pub(crate) fn all_targets(&self, app: &str) -> Vec<Target> {
        let index = self.read();
        let Some(machines) = index.apps.get(app) else {
            return Vec::new();
        };
        machines
            .values()
            .filter_map(|record| {
                let service = record.services.first()?;
                Target::with_service(record, service)
            })
            .collect()
    }

    fn load(&self, replica: &Replica<MachineRecord>) {
        let mut index = Index::default();
        for (key, record) in replica.snapshot() {
            index.put(key, record);
        }
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = index;
    }

    fn apply(&self, change: Change<MachineRecord>) {
        let mut index = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        match change {
            Change::Put { key, value, .. } => index.put(key, value),
            Change::Delete { key } => index.remove(&key),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Index ===

impl Index {
    fn put(&mut self, key: String, record: MachineRecord) {
        self.remove(&key);
        if record.state == MachineState::Destroyed {
            return;
        }
        self.apps_by_key.insert(key.clone(), record.app.clone());
        self.apps
            .entry(record.app.clone())
            .or_default()
            .insert(key, Arc::new(record));
    }

    fn remove(&mut self, key: &str) {
        let Some(app) = self.apps_by_key.remove(key) else {
            return;
        };
        if let Some(machines) = self.apps.get_mut(&app) {
            machines.remove(key);
            if machines.is_empty() {
                self.apps.remove(&app);
            }
        }
    }
}

// === impl Target ===

impl Target {
    /// The machine as a target on public `port`, if one of its services listens there.
    fn from_record(record: &MachineRecord, port: u16) -> Option<Target> {
        let service = record
            .services
            .iter()
            .find(|s| s.ports.iter().any(|p| p.port == Some(port)))?;
        Target::with_service(record, service)
    }

    fn with_service(record: &MachineRecord, service: &MachineService) -> Option<Target> {
        let ip: IpAddr = record.private_ip.parse().ok()?;
        let (soft_limit, hard_limit) = match &service.concurrency {
            Some(c) => (c.soft_limit.max(1), c.hard_limit),
            None => (DEFAULT_SOFT_LIMIT, None),
        };
        Some(Target {
            machine_id: record.id.clone(),
            region: record.region.clone(),
            addr: SocketAddr::new(ip, service.internal_port),
            state: record.state,
            cordoned: record.cordoned,
            soft_limit,
            hard_limit: hard_limit.map(|h| h.max(soft_limit)),
            autostart: service.autostart.unwrap_or(true),
            autostop: autostop_enabled(service.autostop.as_ref()),
            min_running: service.min_machines_running.unwrap_or(0),
        })
    }
}

/// `auto_stop_machines`: `true`, `"stop"` or `"suspend"` turn it on.
fn autostop_enabled(value: Option<&serde_json::Value>) -> bool {
    match value {
        Some(serde_json::Value::Bool(on)) => *on,
        Some(serde_json::Value::String(mode)) => matches!(mode.as_str(), "stop" | "suspend"),
        _ => false,
    }
}

/// The app named by `host` (`<app>.<domain>`, any port and case), if it is one.
pub(crate) fn app_from_host<'h>(host: &'h str, domain: &str) -> Option<&'h str> {
    let host = host.trim_end_matches('.');
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let (app, rest) = host.split_once('.')?;
    let valid = !app.is_empty()
        && rest.eq_ignore_ascii_case(domain)
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then_some(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_apps_under_the_domain() {
        let domain = "apps.example.test";
        assert_eq!(
            app_from_host("hello.apps.example.test", domain),
            Some("hello")
        );
        assert_eq!(
            app_from_host("hello.apps.example.test:8080", domain),
            Some("hello")
        );
        assert_eq!(
            app_from_host("hello.APPS.example.test.", domain),
            Some("hello")
        );
        assert_eq!(app_from_host("a.b.apps.example.test", domain), None);
        assert_eq!(app_from_host("apps.example.test", domain), None);
        assert_eq!(app_from_host("hello.other.test", domain), None);
        assert_eq!(app_from_host("127.0.0.1:80", domain), None);
    }

    #[test]
    fn autostop_values() {
        assert!(autostop_enabled(Some(&serde_json::json!(true))));
        assert!(autostop_enabled(Some(&serde_json::json!("suspend"))));
        assert!(!autostop_enabled(Some(&serde_json::json!("off"))));
        assert!(!autostop_enabled(Some(&serde_json::json!(false))));
        assert!(!autostop_enabled(None));
    }
}
