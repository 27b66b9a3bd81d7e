//! A raw HTTP/1.1 client reader and a scripted machine that answers every request with the
//! same bytes, for what reqwest and hyper would not send or answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{Counts, counts, listener, load};
use crate::support::DEADLINE;

/// A response read off a raw connection (header names lower-cased, body unframed).
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    pub(crate) fn echo(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "not an echo: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads one response from `stream`; bytes after it stay in `buf`.
pub(crate) async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> anyhow::Result<RawResponse> {
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8(buf[..head_end].to_vec())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    buf.drain(..head_end);
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(buf, b"\r\n") {
                    break at;
                }
                fill(stream, buf).await?;
            };
            let line = String::from_utf8(buf[..line_end].to_vec())?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or_default(), 16)?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(stream, buf).await?;
            }
            if size == 0 {
                buf.drain(..2);
                break body;
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
        }
    } else {
        let len: usize = headers.get("content-length").map_or(Ok(0), |l| l.parse())?;
        while buf.len() < len {
            fill(stream, buf).await?;
        }
        buf.drain(..len).collect()
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0_u8; 16 * 1024];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
        .await
        .context("no response in time")??;
    if n == 0 {
        bail!("the connection closed mid-response");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A machine that answers each request head (bodies are not expected) with `answer`,
/// keeping the connection open, or closing it after one answer.
pub(crate) struct Scripted {
    pub(crate) addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    pub(crate) async fn start(answer: String) -> Scripted {
        Scripted::serve(answer, false).await
    }

    pub(crate) async fn start_closing(answer: String) -> Scripted {
        Scripted::serve(answer, true).await
    }

    async fn serve(answer: String, close: bool) -> Scripted {
        let listener = listener().await;
        let addr = listener.local_addr().expect("bound");
        let counts = counts();
        let counts_c = Arc::clone(&counts);
        let answer = Arc::new(answer);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                counts_c.connections.fetch_add(1, Ordering::SeqCst);
                let (counts, answer) = (Arc::clone(&counts_c), Arc::clone(&answer));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        while let Some(at) = find(&buf, b"\r\n\r\n") {
                            buf.drain(..at + 4);
                            counts.requests.fetch_add(1, Ordering::SeqCst);
                            if stream.write_all(answer.as_bytes()).await.is_err() || close {
                                return;
                            }
                        }
                        let mut chunk = [0_u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Scripted { addr, counts, task }
    }

    pub(crate) fn requests(&self) -> u32 {
        load(&self.counts.requests)
    }

    pub(crate) fn connections(&self) -> u32 {
        load(&self.counts.connections)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}
