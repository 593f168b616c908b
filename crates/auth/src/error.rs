//! Domain outcomes of authentication operations.

use std::fmt;

/// Why an authentication operation did not succeed.
///
/// These describe domain outcomes; the server maps them to RFC 6749/6750 responses. Several
/// variants deliberately carry no detail that could tell a client whether an account
/// exists.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password (indistinguishable on purpose).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The password was right but the account is disabled.
    #[error("account is disabled")]
    AccountDisabled,
    /// A refresh token (or other grant) is unknown, expired or revoked.
    #[error("invalid grant: {0}")]
    InvalidGrant(&'static str),
    /// A rotated refresh token was presented again; its whole session was revoked.
    #[error("refresh token reuse detected; the session has been revoked")]
    RefreshReused,
    /// A refresh token rotated within the grace window whose chain has since moved on further
    /// than a refresh follows it. The session is intact and the client already holds (or is
    /// about to receive) a newer token: it is refused without revoking anything, and a
    /// browser keeps its cookies.
    #[error("refresh token was superseded by a newer one")]
    RefreshSuperseded,
    /// An access token failed verification or was revoked. The detail is for logs only.
    #[error("invalid access token: {0}")]
    InvalidToken(String),
    /// The request asked for a scope the client may not have.
    #[error("requested scope is not allowed: {0}")]
    InvalidScope(String),
    /// Client authentication failed: unknown client, wrong or missing secret
    /// (RFC 6749 §5.2 `invalid_client`).
    #[error("client authentication failed: {0}")]
    InvalidClient(&'static str),
    /// Too many failed logins for this username: attempts are refused for a while
    /// (exponential, bounded backoff). Unknown usernames lock the same way.
    #[error("too many failed attempts; try again in {retry_after} s")]
    Locked {
        /// Seconds until attempts are accepted again.
        retry_after: i64,
    },
    /// The password was right and a second factor is required: complete the login with the
    /// MFA grant and this single-use, short-lived token.
    #[error("a second factor is required")]
    MfaRequired {
        /// The challenge token.
        mfa_token: String,
    },
    /// Too many wrong second-factor codes for this user.
    #[error("too many wrong codes; try again in {retry_after} s")]
    TooManyAttempts {
        /// Seconds until codes are accepted again.
        retry_after: i64,
    },
    /// The request is malformed (a field is missing or has a bad value).
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller is authenticated but not allowed to do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A client's own token (client credentials) where a user's is needed: RFC 6750 §3.1
    /// `insufficient_scope`, as for any token that lacks what the resource requires.
    #[error("this is a client's own token; there is no user")]
    NoUser,
    /// The thing named does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The thing to create already exists.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// A well-formed username that cannot be given to a new user (it would read as a user
    /// id); the message says why.
    #[error("{0}")]
    UnusableUsername(&'static str),
    /// A new password does not meet the policy; the message says what to change.
    #[error("{0}")]
    WeakPassword(String),
    /// Self-service registration is closed.
    #[error("registration is closed")]
    RegistrationClosed,
    /// The service cannot take more work right now (hashing queue full, database down).
    #[error("temporarily unavailable: {0}")]
    Unavailable(&'static str),
    /// Storage failed.
    #[error("storage error")]
    Storage(#[from] crate::store::StoreError),
    /// A configuration or internal invariant failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    pub(crate) fn internal(e: impl fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<tessera_jose::Error> for AuthError {
    fn from(e: tessera_jose::Error) -> Self {
        if e.is_untrusted_input() {
            Self::InvalidToken(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;
