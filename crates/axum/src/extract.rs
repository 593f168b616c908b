//! The axum extractors and their rejection (RFC 6750 §3).

use std::marker::PhantomData;
use std::sync::Arc;

use axum_core::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use tessera_jose::NoCustomClaims;

use crate::error::Error;
use crate::verifier::{Authenticated, Verifier};

/// The rejection of every extractor here: a 401, 403 or 503 in the RFC 6750 shape.
///
/// * no token: 401 with a bare `WWW-Authenticate: Bearer realm="..."` (RFC 6750 §3.1: no
///   error code when the request carried no credentials); the body still says
///   `invalid_token` / `missing bearer token`, as the Tessera server's does: RFC 6750
///   defines only the challenge, and clients that parse the body expect an `error`;
/// * a malformed `Authorization` header (sent twice, or not `Bearer` and a b64token):
///   400 `error="invalid_request"` (RFC 6750 §3.1);
/// * a bad, expired or revoked token: 401 `error="invalid_token"`, one generic text for
///   every reason;
/// * a valid token without the role or scope: 403 `error="insufficient_scope"`;
/// * no key set could ever be fetched, the key set is staler than
///   [`crate::JwksOptions::max_staleness`] allows, or the revocation feed is staler than
///   [`crate::VerifierBuilder::revocation_feed_max_staleness`] allows: 503
///   `temporarily_unavailable` with `Retry-After`.
///
/// The body is `{"error": ..., "error_description": ...}`. The precise reason goes only to
/// `tracing::debug!` (target `tessera::auth`) and is available from [`AuthRejection::error`].
#[derive(Debug)]
pub struct AuthRejection {
    error: Error,
    realm: Arc<str>,
}

const INVALID_TOKEN_TEXT: &str = "the access token is invalid, expired or revoked";

impl AuthRejection {
    pub(crate) fn new(error: Error, realm: Arc<str>) -> Self {
        tracing::debug!(target: "tessera::auth", reason = %error, "bearer token rejected");
        Self { error, realm }
    }

    /// The precise reason (for logs; never send it to the client).
    #[must_use]
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The status this rejection answers with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match &self.error {
            Error::MissingRole { .. } | Error::MissingScope { .. } => StatusCode::FORBIDDEN,
            // RFC 6750 §3.1 `invalid_request`: "SHOULD respond with ... 400".
            Error::MalformedAuthorization { .. } => StatusCode::BAD_REQUEST,
            e if e.is_token_rejection() => StatusCode::UNAUTHORIZED,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let realm = &self.realm;
        let status = self.status();
        let (code, description, challenge) = match &self.error {
            Error::MissingToken => (
                "invalid_token",
                "missing bearer token".to_owned(),
                Some(format!("Bearer realm=\"{realm}\"")),
            ),
            // RFC 6750 §3.1: a request that repeats the credential or is otherwise malformed.
            Error::MalformedAuthorization { .. } => {
                let text = self.error.to_string();
                let challenge = format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"{}\"",
                    quoted(&text)
                );
                ("invalid_request", text, Some(challenge))
            }
            Error::MissingRole { .. } | Error::MissingScope { .. } => {
                let text = self.error.to_string();
                let scope = match &self.error {
                    Error::MissingScope { scope } => format!(", scope=\"{}\"", quoted(scope)),
                    _ => String::new(),
                };
                let challenge = format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{}\"{scope}",
                    quoted(&text)
                );
                ("insufficient_scope", text, Some(challenge))
            }
            e if e.is_token_rejection() => (
                "invalid_token",
                INVALID_TOKEN_TEXT.to_owned(),
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{INVALID_TOKEN_TEXT}\""
                )),
            ),
            _ => (
                "temporarily_unavailable",
                "token verification is temporarily unavailable".to_owned(),
                None,
            ),
        };
        // The body carries the text the challenge does (RFC 6749 §5.2 characters).
        let body = serde_json::json!({ "error": code, "error_description": quoted(&description) });
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, c);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        (status, headers, body.to_string()).into_response()
    }
}

impl std::fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for AuthRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// `error_description` (and any challenge attribute; role names and scopes are set by the
/// application, but the header must stay well-formed) as RFC 6749 §5.2 and RFC 6750 §3
/// allow it: only `%x20-21 / %x23-5B / %x5D-7E`, which is also a valid quoted-string (RFC
/// 9110 §5.6.4). As the Tessera server writes it: `§` is spelled out, `"` and `\` become
/// `'` and `/`, any other character a `?` (dropping them made `RFC 6750 §2.1` read
/// `RFC 6750 2.1`, and left the body's copy with the `§`).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e' => out.push(c),
            '\u{a7}' => out.push_str("section "),
            '"' => out.push('\''),
            '\\' => out.push('/'),
            _ => out.push('?'),
        }
    }
    out
}

