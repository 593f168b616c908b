//! Signing and verifying keys, each bound to exactly one algorithm.

use std::fmt;
use std::sync::{Arc, OnceLock};

use zeroize::Zeroizing;

use crate::algorithm::{Algorithm, KeyKind};
use crate::crypto::{HmacKey, PrivateKey, PublicKey};
use crate::error::{Error, Result};
use crate::jwk::{Jwk, Operation};
use crate::pem;

/// The verification half shared by a signing key and its verifying key.
pub(crate) enum Verifier {
    Hmac(Box<HmacKey>),
    Public(PublicKey),
}

/// A key that verifies signatures of exactly one algorithm.
///
/// The algorithm is fixed when the key is built and a token's header can never change it:
/// a token whose `alg` differs is refused before any cryptography runs. The key material is
/// parsed once, here; verifying does no key parsing. Cloning is cheap (reference counted).
///
/// ```
/// use tessera_jose::{Algorithm, SigningKey};
///
/// let signer = SigningKey::generate(Algorithm::Es256)?;
/// let verifier = signer.verifying_key();
/// assert_eq!(verifier.algorithm(), Algorithm::Es256);
/// assert_eq!(verifier.kid(), signer.kid());
/// # Ok::<(), tessera_jose::Error>(())
/// ```
#[derive(Clone)]
pub struct VerifyingKey {
    alg: Algorithm,
    kid: Option<Arc<str>>,
    inner: Arc<Verifier>,
}

/// A key that signs with exactly one algorithm.
///
/// # Security
/// `Debug` shows the algorithm and `kid`, never key material. Secret bytes live in buffers
/// that are zeroized on drop (HMAC) or inside aws-lc, which cleanses them (asymmetric keys).
#[derive(Clone)]
pub struct SigningKey {
    alg: Algorithm,
    kid: Option<Arc<str>>,
    private: Option<Arc<PrivateKey>>,
    verifier: Arc<Verifier>,
    /// The encoded protected headers this key has produced, made on first use (they depend
    /// only on `alg`, `kid` and the `typ`/`cty` arguments). Replaced whenever `kid` changes.
    pub(crate) headers: Arc<HeaderCache>,
}

/// Base64url-encoded headers for the common `typ` values (no `cty`): none, `JWT` and
/// `at+jwt`.
#[derive(Default)]
pub(crate) struct HeaderCache {
    slots: [OnceLock<String>; 3],
}

