//! The REST API through the real API and agent: leases, wait timeouts, exit events and
//! helpful 4xx bodies.

use std::time::Duration;

use godwit_types::MachineEvent;

use crate::harness::{APP, DevCluster, http_get, wait_until};

#[test]
fn lease_wait_exit_event_and_bad_bodies() {
    let mut cluster = DevCluster::start();
    let app_dir = cluster.app_dir(&[]);
    cluster.must_godwit(&app_dir, &["deploy"]);
    let machine = cluster.only_machine();
    let machine_path = format!("/v1/apps/{APP}/machines/{}", machine.id);

    // Without a token: 401.
    let output = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}{machine_path}", cluster.api_url))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "401");

    // Leases: one holder; others get 409, mutations without the nonce get 409.
    let (status, body) = cluster.api(
        "POST",
        &format!("{machine_path}/lease"),
        Some(r#"{"ttl":60}"#),
    );
    assert_eq!(status, 200, "take the lease: {body}");
    let lease: serde_json::Value = serde_json::from_str(&body).expect("lease JSON");
    let nonce = lease["data"]["nonce"]
        .as_str()
        .expect("lease nonce")
        .to_owned();
    let (status, body) = cluster.api("POST", &format!("{machine_path}/lease"), Some("{}"));
    assert_eq!(status, 409, "a second lease: {body}");
    let (status, body) = cluster.api("POST", &format!("{machine_path}/stop"), Some("{}"));
    assert_eq!(status, 409, "stop without the lease nonce: {body}");
    assert!(
        body.to_lowercase().contains("lease"),
        "the 409 says why: {body}"
    );
    let (status, body) = cluster.api_with(
        "DELETE",
        &format!("{machine_path}/lease"),
        None,
        &[("fly-machine-lease-nonce", &nonce)],
    );
    assert!(
        (200..300).contains(&status),
        "release the lease: {status} {body}"
    );

    // Wait for a state the machine does not reach: 408 after the timeout.
    let (status, body) = cluster.api(
        "GET",
        &format!(
            "{machine_path}/wait?state=stopped&timeout=1&instance_id={}",
            machine.instance_id
        ),
        None,
    );
    assert_eq!(status, 408, "wait for stopped on a started machine: {body}");

    // Bad bodies: 4xx naming the field.
    let (status, body) = cluster.api(
        "POST",
        &format!("/v1/apps/{APP}/machines"),
        Some(r#"{"region":"local"}"#),
    );
    assert!(
        (400..500).contains(&status),
        "create without config: {status} {body}"
    );
    assert!(
        body.contains("config"),
        "the error names the missing field: {body}"
    );
    let (status, body) = cluster.api(
        "POST",
        &format!("/v1/apps/{APP}/machines"),
        Some(r#"{"config":{"image":"x","guest":{"cpus":"many"}}}"#),
    );
    assert!(
        (400..500).contains(&status),
        "cpus as a string: {status} {body}"
    );
    assert!(body.contains("cpus"), "the error names the field: {body}");
    let (status, body) = cluster.api(
        "POST",
        &format!("/v1/apps/{APP}/machines"),
        Some("{not json"),
    );
    assert!(
        (400..500).contains(&status),
        "malformed JSON: {status} {body}"
    );
    let error: serde_json::Value = serde_json::from_str(&body).expect("4xx bodies are JSON");
    assert!(error["error"].is_string(), "ErrorBody: {body}");

    // The app exits with code 3: an exit event records it.
    let answer = http_get(&format!("http://{}:8080/exit/3", machine.private_ip));
    assert!(answer.is_some_and(|a| a.contains("exiting with code 3")));
    let event = wait_until("an exit event with code 3", Duration::from_secs(30), || {
        let (status, body) = cluster.api("GET", &format!("{machine_path}/events"), None);
        assert_eq!(status, 200, "events: {body}");
        let events: Vec<MachineEvent> = serde_json::from_str(&body).expect("events JSON");
        events.into_iter().find(|e| {
            e.kind == "exit"
                && e.request
                    .as_ref()
                    .and_then(|r| r.exit_event.as_ref())
                    .is_some_and(|x| x.exit_code == 3)
        })
    });
    let exit = event
        .request
        .and_then(|r| r.exit_event)
        .expect("checked above");
    assert!(!exit.requested_stop, "{exit:?}");
    assert!(!exit.oom_killed, "{exit:?}");

    cluster.down();
}