/// The bearer token of a request: `Ok(None)` without an `Authorization` header.
///
/// RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`, the scheme case-insensitive,
/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`. Whitespace
/// around the whole field value is not part of it (RFC 9110 §5.5). A header of another
/// scheme holds no bearer token ([`Error::MissingToken`]); one of the Bearer scheme with
/// anything but `1*SP b64token` (no token, a tab, a second word, a byte outside the
/// alphabet) is malformed: 400 `invalid_request` (RFC 6750 §3.1). The Tessera server reads
/// the header by the same rules, so a client gets one answer from both.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::MalformedAuthorization {
            reason: "more than one Authorization header",
        });
    }
    let value = trim_ows(value.as_bytes());
    // The auth-scheme is a token (RFC 9110 §11.1, §5.6.2): it ends at the first non-tchar.
    let scheme_len = value
        .iter()
        .position(|b| !is_tchar(*b))
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at_checked(scheme_len).unwrap_or((value, &[]));
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Error::MissingToken);
    }
    let spaces = rest.iter().take_while(|b| **b == b' ').count();
    let token = rest.get(spaces..).unwrap_or_default();
    if token.is_empty() {
        return Err(Error::MalformedAuthorization {
            reason: "no token after the Bearer scheme (RFC 6750 §2.1)",
        });
    }
    if spaces == 0 || !is_b64token(token) {
        return Err(Error::MalformedAuthorization {
            reason: "not `Bearer` 1*SP b64token (RFC 6750 §2.1)",
        });
    }
    // A b64token is ASCII.
    std::str::from_utf8(token)
        .map(Some)
        .map_err(|_| Error::MalformedAuthorization {
            reason: "not `Bearer` 1*SP b64token (RFC 6750 §2.1)",
        })
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

async fn authenticate<C: DeserializeOwned>(
    verifier: &Verifier,
    parts: &Parts,
) -> Result<Option<Authenticated<C>>, AuthRejection> {
    let reject = |e| AuthRejection::new(e, Arc::clone(&verifier.challenge().realm));
    let Some(token) = bearer(&parts.headers).map_err(reject)? else {
        return Ok(None);
    };
    verifier.verify::<C>(token).await.map(Some).map_err(reject)
}

/// Requires a valid bearer token; `C` receives the custom claims.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use serde::Deserialize;
/// use tessera_axum::{Authenticated, Verifier};
///
/// #[derive(Deserialize)]
/// struct Profile {
///     preferred_username: String,
/// }
///
/// async fn me(user: Authenticated<Profile>) -> String {
///     format!("hello {}", user.preferred_username)
/// }
///
/// # async fn run() -> Result<(), tessera_axum::Error> {
/// let verifier = Verifier::builder()
///     .issuer_url("https://auth.example.com")
///     .audience("https://auth.example.com")
///     .build()?;
/// let app: Router = Router::new().route("/me", get(me)).with_state(verifier);
/// # Ok(()) }
/// ```
impl<S, C> FromRequestParts<S> for Authenticated<C>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
    C: DeserializeOwned + Send + Sync + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        match authenticate(&verifier, parts).await? {
            Some(user) => Ok(user),
            None => Err(AuthRejection::new(
                Error::MissingToken,
                Arc::clone(&verifier.challenge().realm),
            )),
        }
    }
}

/// `Option<Authenticated<C>>`: `None` when the request has no `Authorization` header; a
/// header that is present but does not hold a valid bearer token is still rejected.
impl<S, C> OptionalFromRequestParts<S> for Authenticated<C>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
    C: DeserializeOwned + Send + Sync + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        authenticate(&Verifier::from_ref(state), parts).await
    }
}

/// A role name for [`RequireRole`]. Declare one with [`crate::role!`].
pub trait RoleName: Send + Sync + 'static {
    /// The role, as it appears in the token's `role` or `roles` claims.
    const ROLE: &'static str;
}

/// A scope for [`RequireScope`]. Declare one with [`crate::scope!`].
pub trait ScopeName: Send + Sync + 'static {
    /// The scope, as it appears in the token's `scope` claim.
    const SCOPE: &'static str;
}

/// Declares a [`RoleName`]: `tessera_axum::role!(pub Admin = "admin");`.
#[macro_export]
macro_rules! role {
    ($vis:vis $name:ident = $role:literal) => {
        #[doc = concat!("The `", $role, "` role.")]
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;
        impl $crate::RoleName for $name {
            const ROLE: &'static str = $role;
        }
    };
}

/// Declares a [`ScopeName`]: `tessera_axum::scope!(pub OrdersRead = "orders:read");`.
#[macro_export]
macro_rules! scope {
    ($vis:vis $name:ident = $scope:literal) => {
        #[doc = concat!("The `", $scope, "` scope.")]
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;
        impl $crate::ScopeName for $name {
            const SCOPE: &'static str = $scope;
        }
    };
}

/// A valid token that carries role `R` (else 403 `insufficient_scope`). Dereferences to the
/// [`Authenticated`] user.
///
/// ```
/// use tessera_axum::RequireRole;
///
/// tessera_axum::role!(Admin = "admin");
///
/// async fn delete_everything(admin: RequireRole<Admin>) -> String {
///     format!("as you wish, {}", admin.subject().unwrap_or("?"))
/// }
/// ```
#[derive(Debug, Clone)]
pub struct RequireRole<R, C = NoCustomClaims> {
    user: Authenticated<C>,
    _role: PhantomData<fn() -> R>,
}

