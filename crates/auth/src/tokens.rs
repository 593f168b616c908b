//! Token contents (RFC 9068 access tokens) and opaque refresh tokens.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tessera_jose::{base64url, crypto};

use crate::error::{AuthError, Result};

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Custom (non-registered) claims Tessera puts in access tokens.
///
/// Registered claims (`iss`, `sub`, `aud`, `exp`, `iat`, `jti`) are carried by
/// [`tessera_jose::RegisteredClaims`]. Nothing secret ever goes in here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims<'a> {
    /// The client the token was issued to (RFC 9068 §2.2, RFC 8693 §4.3).
    #[serde(borrow)]
    pub client_id: Cow<'a, str>,
    /// Granted scope, space separated (RFC 9068 §2.2.3).
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    pub scope: Cow<'a, str>,
    /// The username (OpenID Connect Core §5.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<Cow<'a, str>>,
    /// All roles (RFC 9068 §2.2.3.1 / RFC 7643 §4.1.2).
    #[serde(default)]
    pub roles: Vec<Cow<'a, str>>,
    /// The primary role, as the tutorial's `get_current_user` reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Cow<'a, str>>,
    /// Session id (refresh-token family), for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Cow<'a, str>>,
    /// User id, when `sub` carries the username (tutorial profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<Cow<'a, str>>,
    /// Authentication methods (RFC 8176).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<Cow<'a, str>>,
    /// When the user authenticated (OpenID Connect Core §2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// Length of an encoded refresh token: 32 random bytes in unpadded base64url.
pub const REFRESH_TOKEN_LEN: usize = 43;

/// A fresh opaque refresh token: 256 bits from the CSPRNG (RFC 9700 §4.14).
///
/// # Errors
/// [`AuthError::Internal`] if the RNG fails.
pub fn new_refresh_token() -> Result<String> {
    let bytes = crypto::random_array::<32>().map_err(AuthError::internal)?;
    Ok(base64url::encode(bytes))
}

/// True if `token` has the shape of one of our refresh tokens (checked before any lookup).
#[must_use]
pub fn looks_like_refresh_token(token: &str) -> bool {
    token.len() == REFRESH_TOKEN_LEN && base64url::decode(token).is_some_and(|b| b.len() == 32)
}

/// What is stored for a refresh token: its SHA-256, never the token.
#[must_use]
pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    crypto::sha256(token.as_bytes())
}

/// The successor of a refresh token, derived with a server secret so that every instance,
/// every concurrent request and every retry within the grace window computes the same one
/// without the database ever holding a usable token.
#[must_use]
pub fn successor_token(secret: &[u8; 32], parent: &str) -> String {
    let mut msg = Vec::with_capacity(32 + parent.len());
    msg.extend_from_slice(b"tessera/refresh-successor/v1\0");
    msg.extend_from_slice(parent.as_bytes());
    base64url::encode(crypto::hmac_sha256(secret, &msg))
}

/// A random token id (`jti`, RFC 7519 §4.1.7): 128 bits.
///
/// # Errors
/// [`AuthError::Internal`] if the RNG fails.
pub fn new_jti() -> Result<String> {
    Ok(base64url::encode(
        crypto::random_array::<16>().map_err(AuthError::internal)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_have_256_bits_and_a_fixed_shape() {
        let t = new_refresh_token().unwrap();
        assert_eq!(t.len(), REFRESH_TOKEN_LEN);
        assert!(looks_like_refresh_token(&t));
        assert!(!looks_like_refresh_token("short"));
        assert!(!looks_like_refresh_token(&format!("{}=", &t[..42])));
        assert_ne!(t, new_refresh_token().unwrap());
    }

    #[test]
    fn successors_are_deterministic_per_secret_and_parent() {
        let a = successor_token(&[1; 32], "parent");
        assert_eq!(a, successor_token(&[1; 32], "parent"));
        assert_ne!(a, successor_token(&[2; 32], "parent"));
        assert_ne!(a, successor_token(&[1; 32], "other"));
        assert!(looks_like_refresh_token(&a));
    }
}
