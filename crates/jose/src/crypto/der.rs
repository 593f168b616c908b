//! The few DER structures key handling needs: SubjectPublicKeyInfo (RFC 5280 §4.1.2.7),
//! PrivateKeyInfo (RFC 5208 §5), RSAPublicKey and RSAPrivateKey (RFC 8017 App. A.1).
//!
//! This is a reader of definite-length DER only, used to *inspect* keys (find their type and
//! curve for a clear error message, and read RSA components for JWK export). Every key is
//! then handed to aws-lc-rs, which does the authoritative parse and validation.

use crate::error::{Error, Result};

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

pub(crate) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
pub(crate) const OID_RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
pub(crate) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(crate) const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
pub(crate) const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
pub(crate) const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
pub(crate) const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
pub(crate) const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
pub(crate) const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// A cursor over DER bytes.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Reads one tag-length-value and returns the tag and the value.
    pub(crate) fn read_any(&mut self) -> Result<(u8, &'a [u8])> {
        let (&tag, rest) = self.data.split_first().ok_or_else(truncated)?;
        let (&first, mut rest) = rest.split_first().ok_or_else(truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            // 0x80 is the BER indefinite form, not DER; more than 4 length bytes is absurd here.
            if n == 0 || n > 4 {
                return Err(bad("unsupported DER length form"));
            }
            let (len_bytes, after) = rest.split_at_checked(n).ok_or_else(truncated)?;
            rest = after;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        let (value, after) = rest.split_at_checked(len).ok_or_else(truncated)?;
        self.data = after;
        Ok((tag, value))
    }

    /// Reads one element and checks its tag.
    pub(crate) fn read(&mut self, tag: u8) -> Result<&'a [u8]> {
        let (found, value) = self.read_any()?;
        if found != tag {
            return Err(bad("unexpected DER element"));
        }
        Ok(value)
    }

    /// Reads an INTEGER as unsigned big-endian bytes without leading zeros.
    pub(crate) fn read_unsigned(&mut self) -> Result<&'a [u8]> {
        let value = self.read(TAG_INTEGER)?;
        match value {
            [] => Err(bad("empty DER integer")),
            [first, ..] if first & 0x80 != 0 => Err(bad("negative DER integer")),
            _ => Ok(strip_leading_zeros(value)),
        }
    }
}

/// Strips leading zero bytes, keeping at least one byte.
pub(crate) fn strip_leading_zeros(mut v: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = v {
        if rest.is_empty() {
            break;
        }
        v = rest;
    }
    v
}

fn truncated() -> Error {
    bad("truncated DER")
}

fn bad(reason: &str) -> Error {
    Error::invalid_key(reason)
}

/// The algorithm identifier of a SubjectPublicKeyInfo or PrivateKeyInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOid {
    Rsa,
    /// `id-RSASSA-PSS`: a key for RSASSA-PSS only (RFC 4055 §1.2), perhaps with one hash.
    RsaPss(PssHash),
    Ec(Curve),
    Ed25519,
    Unknown,
}

/// What the parameters of an `id-RSASSA-PSS` key allow (RFC 4055 §3.1, §3.3), in terms of
/// the JWA PS algorithms (RFC 7518 §3.5: the hash, MGF1 with the same hash, a salt as long
/// as the hash, trailer field 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PssHash {
    /// No parameters: any RSASSA-PSS parameters may be used.
    Any,
    /// SHA-256 for the hash and MGF1, a minimum salt length of at most 32: PS256 only.
    Sha256,
    /// SHA-384 likewise, salt at most 48: PS384 only.
    Sha384,
    /// SHA-512 likewise, salt at most 64: PS512 only.
    Sha512,
    /// Parameters no JWA algorithm fits: SHA-1 (the default hash and MGF1 hash) or another
    /// hash, an MGF1 hash other than the hash, a minimum salt length longer than the hash,
    /// another trailer field, or parameters we cannot read.
    Other,
}

/// A NIST curve named in EC key parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
    Other,
}

impl Curve {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
            Self::Other => "an unsupported curve",
        }
    }
}

fn curve_from_oid(oid: &[u8]) -> Curve {
    match oid {
        OID_P256 => Curve::P256,
        OID_P384 => Curve::P384,
        OID_P521 => Curve::P521,
        _ => Curve::Other,
    }
}

