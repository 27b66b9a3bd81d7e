//! The world's app: its image, apps and machines, through the world's API.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use godwit_testbed::world::World;

/// How long a machine may take to reach a state.
const STATE_TIMEOUT: Duration = Duration::from_secs(90);

/// `godwit image build` of the static hello binary into `<data_dir>/image`; the reference.
pub(super) fn build_image(godwit: &Path, hello: &Path, data_dir: &Path) -> anyhow::Result<String> {
    let out = data_dir.join("image");
    let output = Command::new(godwit)
        .args(["image", "build", "--name", "hello", "--tag", "latest"])
        .args(["--port", "8080", "--binary"])
        .arg(hello)
        .arg("--out")
        .arg(&out)
        .output()
        .context("run godwit image build")?;
    anyhow::ensure!(
        output.status.success(),
        "godwit image build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(format!("oci:{}", out.display()))
}

/// One API call that must answer 2xx; the JSON body.
fn call(
    world: &World,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let (status, text) = world
        .api(method, path, body)
        .with_context(|| format!("{method} {path}"))?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "{method} {path} answered {status}: {text}"
    );
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

pub(super) fn create_app(world: &World, app: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "app_name": app }).to_string();
    call(world, "POST", "/v1/apps", Some(&body)).map(drop)
}

/// Creates a hello machine of `app` in `region` serving HTTP on port 80, with a hard limit
/// of `limit` concurrent requests when given; returns its id.
pub(super) fn create_machine(
    world: &World,
    app: &str,
    image: &str,
    region: &str,
    limit: Option<u32>,
) -> anyhow::Result<String> {
    let concurrency =
        limit.map(|n| serde_json::json!({ "type": "requests", "soft_limit": n, "hard_limit": n }));
    let mut request = serde_json::json!({
        "region": region,
        "config": {
            "image": image,
            "services": [{
                "protocol": "tcp",
                "internal_port": 8080,
                "ports": [{ "port": 80, "handlers": ["http"] }],
            }],
        },
    });
    if let Some(concurrency) = concurrency {
        request["config"]["services"][0]["concurrency"] = concurrency;
    }
    let path = format!("/v1/apps/{app}/machines");
    let machine = call(world, "POST", &path, Some(&request.to_string()))
        .with_context(|| format!("create a machine of {app} in {region}"))?;
    machine["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no machine id in {machine}"))
}

/// Waits until the API reports machine `id` of `app` in `state`.
pub(super) fn wait_state(world: &World, app: &str, id: &str, state: &str) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{app}/machines/{id}");
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let machine = call(world, "GET", &path, None)?;
        if machine["state"] == state {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "machine {id} of {app} not {state} after {STATE_TIMEOUT:?} (now {})",
            machine["state"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(super) fn stop_machine(world: &World, app: &str, id: &str) -> anyhow::Result<()> {
    call(
        world,
        "POST",
        &format!("/v1/apps/{app}/machines/{id}/stop"),
        Some("{}"),
    )
    .map(drop)
}
