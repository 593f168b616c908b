//! Browser sessions: the cookies of cookie mode and the CSRF defences that come with them.
//!
//! Cookie mode keeps tokens out of reach of page scripts (an XSS cannot read an `HttpOnly`
//! cookie). Three cookies, all `Secure` and `SameSite=Strict`:
//!
//! | cookie | `HttpOnly` | `Path` | holds |
//! |---|---|---|---|
//! | [`ACCESS_COOKIE`] `__Host-tessera_at` | yes | `/` | the access token (Max-Age = its lifetime) |
//! | [`REFRESH_COOKIE`] `__Secure-tessera_rt` | yes | `/session` | the refresh token |
//! | [`CSRF_COOKIE`] `__Host-tessera_csrf` | **no** | `/` | the double-submit CSRF token (Max-Age = the longer of the other two's) |
//!
//! The refresh cookie is scoped to `/session` (so it is sent to `POST /session`,
//! `/session/refresh`, `/session/logout` and the pages' `/session/resume`, `/session/end`,
//! `/session/login` and `/session/login/mfa`, and to nothing else an application serves); a
//! `Path` other than `/` rules out the `__Host-` prefix, so it carries `__Secure-`. It goes
//! to `/session/logout` and `/session/end` too because signing out must end the session even
//! after the access token has expired, and to the sign-ins because a new one ends the
//! session the browser still held, even once its access cookie has expired.
//!
//! CSRF (every state-changing request authenticated by cookie): first the Fetch-Metadata /
//! `Origin` check of tower-http's `csrf` layer (the scheme of Go 1.25's
//! `CrossOriginProtection`), then a double-submit token — the [`CSRF_COOKIE`] value echoed in
//! the `X-CSRF-Token` header or a `csrf_token` form field, compared in constant time. The
//! first stops modern browsers' cross-site requests outright; the second also covers
//! browsers that send neither `Sec-Fetch-Site` nor `Origin` (which the layer lets through)
//! and proxies that rewrite `Host`. Requests authenticated by an `Authorization: Bearer`
//! header are exempt: a browser never attaches that header on its own.

use std::convert::Infallible;

use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use tower::{Layer as _, ServiceExt as _};
use tower_http::csrf::CsrfLayer;

use crate::error::AppError;

/// The access-token cookie (`__Host-`: Secure, no `Domain`, `Path=/`).
pub const ACCESS_COOKIE: &str = "__Host-tessera_at";
/// The refresh-token cookie, scoped to [`REFRESH_PATH`].
pub const REFRESH_COOKIE: &str = "__Secure-tessera_rt";
/// The double-submit CSRF cookie, readable by page scripts on purpose.
pub const CSRF_COOKIE: &str = "__Host-tessera_csrf";
/// The header that echoes the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field that echoes the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
/// `Path` of the refresh cookie.
pub const REFRESH_PATH: &str = "/session";
/// Lifetime of the CSRF cookie without a session (the login page), seconds.
const CSRF_ANONYMOUS_MAX_AGE: i64 = 3600;

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4), if present
/// and non-empty. The first occurrence wins. Only for `__Host-` names, which no sibling
/// subdomain can plant (no `Domain`, RFC 6265bis §4.1.3.2), so a duplicate is an old cookie
/// of ours at worst; the `__Secure-` refresh cookie goes through [`refresh_cookie`].
#[must_use]
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    cookies(headers, name).next()
}

/// Every non-empty, well-formed value of cookie `name`, in the order the browser sent them.
///
/// Each `Cookie` header is split into its `cookie-pair`s (RFC 6265 §4.2.1) as bytes, and
/// each pair is judged on its own: as a user agent ignores a malformed cookie and keeps the
/// others (§5.2, §5.4), a malformed pair is ignored, never the whole header. A header is not
/// read as text first: one pair with a byte outside visible ASCII (a cookie a
/// sibling subdomain or a script planted, `junk=\xe9`) would fail that for the header, and
/// every cookie of ours in it would go unseen, signing the browser out of every page.
fn cookies<'h, 'n>(headers: &'h HeaderMap, name: &'n str) -> impl Iterator<Item = &'h str> + 'n
where
    'h: 'n,
{
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| pair_value(pair, name))
}

