//! `init`, `serve`, the shared handler state and the request-id middleware.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use godwit_state::seal::SealKey;
use godwit_state::{Replica, StateClient};
use godwit_types::api::ErrorBody;
use godwit_types::{HostRecord, MachineRecord};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::agent::Agents;
use crate::certs::Certs;
use crate::crypto::{self, DataKey};
use crate::db::{Db, TokenKind};
use crate::error::{ErrorReport, InitError, ServeError};
use crate::{ApiConfig, DB_FILE, InitOutput, KEY_FILE};

/// Bucket names shared with the agents (see the contracts).
pub(crate) const HOSTS_BUCKET: &str = "godwit_hosts";
pub(crate) const MACHINES_BUCKET: &str = "godwit_machines";

/// Response header carrying the request id, as Fly names it.
pub(crate) const REQUEST_ID_HEADER: &str = "fly-request-id";

/// How long `serve` waits for the state replicas' initial load before serving anyway.
const REPLICA_LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) db: Arc<Db>,
    pub(crate) key: DataKey,
    pub(crate) agents: Agents,
    pub(crate) hosts: Replica<HostRecord>,
    pub(crate) machines: Replica<MachineRecord>,
    pub(crate) default_region: String,
    /// Certificate distribution and ACME issuance.
    pub(crate) certs: Certs,
    /// Fires at shutdown; ends long-lived log streams so the server can drain.
    pub(crate) cancel: CancellationToken,
}

pub(crate) fn init(data_dir: &Path, org: &str) -> Result<Option<InitOutput>, InitError> {
    godwit_types::validate_app_name(org).map_err(|e| InitError::InvalidOrg {
        org: org.to_owned(),
        reason: e.to_string(),
    })?;
    std::fs::create_dir_all(data_dir).map_err(|source| InitError::CreateDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let db_path = data_dir.join(DB_FILE);
    let db_error = |source| InitError::Database {
        path: db_path.clone(),
        source,
    };
    let db = Db::open(&db_path).map_err(db_error)?;
    if db.is_initialised().map_err(db_error)? {
        return Ok(None);
    }
    let key_path = data_dir.join(KEY_FILE);
    DataKey::load(&key_path, true).map_err(|source| InitError::Key {
        path: key_path.clone(),
        source,
    })?;
    let admin_token = crypto::new_token();
    let join_token = crypto::new_token();
    let rows: Vec<(TokenKind, String, String)> = [
        (TokenKind::Admin, &admin_token),
        (TokenKind::Join, &join_token),
    ]
    .into_iter()
    .map(|(kind, token)| (kind, crypto::token_hash(token), crypto::token_prefix(token)))
    .collect();
    db.create_org(org, &rows).map_err(db_error)?;
    tracing::info!(
        org,
        admin_token = %crypto::token_prefix(&admin_token),
        join_token = %crypto::token_prefix(&join_token),
        "initialised api data directory"
    );
    Ok(Some(InitOutput {
        org: org.to_owned(),
        admin_token,
        join_token,
    }))
}

pub(crate) async fn serve(
    cfg: ApiConfig,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    let db_path = cfg.data_dir.join(DB_FILE);
    let db_error = |source| ServeError::Database {
        path: db_path.clone(),
        source,
    };
    let db = Db::open(&db_path).map_err(db_error)?;
    if !db.is_initialised().map_err(db_error)? {
        return Err(ServeError::NotInitialised {
            data_dir: cfg.data_dir.clone(),
        });
    }
    let key_path = cfg.data_dir.join(KEY_FILE);
    let key = DataKey::load(&key_path, false).map_err(|source| ServeError::Key {
        path: key_path.clone(),
        source,
    })?;
    let cert_key = load_cert_key(&cfg, &db)?;
    let state_client = StateClient::connect(&cfg.nats_url)
        .await
        .map_err(ServeError::State)?;
    let hosts = state_client
        .records::<HostRecord>(HOSTS_BUCKET, &cfg.state_topology)
        .await
        .map_err(ServeError::State)?
        .replica_until(cancel.child_token())
        .await
        .map_err(ServeError::State)?;
    let machines = state_client
        .records::<MachineRecord>(MACHINES_BUCKET, &cfg.state_topology)
        .await
        .map_err(ServeError::State)?
        .replica_until(cancel.child_token())
        .await
        .map_err(ServeError::State)?;
    for (name, result) in [
        (HOSTS_BUCKET, hosts.wait_ready(REPLICA_LOAD_TIMEOUT).await),
        (
            MACHINES_BUCKET,
            machines.wait_ready(REPLICA_LOAD_TIMEOUT).await,
        ),
    ] {
        if let Err(error) = result {
            tracing::warn!(bucket = name, %error, "serving before the replica finished loading");
        }
    }
    let certs = Certs::open(&cfg, &state_client, cert_key)
        .await
        .map_err(ServeError::State)?;
    let interrupted = db.fail_interrupted_acme().map_err(db_error)?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "acme orders were interrupted by a restart: ask again"
        );
    }
    let published = certs.republish(&db, &key).await.map_err(db_error)?;
    tracing::debug!(published, "certificates published");
    let db = Arc::new(db);
    crate::certs::renew::spawn(
        &certs,
        db.clone(),
        key.clone(),
        cfg.acme_renew_before,
        cfg.acme_renew_every,
        cancel.child_token(),
    );
    let agents = Agents::new(db.clone(), key.clone()).map_err(ServeError::Client)?;
    let state = AppState {
        db,
        key,
        agents,
        hosts,
        machines,
        default_region: cfg.default_region.clone(),
        certs,
        cancel: cancel.clone(),
    };
    let app = crate::routes::router(state);
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(%addr, default_region = %cfg.default_region, "api listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .map_err(ServeError::Http)?;
    tracing::info!("api stopped");
    Ok(())
}

/// The certificate key of `cfg.cert_key_file` (created when missing). Without one, the API
/// still serves, unless it has certificates to publish: ACME on, or some already stored.
fn load_cert_key(cfg: &ApiConfig, db: &Db) -> Result<Option<SealKey>, ServeError> {
    if let Some(path) = &cfg.cert_key_file {
        return SealKey::load(path, true)
            .map(Some)
            .map_err(|source| ServeError::CertKey {
                path: path.clone(),
                source,
            });
    }
    if cfg.acme_directory.is_some() {
        return Err(ServeError::NoCertKey {
            reason: "acme is on (--acme-directory)".to_owned(),
        });
    }
    let stored = db
        .servable_certs()
        .map_err(|source| ServeError::Database {
            path: cfg.data_dir.join(DB_FILE),
            source,
        })?
        .len();
    if stored > 0 {
        return Err(ServeError::NoCertKey {
            reason: format!("the database holds {stored} certificates to publish"),
        });
    }
    Ok(None)
}

/// Gives each request an id (span field, `fly-request-id` header) and turns 5xx errors into
/// "internal error" bodies carrying it, after logging the real cause inside the span.
pub(crate) async fn request_id(request: Request, next: Next) -> Response {
    let id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Some(report) = response.extensions_mut().remove::<ErrorReport>() {
        let status = response.status();
        let _entered = span.enter();
        if status.is_server_error() {
            if status.as_u16() == 500 {
                tracing::error!(status = status.as_u16(), error = %report.detail, "request failed");
            } else {
                tracing::warn!(status = status.as_u16(), error = %report.detail, "request failed");
            }
            response = (
                status,
                Json(ErrorBody {
                    error: report.public,
                    request_id: Some(id.clone()),
                }),
            )
                .into_response();
        } else {
            tracing::debug!(status = status.as_u16(), error = %report.detail, "request refused");
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
