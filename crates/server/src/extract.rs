//! Request extractors that turn rejections into the right error shape.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use tessera_auth::AccessContext;
use tessera_auth::model::RequestMeta;

use crate::error::AppError;
use crate::session;
use crate::state::AppState;

/// Parameters of an `application/x-www-form-urlencoded` OAuth request.
///
/// RFC 6749 §3.2: parameters sent without a value are treated as omitted, and a parameter
/// must not be included more than once; unknown parameters are ignored (§3.1).
#[derive(Debug)]
pub struct OAuthForm(Vec<(String, String)>);

impl OAuthForm {
    /// The value of `name`, or `None` if absent or empty.
    ///
    /// # Errors
    /// `invalid_request` if the parameter is repeated.
    pub fn get(&self, name: &str) -> Result<Option<&str>, AppError> {
        let mut found = None;
        for (k, v) in &self.0 {
            if k == name {
                if found.is_some() {
                    return Err(AppError::invalid_request(format!(
                        "parameter `{name}` is repeated (RFC 6749 §3.2)"
                    )));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found.filter(|v| !v.is_empty()))
    }

    /// Like [`OAuthForm::get`] but the parameter is required.
    ///
    /// # Errors
    /// `invalid_request` naming the missing parameter.
    pub fn require(&self, name: &str) -> Result<&str, AppError> {
        self.get(name)?.ok_or_else(|| {
            AppError::invalid_request(format!("missing required parameter `{name}`"))
        })
    }
}

impl OAuthForm {
    /// True if a `Content-Type` value is `application/x-www-form-urlencoded` (parameters
    /// such as `charset` allowed).
    #[must_use]
    pub fn is_form_content_type(content_type: Option<&str>) -> bool {
        content_type
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
    }

    /// Checks a `Content-Type` value before the body is read: `application/x-www-form-urlencoded`
    /// (RFC 6749 §3.2). Its `charset`, if any, is checked against the body by
    /// [`OAuthForm::parse`].
    ///
    /// # Errors
    /// `invalid_request` naming what is wrong.
    pub fn check_content_type(content_type: Option<&str>) -> Result<(), AppError> {
        if Self::is_form_content_type(content_type) {
            Ok(())
        } else {
            Err(not_a_form())
        }
    }

    /// Parses a request body given its `Content-Type` value: the pure part of the extractor,
    /// shared with the `token_form` fuzz target.
    ///
    /// The body is decoded as `application/x-www-form-urlencoded` (RFC 6749 Appendix B,
    /// WHATWG URL §5.1: pairs split at `&`, name and value at the first `=`, `+` a space,
    /// `%HH` a byte), and each name and value must then be UTF-8. Bytes that are not are
    /// refused, never replaced: a password sent as Latin-1 (`%E9` for `é`) used to become
    /// U+FFFD, and so a different password was checked than the one sent, and counted
    /// against the name as a failed guess.
    ///
    /// A `charset` parameter naming another encoding than UTF-8 is refused when the form
    /// holds a byte outside ASCII, which that encoding would read differently; a form of
    /// ASCII alone reads the same in UTF-8 and in the charsets clients declare (HTTP
    /// libraries that label every form `charset=ISO-8859-1` whatever it holds), and is read.
    ///
    /// # Errors
    /// `invalid_request` if the body is not `application/x-www-form-urlencoded` in UTF-8
    /// (RFC 6749 §3.2, Appendix B).
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, AppError> {
        Self::check_content_type(content_type)?;
        decode_form(body, other_charset(content_type)).map(Self)
    }
}

/// The `charset` of a `Content-Type` value when it names another encoding than UTF-8
/// (compared as the WHATWG Encoding Standard §4.2 labels of UTF-8, quoted or not).
pub(crate) fn other_charset(content_type: Option<&str>) -> Option<&str> {
    const UTF_8_LABELS: [&str; 6] = [
        "utf-8",
        "utf8",
        "unicode-1-1-utf-8",
        "unicode11utf8",
        "unicode20utf8",
        "x-unicode20utf8",
    ];
    content_type
        .into_iter()
        .flat_map(|v| v.split(';').skip(1))
        .filter_map(|p| p.split_once('='))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim().trim_matches('"').trim())
        .find(|charset| !UTF_8_LABELS.iter().any(|l| charset.eq_ignore_ascii_case(l)))
}

/// The pairs of an `application/x-www-form-urlencoded` body (see [`OAuthForm::parse`]),
/// each name and value UTF-8; with `other_charset`, ASCII only.
///
/// # Errors
/// `invalid_request` naming the rule a name or value breaks.
pub(crate) fn decode_form(
    body: &[u8],
    other_charset: Option<&str>,
) -> Result<Vec<(String, String)>, AppError> {
    // An ASCII-compatible charset reads ASCII bytes as ASCII; one that is not (UTF-16,
    // UTF-7, ISO-2022-JP, ...) writes other characters with them (`%2BAOk-` is `é` in
    // UTF-7), so a form labelled with it is refused whatever bytes it holds.
    let ascii_reads_as_ascii = other_charset.is_none_or(is_ascii_compatible);
    let text = |raw: &[u8]| {
        let bytes = form_urldecode(raw);
        if let Some(charset) = other_charset.filter(|_| !ascii_reads_as_ascii || !bytes.is_ascii())
        {
            return Err(AppError::invalid_request(format!(
                "the form must be UTF-8 (RFC 6749 Appendix B), not charset={}",
                charset.chars().take(32).collect::<String>()
            )));
        }
        String::from_utf8(bytes).map_err(|_| {
            AppError::invalid_request(
                "the form body is not UTF-8: encode each value as UTF-8, then percent-encode it (RFC 6749 Appendix B)",
            )
        })
    };
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (
                    pair.get(..i).unwrap_or_default(),
                    pair.get(i + 1..).unwrap_or_default(),
                ),
                None => (pair, &[][..]),
            };
            Ok((text(name)?, text(value)?))
        })
        .collect()
}

