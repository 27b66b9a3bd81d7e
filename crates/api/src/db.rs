//! The control plane's SQLite database: one connection behind a std mutex, held only for the
//! few microseconds a statement takes and never across an `.await`.
//!
//! It stores what the API owns (orgs, tokens, apps, secrets, certificates, hosts) and the routing table
//! (machine id → host); never a copy of machine state, which belongs to the agents.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension as _, params};

mod apps;
mod certs;
mod secrets;

pub(crate) use apps::{AppRow, MachineRow};
pub(crate) use certs::{CertRow, CertSource, StoredCert};
pub(crate) use secrets::SecretsVersion;

/// Schema migrations; `PRAGMA user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE orgs (
    id INTEGER PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    org_id INTEGER NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL CHECK (kind IN ('admin', 'join')),
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE apps (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    org_id INTEGER NOT NULL REFERENCES orgs(id),
    secrets_version INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE hosts (
    host_id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    agent_url TEXT NOT NULL,
    token_nonce BLOB NOT NULL,
    token_ciphertext BLOB NOT NULL,
    cpus INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL,
    registered_at INTEGER NOT NULL
);
CREATE TABLE machines (
    id TEXT PRIMARY KEY,
    app_id INTEGER NOT NULL REFERENCES apps(id),
    name TEXT NOT NULL,
    host_id TEXT NOT NULL REFERENCES hosts(host_id),
    region TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX machines_by_app ON machines(app_id);
CREATE TABLE secrets (
    app_id INTEGER NOT NULL REFERENCES apps(id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    digest TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, name)
);
",
    r"
CREATE TABLE certificates (
    hostname TEXT PRIMARY KEY,
    app_id INTEGER NOT NULL REFERENCES apps(id),
    source TEXT NOT NULL CHECK (source IN ('custom', 'acme')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    error TEXT,
    fullchain TEXT,
    key_nonce BLOB,
    key_ciphertext BLOB,
    issuer TEXT,
    not_after INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX certificates_by_app ON certificates(app_id);
",
    // Renewal of ACME certificates: the challenge to order again with, and the backoff of
    // failed renewals.
    r"
ALTER TABLE certificates ADD COLUMN challenge TEXT;
ALTER TABLE certificates ADD COLUMN renew_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificates ADD COLUMN retry_at INTEGER;
",
];

/// The database handle shared by all handlers.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Mutex<Connection>,
}

/// Which calls a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Every `/v1` call of its organisation.
    Admin,
    /// Only `POST /v1/hosts/register`.
    Join,
}

/// A token found by its hash.
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    pub(crate) org_id: i64,
    pub(crate) org_slug: String,
    pub(crate) kind: TokenKind,
    pub(crate) prefix: String,
}

/// A registered host; the agent token is still sealed.
#[derive(Debug, Clone)]
pub(crate) struct HostRow {
    pub(crate) host_id: String,
    pub(crate) region: String,
    pub(crate) agent_url: String,
    pub(crate) token_nonce: Vec<u8>,
    pub(crate) token_ciphertext: Vec<u8>,
    pub(crate) cpus: u32,
    pub(crate) memory_mb: u64,
    pub(crate) registered_at: u64,
}

impl Db {
    /// Opens (creating if needed) the database and runs pending migrations.
    pub(crate) fn open(path: &Path) -> rusqlite::Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `init` has run: an organisation exists.
    pub(crate) fn is_initialised(&self) -> rusqlite::Result<bool> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM orgs", [], |row| row.get(0))?;
        Ok(n > 0)
    }

    /// Creates an organisation with an admin and a join token (given as hashes), atomically.
    pub(crate) fn create_org(
        &self,
        slug: &str,
        tokens: &[(TokenKind, String, String)],
    ) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO orgs (slug, created_at) VALUES (?1, ?2)",
            params![slug, now],
        )?;
        let org_id = tx.last_insert_rowid();
        for (kind, hash, prefix) in tokens {
            tx.execute(
                "INSERT INTO tokens (org_id, kind, hash, prefix, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![org_id, kind.as_str(), hash, prefix, now],
            )?;
        }
        tx.commit()
    }

    pub(crate) fn find_token(&self, hash: &str) -> rusqlite::Result<Option<TokenRow>> {
        self.conn()
            .query_row(
                "SELECT t.org_id, o.slug, t.kind, t.prefix FROM tokens t
                 JOIN orgs o ON o.id = t.org_id WHERE t.hash = ?1",
                params![hash],
                |row| {
                    let kind: String = row.get(2)?;
                    Ok(TokenRow {
                        org_id: row.get(0)?,
                        org_slug: row.get(1)?,
                        kind: if kind == "join" {
                            TokenKind::Join
                        } else {
                            TokenKind::Admin
                        },
                        prefix: row.get(3)?,
                    })
                },
            )
            .optional()
    }

    /// Inserts or replaces a host (an agent re-registers after every restart).
    pub(crate) fn upsert_host(&self, host: &HostRow) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO hosts (host_id, region, agent_url, token_nonce, token_ciphertext, cpus,
                                memory_mb, registered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (host_id) DO UPDATE SET region = excluded.region,
                agent_url = excluded.agent_url, token_nonce = excluded.token_nonce,
                token_ciphertext = excluded.token_ciphertext, cpus = excluded.cpus,
                memory_mb = excluded.memory_mb, registered_at = excluded.registered_at",
            params![
                host.host_id,
                host.region,
                host.agent_url,
                host.token_nonce,
                host.token_ciphertext,
                host.cpus,
                host.memory_mb,
                host.registered_at
            ],
        )?;
        Ok(())
    }

    pub(crate) fn hosts(&self) -> rusqlite::Result<Vec<HostRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT host_id, region, agent_url, token_nonce, token_ciphertext, cpus, memory_mb,
                    registered_at FROM hosts ORDER BY host_id",
        )?;
        let rows = stmt.query_map([], host_row)?;
        rows.collect()
    }

    pub(crate) fn host(&self, host_id: &str) -> rusqlite::Result<Option<HostRow>> {
        self.conn()
            .query_row(
                "SELECT host_id, region, agent_url, token_nonce, token_ciphertext, cpus,
                        memory_mb, registered_at FROM hosts WHERE host_id = ?1",
                params![host_id],
                host_row,
            )
            .optional()
    }
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Join => "join",
        }
    }
}

fn host_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<HostRow> {
    Ok(HostRow {
        host_id: row.get(0)?,
        region: row.get(1)?,
        agent_url: row.get(2)?,
        token_nonce: row.get(3)?,
        token_ciphertext: row.get(4)?,
        cpus: row.get(5)?,
        memory_mb: row.get(6)?,
        registered_at: row.get(7)?,
    })
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let current: usize = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tracing::info!(version = idx + 1, "applying database migration");
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", idx + 1)?;
    }
    tx.commit()
}

/// Milliseconds since the Unix epoch: every `created_at` of this API.
pub(crate) fn now_ms() -> u64 {
    godwit_types::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.db");
        let db = Db::open(&path).unwrap();
        assert!(!db.is_initialised().unwrap());
        db.create_org("acme", &[(TokenKind::Join, "h".into(), "gw_x".into())])
            .unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        assert!(db.is_initialised().unwrap());
        let token = db.find_token("h").unwrap().unwrap();
        assert_eq!(token.org_slug, "acme");
        assert_eq!(token.kind, TokenKind::Join);
        let version: usize = db
            .conn()
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }
}
