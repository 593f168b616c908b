//! The OAuth endpoints: token (RFC 6749 §4.3, §4.4, §6), revocation (RFC 7009),
//! introspection (RFC 7662) and logout.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tessera_auth::{ClientPolicy, PasswordGrant};

use crate::error::AppError;
use crate::extract::{ApiQuery, ClientMeta, CurrentUser, OAuthForm, bearer_token};
use crate::ratelimit::Bucket;
use crate::state::AppState;
use crate::token_request::{Grant, GrantType, PresentedClient};

/// Identifies and authenticates the request's client (the built-in public client when none
/// is named).
async fn client_of(
    state: &AppState,
    form: &OAuthForm,
    headers: &HeaderMap,
) -> Result<ClientPolicy, AppError> {
    let authorization = crate::extract::client_authorization(headers)?;
    let p = PresentedClient::from_request(form, authorization)?;
    state
        .auth
        .authenticate_client(p.id.as_deref(), p.secret.as_deref().map(String::as_str))
        .await
        .map_err(AppError::from_grant)
}

fn token_response(body: &tessera_auth::TokenResponse) -> Response {
    // RFC 6749 §5.1: no-store (and the legacy Pragma).
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

/// `POST /token`.
#[utoipa::path(post, path = "/token", tag = "oauth",
    request_body(content = crate::openapi::TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Tokens issued", body = crate::openapi::TokenResponse),
        (status = 400, description = "invalid_request, invalid_grant, invalid_scope, unsupported_grant_type, unauthorized_client", body = crate::openapi::ErrorBody),
        (status = 401, description = "invalid_client", body = crate::openapi::ErrorBody),
        (status = 403, description = "mfa_required: send the mfa_token with a code (MFA grant)", body = crate::openapi::ErrorBody),
        (status = 429, description = "rate_limited (per client IP, with Retry-After)", body = crate::openapi::ErrorBody),
        (status = 503, description = "temporarily_unavailable (with Retry-After): database unavailable or the login queue is full", body = crate::openapi::ErrorBody),
    ))]
pub(crate) async fn token(
    State(state): State<AppState>,
    client_meta: ClientMeta,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Response, AppError> {
    state.limits.check(Bucket::Token, client_meta.ip())?;
    let meta = client_meta.0;
    // The grant type is checked first so that an unsupported grant is reported as such,
    // whatever the client presented; the grant's own parameters only once the client is
    // known (crate::token_request runs the same steps for the fuzzer).
    let grant_type = GrantType::from_form(&form)?;
    let client = client_of(&state, &form, &headers).await?;
    let res = match Grant::from_form(&form, grant_type)? {
        Grant::Password {
            username,
            password,
            scope,
            second_factor,
        } => {
            let grant = PasswordGrant {
                username,
                password,
                scope,
                client,
                second_factor,
            };
            let (auth, login_meta) = (Arc::clone(&state.auth), meta.clone());
            let res = super::login_to_completion(&state.logins, async move {
                auth.password_grant(grant, &login_meta).await
            })
            .await?;
            state.metrics.record_login(&res);
            res
        }
        Grant::RefreshToken {
            refresh_token,
            scope,
        } => {
            state
                .auth
                .refresh_grant(&refresh_token, scope.as_deref(), &client, &meta)
                .await
        }
        Grant::Mfa {
            mfa_token,
            otp,
            recovery_code,
        } => {
            let ip = meta
                .ip
                .as_deref()
                .and_then(|i| i.parse().ok())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            state.limits.check(Bucket::Mfa, ip)?;
            let (auth, login_meta) = (Arc::clone(&state.auth), meta.clone());
            let res = super::login_to_completion(&state.logins, async move {
                auth.mfa_grant(
                    &mfa_token,
                    otp.as_deref().map(String::as_str),
                    recovery_code.as_deref().map(String::as_str),
                    &client,
                    &login_meta,
                )
                .await
            })
            .await?;
            state.metrics.record_login(&res);
            res
        }
        Grant::ClientCredentials { scope } => {
            state
                .auth
                .client_credentials_grant(&client, scope.as_deref(), &meta)
                .await
        }
    };
    Ok(token_response(&res.map_err(AppError::from_grant)?))
}

/// `POST /revoke` (RFC 7009 §2.1). Answers 200 for unknown or invalid tokens (§2.2).
#[utoipa::path(post, path = "/revoke", tag = "oauth",
    request_body(content = crate::openapi::RevokeRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Revoked (also for unknown tokens, RFC 7009 §2.2)"), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "invalid_client", body = crate::openapi::ErrorBody)))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Response, AppError> {
    let client = client_of(&state, &form, &headers).await?;
    let token = form.require("token")?;
    // RFC 7009 §2.1: the hint is only a hint, and the server searches every token type it
    // supports when the hint does not find the token; a value it does not know is treated
    // as no hint (as at `/introspect`, RFC 7662 §2.1). `unsupported_token_type` (§2.2.1)
    // is for a token of a type the server cannot revoke, and it revokes both kinds it issues.
    let hint = form
        .get("token_type_hint")?
        .filter(|h| matches!(*h, "access_token" | "refresh_token"));
    state
        .auth
        .revoke_token(token, hint, Some(&client.id), &meta)
        .await
        .map_err(AppError::from_grant)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], StatusCode::OK).into_response())
}

