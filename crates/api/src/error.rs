//! The API's one error type, and the errors of `init` and `serve`.

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use godwit_types::api::ErrorBody;

/// Every error a `/v1` handler returns. 4xx bodies say what was wrong and how to fix it; 5xx
/// bodies say "internal error" plus the request id (the request-id middleware logs the real
/// error inside the request's span), except for an unreachable agent, which is named.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request was well-formed but asks for something invalid (validation, placement).
    #[error("{0}")]
    Unprocessable(String),
    #[error("host {host_id} ({agent_url}) is unreachable; try again when its agent is back")]
    AgentUnreachable {
        host_id: String,
        agent_url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("host {host_id} failed the request ({status}): {message}")]
    AgentFailed {
        host_id: String,
        status: u16,
        message: String,
    },
    #[error("database error")]
    Database(#[from] rusqlite::Error),
    #[error("{0}")]
    Internal(String),
}

/// Why `init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("organisation name {org:?} is invalid: {reason}")]
    InvalidOrg { org: String, reason: String },
    #[error("failed to create data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read or create the encryption key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: godwit_state::seal::KeyFileError,
    },
    #[error("failed to set up the database {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// Why `serve` failed or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{data_dir} is not initialised: run `godwit api init` first")]
    NotInitialised { data_dir: PathBuf },
    #[error("failed to open the database {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("failed to read the encryption key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: godwit_state::seal::KeyFileError,
    },
    #[error("failed to read or create the certificate key {path}")]
    CertKey {
        path: PathBuf,
        #[source]
        source: godwit_state::seal::KeyFileError,
    },
    /// Certificates are on (ACME, or some are stored) but there is no key to seal them for
    /// the proxies with.
    #[error(
        "{reason}, but no certificate key is set: add --cert-key-file <path> (the same file \
         every proxy gets as --cert-key-file); it is created if missing"
    )]
    NoCertKey { reason: String },
    #[error("failed to open the state buckets")]
    State(#[source] godwit_state::StateError),
    #[error("failed to build the agent http client")]
    Client(#[source] reqwest::Error),
    #[error("http server failed")]
    Http(#[source] std::io::Error),
}

/// Attached to every error response so the request-id middleware can log 5xx causes and put
/// the request id in the body.
#[derive(Debug, Clone)]
pub(crate) struct ErrorReport {
    /// The full error chain, logged for 5xx; never sent to the caller for internal errors.
    pub(crate) detail: String,
    /// The body's message.
    pub(crate) public: String,
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::AgentUnreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::AgentFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn internal(what: impl Into<String>) -> Self {
        Self::Internal(what.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let public = match &self {
            Self::Database(_) | Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let report = ErrorReport {
            detail: error_chain(&self),
            public: public.clone(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: public,
                request_id: None,
            }),
        )
            .into_response();
        response.extensions_mut().insert(report);
        response
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as R;
        let text = rejection.body_text();
        let inner = text
            .split_once(": ")
            .map_or(text.as_str(), |(_, rest)| rest);
        match rejection {
            R::JsonDataError(_) => Self::Unprocessable(format!(
                "invalid request body: {inner}; fix the field and send it again"
            )),
            R::JsonSyntaxError(_) => {
                Self::BadRequest(format!("invalid request body: {inner}; send a JSON object"))
            }
            R::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "request body needs header `Content-Type: application/json`".into(),
            ),
            _ => Self::BadRequest(format!("could not read the request body: {text}")),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::BadRequest(format!("invalid query string: {}", rejection.body_text()))
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::BadRequest(format!("invalid path: {}", rejection.body_text()))
    }
}

/// `error: cause: cause` on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
