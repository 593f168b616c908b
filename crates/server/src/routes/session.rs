//! Cookie mode: `POST /session`, `POST /session/refresh`, `POST /session/logout`.
//!
//! The same grants as `POST /token` (the password grant with an optional one-step second
//! factor, the MFA grant, the refresh grant with rotation and reuse detection), answered with
//! cookies instead of tokens in the body. See [`crate::session`] for the cookies and the
//! CSRF model.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tessera_auth::model::RequestMeta;
use tessera_auth::{AccessContext, AuthError, PasswordGrant, SecondFactor, TokenResponse};
use zeroize::Zeroizing;

use crate::error::AppError;
use crate::extract::{ApiBytes, ApiQuery, ClientMeta, OAuthForm};
use crate::ratelimit::Bucket;
use crate::session::{self, RefreshCookie};
use crate::state::AppState;

/// What a sign-in presents: the password (with an optional one-step second factor), or the
/// second step of an MFA login.
pub(crate) enum SignIn {
    /// Username and password.
    Password {
        username: String,
        password: Zeroizing<String>,
        second_factor: Option<SecondFactor>,
    },
    /// `mfa_token` from the `mfa_required` answer, and a code.
    Mfa {
        mfa_token: String,
        otp: Option<String>,
        recovery_code: Option<String>,
    },
}

/// Runs a sign-in through the same service calls as `POST /token` (rate limits included).
/// Pages and the JSON endpoint share it.
pub(crate) async fn sign_in(
    state: &AppState,
    meta: &ClientMeta,
    step: SignIn,
) -> Result<TokenResponse, AppError> {
    state.limits.check(Bucket::Token, meta.ip())?;
    let client = state
        .auth
        .authenticate_client(None, None)
        .await
        .map_err(AppError::from_grant)?;
    let res = match step {
        SignIn::Password {
            username,
            password,
            second_factor,
        } => {
            let grant = PasswordGrant {
                username,
                password,
                scope: None,
                client,
                second_factor,
            };
            let (auth, login_meta) = (Arc::clone(&state.auth), meta.0.clone());
            super::login_to_completion(&state.logins, async move {
                auth.password_grant(grant, &login_meta).await
            })
            .await?
        }
        SignIn::Mfa {
            mfa_token,
            otp,
            recovery_code,
        } => {
            state.limits.check(Bucket::Mfa, meta.ip())?;
            let (auth, login_meta) = (Arc::clone(&state.auth), meta.0.clone());
            super::login_to_completion(&state.logins, async move {
                auth.mfa_grant(
                    &mfa_token,
                    otp.as_deref(),
                    recovery_code.as_deref(),
                    &client,
                    &login_meta,
                )
                .await
            })
            .await?
        }
    };
    // Counted as `POST /token` counts them: a browser login is a login.
    state.metrics.record_login(&res);
    res.map_err(|e| match e {
        AuthError::MfaRequired { .. } => AppError::from_grant(e).with_description(
            "a second factor is required: send mfa_token with otp (or recovery_code) to POST /session",
        ),
        other => AppError::from_grant(other),
    })
}

/// The `Set-Cookie` values for a token response, and the CSRF token they carry. The CSRF
/// token is new at sign-in (no fixation across sessions) and kept on refresh (open forms in
/// other tabs stay valid).
pub(crate) fn cookies_for(
    state: &AppState,
    tokens: &TokenResponse,
    keep_csrf: Option<&str>,
) -> Result<(Vec<HeaderValue>, String), AppError> {
    let csrf = match keep_csrf {
        Some(c) => c.to_owned(),
        // Bound to the new session (see `session_csrf_token`).
        None => match state
            .auth
            .authenticate(&tokens.access_token)
            .ok()
            .and_then(|ctx| ctx.session_id().map(str::to_owned))
        {
            Some(sid) => session::session_csrf_token(&sid)?,
            None => session::new_csrf_token()?,
        },
    };
    // The refresh cookie lasts as long as its token: the session's idle expiry, which the
    // absolute one caps. A refresh must not give it `refresh_token_ttl` afresh once the
    // session's `session_max_age` is nearer (the cookie, and the CSRF cookie with it, would
    // outlive the session).
    let refresh_ttl = tokens.refresh_expires_in.unwrap_or_else(|| {
        state
            .config
            .refresh_token_ttl
            .min(state.config.session_max_age)
    });
    let cookies = session::session_cookies(
        &tokens.access_token,
        tokens.expires_in,
        tokens.refresh_token.as_deref().map(|rt| (rt, refresh_ttl)),
        &csrf,
    );
    Ok((cookies, csrf))
}