impl HeaderCache {
    /// The slot for this `typ`/`cty`, if it is a cached combination.
    pub(crate) fn slot(&self, typ: Option<&str>, cty: Option<&str>) -> Option<&OnceLock<String>> {
        let index = match (typ, cty) {
            (None, None) => 0,
            (Some("JWT"), None) => 1,
            (Some("at+jwt"), None) => 2,
            _ => return None,
        };
        self.slots.get(index)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn require_asymmetric(alg: Algorithm, what: &str) -> Result<()> {
    if alg.is_symmetric() {
        Err(Error::KeyAlgorithmMismatch {
            key: what.to_owned(),
            requested: alg.to_string(),
        })
    } else {
        Ok(())
    }
}

impl VerifyingKey {
    /// An HMAC verifying key from a shared secret.
    ///
    /// # Errors
    /// [`Error::WeakKey`] if the secret is shorter than the hash output (RFC 7518 §3.2);
    /// [`Error::KeyAlgorithmMismatch`] if `alg` is not an HMAC algorithm.
    pub fn from_hmac_secret(alg: Algorithm, secret: &[u8]) -> Result<Self> {
        Ok(Self::new(
            alg,
            None,
            Verifier::Hmac(Box::new(HmacKey::new(alg, secret)?)),
        ))
    }

    /// A verifying key from PEM text: `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY` (PKCS#1), or any
    /// private key PEM that [`SigningKey::from_pem`] accepts (its public half is used).
    ///
    /// The `kid` defaults to the RFC 7638 thumbprint.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] or [`Error::KeyAlgorithmMismatch`] when the PEM is not a key
    /// of the kind `alg` needs; [`Error::WeakKey`] for RSA keys under 2048 bits.
    pub fn from_pem(alg: Algorithm, pem_text: &str) -> Result<Self> {
        require_asymmetric(alg, "a PEM key (HMAC keys are raw secrets)")?;
        let block = pem::parse_key_block(pem_text)?;
        match block.label.as_str() {
            "PUBLIC KEY" | "RSA PUBLIC KEY" => Self::from_public_der(alg, &block.der),
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                Ok(SigningKey::from_der(alg, &block.der)?.verifying_key())
            }
            other => Err(unsupported_pem(other)),
        }
    }

    /// A verifying key from DER: SubjectPublicKeyInfo, or PKCS#1 RSAPublicKey for RSA.
    ///
    /// An `id-RSASSA-PSS` SubjectPublicKeyInfo is a key for RSASSA-PSS only (RFC 4055 §1.2):
    /// without parameters it serves PS256/384/512; with them, only the PS algorithm they fit
    /// (its hash for both the digest and MGF1, a minimum salt length no longer than the hash,
    /// RFC 4055 §3.1, §3.3), if any. (`openssl genpkey -algorithm RSA-PSS` needs
    /// `-pkeyopt rsa_pss_keygen_mgf1_md:sha256` as well as `rsa_pss_keygen_md:sha256` for a
    /// PS256 key: MGF1 otherwise stays SHA-1.)
    ///
    /// # Errors
    /// As [`VerifyingKey::from_pem`].
    pub fn from_public_der(alg: Algorithm, der: &[u8]) -> Result<Self> {
        require_asymmetric(alg, "a public key")?;
        let key = Self::new(alg, None, Verifier::Public(PublicKey::from_der(alg, der)?));
        key.with_thumbprint_kid()
    }

    /// A verifying key from a JWK (public, private or `oct`).
    ///
    /// The algorithm is the JWK's `alg`; `alg` here is used only when the JWK has none (or
    /// for EC/OKP keys the curve decides). A JWK whose `alg` disagrees with `alg` is refused.
    /// `use` must be `sig` if present and `key_ops` must contain `verify` if present
    /// (RFC 7517 §4.2–4.3). A JWK with private members must hold a complete private key
    /// matching its public members. The `kid` is the JWK's, else its thumbprint.
    ///
    /// # Errors
    /// [`Error::KeyUsage`], [`Error::KeyAlgorithmMismatch`], [`Error::InvalidKey`] or
    /// [`Error::WeakKey`] as described above.
    pub fn from_jwk(jwk: &Jwk, alg: Option<Algorithm>) -> Result<Self> {
        jwk.check_usage(Operation::Verify)?;
        let alg = jwk.resolve_algorithm(alg)?;
        let verifier = if alg.key_kind() == KeyKind::Hmac {
            Verifier::Hmac(Box::new(HmacKey::new(alg, &jwk.hmac_secret()?)?))
        } else {
            let public = PublicKey::from_parts(alg, jwk.public_parts(alg)?)?;
            if jwk.has_private_members(alg.key_kind()) {
                // A private JWK: make sure its private half is complete and matches what we
                // verify with (RFC 7518 §6.3.2: an RSA JWK with `p` but no `d` is neither).
                PrivateKey::from_parts(alg, public.parts(), &jwk.private_parts(alg)?)?;
            }
            Verifier::Public(public)
        };
        let kid = match &jwk.kid {
            Some(k) => k.clone(),
            None => jwk.thumbprint()?,
        };
        Ok(Self::new(alg, Some(kid.into()), verifier))
    }

    fn new(alg: Algorithm, kid: Option<Arc<str>>, inner: Verifier) -> Self {
        Self {
            alg,
            kid,
            inner: Arc::new(inner),
        }
    }

    fn with_thumbprint_kid(mut self) -> Result<Self> {
        self.kid = Some(self.thumbprint()?.into());
        Ok(self)
    }

    /// Replaces the key id.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into().into());
        self
    }

    /// Removes the key id.
    #[must_use]
    pub fn without_kid(mut self) -> Self {
        self.kid = None;
        self
    }

