//! `GET /revocations`: the revocation log as a feed, so verifiers in other services
//! (tessera-axum's `RevocationFeed`) refuse revoked tokens within seconds without calling
//! `/introspect` per request.
//!
//! The log is the server's own (`revocation_events`), replayed by id: a reader asks for the
//! events after the last id it has seen (`since`), applies them and comes back with the new
//! cursor. Events already expired (every token they could affect has expired) are left out.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tessera_auth::model::{RevocationEvent, Role};
use tessera_auth::store::RevocationStore;
use zeroize::Zeroizing;

use crate::error::AppError;
use crate::extract::{ApiQuery, bearer_token, client_authorization};
use crate::state::AppState;
use crate::token_request::basic_credentials;

/// Events per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;

/// Query parameters of `GET /revocations`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FeedQuery {
    /// Return events with an id greater than this (the previous answer's `cursor`; 0 or
    /// absent for the whole live log).
    #[param(minimum = 0)]
    since: Option<i64>,
    /// At most this many events (1–1000, default 100; anything else is 400).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// One revocation: what it revokes and until when it matters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FeedEvent {
    /// Monotonic event id.
    id: i64,
    /// `jti` (one token), `session` (every token with this `sid`) or `user` (every token of
    /// the user issued at or before `created_at`).
    kind: &'static str,
    /// The `jti`, session id or user id.
    subject: String,
    /// When the revocation happened (Unix seconds).
    created_at: i64,
    /// After this, every token it could affect has expired: readers may forget it.
    expires_at: i64,
}

/// A page of the revocation feed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RevocationFeed {
    /// Events, oldest first.
    events: Vec<FeedEvent>,
    /// The id of the last event returned, or the `since` given: pass it as `since` next.
    cursor: i64,
}

impl From<RevocationEvent> for FeedEvent {
    fn from(e: RevocationEvent) -> Self {
        Self {
            id: e.id,
            kind: e.kind.as_str(),
            subject: e.subject,
            created_at: e.created_at,
            expires_at: e.expires_at,
        }
    }
}

/// `GET /revocations?since=<cursor>&limit=<n>`.
#[utoipa::path(get, path = "/revocations", tag = "oauth", params(FeedQuery),
    description = "The revocation log as a feed for resource servers. Caller: a confidential client (HTTP Basic) or a bearer token with the admin role. The request has no body.",
    responses(
        (status = 200, description = "Events after `since`, oldest first", body = RevocationFeed),
        (status = 400, description = "invalid_request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials (invalid_client, invalid_token)", body = crate::openapi::ErrorBody),
        (status = 403, description = "A public client, or a bearer token without the admin role", body = crate::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn revocations(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Response, AppError> {
    // Content in a GET has no defined semantics (RFC 9110 §9.3.1), and client credentials
    // in a body are for POST requests (RFC 6749 §2.3.1 recommends HTTP Basic): refuse a body
    // instead of guessing what it was meant to say.
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(AppError::invalid_request(
            "GET /revocations takes no body: send client credentials with HTTP Basic",
        ));
    }
    authorize(&state, &headers).await?;
    let since = q.since.unwrap_or(0);
    if since < 0 {
        return Err(AppError::invalid_request("`since` must not be negative"));
    }
    let limit = crate::routes::page_limit(q.limit.as_deref(), DEFAULT_LIMIT)?;
    let now = state.auth.now();
    let events = state
        .db()
        .revocations_since(since, now, limit)
        .await
        .map_err(|e| AppError::from_api(e.into()))?;
    let cursor = events.last().map_or(since, |e| e.id.max(since));
    let page = RevocationFeed {
        events: events.into_iter().map(FeedEvent::from).collect(),
        cursor,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(page)).into_response())
}

/// The caller must be an admin (bearer token) or a confidential client (HTTP Basic,
/// RFC 6749 §2.3.1).
async fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    if let Some(token) = bearer_token(headers)? {
        let ctx = state.auth.authenticate(token).map_err(|e| {
            tracing::debug!(target: "tessera::auth", reason = %e, "revocation feed caller rejected");
            AppError::invalid_token()
        })?;
        if !ctx.has_role(Role::ADMIN) {
            return Err(AppError::insufficient_scope(
                "the revocation feed requires the admin role or client credentials",
            ));
        }
        return Ok(());
    }
    let (id, secret) = client_credentials(headers)?;
    let Some(id) = id else {
        return Err(AppError::missing_token());
    };
    let client = state
        .auth
        .authenticate_client(Some(&id), secret.as_deref().map(String::as_str))
        .await
        .map_err(AppError::from_grant)?;
    if !client.confidential {
        return Err(AppError::insufficient_scope(
            "only confidential clients may read the revocation feed",
        ));
    }
    Ok(())
}

type Credentials = (Option<String>, Option<Zeroizing<String>>);

/// HTTP Basic credentials, if the `Authorization` header carries them.
fn client_credentials(headers: &HeaderMap) -> Result<Credentials, AppError> {
    let Some(auth) = client_authorization(headers)? else {
        return Ok((None, None));
    };
    let Some((id, secret)) = basic_credentials(Some(auth))? else {
        return Ok((None, None));
    };
    Ok((Some(id), Some(secret).filter(|s| !s.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_http_basic() {
        use base64::Engine as _;
        let mut h = HeaderMap::new();
        assert!(matches!(client_credentials(&h), Ok((None, None))));
        let basic = base64::engine::general_purpose::STANDARD.encode("svc:s%3A1");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        let (id, secret) = client_credentials(&h).unwrap();
        assert_eq!(id.as_deref(), Some("svc"));
        assert_eq!(secret.as_deref().map(String::as_str), Some("s:1"));
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(client_credentials(&h).is_err());
    }
}