/// What renewing a browser's session with its one refresh cookie came to.
pub(crate) enum BrowserRefresh {
    /// Renewed: the token response, the cookies to set, and the (kept) CSRF token.
    Renewed {
        tokens: TokenResponse,
        cookies: Vec<HeaderValue>,
        csrf_token: String,
    },
    /// The refresh cookie is of another session than the one this browser signed into, as
    /// its CSRF cookie says ([`session::csrf_session`]): it was not used.
    NotThisBrowsers,
    /// The session is over (`invalid_grant`, or reuse, which revoked it): the browser's
    /// cookies are dead.
    Ended(AuthError),
    /// The refresh cookie was rotated within the grace window and its chain has moved on
    /// further than a refresh follows it ([`AuthError::RefreshSuperseded`]): the session
    /// lives, and the browser's jar already holds the newer cookies another of its requests
    /// received, so they must be kept.
    Superseded,
}

/// Renews a browser's session with its one refresh cookie `rt`, as `POST /session/refresh`
/// and the pages' `GET /session/resume` do: the same rotation as the refresh grant, the CSRF
/// token kept. Other failures (the database unavailable, a refresh throttled) say nothing
/// about the session and are errors, so that the cookies stay for the next try.
pub(crate) async fn refresh_browser(
    state: &AppState,
    headers: &HeaderMap,
    rt: &str,
    meta: &RequestMeta,
) -> Result<BrowserRefresh, AppError> {
    // A token that is not ours is let through: the refresh grant refuses it as usual.
    if let Some(sid) = state.auth.refresh_token_session(rt).await? {
        let browser =
            session::cookie(headers, session::CSRF_COOKIE).and_then(session::csrf_session);
        if browser != Some(sid.to_string().as_str()) {
            tracing::warn!(target: "tessera::auth", "refresh refused: the refresh cookie is not of the session this browser signed into");
            return Ok(BrowserRefresh::NotThisBrowsers);
        }
    }
    let client = state
        .auth
        .authenticate_client(None, None)
        .await
        .map_err(AppError::from_grant)?;
    match state.auth.refresh_grant(rt, None, &client, meta).await {
        Ok(tokens) => {
            let keep = session::cookie(headers, session::CSRF_COOKIE);
            let (cookies, csrf_token) = cookies_for(state, &tokens, keep)?;
            Ok(BrowserRefresh::Renewed {
                tokens,
                cookies,
                csrf_token,
            })
        }
        Err(e @ (AuthError::InvalidGrant(_) | AuthError::RefreshReused)) => {
            Ok(BrowserRefresh::Ended(e))
        }
        Err(AuthError::RefreshSuperseded) => Ok(BrowserRefresh::Superseded),
        Err(e) => Err(AppError::from_grant(e)),
    }
}

/// Adds `Set-Cookie` headers to a response.
pub(crate) fn with_cookies(mut res: Response, cookies: Vec<HeaderValue>) -> Response {
    for c in cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// A cookie-mode sign-in or refresh succeeded; the tokens are in the cookies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SessionStarted {
    /// Seconds until the access cookie expires (refresh before then).
    expires_in: i64,
    /// Granted scope; absent when none is granted (a first-party client with no default
    /// scopes), as in the token answer: RFC 6749 §3.3 has no empty scope list.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// The CSRF token (also in the `__Host-tessera_csrf` cookie): echo it in `X-CSRF-Token`.
    csrf_token: String,
}