    /// The one algorithm this key verifies.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id, if any.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// True for HMAC keys (which hold a shared secret).
    #[must_use]
    pub fn is_symmetric(&self) -> bool {
        matches!(*self.inner, Verifier::Hmac(_))
    }

    /// Checks a raw signature over `message` (constant-time for HMAC).
    #[must_use]
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        match &*self.inner {
            Verifier::Hmac(k) => k.verify(message, signature),
            Verifier::Public(k) => k.verify(message, signature),
        }
    }

    /// The public JWK, with `alg`, `use: sig` and `kid` set.
    ///
    /// # Errors
    /// [`Error::KeyUsage`] for HMAC keys: a shared secret is never published.
    pub fn to_jwk(&self) -> Result<Jwk> {
        match &*self.inner {
            Verifier::Hmac(_) => Err(Error::key_usage(
                "an HMAC secret is never published as a public JWK",
            )),
            Verifier::Public(k) => {
                let mut jwk = Jwk::from_public_parts(k.parts());
                jwk.alg = Some(self.alg.to_string());
                jwk.key_use = Some("sig".into());
                jwk.kid = self.kid.as_deref().map(str::to_owned);
                Ok(jwk)
            }
        }
    }

    /// The RFC 7638 thumbprint of the key.
    ///
    /// # Errors
    /// Only if the key cannot be represented as a JWK, which does not happen for keys built
    /// by this crate.
    pub fn thumbprint(&self) -> Result<String> {
        match &*self.inner {
            Verifier::Hmac(k) => {
                let jwk = Jwk {
                    kty: "oct".into(),
                    k: Some(crate::jwk::JwkSecret::new(crate::base64url::encode(
                        k.secret(),
                    ))),
                    ..Jwk::default()
                };
                jwk.thumbprint()
            }
            Verifier::Public(k) => Jwk::from_public_parts(k.parts()).thumbprint(),
        }
    }

    /// SubjectPublicKeyInfo PEM (`PUBLIC KEY`).
    ///
    /// # Errors
    /// [`Error::KeyUsage`] for HMAC keys.
    pub fn to_public_pem(&self) -> Result<String> {
        match &*self.inner {
            Verifier::Hmac(_) => Err(Error::key_usage("an HMAC secret has no public PEM")),
            Verifier::Public(k) => Ok(pem::encode("PUBLIC KEY", &k.to_spki_der()?)),
        }
    }
}

impl SigningKey {
    /// Generates a fresh key for `alg` (RSA keys are 2048 bits; HMAC secrets are as long
    /// as the hash output). The `kid` is the RFC 7638 thumbprint.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the system RNG fails.
    pub fn generate(alg: Algorithm) -> Result<Self> {
        Self::generate_with_rsa_bits(alg, 2048)
    }

    /// Like [`SigningKey::generate`] with a chosen RSA modulus size (2048, 3072, 4096 or
    /// 8192 bits; ignored for other algorithms).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an unsupported size; [`Error::Crypto`] if the RNG fails.
    pub fn generate_with_rsa_bits(alg: Algorithm, rsa_bits: usize) -> Result<Self> {
        let key = if alg.is_symmetric() {
            let hmac = HmacKey::generate(alg)?;
            Self::hmac(alg, hmac)
        } else {
            Self::private(alg, PrivateKey::generate(alg, rsa_bits)?)?
        };
        key.with_thumbprint_kid()
    }

    /// An HMAC signing key from a shared secret. No `kid` is set; add one with
    /// [`SigningKey::with_kid`] if verifiers select keys by id.
    ///
    /// # Errors
    /// [`Error::WeakKey`] if the secret is shorter than the hash output (RFC 7518 §3.2).
    pub fn from_hmac_secret(alg: Algorithm, secret: &[u8]) -> Result<Self> {
        Ok(Self::hmac(alg, HmacKey::new(alg, secret)?))
    }

