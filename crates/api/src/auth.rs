//! Bearer tokens: every `/v1` call except health, the OpenAPI document and host registration
//! carries `Authorization: Bearer <token>` of one organisation.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::crypto;
use crate::db::TokenKind;
use crate::error::ApiError;
use crate::server::AppState;

/// The organisation a request acts for.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    pub(crate) org_id: i64,
    pub(crate) org_slug: String,
    /// Loggable start of the token.
    pub(crate) token_prefix: String,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "missing token: send header `Authorization: Bearer <token>` \
                     (`godwit api init` printed one)"
                        .into(),
                )
            })?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("authorization header is not ascii".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized("authorization header must be `Bearer <token>`".into())
            })?;
        let row = state
            .db
            .find_token(&crypto::token_hash(token))?
            .ok_or_else(|| {
                tracing::debug!(token = %crypto::token_prefix(token), "unknown token");
                ApiError::Unauthorized(
                    "invalid token: check the token you were given, it is not known here".into(),
                )
            })?;
        if row.kind == TokenKind::Join {
            return Err(ApiError::Forbidden(
                "a join token can only register hosts: use an admin token for this call".into(),
            ));
        }
        tracing::debug!(org = %row.org_slug, token = %row.prefix, "authenticated");
        Ok(Self {
            org_id: row.org_id,
            org_slug: row.org_slug,
            token_prefix: row.prefix,
        })
    }
}
