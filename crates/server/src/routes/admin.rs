//! The admin API (`/admin/...`, `admin` role required).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tessera_auth::Actor;
use tessera_auth::model::SessionId;
use zeroize::Zeroizing;

use crate::error::AppError;
use crate::extract::{AdminUser, ApiJson, ApiPath, ApiQuery, ClientMeta};
use crate::routes::{SessionView, UserView};
use crate::state::AppState;

fn actor(ctx: &tessera_auth::AccessContext) -> Actor {
    Actor::User {
        id: ctx.user_id().to_owned(),
        username: ctx.username().to_owned(),
    }
}

/// `GET /admin/users`.
#[utoipa::path(get, path = "/admin/users", tag = "admin",
    responses((status = 200, description = "All users", body = Vec<UserView>), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
) -> Result<Json<Vec<UserView>>, AppError> {
    let users = state.auth.list_users().await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NewUser {
    #[schema(pattern = r"^[A-Za-z0-9._@+-]{1,64}$")]
    username: String,
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 256)]
    password: Zeroizing<String>,
    /// Role names (at most 32): 1-64 lowercase letters, digits and `_ - : .`.
    #[serde(default)]
    #[schema(inline, value_type = Vec<crate::openapi::RoleName>, max_items = 32)]
    roles: Vec<String>,
}

/// `POST /admin/users`.
#[utoipa::path(post, path = "/admin/users", tag = "admin", request_body = NewUser,
    responses((status = 201, description = "Created", body = UserView), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody),
        (status = 409, description = "The username is taken", body = crate::openapi::ErrorBody),
        (status = 422, description = "The password is too weak, or the username is a UUID", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<Response, AppError> {
    let user = state
        .auth
        .create_user(
            &body.username,
            body.password,
            &body.roles,
            &actor(&admin),
            &meta,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))).into_response())
}

