//! JWS algorithms (RFC 7518 §3, RFC 8037 §3.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, truncate};

/// A JWS signature algorithm this crate implements.
///
/// There is deliberately no `None` variant: an unsecured JWS (RFC 7515 App. A.5) cannot be
/// produced or accepted through this type, and parsing the name `none` (in any spelling) is an
/// error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// HMAC with SHA-256 (RFC 7518 §3.2).
    Hs256,
    /// HMAC with SHA-384 (RFC 7518 §3.2).
    Hs384,
    /// HMAC with SHA-512 (RFC 7518 §3.2).
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (RFC 7518 §3.3).
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512 (RFC 7518 §3.3).
    Rs512,
    /// RSASSA-PSS with SHA-256, MGF1 SHA-256, 32-byte salt (RFC 7518 §3.5).
    Ps256,
    /// RSASSA-PSS with SHA-384, MGF1 SHA-384, 48-byte salt (RFC 7518 §3.5).
    Ps384,
    /// RSASSA-PSS with SHA-512, MGF1 SHA-512, 64-byte salt (RFC 7518 §3.5).
    Ps512,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4).
    Es256,
    /// ECDSA on P-384 with SHA-384 (RFC 7518 §3.4).
    Es384,
    /// ECDSA on P-521 with SHA-512 (RFC 7518 §3.4).
    Es512,
    /// EdDSA with Ed25519 (RFC 8037 §3.1).
    EdDsa,
}

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A shared secret (`kty: oct`).
    Hmac,
    /// An RSA key pair (`kty: RSA`).
    Rsa,
    /// An elliptic-curve key pair on a NIST curve (`kty: EC`).
    Ec,
    /// An octet key pair (`kty: OKP`, RFC 8037).
    Okp,
}

impl Algorithm {
    /// Every supported algorithm, in registry order.
    pub const ALL: [Self; 13] = [
        Self::Hs256,
        Self::Hs384,
        Self::Hs512,
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::Es512,
        Self::EdDsa,
    ];

    /// The registered JWA name (`"HS256"`, `"EdDSA"`...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The kind of key this algorithm signs with.
    #[must_use]
    pub const fn key_kind(self) -> KeyKind {
        match self {
            Self::Hs256 | Self::Hs384 | Self::Hs512 => KeyKind::Hmac,
            Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512 => {
                KeyKind::Rsa
            }
            Self::Es256 | Self::Es384 | Self::Es512 => KeyKind::Ec,
            Self::EdDsa => KeyKind::Okp,
        }
    }

    /// True for the HMAC algorithms, whose key is a shared secret.
    #[must_use]
    pub const fn is_symmetric(self) -> bool {
        matches!(self.key_kind(), KeyKind::Hmac)
    }

    /// The JWK curve name for EC and OKP algorithms (`"P-256"`, `"Ed25519"`...).
    #[must_use]
    pub const fn curve(self) -> Option<&'static str> {
        match self {
            Self::Es256 => Some("P-256"),
            Self::Es384 => Some("P-384"),
            Self::Es512 => Some("P-521"),
            Self::EdDsa => Some("Ed25519"),
            _ => None,
        }
    }

    /// The size in bytes of one coordinate (and of the private scalar) for EC algorithms,
    /// which is also half the fixed-size signature (RFC 7518 §3.4).
    #[must_use]
    pub(crate) const fn ec_coordinate_len(self) -> Option<usize> {
        match self {
            Self::Es256 => Some(32),
            Self::Es384 => Some(48),
            Self::Es512 => Some(66),
            _ => None,
        }
    }

    /// The minimum HMAC key length in bytes: the hash output size (RFC 7518 §3.2).
    #[must_use]
    pub const fn min_hmac_key_len(self) -> Option<usize> {
        match self {
            Self::Hs256 => Some(32),
            Self::Hs384 => Some(48),
            Self::Hs512 => Some(64),
            _ => None,
        }
    }

    /// The EC or OKP algorithm for a curve name, where the curve fixes the algorithm.
    #[must_use]
    pub fn for_curve(crv: &str) -> Option<Self> {
        match crv {
            "P-256" => Some(Self::Es256),
            "P-384" => Some(Self::Es384),
            "P-521" => Some(Self::Es512),
            "Ed25519" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Parses a JWA name exactly (names are case-sensitive, RFC 7515 §4.1.1).
    ///
    /// # Errors
    /// [`Error::UnsupportedAlgorithm`] for anything else, including every spelling of `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Error::UnsupportedAlgorithm {
                alg: truncate(s, 32),
            })
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
        }
    }

    #[test]
    fn none_is_not_an_algorithm_in_any_spelling() {
        for s in ["none", "None", "NONE", "nOnE", " none", "none ", ""] {
            assert!(matches!(
                s.parse::<Algorithm>(),
                Err(Error::UnsupportedAlgorithm { .. })
            ));
        }
    }

    #[test]
    fn names_are_case_sensitive() {
        assert!("hs256".parse::<Algorithm>().is_err());
        assert!("EDDSA".parse::<Algorithm>().is_err());
    }
}
