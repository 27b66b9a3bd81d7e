//! One request on the fast path: the machine chosen (hyper takes the request when it is on
//! another host or wants h2c), the request sent on a pooled connection (the next machine
//! tried when a connection is refused), a replay handed to the hyper path's replay, and the
//! response copied back.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::chunked::{self, ChunkedError};
use super::request::RequestHead;
use super::response::{self, Framing, ResponseHead};
use super::{
    Answered, Failure, MAX_HEAD, Outcome, Served, Session, bridge, pool, read_into, write_all,
};
use crate::balance::Acquired;
use crate::body::{ProxyBody, error_response};
use crate::handler::{Ask, REPLAY_JSON_LIMIT, Route};
use crate::metrics::AppRequests;
use crate::routes::Target;

/// What [`Session::forward`] got.
enum Forwarded {
    Answered(Answered),
    /// The machine chosen is one the fast path does not reach: nothing was sent.
    HandOff,
}

// === impl Session ===

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    /// Answers one request of `app` (its body ends at `body_end`), or leaves it whole for
    /// hyper.
    pub(super) async fn exchange(
        &mut self,
        app: &str,
        head: &RequestHead,
        body_end: usize,
        close: bool,
    ) -> Outcome {
        let proxy = self.proxy;
        let started = Instant::now();
        self.served = Served::default();
        let max = proxy.cfg.max_connections_per_app;
        let Some(app_guard) = proxy.app_limits.acquire(app, max) else {
            let message =
                format!("app {app} has {max} requests in flight, the most one app may have");
            let response = error_response(StatusCode::SERVICE_UNAVAILABLE, Some("PL02"), &message);
            return self.answer_own(app, started, &response, head, close).await;
        };
        let (target, guard, upstream, answer) = match self.forward(app, head, body_end, close).await
        {
            Ok(Forwarded::Answered(answered)) => answered,
            Ok(Forwarded::HandOff) => return Outcome::HandOff,
            Err(response) => {
                return self.answer_own(app, started, &response, head, close).await;
            }
        };
        if answer.replay.is_none() && !answer.replay_json {
            let elapsed = started.elapsed();
            if (200..300).contains(&answer.status) {
                self.app_requests(app).ok(elapsed);
            } else {
                let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
                proxy.metrics.request(app, status, elapsed);
            }
            if proxy.cfg.access_log {
                self.served.machine = Some(Arc::clone(&target));
            }
            let outcome = self.relay(upstream, &answer, &target).await;
            drop((guard, app_guard));
            return outcome;
        }
        let mut upstream = upstream;
        let ask = match answer.replay.clone() {
            Some(replay) => Ask::Header(
                std::str::from_utf8(&self.ubuf[replay])
                    .map(str::to_owned)
                    .map_err(|e| e.to_string()),
            ),
            None => Ask::Json(self.read_replay_json(&mut upstream, &answer).await),
        };
        // The hyper path drops the first answer before replaying, and so does this.
        drop((upstream, guard));
        let outcome = self
            .replay(app, head, body_end, ask, &target, started)
            .await;
        drop(app_guard);
        outcome
    }

    /// The metric handles of `app`'s `2xx` answers, kept for the connection's next requests.
    fn app_requests(&mut self, app: &str) -> &AppRequests {
        if self
            .counted
            .as_ref()
            .is_none_or(|(counted, _)| counted != app)
        {
            self.counted = Some((app.to_owned(), self.proxy.metrics.app_requests(app)));
        }
        &self.counted.as_ref().expect("set just above").1
    }

    /// Replays the request with the hyper path's replay (which reaches any machine,
    /// remote or h2c ones included) and writes its answer.
    async fn replay(
        &mut self,
        app: &str,
        head: &RequestHead,
        body_end: usize,
        ask: Ask,
        served_by: &Target,
        started: Instant,
    ) -> Outcome {
        let proxy = self.proxy;
        let request = bridge::request_of(
            &self.cbuf[..head.head_len],
            head.body,
            &self.cbuf[head.head_len..body_end],
        );
        let request_id = HeaderValue::from_bytes(&self.request_id)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"));
        let Some(request) = request else {
            // Parsed once already: only a head hyper would refuse too gets here.
            let message = "the request cannot be replayed";
            let response = error_response(StatusCode::BAD_GATEWAY, Some("PA03"), message);
            return self
                .answer_own(app, started, &response, head, head.close)
                .await;
        };
        let (response, machine) = proxy
            .replay_fast(self.conn, app, request, &request_id, ask, served_by)
            .await;
        proxy
            .metrics
            .request(app, response.status(), started.elapsed());
        self.served.machine = machine;
        self.write_response(response, head.is_head, head.close)
            .await
    }

    /// Reads the body of a replay's JSON form, which follows `answer`'s head in `ubuf`: at
    /// most [`REPLAY_JSON_LIMIT`] bytes, chunked framing decoded. The connection is not
    /// reused after it.
    async fn read_replay_json(
        &mut self,
        upstream: &mut TcpStream,
        answer: &ResponseHead,
    ) -> Result<Bytes, String> {
        let too_big = || "the replay JSON is over 64 KiB".to_owned();
        let mut framing = answer.framing;
        let mut raw = Vec::new();
        let mut fresh = self.ubuf[answer.head_len..].to_vec();
        loop {
            let (used, done) =
                take(&mut framing, &fresh).map_err(|_| "invalid chunked replay JSON".to_owned())?;
            raw.extend_from_slice(&fresh[..used]);
            // Chunk framing may add a little; anything near twice the limit is too much.
            if raw.len() > 2 * REPLAY_JSON_LIMIT {
                return Err(too_big());
            }
            if done {
                break;
            }
            fresh.clear();
            match read_into(upstream, &mut fresh).await {
                Ok(true) => {}
                Ok(false) if framing == Framing::Close => break,
                _ => return Err("the machine closed the connection mid replay JSON".to_owned()),
            }
        }
        let body = match answer.framing {
            Framing::Chunked(_) => {
                chunked::decode(&raw).map_err(|_| "invalid chunked replay JSON".to_owned())?
            }
            _ => raw,
        };
        if body.len() > REPLAY_JSON_LIMIT {
            return Err(too_big());
        }
        Ok(Bytes::from(body))
    }

    /// Sends the request to a machine and reads its response head, trying the next machine
    /// when a connection is refused.
    async fn forward(
        &mut self,
        app: &str,
        head: &RequestHead,
        body_end: usize,
        close: bool,
    ) -> Result<Forwarded, Response<ProxyBody>> {
        let proxy = self.proxy;
        self.send.clear();
        self.send.extend_from_slice(&self.head);
        self.send.extend_from_slice(b"\r\n");
        self.send
            .extend_from_slice(&self.cbuf[head.head_len..body_end]);
        let mut deadline = None;
        let mut tried = HashSet::new();
        loop {
            let Acquired { guard, target, .. } = proxy
                .choose(
                    app,
                    self.conn.public_port,
                    &Route::any(),
                    &tried,
                    &mut deadline,
                )
                .await?;
            if proxy.remote_worker(&target).is_some() || proxy.routes.h2_backend(target.addr) {
                // Backhaul and h2c are the hyper path's, which chooses again.
                return Ok(Forwarded::HandOff);
            }
            match self.send_request(&target, head.is_head, close).await {
                Ok((upstream, answer)) => {
                    return Ok(Forwarded::Answered((target, guard, upstream, answer)));
                }
                Err(Failure::Connect(error)) => {
                    tracing::debug!(%error, machine_id = %target.machine_id, "connect failed");
                    tried.insert(target.machine_id.clone());
                    proxy.metrics.retry(app);
                    if tried.len() >= proxy.cfg.max_attempts {
                        let message = format!("could not connect to machine {}", target.machine_id);
                        return Err(error_response(
                            StatusCode::BAD_GATEWAY,
                            Some("PC01"),
                            &message,
                        ));
                    }
                }
                Err(Failure::Upstream(error)) => {
                    tracing::debug!(%error, machine_id = %target.machine_id, "upstream failed");
                    let message = format!("machine {} failed to answer", target.machine_id);
                    return Err(error_response(
                        StatusCode::BAD_GATEWAY,
                        Some("PU01"),
                        &message,
                    ));
                }
            }
        }
    }

    /// Writes `send` to `target` on a pooled connection (or a new one) and reads the
    /// response head into `ubuf`, its rewrite into `out`. A pooled connection that closed
    /// before answering is replaced.
    async fn send_request(
        &mut self,
        target: &Target,
        to_head: bool,
        close: bool,
    ) -> Result<(TcpStream, ResponseHead), Failure> {
        'connection: loop {
            let (mut upstream, reused) = match self.proxy.h1_pool.checkout(target.addr) {
                Some(upstream) => (upstream, true),
                None => (
                    pool::connect(target.addr).await.map_err(Failure::Connect)?,
                    false,
                ),
            };
            self.ubuf.clear();
            if let Err(error) = upstream.write_all(&self.send).await {
                if reused {
                    continue 'connection;
                }
                return Err(Failure::Upstream(error));
            }
            loop {
                if !self.ubuf.is_empty() {
                    let parsed = response::parse(
                        &self.ubuf,
                        to_head,
                        close,
                        &self.request_id,
                        &mut self.out,
                    );
                    match parsed {
                        response::Parsed::Ready(answer) => return Ok((upstream, answer)),
                        response::Parsed::Informational(len) => {
                            self.ubuf.drain(..len);
                            continue;
                        }
                        response::Parsed::Partial if self.ubuf.len() < MAX_HEAD => {}
                        response::Parsed::Partial | response::Parsed::Invalid => {
                            let error = std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                "invalid response head",
                            );
                            return Err(Failure::Upstream(error));
                        }
                    }
                }
                match read_into(&mut upstream, &mut self.ubuf).await {
                    Ok(true) => {}
                    Ok(false) | Err(_) if reused && self.ubuf.is_empty() => continue 'connection,
                    Ok(false) => {
                        let error = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                        return Err(Failure::Upstream(error));
                    }
                    Err(error) => return Err(Failure::Upstream(error)),
                }
            }
        }
    }

    /// Copies the response (its head rewritten in `out`, its first bytes in `ubuf`) to the
    /// client and pools the machine's connection when it ended cleanly. False when the client
    /// connection cannot go on.
    async fn relay(
        &mut self,
        mut upstream: TcpStream,
        answer: &ResponseHead,
        target: &Target,
    ) -> Outcome {
        self.served.status = answer.status;
        let mut framing = answer.framing;
        let first = &self.ubuf[answer.head_len..];
        let Ok((used, mut done)) = take(&mut framing, first) else {
            return Outcome::Close;
        };
        let mut clean = used == first.len();
        let mut sent = used;
        self.out.extend_from_slice(&first[..used]);
        if !write_all(&mut self.client, &self.out).await {
            return Outcome::Close;
        }
        while !done {
            self.ubuf.clear();
            match read_into(&mut upstream, &mut self.ubuf).await {
                Ok(true) => {}
                Ok(false) if framing == Framing::Close => break,
                _ => {
                    tracing::debug!(machine_id = %target.machine_id, "machine closed mid-response");
                    return Outcome::Close;
                }
            }
            let Ok((used, end)) = take(&mut framing, &self.ubuf) else {
                tracing::debug!(machine_id = %target.machine_id, "invalid chunked response");
                return Outcome::Close;
            };
            clean &= used == self.ubuf.len();
            sent += used;
            if !write_all(&mut self.client, &self.ubuf[..used]).await {
                return Outcome::Close;
            }
            done = end;
        }
        self.served.bytes = match framing {
            Framing::Chunked(chunked) => chunked.data_len(),
            _ => u64::try_from(sent).unwrap_or(u64::MAX),
        };
        if clean && answer.keep_alive {
            self.proxy.h1_pool.put(target.addr, upstream);
        }
        if framing == Framing::Close {
            Outcome::Close
        } else {
            Outcome::Keep
        }
    }

    /// Writes the proxy's own answer.
    async fn answer_own(
        &mut self,
        app: &str,
        started: Instant,
        response: &Response<ProxyBody>,
        head: &RequestHead,
        close: bool,
    ) -> Outcome {
        self.proxy
            .metrics
            .request(app, response.status(), started.elapsed());
        self.served.status = response.status().as_u16();
        if !head.is_head
            && let ProxyBody::Full(Some(body)) = response.body()
        {
            self.served.bytes = u64::try_from(body.len()).unwrap_or(u64::MAX);
        }
        response::write_own(
            response,
            head.is_head,
            close,
            &self.request_id,
            &mut self.out,
        );
        if write_all(&mut self.client, &self.out).await {
            Outcome::Keep
        } else {
            Outcome::Close
        }
    }
}

/// How many of `bytes` (the next ones of a response body) belong to it, and whether the
/// body ends with them.
fn take(framing: &mut Framing, bytes: &[u8]) -> Result<(usize, bool), ChunkedError> {
    Ok(match framing {
        Framing::Empty => (0, true),
        Framing::Length(left) => {
            let n = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            *left -= u64::try_from(n).expect("a slice length fits in u64");
            (n, *left == 0)
        }
        Framing::Chunked(chunked) => match chunked.feed(bytes)? {
            Some(n) => (n, true),
            None => (bytes.len(), chunked.is_done()),
        },
        Framing::Close => (bytes.len(), false),
    })
}