/// `GET /admin/users/{user}` (username or id).
#[utoipa::path(get, path = "/admin/users/{user}", tag = "admin",
    params(("user" = String, Path, description = "Username or id")),
    responses((status = 200, description = "The user", body = UserView), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn show_user(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<UserView>, AppError> {
    Ok(Json(UserView::from(&state.auth.find_user(&user).await?)))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Roles {
    /// Role names (at most 32): 1-64 lowercase letters, digits and `_ - : .`.
    #[schema(inline, value_type = Vec<crate::openapi::RoleName>, max_items = 32)]
    roles: Vec<String>,
}

/// `PUT /admin/users/{user}/roles`.
#[utoipa::path(put, path = "/admin/users/{user}/roles", tag = "admin", request_body = Roles,
    params(("user" = String, Path, description = "Username or id")),
    responses((status = 200, description = "The updated user", body = UserView), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn set_roles(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<Roles>,
) -> Result<Json<UserView>, AppError> {
    let user = state.auth.find_user(&user).await?;
    let user = state
        .auth
        .set_roles(&user, &body.roles, &actor(&admin), &meta)
        .await?;
    Ok(Json(UserView::from(&user)))
}

/// `POST /admin/users/{user}/disable`.
#[utoipa::path(post, path = "/admin/users/{user}/disable", tag = "admin",
    params(("user" = String, Path, description = "Username or id")),
    responses((status = 200, description = "Disabled; every session and token revoked", body = UserView), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<UserView>, AppError> {
    let user = state.auth.find_user(&user).await?;
    Ok(Json(UserView::from(
        &state
            .auth
            .set_disabled(&user, true, &actor(&admin), &meta)
            .await?,
    )))
}

/// `POST /admin/users/{user}/enable`.
#[utoipa::path(post, path = "/admin/users/{user}/enable", tag = "admin",
    params(("user" = String, Path, description = "Username or id")),
    responses((status = 200, description = "Enabled", body = UserView), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn enable_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<UserView>, AppError> {
    let user = state.auth.find_user(&user).await?;
    Ok(Json(UserView::from(
        &state
            .auth
            .set_disabled(&user, false, &actor(&admin), &meta)
            .await?,
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NewPassword {
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 256)]
    password: Zeroizing<String>,
}

/// `POST /admin/users/{user}/password`: sets a new password and ends every session.
#[utoipa::path(post, path = "/admin/users/{user}/password", tag = "admin", request_body = NewPassword,
    params(("user" = String, Path, description = "Username or id")),
    responses((status = 204, description = "Password set; sessions ended"), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 422, description = "The password is too weak", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn reset_password(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<NewPassword>,
) -> Result<StatusCode, AppError> {
    let user = state.auth.find_user(&user).await?;
    state
        .auth
        .set_password(&user, body.password, None, &actor(&admin), &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /admin/users/{user}`.
#[utoipa::path(delete, path = "/admin/users/{user}", tag = "admin",
    params(("user" = String, Path, description = "Username or id")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiPath(user): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let user = state.auth.find_user(&user).await?;
    if user.id.to_string() == admin.user_id() {
        return Err(AppError::invalid_request(
            "you cannot delete your own account",
        ));
    }
    state.auth.delete_user(&user, &actor(&admin), &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SessionQuery {
    user: Option<String>,
}

/// `GET /admin/sessions[?user=NAME]`.
#[utoipa::path(get, path = "/admin/sessions", tag = "admin", params(SessionQuery),
    responses((status = 200, description = "Live sessions", body = Vec<SessionView>), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<SessionQuery>,
) -> Result<Json<Vec<SessionView>>, AppError> {
    let user = match q.user {
        Some(u) => Some(state.auth.find_user(&u).await?),
        None => None,
    };
    let sessions = state.auth.list_sessions(user.as_ref()).await?;
    Ok(Json(
        sessions.iter().map(|s| SessionView::new(s, None)).collect(),
    ))
}

/// `DELETE /admin/sessions/{id}`.
#[utoipa::path(delete, path = "/admin/sessions/{id}", tag = "admin",
    params(("id" = String, Path, description = "Session id (a UUID)", pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 204, description = "Revoked"), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn revoke_session(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let id = SessionId::parse(&id)?;
    match state
        .auth
        .revoke_session(id, "admin", &actor(&admin), &meta)
        .await?
    {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(AppError::not_found("live session")),
    }
}

/// `DELETE /admin/users/{user}/sessions`: sign a user out everywhere.
#[utoipa::path(delete, path = "/admin/users/{user}/sessions", tag = "admin",
    params(("user" = String, Path, description = "Username or id")),
    responses((status = 200, description = "Sessions revoked: `{\"revoked_sessions\": n}`", body = crate::openapi::JsonObject),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn revoke_user_sessions(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let user = state.auth.find_user(&user).await?;
    let n = state
        .auth
        .revoke_all_sessions(&user, &actor(&admin), &meta)
        .await?;
    Ok(Json(serde_json::json!({ "revoked_sessions": n })))
}

/// `GET /admin/keys`.
#[utoipa::path(get, path = "/admin/keys", tag = "admin",
    responses((status = 200, description = "Signing keys and their states", body = crate::openapi::JsonObject), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
) -> Json<serde_json::Value> {
    let ring = state.auth.key_ring();
    let keys: Vec<serde_json::Value> = ring
        .keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "kid": k.kid,
                "alg": k.alg,
                "state": k.state.as_str(),
                "created_at": k.created_at,
                "activates_at": k.activates_at,
                "retires_at": k.retires_at,
                "expires_at": k.expires_at,
            })
        })
        .collect();
    Json(serde_json::json!({ "signing_kid": ring.signer.kid(), "keys": keys }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RotateQuery {
    #[serde(default)]
    now: bool,
}

/// `POST /admin/keys/rotate[?now=true]`.
#[utoipa::path(post, path = "/admin/keys/rotate", tag = "admin", params(RotateQuery),
    responses((status = 200, description = "The new key", body = crate::openapi::JsonObject), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody)), security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn rotate_keys(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiQuery(q): ApiQuery<RotateQuery>,
) -> Result<Json<serde_json::Value>, AppError> {
    let info = state.auth.rotate_keys(q.now, &actor(&admin)).await?;
    Ok(Json(serde_json::json!({
        "kid": info.kid,
        "alg": info.alg,
        "state": info.state.as_str(),
        "activates_at": info.activates_at,
    })))
}

/// `POST /admin/users/{user}/unlock`: lift a login lockout.
#[utoipa::path(post, path = "/admin/users/{user}/unlock", tag = "admin",
    params(("user" = String, Path, description = "Username or id")),
    responses((status = 204, description = "Unlocked"),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn unlock_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiPath(user): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let user = state.auth.find_user(&user).await?;
    state.auth.unlock(&user, &actor(&admin), &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /admin/users/{user}/mfa/reset`: turn off a user's second factor (lost device).
#[utoipa::path(post, path = "/admin/users/{user}/mfa/reset", tag = "admin",
    params(("user" = String, Path, description = "Username or id")),
    responses((status = 204, description = "Second factor removed"),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn reset_mfa(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientMeta(meta): ClientMeta,
    ApiPath(user): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let user = state.auth.find_user(&user).await?;
    state.auth.reset_mfa(&user, &actor(&admin), &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only events of this user (username or id).
    user: Option<String>,
    /// Only events at or after this Unix time.
    since: Option<i64>,
    /// Only events with an id greater than this (pagination cursor).
    #[serde(default)]
    after: i64,
    /// At most this many events (1–1000, default 100; anything else is 400).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// `GET /admin/audit`: the tamper-evident audit log, oldest first.
#[utoipa::path(get, path = "/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "Events and the next cursor", body = crate::openapi::JsonObject),
        (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody), (status = 404, description = "`user` names no user", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<serde_json::Value>, AppError> {
    let limit = crate::routes::page_limit(q.limit.as_deref(), 100)?;
    let user_id = match &q.user {
        Some(u) => Some(state.auth.find_user(u).await?.id.to_string()),
        None => None,
    };
    let rows = tessera_auth::store::AuditStore::list_audit(
        state.db(),
        q.after.max(0),
        user_id.as_deref(),
        q.since,
        limit,
    )
    .await
    .map_err(tessera_auth::AuthError::from)?;
    let next = rows.last().map_or(q.after, |r| r.id);
    let events: Vec<serde_json::Value> =
        rows.iter().map(tessera_auth::audit::record_json).collect();
    Ok(Json(serde_json::json!({ "events": events, "next": next })))
}