fn read_algorithm_identifier(r: &mut Reader<'_>) -> Result<KeyOid> {
    let mut alg = Reader::new(r.read(TAG_SEQUENCE)?);
    let oid = alg.read(TAG_OID)?;
    Ok(match oid {
        OID_RSA_ENCRYPTION => KeyOid::Rsa,
        OID_RSASSA_PSS => KeyOid::RsaPss(read_pss_hash(&mut alg)),
        OID_ED25519 => KeyOid::Ed25519,
        OID_EC_PUBLIC_KEY => {
            // Only named curves (RFC 5480 §2.1.1); explicit parameters are refused later.
            let curve = match alg.read_any() {
                Ok((TAG_OID, c)) => curve_from_oid(c),
                _ => Curve::Other,
            };
            KeyOid::Ec(curve)
        }
        _ => KeyOid::Unknown,
    })
}

/// What the parameters of an `id-RSASSA-PSS` AlgorithmIdentifier allow (RFC 4055 §3.1):
///
/// ```text
/// RSASSA-PSS-params ::= SEQUENCE {
///     hashAlgorithm      [0] HashAlgorithm    DEFAULT sha1,
///     maskGenAlgorithm   [1] MaskGenAlgorithm DEFAULT mgf1SHA1,
///     saltLength         [2] INTEGER          DEFAULT 20,
///     trailerField       [3] INTEGER          DEFAULT 1 }
/// ```
///
/// Absent parameters leave the key unrestricted. Present ones bind every signature to the
/// same hash, mask generation function and trailer field, and to a salt at least
/// `saltLength` long (§3.3), so a JWA PS algorithm fits only when the hash and the MGF1 hash
/// are both its SHA-2 hash and the minimum salt is no longer than the hash. Reading only the
/// hash is not enough: `openssl genpkey -algorithm RSA-PSS -pkeyopt rsa_pss_keygen_md:sha256`
/// leaves MGF1 at its SHA-1 default, and OpenSSL itself refuses to sign PS256 with that key.
fn read_pss_hash(alg: &mut Reader<'_>) -> PssHash {
    if alg.is_empty() {
        return PssHash::Any;
    }
    pss_params(alg).unwrap_or(PssHash::Other)
}

fn pss_params(alg: &mut Reader<'_>) -> Result<PssHash> {
    let mut params = Reader::new(alg.read(TAG_SEQUENCE)?);
    // Absent fields take their defaults: SHA-1, MGF1 with SHA-1, 20, 1.
    let (mut hash, mut mgf_hash, mut salt, mut trailer) =
        (PssHash::Other, PssHash::Other, 20u64, 1u64);
    let mut previous = None;
    while !params.is_empty() {
        let (tag, value) = params.read_any()?;
        // DER: the fields in order, each at most once.
        if previous.is_some_and(|p| tag <= p) {
            return Ok(PssHash::Other);
        }
        previous = Some(tag);
        let mut field = Reader::new(value);
        match tag {
            0xa0 => hash = read_hash_algorithm(&mut field)?,
            0xa1 => {
                let mut mgf = Reader::new(field.read(TAG_SEQUENCE)?);
                if mgf.read(TAG_OID)? != OID_MGF1 {
                    return Ok(PssHash::Other);
                }
                mgf_hash = read_hash_algorithm(&mut mgf)?;
                if !mgf.is_empty() {
                    return Ok(PssHash::Other);
                }
            }
            0xa2 => salt = read_small_uint(&mut field)?,
            0xa3 => trailer = read_small_uint(&mut field)?,
            _ => return Ok(PssHash::Other),
        }
        if !field.is_empty() {
            return Ok(PssHash::Other);
        }
    }
    let hash_len = match hash {
        PssHash::Sha256 => 32,
        PssHash::Sha384 => 48,
        PssHash::Sha512 => 64,
        PssHash::Any | PssHash::Other => return Ok(PssHash::Other),
    };
    let fits = mgf_hash == hash && salt <= hash_len && trailer == 1 && alg.is_empty();
    Ok(if fits { hash } else { PssHash::Other })
}

/// A HashAlgorithm (an AlgorithmIdentifier whose parameters are NULL or absent, RFC 4055
/// §2.1) as the SHA-2 hash of a PS algorithm, or `Other`.
fn read_hash_algorithm(r: &mut Reader<'_>) -> Result<PssHash> {
    let mut id = Reader::new(r.read(TAG_SEQUENCE)?);
    let hash = match id.read(TAG_OID)? {
        OID_SHA256 => PssHash::Sha256,
        OID_SHA384 => PssHash::Sha384,
        OID_SHA512 => PssHash::Sha512,
        _ => PssHash::Other,
    };
    match id.read_any() {
        Err(_) if id.is_empty() => Ok(hash),
        Ok((TAG_NULL, [])) if id.is_empty() => Ok(hash),
        _ => Ok(PssHash::Other),
    }
}

