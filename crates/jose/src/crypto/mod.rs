//! Cryptography for Tessera: the one module in the workspace that names `aws-lc-rs`.
//!
//! Everything that touches a primitive goes through here, modelled on rustls' `CryptoProvider`
//! boundary: swapping or auditing the backend means reading this module and nothing else.
//!
//! The public items are the small set of primitives the rest of Tessera needs besides JWS
//! (random bytes, SHA-256, HMAC-SHA-256, constant-time comparison, AES-256-GCM for keys at
//! rest). The key wrappers used by [`crate::SigningKey`] and [`crate::VerifyingKey`] are
//! crate-private.

pub(crate) mod der;
mod roca;

use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey, VerificationAlgorithm};
use aws_lc_rs::{aead, digest, hmac, rand};
use aws_lc_rs::{encoding::AsBigEndian as _, encoding::AsDer as _, rsa};
use zeroize::Zeroizing;

use crate::algorithm::{Algorithm, KeyKind};
use crate::error::{Error, Result};
use der::{Curve, KeyOid, PssHash};

// ------------------------------------------------------------------ public facade

/// Fills `dest` with bytes from the operating system's CSPRNG.
///
/// # Errors
/// [`Error::Crypto`] if the system RNG fails, which should never happen on a healthy host.
pub fn fill_random(dest: &mut [u8]) -> Result<()> {
    rand::fill(dest).map_err(|_| Error::Crypto {
        operation: "random",
    })
}

/// Returns `N` bytes from the operating system's CSPRNG.
///
/// # Errors
/// [`Error::Crypto`] if the system RNG fails.
pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill_random(&mut out)?;
    Ok(out)
}

/// SHA-256 of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// HMAC-SHA-256 of `data` under `key` (RFC 2104). Used for peppered lookups of secrets.
#[must_use]
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Compares two byte strings in time that depends only on their lengths.
///
/// Compare fixed-length digests (not raw secrets of varying length) so the length leaks
/// nothing.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An AES-256-GCM key for sealing secrets at rest (e.g. private signing keys in a database).
///
/// Sealed output is `nonce (12 bytes) || ciphertext || tag (16 bytes)` with a fresh random
/// nonce per call. The associated data binds a ciphertext to its row (e.g. the key id), so a
/// sealed value copied into another row does not open.
pub struct SealingKey {
    key: aead::LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

impl SealingKey {
    /// Length of the key in bytes.
    pub const KEY_LEN: usize = 32;

    /// Builds a key from 32 secret bytes.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if `key` is not exactly 32 bytes.
    pub fn new(key: &[u8]) -> Result<Self> {
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, key)
            .map_err(|_| Error::invalid_key("an AES-256-GCM key must be exactly 32 bytes"))?;
        Ok(Self {
            key: aead::LessSafeKey::new(unbound),
        })
    }