/// The value of one `name=value` pair if it is `name`'s, non-empty, and a `cookie-value`
/// (RFC 6265 §4.1.1: `cookie-octet`s, optionally in one pair of double quotes, which are
/// dropped). Our cookies hold base64url and JWS compact values, all `cookie-octet`s; any
/// other value under one of their names is not ours and is ignored.
fn pair_value<'h>(pair: &'h [u8], name: &str) -> Option<&'h str> {
    let mut parts = pair.splitn(2, |&b| b == b'=');
    let (key, value) = (parts.next()?, parts.next()?);
    if key.trim_ascii() != name.as_bytes() {
        return None;
    }
    let value = value.trim_ascii();
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    if value.is_empty() || !value.iter().all(|&b| is_cookie_octet(b)) {
        return None;
    }
    // Cookie octets are ASCII, so this never fails.
    std::str::from_utf8(value).ok()
}

/// RFC 6265 §4.1.1 `cookie-octet`: visible ASCII but `"`, `,`, `;` and `\`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// The refresh cookie a request carries.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshCookie<'h> {
    /// None.
    Missing,
    /// One value.
    One(&'h str),
    /// Several different values. `__Secure-` (unlike `__Host-`) allows `Domain`, so a
    /// sibling subdomain can plant its own `__Secure-tessera_rt` for the parent domain
    /// (RFC 6265bis §4.1.3.1, §8.6); with a longer `Path` the browser sends it first
    /// (§5.8.3). Which one is ours cannot be told, so none is used: refreshing with the
    /// planted one would sign the browser into the planter's account.
    Ambiguous(Vec<&'h str>),
}

impl<'h> RefreshCookie<'h> {
    /// Every value sent, whichever case: ending a session goes through all of them (ours
    /// among them, and a planted one with it).
    #[must_use]
    pub fn all(self) -> Vec<&'h str> {
        match self {
            Self::Missing => Vec::new(),
            Self::One(rt) => vec![rt],
            Self::Ambiguous(rts) => rts,
        }
    }
}

/// The refresh cookie(s) of a request: see [`RefreshCookie`].
#[must_use]
pub fn refresh_cookie(headers: &HeaderMap) -> RefreshCookie<'_> {
    let mut values: Vec<&str> = Vec::new();
    for v in cookies(headers, REFRESH_COOKIE) {
        if !values.contains(&v) {
            values.push(v);
        }
    }
    match values.as_slice() {
        [] => RefreshCookie::Missing,
        [one] => RefreshCookie::One(one),
        _ => RefreshCookie::Ambiguous(values),
    }
}

/// A `Set-Cookie` value: always `Secure` and `SameSite=Strict`.
fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, http_only: bool) -> HeaderValue {
    let http_only = if http_only { "; HttpOnly" } else { "" };
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={}; Secure{http_only}; SameSite=Strict",
        max_age.max(0)
    );
    // Invariant-free: token values are base64url or JWS compact (visible ASCII); should
    // one ever not be, the cookie is cleared rather than a panic raised.
    HeaderValue::from_str(&text).unwrap_or_else(|_| {
        HeaderValue::from_static("__Host-tessera_at=; Path=/; Max-Age=0; Secure; HttpOnly")
    })
}

