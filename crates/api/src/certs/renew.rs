//! Renewal of ACME certificates: a task checks every `ApiConfig::acme_renew_every` for
//! certificates this API issued whose renewal window has opened ([`RenewBefore`]; by default
//! the last third of their lifetime, as Let's Encrypt advises) and orders each again with the
//! challenge it was issued with, one at a time. The certificate being renewed keeps being
//! served: only a new one that is stored replaces it, republished so the proxies reload it.
//! A failure is recorded on the row (status `failed`, the reason in `error`) and retried after
//! a backoff that doubles with each failure. Uploaded certificates are never renewed.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use godwit_types::AcmeChallengeKind;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Certs, validate};
use crate::crypto::DataKey;
use crate::db::{CertRow, Db, now_ms};

/// Checks between renewal attempts of one certificate grow as `every * 2^(failures - 1)`, up
/// to this power of two.
const MAX_BACKOFF_DOUBLINGS: u32 = 5;

/// How long before its expiry an ACME certificate is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewBefore {
    /// This share (`numerator / denominator`, below 1) of the certificate's lifetime before
    /// it ends.
    Share { numerator: u64, denominator: u64 },
    /// This long before it ends.
    Duration(Duration),
}

/// Why a `--acme-renew-before` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid renewal window {input:?}: give a share of the certificate's lifetime below 1 \
     (\"1/3\", \"0.25\") or a duration (\"30days\", \"720h\")"
)]
pub struct RenewBeforeError {
    input: String,
}

/// Starts the renewal task when `certs` can issue by ACME; it stops when `cancel` fires.
pub(crate) fn spawn(
    certs: &Certs,
    db: Arc<Db>,
    key: DataKey,
    before: RenewBefore,
    every: Duration,
    cancel: CancellationToken,
) {
    if !certs.acme_enabled() {
        return;
    }
    let certs = certs.clone();
    let span = tracing::info_span!("acme_renewal");
    tokio::spawn(
        async move {
            tracing::info!(before = %before, every = ?every, "acme renewal checks started");
            // A zero period would panic; the CLI refuses it, library callers get 1 ms.
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                renew_due(&certs, &db, &key, before, every, &cancel).await;
            }
        }
        .instrument(span),
    );
}

/// Renews, one after the other, every certificate that is due and not waiting out a backoff.
async fn renew_due(
    certs: &Certs,
    db: &Arc<Db>,
    key: &DataKey,
    before: RenewBefore,
    every: Duration,
    cancel: &CancellationToken,
) {
    let rows = match db.renewable_certs() {
        Ok(rows) => rows,
        Err(error) => {
            tracing::error!(%error, "failed to list certificates to renew");
            return;
        }
    };
    for row in rows {
        if cancel.is_cancelled() {
            return;
        }
        let now = now_ms();
        let due = renew_at(&row, before).is_some_and(|at| at <= now);
        let waiting = row.retry_at.is_some_and(|at| now < at);
        if !due || waiting {
            continue;
        }
        match db.start_renewal(&row.hostname) {
            Ok(true) => {}
            // An order someone asked for is running: it renews the certificate.
            Ok(false) => continue,
            Err(error) => {
                tracing::error!(%error, hostname = %row.hostname, "failed to start a renewal");
                continue;
            }
        }
        let span = tracing::info_span!("renew", app = %row.app_name, hostname = %row.hostname);
        renew_one(certs, db, key, &row, every, cancel)
            .instrument(span)
            .await;
    }
}

/// Orders `row`'s certificate again; on failure records why and when to try next.
async fn renew_one(
    certs: &Certs,
    db: &Db,
    key: &DataKey,
    row: &CertRow,
    every: Duration,
    cancel: &CancellationToken,
) {
    tracing::info!(not_after = ?row.not_after, "renewing an acme certificate");
    let kind = match row.challenge.as_deref() {
        Some("tls-alpn-01") => AcmeChallengeKind::TlsAlpn01,
        _ => AcmeChallengeKind::Http01,
    };
    let app = (row.app_id, row.app_name.clone());
    let outcome = certs.order(db, key, &app, &row.hostname, kind, cancel);
    let Err(reason) = outcome.await else {
        return;
    };
    let failures = row.renew_failures.saturating_add(1);
    let backoff = backoff(every, failures);
    let retry_at = now_ms().saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX));
    let error = format!(
        "renewal failed ({failures} in a row; the current certificate is still served, next \
         try in {}): {reason}",
        humantime::format_duration(backoff)
    );
    tracing::warn!(error = %reason, failures, retry_in = ?backoff, "acme renewal failed");
    if let Err(error) = db.fail_renewal(&row.hostname, &error, retry_at) {
        tracing::error!(%error, "failed to record an acme renewal failure");
    }
}