    /// Encrypts and authenticates `plaintext`, binding it to `aad`.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the RNG or the cipher fails.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce_bytes = random_array::<12>()?;
        let mut out = Vec::with_capacity(12 + plaintext.len() + 16);
        out.extend_from_slice(&nonce_bytes);
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce_bytes),
                aead::Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| Error::Crypto { operation: "seal" })?;
        out.extend_from_slice(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        Ok(out)
    }

    /// Decrypts a value produced by [`SealingKey::seal`] with the same `aad`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the value is truncated, was sealed under another key, or was
    /// bound to other associated data.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (nonce, ct) = sealed
            .split_at_checked(12)
            .ok_or_else(|| Error::invalid_key("sealed value is truncated"))?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Error::invalid_key("sealed value is truncated"))?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .key
            .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
            .map_err(|_| {
                Error::invalid_key("sealed value does not open under this key (wrong master key?)")
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

// ------------------------------------------------------------------ HMAC keys

/// An HMAC secret bound to one algorithm.
pub(crate) struct HmacKey {
    key: hmac::Key,
    secret: Zeroizing<Vec<u8>>,
}

impl HmacKey {
    /// RFC 7518 §3.2: "A key of the same size as the hash output ... or larger MUST be used".
    pub(crate) fn new(alg: Algorithm, secret: &[u8]) -> Result<Self> {
        let (min, hmac_alg) = match alg {
            Algorithm::Hs256 => (32, hmac::HMAC_SHA256),
            Algorithm::Hs384 => (48, hmac::HMAC_SHA384),
            Algorithm::Hs512 => (64, hmac::HMAC_SHA512),
            other => {
                return Err(Error::KeyAlgorithmMismatch {
                    key: "an HMAC secret".into(),
                    requested: other.to_string(),
                });
            }
        };
        if secret.len() < min {
            return Err(Error::weak_key(format!(
                "{alg} needs a secret of at least {min} bytes, got {} (RFC 7518 §3.2)",
                secret.len()
            )));
        }
        Ok(Self {
            key: hmac::Key::new(hmac_alg, secret),
            secret: Zeroizing::new(secret.to_vec()),
        })
    }

    pub(crate) fn generate(alg: Algorithm) -> Result<Self> {
        let len = alg.min_hmac_key_len().ok_or(Error::KeyAlgorithmMismatch {
            key: "an HMAC secret".into(),
            requested: alg.to_string(),
        })?;
        let mut secret = Zeroizing::new(vec![0u8; len]);
        fill_random(&mut secret)?;
        Self::new(alg, &secret)
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        hmac::sign(&self.key, msg).as_ref().to_vec()
    }

    /// Constant-time tag check; a truncated tag never verifies.
    pub(crate) fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.key, msg, tag).is_ok()
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }
}

// ------------------------------------------------------------------ public keys

/// The public numbers of a key, as JWK members carry them (big-endian, no leading zeros for
/// RSA; fixed-size coordinates for EC).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PublicParts {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        alg: Algorithm,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

/// The private numbers of a key, zeroized on drop.
pub(crate) enum PrivateParts {
    /// `d, p, q, dp, dq, qi`.
    Rsa([Zeroizing<Vec<u8>>; 6]),
    Ec {
        d: Zeroizing<Vec<u8>>,
    },
    Ed25519 {
        d: Zeroizing<Vec<u8>>,
    },
}

/// A parsed public key bound to one algorithm; parsed once, verified against many times.
pub(crate) struct PublicKey {
    alg: Algorithm,
    parsed: ParsedPublicKey,
    parts: PublicParts,
}

fn verification_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
        Algorithm::Es512 => &signature::ECDSA_P521_SHA512_FIXED,
        Algorithm::EdDsa => &signature::ED25519,
        Algorithm::Hs256 | Algorithm::Hs384 | Algorithm::Hs512 => return None,
    })
}