/// The cookies that start or renew a session: access, refresh (when issued) and CSRF.
#[must_use]
pub fn session_cookies(
    access_token: &str,
    access_ttl: i64,
    refresh: Option<(&str, i64)>,
    csrf: &str,
) -> Vec<HeaderValue> {
    let mut v = vec![set_cookie(
        ACCESS_COOKIE,
        access_token,
        "/",
        access_ttl,
        true,
    )];
    if let Some((rt, ttl)) = refresh {
        v.push(set_cookie(REFRESH_COOKIE, rt, REFRESH_PATH, ttl, true));
    }
    // The CSRF cookie must outlive every cookie whose requests it guards: the refresh
    // cookie's (to refresh, and to sign out once the access cookie is gone) and the access
    // cookie's (to sign out, or post any form, while the page still looks signed in). The
    // refresh token can expire first (`refresh_token_ttl` below `access_token_ttl`, or a
    // session's idle or absolute expiry nearer than the access token's), so the longer of
    // the two.
    let csrf_ttl = refresh.map_or(access_ttl, |(_, t)| t.max(access_ttl));
    v.push(set_cookie(CSRF_COOKIE, csrf, "/", csrf_ttl, false));
    v
}

/// The CSRF cookie alone, for a visitor without a session (the login form).
#[must_use]
pub fn anonymous_csrf_cookie(csrf: &str) -> HeaderValue {
    set_cookie(CSRF_COOKIE, csrf, "/", CSRF_ANONYMOUS_MAX_AGE, false)
}

/// `Set-Cookie` values that delete every session cookie (`Max-Age=0`, same name, path and
/// attributes as when set, RFC 6265 §3.1).
#[must_use]
pub fn clearing_cookies() -> Vec<HeaderValue> {
    vec![
        set_cookie(ACCESS_COOKIE, "", "/", 0, true),
        set_cookie(REFRESH_COOKIE, "", REFRESH_PATH, 0, true),
        set_cookie(CSRF_COOKIE, "", "/", 0, false),
    ]
}

/// [`clearing_cookies`] but for the CSRF cookie, for a browser whose CSRF cookie names no
/// session: a signed-out visitor's belongs to the sign-in form (which another tab may
/// show), not to a session.
#[must_use]
pub fn clearing_cookies_but_csrf() -> Vec<HeaderValue> {
    vec![
        set_cookie(ACCESS_COOKIE, "", "/", 0, true),
        set_cookie(REFRESH_COOKIE, "", REFRESH_PATH, 0, true),
    ]
}

/// A fresh CSRF token: 256 random bits, base64url.
///
/// # Errors
/// 500 if the system RNG fails.
pub fn new_csrf_token() -> Result<String, AppError> {
    let bytes = tessera_jose::crypto::random_array::<32>()
        .map_err(|e| AppError::internal(format!("rng: {e}")))?;
    Ok(tessera_jose::base64url::encode(bytes))
}

/// The CSRF token of a signed-in browser: random, then `.` and its session's id. The
/// `__Host-` cookie that carries it can only be set by this origin, so the session id in it
/// says which session this browser signed into; a refresh cookie of another session (one a
/// sibling subdomain planted: `__Secure-` allows `Domain`) is then refused rather than
/// signing the browser into that session. Session ids are not secret (every access
/// token's `sid` names its session).
///
/// # Errors
/// The RNG failed.
pub fn session_csrf_token(session_id: &str) -> Result<String, AppError> {
    Ok(format!("{}.{session_id}", new_csrf_token()?))
}

/// The session a CSRF token was minted for by [`session_csrf_token`], if any (the token of
/// a signed-out browser names none).
#[must_use]
pub fn csrf_session(token: &str) -> Option<&str> {
    token.split_once('.').map(|(_, sid)| sid)
}

/// The Fetch-Metadata / `Origin` half of the CSRF defence: tower-http's `csrf` middleware,
/// run as a check on a request's method, target and headers.
#[derive(Clone, Debug)]
pub struct CsrfGuard {
    layer: CsrfLayer,
}

