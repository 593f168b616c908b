//! `/users/me` (the tutorial's protected endpoint) and self-registration.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::AppError;
use crate::extract::{ApiJson, ClientMeta, CurrentUser};
use crate::routes::UserView;
use crate::state::AppState;
use tessera_auth::service::Items;

/// The current user, from the verified token alone (no database round trip). Borrows from
/// the verified context, which the token cache shares: serializing it copies nothing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Me<'a> {
    id: &'a str,
    username: &'a str,
    role: Option<&'a str>,
    #[schema(value_type = Vec<String>)]
    roles: Seq<Items<'a>>,
    scope: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[schema(value_type = Vec<String>)]
    amr: Seq<Items<'a>>,
    expires_at: i64,
}

/// A list serialized from an iterator over the context's text (a JSON array of strings).
#[derive(Debug)]
pub(crate) struct Seq<I>(I);

impl<'a, I: Iterator<Item = &'a str> + Clone> Serialize for Seq<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

/// `GET /users/me`: `{username, role}` as in the tutorial, plus id, roles and token facts.
#[utoipa::path(get, path = "/users/me", tag = "users",
    responses((status = 200, description = "The current user", body = Me<'static>), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A client's own token", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn me(CurrentUser(ctx): CurrentUser) -> Result<Response, AppError> {
    if ctx.is_client {
        return Err(AppError::from_api(tessera_auth::AuthError::NoUser));
    }
    let me = Me {
        id: ctx.user_id(),
        username: ctx.username(),
        role: ctx.role(),
        roles: Seq(ctx.roles()),
        scope: ctx.scope(),
        client_id: ctx.client_id(),
        session_id: ctx.session_id(),
        amr: Seq(ctx.amr()),
        expires_at: ctx.expires_at,
    };
    // axum's `Json` starts its buffer at 128 bytes and grows it while writing (a reallocation
    // and a copy on every answer; a buffer with room for the whole answer took 6 % off this
    // request's instructions, docs/BENCHMARKS.md).
    let mut body = Vec::with_capacity(ME_JSON_CAPACITY);
    serde_json::to_writer(&mut body, &me).map_err(|e| AppError::internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// Room for a [`Me`] answer: 200-300 bytes with a role or two (about 130 of them keys,
/// quotes, punctuation and `expires_at`); a longer one grows the buffer as it is written.
const ME_JSON_CAPACITY: usize = 512;

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Registration {
    #[schema(pattern = r"^[A-Za-z0-9._@+-]{1,64}$")]
    username: String,
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 256)]
    password: Zeroizing<String>,
}

/// `POST /users` (only with `registration = "open"`).
#[utoipa::path(post, path = "/users", tag = "users", request_body = Registration,
    responses((status = 201, description = "Created", body = UserView), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody),
        (status = 403, description = "Registration is closed", body = crate::openapi::ErrorBody),
        (status = 409, description = "The username is taken", body = crate::openapi::ErrorBody),
        (status = 422, description = "The password is too weak, or the username is a UUID", body = crate::openapi::ErrorBody),
        (status = 429, description = "rate_limited (per client IP, with Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    client_meta: ClientMeta,
    ApiJson(body): ApiJson<Registration>,
) -> Result<Response, AppError> {
    state
        .limits
        .check(crate::ratelimit::Bucket::Registration, client_meta.ip())?;
    let meta = client_meta.0;
    let user = state
        .auth
        .register(&body.username, body.password, &meta)
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))).into_response())
}
