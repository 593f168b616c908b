//! The one error type of this crate.

/// Why a verifier could not be built, a key set or feed could not be fetched, or a request
/// was refused.
///
/// Three groups, kept apart on purpose (STYLE §4):
///
/// * **caller mistakes**: [`Error::Config`], [`Error::NoRuntime`]. Fix the code or the
///   configuration; they never depend on a request.
/// * **untrusted input**: the request's token failed a check ([`Error::MissingToken`],
///   [`Error::MalformedAuthorization`], [`Error::Token`], [`Error::Revoked`]) or lacks a
///   permission ([`Error::MissingRole`], [`Error::MissingScope`]). The extractor answers all
///   token failures with one opaque `invalid_token`; the precise text is for debug logs.
/// * **the issuer's documents**: fetching or reading the discovery document, the JWKS or the
///   revocation feed failed ([`Error::Fetch`], [`Error::Status`], [`Error::TooLarge`],
///   [`Error::InvalidDocument`], [`Error::IssuerMismatch`], [`Error::UrlRefused`]), no key
///   has ever been fetched ([`Error::KeysUnavailable`]), or the key set or the revocation
///   feed is staler than allowed ([`Error::KeysStale`], [`Error::RevocationFeedStale`]).
///   The extractor answers these with 503.
///
/// Display texts are lowercase, end without a period and never contain a token or a secret.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // ---------------------------------------------------------------- caller mistakes
    /// The configuration cannot work (a malformed URL, a weak key, a feed without a URL).
    #[error("invalid verifier configuration: {reason}")]
    Config {
        /// What is wrong, naming the setting.
        reason: String,
    },
    /// Remote keys or the revocation feed need a Tokio runtime for their background tasks,
    /// and [`crate::VerifierBuilder::build`] was called outside one.
    #[error("a tokio runtime is required to fetch keys or follow the revocation feed")]
    NoRuntime,

    // ---------------------------------------------------------------- untrusted input
    /// The request carried no `Authorization` header, or one of another scheme.
    #[error("no bearer token was sent")]
    MissingToken,
    /// The `Authorization` header is not a well-formed bearer credential (RFC 6750 §2.1).
    #[error("malformed authorization header: {reason}")]
    MalformedAuthorization {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The token failed a check of the JOSE core: structure, algorithm, key, signature,
    /// claims (`exp`, `iss`, `aud`, `typ`...).
    #[error(transparent)]
    Token(#[from] tessera_jose::Error),
    /// The token was valid but has been revoked (seen on the revocation feed).
    #[error("token revoked: {reason}")]
    Revoked {
        /// Which revocation applies: `token`, `session` or `user`.
        reason: &'static str,
    },
    /// The token is valid but does not carry a role the endpoint requires.
    #[error("the `{role}` role is required")]
    MissingRole {
        /// The required role.
        role: String,
    },
    /// The token is valid but its `scope` does not include one the endpoint requires.
    #[error("the `{scope}` scope is required")]
    MissingScope {
        /// The required scope.
        scope: String,
    },

    // ---------------------------------------------------------------- issuer documents
    /// No verification key is available: the key set has never been fetched successfully.
    #[error("no verification keys are available yet")]
    KeysUnavailable,
    /// The key set held is stale beyond [`crate::JwksOptions::max_staleness`] and could not
    /// be refreshed: a key the issuer withdrew meanwhile must not verify tokens forever, so
    /// every token is refused until a fetch succeeds.
    #[error("the key set is stale beyond the allowed staleness and could not be refreshed")]
    KeysStale,
    /// The revocation feed has not been read successfully within
    /// [`crate::VerifierBuilder::revocation_feed_max_staleness`] (or, never read, not since
    /// the verifier started): whether the token is revoked is unknown, so it is refused.
    #[error("the revocation feed has not been read successfully within the allowed staleness")]
    RevocationFeedStale,
    /// A request to the issuer failed before an answer arrived (connection, timeout, TLS,
    /// a refused redirect).
    #[error("request to {url} failed: {reason}")]
    Fetch {
        /// The URL requested.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The issuer answered with an unexpected HTTP status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The answer was larger than the configured limit.
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The answer is not a valid document of the expected kind.
    #[error("{url} sent an invalid document: {reason}")]
    InvalidDocument {
        /// The URL requested.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The discovery document names another issuer than the one configured
    /// (RFC 8414 §3.3, OpenID Connect Discovery §4.3).
    #[error("discovery document names issuer `{found}`, not `{expected}`")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The document's issuer (truncated).
        found: String,
    },
    /// A URL was not fetched: plain `http` to a host other than loopback, or a `jwks_uri`
    /// on another origin than the issuer without explicit permission.
    #[error("refused to fetch {url}: {reason}")]
    UrlRefused {
        /// The refused URL.
        url: String,
        /// Why.
        reason: &'static str,
    },
}

impl Error {
    /// True when the error is about the request's token or its permissions (a 400 for a
    /// malformed `Authorization` header, else a 401 or 403),
    /// false for configuration mistakes and for failures of the issuer's documents.
    #[must_use]
    pub fn is_token_rejection(&self) -> bool {
        matches!(
            self,
            Self::MissingToken
                | Self::MalformedAuthorization { .. }
                | Self::Token(_)
                | Self::Revoked { .. }
                | Self::MissingRole { .. }
                | Self::MissingScope { .. }
        )
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::Config {
            reason: reason.into(),
        }
    }
}

/// Cuts text from a remote document before it goes into an error.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}