fn rsa_params(alg: Algorithm) -> Option<&'static rsa::RsaParameters> {
    Some(match alg {
        Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn kind_mismatch(alg: Algorithm, found: &str) -> Error {
    Error::KeyAlgorithmMismatch {
        key: found.to_owned(),
        requested: alg.to_string(),
    }
}

fn curve_alg(curve: Curve) -> Option<Algorithm> {
    match curve {
        Curve::P256 => Some(Algorithm::Es256),
        Curve::P384 => Some(Algorithm::Es384),
        Curve::P521 => Some(Algorithm::Es512),
        Curve::Other => None,
    }
}

fn describe_oid(oid: KeyOid) -> String {
    match oid {
        KeyOid::Rsa => "an RSA key".into(),
        KeyOid::RsaPss(PssHash::Any) => "an RSASSA-PSS-only key (RFC 4055 §1.2)".into(),
        KeyOid::RsaPss(hash) => {
            let hash = match hash {
                PssHash::Sha256 => "SHA-256",
                PssHash::Sha384 => "SHA-384",
                PssHash::Sha512 => "SHA-512",
                PssHash::Any | PssHash::Other => {
                    return "an RSASSA-PSS-only key whose parameters fit no JWA algorithm \
                            (PS256/384/512 need one SHA-2 hash for the digest and MGF1, and a \
                            minimum salt length no longer than the hash; RFC 4055 §3.1)"
                        .into();
                }
            };
            format!("an RSASSA-PSS-only key restricted to {hash} (RFC 4055 §3.1)")
        }
        KeyOid::Ec(c) => format!("an EC key on {}", c.name()),
        KeyOid::Ed25519 => "an Ed25519 key".into(),
        KeyOid::Unknown => "a key of an unsupported type".into(),
    }
}

/// Checks that a key of type `oid` can serve `alg`.
fn check_oid(alg: Algorithm, oid: KeyOid) -> Result<()> {
    let ok = match (alg.key_kind(), oid) {
        (KeyKind::Rsa, KeyOid::Rsa) | (KeyKind::Okp, KeyOid::Ed25519) => true,
        // RFC 4055 §1.2: an `id-RSASSA-PSS` key is for RSASSA-PSS only, never PKCS#1 v1.5;
        // parameters restrict it to the one PS algorithm they fit, if any (§3.1, §3.3).
        (KeyKind::Rsa, KeyOid::RsaPss(hash)) => matches!(
            (alg, hash),
            (
                Algorithm::Ps256 | Algorithm::Ps384 | Algorithm::Ps512,
                PssHash::Any
            ) | (Algorithm::Ps256, PssHash::Sha256)
                | (Algorithm::Ps384, PssHash::Sha384)
                | (Algorithm::Ps512, PssHash::Sha512)
        ),
        (KeyKind::Ec, KeyOid::Ec(c)) => curve_alg(c) == Some(alg),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(kind_mismatch(alg, &describe_oid(oid)))
    }
}

/// RSA public-key hygiene applied to every RSA key we accept, public or private.
fn check_rsa_public(n: &[u8], e: &[u8]) -> Result<()> {
    let n = der::strip_leading_zeros(n);
    let bits = match n.first() {
        Some(&first) if first != 0 => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        _ => 0,
    };
    if bits < 2048 {
        return Err(Error::weak_key(format!(
            "RSA modulus is {bits} bits; at least 2048 are required"
        )));
    }
    if bits > 8192 {
        return Err(Error::invalid_key(format!(
            "RSA modulus is {bits} bits; at most 8192 are supported"
        )));
    }
    let e = der::strip_leading_zeros(e);
    let e_val = if e.len() <= 8 {
        e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    } else {
        u64::MAX
    };
    // e = 1 makes "signatures" trivial; even e is not a valid RSA exponent; aws-lc caps e at
    // 33 bits.
    if e_val < 3 || e_val % 2 == 0 || e_val > (1u64 << 33) {
        return Err(Error::weak_key(
            "RSA public exponent must be odd, at least 3 and at most 2^33",
        ));
    }
    if roca::is_vulnerable(n) {
        return Err(Error::weak_key(
            "RSA modulus has the ROCA fingerprint (CVE-2017-15361); regenerate the key",
        ));
    }
    Ok(())
}

impl PublicKey {
    /// Parses a SubjectPublicKeyInfo, or for RSA also a PKCS#1 RSAPublicKey.
    pub(crate) fn from_der(alg: Algorithm, der_bytes: &[u8]) -> Result<Self> {
        if alg.is_symmetric() {
            return Err(kind_mismatch(alg, "a public key"));
        }
        match der::parse_spki(der_bytes) {
            Ok((oid, key_bits)) => {
                check_oid(alg, oid)?;
                match oid {
                    KeyOid::Rsa | KeyOid::RsaPss(_) => {
                        let (n, e) = der::rsa_public_components(key_bits)?;
                        Self::from_parts(
                            alg,
                            PublicParts::Rsa {
                                n: n.to_vec(),
                                e: e.to_vec(),
                            },
                        )
                    }
                    KeyOid::Ec(_) => Self::from_ec_point(alg, key_bits),
                    KeyOid::Ed25519 => Self::from_parts(
                        alg,
                        PublicParts::Ed25519 {
                            x: key_bits.to_vec(),
                        },
                    ),
                    KeyOid::Unknown => Err(kind_mismatch(alg, "a key of an unsupported type")),
                }
            }
            Err(spki_err) if alg.key_kind() == KeyKind::Rsa => {
                let (n, e) = der::rsa_public_components(der_bytes).map_err(|_| spki_err)?;
                Self::from_parts(
                    alg,
                    PublicParts::Rsa {
                        n: n.to_vec(),
                        e: e.to_vec(),
                    },
                )
            }
            Err(e) => Err(e),
        }
    }

    /// Builds a key from an uncompressed SEC1 point (`04 || x || y`).
    fn from_ec_point(alg: Algorithm, point: &[u8]) -> Result<Self> {
        let c = alg
            .ec_coordinate_len()
            .ok_or_else(|| kind_mismatch(alg, "an EC key"))?;
        match point.split_first() {
            Some((4, xy)) if xy.len() == 2 * c => {
                let (x, y) = xy.split_at(c);
                Self::from_parts(
                    alg,
                    PublicParts::Ec {
                        alg,
                        x: x.to_vec(),
                        y: y.to_vec(),
                    },
                )
            }
            _ => Err(Error::invalid_key(
                "EC public key must be an uncompressed point of the curve's size",
            )),
        }
    }

    /// Builds a key from its public numbers; validates everything aws-lc-rs validates plus
    /// our own RSA hygiene.
    pub(crate) fn from_parts(alg: Algorithm, parts: PublicParts) -> Result<Self> {
        let valg = verification_algorithm(alg).ok_or_else(|| kind_mismatch(alg, "a public key"))?;
        let parsed = match &parts {
            PublicParts::Rsa { n, e } => {
                if alg.key_kind() != KeyKind::Rsa {
                    return Err(kind_mismatch(alg, "an RSA key"));
                }
                check_rsa_public(n, e)?;
                let params = rsa_params(alg).ok_or_else(|| kind_mismatch(alg, "an RSA key"))?;
                rsa::PublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .to_parsed_public_key(params)
                .map_err(|e| Error::invalid_key(format!("RSA public key rejected: {e}")))?
            }
            PublicParts::Ec { alg: key_alg, x, y } => {
                if *key_alg != alg {
                    return Err(kind_mismatch(alg, &format!("an EC key for {key_alg}")));
                }
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                ParsedPublicKey::new(valg, &point).map_err(|_| {
                    Error::invalid_key("EC public key is not a valid point on the curve")
                })?
            }
            PublicParts::Ed25519 { x } => {
                if alg != Algorithm::EdDsa {
                    return Err(kind_mismatch(alg, "an Ed25519 key"));
                }
                if x.len() != 32 {
                    return Err(Error::invalid_key("Ed25519 public key must be 32 bytes"));
                }
                ParsedPublicKey::new(valg, x)
                    .map_err(|_| Error::invalid_key("Ed25519 public key rejected"))?
            }
        };
        Ok(Self { alg, parsed, parts })
    }

    pub(crate) fn parts(&self) -> &PublicParts {
        &self.parts
    }

    /// Verifies a JWS signature. ECDSA signatures must be the fixed-size `R || S` form of
    /// RFC 7518 §3.4; DER or any other length is refused before the primitive sees it.
    pub(crate) fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if let Some(c) = self.alg.ec_coordinate_len()
            && sig.len() != 2 * c
        {
            return false;
        }
        self.parsed.verify_sig(msg, sig).is_ok()
    }

    /// DER SubjectPublicKeyInfo.
    pub(crate) fn to_spki_der(&self) -> Result<Vec<u8>> {
        self.parsed
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| Error::Crypto {
                operation: "encode public key",
            })
    }
}