/// True for a charset label (not UTF-8's) of an encoding in which bytes below 0x80 are the
/// ASCII characters: US-ASCII, ISO-8859-*, windows-125x and the other ASCII-compatible
/// encodings of the WHATWG Encoding Standard (§4.2). UTF-16/32, UTF-7, ISO-2022-*, HZ,
/// EBCDIC and labels we do not know are not: an ASCII form so labelled is not what it reads
/// as in UTF-8.
fn is_ascii_compatible(charset: &str) -> bool {
    const LABELS: [&str; 33] = [
        "us-ascii",
        "ascii",
        "ansi_x3.4-1968",
        "iso646-us",
        "cp367",
        "ibm367",
        "csascii",
        "latin1",
        "l1",
        "cp819",
        "ibm819",
        "iso-ir-100",
        "csisolatin1",
        "shift_jis",
        "sjis",
        "ms932",
        "ms_kanji",
        "windows-31j",
        "x-sjis",
        "euc-jp",
        "euc-kr",
        "gbk",
        "gb2312",
        "gb18030",
        "big5",
        "big5-hkscs",
        "koi8-r",
        "koi8-u",
        "macintosh",
        "ibm866",
        "cp866",
        "x-mac-cyrillic",
        "tis-620",
    ];
    const PREFIXES: [&str; 6] = [
        "iso-8859-",
        "iso8859",
        "iso_8859-",
        "windows-125",
        "cp125",
        "x-cp125",
    ];
    let lower = charset.to_ascii_lowercase();
    LABELS.contains(&lower.as_str())
        || lower == "windows-874"
        || PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// One name or value of a form, as bytes (WHATWG URL §5.1 "percent-decode", `+` first read
/// as a space; a `%` not followed by two hex digits stays as it is).
fn form_urldecode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: Option<&u8>| {
        b.and_then(|b| char::from(*b).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(hi), Some(lo)) = (hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
                    out.push(hi * 16 + lo);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

fn not_a_form() -> AppError {
    AppError::invalid_request(
        "the request body must be application/x-www-form-urlencoded (RFC 6749 §3.2)",
    )
}

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Checked before the body is read, so a non-form body is never buffered.
        Self::check_content_type(content_type.as_deref())?;
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                body_error(
                    e.status(),
                    format!("malformed form body: {}", e.body_text()),
                )
            })?;
        Self::parse(content_type.as_deref(), &body)
    }
}

/// The error for a body the extractors refused: 413 when it is over `limits.max_body_bytes`
/// (RFC 9110 §15.5.14: the request is well-formed, only too large; retrying it as it is will
/// not help), else 400 `invalid_request` with `description`. Either way our JSON shape, never
/// axum's plain text.
fn body_error(status: StatusCode, description: String) -> AppError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::new(
            status,
            "invalid_request",
            "the request body is larger than this server accepts (limits.max_body_bytes)",
        )
    } else {
        AppError::invalid_request(description)
    }
}

