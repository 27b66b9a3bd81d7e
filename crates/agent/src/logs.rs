//! `GET /v1/machines/{id}/logs`: the machine's captured stdout/stderr as NDJSON `LogLine`s,
//! the last `tail` lines of every log file and then, with `follow`, new lines as they are
//! written (surviving rotation: the open file is drained before the new one is opened).

use std::convert::Infallible;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::Response;
use godwit_types::api::LogLine;
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tracing::debug;

use crate::agent::Agent;
use crate::http::{ApiError, AppState, must_find};

const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
pub(crate) struct LogsQuery {
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
}

/// The file being followed.
struct Follower {
    path: PathBuf,
    file: Option<(tokio::fs::File, u64)>,
    partial: Vec<u8>,
}

/// One line as the shim writes it.
#[derive(Debug, Deserialize)]
struct RawLine {
    ts: u64,
    stream: String,
    line: String,
}

pub(crate) async fn handler(
    State(agent): AppState,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let row = must_find(&agent, &id)?;
    let mut files = agent.runtime.log_files(&id);
    let current = files.pop();
    let mut text = Vec::new();
    for old in &files {
        if let Ok(bytes) = tokio::fs::read(old).await {
            text.extend_from_slice(&bytes);
        }
    }
    let mut follower = current.map(|path| Follower {
        path,
        file: None,
        partial: Vec::new(),
    });
    if let Some(f) = follower.as_mut() {
        text.extend(f.read_new().await);
    }
    // A line still being written stays in the follower's buffer.
    let mut lines: Vec<LogLine> = split_lines(&mut text)
        .iter()
        .map(|l| to_log_line(l, &id, &row.region))
        .collect();
    if let Some(f) = follower.as_mut() {
        f.partial = text;
    }
    if let Some(tail) = query.tail {
        lines.drain(..lines.len().saturating_sub(tail));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let region = row.region.clone();
    let task_agent = agent.clone();
    agent.tasks.spawn(async move {
        for line in lines {
            if tx.send(Ok(ndjson(&line))).await.is_err() {
                return;
            }
        }
        if let (true, Some(f)) = (query.follow, follower) {
            follow(&task_agent, &id, &region, f, &tx).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .map_err(|e| ApiError::internal(&e))
}

async fn follow(
    agent: &Arc<Agent>,
    id: &str,
    region: &str,
    mut follower: Follower,
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            () = agent.cancel.cancelled() => return,
            () = tx.closed() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let mut text = follower.read_new().await;
        for line in split_lines(&mut text) {
            if tx
                .send(Ok(ndjson(&to_log_line(&line, id, region))))
                .await
                .is_err()
            {
                return;
            }
        }
        follower.partial = text;
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(5) && !matches!(agent.db.get_machine(id), Ok(Some(_))) {
            debug!(machine_id = %id, "machine gone; log follow ends");
            return;
        }
    }
}

// === impl Follower ===

impl Follower {
    /// Everything new since the last call (with the unfinished line kept from before), after
    /// following a rotation.
    async fn read_new(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.partial);
        if let Some((file, _)) = self.file.as_mut() {
            let _ = file.read_to_end(&mut out).await;
        }
        let on_disk = tokio::fs::metadata(&self.path).await.ok().map(|m| m.ino());
        let reopen = match (&self.file, on_disk) {
            (Some((_, ino)), Some(now)) => *ino != now,
            (None, Some(_)) => true,
            _ => false,
        };
        if reopen && let Ok(mut file) = tokio::fs::File::open(&self.path).await {
            let ino = file.metadata().await.map(|m| m.ino()).unwrap_or_default();
            let _ = file.read_to_end(&mut out).await;
            self.file = Some((file, ino));
        }
        out
    }
}

/// Removes and returns the complete lines of `text`, leaving an unfinished last line in it.
fn split_lines(text: &mut Vec<u8>) -> Vec<String> {
    let Some(last_nl) = text.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    let rest = text.split_off(last_nl + 1);
    let lines = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    *text = rest;
    lines
}

fn to_log_line(raw: &str, machine_id: &str, region: &str) -> LogLine {
    match serde_json::from_str::<RawLine>(raw) {
        Ok(line) => LogLine {
            timestamp: line.ts,
            machine_id: machine_id.to_owned(),
            region: region.to_owned(),
            stream: line.stream,
            message: line.line,
        },
        Err(_) => LogLine {
            timestamp: 0,
            machine_id: machine_id.to_owned(),
            region: region.to_owned(),
            stream: "stdout".to_owned(),
            message: raw.to_owned(),
        },
    }
}

fn ndjson(line: &LogLine) -> Bytes {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_lines_and_keeps_the_rest() {
        let mut text = b"a\nb\n\nc".to_vec();
        assert_eq!(split_lines(&mut text), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(text, b"c");
        let line = to_log_line(r#"{"ts":5,"stream":"stderr","line":"hi"}"#, "m", "r");
        assert_eq!(
            (line.timestamp, line.stream.as_str(), line.message.as_str()),
            (5, "stderr", "hi")
        );
    }
}
