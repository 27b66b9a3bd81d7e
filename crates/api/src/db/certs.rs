//! Certificates of custom hostnames: one row per hostname (unique across organisations),
//! the private key sealed by the caller before it gets here.

use rusqlite::{OptionalExtension as _, params};

use super::{Db, now_ms};

/// Where a certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertSource {
    Custom,
    Acme,
}

/// Where a certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertStatus {
    /// An ACME order is in progress.
    Pending,
    Ready,
    Failed,
}

/// One certificate row; the key is still sealed.
#[derive(Debug, Clone)]
pub(crate) struct CertRow {
    pub(crate) hostname: String,
    pub(crate) app_id: i64,
    pub(crate) app_name: String,
    pub(crate) org_id: i64,
    pub(crate) source: CertSource,
    pub(crate) status: CertStatus,
    pub(crate) error: Option<String>,
    pub(crate) fullchain: Option<String>,
    pub(crate) key_nonce: Option<Vec<u8>>,
    pub(crate) key_ciphertext: Option<Vec<u8>>,
    pub(crate) issuer: Option<String>,
    pub(crate) not_after: Option<u64>,
    pub(crate) created_at: u64,
    pub(crate) updated_at: u64,
}

/// A certificate to store as ready: the chain, the sealed key, and what the listing shows.
#[derive(Debug, Clone)]
pub(crate) struct StoredCert {
    pub(crate) fullchain: String,
    pub(crate) key_nonce: Vec<u8>,
    pub(crate) key_ciphertext: Vec<u8>,
    pub(crate) issuer: String,
    pub(crate) not_after: u64,
}

const CERT_SELECT: &str = "SELECT c.hostname, c.app_id, a.name, a.org_id, c.source, c.status,
        c.error, c.fullchain, c.key_nonce, c.key_ciphertext, c.issuer, c.not_after,
        c.created_at, c.updated_at
    FROM certificates c JOIN apps a ON a.id = c.app_id";

impl Db {
    /// The certificate of `hostname`, whatever app or organisation holds it.
    pub(crate) fn cert(&self, hostname: &str) -> rusqlite::Result<Option<CertRow>> {
        self.conn()
            .query_row(
                &format!("{CERT_SELECT} WHERE c.hostname = ?1"),
                params![hostname],
                cert_row,
            )
            .optional()
    }

    /// Every certificate that has a chain and a key, to publish again at start.
    pub(crate) fn servable_certs(&self) -> rusqlite::Result<Vec<CertRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{CERT_SELECT} WHERE c.fullchain IS NOT NULL ORDER BY c.hostname"
        ))?;
        let rows = stmt.query_map([], cert_row)?;
        rows.collect()
    }

    pub(crate) fn certs(&self, app_id: i64) -> rusqlite::Result<Vec<CertRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{CERT_SELECT} WHERE c.app_id = ?1 ORDER BY c.hostname"
        ))?;
        let rows = stmt.query_map(params![app_id], cert_row)?;
        rows.collect()
    }

    /// Stores a ready certificate for `hostname` of app `app_id`, replacing what that app had
    /// for it. `Ok(false)` when another app holds the hostname.
    pub(crate) fn put_ready_cert(
        &self,
        app_id: i64,
        hostname: &str,
        source: CertSource,
        cert: &StoredCert,
    ) -> rusqlite::Result<bool> {
        let now = now_ms();
        let changed = self.conn().execute(
            "INSERT INTO certificates (hostname, app_id, source, status, error, fullchain,
                 key_nonce, key_ciphertext, issuer, not_after, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'ready', NULL, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT (hostname) DO UPDATE SET source = excluded.source, status = 'ready',
                error = NULL, fullchain = excluded.fullchain, key_nonce = excluded.key_nonce,
                key_ciphertext = excluded.key_ciphertext, issuer = excluded.issuer,
                not_after = excluded.not_after, updated_at = excluded.updated_at
             WHERE certificates.app_id = excluded.app_id",
            params![
                hostname,
                app_id,
                source.as_str(),
                cert.fullchain,
                cert.key_nonce,
                cert.key_ciphertext,
                cert.issuer,
                cert.not_after,
                now
            ],
        )?;
        Ok(changed > 0)
    }

    /// Marks `hostname` as having an ACME order in progress for app `app_id`, keeping any
    /// certificate it already has. `Ok(false)` when another app holds the hostname, or an
    /// order for it is already in progress.
    pub(crate) fn start_acme(&self, app_id: i64, hostname: &str) -> rusqlite::Result<bool> {
        let now = now_ms();
        let changed = self.conn().execute(
            "INSERT INTO certificates (hostname, app_id, source, status, created_at, updated_at)
             VALUES (?1, ?2, 'acme', 'pending', ?3, ?3)
             ON CONFLICT (hostname) DO UPDATE SET status = 'pending', error = NULL,
                updated_at = excluded.updated_at
             WHERE certificates.app_id = excluded.app_id AND certificates.status != 'pending'",
            params![hostname, app_id, now],
        )?;
        Ok(changed > 0)
    }

    /// Records why an ACME order failed. A certificate the hostname already had stays (and
    /// is still served); only the status and error change.
    pub(crate) fn fail_acme(&self, hostname: &str, error: &str) -> rusqlite::Result<()> {
        self.conn().execute(
            "UPDATE certificates SET status = 'failed', error = ?2, updated_at = ?3
             WHERE hostname = ?1",
            params![hostname, error, now_ms()],
        )?;
        Ok(())
    }

    /// Marks the orders left pending by a previous run as failed; how many there were.
    pub(crate) fn fail_interrupted_acme(&self) -> rusqlite::Result<usize> {
        self.conn().execute(
            "UPDATE certificates SET status = 'failed',
                error = 'interrupted: the api restarted during the order', updated_at = ?1
             WHERE status = 'pending'",
            params![now_ms()],
        )
    }

    /// Deletes the certificate of `hostname` held by app `app_id`; whether there was one.
    pub(crate) fn delete_cert(&self, app_id: i64, hostname: &str) -> rusqlite::Result<bool> {
        let removed = self.conn().execute(
            "DELETE FROM certificates WHERE app_id = ?1 AND hostname = ?2",
            params![app_id, hostname],
        )?;
        Ok(removed > 0)
    }
}

impl CertSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Acme => "acme",
        }
    }
}

impl CertStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
}

fn cert_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CertRow> {
    let source: String = row.get(4)?;
    let status: String = row.get(5)?;
    Ok(CertRow {
        hostname: row.get(0)?,
        app_id: row.get(1)?,
        app_name: row.get(2)?,
        org_id: row.get(3)?,
        source: if source == "acme" {
            CertSource::Acme
        } else {
            CertSource::Custom
        },
        status: match status.as_str() {
            "pending" => CertStatus::Pending,
            "failed" => CertStatus::Failed,
            _ => CertStatus::Ready,
        },
        error: row.get(6)?,
        fullchain: row.get(7)?,
        key_nonce: row.get(8)?,
        key_ciphertext: row.get(9)?,
        issuer: row.get(10)?,
        not_after: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
    })
}
