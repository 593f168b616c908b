//! JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037 §2) and thumbprints (RFC 7638).

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::algorithm::{Algorithm, KeyKind};
use crate::base64url;
use crate::crypto::{self, PrivateParts, PublicParts};
use crate::error::{Error, Result};

/// A private or secret JWK member: redacted in `Debug`, zeroized on drop, compared in
/// constant time.
#[derive(Clone)]
pub struct JwkSecret(Zeroizing<String>);

impl Serialize for JwkSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JwkSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl JwkSecret {
    /// Wraps a base64url string.
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The base64url text. Every call site is a place where secret material is read.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JwkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for JwkSecret {
    fn eq(&self, other: &Self) -> bool {
        crypto::constant_time_eq(
            &crypto::sha256(self.0.as_bytes()),
            &crypto::sha256(other.0.as_bytes()),
        )
    }
}

impl Eq for JwkSecret {}

/// A JSON Web Key as it appears on the wire.
///
/// Members are kept in their base64url form; turning a JWK into a usable key
/// ([`crate::VerifyingKey::from_jwk`], [`crate::SigningKey::from_jwk`]) decodes and validates
/// them. Unknown members are ignored (RFC 7517 §4); a member named twice is an error.
/// `Debug` never shows private members.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `RSA`, `EC`, `OKP` or `oct` (RFC 7517 §4.1).
    pub kty: String,
    /// Intended use: `sig` or `enc` (RFC 7517 §4.2).
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Permitted operations (RFC 7517 §4.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// The algorithm the key is for (RFC 7517 §4.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Key id (RFC 7517 §4.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Curve for `EC` and `OKP` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate or OKP public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Private exponent (RSA) or private key (EC, OKP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<JwkSecret>,
    /// RSA first prime factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<JwkSecret>,
    /// RSA second prime factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<JwkSecret>,
    /// RSA first factor CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<JwkSecret>,
    /// RSA second factor CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dq: Option<JwkSecret>,
    /// RSA first CRT coefficient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qi: Option<JwkSecret>,
    /// RSA other primes (multi-prime keys are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oth: Option<serde_json::Value>,
    /// Symmetric key value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<JwkSecret>,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kty", &self.kty)
            .field("use", &self.key_use)
            .field("key_ops", &self.key_ops)
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("crv", &self.crv)
            .field("private", &self.is_private())
            .finish_non_exhaustive()
    }
}

/// What a key is about to be used for, for `use`/`key_ops` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Sign,
    Verify,
}

