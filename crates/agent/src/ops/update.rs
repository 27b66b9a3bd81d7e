//! `update`: stop the old version → pull the new image → prepare the new version (the new
//! config becomes current here; the logs are kept) → start → started. A failed pull restarts
//! the old version.

use std::collections::BTreeMap;
use std::sync::Arc;

use godwit_types::{MachineConfig, MachineState};
use tracing::warn;

use super::lifecycle::stop_run;
use super::{OpError, kept_logs, machine, pull, settle};
use crate::agent::Agent;
use crate::db::OpRow;

pub(super) const STEPS: &[&str] = &["stop", "pull", "prepare", "start", "started"];

/// The new version, decided when the update was accepted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct UpdatePayload {
    pub(crate) config: MachineConfig,
    pub(crate) secrets: BTreeMap<String, String>,
    pub(crate) skip_launch: bool,
    pub(crate) version: u64,
    pub(crate) instance_id: String,
    /// Whether the old version was running (a failed pull restarts it).
    pub(crate) was_started: bool,
    /// Filled by the `pull` step.
    #[serde(default)]
    pub(crate) image: Option<godwit_image::Image>,
}

pub(super) async fn step(agent: &Arc<Agent>, op: &mut OpRow) -> Result<(), OpError> {
    let mut payload: UpdatePayload = serde_json::from_value(op.payload.clone())?;
    let id = op.machine_id.clone();
    let launch = !payload.skip_launch;
    match op.step.as_str() {
        "stop" => {
            crate::monitor::stop(agent, &id);
            let row = machine(agent, &id)?;
            agent.set_state(&id, MachineState::Updating)?;
            let (signal, timeout) = row.config.stop_signal_and_timeout();
            stop_run(agent, &id, signal, timeout).await?;
        }
        "pull" => {
            let image = pull(agent, &payload.config.image).await?;
            payload.image = Some(image);
            op.payload = serde_json::to_value(&payload)?;
            agent.db.set_op_payload(op.id, &op.payload)?;
        }
        "prepare" => {
            let image = match payload.image.clone() {
                Some(image) => image,
                None => pull(agent, &payload.config.image).await?,
            };
            agent.db.commit_version(
                &id,
                &payload.config,
                &payload.secrets,
                payload.version,
                &payload.instance_id,
                &image,
            )?;
            agent.changed(&id);
            agent.publisher.mark_host();
            // Re-making the bundle wipes the machine dir: its logs move aside meanwhile.
            kept_logs::keep(agent, &id);
            let prepared = prepare_again(agent, &id).await;
            kept_logs::restore(agent, &id);
            prepared?;
        }
        "start" if launch => {
            agent.set_state(&id, MachineState::Starting)?;
            agent.runtime.start(&id).await?;
        }
        "started" => {
            if launch {
                agent.set_state(&id, MachineState::Started)?;
                crate::monitor::spawn(agent, &id);
            } else {
                agent.set_state(&id, MachineState::Stopped)?;
            }
            agent.event(&id, "update", "updated", "user", None);
        }
        _ => {}
    }
    Ok(())
}

/// Replaces the machine's bundle with one of its current version.
async fn prepare_again(agent: &Agent, id: &str) -> Result<(), OpError> {
    agent.runtime.destroy(id).await?;
    let row = machine(agent, id)?;
    let spec = crate::spec::machine_spec(&row, &agent.cfg.host_id)
        .ok_or_else(|| OpError::Gone(id.to_owned()))?;
    agent.runtime.prepare(&spec).await?;
    Ok(())
}

/// Before `prepare`, the old version is intact: bring it back as it was. Later, fail.
pub(super) async fn rollback(agent: &Arc<Agent>, op: &OpRow) {
    let id = &op.machine_id;
    agent.event(id, "update", "failed", "godwit", None);
    let payload: Option<UpdatePayload> = serde_json::from_value(op.payload.clone()).ok();
    let old_intact = matches!(op.step.as_str(), "stop" | "pull");
    if old_intact && payload.is_some_and(|p| p.was_started) {
        if let Err(error) = agent.runtime.start(id).await {
            warn!(machine_id = %id, %error, "failed to restart the old version after a failed update");
        }
        settle(agent, id, MachineState::Failed).await;
    } else if old_intact {
        settle(agent, id, MachineState::Stopped).await;
    } else {
        settle(agent, id, MachineState::Failed).await;
    }
}