/// When the certificate of `row` is due for renewal (unix ms), from its leaf's validity.
fn renew_at(row: &CertRow, before: RenewBefore) -> Option<u64> {
    let facts = validate::facts(row.fullchain.as_deref()?).ok()?;
    Some(before.renew_at(facts.not_before, facts.not_after))
}

/// The wait after the `failures`th failure in a row: `every`, doubling with each failure.
fn backoff(every: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(MAX_BACKOFF_DOUBLINGS);
    every.saturating_mul(1 << doublings)
}

// === impl RenewBefore ===

impl RenewBefore {
    /// When a certificate valid from `not_before` to `not_after` (unix ms) is due.
    pub(crate) fn renew_at(self, not_before: u64, not_after: u64) -> u64 {
        let window = match self {
            RenewBefore::Share {
                numerator,
                denominator,
            } => {
                let lifetime = u128::from(not_after.saturating_sub(not_before));
                let share = lifetime * u128::from(numerator) / u128::from(denominator.max(1));
                u64::try_from(share).unwrap_or(u64::MAX)
            }
            RenewBefore::Duration(window) => u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        };
        not_after.saturating_sub(window)
    }
}

impl Default for RenewBefore {
    /// A third of the lifetime: Let's Encrypt's advice (day 60 of 90).
    fn default() -> Self {
        RenewBefore::Share {
            numerator: 1,
            denominator: 3,
        }
    }
}

impl FromStr for RenewBefore {
    type Err = RenewBeforeError;

    /// `a/b` or `0.x` for a share of the lifetime, otherwise a duration (`30days`, `720h`).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        let refused = || RenewBeforeError {
            input: input.to_owned(),
        };
        let share = if let Some((numerator, denominator)) = text.split_once('/') {
            let numerator = numerator.trim().parse::<u64>().map_err(|_| refused())?;
            let denominator = denominator.trim().parse::<u64>().map_err(|_| refused())?;
            Some((numerator, denominator))
        } else if let Some(digits) = text.strip_prefix("0.").or_else(|| text.strip_prefix('.')) {
            let valid = !digits.is_empty()
                && digits.len() <= 9
                && digits.bytes().all(|b| b.is_ascii_digit());
            if !valid {
                return Err(refused());
            }
            let numerator = digits.parse::<u64>().map_err(|_| refused())?;
            let exponent = u32::try_from(digits.len()).map_err(|_| refused())?;
            Some((numerator, 10u64.pow(exponent)))
        } else {
            None
        };
        match share {
            Some((numerator, denominator)) if numerator > 0 && numerator < denominator => {
                Ok(RenewBefore::Share {
                    numerator,
                    denominator,
                })
            }
            Some(_) => Err(refused()),
            None => match humantime::parse_duration(text) {
                Ok(window) if !window.is_zero() => Ok(RenewBefore::Duration(window)),
                _ => Err(refused()),
            },
        }
    }
}

impl fmt::Display for RenewBefore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenewBefore::Share {
                numerator,
                denominator,
            } => write!(f, "{numerator}/{denominator}"),
            RenewBefore::Duration(window) => {
                write!(f, "{}", humantime::format_duration(*window))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    #[test]
    fn parses_shares_and_durations() {
        let share = |numerator, denominator| RenewBefore::Share {
            numerator,
            denominator,
        };
        assert_eq!("1/3".parse(), Ok(share(1, 3)));
        assert_eq!(" 0.25 ".parse(), Ok(share(25, 100)));
        assert_eq!(".5".parse(), Ok(share(5, 10)));
        assert_eq!(
            "30days".parse(),
            Ok(RenewBefore::Duration(Duration::from_secs(30 * 24 * 3600)))
        );
        assert_eq!(RenewBefore::default(), share(1, 3));
        assert_eq!(RenewBefore::default().to_string(), "1/3");
        for bad in [
            "", "1", "3/3", "4/3", "0/3", "1/0", "0.", "0.x", "1.5", "0s", "soon",
        ] {
            let error = bad.parse::<RenewBefore>().unwrap_err().to_string();
            assert!(
                error.contains("share of the certificate's lifetime"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn renews_a_share_or_a_duration_before_the_end() {
        // Let's Encrypt: 90 days, renewed on day 60.
        let (start, end) = (1_000, 1_000 + 90 * DAY_MS);
        assert_eq!(
            RenewBefore::default().renew_at(start, end),
            start + 60 * DAY_MS
        );
        let week = RenewBefore::Duration(Duration::from_secs(7 * 24 * 3600));
        assert_eq!(week.renew_at(start, end), end - 7 * DAY_MS);
        // A window longer than the lifetime: due from the start (and never before 1970).
        let year = RenewBefore::Duration(Duration::from_secs(365 * 24 * 3600));
        assert_eq!(year.renew_at(start, end), 0);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let every = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(every, n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 1920, 1920]);
    }
}
