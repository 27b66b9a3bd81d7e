//! Publishing machine and host records to NATS key-value. Changes mark records dirty; one task
//! writes the current value of each dirty record, and keeps them dirty (retrying) while NATS
//! is unreachable, so the agent keeps working and catches up when NATS is back.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use godwit_state::{Bucket, StateClient, key_for};
use godwit_types::{HostRecord, MachineRecord};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::agent::Agent;

pub(crate) const MACHINES_BUCKET: &str = "godwit_machines";
pub(crate) const HOSTS_BUCKET: &str = "godwit_hosts";
const RETRY: Duration = Duration::from_secs(1);

/// The set of records waiting to be written.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    dirty: Mutex<HashSet<Key>>,
    notify: Notify,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Machine(String),
    Host,
}

struct Buckets {
    machines: Bucket<MachineRecord>,
    hosts: Bucket<HostRecord>,
}

// === impl Publisher ===

impl Publisher {
    pub(crate) fn mark_machine(&self, id: &str) {
        self.mark(Key::Machine(id.to_owned()));
    }

    pub(crate) fn mark_host(&self) {
        self.mark(Key::Host);
    }

    fn mark(&self, key: Key) {
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key);
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<Key> {
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect()
    }
}

/// The publisher task; ends when the agent is cancelled.
pub(crate) async fn run(agent: Arc<Agent>) {
    let cancel = agent.cancel.clone();
    tokio::select! {
        () = cancel.cancelled() => {}
        () = publish_forever(&agent) => {}
    }
}

async fn publish_forever(agent: &Agent) {
    let buckets = connect(agent).await;
    loop {
        let keys = agent.publisher.take();
        if keys.is_empty() {
            agent.publisher.notify.notified().await;
            continue;
        }
        let mut failed = false;
        for key in keys {
            if failed {
                agent.publisher.mark(key);
                continue;
            }
            if let Err(error) = publish(agent, &buckets, &key).await {
                warn!(error = %crate::ops::error_chain(&error), "failed to publish a record; will retry");
                agent.publisher.mark(key);
                failed = true;
            }
        }
        if failed {
            tokio::time::sleep(RETRY).await;
        }
    }
}

async fn connect(agent: &Agent) -> Buckets {
    loop {
        match try_connect(&agent.cfg).await {
            Ok(buckets) => {
                info!(url = %agent.cfg.nats_url, "connected to nats");
                return buckets;
            }
            Err(error) => {
                warn!(error = %crate::ops::error_chain(&error), "failed to connect to nats; will retry");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn try_connect(cfg: &crate::AgentConfig) -> Result<Buckets, godwit_state::StateError> {
    let client = StateClient::connect(&cfg.nats_url).await?;
    let topology = godwit_state::Topology::new(&cfg.region, &cfg.regions);
    Ok(Buckets {
        machines: client
            .records(MACHINES_BUCKET, &topology)
            .await?
            .writer()
            .clone(),
        hosts: client
            .records(HOSTS_BUCKET, &topology)
            .await?
            .writer()
            .clone(),
    })
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("failed to read the agent database")]
    Db(#[from] crate::db::DbError),
    #[error("failed to write to the state layer")]
    State(#[from] godwit_state::StateError),
}

async fn publish(agent: &Agent, buckets: &Buckets, key: &Key) -> Result<(), PublishError> {
    match key {
        Key::Machine(id) => match agent.db.get_machine(id)? {
            Some(row) => {
                let record = MachineRecord {
                    id: row.id.clone(),
                    app: row.app,
                    org: row.org,
                    name: row.name,
                    state: row.state,
                    version: row.version,
                    instance_id: row.instance_id,
                    private_ip: row.private_ip.to_string(),
                    region: row.region,
                    host_id: agent.cfg.host_id.clone(),
                    cpus: row.config.guest.cpus,
                    memory_mb: row.config.guest.memory_mb,
                    services: row.config.services,
                    checks: agent.checks.results(id),
                    cordoned: row.cordoned,
                    metadata: row.metadata,
                    updated_at: row.updated_at,
                };
                buckets.machines.put(&key_for(id), &record).await?;
                debug!(machine_id = %id, state = %record.state, "published machine");
            }
            None => {
                buckets.machines.delete(&key_for(id)).await?;
                debug!(machine_id = %id, "unpublished machine");
            }
        },
        Key::Host => {
            // Reserved: every machine not destroyed (stopped ones may start again any time).
            let rows = agent.db.list_machines(None)?;
            let record = HostRecord {
                host_id: agent.cfg.host_id.clone(),
                region: agent.cfg.region.clone(),
                agent_url: agent.cfg.advertise_url.clone(),
                cpus_total: agent.cfg.cpus,
                memory_mb_total: agent.cfg.memory_mb,
                cpus_reserved: rows.iter().map(|m| m.config.guest.cpus).sum(),
                memory_mb_reserved: rows.iter().map(|m| m.config.guest.memory_mb).sum(),
                schedulable: agent.cfg.schedulable,
                updated_at: godwit_types::now_ms(),
            };
            buckets
                .hosts
                .put(&key_for(&agent.cfg.host_id), &record)
                .await?;
        }
    }
    Ok(())
}
