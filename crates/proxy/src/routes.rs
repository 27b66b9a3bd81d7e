//! The route table: the machines replica indexed by app, with each app's targets per public
//! port built once per change, so a request only clones an `Arc`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};

use godwit_state::{Change, Replica};
use godwit_types::{MachineRecord, MachineService, MachineState};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

mod health;

pub(crate) use health::Health;

/// Machines by app, following the replica.
#[derive(Debug)]
pub(crate) struct RouteTable {
    inner: RwLock<Index>,
    /// Fired on every change, so queued requests look again.
    pub(crate) changed: Notify,
    /// The public ports some machine offers as raw TCP (no handlers), for the listeners.
    tcp_ports: watch::Sender<BTreeSet<u16>>,
    /// The ports of the http and https listeners: never raw TCP.
    http_ports: [u16; 2],
    /// Machine addresses whose service asks for HTTP/2 (`http_options.h2_backend`).
    h2_addrs: RwLock<HashSet<SocketAddr>>,
}

/// A machine as a request target on one public port.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) machine_id: String,
    pub(crate) region: String,
    /// The host running the machine: another host's machines are reached over backhaul.
    pub(crate) host_id: String,
    pub(crate) addr: SocketAddr,
    pub(crate) state: MachineState,
    /// When the agent last changed the record (ms since the epoch, the agent's clock).
    pub(crate) updated_at: u64,
    pub(crate) cordoned: bool,
    pub(crate) soft_limit: u32,
    pub(crate) hard_limit: Option<u32>,
    pub(crate) autostart: bool,
    pub(crate) autostop: bool,
    /// `auto_stop_machines = "suspend"`: autostop suspends rather than stops.
    pub(crate) suspend: bool,
    pub(crate) min_running: u32,
    pub(crate) health: Health,
    /// Send a PROXY protocol header first on raw TCP connections to the machine.
    pub(crate) proxy_proto: Option<ProxyProto>,
}

/// The PROXY protocol version a port asks for (handler `proxy_proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyProto {
    V1,
    /// The binary form (`proxy_proto_options = { version = "v2" }`).
    V2,
}

/// One app's machines, as targets per public port.
#[derive(Debug, Default)]
pub(crate) struct AppRoutes {
    /// Public port → the machines with a service there.
    by_port: Vec<(u16, Vec<Arc<Target>>)>,
    /// Public ports offered as raw TCP (no handlers, or only `tls` and `proxy_proto`).
    raw_ports: BTreeSet<u16>,
    /// Raw TCP ports where the proxy terminates TLS (handler `tls`) before passing the
    /// bytes on.
    tls_ports: BTreeSet<u16>,
    /// Public ports where some machine asks for plain HTTP to be redirected to HTTPS.
    force_https: BTreeSet<u16>,
    /// Every machine with a service, by its first service (autostop).
    all: Vec<Arc<Target>>,
    /// Machine addresses (IP and internal port) to reach over h2c.
    h2_addrs: Vec<SocketAddr>,
}

#[derive(Debug, Default)]
struct Index {
    /// app → key → record.
    records: HashMap<String, HashMap<String, MachineRecord>>,
    /// app → its routes, rebuilt when one of its records changes.
    apps: HashMap<String, Arc<AppRoutes>>,
    /// key → app, for deletes.
    apps_by_key: HashMap<String, String>,
}

/// The port handler asking for a PROXY protocol header towards the machine.
const PROXY_PROTO_HANDLER: &str = "proxy_proto";
/// The port handler asking the proxy to terminate TLS.
const TLS_HANDLER: &str = "tls";

/// Soft limit when a service names no concurrency (the reference system's default).
const DEFAULT_SOFT_LIMIT: u32 = 20;

// === impl RouteTable ===

