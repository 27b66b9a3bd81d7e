//! A machine's logs survive an update.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Client, Env, InProcAgent, machine_id, wait_until};

/// The messages of the machine's logs once they include `want`.
async fn must_log(c: &Client, id: &str, want: &str) -> Vec<String> {
    wait_until(
        &format!("{want:?} in the logs of {id}"),
        Duration::from_secs(30),
        || async {
            let (code, body) = c.get(&format!("/v1/machines/{id}/logs")).await.ok()?;
            (code == 200).then_some(())?;
            // One line parses as a JSON object, several stay text.
            let text = match body {
                Value::String(text) => text,
                other => other.to_string(),
            };
            let messages: Vec<String> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|l| l["message"].as_str().map(str::to_owned))
                .collect();
            messages.iter().any(|m| m == want).then_some(messages)
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_survive_an_update() {
    let env = Env::new().await.unwrap();
    let agent = InProcAgent::start(&env).await.unwrap();
    let c = &agent.client;

    let id = machine_id();
    let config = |version: &str| {
        let mut config = env.sh_config(&format!(
            "echo {version}-says-hello; trap 'exit 0' TERM; /busybox sleep 1000 & wait"
        ));
        config["stop_config"] = json!({ "signal": "SIGTERM", "timeout": "3s" });
        config
    };
    c.must_post("/v1/machines", env.create_body(&id, config("v1")))
        .await;
    must_log(c, &id, "v1-says-hello").await;

    let m = c
        .must_post(
            &format!("/v1/machines/{id}"),
            json!({ "config": config("v2"), "secrets": {}, "skip_launch": false,
                    "current_version": null }),
        )
        .await;
    assert_eq!(m["version"], 2, "{m}");
    let messages = must_log(c, &id, "v2-says-hello").await;
    let pos = |want: &str| messages.iter().position(|m| m == want);
    assert!(
        matches!((pos("v1-says-hello"), pos("v2-says-hello")), (Some(a), Some(b)) if a < b),
        "the old version's lines come first: {messages:?}"
    );
    assert!(
        !env.data_dir.join("kept-logs").join(&id).exists(),
        "nothing is left aside after the update"
    );

    let (status, body) = c
        .delete(&format!("/v1/machines/{id}?force=true"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    c.must_be_gone(&id).await;
    agent.stop().await.unwrap();
}
