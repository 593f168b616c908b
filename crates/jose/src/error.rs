//! The one error type of this crate.

use std::fmt;

use crate::Algorithm;

/// Why a token, key or operation was refused.
///
/// Variants fall in two groups, kept apart on purpose (see the crate docs):
///
/// * **untrusted input** — a token or a JWK that came from outside failed a check. These explain
///   precisely what failed (which claim, by how many seconds) so a caller can log it; a server
///   should still answer every one of them with the same opaque `invalid_token`.
/// * **caller mistakes** — a key, configuration or API use that can never work (an HMAC secret
///   that is too short, a PEM of the wrong type). Fix the code or the configuration.
///
/// Display texts are lowercase, end without a period and never contain key material.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // ---------------------------------------------------------------- token structure
    /// The compact token is longer than the configured cap (checked before anything else).
    #[error("token is {len} bytes, over the {max}-byte limit")]
    TokenTooLarge {
        /// Length of the presented token.
        len: usize,
        /// The configured cap.
        max: usize,
    },
    /// The compact token does not have exactly three dot-separated segments (RFC 7515 §7.1).
    ///
    /// `found` stops counting at 4: "four or more" is all that matters.
    #[error("token has {found} segments where a compact JWS has exactly 3")]
    SegmentCount {
        /// Number of segments found (saturating at 4).
        found: usize,
    },
    /// The protected header segment is longer than the configured cap.
    #[error("token header is {len} bytes, over the {max}-byte limit")]
    HeaderTooLarge {
        /// Length of the encoded header segment.
        len: usize,
        /// The configured cap.
        max: usize,
    },
    /// A segment is not strict unpadded base64url with canonical trailing bits
    /// (RFC 7515 §2 and §3.1).
    #[error("token {segment} is not valid unpadded base64url")]
    Base64 {
        /// Which segment failed.
        segment: Segment,
    },
    /// The protected header is not a JSON object of the expected shape.
    #[error("token header is malformed: {reason}")]
    MalformedHeader {
        /// What was wrong.
        reason: String,
    },
    /// A JSON object (header, claims or JWK) names the same member twice.
    ///
    /// RFC 7515 §5.2 and RFC 7519 §4 allow rejecting these; parsers disagree on which copy
    /// wins, which makes duplicates a smuggling vector, so they are always refused.
    #[error("{part} contains the member `{name}` twice")]
    DuplicateMember {
        /// Where the duplicate was found.
        part: Part,
        /// The duplicated member name.
        name: String,
    },
    /// The header names an algorithm this crate does not implement; `none` always lands here.
    #[error("algorithm `{alg}` is not supported")]
    UnsupportedAlgorithm {
        /// The algorithm name as found (possibly truncated).
        alg: String,
    },
    /// The header lists a critical extension this crate does not understand
    /// (RFC 7515 §4.1.11), or `crit` itself is malformed.
    #[error("header marks `{name}` as critical, which is not understood")]
    UnknownCritical {
        /// The unknown extension name.
        name: String,
    },
    /// The header's `alg` differs from the algorithm the verifying key is bound to.
    #[error("token algorithm {found} does not match the key's {expected}")]
    AlgorithmMismatch {
        /// The key's algorithm.
        expected: Algorithm,
        /// The header's algorithm.
        found: Algorithm,
    },
    /// No key in the key set has the token's `kid` (or the token has none and the set cannot
    /// choose a key without one).
    #[error("no verification key for kid {}", display_kid(.kid))]
    UnknownKid {
        /// The token's `kid`, if it had one.
        kid: Option<String>,
    },
    /// The signature does not verify under the selected key.
    #[error("signature is invalid")]
    InvalidSignature,

    // ---------------------------------------------------------------- claims
    /// The payload is not a JSON object (RFC 7519 §7.2 step 10).
    #[error("token claims are malformed: {reason}")]
    MalformedClaims {
        /// What was wrong.
        reason: String,
    },
    /// A registered claim has the wrong JSON type (e.g. a string `exp`).
    #[error("claim `{claim}` must be {expected}")]
    InvalidClaimType {
        /// The claim name.
        claim: &'static str,
        /// The expected JSON type.
        expected: &'static str,
    },
    /// A claim required by the validation rules is absent.
    #[error("required claim `{claim}` is missing")]
    MissingClaim {
        /// The missing claim.
        claim: &'static str,
    },
    /// `exp` is in the past, beyond the leeway (RFC 7519 §4.1.4).
    // Saturating, here and below: `now` comes from the caller and the claim from the token,
    // and formatting an error must never overflow (found by the `properties` tests).
    #[error(
        "token expired {}s ago (exp {exp}, now {now}, leeway {leeway}s)",
        now.saturating_sub(*exp)
    )]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The time used for validation.
        now: i64,
        /// The leeway that was allowed.
        leeway: u64,
    },
    /// `nbf` is in the future, beyond the leeway (RFC 7519 §4.1.5).
    #[error(
        "token is not valid for another {}s (nbf {nbf}, now {now}, leeway {leeway}s)",
        nbf.saturating_sub(*now)
    )]
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
        /// The time used for validation.
        now: i64,
        /// The leeway that was allowed.
        leeway: u64,
    },
    /// `iat` is in the future, beyond the leeway: a clock problem or a forged token.
    #[error(
        "token was issued {}s in the future (iat {iat}, now {now}, leeway {leeway}s)",
        iat.saturating_sub(*now)
    )]
    IssuedInFuture {
        /// The token's `iat`.
        iat: i64,
        /// The time used for validation.
        now: i64,
        /// The leeway that was allowed.
        leeway: u64,
    },
    /// `iss` differs from the configured issuer (RFC 7519 §4.1.1).
    #[error("issuer `{found}` is not the expected `{expected}`")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The token's issuer (truncated to 128 bytes).
        found: String,
    },
    /// None of the token's audiences is accepted (RFC 7519 §4.1.3).
    #[error("audience {found:?} does not include any of {expected:?}")]
    AudienceMismatch {
        /// The accepted audiences.
        expected: Vec<String>,
        /// The token's audiences (at most 8, each truncated).
        found: Vec<String>,
    },
    /// The header `typ` is not the required media type (RFC 8725 §3.11, RFC 9068 §4).
    #[error("token type {} is not the required `{expected}`", display_kid(.found))]
    TypeMismatch {
        /// The required `typ`.
        expected: String,
        /// The header's `typ`, if any.
        found: Option<String>,
    },

    // ---------------------------------------------------------------- keys (input or caller)
    /// Key material could not be parsed or is inconsistent.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What was wrong.
        reason: String,
    },
    /// The key is well-formed but too weak to use: a short HMAC secret (RFC 7518 §3.2), an RSA
    /// modulus under 2048 bits, a bad public exponent, or a ROCA-affected modulus.
    #[error("weak key refused: {reason}")]
    WeakKey {
        /// Why the key is considered weak.
        reason: String,
    },
    /// The key's declared purpose (`use`, `key_ops`, or its kind) does not permit this
    /// operation (RFC 7517 §4.2, §4.3).
    #[error("key may not be used for this: {reason}")]
    KeyUsage {
        /// Why the key may not be used.
        reason: String,
    },
    /// Two algorithms that must agree do not: a JWK's `alg` versus the one requested, or an
    /// algorithm versus the key type or curve.
    #[error("key is bound to {key} but {requested} was requested")]
    KeyAlgorithmMismatch {
        /// What the key is bound to or can do.
        key: String,
        /// What was requested.
        requested: String,
    },
    /// A key set contains an unacceptable combination of keys (duplicate `kid`s, or secret
    /// and public keys mixed, which invites key confusion).
    #[error("key set refused: {reason}")]
    InvalidKeySet {
        /// What was wrong.
        reason: String,
    },
    /// Claims to be signed could not be serialized, or would produce a token this crate
    /// would itself refuse (e.g. a custom claim shadowing a registered one).
    #[error("cannot encode token: {reason}")]
    Encode {
        /// What was wrong.
        reason: String,
    },
    /// The underlying primitive failed unexpectedly (e.g. the system RNG).
    #[error("cryptographic operation failed: {operation}")]
    Crypto {
        /// Which operation failed.
        operation: &'static str,
    },
}