// ------------------------------------------------------------------ private keys

/// A private key bound to one algorithm, parsed once.
pub(crate) enum PrivateKey {
    Rsa(signature::RsaKeyPair),
    Ec(signature::EcdsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
}

fn ecdsa_signing(alg: Algorithm) -> Option<&'static signature::EcdsaSigningAlgorithm> {
    match alg {
        Algorithm::Es256 => Some(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::Es384 => Some(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        Algorithm::Es512 => Some(&signature::ECDSA_P521_SHA512_FIXED_SIGNING),
        _ => None,
    }
}

fn rsa_padding(alg: Algorithm) -> Option<&'static dyn signature::RsaEncoding> {
    Some(match alg {
        Algorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
        Algorithm::Rs384 => &signature::RSA_PKCS1_SHA384,
        Algorithm::Rs512 => &signature::RSA_PKCS1_SHA512,
        Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
        Algorithm::Ps384 => &signature::RSA_PSS_SHA384,
        Algorithm::Ps512 => &signature::RSA_PSS_SHA512,
        _ => return None,
    })
}

fn rejected(what: &str) -> impl Fn(aws_lc_rs::error::KeyRejected) -> Error + '_ {
    move |e| Error::invalid_key(format!("{what} rejected: {e}"))
}

impl PrivateKey {
    /// Generates a fresh key. `rsa_bits` is used for RSA algorithms only (2048, 3072, 4096
    /// or 8192).
    pub(crate) fn generate(alg: Algorithm, rsa_bits: usize) -> Result<Self> {
        let failed = |_| Error::Crypto {
            operation: "key generation",
        };
        match alg.key_kind() {
            KeyKind::Rsa => {
                let size = match rsa_bits {
                    2048 => rsa::KeySize::Rsa2048,
                    3072 => rsa::KeySize::Rsa3072,
                    4096 => rsa::KeySize::Rsa4096,
                    8192 => rsa::KeySize::Rsa8192,
                    other => {
                        return Err(Error::invalid_key(format!(
                            "RSA key size must be 2048, 3072, 4096 or 8192 bits, not {other}"
                        )));
                    }
                };
                signature::RsaKeyPair::generate(size)
                    .map(Self::Rsa)
                    .map_err(failed)
            }
            KeyKind::Ec => {
                let sa = ecdsa_signing(alg).ok_or_else(|| kind_mismatch(alg, "an EC key"))?;
                signature::EcdsaKeyPair::generate(sa)
                    .map(Self::Ec)
                    .map_err(failed)
            }
            KeyKind::Okp => signature::Ed25519KeyPair::generate()
                .map(Self::Ed25519)
                .map_err(failed),
            KeyKind::Hmac => Err(kind_mismatch(alg, "a private key")),
        }
    }

