//! The one place where outcomes become HTTP status codes and error bodies.
//!
//! Three shapes, by endpoint family:
//! * OAuth endpoints (`/token`, `/revoke`, `/introspect`): RFC 6749 §5.2
//!   `{"error","error_description"}`, with `Cache-Control: no-store`.
//! * Bearer-protected resources: RFC 6750 §3, a `WWW-Authenticate: Bearer` challenge with
//!   `error="invalid_token"` (401) or `"insufficient_scope"` (403). The body repeats the
//!   error and adds the tutorial's FastAPI-style `detail`.
//! * Everything else (admin and account APIs): the same JSON members with a fitting status.
//!
//! A 5xx body is generic and carries the request id; the detail goes to the log, once.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_auth::AuthError;
use tessera_auth::store::StoreErrorKind;

/// An error response.
#[derive(Debug)]
pub struct AppError(Box<Inner>);

/// The parts of an [`AppError`] (boxed: errors are the rare path, and a small `Result`
/// keeps every handler's happy path cheap).
#[derive(Debug)]
pub struct Inner {
    status: StatusCode,
    code: &'static str,
    description: String,
    challenge: Option<String>,
    retry_after: Option<u64>,
    /// One extra body member (`mfa_token` of an `mfa_required` answer).
    extra: Option<(&'static str, String)>,
    /// Internal detail, logged by the middleware, never sent.
    internal: Option<String>,
}

impl std::ops::Deref for AppError {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::ops::DerefMut for AppError {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.0
    }
}

/// Internal error detail carried in response extensions so the trace layer logs it once.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_token: Option<&'a str>,
}

/// RFC 6750 realm.
const REALM: &str = "tessera";