impl RouteTable {
    /// Builds the table from the (ready) replica and keeps it following changes until
    /// `cancel` fires. `http_ports` are never treated as raw TCP ports.
    pub(crate) fn follow(
        replica: Replica<MachineRecord>,
        http_ports: [u16; 2],
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let table = Arc::new(RouteTable {
            inner: RwLock::default(),
            changed: Notify::new(),
            tcp_ports: watch::Sender::new(BTreeSet::new()),
            http_ports,
            h2_addrs: RwLock::default(),
        });
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

    /// The routes of `app`, if it has machines.
    pub(crate) fn app(&self, app: &str) -> Option<Arc<AppRoutes>> {
        self.read().apps.get(app).cloned()
    }

    /// Every app with machines.
    pub(crate) fn apps(&self) -> Vec<String> {
        self.read().apps.keys().cloned().collect()
    }

    /// The apps offering raw TCP on public `port`.
    pub(crate) fn tcp_apps(&self, port: u16) -> Vec<(String, Arc<AppRoutes>)> {
        self.read()
            .apps
            .iter()
            .filter(|(_, routes)| routes.raw_ports.contains(&port))
            .map(|(app, routes)| (app.clone(), Arc::clone(routes)))
            .collect()
    }

    /// Whether the machine service at `addr` asks for HTTP/2 with prior knowledge (h2c).
    pub(crate) fn h2_backend(&self, addr: SocketAddr) -> bool {
        self.h2_addrs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&addr)
    }

    /// The public ports offered as raw TCP, following changes.
    pub(crate) fn tcp_ports(&self) -> watch::Receiver<BTreeSet<u16>> {
        self.tcp_ports.subscribe()
    }

    fn load(&self, replica: &Replica<MachineRecord>) {
        let mut index = Index::default();
        for (key, record) in replica.snapshot() {
            index.put(key, record);
        }
        let apps: Vec<String> = index.records.keys().cloned().collect();
        for app in apps {
            index.rebuild(&app);
        }
        self.publish_tcp_ports(&index);
        self.publish_h2_addrs(&index);
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = index;
    }

    fn apply(&self, change: Change<MachineRecord>) {
        let mut index = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let touched = match change {
            Change::Put { key, value, .. } => {
                let app = value.app.clone();
                let old = index.put(key, value);
                [Some(app), old]
            }
            Change::Delete { key } => [index.remove(&key), None],
        };
        for app in touched.iter().flatten() {
            index.rebuild(app);
        }
        self.publish_tcp_ports(&index);
        self.publish_h2_addrs(&index);
    }

    fn publish_tcp_ports(&self, index: &Index) {
        let ports: BTreeSet<u16> = index
            .apps
            .values()
            .flat_map(|routes| routes.raw_ports.iter().copied())
            .filter(|port| !self.http_ports.contains(port))
            .collect();
        self.tcp_ports.send_if_modified(|current| {
            let changed = *current != ports;
            *current = ports;
            changed
        });
    }

