//! The hosted pages: `/login` (with the MFA step) and `/account` (profile, password, sessions,
//! TOTP enrolment), server-rendered with askama. They work without JavaScript: every action
//! is a plain form POST carrying the `csrf_token` field, answered with a page or a 303
//! redirect. They authenticate with the cookie-mode access cookie only, and call the same
//! service functions (and the same error mapping) as the JSON API.
//!
//! Security headers on every page response ([`page_headers`]): a CSP without any script
//! source, `frame-ancestors 'none'` plus `X-Frame-Options: DENY`, `Referrer-Policy:
//! same-origin`, and `Strict-Transport-Security` when `public_url` is `https://` (the server
//! itself speaks plain HTTP; TLS ends at a proxy, and `public_url` is what says so).

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_auth::model::SessionId;
use tessera_auth::{AccessContext, AuthError, SecondFactor};
use zeroize::Zeroizing;

use crate::error::AppError;
use crate::extract::ClientMeta;
use crate::ratelimit::Bucket;
use crate::routes::session::{
    BrowserRefresh, SignIn, cookies_for, end_replaced_session, end_session, field, optional_form,
    refresh_browser, sign_in, with_cookies,
};
use crate::session::{self, CSRF_FIELD};
use crate::state::AppState;

/// The stylesheet, compiled into the binary.
const CSS: &str = include_str!("../../assets/tessera.css");

/// A fingerprint of the stylesheet for its URL (`?v=`), so it can be cached for a year and
/// still change with the binary.
pub(crate) const CSS_VERSION: u64 = fnv1a(CSS.as_bytes());

const fn fnv1a(mut bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    while let [b, rest @ ..] = bytes {
        hash ^= *b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        bytes = rest;
    }
    hash
}

/// The page CSP: nothing may run, styles come from our stylesheet only, images from us or
/// `data:` (the QR code), forms post only to us, and no one may frame us.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the page security headers to every response of the page routes.
pub(crate) async fn page_headers(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: nothing leaves for other sites either way, but under
    // `no-referrer` browsers send `Origin: null` on our own form POSTs (Fetch, "serializing
    // a request origin"), and a browser without Fetch Metadata (Safari before 16.4) would be
    // refused by the Origin half of the CSRF check on every form.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // RFC 6797 §7.2: HSTS only means something over TLS; `public_url` says whether the
    // browser reaches us over https (through a TLS-terminating proxy).
    if state.config.public_url.starts_with("https://") {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    res
}

/// `GET /assets/tessera.css`.
pub(crate) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        CSS,
    )
        .into_response()
}

// ------------------------------------------------------------------ templates

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    username: String,
    error: Option<String>,
    notice: Option<&'static str>,
    mfa_token: Option<String>,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    csrf: String,
    username: String,
    initial: String,
    user_id: String,
    roles: Vec<String>,
    created: String,
    password_changed: String,
    mfa_on: bool,
    recovery_left: u64,
    min_length: usize,
    sessions: Vec<SessionRow>,
    notice: Option<&'static str>,
    password_error: Option<String>,
    mfa_error: Option<String>,
}

struct SessionRow {
    id: String,
    current: bool,
    device: String,
    ip: String,
    created: String,
    last_used: String,
}

#[derive(Template)]
#[template(path = "totp.html")]
struct TotpPage {
    csrf: String,
    secret: String,
    secret_grouped: String,
    otpauth_uri: String,
    qr_data_uri: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "recovery.html")]
struct RecoveryPage {
    codes: Vec<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: &'static str,
    message: String,
    back: &'static str,
}

fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => AppError::internal(format!("template: {e}")).into_response(),
    }
}

fn error_page(
    status: StatusCode,
    title: &'static str,
    message: String,
    back: &'static str,
) -> Response {
    render(
        status,
        &ErrorPage {
            title,
            message,
            back,
        },
    )
}

/// The description of an error as a sentence for a page (the API's wording, capitalised).
fn sentence(e: &AppError) -> String {
    let d = e.description();
    let mut chars = d.chars();
    let mut s: String = chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>())
        .unwrap_or_default();
    s.push_str(chars.as_str());
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