/// `POST /session`: sign in and receive the session cookies.
#[utoipa::path(post, path = "/session", tag = "session",
    request_body(content = crate::openapi::SessionRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Signed in: `__Host-tessera_at`, `__Secure-tessera_rt` and `__Host-tessera_csrf` are set", body = SessionStarted),
        (status = 400, description = "invalid_request, invalid_grant (wrong credentials, locked, wrong code)", body = crate::openapi::ErrorBody),
        (status = 403, description = "mfa_required (with mfa_token), or csrf_failed (cross-origin)", body = crate::openapi::ErrorBody),
        (status = 429, description = "rate_limited (per client IP, with Retry-After)", body = crate::openapi::ErrorBody),
        (status = 503, description = "temporarily_unavailable", body = crate::openapi::ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    meta: ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Response, AppError> {
    // Login CSRF: no session exists yet, so no double-submit token either; the Fetch-Metadata
    // / Origin check stops a cross-site form from signing the browser in as the attacker.
    if !state.csrf.allows(&method, &uri, &headers).await {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "cross-origin request refused (Sec-Fetch-Site/Origin)",
        ));
    }
    let step = step_from_form(&form)?;
    let tokens = sign_in(&state, &meta, step).await?;
    end_replaced_session(&state, &headers, &meta.0).await;
    let (cookies, csrf_token) = cookies_for(&state, &tokens, None)?;
    let body = SessionStarted {
        expires_in: tokens.expires_in,
        scope: Some(tokens.scope).filter(|s| !s.is_empty()),
        csrf_token,
    };
    Ok(with_cookies(Json(body).into_response(), cookies))
}

/// A sign-in has succeeded and its cookies are about to replace the browser's: ends the
/// session those belonged to. Once replaced, its cookies (the only copy of its tokens, all
/// `HttpOnly`) are gone, and the session would otherwise live on unused until its idle
/// expiry, listed among the user's sessions and its refresh token still good.
///
/// Only a session the browser proves it holds ends:
/// - the one a valid access cookie names (`__Host-`: no other origin can set it), and
/// - the one of a refresh cookie whose session the `__Host-` CSRF cookie names, as
///   [`refresh_browser`] requires before using one: a `__Secure-` refresh cookie alone may
///   have been planted by a sibling subdomain, and another browser's session is not this
///   sign-in's to end. It ends by revoking the refresh token (RFC 7009 §2.1: the grant and
///   its tokens end with it).
///
/// The refresh cookie (`Path=/session`) comes to `POST /session` and to the sign-in page's
/// forms (`POST /session/login`, `/session/login/mfa`), not to `POST /login`, where the
/// page's forms posted before: there only a valid access cookie ends its session.
///
/// Called only after the sign-in succeeded (a failed attempt ends nothing) on a request
/// that passed the sign-in's CSRF check (Fetch-Metadata/`Origin`; the pages' forms also
/// the double-submit token). It changes nothing the sign-in's own cookies do not: they
/// replace the old ones whatever happens here, and the session is then out of this
/// browser's reach. Best effort: the new session exists by now, and failing the sign-in
/// would leave both alive, so a failure is logged and the sign-in stands.
pub(crate) async fn end_replaced_session(
    state: &AppState,
    headers: &HeaderMap,
    meta: &RequestMeta,
) {
    let mut ended: Option<String> = None;
    let access = session::cookie(headers, session::ACCESS_COOKIE)
        .and_then(|t| state.auth.authenticate(t).ok())
        .filter(|ctx| !ctx.is_client);
    if let Some(ctx) = access
        && let Some(sid) = ctx.session_id()
    {
        match state.auth.logout(&ctx, false, meta).await {
            Ok(_) => ended = Some(sid.to_owned()),
            Err(e) => {
                tracing::warn!(target: "tessera::auth", error = %e, "a new sign-in could not end the session it replaced");
            }
        }
    }
    let Some(browser_sid) =
        session::cookie(headers, session::CSRF_COOKIE).and_then(session::csrf_session)
    else {
        return;
    };
    if ended.as_deref() == Some(browser_sid) {
        return;
    }
    let rts = session::refresh_cookie(headers).all();
    for rt in rts {
        let ours = match state.auth.refresh_token_session(rt).await {
            Ok(sid) => sid.is_some_and(|sid| sid.to_string() == browser_sid),
            Err(e) => {
                tracing::warn!(target: "tessera::auth", error = %e, "a new sign-in could not end the session it replaced");
                false
            }
        };
        if !ours {
            continue;
        }
        if let Err(e) = revoke_refresh_cookie(state, rt, meta).await {
            tracing::warn!(target: "tessera::auth", error = %e, "a new sign-in could not end the session it replaced");
        }
    }
}

