//! The agent's SQLite database: machines, their events and in-flight operations.
//!
//! Every write is a single statement (or one transaction), so the file is always consistent;
//! callers serialise operations on one machine with the per-machine lock, and fields changed
//! outside operations (lease, metadata, cordon) have their own targeted updates.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;

use godwit_types::{MachineConfig, MachineState};
use rusqlite::{Connection, OptionalExtension, params};

use crate::ops::OpKind;

mod ops;
mod raw;

use raw::RawMachine;

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[r"
CREATE TABLE machines (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    config TEXT NOT NULL,
    secrets TEXT NOT NULL,
    version INTEGER NOT NULL,
    instance_id TEXT NOT NULL,
    state TEXT NOT NULL,
    private_ip TEXT NOT NULL UNIQUE,
    host_ip TEXT NOT NULL,
    image_digest TEXT,
    image TEXT,
    restart_count INTEGER NOT NULL DEFAULT 0,
    restart_window_ms INTEGER NOT NULL DEFAULT 0,
    cordoned INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL,
    lease TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_id TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX events_machine ON events (machine_id, id);
CREATE TABLE ops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    step TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt json in the database")]
    Json(#[from] serde_json::Error),
    #[error("corrupt value in the database: {0}")]
    Corrupt(String),
}

#[derive(Debug)]
pub(crate) struct Db {
    conn: Mutex<Connection>,
}

/// One machine as the agent stores it.
#[derive(Debug, Clone)]
pub(crate) struct MachineRow {
    pub(crate) id: String,
    pub(crate) app: String,
    pub(crate) org: String,
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) config: MachineConfig,
    pub(crate) secrets: BTreeMap<String, String>,
    pub(crate) version: u64,
    pub(crate) instance_id: String,
    pub(crate) state: MachineState,
    pub(crate) private_ip: Ipv4Addr,
    pub(crate) host_ip: Ipv4Addr,
    pub(crate) image: Option<godwit_image::Image>,
    pub(crate) restart_count: u32,
    pub(crate) restart_window_ms: u64,
    pub(crate) cordoned: bool,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) lease: Option<LeaseRow>,
    pub(crate) created_at: u64,
    pub(crate) updated_at: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LeaseRow {
    pub(crate) nonce: String,
    pub(crate) owner: String,
    pub(crate) description: String,
    /// Unix seconds.
    pub(crate) expires_at: u64,
}

/// An operation in flight.
#[derive(Debug, Clone)]
pub(crate) struct OpRow {
    pub(crate) id: i64,
    pub(crate) machine_id: String,
    pub(crate) kind: OpKind,
    pub(crate) step: String,
    pub(crate) payload: serde_json::Value,
}

// === impl Db ===

impl Db {
    pub(crate) fn open(path: &Path) -> Result<Self, DbError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (idx, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", idx + 1)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut conn)
    }

    pub(crate) fn insert_machine(&self, m: &MachineRow) -> Result<(), DbError> {
        let config = serde_json::to_string(&m.config)?;
        let secrets = serde_json::to_string(&m.secrets)?;
        let metadata = serde_json::to_string(&m.metadata)?;
        let lease = m.lease.as_ref().map(serde_json::to_string).transpose()?;
        self.with(|c| {
            c.execute(
                "INSERT INTO machines (id, app, org, name, region, config, secrets, version,
                 instance_id, state, private_ip, host_ip, metadata, lease, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15)",
                params![
                    m.id,
                    m.app,
                    m.org,
                    m.name,
                    m.region,
                    config,
                    secrets,
                    m.version,
                    m.instance_id,
                    m.state.as_str(),
                    m.private_ip.to_string(),
                    m.host_ip.to_string(),
                    metadata,
                    lease,
                    m.created_at,
                ],
            )?;
            Ok(())
        })
    }

    pub(crate) fn get_machine(&self, id: &str) -> Result<Option<MachineRow>, DbError> {
        self.with(|c| {
            let raw = c
                .query_row(
                    "SELECT * FROM machines WHERE id = ?1",
                    [id],
                    RawMachine::read,
                )
                .optional()?;
            raw.map(RawMachine::parse).transpose()
        })
    }

    /// All machines (of `app` if given), oldest first.
    pub(crate) fn list_machines(&self, app: Option<&str>) -> Result<Vec<MachineRow>, DbError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT * FROM machines WHERE ?1 IS NULL OR app = ?1 ORDER BY created_at, id",
            )?;
            let raws = stmt
                .query_map([app], RawMachine::read)?
                .collect::<Result<Vec<_>, _>>()?;
            raws.into_iter().map(RawMachine::parse).collect()
        })
    }

    pub(crate) fn used_ips(&self) -> Result<Vec<Ipv4Addr>, DbError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT private_ip FROM machines")?;
            let ips = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ips.iter()
                .map(|ip| {
                    ip.parse()
                        .map_err(|_| DbError::Corrupt(format!("ip {ip:?}")))
                })
                .collect()
        })
    }

    /// Sets one column of a machine (and `updated_at`). `column` is a fixed name from the
    /// callers below, never user input.
    fn set(&self, id: &str, column: &str, value: &dyn rusqlite::ToSql) -> Result<(), DbError> {
        let sql = format!("UPDATE machines SET {column} = ?1, updated_at = ?2 WHERE id = ?3");
        self.with(|c| {
            c.execute(&sql, params![value, godwit_types::now_ms(), id])?;
            Ok(())
        })
    }

    pub(crate) fn set_state(&self, id: &str, state: MachineState) -> Result<(), DbError> {
        self.set(id, "state", &state.as_str())
    }

    pub(crate) fn set_image(&self, id: &str, image: &godwit_image::Image) -> Result<(), DbError> {
        let json = serde_json::to_string(image)?;
        self.with(|c| {
            c.execute(
                "UPDATE machines SET image = ?1, image_digest = ?2 WHERE id = ?3",
                params![json, image.manifest_digest, id],
            )?;
            Ok(())
        })
    }

    pub(crate) fn set_restarts(&self, id: &str, count: u32, window_ms: u64) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE machines SET restart_count = ?1, restart_window_ms = ?2 WHERE id = ?3",
                params![count, window_ms, id],
            )?;
            Ok(())
        })
    }

    pub(crate) fn set_lease(&self, id: &str, lease: Option<&LeaseRow>) -> Result<(), DbError> {
        let json = lease.map(serde_json::to_string).transpose()?;
        self.set(id, "lease", &json)
    }

    pub(crate) fn set_metadata(
        &self,
        id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), DbError> {
        self.set(id, "metadata", &serde_json::to_string(metadata)?)
    }

    pub(crate) fn set_cordoned(&self, id: &str, cordoned: bool) -> Result<(), DbError> {
        self.set(id, "cordoned", &cordoned)
    }

    /// Makes `config` the machine's new version (idempotent: only if `version` is newer).
    pub(crate) fn commit_version(
        &self,
        id: &str,
        config: &MachineConfig,
        secrets: &BTreeMap<String, String>,
        version: u64,
        instance_id: &str,
        image: &godwit_image::Image,
    ) -> Result<(), DbError> {
        let config = serde_json::to_string(config)?;
        let secrets = serde_json::to_string(secrets)?;
        let image_json = serde_json::to_string(image)?;
        self.with(|c| {
            c.execute(
                "UPDATE machines SET config = ?1, secrets = ?2, version = ?3, instance_id = ?4,
                 image = ?5, image_digest = ?6, restart_count = 0, updated_at = ?7
                 WHERE id = ?8 AND version < ?3",
                params![
                    config,
                    secrets,
                    version,
                    instance_id,
                    image_json,
                    image.manifest_digest,
                    godwit_types::now_ms(),
                    id
                ],
            )?;
            Ok(())
        })
    }

    /// Deletes a machine and its events.
    pub(crate) fn delete_machine(&self, id: &str) -> Result<(), DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM machines WHERE id = ?1", [id])?;
            tx.execute("DELETE FROM events WHERE machine_id = ?1", [id])?;
            tx.commit()?;
            Ok(())
        })
    }
}