const NOTICES: &[(&str, &str)] = &[
    ("signed_out", "You have been signed out."),
    ("signed_out_all", "You have been signed out everywhere."),
    ("password_changed", "Your password has been changed."),
    ("session_revoked", "The session has been signed out."),
    ("totp_off", "Two-step verification is off."),
    (
        "session_ended",
        "Your session has ended. Please sign in again.",
    ),
    (
        "renewed",
        "Your sign-in was renewed. Please submit the form again.",
    ),
];

#[derive(Deserialize)]
pub(crate) struct NoticeQuery {
    notice: Option<String>,
    /// Set by `/session/resume` on its way back: do not go there again.
    resumed: Option<String>,
}

/// Only known notices are shown: a link cannot put text of its choosing on our page.
fn notice(q: &NoticeQuery) -> Option<&'static str> {
    let key = q.notice.as_deref()?;
    NOTICES.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// A page's query string. A malformed one (a parameter repeated where one is read, say)
/// is answered with the error page, as the JSON endpoints answer it with the RFC 6749 error
/// shape ([`crate::extract::ApiQuery`]), never with axum's plain-text rejection.
pub(crate) struct PageQuery<T>(T);

impl<T: serde::de::DeserializeOwned> FromRequestParts<AppState> for PageQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(e) => Err(malformed_address(&parts.uri, &e.body_text())),
        }
    }
}

/// A page's path parameter, whose rejections (`%ff`: not UTF-8) get the error page, as
/// [`PageQuery`].
pub(crate) struct PagePath<T>(T);

impl<T: serde::de::DeserializeOwned + Send> FromRequestParts<AppState> for PagePath<T> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(e) => Err(malformed_address(&parts.uri, &e.body_text())),
        }
    }
}

/// The error page for a page address that does not parse: 400, with a way back to the
/// sign-in page (for its own addresses) or the account page.
fn malformed_address(uri: &Uri, detail: &str) -> Response {
    tracing::debug!(detail, "malformed page address");
    let back = if uri.path().starts_with("/login") {
        "/login"
    } else {
        "/account"
    };
    error_page(
        StatusCode::BAD_REQUEST,
        "This address is not valid",
        "The address of this page is malformed: a parameter is repeated or cannot be read. Follow the link below instead.".into(),
        back,
    )
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ResumeQuery {
    notice: Option<String>,
}

/// `GET /session/resume`: the pages' way back in once the access cookie has expired.
/// Rotates the refresh cookie (under `/session`, so only sent here and to the session
/// API) exactly as `POST /session/refresh` does, sets fresh cookies and goes back to
/// `/account`; a session that has ended goes to `/login`. A GET, because it is reached by
/// redirect: the cookies are `SameSite=Strict`, so another site cannot make a browser
/// send them here, and a request that says it comes from elsewhere is not served
/// (`Sec-Fetch-Site`); the answer is a redirect, readable by no one.
pub(crate) async fn resume(
    State(state): State<AppState>,
    client_meta: ClientMeta,
    headers: HeaderMap,
    PageQuery(q): PageQuery<ResumeQuery>,
) -> Result<Response, AppError> {
    let elsewhere = headers
        .get("sec-fetch-site")
        .is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"));
    let rt = match session::refresh_cookie(&headers) {
        session::RefreshCookie::One(rt) if !elsewhere => rt,
        _ => return Ok(see_other("/login")),
    };
    // The refresh grant's per-IP limit, as at `POST /session/refresh`; a navigation gets a
    // page, and the cookies stay for the next try.
    if let Err(e) = state.limits.check(Bucket::Token, client_meta.ip()) {
        let page = error_page(e.status(), "Too many requests", sentence(&e), "/account");
        return Ok(with_retry_after(page, &e));
    }
    match refresh_browser(&state, &headers, rt, &client_meta.0).await? {
        BrowserRefresh::Renewed { cookies, .. } => {
            let to = if q.notice.as_deref() == Some("renewed") {
                "/account?resumed=1&notice=renewed"
            } else {
                "/account?resumed=1"
            };
            Ok(with_cookies(see_other(to), cookies))
        }
        // A refresh cookie of another session than the one this browser signed into
        // (planted by a sibling subdomain into a browser that has none, say): not used.
        BrowserRefresh::NotThisBrowsers => Ok(see_other("/login")),
        // A tab that left with a refresh cookie the browser's other requests have since
        // rotated well past (RFC 9700 §4.14.2 grace window): the session lives and the jar
        // holds the newer cookies, so keep them and go back to the account page, which
        // (marked `resumed`) sends the browser to sign in rather than here again if they do
        // not let it in. A JSON 400 is no answer to a page navigation.
        BrowserRefresh::Superseded => Ok(see_other("/account?resumed=1")),
        BrowserRefresh::Ended(e) => {
            tracing::debug!(target: "tessera::auth", reason = %e, "page session could not be resumed");
            Ok(with_cookies(
                see_other("/login?notice=session_ended"),
                session::clearing_cookies(),
            ))
        }
    }
}

/// `GET` on a form's URL under `/account`: back to the account page.
pub(crate) async fn to_account() -> Response {
    see_other("/account")
}

/// `GET` on the sign-in forms' URLs (`/login/mfa`, `/session/login`,
/// `/session/login/mfa`): back to the sign-in page (the second step needs the first).
pub(crate) async fn to_login() -> Response {
    see_other("/login")
}

/// The signed-in caller of a page (access cookie only), or `None`.
fn page_user(state: &AppState, headers: &HeaderMap) -> Option<AccessContext> {
    let token = session::cookie(headers, session::ACCESS_COOKIE)?;
    match state.auth.authenticate(token) {
        Ok(ctx) if !ctx.is_client => Some(ctx),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(target: "tessera::auth", reason = %e, "page access cookie rejected");
            None
        }
    }
}