impl Jwk {
    /// Parses one JWK from JSON.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the text is not a JWK object or names a member twice.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::invalid_key(format!("not a valid JWK: {e}")))
    }

    /// Serializes to compact JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Invariant: a struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// True if the JWK carries private or secret material (`d` or `k`).
    #[must_use]
    pub fn is_private(&self) -> bool {
        self.d.is_some()
            || self.k.is_some()
            || self.p.is_some()
            || self.q.is_some()
            || self.dp.is_some()
            || self.dq.is_some()
            || self.qi.is_some()
            || self.oth.is_some()
    }

    /// True if the JWK carries a private member of a key of `kind`: `d`, and for RSA also
    /// the CRT members (`p`, `q`, `dp`, `dq`, `qi`, `oth`), any of which makes it a private
    /// key that must then be complete (RFC 7518 §6.3.2).
    pub(crate) fn has_private_members(&self, kind: KeyKind) -> bool {
        let crt = || {
            self.p.is_some()
                || self.q.is_some()
                || self.dp.is_some()
                || self.dq.is_some()
                || self.qi.is_some()
                || self.oth.is_some()
        };
        match kind {
            KeyKind::Rsa => self.d.is_some() || crt(),
            KeyKind::Ec | KeyKind::Okp => self.d.is_some(),
            KeyKind::Hmac => self.k.is_some(),
        }
    }

    /// A copy without any private member, suitable for publishing. `key_ops` becomes the
    /// public half's operations (`sign` becomes `verify`, `decrypt` `encrypt`, `unwrapKey`
    /// `wrapKey`; `deriveKey` and `deriveBits` stay; RFC 7517 §4.3).
    ///
    /// # Errors
    /// [`Error::KeyUsage`] for `oct` keys, which have no public half.
    pub fn to_public(&self) -> Result<Self> {
        if self.kty == "oct" {
            return Err(Error::key_usage(
                "a symmetric (oct) key has no public part to publish",
            ));
        }
        Ok(Self {
            kty: self.kty.clone(),
            key_use: self.key_use.clone(),
            key_ops: self.key_ops.as_deref().map(public_key_ops),
            alg: self.alg.clone(),
            kid: self.kid.clone(),
            crv: self.crv.clone(),
            x: self.x.clone(),
            y: self.y.clone(),
            n: self.n.clone(),
            e: self.e.clone(),
            ..Self::default()
        })
    }

    /// The algorithm named by `alg`, if present.
    ///
    /// # Errors
    /// [`Error::UnsupportedAlgorithm`] when `alg` names something this crate does not
    /// implement for signatures (e.g. `A256GCM`, `RSA1_5`, `none`).
    pub fn algorithm(&self) -> Result<Option<Algorithm>> {
        self.alg.as_deref().map(str::parse).transpose()
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order,
    /// base64url-encoded. Tessera uses it as the default `kid`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when a required member is missing or `kty` is unknown.
    pub fn thumbprint(&self) -> Result<String> {
        let q = |v: &str| serde_json::to_string(v).unwrap_or_default();
        let need = |m: &Option<String>, name: &str| {
            m.as_deref()
                .map(q)
                .ok_or_else(|| Error::invalid_key(format!("{} JWK is missing `{name}`", self.kty)))
        };
        // RFC 7638 §3.2: required members only, sorted, no whitespace.
        let canonical = match self.kty.as_str() {
            "RSA" => format!(
                r#"{{"e":{},"kty":"RSA","n":{}}}"#,
                need(&self.e, "e")?,
                need(&self.n, "n")?
            ),
            "EC" => format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                need(&self.crv, "crv")?,
                need(&self.x, "x")?,
                need(&self.y, "y")?
            ),
            "OKP" => format!(
                r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
                need(&self.crv, "crv")?,
                need(&self.x, "x")?
            ),
            "oct" => {
                let k = self
                    .k
                    .as_ref()
                    .ok_or_else(|| Error::invalid_key("oct JWK is missing `k`"))?;
                let canonical = Zeroizing::new(format!(r#"{{"k":{},"kty":"oct"}}"#, q(k.expose())));
                return Ok(base64url::encode(crypto::sha256(canonical.as_bytes())));
            }
            other => {
                return Err(Error::invalid_key(format!(
                    "unknown key type `{}`",
                    crate::error::truncate(other, 16)
                )));
            }
        };
        Ok(base64url::encode(crypto::sha256(canonical.as_bytes())))
    }

    /// Checks `use` and `key_ops` (RFC 7517 §4.2, §4.3) for `op`.
    pub(crate) fn check_usage(&self, op: Operation) -> Result<()> {
        if let Some(u) = &self.key_use
            && u != "sig"
        {
            return Err(Error::key_usage(format!(
                "JWK `use` is `{}`, not `sig`",
                crate::error::truncate(u, 16)
            )));
        }
        if let Some(ops) = &self.key_ops {
            for (i, o) in ops.iter().enumerate() {
                if ops.iter().skip(i + 1).any(|other| other == o) {
                    return Err(Error::key_usage("JWK `key_ops` lists an operation twice"));
                }
            }
            let wanted = match op {
                Operation::Sign => "sign",
                Operation::Verify => "verify",
            };
            if !ops.iter().any(|o| o == wanted) {
                return Err(Error::key_usage(format!(
                    "JWK `key_ops` does not permit `{wanted}`"
                )));
            }
            // `use` and `key_ops` together must agree (RFC 7517 §4.3).
            if self.key_use.is_some() && ops.iter().any(|o| o != "sign" && o != "verify") {
                return Err(Error::key_usage("JWK `use` and `key_ops` disagree"));
            }
        }
        Ok(())
    }

    /// Resolves the algorithm for this key: the JWK's `alg`, the caller's, or the one the
    /// curve implies. A disagreement between the JWK and the caller is an error, never a
    /// silent choice.
    pub(crate) fn resolve_algorithm(&self, requested: Option<Algorithm>) -> Result<Algorithm> {
        let own = self.algorithm()?;
        let alg = match (own, requested) {
            (Some(a), Some(r)) if a != r => {
                return Err(Error::KeyAlgorithmMismatch {
                    key: a.to_string(),
                    requested: r.to_string(),
                });
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => match (self.kty.as_str(), self.crv.as_deref()) {
                ("EC" | "OKP", Some(crv)) => Algorithm::for_curve(crv).ok_or_else(|| {
                    Error::invalid_key(format!(
                        "unsupported curve `{}`",
                        crate::error::truncate(crv, 16)
                    ))
                })?,
                _ => {
                    return Err(Error::invalid_key(format!(
                        "{} JWK has no `alg`; say which algorithm it is for",
                        crate::error::truncate(&self.kty, 16)
                    )));
                }
            },
        };
        let kty_ok = matches!(
            (alg.key_kind(), self.kty.as_str()),
            (KeyKind::Hmac, "oct")
                | (KeyKind::Rsa, "RSA")
                | (KeyKind::Ec, "EC")
                | (KeyKind::Okp, "OKP")
        );
        if !kty_ok {
            return Err(Error::KeyAlgorithmMismatch {
                key: format!("a `{}` key", crate::error::truncate(&self.kty, 16)),
                requested: alg.to_string(),
            });
        }
        if let Some(crv) = &self.crv {
            if alg.curve() != Some(crv.as_str()) {
                return Err(Error::KeyAlgorithmMismatch {
                    key: format!("curve `{}`", crate::error::truncate(crv, 16)),
                    requested: alg.to_string(),
                });
            }
        } else if alg.curve().is_some() {
            return Err(Error::invalid_key(format!(
                "{} JWK is missing `crv`",
                self.kty
            )));
        }
        Ok(alg)
    }

    pub(crate) fn public_parts(&self, alg: Algorithm) -> Result<PublicParts> {
        match alg.key_kind() {
            KeyKind::Rsa => {
                if self.oth.is_some() {
                    return Err(Error::invalid_key(
                        "multi-prime RSA keys (`oth`) are not supported",
                    ));
                }
                Ok(PublicParts::Rsa {
                    n: uint_member(&self.n, "n")?,
                    e: uint_member(&self.e, "e")?,
                })
            }
            KeyKind::Ec => {
                let c = alg.ec_coordinate_len().unwrap_or_default();
                let x = member(&self.x, "x")?;
                let y = member(&self.y, "y")?;
                // RFC 7518 §6.2.1.2: coordinates are the full size of the curve's field.
                if x.len() != c || y.len() != c {
                    return Err(Error::invalid_key(format!(
                        "EC coordinates must be {c} bytes each for {alg}"
                    )));
                }
                Ok(PublicParts::Ec { alg, x, y })
            }
            KeyKind::Okp => Ok(PublicParts::Ed25519 {
                x: member(&self.x, "x")?,
            }),
            KeyKind::Hmac => Err(Error::key_usage("a symmetric key has no public part")),
        }
    }

    pub(crate) fn private_parts(&self, alg: Algorithm) -> Result<PrivateParts> {
        match alg.key_kind() {
            KeyKind::Rsa => Ok(PrivateParts::Rsa([
                uint_secret(&self.d, "d")?,
                uint_secret(&self.p, "p")?,
                uint_secret(&self.q, "q")?,
                uint_secret(&self.dp, "dp")?,
                uint_secret(&self.dq, "dq")?,
                uint_secret(&self.qi, "qi")?,
            ])),
            KeyKind::Ec => Ok(PrivateParts::Ec {
                d: secret(&self.d, "d")?,
            }),
            KeyKind::Okp => Ok(PrivateParts::Ed25519 {
                d: secret(&self.d, "d")?,
            }),
            KeyKind::Hmac => Err(Error::key_usage("a symmetric key has no private part")),
        }
    }

    pub(crate) fn hmac_secret(&self) -> Result<Zeroizing<Vec<u8>>> {
        secret(&self.k, "k")
    }

    /// Builds the JWK for public numbers.
    pub(crate) fn from_public_parts(parts: &PublicParts) -> Self {
        match parts {
            PublicParts::Rsa { n, e } => Self {
                kty: "RSA".into(),
                n: Some(base64url::encode(n)),
                e: Some(base64url::encode(e)),
                ..Self::default()
            },
            PublicParts::Ec { alg, x, y } => Self {
                kty: "EC".into(),
                crv: alg.curve().map(str::to_owned),
                x: Some(base64url::encode(x)),
                y: Some(base64url::encode(y)),
                ..Self::default()
            },
            PublicParts::Ed25519 { x } => Self {
                kty: "OKP".into(),
                crv: Some("Ed25519".into()),
                x: Some(base64url::encode(x)),
                ..Self::default()
            },
        }
    }

    /// Adds private numbers to a public JWK.
    pub(crate) fn with_private_parts(mut self, parts: &PrivateParts) -> Self {
        let s = |v: &Zeroizing<Vec<u8>>| Some(JwkSecret::new(base64url::encode(v.as_slice())));
        match parts {
            PrivateParts::Rsa([d, p, q, dp, dq, qi]) => {
                self.d = s(d);
                self.p = s(p);
                self.q = s(q);
                self.dp = s(dp);
                self.dq = s(dq);
                self.qi = s(qi);
            }
            PrivateParts::Ec { d } | PrivateParts::Ed25519 { d } => self.d = s(d),
        }
        self
    }
}

/// The operations of a key's public half, from those of the whole key (RFC 7517 §4.3): the
/// public half does what undoes or checks the private operations (`sign` → `verify`,
/// `decrypt` → `encrypt`, `unwrapKey` → `wrapKey`) and keeps the public ones. Key agreement
/// (`deriveKey`, `deriveBits`) is kept: an ECDH-ES sender derives the key from the
/// recipient's public key (RFC 7518 §4.6), and a public half left with `"key_ops":[]` would
/// say nothing about what it is for, so a strict verifier could not tell it is not a
/// signature key. Operations this crate does not know go. A signing-only private JWK
/// (`"key_ops":["sign"]`) thus publishes `["verify"]`, which verifiers accept, not `[]`.
fn public_key_ops(ops: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for op in ops {
        let public = match op.as_str() {
            "sign" | "verify" => "verify",
            "decrypt" | "encrypt" => "encrypt",
            "unwrapKey" | "wrapKey" => "wrapKey",
            "deriveKey" => "deriveKey",
            "deriveBits" => "deriveBits",
            _ => continue,
        };
        if !out.iter().any(|o| o == public) {
            out.push(public.to_owned());
        }
    }
    out
}

fn member(m: &Option<String>, name: &str) -> Result<Vec<u8>> {
    let v = m
        .as_deref()
        .ok_or_else(|| Error::invalid_key(format!("JWK is missing `{name}`")))?;
    base64url::decode(v)
        .ok_or_else(|| Error::invalid_key(format!("JWK member `{name}` is not valid base64url")))
}

/// An RSA integer member (`Base64urlUInt`, RFC 7518 §2): its octets "MUST utilize the
/// minimum number of octets needed to represent the value", so a leading zero octet is
/// refused, with that reason (RFC 7518 §6.3.1.1 names the 257-octet modulus some libraries
/// emit). A JWK then has one encoding per key, the one this crate exports.
fn uint_member(m: &Option<String>, name: &str) -> Result<Vec<u8>> {
    let v = member(m, name)?;
    check_minimal_uint(&v, name)?;
    Ok(v)
}

/// [`uint_member`] for the private RSA integers.
fn uint_secret(m: &Option<JwkSecret>, name: &str) -> Result<Zeroizing<Vec<u8>>> {
    let v = secret(m, name)?;
    check_minimal_uint(&v, name)?;
    Ok(v)
}

fn check_minimal_uint(v: &[u8], name: &str) -> Result<()> {
    match v {
        [] => Err(Error::invalid_key(format!(
            "JWK member `{name}` is empty; zero is \"AA\" (RFC 7518 §2, Base64urlUInt)"
        ))),
        [0, _, ..] => Err(Error::invalid_key(format!(
            "JWK member `{name}` has a leading zero octet; an integer must use the minimum \
             number of octets (RFC 7518 §2, Base64urlUInt)"
        ))),
        _ => Ok(()),
    }
}

fn secret(m: &Option<JwkSecret>, name: &str) -> Result<Zeroizing<Vec<u8>>> {
    let v = m
        .as_ref()
        .ok_or_else(|| Error::invalid_key(format!("JWK is missing `{name}`")))?;
    base64url::decode(v.expose())
        .map(Zeroizing::new)
        .ok_or_else(|| Error::invalid_key(format!("JWK member `{name}` is not valid base64url")))
}

/// Entries of a JWK Set that are not JWKs, as [`JwkSet::from_json_lenient`] reports them:
/// `(index in keys, why)`.
pub type UnreadEntries = Vec<(usize, Error)>;

/// A serde_json error as text, without the value its message may quote
/// (`invalid type: string "..."`), which could be key material: syntax errors and a missing
/// or duplicated member (serde names the member only) keep their message, any other data
/// error is located instead.
fn without_values(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if !e.is_data() || msg.starts_with("missing field") || msg.starts_with("duplicate field") {
        crate::error::truncate(&msg, 96)
    } else {
        format!(
            "a member of the wrong JSON type or value at line {} column {}",
            e.line(),
            e.column()
        )
    }
}

/// A JWK Set (RFC 7517 §5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// Parses a JWK Set from JSON.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the text is not a JWK Set.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| Error::invalid_key(format!("not a valid JWK Set: {e}")))
    }

    /// Parses a JWK Set from JSON, leniently: entries that are not JWKs are left out and
    /// reported by their index in `keys`, instead of failing the whole set. For JWK Sets
    /// published by someone else (an issuer's `jwks_uri`), where one entry of a shape this
    /// crate does not read must not take down the keys beside it; keys of our own are read
    /// with the strict [`JwkSet::from_json`].
    ///
    /// RFC 7517 §5: "Implementations SHOULD ignore JWKs within a JWK Set that use "kty"
    /// (key type) values that are not understood by them, that are missing required
    /// members, or for which values are out of the supported ranges." Left out here: an
    /// entry without `kty`, with a member of the wrong JSON type (`"n": 123`,
    /// `"key_ops": "sign"`), or naming a member twice (which copy counts is ambiguous). An
    /// entry read here may still be unusable (an unknown `kty`, a weak key):
    /// [`KeySet::from_jwks_lenient`](crate::KeySet::from_jwks_lenient) sorts those out.
    ///
    /// The document itself must be a JWK Set (RFC 7517 §5, §4): a JSON object, naming each
    /// member once, whose `keys` member is an array of JSON objects. Anything else fails as
    /// a whole, so that a caller can tell a set with no readable key (the issuer publishes
    /// none it can use) from a document that is no key set at all.
    ///
    /// The reasons reported name members and positions, never values: serde's messages
    /// quote the value they refused, which may be key material.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the text is not a JWK Set.
    pub fn from_json_lenient(json: &str) -> Result<(Self, UnreadEntries)> {
        /// The set with its entries unread. A struct, not a map, so a second `keys` is
        /// refused; `RawValue` keeps each entry's text, so its own duplicate members are
        /// still seen when it is read as a [`Jwk`].
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<Box<serde_json::value::RawValue>>,
        }
        let not_a_set = |why: &str| Error::invalid_key(format!("not a valid JWK Set: {why}"));
        // serde reads a JSON array as a struct, its elements in member order: `[[...]]`
        // would otherwise pass for a set. JSON whitespace only (RFC 8259 §2).
        if !json
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            return Err(not_a_set("not a JSON object"));
        }
        let raw: RawSet = serde_json::from_str(json).map_err(|e| not_a_set(&without_values(&e)))?;
        // Room for the entries read, not for every entry: an entry left out may be three
        // bytes (`{}`) where a `Jwk` is over 400.
        let mut keys = Vec::new();
        let mut unread = Vec::new();
        for (index, entry) in raw.keys.iter().enumerate() {
            // RFC 7517 §4: a JWK is a JSON object. Not even that (an array read as a
            // struct, a string) means the document is not a JWK Set.
            if !entry.get().starts_with('{') {
                return Err(not_a_set(&format!(
                    "entry {index} of `keys` is not a JSON object"
                )));
            }
            match serde_json::from_str::<Jwk>(entry.get()) {
                Ok(jwk) => keys.push(jwk),
                Err(e) => unread.push((
                    index,
                    Error::invalid_key(format!("not a valid JWK: {}", without_values(&e))),
                )),
            }
        }
        Ok((Self { keys }, unread))
    }

    /// Serializes to compact JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A copy for publishing: private members removed and symmetric keys dropped, so a
    /// public JWKS can never leak secret material.
    #[must_use]
    pub fn to_public(&self) -> Self {
        Self {
            keys: self
                .keys
                .iter()
                .filter_map(|k| k.to_public().ok())
                .collect(),
        }
    }

    /// The key with this `kid`, if any.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7638 §3.1 example.
    const RFC7638_KEY: &str = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#;

    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk = Jwk::from_json(RFC7638_KEY).unwrap();
        assert_eq!(
            jwk.thumbprint().unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn duplicate_members_are_refused() {
        assert!(Jwk::from_json(r#"{"kty":"oct","k":"AAAA","k":"BBBB"}"#).is_err());
    }

    #[test]
    fn debug_never_shows_private_members() {
        let jwk = Jwk::from_json(r#"{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}"#).unwrap();
        let dbg = format!("{jwk:?}");
        assert!(!dbg.contains("c2Vj"), "{dbg}");
    }

    #[test]
    fn public_copy_has_no_private_members_and_drops_oct() {
        let set = JwkSet::from_json(
            r#"{"keys":[{"kty":"oct","k":"AAAA"},{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}"#,
        )
        .unwrap();
        let public = set.to_public();
        assert_eq!(public.keys.len(), 1);
        assert!(!public.keys[0].is_private());
        assert!(!public.to_json().contains("\"d\""));
    }

    #[test]
    fn lenient_reading_leaves_out_entries_that_are_not_jwks() {
        let good = r#"{"kty":"OKP","crv":"Ed25519","kid":"ok","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let text = format!(
            r#"{{"issuer":"extra members are ignored","keys":[
                {good},
                {{"kty":"RSA","kid":"n","n":987654321,"e":"AQAB"}},
                {{"kty":"EC","kid":"ops","key_ops":"s3cr3t-ops"}},
                {{"crv":"P-256","kid":"no-kty"}},
                {{"kty":"oct","k":"AAAA","k":"BBBB"}},
                {{"kty":"future-kty","kid":"f","x":["shapes", "not", "read"]}}
            ]}}"#
        );
        assert!(
            JwkSet::from_json(&text).is_err(),
            "the strict reader stays strict"
        );
        let (set, unread) = JwkSet::from_json_lenient(&text).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("ok")]);
        let indices: Vec<_> = unread.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, [1, 2, 3, 4, 5]);
        for (_, why) in &unread {
            let why = why.to_string();
            assert!(
                !why.contains("987654321") && !why.contains("s3cr3t"),
                "{why}"
            );
        }
        assert!(unread[2].1.to_string().contains("`kty`"), "{:?}", unread[2]);
        assert!(unread[3].1.to_string().contains("`k`"), "{:?}", unread[3]);
        let (set, unread) = JwkSet::from_json_lenient(&format!(r#"{{"keys":[{good}]}}"#)).unwrap();
        assert_eq!(
            set,
            JwkSet::from_json(&format!(r#"{{"keys":[{good}]}}"#)).unwrap()
        );
        assert!(unread.is_empty());
        let (set, unread) = JwkSet::from_json_lenient(" \n{\"keys\":[]}").unwrap();
        assert!(set.keys.is_empty() && unread.is_empty());
    }

    /// An entry left out costs no room in the set: `{}` is three bytes of JSON and a `Jwk`
    /// over 400, so room reserved for every entry of `keys` let a body of empty entries
    /// ask for some 150 times its size at once (1 MiB: 150 MiB), which the strict reader,
    /// failing at the first, never did.
    #[test]
    fn lenient_reading_reserves_no_room_for_entries_it_leaves_out() {
        let n = 10_000;
        let text = format!(r#"{{"keys":[{}{{}}]}}"#, "{},".repeat(n - 1));
        let (set, unread) = JwkSet::from_json_lenient(&text).unwrap();
        assert_eq!(unread.len(), n);
        assert_eq!(set.keys.capacity(), 0);
        let good = r#"{"kty":"OKP","crv":"Ed25519","kid":"ok","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let text = format!(r#"{{"keys":[{}{good}]}}"#, "{},".repeat(n));
        let (set, unread) = JwkSet::from_json_lenient(&text).unwrap();
        assert_eq!((set.keys.len(), unread.len()), (1, n));
        assert!(set.keys.capacity() < 8, "{}", set.keys.capacity());
    }

    #[test]
    fn lenient_reading_still_refuses_what_is_not_a_jwk_set() {
        for text in [
            "",
            "not json",
            "[]",
            "[[]]",
            r#"[[{"kty":"EC"}]]"#,
            "{}",
            r#"{"keys":5}"#,
            r#"{"keys":null}"#,
            r#"{"keys":{"kty":"EC"}}"#,
            r#"{"keys":[["EC"]]}"#,
            r#"{"keys":[{"kty":"EC"}, "k1"]}"#,
            r#"{"keys":[{"kty":"EC"}, null]}"#,
            r#"{"keys":[],"keys":[]}"#,
            r#"{"keys":[{"kty":"EC"}]"#,
        ] {
            assert!(JwkSet::from_json_lenient(text).is_err(), "{text}");
        }
    }

    #[test]
    fn usage_rules() {
        let mut jwk = Jwk {
            kty: "EC".into(),
            ..Jwk::default()
        };
        assert!(jwk.check_usage(Operation::Verify).is_ok());
        jwk.key_use = Some("enc".into());
        assert!(jwk.check_usage(Operation::Verify).is_err());
        jwk.key_use = None;
        jwk.key_ops = Some(vec!["encrypt".into(), "decrypt".into()]);
        assert!(jwk.check_usage(Operation::Verify).is_err());
        jwk.key_ops = Some(vec!["verify".into(), "verify".into()]);
        assert!(jwk.check_usage(Operation::Verify).is_err());
        jwk.key_ops = Some(vec!["sign".into(), "verify".into()]);
        assert!(jwk.check_usage(Operation::Sign).is_ok());
    }
}