impl CsrfGuard {
    /// A guard trusting the request's own origin and `trusted_origins` (the configured CORS
    /// origins).
    ///
    /// # Errors
    /// A message naming an origin the layer cannot match.
    pub fn new(trusted_origins: &[String]) -> Result<Self, String> {
        let mut layer = CsrfLayer::new();
        for o in trusted_origins {
            layer = layer
                .add_trusted_origin(o)
                .map_err(|e| format!("`cors.allowed_origins`: {e}"))?;
        }
        Ok(Self { layer })
    }

    /// Whether tower-http's layer lets the request through: safe methods, `Sec-Fetch-Site:
    /// same-origin|none`, a trusted or same-host `Origin`, or neither header.
    pub async fn allows(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        let mut req = Request::new(());
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers.clone();
        let ok =
            tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
        match self.layer.layer(ok).oneshot(req).await {
            Ok(res) => res.status() != StatusCode::FORBIDDEN,
            Err(never) => match never {},
        }
    }
}

/// The full CSRF check for a cookie-authenticated, state-changing request: the
/// Fetch-Metadata/`Origin` check, then the double-submit token (`X-CSRF-Token` header, else
/// the `csrf_token` form field passed as `form_token`) against the CSRF cookie, in constant
/// time.
///
/// # Errors
/// 403 `csrf_failed` saying which part failed.
pub async fn check_csrf(
    guard: &CsrfGuard,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    form_token: Option<&str>,
) -> Result<(), AppError> {
    check(guard, method, uri, headers, Some(form_token)).await
}

/// [`check_csrf`] for endpoints that take no form (the JSON API under `/users/me`,
/// `/logout`): the token comes in the `X-CSRF-Token` header only.
///
/// # Errors
/// 403 `csrf_failed` saying which part failed.
pub async fn check_csrf_header(
    guard: &CsrfGuard,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), AppError> {
    check(guard, method, uri, headers, None).await
}

/// `form`: `None` where no form field is read, else the form's token if it has one.
async fn check(
    guard: &CsrfGuard,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    form: Option<Option<&str>>,
) -> Result<(), AppError> {
    if !guard.allows(method, uri, headers).await {
        tracing::debug!(target: "tessera::auth", "cross-origin request refused (Sec-Fetch-Site/Origin)");
        return Err(csrf_failed(
            "cross-origin request refused (Sec-Fetch-Site/Origin)",
        ));
    }
    let Some(expected) = cookie(headers, CSRF_COOKIE) else {
        return Err(csrf_failed("the CSRF cookie is missing; sign in again"));
    };
    let presented = header_token(headers).or(form.flatten()).ok_or_else(|| {
        csrf_failed(if form.is_some() {
            "missing CSRF token: send the X-CSRF-Token header or csrf_token field"
        } else {
            "missing CSRF token: send the X-CSRF-Token header"
        })
    })?;
    if tokens_match(expected, presented) {
        Ok(())
    } else {
        tracing::debug!(target: "tessera::auth", "CSRF token mismatch");
        Err(csrf_failed("the CSRF token does not match"))
    }
}

/// The CSRF token in the `X-CSRF-Token` header, if the header is present and readable. When
/// it is, the CSRF check uses it and never a form field.
#[must_use]
pub fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
}

/// Constant-time comparison of two CSRF tokens. Both are compared as SHA-256 digests so
/// that their lengths do not leak through timing either (`jose::crypto`, built on subtle).
fn tokens_match(a: &str, b: &str) -> bool {
    let da = tessera_jose::crypto::sha256(a.as_bytes());
    let db = tessera_jose::crypto::sha256(b.as_bytes());
    tessera_jose::crypto::constant_time_eq(&da, &db)
}

fn csrf_failed(description: &str) -> AppError {
    AppError::new(StatusCode::FORBIDDEN, "csrf_failed", description)
}

