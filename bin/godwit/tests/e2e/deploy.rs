//! The quickstart path: deploy the example, get an answer from the machine, read its logs, exec
//! in it, stop and start it, then `dev down` leaves nothing behind.

use std::time::Duration;

use godwit_types::MachineState;

use crate::harness::{DevCluster, REGION, http_get, wait_until};

#[test]
fn deploy_answers_logs_exec_stop_start_and_down_leaves_nothing() {
    let mut cluster = DevCluster::start();
    let app_dir = cluster.app_dir(&[]);

    let deploy_output = cluster.must_godwit(&app_dir, &["deploy"]);
    let machine = cluster.only_machine();
    assert_eq!(machine.state, MachineState::Started, "{machine:#?}");
    assert_eq!(machine.region, REGION);
    let url = format!("http://{}:8080", machine.private_ip);
    assert!(
        deploy_output.contains(&url),
        "deploy must end with the app's URL {url}:\n{deploy_output}"
    );

    // The answer comes from the machine, naming itself.
    let answer = cluster.wait_http(&machine, "/");
    assert!(
        answer.starts_with(&format!("hello from machine {} in {REGION}", machine.id)),
        "{answer}"
    );
    assert_eq!(cluster.wait_http(&machine, "/healthz"), "ok");

    // Logs show the startup line.
    let logs = wait_until(
        "the startup line in `godwit logs`",
        Duration::from_secs(30),
        || {
            let output = cluster.godwit(&app_dir, &["logs"]);
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            stdout
                .contains("hello listening on 0.0.0.0:8080")
                .then_some(stdout)
        },
    );
    assert!(
        logs.contains(&machine.id),
        "log lines name their machine:\n{logs}"
    );

    // Exec runs inside the machine, with its environment.
    let exec = cluster.must_godwit(
        &app_dir,
        &[
            "machine",
            "exec",
            &machine.id,
            "--",
            "/hello",
            "env",
            "FLY_MACHINE_ID",
        ],
    );
    assert!(exec.contains(&machine.id), "exec output: {exec}");

    // Stop: the machine stops answering; start: it answers again.
    cluster.must_godwit(&app_dir, &["machine", "stop", &machine.id]);
    cluster.wait_state(&machine.id, MachineState::Stopped);
    assert_eq!(
        http_get(&format!("{url}/healthz")),
        None,
        "a stopped machine answered"
    );
    cluster.must_godwit(&app_dir, &["machine", "start", &machine.id]);
    let started = cluster.wait_state(&machine.id, MachineState::Started);
    assert_eq!(started.private_ip, machine.private_ip);
    let answer = cluster.wait_http(&started, "/");
    assert!(answer.contains(&machine.id), "{answer}");

    let down = cluster.down();
    assert!(
        down.contains(&machine.id),
        "down names what it destroyed:\n{down}"
    );
}
