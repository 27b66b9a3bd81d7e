//! Redeploys: a changed `[env]` makes a new version the machine runs with, and secrets reach
//! the machine without ever being listed.

use godwit_types::MachineState;

use crate::harness::DevCluster;

const SECRET: &str = "s3cret-Value-42";

#[test]
fn redeploy_with_new_env_and_secrets() {
    let mut cluster = DevCluster::start();
    let app_dir = cluster.app_dir(&[("GREETING", "hello")]);
    cluster.must_godwit(&app_dir, &["deploy"]);
    let first = cluster.only_machine();
    assert_eq!(cluster.wait_http(&first, "/env/GREETING"), "hello");
    assert!(
        cluster
            .wait_http(&first, "/")
            .contains(&format!("(version {})", first.version)),
        "the answer names the machine version"
    );

    // Secrets: set, then visible inside the machine after the redeploy below.
    cluster.must_godwit(
        &app_dir,
        &["secrets", "set", &format!("DB_PASSWORD={SECRET}")],
    );
    let listed = cluster.must_godwit(&app_dir, &["secrets", "list"]);
    assert!(
        listed.contains("DB_PASSWORD"),
        "secrets list names the secret:\n{listed}"
    );
    assert!(
        !listed.contains(SECRET),
        "secrets list shows a value:\n{listed}"
    );
    let listed_json = cluster.must_godwit(&app_dir, &["secrets", "list", "--json"]);
    assert!(
        !listed_json.contains(SECRET),
        "secrets list --json shows a value:\n{listed_json}"
    );

    // Redeploy with a changed env: a new version, same machine, new env.
    let app_dir = cluster.app_dir(&[("GREETING", "bonjour")]);
    cluster.must_godwit(&app_dir, &["deploy"]);
    let second = cluster.wait_state(&first.id, MachineState::Started);
    assert_eq!(
        cluster.machines().len(),
        1,
        "a redeploy updates, it does not add"
    );
    assert!(
        second.version > first.version,
        "version {} -> {}",
        first.version,
        second.version
    );
    assert_ne!(second.instance_id, first.instance_id);
    assert_eq!(
        second.config.env.get("GREETING").map(String::as_str),
        Some("bonjour")
    );
    assert_eq!(cluster.wait_http(&second, "/env/GREETING"), "bonjour");
    assert_eq!(cluster.wait_http(&second, "/env/DB_PASSWORD"), SECRET);
    assert_eq!(
        cluster.wait_http(&second, "/env/FLY_MACHINE_VERSION"),
        second.version.to_string()
    );
    let (_, machine_json) = cluster.api(
        "GET",
        &format!("/v1/apps/hello/machines/{}", second.id),
        None,
    );
    assert!(
        !machine_json.contains(SECRET),
        "the machine object shows a secret: {machine_json}"
    );

    cluster.down();
}