fn step_from_form(form: &OAuthForm) -> Result<SignIn, AppError> {
    let otp = form.get("otp")?;
    let recovery = form.get("recovery_code")?;
    if otp.is_some() && recovery.is_some() {
        return Err(AppError::invalid_request(
            "send at most one of `otp` and `recovery_code`",
        ));
    }
    if let Some(mfa_token) = form.get("mfa_token")? {
        return Ok(SignIn::Mfa {
            mfa_token: mfa_token.to_owned(),
            otp: otp.map(str::to_owned),
            recovery_code: recovery.map(str::to_owned),
        });
    }
    let second_factor = otp
        .map(|c| SecondFactor::Otp(Zeroizing::new(c.to_owned())))
        .or_else(|| recovery.map(|c| SecondFactor::RecoveryCode(Zeroizing::new(c.to_owned()))));
    Ok(SignIn::Password {
        username: form.require("username")?.to_owned(),
        password: Zeroizing::new(form.require("password")?.to_owned()),
        second_factor,
    })
}

/// `POST /session/refresh`: rotate the refresh cookie and renew the access cookie.
// The body is optional (`Option<...>`): the CSRF token may come in the header instead, and
// the document required a body the server does not.
#[utoipa::path(post, path = "/session/refresh", tag = "session",
    request_body(content = Option<crate::openapi::CsrfForm>, content_type = "application/x-www-form-urlencoded"),
    params(("x-csrf-token" = Option<String>, Header, description = "The CSRF token (or the csrf_token form field)")),
    responses(
        (status = 200, description = "Renewed: new access and refresh cookies", body = SessionStarted),
        (status = 400, description = "invalid_grant: no, expired, revoked or reused refresh cookie (the cookies are cleared; a reused token revokes the session), or one superseded within the grace period (the cookies are kept)", body = crate::openapi::ErrorBody),
        (status = 403, description = "csrf_failed", body = crate::openapi::ErrorBody),
        (status = 429, description = "rate_limited (per client IP, with Retry-After): the refresh grant's limit, `rate_limits.token_per_minute`", body = crate::openapi::ErrorBody),
    ))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    client_meta: ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, AppError> {
    let form_token = form_csrf_token(&headers, &body)?;
    session::check_csrf(&state.csrf, &method, &uri, &headers, form_token.as_deref()).await?;
    // The refresh grant of `POST /token` by cookie: the same per-IP limit (each attempt
    // is a database lookup, and a rotation when it succeeds).
    state.limits.check(Bucket::Token, client_meta.ip())?;
    let meta = client_meta.0;
    let rt = match session::refresh_cookie(&headers) {
        RefreshCookie::One(rt) => rt,
        // Without its refresh cookie (expired with its session, or deleted) the session
        // cannot be renewed: the browser's other session cookies are of no more use, so
        // they go too, as after any refresh that fails for good, and the session a valid
        // access cookie still names ends (its cookies were its only holder). The CSRF
        // cookie goes only if it names a session: a signed-out visitor's one belongs to
        // the sign-in form, which another tab may show.
        RefreshCookie::Missing => {
            let ctx = session::cookie(&headers, session::ACCESS_COOKIE)
                .and_then(|t| state.auth.authenticate(t).ok())
                .filter(|ctx| !ctx.is_client && ctx.session_id().is_some());
            if let Some(ctx) = ctx {
                state.auth.logout(&ctx, false, &meta).await?;
            }
            let res =
                AppError::from_grant(AuthError::InvalidGrant("no refresh cookie: sign in again"))
                    .into_response();
            let signed_in = session::cookie(&headers, session::CSRF_COOKIE)
                .and_then(session::csrf_session)
                .is_some();
            let clearing = if signed_in {
                session::clearing_cookies()
            } else {
                session::clearing_cookies_but_csrf()
            };
            return Ok(with_cookies(res, clearing));
        }
        // A cookie planted by another subdomain shadows ours: use neither, and leave the
        // cookies alone (clearing would delete ours and keep the planted one).
        RefreshCookie::Ambiguous(_) => {
            tracing::warn!(target: "tessera::auth", "refresh refused: more than one refresh cookie (one planted by another subdomain?)");
            return Err(AppError::from_grant(AuthError::InvalidGrant(
                "more than one refresh cookie: a cookie set for a parent domain shadows this server's; sign in again once it is removed",
            )));
        }
    };
    match refresh_browser(&state, &headers, rt, &meta).await? {
        BrowserRefresh::Renewed {
            tokens,
            cookies,
            csrf_token,
        } => {
            let body = SessionStarted {
                expires_in: tokens.expires_in,
                scope: Some(tokens.scope).filter(|s| !s.is_empty()),
                csrf_token,
            };
            Ok(with_cookies(Json(body).into_response(), cookies))
        }
        // Planted by another subdomain into a browser without a refresh cookie of its own
        // (or signed in before CSRF tokens named their session): never used, and the
        // cookies are left alone (clearing cannot reach a cookie set for a parent domain).
        BrowserRefresh::NotThisBrowsers => Err(AppError::from_grant(AuthError::InvalidGrant(
            "the refresh cookie does not belong to this browser's sign-in; sign in again",
        ))),
        // The jar holds the newer cookies: refused, and nothing is cleared.
        BrowserRefresh::Superseded => Err(AppError::from_grant(AuthError::RefreshSuperseded)),
        BrowserRefresh::Ended(e) => {
            // RFC 9700 §4.14.2: a reused refresh token has revoked the session; either way
            // this browser's cookies are dead, so delete them.
            let res = AppError::from_grant(e).into_response();
            Ok(with_cookies(res, session::clearing_cookies()))
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogoutQuery {
    /// End every session of the user, not only this one.
    #[serde(default)]
    all: bool,
}

/// `POST /session/logout`: end the session (`?all=true`: every session of the user) and
/// delete the cookies.
#[utoipa::path(post, path = "/session/logout", tag = "session", params(LogoutQuery,
        ("x-csrf-token" = Option<String>, Header, description = "The CSRF token (or the csrf_token form field)")),
    request_body(content = Option<crate::openapi::CsrfForm>, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 204, description = "Signed out; every session cookie is deleted (Max-Age=0)"),
        (status = 401, description = "invalid_token: `all=true` without a valid access cookie (ending every session needs to know whose)", body = crate::openapi::ErrorBody),
        (status = 403, description = "csrf_failed", body = crate::openapi::ErrorBody),
    ))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LogoutQuery>,
    ApiBytes(body): ApiBytes,
) -> Result<Response, AppError> {
    let form_token = form_csrf_token(&headers, &body)?;
    session::check_csrf(&state.csrf, &method, &uri, &headers, form_token.as_deref()).await?;
    end_session(&state, &headers, q.all, &meta).await?;
    let res = StatusCode::NO_CONTENT.into_response();
    Ok(with_cookies(res, session::clearing_cookies()))
}

