//! Certificates of custom hostnames: one row per hostname (unique across organisations),
//! the private key sealed by the caller before it gets here. ACME rows also keep the
//! challenge they were ordered with and how their renewals fare.

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
    /// `http-01` or `tls-alpn-01`: what the last ACME order used, and renewals use.
    pub(crate) challenge: Option<String>,
    /// Renewals that failed since the last certificate was stored.
    pub(crate) renew_failures: u32,
    /// Unix ms before which a failed renewal is not tried again.
    pub(crate) retry_at: Option<u64>,
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
        c.created_at, c.updated_at, c.challenge, c.renew_failures, c.retry_at
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

    /// ACME certificates that have a chain and no order in progress: what renewal checks.
    pub(crate) fn renewable_certs(&self) -> rusqlite::Result<Vec<CertRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{CERT_SELECT} WHERE c.source = 'acme' AND c.fullchain IS NOT NULL
                AND c.status != 'pending' ORDER BY c.hostname"
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
                not_after = excluded.not_after, updated_at = excluded.updated_at,
                renew_failures = 0, retry_at = NULL
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

    /// Marks `hostname` as having an ACME order by `challenge` in progress for app `app_id`,
    /// keeping any certificate it already has. `Ok(false)` when another app holds the
    /// hostname, or an order for it is already in progress.
    pub(crate) fn start_acme(
        &self,
        app_id: i64,
        hostname: &str,
        challenge: &str,
    ) -> rusqlite::Result<bool> {
        let now = now_ms();
        let changed = self.conn().execute(
            "INSERT INTO certificates (hostname, app_id, source, status, challenge, created_at,
                 updated_at)
             VALUES (?1, ?2, 'acme', 'pending', ?3, ?4, ?4)
             ON CONFLICT (hostname) DO UPDATE SET status = 'pending', error = NULL,
                challenge = excluded.challenge, updated_at = excluded.updated_at
             WHERE certificates.app_id = excluded.app_id AND certificates.status != 'pending'",
            params![hostname, app_id, challenge, now],
        )?;
        Ok(changed > 0)
    }

    /// Marks the ACME certificate of `hostname` as being renewed (status `pending`; it is
    /// still served). `Ok(false)` when an order for it is already in progress.
    pub(crate) fn start_renewal(&self, hostname: &str) -> rusqlite::Result<bool> {
        let changed = self.conn().execute(
            "UPDATE certificates SET status = 'pending', error = NULL, updated_at = ?2
             WHERE hostname = ?1 AND source = 'acme' AND status != 'pending'",
            params![hostname, now_ms()],
        )?;
        Ok(changed > 0)
    }

    /// Records a failed renewal of `hostname`: why, one more failure in a row, and not to try
    /// again before `retry_at` (unix ms). The certificate stays and is still served.
    pub(crate) fn fail_renewal(
        &self,
        hostname: &str,
        error: &str,
        retry_at: u64,
    ) -> rusqlite::Result<()> {
        self.conn().execute(
            "UPDATE certificates SET status = 'failed', error = ?2, updated_at = ?3,
                renew_failures = renew_failures + 1, retry_at = ?4
             WHERE hostname = ?1",
            params![hostname, error, now_ms(), retry_at],
        )?;
        Ok(())
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
        challenge: row.get(14)?,
        renew_failures: row.get(15)?,
        retry_at: row.get(16)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::TokenKind;

    fn stored(not_after: u64) -> StoredCert {
        StoredCert {
            fullchain: "chain".to_owned(),
            key_nonce: vec![1],
            key_ciphertext: vec![2],
            issuer: "CN=test".to_owned(),
            not_after,
        }
    }

    #[test]
    fn only_acme_certificates_are_renewed_and_failures_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("api.db")).unwrap();
        db.create_org("acme", &[(TokenKind::Admin, "h".into(), "gw_x".into())])
            .unwrap();
        let org_id = db.find_token("h").unwrap().unwrap().org_id;
        let app = db.create_app(org_id, "shop").unwrap().unwrap();
        db.put_ready_cert(app.id, "up.example.com", CertSource::Custom, &stored(7))
            .unwrap();
        assert!(
            db.start_acme(app.id, "le.example.com", "tls-alpn-01")
                .unwrap()
        );
        // Pending without a certificate yet: nothing to renew.
        assert!(db.renewable_certs().unwrap().is_empty());
        db.put_ready_cert(app.id, "le.example.com", CertSource::Acme, &stored(9))
            .unwrap();
        let renewable = db.renewable_certs().unwrap();
        let names: Vec<&str> = renewable.iter().map(|c| c.hostname.as_str()).collect();
        assert_eq!(
            names,
            ["le.example.com"],
            "uploaded certificates are not renewed"
        );
        assert_eq!(renewable[0].challenge.as_deref(), Some("tls-alpn-01"));
        assert!(!db.start_renewal("up.example.com").unwrap());

        assert!(db.start_renewal("le.example.com").unwrap());
        assert!(
            !db.start_renewal("le.example.com").unwrap(),
            "one at a time"
        );
        assert!(!db.start_acme(app.id, "le.example.com", "http-01").unwrap());
        db.fail_renewal("le.example.com", "renewal failed: no", 1234)
            .unwrap();
        db.fail_renewal("le.example.com", "renewal failed: no", 5678)
            .unwrap();
        let failed = db.cert("le.example.com").unwrap().unwrap();
        assert_eq!(failed.status, CertStatus::Failed);
        assert_eq!((failed.renew_failures, failed.retry_at), (2, Some(5678)));
        assert_eq!(
            failed.fullchain.as_deref(),
            Some("chain"),
            "the old one stays"
        );
        assert_eq!(failed.not_after, Some(9));

        // A new certificate clears the failures.
        db.put_ready_cert(app.id, "le.example.com", CertSource::Acme, &stored(11))
            .unwrap();
        let renewed = db.cert("le.example.com").unwrap().unwrap();
        assert_eq!(renewed.status, CertStatus::Ready);
        assert_eq!((renewed.renew_failures, renewed.retry_at), (0, None));
        assert_eq!(renewed.error, None);
    }
}