impl AppError {
    /// A plain error with a status and an RFC 6749-style code.
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            status,
            code,
            description: description.into(),
            challenge: None,
            retry_after: None,
            extra: None,
            internal: None,
        }))
    }

    /// 400 `invalid_request`.
    #[must_use]
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 404 `not_found`.
    #[must_use]
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401 with a bare `Bearer` challenge: no credentials were sent (RFC 6750 §3.1 says to
    /// omit the error code then). RFC 6750 defines only the challenge; the body keeps an
    /// `error` (`invalid_token`) for clients that parse it, the same body `tessera-axum`
    /// sends, so services and the server answer alike.
    #[must_use]
    pub fn missing_token() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "missing bearer token",
        );
        e.challenge = Some(format!("Bearer realm=\"{REALM}\""));
        e
    }

    /// 400 `invalid_request` for an `Authorization` header that names the Bearer scheme
    /// but does not follow its grammar (RFC 6750 §2.1), with the Bearer challenge RFC 6750
    /// §3.1 gives that error.
    #[must_use]
    pub fn malformed_bearer(description: &str) -> Self {
        let mut e = Self::invalid_request(description);
        e.challenge = Some(format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_request\", error_description=\"{}\"",
            description_text(description)
        ));
        e
    }

    /// 401 `invalid_token` (RFC 6750 §3.1). The description is deliberately generic; the
    /// precise reason is logged at debug level by the caller.
    #[must_use]
    pub fn invalid_token() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the access token is invalid, expired or revoked",
        );
        e.challenge = Some(format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"the access token is invalid, expired or revoked\""
        ));
        e
    }

    /// 403 `insufficient_scope` (RFC 6750 §3.1).
    #[must_use]
    pub fn insufficient_scope(description: &str) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "insufficient_scope", description);
        e.challenge = Some(format!(
            "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"{}\"",
            description_text(description)
        ));
        e
    }

    /// 401 `invalid_client` with a Basic challenge (RFC 6749 §5.2).
    #[must_use]
    pub fn invalid_client(description: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description);
        e.challenge = Some(format!("Basic realm=\"{REALM}\""));
        e
    }

    /// 500 with the detail kept for the log only.
    #[must_use]
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        );
        e.internal = Some(detail.into());
        e
    }

    /// 503 `temporarily_unavailable` (RFC 6749 §4.1.2.1) with `Retry-After`.
    #[must_use]
    pub fn unavailable(description: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        );
        e.retry_after = Some(1);
        e
    }

    /// Maps a domain error from a token-endpoint grant (RFC 6749 §5.2). Unknown user and
    /// wrong password are one answer.
    #[must_use]
    pub fn from_grant(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Incorrect username or password",
            ),
            AuthError::AccountDisabled => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "this account is disabled",
            ),
            AuthError::InvalidGrant(d) => Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d),
            AuthError::RefreshReused => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token was already used; the session has been revoked, sign in again",
            ),
            AuthError::RefreshSuperseded => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token was superseded by a newer one; use the newest refresh token",
            ),
            AuthError::InvalidScope(s) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope `{s}` is not allowed"),
            ),
            AuthError::InvalidRequest(d) => Self::invalid_request(d),
            AuthError::Forbidden(d) => Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d),
            AuthError::InvalidClient(d) => Self::invalid_client(d),
            AuthError::Locked { retry_after } => {
                let mut e = Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    format!(
                        "too many failed attempts for this username; try again in {retry_after} seconds"
                    ),
                );
                e.retry_after = Some(u64::try_from(retry_after).unwrap_or(1));
                e
            }
            AuthError::MfaRequired { mfa_token } => {
                // As the token endpoints of other MFA-capable servers do: 403, `mfa_required`,
                // and the challenge token to complete the login with the MFA grant.
                let mut e = Self::new(
                    StatusCode::FORBIDDEN,
                    "mfa_required",
                    "a second factor is required: send grant_type=urn:tessera:params:oauth:grant-type:mfa-otp with mfa_token and otp (or recovery_code)",
                );
                e.extra = Some(("mfa_token", mfa_token));
                e
            }
            other => Self::from_api(other),
        }
    }

    /// Maps a domain error from an API call.
    #[must_use]
    pub fn from_api(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "incorrect username or password",
            ),
            AuthError::AccountDisabled => Self::new(
                StatusCode::FORBIDDEN,
                "account_disabled",
                "this account is disabled",
            ),
            AuthError::InvalidGrant(d) => Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d),
            AuthError::RefreshReused => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token reuse detected",
            ),
            AuthError::RefreshSuperseded => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token was superseded by a newer one",
            ),
            AuthError::InvalidToken(_) => Self::invalid_token(),
            AuthError::InvalidScope(s) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope `{s}` is not allowed"),
            ),
            AuthError::InvalidRequest(d) => Self::invalid_request(d),
            AuthError::Forbidden(d) => Self::new(StatusCode::FORBIDDEN, "forbidden", d),
            e @ AuthError::NoUser => Self::insufficient_scope(&e.to_string()),
            AuthError::NotFound(what) => Self::not_found(what),
            AuthError::InvalidClient(d) => Self::invalid_client(d),
            AuthError::AlreadyExists(what) => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{what} already exists"),
            ),
            // 422 like a weak password: the request is well-formed (the name matches the
            // documented pattern) but cannot be honoured as it is.
            AuthError::UnusableUsername(d) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_username", d)
            }
            AuthError::WeakPassword(d) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", d)
            }
            AuthError::RegistrationClosed => Self::new(
                StatusCode::FORBIDDEN,
                "registration_closed",
                "self-service registration is closed",
            ),
            AuthError::Unavailable(d) => Self::unavailable(d),
            AuthError::TooManyAttempts { retry_after } | AuthError::Locked { retry_after } => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    format!("too many failed attempts; try again in {retry_after} seconds"),
                );
                e.retry_after = Some(u64::try_from(retry_after).unwrap_or(1));
                e
            }
            AuthError::Storage(s) if s.kind() == StoreErrorKind::Unavailable => {
                let mut e = Self::unavailable("the database is unavailable; retry shortly");
                e.internal = Some(format!(
                    "{s}: {}",
                    std::error::Error::source(&s)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ));
                e
            }
            AuthError::Storage(s) => Self::internal(format!(
                "{s}: {}",
                std::error::Error::source(&s)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )),
            AuthError::Internal(d) => Self::internal(d),
            other => Self::internal(other.to_string()),
        }
    }

    /// Adds `Retry-After`.
    #[must_use]
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Replaces the description (same status and code).
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The description sent to the client.
    #[must_use]
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The `Retry-After` seconds, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The `mfa_token` of an `mfa_required` answer.
    #[must_use]
    pub fn mfa_token(&self) -> Option<&str> {
        self.extra
            .as_ref()
            .filter(|(k, _)| *k == "mfa_token")
            .map(|(_, v)| v.as_str())
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// `error_description` as RFC 6749 §5.2 and RFC 6750 §3 allow it: only
/// `%x20-21 / %x23-5B / %x5D-7E` (visible ASCII and space, without `"` and `\`), which also
/// makes it a valid quoted-string in a challenge (RFC 9110 §5.6.4). Descriptions cite
/// sections (`§3.2`) and echo what the request sent (a grant type, a scope), so `§` is
/// spelled out, `"` and `\` become `'` and `/`, and any other character a `?`.
fn description_text(text: &str) -> Cow<'_, str> {
    let allowed = |c: char| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e');
    if text.chars().all(allowed) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if allowed(c) => out.push(c),
            '\u{a7}' => out.push_str("section "),
            '"' => out.push('\''),
            '\\' => out.push('/'),
            _ => out.push('?'),
        }
    }
    Cow::Owned(out)
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        Self::from_api(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let this = *self.0;
        let bearer = this
            .challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer"));
        let description = description_text(&this.description);
        let body = Body {
            error: this.code,
            error_description: &description,
            detail: bearer.then_some("Could not validate credentials"),
            mfa_token: this.extra.as_ref().map(|(_, v)| v.as_str()),
        };
        let mut res = (this.status, Json(&body)).into_response();
        let h = res.headers_mut();
        // RFC 6749 §5.1/§5.2: token responses, errors included, are never cached.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(c) = this.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.insert(header::WWW_AUTHENTICATE, c);
        }
        if let Some(s) = this.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(detail) = this.internal {
            res.extensions_mut().insert(ErrorDetail(detail));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_keep_to_the_rfc_6749_section_5_2_characters() {
        assert!(matches!(
            description_text("missing parameter `x`: see RFC 6749 (~!#$%&'*+,-./:;<=>?@[]^_{|}`)"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            description_text("repeated (RFC 6749 \u{a7}3.2)"),
            "repeated (RFC 6749 section 3.2)"
        );
        assert_eq!(
            description_text("scope `\"caf\u{e9}\\\t\u{7f}` is not allowed"),
            "scope `'caf?/??` is not allowed"
        );
        let res = AppError::insufficient_scope("needs \"admin\" \u{a7}1").into_response();
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"tessera\", error=\"insufficient_scope\", error_description=\"needs 'admin' section 1\""
        );
    }
}