/// The CSRF check of a page form, answered with an error page.
async fn page_csrf(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(), Response> {
    session::check_csrf(&state.csrf, method, uri, headers, field(form, CSRF_FIELD))
        .await
        .map_err(|_| {
            // A form that carries its token but comes back without the cookie: the cookie
            // expired, or the browser never stored it, and then reloading changes nothing.
            // The usual cause is plain HTTP on a host other than loopback, where browsers
            // refuse `Secure` cookies (RFC 6265bis §5.7): say so.
            if field(form, CSRF_FIELD).is_some()
                && session::cookie(headers, session::CSRF_COOKIE).is_none()
            {
                return error_page(
                    StatusCode::FORBIDDEN,
                    "Cookies are needed",
                    "Your browser did not send back this site's cookie, so the form could not be accepted. If the page was open for a long time, reload it and try again. If this keeps happening, allow cookies for this site and open it over HTTPS: browsers keep its secure cookies over plain HTTP only on localhost.".into(),
                    "/login",
                );
            }
            error_page(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "For your security the form could not be accepted. Go back, reload the page and try again.".into(),
                "/account",
            )
        })
}

struct PageForm {
    fields: Vec<(String, String)>,
}

impl PageForm {
    fn get(&self, name: &str) -> Option<&str> {
        field(&self.fields, name)
    }
}

/// Parses the form and runs the CSRF check.
async fn checked_form(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<PageForm, Response> {
    let fields = optional_form(headers, body).map_err(|e| {
        error_page(
            StatusCode::BAD_REQUEST,
            "Something went wrong",
            sentence(&e),
            "/account",
        )
    })?;
    page_csrf(state, method, uri, headers, &fields).await?;
    Ok(PageForm { fields })
}

// ------------------------------------------------------------------ /login

/// `GET /login`.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageQuery(q): PageQuery<NoticeQuery>,
) -> Result<Response, AppError> {
    if page_user(&state, &headers).is_some() {
        return Ok(see_other("/account"));
    }
    let (csrf, cookie) = anonymous_csrf(&headers)?;
    let page = LoginPage {
        csrf,
        username: String::new(),
        error: None,
        notice: notice(&q),
        mfa_token: None,
    };
    let res = render(StatusCode::OK, &page);
    Ok(with_cookies(res, cookie.into_iter().collect()))
}

/// The CSRF token of a visitor without a session: the cookie's if present, else a new one
/// (with the cookie to set).
fn anonymous_csrf(headers: &HeaderMap) -> Result<(String, Option<HeaderValue>), AppError> {
    if let Some(c) = session::cookie(headers, session::CSRF_COOKIE) {
        return Ok((c.to_owned(), None));
    }
    let c = session::new_csrf_token()?;
    let cookie = session::anonymous_csrf_cookie(&c);
    Ok((c, Some(cookie)))
}

/// `POST /session/login` (username and password) and `POST /session/login/mfa` (the second
/// step), where the sign-in page's forms post; `POST /login` and `POST /login/mfa`, where
/// they posted before, are served alike. Under `/session` the refresh cookie comes along:
/// a session this browser still holds ends ([`end_replaced_session`]) even once its access
/// cookie has expired.
pub(crate) async fn login_submit(
    State(state): State<AppState>,
    meta: ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let form = match checked_form(&state, &method, &uri, &headers, &body).await {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    let csrf = field(&form.fields, CSRF_FIELD)
        .unwrap_or_default()
        .to_owned();
    let username = form.get("username").unwrap_or_default().to_owned();
    let mfa_token = form.get("mfa_token").map(str::to_owned);
    let step = if let Some(token) = &mfa_token {
        let (otp, recovery) = (form.get("otp"), form.get("recovery_code"));
        SignIn::Mfa {
            mfa_token: token.clone(),
            otp: otp.map(|c| c.replace(' ', "")),
            recovery_code: if otp.is_some() {
                None
            } else {
                recovery.map(str::to_owned)
            },
        }
    } else {
        let (Some(u), Some(p)) = (form.get("username"), form.get("password")) else {
            let page = LoginPage {
                csrf,
                username,
                error: Some("Enter your username and password.".into()),
                notice: None,
                mfa_token: None,
            };
            return Ok(render(StatusCode::BAD_REQUEST, &page));
        };
        SignIn::Password {
            username: u.to_owned(),
            password: Zeroizing::new(p.to_owned()),
            second_factor: None::<SecondFactor>,
        }
    };
    match sign_in(&state, &meta, step).await {
        Ok(tokens) => {
            // A session this browser still held ends (at `POST /login`, only through the
            // access cookie: the refresh cookie does not come there).
            end_replaced_session(&state, &headers, &meta.0).await;
            let (cookies, _) = cookies_for(&state, &tokens, None)?;
            Ok(with_cookies(see_other("/account"), cookies))
        }
        Err(e) if e.code() == "mfa_required" => {
            let page = LoginPage {
                csrf,
                username,
                error: None,
                notice: None,
                mfa_token: e.mfa_token().map(str::to_owned),
            };
            Ok(render(StatusCode::OK, &page))
        }
        Err(e) if e.status().is_server_error() => Err(e),
        Err(e) => {
            let message = if mfa_token.is_some() && e.code() == "invalid_grant" {
                "That code did not work. Check the time on your device and try again; if it keeps failing, start over.".to_owned()
            } else {
                sentence(&e)
            };
            let page = LoginPage {
                csrf,
                username,
                error: Some(message),
                notice: None,
                mfa_token,
            };
            let mut res = render(e.status(), &page);
            if let Some(s) = e.retry_after() {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            Ok(res)
        }
    }
}

// ------------------------------------------------------------------ /account

/// `GET /account`.
pub(crate) async fn account_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageQuery(q): PageQuery<NoticeQuery>,
) -> Result<Response, AppError> {
    let Some(ctx) = page_user(&state, &headers) else {
        // The access cookie lives as long as an access token (15 min); the session, as
        // long as its refresh cookie, whose CSRF companion is still here. Renew it.
        let to = if q.resumed.is_none() && session::cookie(&headers, session::CSRF_COOKIE).is_some()
        {
            "/session/resume"
        } else if session::cookie(&headers, session::ACCESS_COOKIE).is_some() {
            // A cookie that no longer works: expired, signed out elsewhere, or revoked.
            "/login?notice=session_ended"
        } else {
            "/login"
        };
        return Ok(see_other(to));
    };
    if q.resumed.is_some() {
        // Renewed, and the page works: drop the loop guard from the address bar. Left
        // there, a reload once this access cookie has expired in turn would skip the
        // renewal and send a signed-in user to sign in.
        return Ok(see_other(if q.notice.as_deref() == Some("renewed") {
            "/account?notice=renewed"
        } else {
            "/account"
        }));
    }
    account(
        &state,
        &ctx,
        &headers,
        notice(&q),
        None,
        None,
        StatusCode::OK,
    )
    .await
}

async fn account(
    state: &AppState,
    ctx: &AccessContext,
    headers: &HeaderMap,
    notice: Option<&'static str>,
    password_error: Option<String>,
    mfa_error: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let user = state.auth.user_of(ctx).await?;
    let sessions = state.auth.own_sessions(ctx).await?;
    let recovery_left = if user.totp_enabled {
        state.auth.recovery_codes_left(&user).await?
    } else {
        0
    };
    let current = ctx.session_id().unwrap_or_default();
    let mut rows: Vec<SessionRow> = sessions
        .iter()
        .map(|s| SessionRow {
            id: s.id.to_string(),
            current: s.id.to_string() == current,
            device: device_name(s.user_agent.as_deref()),
            ip: s.ip.clone().unwrap_or_else(|| "unknown address".into()),
            created: when(s.created_at),
            last_used: when(s.last_used_at),
        })
        .collect();
    rows.sort_by_key(|r| !r.current);
    let username = user.username.to_string();
    let page = AccountPage {
        csrf: session::cookie(headers, session::CSRF_COOKIE)
            .unwrap_or_default()
            .to_owned(),
        initial: username
            .chars()
            .next()
            .map(|c| c.to_uppercase().collect())
            .unwrap_or_default(),
        username,
        user_id: user.id.to_string(),
        roles: user.roles.iter().map(ToString::to_string).collect(),
        created: when(user.created_at),
        password_changed: when(user.password_changed_at),
        mfa_on: user.totp_enabled,
        recovery_left,
        min_length: state.config.password_policy.min_length,
        sessions: rows,
        notice,
        password_error,
        mfa_error,
    };
    Ok(render(status, &page))
}

/// A short, human name for a browser from its user agent.
fn device_name(ua: Option<&str>) -> String {
    let Some(ua) = ua else {
        return "Unknown device".into();
    };
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("HeadlessChrome/", "Headless Chrome"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(k, _)| ua.contains(k))
    .map(|(_, v)| *v);
    let os = [
        ("Windows", "Windows"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Android", "Android"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(k, _)| ua.contains(k))
    .map(|(_, v)| *v);
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(o)) => o.to_owned(),
        (None, None) => ua.chars().take(40).collect(),
    }
}

fn when(ts: i64) -> String {
    let format =
        time::macros::format_description!("[day] [month repr:short] [year], [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The page user or a redirect to `/login`, then the form and its CSRF check.
async fn account_form(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(AccessContext, PageForm), Response> {
    let Some(ctx) = page_user(state, headers) else {
        // The form cannot be replayed after a renewal (its CSRF check and its password
        // would have to travel through redirects): renew, and ask for it again.
        return Err(see_other(
            if session::cookie(headers, session::CSRF_COOKIE).is_some() {
                "/session/resume?notice=renewed"
            } else {
                "/login"
            },
        ));
    };
    let form = checked_form(state, method, uri, headers, body).await?;
    Ok((ctx, form))
}

macro_rules! account_form {
    ($state:expr, $method:expr, $uri:expr, $headers:expr, $body:expr) => {
        match account_form(&$state, &$method, &$uri, &$headers, &$body).await {
            Ok(v) => v,
            Err(res) => return Ok(res),
        }
    };
}

/// `POST /account/password`.
pub(crate) async fn change_password(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let (ctx, form) = account_form!(state, method, uri, headers, body);
    let current = form.get("current_password").unwrap_or_default();
    let new = form.get("new_password").unwrap_or_default();
    let problem = if current.is_empty() || new.is_empty() {
        Some("Enter your current password and a new one.".to_owned())
    } else if form.get("confirm_password") != Some(new) {
        Some("The new passwords do not match.".to_owned())
    } else {
        // Run to its end (see `login_to_completion`): the current password is reserved
        // against the session's lock before the hash, and only the check's end clears it.
        let (auth, check_ctx, check_meta) = (Arc::clone(&state.auth), ctx.clone(), meta.clone());
        let (current, new) = (
            Zeroizing::new(current.to_owned()),
            Zeroizing::new(new.to_owned()),
        );
        match super::login_to_completion(&state.logins, async move {
            auth.change_password(&check_ctx, current, new, &check_meta)
                .await
        })
        .await?
        {
            Ok(()) => None,
            Err(AuthError::InvalidCredentials) => Some("The current password is wrong.".into()),
            Err(e) => {
                let e = AppError::from_api(e);
                if e.status().is_server_error() {
                    return Err(e);
                }
                Some(sentence(&e))
            }
        }
    };
    match problem {
        None => Ok(see_other("/account?notice=password_changed")),
        Some(p) => {
            account(
                &state,
                &ctx,
                &headers,
                None,
                Some(p),
                None,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

/// `POST /account/sessions/{id}/revoke`.
pub(crate) async fn revoke_session(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    PagePath(id): PagePath<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let (ctx, _form) = account_form!(state, method, uri, headers, body);
    let Ok(sid) = SessionId::parse(&id) else {
        return Ok(see_other("/account"));
    };
    match state.auth.revoke_own_session(&ctx, sid, &meta).await {
        Ok(_) | Err(AuthError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if ctx.session_id() == Some(id.as_str()) {
        return Ok(with_cookies(
            see_other("/login?notice=signed_out"),
            session::clearing_cookies(),
        ));
    }
    Ok(see_other("/account?notice=session_revoked"))
}

/// `POST /account/sessions/revoke-all`: sign out everywhere, this browser included.
pub(crate) async fn revoke_all(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let (_ctx, _form) = account_form!(state, method, uri, headers, body);
    end_session(&state, &headers, true, &meta).await?;
    Ok(with_cookies(
        see_other("/login?notice=signed_out_all"),
        session::clearing_cookies(),
    ))
}

/// `POST /session/end`: the pages' "Sign out". Under `/session` so that the refresh cookie
/// (`Path=/session`) comes along: the session ends through it even once the access cookie
/// has expired (a page left open past `access_token_ttl`), as at `POST /session/logout`.
/// Posted to `/account/logout`, the form reached the server with no refresh cookie, and
/// without a live access cookie nothing ended but the cookies.
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    ClientMeta(meta): ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    // Signed out already (in another tab, say): there is nothing to end, and the check
    // would fail on a CSRF cookie that went with the others ("cookies are needed") or on
    // the signed-out visitor's one the sign-in page has set since ("this form has
    // expired"). Without an access or a refresh cookie, `end_session` has nothing to act
    // on, so the request can change nothing and needs no check; any CSRF cookie is left
    // for the sign-in form.
    let signed_out = session::cookie(&headers, session::ACCESS_COOKIE).is_none()
        && session::refresh_cookie(&headers) == session::RefreshCookie::Missing;
    if signed_out {
        return Ok(see_other("/login?notice=signed_out"));
    }
    let form = match checked_form(&state, &method, &uri, &headers, &body).await {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    drop(form);
    end_session(&state, &headers, false, &meta).await?;
    Ok(with_cookies(
        see_other("/login?notice=signed_out"),
        session::clearing_cookies(),
    ))
}

/// `POST /account/logout`, where the "Sign out" form of pages served before `/session/end`
/// posts: 307 to it (RFC 9110 §15.4.8: the browser sends the same POST and form again, now
/// with the refresh cookie), where the CSRF check is made.
pub(crate) async fn sign_out_moved() -> Response {
    Redirect::temporary("/session/end").into_response()
}

/// `POST /account/totp`: start enrolment; shows the QR code and the secret.
pub(crate) async fn begin_totp(
    State(state): State<AppState>,
    meta: ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let (ctx, form) = account_form!(state, method, uri, headers, body);
    // A rate-limited attempt is answered with the page, like a wrong password.
    let limited = state.limits.check(Bucket::Mfa, meta.ip()).err();
    // A deleted or disabled user gets the error page here, not the account page.
    state.auth.user_of(&ctx).await?;
    let password = Zeroizing::new(form.get("password").unwrap_or_default().to_owned());
    let result = match limited {
        Some(e) => Err(e),
        None => {
            // Run to its end (see `login_to_completion`): the password is reserved against
            // the session's lock before the hash, and only the check's end clears it.
            let (auth, check_ctx, check_meta) =
                (Arc::clone(&state.auth), ctx.clone(), meta.0.clone());
            let begun = super::login_to_completion(&state.logins, async move {
                auth.begin_totp(&check_ctx, password, &check_meta).await
            })
            .await?;
            match begun {
                Err(AuthError::AlreadyExists(_)) => return Ok(see_other("/account#mfa")),
                other => other.map_err(|e| match e {
                    AuthError::InvalidCredentials => {
                        AppError::from_api(e).with_description("The password is wrong.")
                    }
                    other => AppError::from_api(other),
                }),
            }
        }
    };
    match result {
        Ok(e) => totp_page(
            form.get(CSRF_FIELD).unwrap_or_default(),
            e.secret,
            e.otpauth_uri,
            None,
            StatusCode::OK,
        ),
        Err(e) => account_with_mfa_error(&state, &ctx, &headers, e).await,
    }
}

fn totp_page(
    csrf: &str,
    secret: String,
    otpauth_uri: String,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    use base64::Engine as _;
    let svg = super::account::qr_svg(&otpauth_uri)?;
    let qr_data_uri = format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    );
    let secret_grouped = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let page = TotpPage {
        csrf: csrf.to_owned(),
        secret,
        secret_grouped,
        otpauth_uri,
        qr_data_uri,
        error,
    };
    Ok(render(status, &page))
}

/// `POST /account/totp/confirm`: turn TOTP on; shows the recovery codes once.
pub(crate) async fn confirm_totp(
    State(state): State<AppState>,
    meta: ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let (ctx, form) = account_form!(state, method, uri, headers, body);
    // A rate-limited attempt is answered with the page like a wrong code, not the API's JSON.
    let limited = state.limits.check(Bucket::Mfa, meta.ip()).err();
    let user = state.auth.user_of(&ctx).await?;
    let code = form.get("code").unwrap_or_default().replace(' ', "");
    // The secret this page showed: the enrolment it confirms (another tab may have begun a
    // newer one, which replaced it).
    let shown = form.get("secret").filter(|s| !s.is_empty());
    let result = match limited {
        Some(e) => Err(e),
        None => match state.auth.confirm_totp(&user, &code, shown, &meta.0).await {
            Err(AuthError::InvalidRequest(m))
                if m == tessera_auth::security::STALE_TOTP_ENROLMENT =>
            {
                // Not this page again (its QR code is the stale one): the account page, which
                // says to start again.
                let e = AppError::from_api(AuthError::InvalidRequest(m));
                return account_with_mfa_error(&state, &ctx, &headers, e).await;
            }
            other => other.map_err(AppError::from_api),
        },
    };
    match result {
        Ok(codes) => Ok(render(StatusCode::OK, &RecoveryPage { codes })),
        Err(e) => {
            if e.status().is_server_error() {
                return Err(e);
            }
            // Shown again from the form's own fields: they only ever reach this user's page;
            // the secret that counts is the one the server keeps pending.
            let secret = form.get("secret").unwrap_or_default();
            let otpauth = form.get("otpauth_uri").unwrap_or_default();
            let valid = !secret.is_empty()
                && secret.bytes().all(|b| b.is_ascii_alphanumeric())
                && otpauth.starts_with("otpauth://totp/");
            if !valid {
                return Ok(see_other("/account#mfa"));
            }
            let message = if e.retry_after().is_some() {
                sentence(&e)
            } else {
                "That code did not work. Enter the current code from the app.".into()
            };
            let res = totp_page(
                form.get(CSRF_FIELD).unwrap_or_default(),
                secret.to_owned(),
                otpauth.to_owned(),
                Some(message),
                e.status(),
            )?;
            Ok(with_retry_after(res, &e))
        }
    }
}

/// `POST /account/totp/disable`.
pub(crate) async fn disable_totp(
    State(state): State<AppState>,
    meta: ClientMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let (ctx, form) = account_form!(state, method, uri, headers, body);
    let limited = state.limits.check(Bucket::Mfa, meta.ip()).err();
    // A deleted or disabled user gets the error page here, not the account page.
    state.auth.user_of(&ctx).await?;
    let password = Zeroizing::new(form.get("password").unwrap_or_default().to_owned());
    let code = form.get("code").unwrap_or_default().replace(' ', "");
    let result = match limited {
        Some(e) => Err(e),
        None => {
            let (auth, check_ctx, check_meta) =
                (Arc::clone(&state.auth), ctx.clone(), meta.0.clone());
            super::login_to_completion(&state.logins, async move {
                auth.disable_totp(&check_ctx, password, &code, &check_meta)
                    .await
            })
            .await?
        }
        .map_err(|e| match e {
            AuthError::InvalidCredentials => {
                AppError::from_api(e).with_description("The password or the code is wrong.")
            }
            other => AppError::from_api(other),
        }),
    };
    match result {
        Ok(()) => Ok(see_other("/account?notice=totp_off")),
        Err(e) => account_with_mfa_error(&state, &ctx, &headers, e).await,
    }
}

/// The account page with `e` in its two-step section: with `e`'s status (429) and
/// `Retry-After` for a rate limit or a lock, 400 otherwise; a server error as itself.
async fn account_with_mfa_error(
    state: &AppState,
    ctx: &AccessContext,
    headers: &HeaderMap,
    e: AppError,
) -> Result<Response, AppError> {
    if e.status().is_server_error() {
        return Err(e);
    }
    let status = if e.retry_after().is_some() {
        e.status()
    } else {
        StatusCode::BAD_REQUEST
    };
    let res = account(state, ctx, headers, None, None, Some(sentence(&e)), status).await?;
    Ok(with_retry_after(res, &e))
}

/// Adds `Retry-After` to a page answering a rate-limited or locked-out attempt.
fn with_retry_after(mut res: Response, e: &AppError) -> Response {
    if let Some(s) = e.retry_after() {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_get_readable_names() {
        assert_eq!(
            device_name(Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36"
            )),
            "Chrome on Linux"
        );
        assert_eq!(device_name(None), "Unknown device");
        assert_eq!(device_name(Some("curl/8.0")), "curl");
    }

    #[test]
    fn only_known_notices_are_shown() {
        let q = |n: &str| NoticeQuery {
            notice: Some(n.into()),
            resumed: None,
        };
        assert_eq!(notice(&q("signed_out")), Some("You have been signed out."));
        assert_eq!(notice(&q("<script>")), None);
    }

    #[test]
    fn templates_escape_what_they_show() {
        let page = LoginPage {
            csrf: "t".into(),
            username: "<b>\"x\"".into(),
            error: Some("<i>".into()),
            notice: None,
            mfa_token: None,
        };
        let html = page.render().unwrap();
        assert!(
            html.contains("&#60;b&#62;") || html.contains("&lt;b&gt;"),
            "{html}"
        );
        assert!(!html.contains("<b>") && !html.contains("<i>"));
        assert!(!html.contains("<script"));
    }
}
