//! Events and in-flight operations.

use godwit_types::MachineEvent;
use rusqlite::params;

use super::{Db, DbError, OpRow};
use crate::ops::OpKind;

impl Db {
    pub(crate) fn insert_event(&self, id: &str, event: &MachineEvent) -> Result<(), DbError> {
        let json = serde_json::to_string(event)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO events (machine_id, event) VALUES (?1, ?2)",
                params![id, json],
            )?;
            Ok(())
        })
    }

    /// The machine's events, newest first (at most `limit`).
    pub(crate) fn events(&self, id: &str, limit: u32) -> Result<Vec<MachineEvent>, DbError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, event FROM events WHERE machine_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![id, limit], |r| {
                    Ok((r.get::<_, u64>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(event_id, json)| {
                    let mut event: MachineEvent = serde_json::from_str(&json)?;
                    event.id = event_id;
                    Ok(event)
                })
                .collect()
        })
    }

    pub(crate) fn insert_op(
        &self,
        machine_id: &str,
        kind: OpKind,
        step: &str,
        payload: &serde_json::Value,
    ) -> Result<OpRow, DbError> {
        let json = serde_json::to_string(payload)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO ops (machine_id, kind, step, payload, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    machine_id,
                    kind.as_str(),
                    step,
                    json,
                    godwit_types::now_ms()
                ],
            )?;
            Ok(OpRow {
                id: c.last_insert_rowid(),
                machine_id: machine_id.to_owned(),
                kind,
                step: step.to_owned(),
                payload: payload.clone(),
            })
        })
    }

    pub(crate) fn set_op_step(&self, op_id: i64, step: &str) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE ops SET step = ?1 WHERE id = ?2",
                params![step, op_id],
            )?;
            Ok(())
        })
    }

    pub(crate) fn set_op_payload(
        &self,
        op_id: i64,
        payload: &serde_json::Value,
    ) -> Result<(), DbError> {
        let json = serde_json::to_string(payload)?;
        self.with(|c| {
            c.execute(
                "UPDATE ops SET payload = ?1 WHERE id = ?2",
                params![json, op_id],
            )?;
            Ok(())
        })
    }

    pub(crate) fn delete_op(&self, op_id: i64) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("DELETE FROM ops WHERE id = ?1", [op_id])?;
            Ok(())
        })
    }

    /// Every operation in flight, oldest first.
    pub(crate) fn list_ops(&self) -> Result<Vec<OpRow>, DbError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT id, machine_id, kind, step, payload FROM ops ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(id, machine_id, kind, step, payload)| {
                    Ok(OpRow {
                        id,
                        machine_id,
                        kind: kind
                            .parse()
                            .map_err(|_| DbError::Corrupt(format!("op kind {kind:?}")))?,
                        step,
                        payload: serde_json::from_str(&payload)?,
                    })
                })
                .collect()
        })
    }
}