/// A non-negative INTEGER, saturated at `u64::MAX`.
fn read_small_uint(r: &mut Reader<'_>) -> Result<u64> {
    let v = r.read_unsigned()?;
    Ok(if v.len() > 8 {
        u64::MAX
    } else {
        v.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    })
}

/// Splits a SubjectPublicKeyInfo into its algorithm and the subjectPublicKey bits.
pub(crate) fn parse_spki(der: &[u8]) -> Result<(KeyOid, &[u8])> {
    let mut outer = Reader::new(der);
    let mut spki = Reader::new(outer.read(TAG_SEQUENCE)?);
    if !outer.is_empty() {
        return Err(bad("trailing data after public key"));
    }
    let oid = read_algorithm_identifier(&mut spki)?;
    let bits = spki.read(TAG_BIT_STRING)?;
    match bits.split_first() {
        Some((0, key)) => Ok((oid, key)),
        _ => Err(bad("malformed public key bit string")),
    }
}

/// Splits a PKCS#8 PrivateKeyInfo (v1 or v2) into its algorithm and the privateKey octets.
pub(crate) fn parse_pkcs8(der: &[u8]) -> Result<(KeyOid, &[u8])> {
    let mut outer = Reader::new(der);
    let mut info = Reader::new(outer.read(TAG_SEQUENCE)?);
    let _version = info.read(TAG_INTEGER)?;
    let oid = read_algorithm_identifier(&mut info)?;
    let key = info.read(TAG_OCTET_STRING)?;
    Ok((oid, key))
}

/// The curve named inside a SEC1 ECPrivateKey (RFC 5915 §3), if present.
pub(crate) fn sec1_curve(der: &[u8]) -> Result<Curve> {
    let mut outer = Reader::new(der);
    let mut key = Reader::new(outer.read(TAG_SEQUENCE)?);
    let _version = key.read(TAG_INTEGER)?;
    let _private = key.read(TAG_OCTET_STRING)?;
    while !key.is_empty() {
        let (tag, value) = key.read_any()?;
        if tag == 0xa0 {
            let mut params = Reader::new(value);
            return Ok(curve_from_oid(params.read(TAG_OID)?));
        }
    }
    Ok(Curve::Other)
}

/// The modulus and public exponent of a PKCS#1 RSAPublicKey
/// (`SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, RFC 8017 App. A.1.1), with
/// nothing inside or after it: like a SubjectPublicKeyInfo, a key with bytes appended is
/// not the key it claims to be.
pub(crate) fn rsa_public_components(der: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut outer = Reader::new(der);
    let mut key = Reader::new(outer.read(TAG_SEQUENCE)?);
    let n = key.read_unsigned()?;
    let e = key.read_unsigned()?;
    if !key.is_empty() || !outer.is_empty() {
        return Err(bad("trailing data after RSA public key"));
    }
    Ok((n, e))
}

/// The eight integers of a two-prime PKCS#1 RSAPrivateKey, in order
/// `n, e, d, p, q, dp, dq, qi`.
pub(crate) fn rsa_private_components(der: &[u8]) -> Result<[&[u8]; 8]> {
    let mut outer = Reader::new(der);
    let mut key = Reader::new(outer.read(TAG_SEQUENCE)?);
    let version = key.read(TAG_INTEGER)?;
    if version != [0] {
        return Err(bad("multi-prime RSA keys are not supported"));
    }
    let mut out: [&[u8]; 8] = [&[]; 8];
    for slot in &mut out {
        *slot = key.read_unsigned()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_form_lengths_are_read() {
        let mut v = vec![0x04, 0x81, 0x80];
        v.extend([7u8; 0x80]);
        let mut r = Reader::new(&v);
        assert_eq!(r.read(TAG_OCTET_STRING).unwrap().len(), 0x80);
        assert!(r.is_empty());
    }

    #[test]
    fn truncated_and_indefinite_lengths_are_errors() {
        assert!(Reader::new(&[0x04, 0x05, 1, 2]).read_any().is_err());
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).read_any().is_err());
        assert!(Reader::new(&[0x30]).read_any().is_err());
    }

    #[test]
    fn unsigned_integers_lose_their_sign_byte() {
        let mut r = Reader::new(&[0x02, 0x03, 0x00, 0x80, 0x01]);
        assert_eq!(r.read_unsigned().unwrap(), &[0x80, 0x01]);
        assert!(Reader::new(&[0x02, 0x01, 0x80]).read_unsigned().is_err());
    }
}