/// True for methods that change nothing (RFC 9110 §9.2.1) and need no CSRF check.
#[must_use]
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; __Host-tessera_at=tok; __Host-tessera_atx=no"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, ACCESS_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, CSRF_COOKIE), None);
        h.append(header::COOKIE, "__Host-tessera_csrf=c".parse().unwrap());
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("c"));
    }

    /// RFC 6265 §5.2/§5.4: a malformed pair is ignored, not the header it came in.
    #[test]
    fn a_malformed_cookie_pair_hides_only_itself() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"junk=\xe9; __Host-tessera_at=tok; x\x80y; bare").unwrap(),
        );
        assert_eq!(cookie(&h, ACCESS_COOKIE), Some("tok"));
        // A second header with such bytes hides nothing of the first, nor of itself.
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"__Host-tessera_csrf=c; junk2=\xff\xfe").unwrap(),
        );
        assert_eq!(cookie(&h, ACCESS_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("c"));
    }

    /// Our cookies' values must be RFC 6265 §4.1.1 `cookie-value`s; anything else under
    /// their names is skipped (a later well-formed one is still read).
    #[test]
    fn our_cookie_values_are_strictly_validated() {
        let value = |raw: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_bytes(raw).unwrap());
            cookie(&h, ACCESS_COOKIE).map(str::to_owned)
        };
        for bad in [
            &b"__Host-tessera_at=t\xe9k"[..],
            b"__Host-tessera_at=a\\b",
            b"__Host-tessera_at=a,b",
            b"__Host-tessera_at=a b",
            b"__Host-tessera_at=\"tok",
            b"__Host-tessera_at=\"\"tok\"\"",
            b"__Host-tessera_at=",
            b"__Host-tessera_at=\"\"",
        ] {
            assert_eq!(value(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            value(b"__Host-tessera_at=\"a.b-c_d\""),
            Some("a.b-c_d".into())
        );
        assert_eq!(value(b" __Host-tessera_at = tok "), Some("tok".into()));
        assert_eq!(
            value(b"__Host-tessera_at=t\xe9k; __Host-tessera_at=tok"),
            Some("tok".into())
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"__Secure-tessera_rt=\xe9; __Secure-tessera_rt=rt").unwrap(),
        );
        assert_eq!(refresh_cookie(&h), RefreshCookie::One("rt"));
    }

    #[test]
    fn session_cookies_carry_the_required_attributes() {
        let v = session_cookies("at", 900, Some(("rt", 86_400)), "cs");
        let v: Vec<&str> = v.iter().map(|h| h.to_str().unwrap()).collect();
        assert_eq!(
            v[0],
            "__Host-tessera_at=at; Path=/; Max-Age=900; Secure; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            v[1],
            "__Secure-tessera_rt=rt; Path=/session; Max-Age=86400; Secure; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            v[2],
            "__Host-tessera_csrf=cs; Path=/; Max-Age=86400; Secure; SameSite=Strict"
        );
    }

    #[test]
    fn the_csrf_cookie_outlives_a_refresh_cookie_that_expires_first() {
        let v = session_cookies("at", 3600, Some(("rt", 600)), "cs");
        let v: Vec<&str> = v.iter().map(|h| h.to_str().unwrap()).collect();
        assert_eq!(
            v[2],
            "__Host-tessera_csrf=cs; Path=/; Max-Age=3600; Secure; SameSite=Strict"
        );
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "abcd"));
        assert!(!tokens_match("", "a"));
    }

    #[tokio::test]
    async fn the_fetch_metadata_check_refuses_cross_site_posts() {
        let g = CsrfGuard::new(&["https://app.example".into()]).unwrap();
        let uri: Uri = "/session/logout".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "auth.example".parse().unwrap());
        assert!(g.allows(&Method::POST, &uri, &h).await);
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!g.allows(&Method::POST, &uri, &h).await);
        assert!(g.allows(&Method::GET, &uri, &h).await);
        h.insert(header::ORIGIN, "https://app.example".parse().unwrap());
        assert!(g.allows(&Method::POST, &uri, &h).await);
        h.remove("sec-fetch-site");
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!g.allows(&Method::POST, &uri, &h).await);
    }
}
