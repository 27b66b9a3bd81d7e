//! App secrets, sealed by the caller before they get here. Every set or unset bumps the app's
//! secrets version; each secret remembers the version that last set it.

use rusqlite::params;

use super::{Db, now_ms};

/// One stored secret (still sealed).
#[derive(Debug, Clone)]
pub(crate) struct SecretRow {
    pub(crate) name: String,
    pub(crate) version: u64,
    pub(crate) nonce: Vec<u8>,
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) digest: String,
    pub(crate) created_at: u64,
}

/// An app's secrets at one version.
#[derive(Debug, Clone)]
pub(crate) struct SecretsVersion {
    pub(crate) version: u64,
    pub(crate) secrets: Vec<SecretRow>,
}

/// A secret to store: name, nonce, ciphertext, digest.
pub(crate) type SealedSecret = (String, Vec<u8>, Vec<u8>, String);

impl Db {
    /// Stores `secrets` as one new version of the app's secrets and returns it.
    pub(crate) fn set_secrets(
        &self,
        app_id: i64,
        secrets: &[SealedSecret],
    ) -> rusqlite::Result<SecretsVersion> {
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let version = bump_version(&tx, app_id)?;
            let now = now_ms();
            for (name, nonce, ciphertext, digest) in secrets {
                tx.execute(
                    "INSERT INTO secrets (app_id, name, version, nonce, ciphertext, digest,
                                          created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (app_id, name) DO UPDATE SET version = excluded.version,
                        nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                        digest = excluded.digest, created_at = excluded.created_at",
                    params![app_id, name, version, nonce, ciphertext, digest, now],
                )?;
            }
            tx.commit()?;
        }
        self.secrets(app_id)
    }

    /// Removes secret `name`; `Ok(None)` when the app has no such secret.
    pub(crate) fn unset_secret(
        &self,
        app_id: i64,
        name: &str,
    ) -> rusqlite::Result<Option<SecretsVersion>> {
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let removed = tx.execute(
                "DELETE FROM secrets WHERE app_id = ?1 AND name = ?2",
                params![app_id, name],
            )?;
            if removed == 0 {
                return Ok(None);
            }
            bump_version(&tx, app_id)?;
            tx.commit()?;
        }
        self.secrets(app_id).map(Some)
    }

    pub(crate) fn secrets(&self, app_id: i64) -> rusqlite::Result<SecretsVersion> {
        let conn = self.conn();
        let version: u64 = conn.query_row(
            "SELECT secrets_version FROM apps WHERE id = ?1",
            params![app_id],
            |row| row.get(0),
        )?;
        let mut stmt = conn.prepare(
            "SELECT name, version, nonce, ciphertext, digest, created_at FROM secrets
             WHERE app_id = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![app_id], |row| {
            Ok(SecretRow {
                name: row.get(0)?,
                version: row.get(1)?,
                nonce: row.get(2)?,
                ciphertext: row.get(3)?,
                digest: row.get(4)?,
                created_at: row.get(5)?,
            })
        })?;
        Ok(SecretsVersion {
            version,
            secrets: rows.collect::<rusqlite::Result<_>>()?,
        })
    }
}

fn bump_version(tx: &rusqlite::Transaction<'_>, app_id: i64) -> rusqlite::Result<u64> {
    tx.query_row(
        "UPDATE apps SET secrets_version = secrets_version + 1 WHERE id = ?1
         RETURNING secrets_version",
        params![app_id],
        |row| row.get(0),
    )
}