/// The raw request body, whose rejections are errors in our JSON shape (413 when over
/// `limits.max_body_bytes`; see `body_error`).
#[derive(Debug)]
pub struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(|e| body_error(e.status(), e.body_text()))
    }
}

/// A JSON body whose rejections are `invalid_request` errors in our JSON shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) => Err(body_error(e.status(), e.body_text())),
        }
    }
}

/// A query string whose rejections are `invalid_request` errors in our JSON shape.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(AppError::invalid_request(e.body_text())),
        }
    }
}

/// A path parameter whose rejections (`/admin/users/%ff`: not UTF-8) are `invalid_request`
/// errors in our JSON shape, not axum's plain text.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(e) => Err(AppError::invalid_request(e.body_text())),
        }
    }
}

/// Who sent the request: client IP (see [`crate::ratelimit::client_ip`]), user agent and
/// request id, for sessions, audit and rate limits.
#[derive(Debug, Clone)]
pub struct ClientMeta(pub RequestMeta);

impl ClientMeta {
    /// The client IP as an address (unspecified when unknown).
    #[must_use]
    pub fn ip(&self) -> std::net::IpAddr {
        self.0
            .ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }
}

// On `AppState` itself rather than any `S: FromRef`: the state is borrowed, where
// `from_ref` would clone it, writing its shared reference count on every request.
impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = crate::telemetry::current_peer();
        let ip = crate::ratelimit::client_ip(&parts.headers, peer, state.config.trusted_proxies)
            .map(|ip| ip.to_string());
        let header_text = |h: &HeaderMap, name: &str, max: usize| {
            h.get(name).and_then(|v| v.to_str().ok()).map(|s| {
                s.chars()
                    .filter(|c| !c.is_control())
                    .take(max)
                    .collect::<String>()
            })
        };
        Ok(Self(RequestMeta {
            ip,
            user_agent: header_text(&parts.headers, "user-agent", 256),
            // The id the request is handled under (kept from the client or generated; see
            // `telemetry::Observe`), not whatever the header says.
            request_id: crate::telemetry::current_request_id()
                .map(|id| id.as_str().chars().take(64).collect())
                .or_else(|| header_text(&parts.headers, "x-request-id", 64)),
        }))
    }
}

/// The request's `Authorization` header, if it has one. Two or more are refused: the field
/// takes one credential, not a list (RFC 9110 §11.6.2), and a proxy that read another of
/// them than we do would disagree about who is calling (RFC 6750 §3.1 and RFC 6749 §5.2:
/// `invalid_request` for a request that repeats a parameter).
///
/// # Errors
/// `invalid_request` for more than one `Authorization` header.
pub fn authorization(headers: &HeaderMap) -> Result<Option<&HeaderValue>, AppError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AppError::invalid_request(
            "more than one Authorization header; send one",
        ));
    }
    Ok(first)
}

/// The `Authorization` header as text for client authentication (RFC 6749 §2.3.1), or
/// `None` without one. HTTP Basic credentials that are not even text are refused like any
/// other malformed ones: a client that tried to authenticate must get `invalid_client`
/// (§5.2), not be served as the public client.
///
/// # Errors
/// `invalid_request` for repeated headers, `invalid_client` for Basic credentials that are
/// not visible ASCII.
pub fn client_authorization(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = authorization(headers)? else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(text) => Ok(Some(text)),
        // The scheme read as `basic_credentials` reads it (whitespace around the value
        // dropped, the scheme a run of tchars): `Basic<TAB>` or `Basic` right before the
        // bytes is a client that tried to authenticate as much as `Basic ` is.
        Err(_) if auth_scheme(value.as_bytes()).eq_ignore_ascii_case(b"basic") => Err(
            AppError::invalid_client("malformed HTTP Basic credentials: not visible ASCII"),
        ),
        // Another scheme, not ours to read here.
        Err(_) => Ok(None),
    }
}

/// The auth-scheme of an `Authorization` field value: a token (RFC 9110 §11.1, §5.6.2),
/// which ends at the first byte that is not a tchar, after the whitespace around the value
/// (RFC 9110 §5.5).
fn auth_scheme(value: &[u8]) -> &[u8] {
    let value = trim_ows(value);
    let len = value
        .iter()
        .position(|b| !is_tchar(*b))
        .unwrap_or(value.len());
    value.get(..len).unwrap_or_default()
}

