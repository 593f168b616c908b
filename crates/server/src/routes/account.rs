//! Self-service account endpoints under `/users/me`: password change, sessions and the TOTP
//! second factor.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_auth::model::SessionId;
use zeroize::Zeroizing;

use crate::error::AppError;
use crate::extract::{ApiJson, ApiPath, ClientMeta, CurrentUser};
use crate::ratelimit::Bucket;
use crate::routes::SessionView;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct PasswordChange {
    /// The current password.
    #[schema(value_type = String, format = Password)]
    current_password: Zeroizing<String>,
    /// The new password (12–256 characters, not common, strong enough).
    #[schema(value_type = String, format = Password)]
    new_password: Zeroizing<String>,
}

/// `POST /users/me/password`: change your own password; your other sessions end.
#[utoipa::path(post, path = "/users/me/password", tag = "users", request_body = PasswordChange,
    responses((status = 204, description = "Changed; other sessions ended"),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "Wrong current password", body = crate::openapi::ErrorBody),
        (status = 422, description = "The new password is too weak", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many wrong passwords for this username (the login lockout); Retry-After says when to try again", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    CurrentUser(ctx): CurrentUser,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode, AppError> {
    // Run to its end (see `login_to_completion`): the current password is reserved against
    // the session's lock before the hash, and only the check's end clears a right one.
    let auth = Arc::clone(&state.auth);
    super::login_to_completion(&state.logins, async move {
        auth.change_password(&ctx, body.current_password, body.new_password, &meta)
            .await
    })
    .await?
    .map_err(wrong_password("the current password is wrong"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /users/me/sessions`: your live sessions, the current one flagged.
#[utoipa::path(get, path = "/users/me/sessions", tag = "users",
    responses((status = 200, description = "Live sessions", body = Vec<SessionView>),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    CurrentUser(ctx): CurrentUser,
) -> Result<Json<Vec<SessionView>>, AppError> {
    let sessions = state.auth.own_sessions(&ctx).await?;
    let current = ctx.session_id().unwrap_or_default();
    Ok(Json(
        sessions
            .iter()
            .map(|s| SessionView::new(s, Some(current)))
            .collect(),
    ))
}

/// `DELETE /users/me/sessions/{id}`: sign out one of your sessions.
#[utoipa::path(delete, path = "/users/me/sessions/{id}", tag = "users",
    params(("id" = String, Path, description = "Session id (a UUID)", pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 204, description = "Signed out"),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such session of yours", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn revoke_session(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    CurrentUser(ctx): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let id = SessionId::parse(&id)?;
    state.auth.revoke_own_session(&ctx, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A TOTP enrolment in progress.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Enrollment {
    /// The secret, base32, for manual entry.
    secret: String,
    /// `otpauth://totp/...` for authenticator apps.
    otpauth_uri: String,
    /// The URI as a QR code (SVG).
    qr_svg: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct BeginTotp {
    /// Your password: a token alone cannot turn on a second factor.
    #[schema(value_type = String, format = Password)]
    password: Zeroizing<String>,
}

/// `POST /users/me/mfa/totp`: start enrolling an authenticator app (RFC 6238); needs the
/// password.
#[utoipa::path(post, path = "/users/me/mfa/totp", tag = "users", request_body = BeginTotp,
    responses((status = 200, description = "Scan the QR code or enter the secret, then confirm with a code", body = Enrollment),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "Wrong password", body = crate::openapi::ErrorBody),
        (status = 409, description = "TOTP is already on", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many attempts", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn begin_totp(
    State(state): State<AppState>,
    client_meta: ClientMeta,
    CurrentUser(ctx): CurrentUser,
    ApiJson(body): ApiJson<BeginTotp>,
) -> Result<Json<Enrollment>, AppError> {
    state.limits.check(Bucket::Mfa, client_meta.ip())?;
    let (auth, meta) = (Arc::clone(&state.auth), client_meta.0);
    let e = super::login_to_completion(&state.logins, async move {
        auth.begin_totp(&ctx, body.password, &meta).await
    })
    .await?
    .map_err(wrong_password("the password is wrong"))?;
    Ok(Json(Enrollment {
        qr_svg: qr_svg(&e.otpauth_uri)?,
        secret: e.secret,
        otpauth_uri: e.otpauth_uri,
    }))
}

/// Renders a QR code as SVG (our own markup: safe to inline in pages).
pub(crate) fn qr_svg(data: &str) -> Result<String, AppError> {
    let code = qrcode::QrCode::new(data.as_bytes())
        .map_err(|e| AppError::internal(format!("QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ConfirmTotp {
    /// The current 6-digit code.
    code: String,
    /// The `secret` of the enrolment being confirmed, as `POST /users/me/mfa/totp` returned
    /// it (optional). With it, confirming an enrolment that a newer one has replaced gets a
    /// clear 400 telling to start again, rather than "wrong code".
    #[serde(default)]
    secret: Option<String>,
}

/// Recovery codes, shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RecoveryCodes {
    /// Ten single-use codes for when the authenticator is lost. Store them safely.
    recovery_codes: Vec<String>,
}

/// `POST /users/me/mfa/totp/confirm`: turn TOTP on with a first code; returns the recovery
/// codes, once.
#[utoipa::path(post, path = "/users/me/mfa/totp/confirm", tag = "users", request_body = ConfirmTotp,
    responses((status = 200, description = "TOTP is on", body = RecoveryCodes),
        (status = 400, description = "Wrong code or no enrolment in progress", body = crate::openapi::ErrorBody),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many attempts", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn confirm_totp(
    State(state): State<AppState>,
    client_meta: ClientMeta,
    CurrentUser(ctx): CurrentUser,
    ApiJson(body): ApiJson<ConfirmTotp>,
) -> Result<Json<RecoveryCodes>, AppError> {
    state.limits.check(Bucket::Mfa, client_meta.ip())?;
    let user = state.auth.user_of(&ctx).await?;
    let codes = state
        .auth
        .confirm_totp(&user, &body.code, body.secret.as_deref(), &client_meta.0)
        .await?;
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct DisableTotp {
    /// Your password.
    #[schema(value_type = String, format = Password)]
    password: Zeroizing<String>,
    /// A current code.
    code: String,
}

/// `POST /users/me/mfa/totp/disable`: turn TOTP off (password and a current code).
#[utoipa::path(post, path = "/users/me/mfa/totp/disable", tag = "users", request_body = DisableTotp,
    responses((status = 204, description = "TOTP is off"),
        (status = 401, description = "Invalid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "Wrong password or code", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many attempts", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn disable_totp(
    State(state): State<AppState>,
    client_meta: ClientMeta,
    CurrentUser(ctx): CurrentUser,
    ApiJson(body): ApiJson<DisableTotp>,
) -> Result<StatusCode, AppError> {
    state.limits.check(Bucket::Mfa, client_meta.ip())?;
    let (auth, meta) = (Arc::clone(&state.auth), client_meta.0);
    super::login_to_completion(&state.logins, async move {
        auth.disable_totp(&ctx, body.password, &body.code, &meta)
            .await
    })
    .await?
    .map_err(wrong_password("the password or the code is wrong"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The answer to a signed-in user's wrong current password (or code): 403
/// `invalid_credentials`, not 401. The bearer token is fine, and a 401 must carry a
/// challenge for it (RFC 9110 §15.5.2), which would send clients off to refresh it.
fn wrong_password(message: &'static str) -> impl FnOnce(tessera_auth::AuthError) -> AppError {
    move |e| match e {
        tessera_auth::AuthError::InvalidCredentials => {
            AppError::new(StatusCode::FORBIDDEN, "invalid_credentials", message)
        }
        other => AppError::from_api(other),
    }
}
