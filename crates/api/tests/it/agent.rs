//! A tiny real HTTP server that plays a host agent: it records every call and keeps machines
//! in memory. (The real agent is another crate; the e2e tests cover the real pair.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use godwit_types::api::{AgentCreateMachine, ErrorBody};
use godwit_types::{Machine, MachineState};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One call the agent received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    /// Path and query.
    pub(crate) uri: String,
    pub(crate) nonce: Option<String>,
    pub(crate) body: Bytes,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    machines: BTreeMap<String, Machine>,
    lease: Option<String>,
}

#[derive(Clone)]
struct Shared {
    token: String,
    inner: Arc<Mutex<Inner>>,
}

pub(crate) struct FakeAgent {
    pub(crate) url: String,
    pub(crate) token: String,
    shared: Shared,
    cancel: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl FakeAgent {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let token = format!("agent-{:x}", rand::random::<u64>());
        let shared = Shared {
            token: token.clone(),
            inner: Arc::default(),
        };
        let cancel = CancellationToken::new();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            url,
            token,
            shared,
            cancel,
            server: Some(server),
        }
    }

    /// Every call so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.inner.lock().unwrap().seen.clone()
    }

    /// The machine create calls so far.
    pub(crate) fn creates(&self) -> Vec<AgentCreateMachine> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == Method::POST && s.uri == "/v1/machines")
            .map(|s| serde_json::from_slice(&s.body).unwrap())
            .collect()
    }

    pub(crate) fn machine(&self, id: &str) -> Option<Machine> {
        self.shared.inner.lock().unwrap().machines.get(id).cloned()
    }

    /// Stops serving and closes its connections: the host becomes unreachable.
    pub(crate) async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {}", shared.token))
    {
        return error(StatusCode::UNAUTHORIZED, "bad agent token");
    }
    let nonce = headers
        .get("fly-machine-lease-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut inner = shared.inner.lock().unwrap();
    inner.seen.push(Seen {
        method: method.clone(),
        uri: uri.to_string(),
        nonce: nonce.clone(),
        body: body.clone(),
    });
    let path: Vec<&str> = uri
        .path()
        .trim_start_matches("/v1/machines")
        .split('/')
        .collect();
    match (method, path.as_slice()) {
        (Method::POST, [""]) => {
            let req: AgentCreateMachine = serde_json::from_slice(&body).unwrap();
            if req.config.image == "refused" {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "image refused by the agent");
            }
            let machine = Machine {
                id: req.machine_id.clone(),
                name: req.name,
                state: if req.skip_launch { MachineState::Created } else { MachineState::Started },
                region: req.region,
                instance_id: "inst1".into(),
                version: 1,
                private_ip: "fdaa::2".into(),
                config: req.config,
                image_ref: None,
                events: Vec::new(),
                checks: Vec::new(),
                host_status: "ok".into(),
                cordoned: false,
                host_id: "fake".into(),
                app: req.app,
                created_at: 1,
                updated_at: 1,
            };
            inner.machines.insert(req.machine_id, machine.clone());
            (StatusCode::CREATED, axum::Json(machine)).into_response()
        }
        (Method::GET, [""]) => {
            let app = uri.query().and_then(|q| q.strip_prefix("app=")).unwrap_or("");
            let list: Vec<Machine> =
                inner.machines.values().filter(|m| m.app == app).cloned().collect();
            axum::Json(list).into_response()
        }
        (Method::GET, ["", id]) => match inner.machines.get(*id) {
            Some(m) => axum::Json(m.clone()).into_response(),
            None => error(StatusCode::NOT_FOUND, "machine not found on this host"),
        },
        (Method::POST, ["", id]) => {
            let req: godwit_types::api::AgentUpdateMachine = serde_json::from_slice(&body).unwrap();
            match inner.machines.get_mut(*id) {
                Some(m) => {
                    m.config = req.config;
                    m.version += 1;
                    axum::Json(m.clone()).into_response()
                }
                None => error(StatusCode::NOT_FOUND, "machine not found on this host"),
            }
        }
        (Method::DELETE, ["", id]) => match inner.machines.remove(*id) {
            Some(_) => axum::Json(serde_json::json!({"ok": true})).into_response(),
            None => error(StatusCode::NOT_FOUND, "machine not found on this host"),
        },
        (Method::POST, ["", _, "lease"]) => {
            inner.lease = Some("nonce-1".into());
            (
                [("fly-machine-lease-nonce", "nonce-1")],
                axum::Json(serde_json::json!({"status": "success", "data": {
                    "nonce": "nonce-1", "expires_at": 0, "owner": "t", "description": "",
                    "version": "1"}})),
            )
                .into_response()
        }
        (Method::POST, ["", _, "stop"]) => {
            if inner.lease.is_some() && nonce != inner.lease {
                return error(StatusCode::CONFLICT, "machine is leased: send the lease nonce");
            }
            axum::Json(serde_json::json!({"ok": true, "previous_state": "started"})).into_response()
        }
        (Method::POST, ["", _, "suspend"]) => {
            if inner.lease.is_some() && nonce != inner.lease {
                return error(StatusCode::CONFLICT, "machine is leased: send the lease nonce");
            }
            axum::Json(serde_json::json!({"ok": true, "previous_state": "started"})).into_response()
        }
        (Method::GET, ["", _, "wait"]) => {
            (StatusCode::REQUEST_TIMEOUT, axum::Json(ErrorBody {
                error: "timed out".into(),
                request_id: None,
            }))
                .into_response()
        }
        (Method::GET, ["", _, "logs"]) => (
            [("content-type", "application/x-ndjson")],
            "{\"timestamp\":1,\"machine_id\":\"m\",\"region\":\"ams\",\"stream\":\"stdout\",\"message\":\"hi\"}\n",
        )
            .into_response(),
        _ => error(StatusCode::NOT_FOUND, "no such agent route"),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: message.into(),
            request_id: None,
        }),
    )
        .into_response()
}
