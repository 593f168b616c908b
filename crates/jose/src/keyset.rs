//! A set of verifying keys, selected by `kid` (RFC 7515 §4.1.4).

use crate::error::{Error, Result, truncate};
use crate::header::Header;
use crate::jwk::{Jwk, JwkSet};
use crate::key::VerifyingKey;

/// Keys of a JWK Set that could not be used, with the reason: `(kid, error)`.
pub type SkippedKeys = Vec<(Option<String>, Error)>;

/// Verifying keys looked up by `kid`, then checked against the token's algorithm.
///
/// A set never mixes shared secrets with public keys (the precondition of key-confusion
/// attacks) and never holds two keys with one `kid` (which key would win is ambiguous).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Builds a set from keys.
    ///
    /// # Errors
    /// [`Error::InvalidKeySet`] for duplicate `kid`s, for secret and public keys mixed, or for
    /// several keys when one of them has no `kid`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Result<Self> {
        let keys: Vec<VerifyingKey> = keys.into_iter().collect();
        for (i, k) in keys.iter().enumerate() {
            if keys.len() > 1 && k.kid().is_none() {
                return Err(Error::InvalidKeySet {
                    reason: "with more than one key, every key needs a kid".into(),
                });
            }
            if keys
                .iter()
                .skip(i + 1)
                .any(|o| o.kid().is_some() && o.kid() == k.kid())
            {
                return Err(Error::InvalidKeySet {
                    reason: format!(
                        "kid `{}` appears twice",
                        truncate(k.kid().unwrap_or_default(), 64)
                    ),
                });
            }
        }
        if keys.iter().any(VerifyingKey::is_symmetric) && keys.iter().any(|k| !k.is_symmetric()) {
            return Err(Error::InvalidKeySet {
                reason: "shared secrets and public keys must not share a key set".into(),
            });
        }
        Ok(Self { keys })
    }

    /// Builds a set from a JWK Set, strictly: every key must be usable for signature
    /// verification, except keys meant for encryption, which are skipped: those marked
    /// `use: enc`, and those without `use` whose `key_ops` or `alg` say encryption (JWE
    /// operations, a JWE algorithm) while nothing says signature (RFC 7517 §4.2–4.4). A key
    /// whose members disagree (say `use: sig` with `alg: A256GCM`) is an error.
    ///
    /// # Errors
    /// The first key's error, or the set errors of [`KeySet::new`].
    pub fn from_jwks(jwks: &JwkSet) -> Result<Self> {
        let keys = jwks
            .keys
            .iter()
            .filter(|k| !meant_for_encryption(k))
            .map(|k| VerifyingKey::from_jwk(k, None))
            .collect::<Result<Vec<_>>>()?;
        Self::new(keys)
    }

    /// Builds a set from a JWK Set, skipping keys that cannot be used (unknown types,
    /// encryption keys, weak or malformed keys) and reporting why each was skipped. For
    /// consuming third-party JWKS, where one odd key must not take down the others.
    ///
    /// # Errors
    /// The set errors of [`KeySet::new`] (duplicates, mixed secret and public keys).
    pub fn from_jwks_lenient(jwks: &JwkSet) -> Result<(Self, SkippedKeys)> {
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for jwk in &jwks.keys {
            match VerifyingKey::from_jwk(jwk, None) {
                Ok(k) => keys.push(k),
                Err(e) => skipped.push((jwk.kid.clone(), e)),
            }
        }
        Ok((Self::new(keys)?, skipped))
    }

    /// Selects the key for a (not yet verified) header: by `kid`, then the algorithm must
    /// be the key's. A token without `kid` is accepted only by a one-key set.
    ///
    /// # Errors
    /// [`Error::UnknownKid`] or [`Error::AlgorithmMismatch`].
    pub fn select(&self, header: &Header) -> Result<&VerifyingKey> {
        let key = match header.kid() {
            Some(kid) => self.keys.iter().find(|k| k.kid() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or_else(|| Error::UnknownKid {
            kid: header.kid().map(|k| truncate(k, 64)),
        })?;
        if key.algorithm() != header.algorithm() {
            return Err(Error::AlgorithmMismatch {
                expected: key.algorithm(),
                found: header.algorithm(),
            });
        }
        Ok(key)
    }

    /// The key with this `kid`.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| k.kid() == Some(kid))
    }

    /// The keys, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter()
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if the set has no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public JWK Set for publishing; HMAC keys are never included.
    #[must_use]
    pub fn to_public_jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.iter().filter_map(|k| k.to_jwk().ok()).collect(),
        }
    }
}

/// Key operations of encryption and key agreement (RFC 7517 §4.3).
const ENCRYPTION_OPS: [&str; 6] = [
    "encrypt",
    "decrypt",
    "wrapKey",
    "unwrapKey",
    "deriveKey",
    "deriveBits",
];

/// JWE algorithms: key management (RFC 7518 §4.1, plus RSA-OAEP-384/512 from the IANA JOSE
/// registry) and content encryption (§5.1).
const ENCRYPTION_ALGS: [&str; 25] = [
    "RSA1_5",
    "RSA-OAEP",
    "RSA-OAEP-256",
    "RSA-OAEP-384",
    "RSA-OAEP-512",
    "A128KW",
    "A192KW",
    "A256KW",
    "dir",
    "ECDH-ES",
    "ECDH-ES+A128KW",
    "ECDH-ES+A192KW",
    "ECDH-ES+A256KW",
    "A128GCMKW",
    "A192GCMKW",
    "A256GCMKW",
    "PBES2-HS256+A128KW",
    "PBES2-HS384+A192KW",
    "PBES2-HS512+A256KW",
    "A128CBC-HS256",
    "A192CBC-HS384",
    "A256CBC-HS512",
    "A128GCM",
    "A192GCM",
    "A256GCM",
];

/// True for a JWK meant for encryption rather than signatures: `use: enc`, or no `use` and
/// `key_ops`/`alg` that name encryption only (every one present, at least one present).
fn meant_for_encryption(jwk: &Jwk) -> bool {
    match jwk.key_use.as_deref() {
        Some(u) => u == "enc",
        None => {
            let ops = jwk.key_ops.as_ref().map(|ops| {
                !ops.is_empty() && ops.iter().all(|o| ENCRYPTION_OPS.contains(&o.as_str()))
            });
            let alg = jwk.alg.as_deref().map(|a| ENCRYPTION_ALGS.contains(&a));
            match (ops, alg) {
                (None, None) => false,
                (Some(x), None) | (None, Some(x)) => x,
                (Some(x), Some(y)) => x && y,
            }
        }
    }
}
