//! Machine output lands in the log as JSON lines, rotated by size.

use std::time::Duration;

use godwit_runtime::MachineRuntime;

use crate::support::{Host, new_id};

#[tokio::test]
async fn output_is_logged_and_rotated() {
    let host = Host::with_logs(4096, 3);
    let id = new_id();
    let script = "echo hello-out; echo hello-err >&2; \
                  for i in $(seq 1 150); do echo line-$i; done";
    host.rt
        .prepare(&host.spec(&id, &["sh", "-c", script]))
        .await
        .expect("prepare");
    host.rt.start(&id).await.expect("start");
    let exit = tokio::time::timeout(Duration::from_secs(10), host.rt.wait_exit(&id))
        .await
        .expect("exit within 10s")
        .expect("wait_exit");
    assert_eq!(exit.exit_code, 0);

    let files = host.rt.log_files(&id);
    assert_eq!(
        files.len(),
        3,
        "two rotated files and the current one: {files:?}"
    );
    assert!(files[0].ends_with("machine.log.2") && files[2].ends_with("machine.log"));
    let mut records = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read log");
        assert!(
            text.len() <= 4096,
            "{} has {} bytes",
            file.display(),
            text.len()
        );
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert!(record["ts"].as_u64().expect("ts") > 0);
            records.push((
                record["stream"].as_str().expect("stream").to_owned(),
                record["line"].as_str().expect("line").to_owned(),
            ));
        }
    }
    assert!(
        records.contains(&("stdout".to_owned(), "hello-out".to_owned())),
        "{records:?}"
    );
    assert!(
        records.contains(&("stderr".to_owned(), "hello-err".to_owned())),
        "{records:?}"
    );
    let numbered: Vec<String> = records
        .iter()
        .filter(|(stream, line)| stream == "stdout" && line.starts_with("line-"))
        .map(|(_, line)| line.clone())
        .collect();
    let expected: Vec<String> = (1..=150).map(|i| format!("line-{i}")).collect();
    assert_eq!(
        numbered, expected,
        "every line, in order, across the rotated files"
    );
}