/// Ends the browser's session: through the access cookie when it is still valid (its `sid`
/// and `jti` die), and through the refresh cookie in any case (RFC 7009 revocation of the
/// refresh token ends its session), so an expired access cookie does not leave the session
/// alive. With `all`, every session of the user ends (needs a valid access cookie).
pub(crate) async fn end_session(
    state: &AppState,
    headers: &HeaderMap,
    all: bool,
    meta: &RequestMeta,
) -> Result<(), AppError> {
    let ctx: Option<AccessContext> = session::cookie(headers, session::ACCESS_COOKIE)
        .and_then(|t| state.auth.authenticate(t).ok());
    if all && ctx.is_none() {
        return Err(AppError::invalid_token());
    }
    if let Some(ctx) = &ctx {
        state.auth.logout(ctx, all, meta).await?;
    }
    // Every refresh cookie sent: with one planted by another subdomain among them, ours
    // still ends (and the planted one, its planter's, with it).
    let rts = session::refresh_cookie(headers).all();
    for rt in rts {
        match revoke_refresh_cookie(state, rt, meta).await {
            Ok(()) => {}
            // A refresh token of another client (RFC 7009 §2.1: not ours to revoke). Only
            // a cookie planted by another subdomain holds one; it must not stop this
            // browser's own session from ending, nor its cookies from being deleted.
            Err(AuthError::Forbidden(_)) => {
                tracing::warn!(target: "tessera::auth", "sign-out skipped a refresh cookie of another client (planted by another subdomain?)");
            }
            Err(e) => return Err(AppError::from_api(e)),
        }
    }
    Ok(())
}