impl Error {
    /// True when the error is about untrusted input (a token or a presented key), false when
    /// it points at a caller mistake or an internal failure.
    #[must_use]
    pub fn is_untrusted_input(&self) -> bool {
        !matches!(
            self,
            Self::Encode { .. } | Self::Crypto { .. } | Self::InvalidKeySet { .. }
        )
    }

    pub(crate) fn invalid_key(reason: impl Into<String>) -> Self {
        Self::InvalidKey {
            reason: reason.into(),
        }
    }

    pub(crate) fn weak_key(reason: impl Into<String>) -> Self {
        Self::WeakKey {
            reason: reason.into(),
        }
    }

    pub(crate) fn key_usage(reason: impl Into<String>) -> Self {
        Self::KeyUsage {
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A segment of a compact JWS.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The protected header (first segment).
    Header,
    /// The payload (second segment).
    Payload,
    /// The signature (third segment).
    Signature,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "header",
            Self::Payload => "payload",
            Self::Signature => "signature",
        })
    }
}

/// A JSON document this crate parses.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The JOSE header.
    Header,
    /// The JWT claims set.
    Claims,
    /// A JSON Web Key.
    Jwk,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "token header",
            Self::Claims => "token claims",
            Self::Jwk => "JWK",
        })
    }
}

fn display_kid(kid: &Option<String>) -> String {
    match kid {
        Some(k) => format!("`{k}`"),
        None => "(none)".to_owned(),
    }
}

/// Truncates attacker-controlled text before it is stored in an error, so a hostile token
/// cannot make logs huge. Cuts on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_message_says_by_how_much() {
        let e = Error::Expired {
            exp: 100,
            now: 190,
            leeway: 30,
        };
        assert_eq!(
            e.to_string(),
            "token expired 90s ago (exp 100, now 190, leeway 30s)"
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 8), "abc");
    }
}
