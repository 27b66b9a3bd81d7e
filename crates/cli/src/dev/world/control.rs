//! The world daemon's control protocol: one JSON request line per connection on a Unix
//! socket, answered by one JSON line.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long one request may take (adding a user node runs a few `ip` commands).
const ASK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a client asks the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(in crate::dev) enum Request {
    Status,
    /// The user node of a city, made on first use.
    User {
        city: String,
    },
    Fault {
        fault: Fault,
    },
    /// Stop the world and exit.
    Down,
}

/// A fault to inject or remove (also the `godwit dev fault` subcommands).
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(in crate::dev) enum Fault {
    /// Take a host (`syd-1`) or every host of a region (`syd`) down: all its packets are
    /// dropped, and anycast goes to the next nearest region
    Down { target: String },
    /// Bring a host or a region's hosts back up
    Up { target: String },
    /// Cut every link between two regions (their hosts, users and control plane), both ways
    Partition { a: String, b: String },
    /// Heal the partition between two regions; every partition when none are named
    Heal {
        a: Option<String>,
        b: Option<String>,
    },
    /// Drop PERCENT of the packets a host or a region's hosts send or receive (0: none)
    Loss { target: String, percent: f64 },
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub(in crate::dev) enum Response {
    Status(WorldStatus),
    User { node: String, netns: String },
    Done { message: String },
    Error { message: String },
}

/// What `godwit dev status` shows of a world.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(in crate::dev) struct WorldStatus {
    pub(in crate::dev) prefix: String,
    pub(in crate::dev) regions: Vec<String>,
    /// The API as the root netns reaches it (the daemon relays it into the world).
    pub(in crate::dev) api_url: String,
    pub(in crate::dev) anycast: String,
    pub(in crate::dev) domain: String,
    pub(in crate::dev) hosts: Vec<HostStatus>,
    /// Region pairs cut from each other.
    pub(in crate::dev) partitions: Vec<(String, String)>,
    /// City (region code) and node of each simulated user.
    pub(in crate::dev) users: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(in crate::dev) struct HostStatus {
    pub(in crate::dev) node: String,
    pub(in crate::dev) region: String,
    pub(in crate::dev) ipv4: String,
    /// The agent's name prefix (its machines' netns, veths and cgroups).
    pub(in crate::dev) name_prefix: String,
    pub(in crate::dev) down: bool,
    pub(in crate::dev) loss_percent: f64,
}

/// Sends `request` to the daemon at `socket`; an [`Response::Error`] becomes an error.
pub(in crate::dev) async fn ask(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .with_context(|| format!("connect to the world daemon at {}", socket.display()))?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(request).context("encode the request")?;
        line.push('\n');
        write
            .write_all(line.as_bytes())
            .await
            .context("send the request to the world daemon")?;
        let mut answer = String::new();
        BufReader::new(read)
            .read_line(&mut answer)
            .await
            .context("read the world daemon's answer")?;
        anyhow::ensure!(
            !answer.is_empty(),
            "the world daemon closed the connection without answering"
        );
        serde_json::from_str::<Response>(&answer)
            .with_context(|| format!("parse the world daemon's answer {answer:?}"))
    };
    let response = tokio::time::timeout(ASK_TIMEOUT, exchange)
        .await
        .with_context(|| format!("the world daemon did not answer within {ASK_TIMEOUT:?}"))??;
    if let Response::Error { message } = response {
        anyhow::bail!("{message}");
    }
    Ok(response)
}

/// Reads one request from `stream`, answers it with `answer`'s response.
pub(in crate::dev) async fn serve_one<F, Fut>(
    stream: tokio::net::UnixStream,
    answer: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(read).read_line(&mut line),
    )
    .await
    .context("no request within 5s")?
    .context("read a request")?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => answer(request).await,
        Err(e) => Response::Error {
            message: format!("not a request: {e}"),
        },
    };
    let mut out = serde_json::to_string(&response).context("encode the answer")?;
    out.push('\n');
    write
        .write_all(out.as_bytes())
        .await
        .context("send the answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let request = Request::Fault {
            fault: Fault::Partition {
                a: "ams".to_owned(),
                b: "syd".to_owned(),
            },
        };
        let line = serde_json::to_string(&request).expect("encode");
        assert_eq!(
            line,
            r#"{"op":"fault","fault":{"kind":"partition","a":"ams","b":"syd"}}"#
        );
        let back: Request = serde_json::from_str(&line).expect("decode");
        assert!(
            matches!(back, Request::Fault { fault } if fault == Fault::Partition {
                a: "ams".to_owned(),
                b: "syd".to_owned()
            })
        );
    }

    #[tokio::test]
    async fn ask_and_serve_one_talk_over_a_unix_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("ctl.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            serve_one(stream, |request| async move {
                match request {
                    Request::User { city } => Response::User {
                        node: format!("user-{city}-1"),
                        netns: format!("p-user-{city}-1"),
                    },
                    _ => Response::Error {
                        message: "unexpected".to_owned(),
                    },
                }
            })
            .await
        });
        let answer = ask(
            &socket,
            &Request::User {
                city: "syd".to_owned(),
            },
        )
        .await
        .expect("ask");
        assert!(
            matches!(&answer, Response::User { netns, .. } if netns == "p-user-syd-1"),
            "{answer:?}"
        );
        server.await.expect("join").expect("serve");
        // An error answer is an error for the client.
        let listener = tokio::net::UnixListener::bind(dir.path().join("b.sock")).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            serve_one(stream, |_| async {
                Response::Error {
                    message: "no such region".to_owned(),
                }
            })
            .await
        });
        let error = ask(&dir.path().join("b.sock"), &Request::Status)
            .await
            .expect_err("an error answer");
        assert_eq!(error.to_string(), "no such region");
        server.await.expect("join").expect("serve");
    }
}