    /// Parses PKCS#8 (v1 or v2), PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey DER.
    pub(crate) fn from_der(alg: Algorithm, der_bytes: &[u8]) -> Result<Self> {
        let pkcs8 = der::parse_pkcs8(der_bytes);
        if let Ok((oid, _)) = pkcs8 {
            check_oid(alg, oid)?;
        }
        let key = match alg.key_kind() {
            KeyKind::Rsa => {
                let kp = if pkcs8.is_ok() {
                    signature::RsaKeyPair::from_pkcs8(der_bytes)
                } else {
                    signature::RsaKeyPair::from_der(der_bytes)
                };
                Self::Rsa(kp.map_err(rejected("RSA private key"))?)
            }
            KeyKind::Ec => {
                let sa = ecdsa_signing(alg).ok_or_else(|| kind_mismatch(alg, "an EC key"))?;
                if pkcs8.is_err() {
                    let curve = der::sec1_curve(der_bytes)?;
                    if curve_alg(curve) != Some(alg) {
                        return Err(kind_mismatch(
                            alg,
                            &format!("an EC key on {}", curve.name()),
                        ));
                    }
                }
                let kp = signature::EcdsaKeyPair::from_private_key_der(sa, der_bytes);
                Self::Ec(kp.map_err(rejected("EC private key"))?)
            }
            KeyKind::Okp => {
                let kp = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der_bytes);
                Self::Ed25519(kp.map_err(rejected("Ed25519 private key"))?)
            }
            KeyKind::Hmac => return Err(kind_mismatch(alg, "a private key")),
        };
        // Run the same public-key hygiene as for public keys (RSA size, exponent, ROCA).
        key.public_key(alg)?;
        Ok(key)
    }

    /// Builds a key from JWK numbers; the public part must match the private part.
    pub(crate) fn from_parts(
        alg: Algorithm,
        public: &PublicParts,
        private: &PrivateParts,
    ) -> Result<Self> {
        let key = match (public, private) {
            (PublicParts::Rsa { n, e }, PrivateParts::Rsa([d, p, q, dp, dq, qi])) => {
                if alg.key_kind() != KeyKind::Rsa {
                    return Err(kind_mismatch(alg, "an RSA key"));
                }
                check_rsa_public(n, e)?;
                let components = rsa::KeyPairComponents {
                    public_key: rsa::PublicKeyComponents {
                        n: n.as_slice(),
                        e: e.as_slice(),
                    },
                    d: d.as_slice(),
                    p: p.as_slice(),
                    q: q.as_slice(),
                    dP: dp.as_slice(),
                    dQ: dq.as_slice(),
                    qInv: qi.as_slice(),
                };
                Self::Rsa(
                    signature::RsaKeyPair::from_components(&components)
                        .map_err(rejected("RSA private key"))?,
                )
            }
            (PublicParts::Ec { alg: key_alg, x, y }, PrivateParts::Ec { d }) => {
                if *key_alg != alg {
                    return Err(kind_mismatch(alg, &format!("an EC key for {key_alg}")));
                }
                let sa = ecdsa_signing(alg).ok_or_else(|| kind_mismatch(alg, "an EC key"))?;
                let c = alg.ec_coordinate_len().unwrap_or_default();
                if d.len() != c {
                    return Err(Error::invalid_key(format!(
                        "EC private key `d` must be {c} bytes for {alg} (RFC 7518 §6.2.2.1)"
                    )));
                }
                let mut point = Vec::with_capacity(1 + 2 * c);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                Self::Ec(
                    signature::EcdsaKeyPair::from_private_key_and_public_key(sa, d, &point)
                        .map_err(rejected("EC private key"))?,
                )
            }
            (PublicParts::Ed25519 { x }, PrivateParts::Ed25519 { d }) => {
                if alg != Algorithm::EdDsa {
                    return Err(kind_mismatch(alg, "an Ed25519 key"));
                }
                Self::Ed25519(
                    signature::Ed25519KeyPair::from_seed_and_public_key(d, x)
                        .map_err(rejected("Ed25519 private key"))?,
                )
            }
            _ => {
                return Err(Error::invalid_key(
                    "private and public members are of different key types",
                ));
            }
        };
        Ok(key)
    }

    /// The public half, bound to `alg`.
    pub(crate) fn public_key(&self, alg: Algorithm) -> Result<PublicKey> {
        match self {
            Self::Rsa(kp) => {
                let (n, e) = der::rsa_public_components(kp.public_key().as_ref())?;
                PublicKey::from_parts(
                    alg,
                    PublicParts::Rsa {
                        n: n.to_vec(),
                        e: e.to_vec(),
                    },
                )
            }
            Self::Ec(kp) => PublicKey::from_ec_point(alg, kp.public_key().as_ref()),
            Self::Ed25519(kp) => PublicKey::from_parts(
                alg,
                PublicParts::Ed25519 {
                    x: kp.public_key().as_ref().to_vec(),
                },
            ),
        }
    }

    pub(crate) fn sign(&self, alg: Algorithm, msg: &[u8]) -> Result<Vec<u8>> {
        let failed = |_| Error::Crypto { operation: "sign" };
        match self {
            Self::Rsa(kp) => {
                let padding = rsa_padding(alg).ok_or_else(|| kind_mismatch(alg, "an RSA key"))?;
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(padding, &rand::SystemRandom::new(), msg, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            Self::Ec(kp) => kp
                .sign(&rand::SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(failed),
            Self::Ed25519(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
        }
    }

    /// PKCS#8 v1 DER of the private key, for storage (seal it before it leaves memory).
    pub(crate) fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let failed = |_| Error::Crypto {
            operation: "encode private key",
        };
        Ok(Zeroizing::new(match self {
            Self::Rsa(kp) => {
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = kp.as_der().map_err(failed)?;
                der.as_ref().to_vec()
            }
            Self::Ec(kp) => kp.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
            Self::Ed25519(kp) => kp.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
        }))
    }

    /// The private JWK numbers.
    pub(crate) fn private_parts(&self) -> Result<PrivateParts> {
        let failed = |_| Error::Crypto {
            operation: "export private key",
        };
        match self {
            Self::Rsa(_) => {
                let pkcs8 = self.to_pkcs8_der()?;
                let (_, rsa_der) = der::parse_pkcs8(&pkcs8)?;
                let [_, _, d, p, q, dp, dq, qi] = der::rsa_private_components(rsa_der)?;
                let z = |v: &[u8]| Zeroizing::new(v.to_vec());
                Ok(PrivateParts::Rsa([z(d), z(p), z(q), z(dp), z(dq), z(qi)]))
            }
            Self::Ec(kp) => {
                let bin: aws_lc_rs::encoding::EcPrivateKeyBin<'static> =
                    kp.private_key().as_be_bytes().map_err(failed)?;
                Ok(PrivateParts::Ec {
                    d: Zeroizing::new(bin.as_ref().to_vec()),
                })
            }
            Self::Ed25519(kp) => {
                let seed: aws_lc_rs::encoding::Curve25519SeedBin<'static> =
                    kp.seed().map_err(failed)?.as_be_bytes().map_err(failed)?;
                Ok(PrivateParts::Ed25519 {
                    d: Zeroizing::new(seed.as_ref().to_vec()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_aad() {
        let k = SealingKey::new(&[7u8; 32]).unwrap();
        let sealed = k.seal(b"kid-1", b"secret").unwrap();
        assert_eq!(&*k.open(b"kid-1", &sealed).unwrap(), b"secret");
        assert!(k.open(b"kid-2", &sealed).is_err());
        assert!(
            SealingKey::new(&[8u8; 32])
                .unwrap()
                .open(b"kid-1", &sealed)
                .is_err()
        );
        assert!(k.open(b"kid-1", &sealed[..10]).is_err());
        assert!(SealingKey::new(&[0u8; 16]).is_err());
    }

    #[test]
    fn hmac_secrets_shorter_than_the_hash_are_refused() {
        assert!(matches!(
            HmacKey::new(Algorithm::Hs256, &[1; 31]),
            Err(Error::WeakKey { .. })
        ));
        assert!(HmacKey::new(Algorithm::Hs256, &[1; 32]).is_ok());
        assert!(matches!(
            HmacKey::new(Algorithm::Hs512, &[1; 63]),
            Err(Error::WeakKey { .. })
        ));
    }

    #[test]
    fn constant_time_eq_compares_lengths_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn rsa_hygiene_rejects_small_moduli_and_bad_exponents() {
        let mut n = vec![0xc5u8; 256];
        n[255] = 0x01;
        assert!(check_rsa_public(&n, &[1, 0, 1]).is_ok());
        assert!(matches!(
            check_rsa_public(&n[..128], &[1, 0, 1]),
            Err(Error::WeakKey { .. })
        ));
        assert!(check_rsa_public(&n, &[1]).is_err());
        assert!(check_rsa_public(&n, &[4]).is_err());
    }
}
