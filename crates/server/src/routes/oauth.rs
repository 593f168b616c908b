//! The OAuth endpoints: token (RFC 6749 §4.3, §4.4, §6), revocation (RFC 7009),
//! introspection (RFC 7662) and logout.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tessera_auth::security::MFA_GRANT_TYPE;
use tessera_auth::{ClientPolicy, PasswordGrant, SecondFactor};
use zeroize::Zeroizing;

use crate::error::AppError;
use crate::extract::{ApiQuery, ClientMeta, CurrentUser, OAuthForm, bearer_token};
use crate::ratelimit::Bucket;
use crate::state::AppState;

/// Client credentials as presented: HTTP Basic or `client_id`/`client_secret` form fields
/// (RFC 6749 §2.3.1). Using both methods at once is refused.
struct PresentedClient {
    id: Option<String>,
    secret: Option<Zeroizing<String>>,
}

fn presented_client(form: &OAuthForm, headers: &HeaderMap) -> Result<PresentedClient, AppError> {
    let mut basic = None;
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            basic = Some(
                decode_basic(rest)
                    .ok_or_else(|| AppError::invalid_client("malformed HTTP Basic credentials"))?,
            );
        }
    }
    let form_id = form.get("client_id")?.map(str::to_owned);
    let form_secret = form
        .get("client_secret")?
        .map(|s| Zeroizing::new(s.to_owned()));
    // Swagger UI and some libraries send `Basic Og==` (an empty id and secret) when no
    // client is configured: that names no client at all.
    let basic = basic.filter(|(id, secret)| !(id.is_empty() && secret.is_empty()));
    match basic {
        Some((id, secret)) => {
            if form_secret.is_some() {
                return Err(AppError::invalid_request(
                    "use one client authentication method: HTTP Basic or client_secret, not both (RFC 6749 §2.3.1)",
                ));
            }
            if form_id.as_deref().is_some_and(|f| f != id) {
                return Err(AppError::invalid_request(
                    "client_id in the form differs from HTTP Basic",
                ));
            }
            Ok(PresentedClient {
                id: Some(id),
                secret: (!secret.is_empty()).then_some(secret),
            })
        }
        None => Ok(PresentedClient {
            id: form_id,
            secret: form_secret,
        }),
    }
}

/// Identifies and authenticates the request's client (the built-in public client when none
/// is named).
async fn client_of(
    state: &AppState,
    form: &OAuthForm,
    headers: &HeaderMap,
) -> Result<ClientPolicy, AppError> {
    let p = presented_client(form, headers)?;
    state
        .auth
        .authenticate_client(p.id.as_deref(), p.secret.as_deref().map(String::as_str))
        .await
        .map_err(AppError::from_grant)
}

/// Decodes `base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn decode_basic(b64: &str) -> Option<(String, Zeroizing<String>)> {
    use base64::Engine as _;
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(&raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    let dec = |s: &str| -> Option<String> {
        let pairs = Zeroizing::new(format!("v={s}"));
        serde_urlencoded::from_str::<Vec<(String, String)>>(&pairs)
            .ok()?
            .pop()
            .map(|(_, v)| v)
    };
    Some((dec(id)?, Zeroizing::new(dec(secret)?)))
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
    // whatever the client presented.
    let grant_type = form.get("grant_type")?;
    if let Some(g) = grant_type
        && !matches!(
            g,
            "password" | "refresh_token" | "client_credentials" | MFA_GRANT_TYPE
        )
    {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!(
                "grant_type `{}` is not supported; use password, refresh_token, client_credentials or {MFA_GRANT_TYPE}",
                g.chars().take(64).collect::<String>()
            ),
        ));
    }
    let client = client_of(&state, &form, &headers).await?;
    let res = match grant_type {
        // The tutorial's OAuth2PasswordRequestForm clients send `grant_type=password` or
        // nothing at all; both mean the password grant.
        None | Some("password") => {
            // A second factor may come with the password (one-step MFA login; the only
            // way in while the username is locked, see docs/security.md).
            let second_factor = match (form.get("otp")?, form.get("recovery_code")?) {
                (None, None) => None,
                (Some(c), None) => Some(SecondFactor::Otp(Zeroizing::new(c.to_owned()))),
                (None, Some(c)) => Some(SecondFactor::RecoveryCode(Zeroizing::new(c.to_owned()))),
                (Some(_), Some(_)) => {
                    return Err(AppError::invalid_request(
                        "send at most one of `otp` and `recovery_code`",
                    ));
                }
            };
            let grant = PasswordGrant {
                username: form.require("username")?.to_owned(),
                password: Zeroizing::new(form.require("password")?.to_owned()),
                scope: form.get("scope")?.map(str::to_owned),
                client,
                second_factor,
            };
            state.auth.password_grant(grant, &meta).await
        }
        Some("refresh_token") => {
            let refresh = form.require("refresh_token")?;
            state
                .auth
                .refresh_grant(refresh, form.get("scope")?, &client, &meta)
                .await
        }
        Some(MFA_GRANT_TYPE) => {
            let ip = meta
                .ip
                .as_deref()
                .and_then(|i| i.parse().ok())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            state.limits.check(Bucket::Mfa, ip)?;
            let mfa_token = form.require("mfa_token")?;
            state
                .auth
                .mfa_grant(
                    mfa_token,
                    form.get("otp")?,
                    form.get("recovery_code")?,
                    &client,
                    &meta,
                )
                .await
        }
        _ => {
            state
                .auth
                .client_credentials_grant(&client, form.get("scope")?, &meta)
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
    let hint = form.get("token_type_hint")?;
    if let Some(h) = hint
        && h != "access_token"
        && h != "refresh_token"
    {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            "token_type_hint must be access_token or refresh_token",
        ));
    }
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
    if let Some(caller) = bearer_token(&headers) {
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
        let p = presented_client(&form, &headers)?;
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
    responses((status = 200, description = "Sessions ended", body = crate::openapi::JsonObject), (status = 401, description = "Missing, invalid, expired or revoked token", body = crate::openapi::ErrorBody)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_url_decoded() {
        use base64::Engine as _;
        let enc = base64::engine::general_purpose::STANDARD.encode("my%20client:s%3Acret");
        let (id, secret) = decode_basic(&enc).unwrap();
        assert_eq!((id.as_str(), secret.as_str()), ("my client", "s:cret"));
        assert!(decode_basic("!!!").is_none());
    }
}