    /// A signing key from PEM: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or
    /// `EC PRIVATE KEY` (SEC1). Encrypted PEM is refused with a message saying so. The `kid`
    /// is the RFC 7638 thumbprint.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] or [`Error::KeyAlgorithmMismatch`] when the PEM is not a private
    /// key of the kind `alg` needs; [`Error::WeakKey`] for weak RSA keys.
    pub fn from_pem(alg: Algorithm, pem_text: &str) -> Result<Self> {
        require_asymmetric(alg, "a PEM key (HMAC keys are raw secrets)")?;
        let block = pem::parse_key_block(pem_text)?;
        match block.label.as_str() {
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => Self::from_der(alg, &block.der),
            "PUBLIC KEY" | "RSA PUBLIC KEY" => Err(Error::key_usage(
                "this PEM holds a public key, which can verify but not sign",
            )),
            other => Err(unsupported_pem(other)),
        }
    }

    /// A signing key from private key DER (PKCS#8, PKCS#1 or SEC1). The `kid` is the
    /// RFC 7638 thumbprint.
    ///
    /// # Errors
    /// As [`SigningKey::from_pem`].
    pub fn from_der(alg: Algorithm, der: &[u8]) -> Result<Self> {
        require_asymmetric(alg, "a private key")?;
        Self::private(alg, PrivateKey::from_der(alg, der)?)?.with_thumbprint_kid()
    }

    /// A signing key from a private JWK or an `oct` JWK, with the same algorithm and usage
    /// rules as [`VerifyingKey::from_jwk`] (`key_ops` must contain `sign`).
    ///
    /// # Errors
    /// [`Error::KeyUsage`] for a public-only JWK or a JWK not meant for signing; the errors
    /// of [`VerifyingKey::from_jwk`] otherwise.
    pub fn from_jwk(jwk: &Jwk, alg: Option<Algorithm>) -> Result<Self> {
        jwk.check_usage(Operation::Sign)?;
        let alg = jwk.resolve_algorithm(alg)?;
        let mut key = if alg.is_symmetric() {
            Self::hmac(alg, HmacKey::new(alg, &jwk.hmac_secret()?)?)
        } else {
            if !jwk.has_private_members(alg.key_kind()) {
                return Err(Error::key_usage(
                    "this JWK has no private part, so it cannot sign",
                ));
            }
            let public = jwk.public_parts(alg)?;
            let private = PrivateKey::from_parts(alg, &public, &jwk.private_parts(alg)?)?;
            Self::private(alg, private)?
        };
        key.set_kid(Some(match &jwk.kid {
            Some(k) => k.as_str().into(),
            None => jwk.thumbprint()?.into(),
        }));
        Ok(key)
    }

    fn hmac(alg: Algorithm, key: HmacKey) -> Self {
        Self {
            alg,
            kid: None,
            private: None,
            verifier: Arc::new(Verifier::Hmac(Box::new(key))),
            headers: Arc::default(),
        }
    }

    fn private(alg: Algorithm, key: PrivateKey) -> Result<Self> {
        let public = key.public_key(alg)?;
        Ok(Self {
            alg,
            kid: None,
            private: Some(Arc::new(key)),
            verifier: Arc::new(Verifier::Public(public)),
            headers: Arc::default(),
        })
    }

    fn with_thumbprint_kid(mut self) -> Result<Self> {
        let kid = self.verifying_key().thumbprint()?;
        self.set_kid(Some(kid.into()));
        Ok(self)
    }