/// A valid token granted scope `S` (else 403 `insufficient_scope`). Dereferences to the
/// [`Authenticated`] user.
#[derive(Debug, Clone)]
pub struct RequireScope<S, C = NoCustomClaims> {
    user: Authenticated<C>,
    _scope: PhantomData<fn() -> S>,
}

impl<R, C> RequireRole<R, C> {
    /// The authenticated user.
    #[must_use]
    pub fn into_inner(self) -> Authenticated<C> {
        self.user
    }
}

impl<S, C> RequireScope<S, C> {
    /// The authenticated user.
    #[must_use]
    pub fn into_inner(self) -> Authenticated<C> {
        self.user
    }
}

impl<R, C> std::ops::Deref for RequireRole<R, C> {
    type Target = Authenticated<C>;

    fn deref(&self) -> &Authenticated<C> {
        &self.user
    }
}

impl<S, C> std::ops::Deref for RequireScope<S, C> {
    type Target = Authenticated<C>;

    fn deref(&self) -> &Authenticated<C> {
        &self.user
    }
}

impl<St, R, C> FromRequestParts<St> for RequireRole<R, C>
where
    Verifier: FromRef<St>,
    St: Send + Sync,
    R: RoleName,
    C: DeserializeOwned + Send + Sync + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let user =
            <Authenticated<C> as FromRequestParts<St>>::from_request_parts(parts, state).await?;
        user.require_role(R::ROLE)?;
        Ok(Self {
            user,
            _role: PhantomData,
        })
    }
}

impl<St, S, C> FromRequestParts<St> for RequireScope<S, C>
where
    Verifier: FromRef<St>,
    St: Send + Sync,
    S: ScopeName,
    C: DeserializeOwned + Send + Sync + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let user =
            <Authenticated<C> as FromRequestParts<St>>::from_request_parts(parts, state).await?;
        user.require_scope(S::SCOPE)?;
        Ok(Self {
            user,
            _scope: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_credentials_are_parsed_strictly() {
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
        assert_eq!(bearer(&headers(&["Bearer abc.def"])), Ok(Some("abc.def")));
        assert_eq!(bearer(&headers(&["bearer abc=="])), Ok(Some("abc==")));
        assert_eq!(bearer(&headers(&["Basic abc"])), Err(Error::MissingToken));
        assert!(matches!(
            bearer(&headers(&["Bearer "])),
            Err(Error::MalformedAuthorization { .. })
        ));
        assert!(matches!(
            bearer(&headers(&["Bearer a b"])),
            Err(Error::MalformedAuthorization { .. })
        ));
        assert!(matches!(
            bearer(&headers(&["Bearer a", "Bearer b"])),
            Err(Error::MalformedAuthorization { .. })
        ));
    }

    /// The grammar the Tessera server applies too (`tessera_server::extract::bearer_token`):
    /// whitespace around the whole value is dropped (RFC 9110 §5.5), anything else that
    /// names the Bearer scheme is `1*SP b64token` or malformed (RFC 6750 §2.1).
    #[test]
    fn bearer_credentials_follow_rfc_6750_section_2_1_as_the_server_reads_them() {
        let token = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
            bearer(&h).map(|t| t.map(str::to_owned))
        };
        for (value, want) in [
            (&b"Bearer abc"[..], "abc"),
            (b"bEaReR abc", "abc"),
            (b"Bearer  abc", "abc"),
            (b"Bearer abc ", "abc"),
            (b"Bearer abc\t", "abc"),
            (b"\tBearer abc", "abc"),
            (b" Bearer abc \t ", "abc"),
            (b"Bearer a-b.c_d~e+f/g==", "a-b.c_d~e+f/g=="),
        ] {
            let what = String::from_utf8_lossy(value);
            assert_eq!(token(value), Ok(Some(want.to_owned())), "{what}");
        }
        for value in [&b"Basic abc"[..], b"Bearerabc", b"Bear abc", b"Other \xff"] {
            let what = String::from_utf8_lossy(value);
            assert_eq!(token(value), Err(Error::MissingToken), "{what}");
        }
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
            let what = String::from_utf8_lossy(value);
            assert!(
                matches!(token(value), Err(Error::MalformedAuthorization { .. })),
                "{what}"
            );
        }
    }

    #[test]
    fn rejections_follow_rfc_6750() {
        let realm: Arc<str> = "api".into();
        let r = AuthRejection::new(Error::MissingToken, Arc::clone(&realm)).into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\""
        );
        let r = AuthRejection::new(Error::Revoked { reason: "session" }, Arc::clone(&realm))
            .into_response();
        assert_eq!(r.status(), 401);
        let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.contains("error=\"invalid_token\""));
        assert!(!challenge.contains("session"));
        let r = AuthRejection::new(
            Error::MissingScope {
                scope: "orders:read".into(),
            },
            Arc::clone(&realm),
        )
        .into_response();
        assert_eq!(r.status(), 403);
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("scope=\"orders:read\"")
        );
        let r = AuthRejection::new(Error::KeysUnavailable, realm).into_response();
        assert_eq!(r.status(), 503);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