/// Revokes a refresh token a browser sent as its cookie, as the browser client's (RFC 7009
/// §2.1: another client's token is refused with `Forbidden`, which only a cookie planted by
/// another subdomain can hold).
async fn revoke_refresh_cookie(
    state: &AppState,
    rt: &str,
    meta: &RequestMeta,
) -> Result<(), AuthError> {
    state
        .auth
        .revoke_token(
            rt,
            Some("refresh_token"),
            Some(crate::config::DEFAULT_CLIENT_ID),
            meta,
        )
        .await
}

/// The `csrf_token` field of `POST /session/refresh`'s and `/session/logout`'s optional form,
/// the only thing either reads from its body, and only when the `X-CSRF-Token` header does
/// not carry the token (the header wins in [`session::check_csrf`]). With the header the body
/// is not parsed at all, so one that is not a UTF-8 form cannot stop a sign-out that needs
/// nothing from it.
///
/// # Errors
/// `invalid_request` when the token must come from a form that is not UTF-8.
fn form_csrf_token(
    headers: &HeaderMap,
    body: &axum::body::Bytes,
) -> Result<Option<String>, AppError> {
    if session::header_token(headers).is_some() {
        return Ok(None);
    }
    let form = optional_form(headers, body)?;
    Ok(field(&form, session::CSRF_FIELD).map(str::to_owned))
}

/// Form fields of an optional `application/x-www-form-urlencoded` body (empty without one),
/// decoded as [`OAuthForm::parse`] decodes the OAuth endpoints' (UTF-8, never replaced: a
/// password typed on the login page is checked as sent, or refused).
pub(crate) fn optional_form(
    headers: &HeaderMap,
    body: &axum::body::Bytes,
) -> Result<Vec<(String, String)>, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !OAuthForm::is_form_content_type(content_type) || body.is_empty() {
        return Ok(Vec::new());
    }
    crate::extract::decode_form(body, crate::extract::other_charset(content_type))
}

/// The first value of `name` in a form, if non-empty.
pub(crate) fn field<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}