    /// Replaces the key id.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.set_kid(Some(kid.into().into()));
        self
    }

    /// The only way `kid` changes: cached headers name the old one, so they go too.
    fn set_kid(&mut self, kid: Option<Arc<str>>) {
        self.kid = kid;
        self.headers = Arc::default();
    }

    /// The one algorithm this key signs with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id, if any.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The matching verifying key, sharing the parsed material.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            alg: self.alg,
            kid: self.kid.clone(),
            inner: Arc::clone(&self.verifier),
        }
    }

    /// Signs `message`, returning the raw JWS signature bytes (fixed-size `R || S` for
    /// ECDSA, RFC 7518 §3.4).
    ///
    /// # Errors
    /// [`Error::Crypto`] if the primitive fails.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match (&self.private, &*self.verifier) {
            (Some(k), _) => k.sign(self.alg, message),
            (None, Verifier::Hmac(k)) => Ok(k.sign(message)),
            (None, Verifier::Public(_)) => Err(Error::key_usage("no private key")),
        }
    }

    /// The public JWK (`alg`, `use: sig`, `kid` set).
    ///
    /// # Errors
    /// [`Error::KeyUsage`] for HMAC keys.
    pub fn to_public_jwk(&self) -> Result<Jwk> {
        self.verifying_key().to_jwk()
    }

    /// The private JWK (or `oct` JWK for HMAC), with `alg`, `use: sig` and `kid` set.
    ///
    /// # Security
    /// The result holds secret material; it is zeroized on drop and redacted in `Debug`, but
    /// serializing it writes the secret out.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the key cannot be exported.
    pub fn to_private_jwk(&self) -> Result<Jwk> {
        let mut jwk = match (&self.private, &*self.verifier) {
            (Some(private), Verifier::Public(public)) => {
                Jwk::from_public_parts(public.parts()).with_private_parts(&private.private_parts()?)
            }
            (None, Verifier::Hmac(k)) => Jwk {
                kty: "oct".into(),
                k: Some(crate::jwk::JwkSecret::new(crate::base64url::encode(
                    k.secret(),
                ))),
                ..Jwk::default()
            },
            _ => return Err(Error::key_usage("inconsistent key")),
        };
        jwk.alg = Some(self.alg.to_string());
        jwk.key_use = Some("sig".into());
        jwk.kid = self.kid.as_deref().map(str::to_owned);
        Ok(jwk)
    }

    /// The private key as PKCS#8 DER (asymmetric keys) or the raw secret (HMAC), for
    /// storage. Seal it (see [`crate::crypto::SealingKey`]) before it leaves memory.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the key cannot be exported.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        match (&self.private, &*self.verifier) {
            (Some(k), _) => k.to_pkcs8_der(),
            (None, Verifier::Hmac(k)) => Ok(Zeroizing::new(k.secret().to_vec())),
            (None, Verifier::Public(_)) => Err(Error::key_usage("no private key")),
        }
    }

    /// Rebuilds a key from [`SigningKey::to_secret_bytes`] output. The `kid` is the
    /// thumbprint; use [`SigningKey::with_kid`] to restore a stored one.
    ///
    /// # Errors
    /// As [`SigningKey::from_der`] or [`SigningKey::from_hmac_secret`].
    pub fn from_secret_bytes(alg: Algorithm, bytes: &[u8]) -> Result<Self> {
        if alg.is_symmetric() {
            Self::from_hmac_secret(alg, bytes)?.with_thumbprint_kid()
        } else {
            Self::from_der(alg, bytes)
        }
    }

    /// The private key as PKCS#8 PEM (`PRIVATE KEY`).
    ///
    /// # Errors
    /// [`Error::KeyUsage`] for HMAC keys, which have no PEM form.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        if self.alg.is_symmetric() {
            return Err(Error::key_usage("an HMAC secret has no PEM form"));
        }
        Ok(Zeroizing::new(pem::encode(
            "PRIVATE KEY",
            &self.to_secret_bytes()?,
        )))
    }

    /// The HMAC secret, for HMAC keys.
    #[must_use]
    pub fn hmac_secret(&self) -> Option<&[u8]> {
        match &*self.verifier {
            Verifier::Hmac(k) => Some(k.secret()),
            Verifier::Public(_) => None,
        }
    }
}

fn unsupported_pem(label: &str) -> Error {
    let hint = match label {
        "ENCRYPTED PRIVATE KEY" => "; decrypt it first (openssl pkcs8 -topk8 -nocrypt)",
        "CERTIFICATE" => "; extract its key with `openssl x509 -pubkey -noout`",
        _ => "",
    };
    Error::invalid_key(format!(
        "PEM block `{}` is not a supported key{hint}",
        crate::error::truncate(label, 40)
    ))
}
