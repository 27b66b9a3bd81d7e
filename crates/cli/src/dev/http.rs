//! Small HTTP helpers for talking to the dev cluster's daemons.

use std::time::Duration;

use anyhow::Context;

/// A client with short timeouts: every daemon is on loopback.
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Whether `url` answers 2xx within a couple of seconds.
pub(super) async fn is_healthy(url: &str) -> bool {
    let client = client();
    matches!(
        client.get(url).timeout(Duration::from_secs(2)).send().await,
        Ok(response) if response.status().is_success()
    )
}

/// `GET url` with the bearer token; the JSON body of a 2xx answer.
pub(super) async fn get_json(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<serde_json::Value> {
    let response = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("read the answer of GET {url}"))?;
    anyhow::ensure!(status.is_success(), "GET {url} answered {status}: {body}");
    serde_json::from_str(&body).with_context(|| format!("parse the answer of GET {url}"))
}

/// `DELETE url` with the bearer token; Ok on 2xx or 404 (already gone).
pub(super) async fn delete(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<()> {
    let response = client
        .delete(url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("DELETE {url}"))?;
    let status = response.status();
    if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    anyhow::bail!("DELETE {url} answered {status}: {body}")
}

/// Whether `GET /v1/hosts` lists `host_id`.
pub(super) async fn host_registered(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    host_id: &str,
) -> bool {
    let Ok(hosts) = get_json(client, url, token).await else {
        return false;
    };
    contains_string(&hosts, host_id)
}

fn contains_string(value: &serde_json::Value, wanted: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s == wanted,
        serde_json::Value::Array(items) => items.iter().any(|v| contains_string(v, wanted)),
        serde_json::Value::Object(map) => map.values().any(|v| contains_string(v, wanted)),
        _ => false,
    }
}