/// The bearer token of `Authorization: Bearer <token>` (RFC 6750 §2.1), or `None` when the
/// request has no `Authorization` header or one of another scheme.
///
/// # Errors
/// `invalid_request` for more than one `Authorization` header, and for Bearer credentials
/// that do not follow RFC 6750 §2.1 (see [`bearer_token_bytes`]).
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    // A b64token is ASCII, so this never fails once `bearer_token_bytes` accepted it.
    Ok(bearer_token_bytes(headers)?.and_then(|t| std::str::from_utf8(t).ok()))
}

/// [`bearer_token`] as the header's bytes: the verified-token cache compares bytes, so a
/// token seen before is never copied.
///
/// RFC 6750 §2.1 (and RFC 7235 §2.1): `credentials = "Bearer" 1*SP b64token`, the scheme
/// case-insensitive, `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
/// *"="`. Whitespace around the whole value is not part of it (RFC 9110 §5.5); anything
/// else in a header that names the Bearer scheme (no token, a tab, a second word, a byte
/// outside the b64token alphabet) is a malformed request: 400 `invalid_request` with a
/// Bearer challenge (RFC 6750 §3.1), as tessera-axum answers. A header of another scheme
/// (`Basic ...`) carries no bearer token: `None`.
///
/// # Errors
/// `invalid_request` for more than one `Authorization` header or malformed Bearer
/// credentials.
pub fn bearer_token_bytes(headers: &HeaderMap) -> Result<Option<&[u8]>, AppError> {
    match bearer_credentials(headers)? {
        Some(token) if !is_b64token(token) => Err(not_a_b64token()),
        other => Ok(other),
    }
}

/// The 400 for Bearer credentials whose token holds a byte outside the b64token alphabet.
fn not_a_b64token() -> AppError {
    AppError::malformed_bearer(
        "malformed Bearer credentials: send `Bearer`, one space and the token, which holds only letters, digits and - . _ ~ + / with = at its end (RFC 6750 §2.1)",
    )
}

/// [`bearer_token_bytes`] but for the token's alphabet, which is left to the caller: the
/// hot path checks it only for a token that did not verify (one that did is a JWS compact
/// serialization, base64url and dots, so a b64token), and so never scans the ~1 KB of a
/// token it knows.
fn bearer_credentials(headers: &HeaderMap) -> Result<Option<&[u8]>, AppError> {
    let Some(value) = authorization(headers)? else {
        return Ok(None);
    };
    let value = trim_ows(value.as_bytes());
    let scheme = auth_scheme(value);
    let Some(rest) = value.get(scheme.len()..) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    let spaces = rest.iter().take_while(|b| **b == b' ').count();
    let token = rest.get(spaces..).unwrap_or_default();
    if token.is_empty() {
        return Err(AppError::malformed_bearer(
            "the Bearer credentials hold no token: send `Authorization: Bearer <token>` (RFC 6750 §2.1)",
        ));
    }
    if spaces == 0 {
        return Err(not_a_b64token());
    }
    Ok(Some(token))
}

/// A field value without its surrounding optional whitespace (RFC 9110 §5.5: SP and HTAB).
fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    v.get(start..end).unwrap_or_default()
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &[u8]) -> bool {
    let body_len = t.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    let body = t.get(..body_len).unwrap_or_default();
    !body.is_empty()
        && body.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// The authenticated caller of a protected endpoint: an `Authorization: Bearer` header, or
/// in cookie mode the `__Host-tessera_at` cookie. When both are sent the header wins (and the
/// cookie is ignored): an explicit credential says what the caller means, and a request with
/// a Bearer header cannot be a forged browser request. A cookie-authenticated request that
/// changes state must pass the CSRF check (`X-CSRF-Token` header; see [`crate::session`]).
/// The context is shared with the verified-token cache, so a cached token costs no copy.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Arc<AccessContext>);

// On `AppState` itself rather than any `S: FromRef`: the state is borrowed, where
// `from_ref` would clone it, writing its shared reference count on every request.
impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer_credentials(&parts.headers)? {
            return match state.auth.authenticate_bytes(token) {
                Ok(ctx) => Ok(Self(ctx)),
                // RFC 6750 §3.1: a token outside the b64token alphabet is a malformed
                // request, not an invalid token (only a token that failed is scanned).
                Err(_) if !is_b64token(token) => Err(not_a_b64token()),
                Err(e) => {
                    tracing::debug!(target: "tessera::auth", reason = %e, "access token rejected");
                    Err(AppError::invalid_token())
                }
            };
        }
        let token = session::cookie(&parts.headers, session::ACCESS_COOKIE)
            .ok_or_else(AppError::missing_token)?;
        let ctx = authenticate(state, token)?;
        if !session::is_safe(&parts.method) {
            session::check_csrf_header(&state.csrf, &parts.method, &parts.uri, &parts.headers)
                .await?;
        }
        Ok(Self(ctx))
    }
}

