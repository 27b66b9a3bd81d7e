//! `create`: reserve (row + address) → pull → prepare → start → started.
//! A failure at any step rolls back: runtime resources destroyed, row deleted.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use godwit_types::MachineState;
use godwit_types::api::AgentCreateMachine;
use tracing::warn;

use super::{OpError, ensure_prepared, machine, pull};
use crate::agent::Agent;
use crate::db::{LeaseRow, MachineRow, OpRow};

pub(super) const STEPS: &[&str] = &["reserve", "pull", "prepare", "start", "started"];

/// The persisted request plus what was decided when it was accepted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CreatePayload {
    pub(crate) request: AgentCreateMachine,
    pub(crate) instance_id: String,
    pub(crate) lease: Option<LeaseRow>,
}

pub(super) async fn step(agent: &Arc<Agent>, op: &OpRow) -> Result<(), OpError> {
    let payload: CreatePayload = serde_json::from_value(op.payload.clone())?;
    let id = &op.machine_id;
    let skip_launch = payload.request.skip_launch;
    match op.step.as_str() {
        "reserve" => reserve(agent, &payload)?,
        "pull" => {
            let row = machine(agent, id)?;
            let image = pull(agent, &row.config.image).await?;
            agent.db.set_image(id, &image)?;
        }
        "prepare" => {
            let row = machine(agent, id)?;
            let spec = crate::spec::machine_spec(&row, &agent.cfg.host_id)
                .ok_or_else(|| OpError::Gone(id.clone()))?;
            agent.runtime.prepare(&spec).await?;
            agent.set_state(id, MachineState::Created)?;
        }
        "start" if !skip_launch => {
            ensure_prepared(agent, id).await?;
            agent.set_state(id, MachineState::Starting)?;
            agent.runtime.start(id).await?;
        }
        "started" if !skip_launch => {
            agent.set_state(id, MachineState::Started)?;
            agent.event(id, "start", "started", "user", None);
            crate::monitor::spawn(agent, id);
        }
        _ => {}
    }
    Ok(())
}

/// Inserts the machine row with a fresh address (idempotent).
fn reserve(agent: &Agent, payload: &CreatePayload) -> Result<(), OpError> {
    let req = &payload.request;
    let _ip_guard = agent.ip_lock.lock().unwrap_or_else(PoisonError::into_inner);
    if agent.db.get_machine(&req.machine_id)?.is_some() {
        return Ok(());
    }
    let link = agent
        .subnet
        .allocate(&agent.db.used_ips()?)
        .ok_or_else(|| OpError::NoAddress(agent.cfg.subnet.clone()))?;
    let now = godwit_types::now_ms();
    let row = MachineRow {
        id: req.machine_id.clone(),
        app: req.app.clone(),
        org: req.org.clone(),
        name: req.name.clone(),
        region: req.region.clone(),
        config: req.config.clone(),
        secrets: req.secrets.clone(),
        version: 1,
        instance_id: payload.instance_id.clone(),
        state: MachineState::Creating,
        private_ip: link.guest_ip,
        host_ip: link.host_ip,
        image: None,
        restart_count: 0,
        restart_window_ms: 0,
        cordoned: false,
        metadata: req
            .config
            .metadata
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        lease: payload.lease.clone(),
        created_at: now,
        updated_at: now,
    };
    agent.db.insert_machine(&row)?;
    agent.event(&row.id, "launch", "created", "user", None);
    agent.changed(&row.id);
    agent.publisher.mark_host();
    Ok(())
}

/// Undoes a create: nothing of the machine is left.
pub(super) async fn rollback(agent: &Arc<Agent>, op: &OpRow) {
    let id = &op.machine_id;
    crate::monitor::stop(agent, id);
    if let Err(error) = agent.runtime.destroy(id).await {
        warn!(machine_id = %id, %error, "failed to destroy resources of a failed create");
    }
    if let Err(error) = agent.db.delete_machine(id) {
        warn!(machine_id = %id, %error, "failed to delete the row of a failed create");
    }
    agent.changed(id);
    agent.publisher.mark_host();
}