    fn publish_h2_addrs(&self, index: &Index) {
        let addrs: HashSet<SocketAddr> = index
            .apps
            .values()
            .flat_map(|routes| routes.h2_addrs.iter().copied())
            .collect();
        *self
            .h2_addrs
            .write()
            .unwrap_or_else(PoisonError::into_inner) = addrs;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl AppRoutes ===

impl AppRoutes {
    fn build(records: &HashMap<String, MachineRecord>) -> AppRoutes {
        let mut routes = AppRoutes::default();
        for record in records.values() {
            if let Some(first) = record.services.first()
                && let Some(target) = Target::with_service(record, first)
            {
                routes.all.push(Arc::new(target));
            }
            let ports: BTreeSet<u16> = record
                .services
                .iter()
                .flat_map(|s| s.ports.iter().filter_map(|p| p.port))
                .collect();
            for port in ports {
                let Some(target) = Target::from_record(record, port) else {
                    continue;
                };
                let target = Arc::new(target);
                match routes.by_port.iter_mut().find(|(p, _)| *p == port) {
                    Some((_, targets)) => targets.push(target),
                    None => routes.by_port.push((port, vec![target])),
                }
            }
            for service in &record.services {
                for port in &service.ports {
                    let Some(number) = port.port else { continue };
                    let raw = port
                        .handlers
                        .iter()
                        .all(|h| h == PROXY_PROTO_HANDLER || h == TLS_HANDLER);
                    if raw {
                        routes.raw_ports.insert(number);
                        if port.handlers.iter().any(|h| h == TLS_HANDLER) {
                            routes.tls_ports.insert(number);
                        }
                    }
                    if port.force_https == Some(true) {
                        routes.force_https.insert(number);
                    }
                    let h2 = port.http_options.as_ref().and_then(|o| o.h2_backend);
                    if h2 == Some(true)
                        && let Ok(ip) = record.private_ip.parse::<IpAddr>()
                    {
                        routes
                            .h2_addrs
                            .push(SocketAddr::new(ip, service.internal_port));
                    }
                }
            }
        }
        routes
    }

    /// The machines with a service on public `port`.
    pub(crate) fn on_port(&self, port: u16) -> &[Arc<Target>] {
        self.by_port
            .iter()
            .find(|(p, _)| *p == port)
            .map_or(&[], |(_, targets)| targets.as_slice())
    }

    /// Whether plain HTTP requests on public `port` are redirected to HTTPS.
    pub(crate) fn forces_https(&self, port: u16) -> bool {
        self.force_https.contains(&port)
    }

    /// Whether the proxy terminates TLS on raw TCP `port` (handler `tls`).
    pub(crate) fn terminates_tls(&self, port: u16) -> bool {
        self.tls_ports.contains(&port)
    }

    /// Every machine with a service (for autostop, whatever the port).
    pub(crate) fn all(&self) -> &[Arc<Target>] {
        &self.all
    }
}

// === impl Index ===

impl Index {
    /// Stores `record`; returns the app the key belonged to before, if another.
    fn put(&mut self, key: String, record: MachineRecord) -> Option<String> {
        let old = self.remove(&key).filter(|old| *old != record.app);
        if record.state == MachineState::Destroyed {
            return old;
        }
        self.apps_by_key.insert(key.clone(), record.app.clone());
        self.records
            .entry(record.app.clone())
            .or_default()
            .insert(key, record);
        old
    }

    /// Forgets `key`; returns its app.
    fn remove(&mut self, key: &str) -> Option<String> {
        let app = self.apps_by_key.remove(key)?;
        if let Some(machines) = self.records.get_mut(&app) {
            machines.remove(key);
            if machines.is_empty() {
                self.records.remove(&app);
            }
        }
        Some(app)
    }

    fn rebuild(&mut self, app: &str) {
        match self.records.get(app) {
            Some(records) => {
                self.apps
                    .insert(app.to_owned(), Arc::new(AppRoutes::build(records)));
            }
            None => {
                self.apps.remove(app);
            }
        }
    }
}

// === impl Target ===

impl Target {
    /// The machine as a target on public `port`, if one of its services listens there.
    fn from_record(record: &MachineRecord, port: u16) -> Option<Target> {
        let (service, public) = record.services.iter().find_map(|s| {
            let public = s.ports.iter().find(|p| p.port == Some(port))?;
            Some((s, public))
        })?;
        let mut target = Target::with_service(record, service)?;
        let v2 = public
            .proxy_proto_options
            .as_ref()
            .is_some_and(|o| o.version.eq_ignore_ascii_case("v2"));
        target.proxy_proto = public
            .handlers
            .iter()
            .any(|h| h == PROXY_PROTO_HANDLER)
            .then_some(if v2 { ProxyProto::V2 } else { ProxyProto::V1 });
        Some(target)
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
            host_id: record.host_id.clone(),
            addr: SocketAddr::new(ip, service.internal_port),
            state: record.state,
            updated_at: record.updated_at,
            cordoned: record.cordoned,
            soft_limit,
            hard_limit: hard_limit.map(|h| h.max(soft_limit)),
            autostart: service.autostart.unwrap_or(true),
            autostop: autostop_enabled(service.autostop.as_ref()),
            suspend: service.autostop.as_ref().and_then(|v| v.as_str()) == Some("suspend"),
            min_running: service.min_machines_running.unwrap_or(0),
            health: Health::of(&record.checks),
            proxy_proto: None,
        })
    }
}

#[cfg(test)]
impl Target {
    /// A started, passing machine `id` in `region` (host `host-<region>`) with these limits,
    /// for unit tests.
    pub(crate) fn for_test(id: &str, region: &str, soft: u32, hard: Option<u32>) -> Arc<Target> {
        Arc::new(Target {
            machine_id: id.to_owned(),
            region: region.to_owned(),
            host_id: format!("host-{region}"),
            addr: "127.0.0.1:1".parse().expect("literal address"),
            state: MachineState::Started,
            updated_at: 0,
            cordoned: false,
            soft_limit: soft,
            hard_limit: hard,
            autostart: true,
            autostop: false,
            suspend: false,
            min_running: 0,
            health: Health::Passing,
            proxy_proto: None,
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
