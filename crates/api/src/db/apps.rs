//! Apps and the routing table (machine id → host).

use rusqlite::{OptionalExtension as _, params};

use super::{Db, now_ms};

/// An app, with how many machines the routing table holds for it.
#[derive(Debug, Clone)]
pub(crate) struct AppRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) org_slug: String,
    pub(crate) machine_count: u32,
    pub(crate) created_at: u64,
}

/// Where a machine lives: routing only, the agent holds its state.
#[derive(Debug, Clone)]
pub(crate) struct MachineRow {
    pub(crate) id: String,
    pub(crate) app_id: i64,
    pub(crate) name: String,
    pub(crate) host_id: String,
    pub(crate) region: String,
}

const APP_SELECT: &str = "SELECT a.id, a.name, o.slug, a.created_at,
        (SELECT count(*) FROM machines m WHERE m.app_id = a.id)
    FROM apps a JOIN orgs o ON o.id = a.org_id";

impl Db {
    /// Creates an app; `Ok(None)` when the name is taken (by any organisation).
    pub(crate) fn create_app(&self, org_id: i64, name: &str) -> rusqlite::Result<Option<AppRow>> {
        let inserted = self.conn().execute(
            "INSERT INTO apps (name, org_id, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
            params![name, org_id, now_ms()],
        )?;
        if inserted == 0 {
            return Ok(None);
        }
        self.app(org_id, name)
    }

    /// The app `name` if it belongs to organisation `org_id`.
    pub(crate) fn app(&self, org_id: i64, name: &str) -> rusqlite::Result<Option<AppRow>> {
        self.conn()
            .query_row(
                &format!("{APP_SELECT} WHERE a.org_id = ?1 AND a.name = ?2"),
                params![org_id, name],
                app_row,
            )
            .optional()
    }

    pub(crate) fn apps(&self, org_id: i64) -> rusqlite::Result<Vec<AppRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare(&format!("{APP_SELECT} WHERE a.org_id = ?1 ORDER BY a.name"))?;
        let rows = stmt.query_map(params![org_id], app_row)?;
        rows.collect()
    }

    /// Deletes an app, its secrets and its certificates; the caller has made sure it has no
    /// machines.
    pub(crate) fn delete_app(&self, app_id: i64) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM secrets WHERE app_id = ?1", params![app_id])?;
        tx.execute(
            "DELETE FROM certificates WHERE app_id = ?1",
            params![app_id],
        )?;
        tx.execute("DELETE FROM machines WHERE app_id = ?1", params![app_id])?;
        tx.execute("DELETE FROM apps WHERE id = ?1", params![app_id])?;
        tx.commit()
    }

    pub(crate) fn insert_machine(&self, machine: &MachineRow) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO machines (id, app_id, name, host_id, region, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                machine.id,
                machine.app_id,
                machine.name,
                machine.host_id,
                machine.region,
                now_ms()
            ],
        )?;
        Ok(())
    }

    pub(crate) fn machine(
        &self,
        app_id: i64,
        machine_id: &str,
    ) -> rusqlite::Result<Option<MachineRow>> {
        self.conn()
            .query_row(
                "SELECT id, app_id, name, host_id, region FROM machines
                 WHERE app_id = ?1 AND id = ?2",
                params![app_id, machine_id],
                machine_row,
            )
            .optional()
    }

    pub(crate) fn machines(&self, app_id: i64) -> rusqlite::Result<Vec<MachineRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, app_id, name, host_id, region FROM machines
             WHERE app_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![app_id], machine_row)?;
        rows.collect()
    }

    pub(crate) fn delete_machine(&self, machine_id: &str) -> rusqlite::Result<()> {
        self.conn()
            .execute("DELETE FROM machines WHERE id = ?1", params![machine_id])?;
        Ok(())
    }
}

fn app_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        id: row.get(0)?,
        name: row.get(1)?,
        org_slug: row.get(2)?,
        created_at: row.get(3)?,
        machine_count: row.get(4)?,
    })
}

fn machine_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MachineRow> {
    Ok(MachineRow {
        id: row.get(0)?,
        app_id: row.get(1)?,
        name: row.get(2)?,
        host_id: row.get(3)?,
        region: row.get(4)?,
    })
}