/// `POST /introspect` (RFC 7662 §2). The caller is an admin (Bearer token) or a confidential
/// client (HTTP Basic or form credentials); the token under inspection goes in the form.
#[utoipa::path(post, path = "/introspect", tag = "oauth",
    request_body(content = crate::openapi::IntrospectRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Token state", body = crate::openapi::Introspection), (status = 400, description = "Invalid request", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody), (status = 403, description = "The admin role is required", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Response, AppError> {
    if let Some(caller) = bearer_token(&headers)? {
        let ctx = state.auth.authenticate(caller).map_err(|e| {
            tracing::debug!(target: "tessera::auth", reason = %e, "introspection caller rejected");
            AppError::invalid_token()
        })?;
        if !ctx.has_role(tessera_auth::model::Role::ADMIN) {
            return Err(AppError::insufficient_scope(
                "introspection requires the admin role or client credentials",
            ));
        }
    } else {
        let authorization = crate::extract::client_authorization(&headers)?;
        let p = PresentedClient::from_request(&form, authorization)?;
        if p.id.is_none() {
            return Err(AppError::missing_token());
        }
        let client = client_of(&state, &form, &headers).await?;
        if !client.confidential {
            return Err(AppError::invalid_client(
                "only confidential clients may introspect",
            ));
        }
    }
    let token = form.require("token")?;
    // RFC 7662 §2.1: the hint is only a hint, and the token is looked up whatever it says;
    // but like every parameter it may appear once (RFC 6749 §3.1), as at `/revoke`.
    form.get("token_type_hint")?;
    let result = state.auth.introspect(token).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(result)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogoutQuery {
    #[serde(default)]
    all: bool,
}

/// `POST /logout`: ends the caller's session (`?all=true`: every session of the user).
#[utoipa::path(post, path = "/logout", tag = "oauth", params(LogoutQuery),
    responses((status = 200, description = "Sessions ended", body = crate::openapi::JsonObject),
        (status = 400, description = "invalid_request: `all=true` with a client token, a malformed parameter or Authorization header, or a token with neither a session nor a usable `jti` (nothing could revoke it alone)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody)),
    security(("oauth2" = []), ("bearer" = [])))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    CurrentUser(ctx): CurrentUser,
    ApiQuery(q): ApiQuery<LogoutQuery>,
) -> Result<Response, AppError> {
    if ctx.is_client && q.all {
        return Err(AppError::invalid_request(
            "a client token has no user sessions to end",
        ));
    }
    let n = state.auth.logout(&ctx, q.all, &meta).await?;
    Ok(Json(serde_json::json!({ "revoked_sessions": n })).into_response())
}
