//! Service checks gate routing: critical machines get nothing, machines whose checks have
//! not passed yet only when no passing machine is left. Check results are published into
//! the real bucket, as the agent does.

use godwit_types::{CheckResult, CheckStatus, MachineRecord, MachineState};

use crate::support::{Backend, DEADLINE, Harness, HarnessBuilder, record};

fn with_check(mut record: MachineRecord, status: CheckStatus) -> MachineRecord {
    record.checks = vec![
        CheckResult {
            name: "servicecheck-00-http-8080".to_owned(),
            status,
            output: String::new(),
            updated_at: 0,
        },
        // Not a service check: never gates routing.
        CheckResult {
            name: "informational".to_owned(),
            status: CheckStatus::Critical,
            output: String::new(),
            updated_at: 0,
        },
    ];
    record
}

/// Polls until `want` serves a request of `app`.
async fn until_served_by(harness: &Harness, app: &str, want: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let reply = harness.get(app, "/").await?;
        if reply.status == 200 && reply.served_by() == want {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{want} never served: {reply:?}"
        );
    }
}

#[tokio::test]
async fn critical_machines_are_skipped_and_warning_ones_are_a_fallback() -> anyhow::Result<()> {
    let passing = Backend::start("passing").await;
    let warning = Backend::start("warning").await;
    let critical = Backend::start("critical").await;
    let app = "checked";
    let passing_record = with_check(
        record("m-passing", app, passing.addr, MachineState::Started),
        CheckStatus::Passing,
    );
    let warning_record = with_check(
        record("m-warning", app, warning.addr, MachineState::Started),
        CheckStatus::Warning,
    );
    let critical_record = with_check(
        record("m-critical", app, critical.addr, MachineState::Started),
        CheckStatus::Critical,
    );
    let harness = HarnessBuilder::new()
        .record(passing_record.clone())
        .record(warning_record.clone())
        .record(critical_record)
        .start()
        .await?;

    for _ in 0..30 {
        let reply = harness.get(app, "/").await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.served_by(), "passing");
    }
    assert_eq!(warning.served() + critical.served(), 0);

    // The passing machine fails its check: the one not yet checked takes over.
    let failed = with_check(passing_record.clone(), CheckStatus::Critical);
    let key = |r: &MachineRecord| godwit_state::key_for(&r.id);
    harness.bucket.put(&key(&failed), &failed).await?;
    until_served_by(&harness, app, "warning").await?;
    for _ in 0..10 {
        assert_eq!(harness.get(app, "/").await?.served_by(), "warning");
    }

    // Every machine critical: no candidate, a 503 with a code.
    let failed = with_check(warning_record, CheckStatus::Critical);
    harness.bucket.put(&key(&failed), &failed).await?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let reply = loop {
        let reply = harness.get(app, "/").await?;
        if reply.status == 503 || tokio::time::Instant::now() >= deadline {
            break reply;
        }
    };
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.headers["godwit-proxy-error"], "PR01");
    assert_eq!(critical.served(), 0);

    // Healthy again: back in rotation.
    harness
        .bucket
        .put(&key(&passing_record), &passing_record)
        .await?;
    until_served_by(&harness, app, "passing").await?;
    Ok(())
}