fn authenticate(state: &AppState, token: &str) -> Result<Arc<AccessContext>, AppError> {
    authenticate_bytes(state, token.as_bytes())
}

fn authenticate_bytes(state: &AppState, token: &[u8]) -> Result<Arc<AccessContext>, AppError> {
    state.auth.authenticate_bytes(token).map_err(|e| {
        tracing::debug!(target: "tessera::auth", reason = %e, "access token rejected");
        AppError::invalid_token()
    })
}

/// An authenticated caller with the `admin` role. Bearer header only: the admin API is for
/// tools, and keeping cookies out of it keeps it out of reach of CSRF altogether.
#[derive(Debug, Clone)]
pub struct AdminUser(pub Arc<AccessContext>);

// On `AppState` itself rather than any `S: FromRef`: the state is borrowed, where
// `from_ref` would clone it, writing its shared reference count on every request.
impl FromRequestParts<AppState> for AdminUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)?.ok_or_else(AppError::missing_token)?;
        let ctx = authenticate(state, token)?;
        if ctx.has_role(tessera_auth::model::Role::ADMIN) {
            Ok(Self(ctx))
        } else {
            Err(AppError::insufficient_scope("the admin role is required"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn bearer_credentials_follow_rfc_6750_section_2_1() {
        let token = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
            bearer_token(&h).map(|t| t.map(str::to_owned))
        };
        // `Bearer` (any case), one or more spaces, a b64token; whitespace around the whole
        // value is not part of it (RFC 9110 §5.5).
        for (value, want) in [
            (&b"Bearer abc"[..], "abc"),
            (b"bEaReR abc", "abc"),
            (b"Bearer  abc", "abc"),
            (b"Bearer abc ", "abc"),
            (b"Bearer abc\t", "abc"),
            (b"Bearer a-b.c_d~e+f/g==", "a-b.c_d~e+f/g=="),
        ] {
            assert_eq!(
                token(value).unwrap().as_deref(),
                Some(want),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        // Another scheme (or a word that only starts like `Bearer`) holds no bearer token.
        for value in [&b"Basic abc"[..], b"Bearerabc", b"Bear abc", b"Other \xff"] {
            assert_eq!(
                token(value).unwrap(),
                None,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        // The Bearer scheme with anything but 1*SP b64token is malformed: 400 with the
        // RFC 6750 §3.1 challenge.
        for value in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer\tabc",
            b"Bearer \tabc",
            b"Bearer a\tbc",
            b"Bearer a bc",
            b"Bearer abc def",
            b"Bearer a=bc",
            b"Bearer ===",
            b"Bearer a,b",
            b"Bearer a\"b",
            b"Bearer a\xffb",
            b"Bearer,abc",
        ] {
            let e = token(value).unwrap_err();
            let what = String::from_utf8_lossy(value);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{what}");
            assert_eq!(e.code(), "invalid_request", "{what}");
            let res = axum::response::IntoResponse::into_response(e);
            let challenge = res.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer realm=\"tessera\", error=\"invalid_request\""),
                "{what}: {challenge}"
            );
        }
    }

    #[test]
    fn a_second_authorization_header_is_refused_whatever_it_holds() {
        let mut h = HeaderMap::new();
        h.append(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        h.append(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        for e in [
            bearer_token(&h).unwrap_err(),
            bearer_token_bytes(&h).unwrap_err(),
            client_authorization(&h).unwrap_err(),
        ] {
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert_eq!(e.code(), "invalid_request");
        }
    }

    #[test]
    fn basic_credentials_that_are_not_text_are_an_invalid_client() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"bAsIc \xff\xfe").unwrap(),
        );
        let e = client_authorization(&h).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.code(), "invalid_client");
        // Another scheme that is not text is not ours to judge; text passes through.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Other \xff").unwrap(),
        );
        assert_eq!(client_authorization(&h).unwrap(), None);
        h.insert(header::AUTHORIZATION, "Basic YTpi".parse().unwrap());
        assert_eq!(client_authorization(&h).unwrap(), Some("Basic YTpi"));
    }
}
