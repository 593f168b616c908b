//! JWS Compact Serialization (RFC 7515 §3.1, §5.1, §5.2) and JWTs on top of it (RFC 7519 §7).

use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned};

use crate::base64url;
use crate::claims::{self, Claims};
use crate::error::{Error, Result, Segment};
use crate::header::{self, Header};
use crate::key::{SigningKey, VerifyingKey};
use crate::keyset::KeySet;
use crate::validation::{Limits, Validation};

/// A compact JWS that passed the structural checks but whose signature has **not** been
/// verified.
///
/// [`Unverified::parse`] runs, in order: the total-length cap, the exact three-segment
/// split, the header-length cap, strict base64url on the header, the header JSON checks
/// (duplicates, types, `alg` supported), the `crit` rejection, then strict base64url on the
/// payload and signature. Nothing in it may be
/// trusted until a key turns it into a [`VerifiedJws`].
#[derive(Debug)]
pub struct Unverified<'t> {
    header: Header,
    signing_input: &'t str,
    payload: Vec<u8>,
    signature: SignatureBytes,
}

/// A decoded signature. HMAC, ECDSA and Ed25519 signatures (at most 132 bytes, for ES512)
/// stay inline, so verifying them allocates nothing for the signature; RSA ones go to the
/// heap.
#[derive(Debug)]
enum SignatureBytes {
    Inline { buf: [u8; 132], len: usize },
    Heap(Vec<u8>),
}

impl SignatureBytes {
    /// Strict base64url, as [`base64url::decode`].
    fn decode(segment: &str) -> Option<Self> {
        // 176 characters decode to at most 132 bytes, so the inline buffer is large enough.
        if segment.len() <= 176 {
            let mut buf = [0u8; 132];
            let len = base64url::decode_slice(segment, &mut buf)?;
            Some(Self::Inline { buf, len })
        } else {
            base64url::decode(segment).map(Self::Heap)
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { buf, len } => buf.get(..*len).unwrap_or_default(),
            Self::Heap(v) => v,
        }
    }
}

impl<'t> Unverified<'t> {
    /// Parses a compact JWS under `limits`.
    ///
    /// # Errors
    /// [`Error::TokenTooLarge`], [`Error::SegmentCount`], [`Error::HeaderTooLarge`],
    /// [`Error::Base64`], [`Error::MalformedHeader`], [`Error::DuplicateMember`],
    /// [`Error::UnknownCritical`] or [`Error::UnsupportedAlgorithm`].
    pub fn parse(token: &'t str, limits: &Limits) -> Result<Self> {
        // 1. Size before anything else: nothing unbounded is parsed.
        if token.len() > limits.max_token_len {
            return Err(Error::TokenTooLarge {
                len: token.len(),
                max: limits.max_token_len,
            });
        }
        // 2. Exactly three segments (RFC 7515 §7.1). Count at most four dots' worth.
        let mut parts = token.splitn(4, '.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            let found = token.split('.').take(4).count();
            return Err(Error::SegmentCount { found });
        };
        // 3. Header size cap before decoding it.
        if h.len() > limits.max_header_len {
            return Err(Error::HeaderTooLarge {
                len: h.len(),
                max: limits.max_header_len,
            });
        }
        // 4. Strict base64url on the header.
        // Headers up to 2 KiB decode into a stack buffer (the hot path); larger ones, allowed
        // only by a raised limit, go to the heap.
        let mut header_buf = [0u8; 1536];
        let header_heap;
        let header_json = if h.len() <= 2048 {
            decode_segment(h, &mut header_buf, Segment::Header)?
        } else {
            header_heap = base64url::decode(h).ok_or(Error::Base64 {
                segment: Segment::Header,
            })?;
            header_heap.as_slice()
        };
        // 5–6. Header JSON, then `crit`. Both come before the payload is decoded
        // (RFC 7515 §5.2 steps 2–6): a critical extension such as RFC 7797 `b64: false`
        // changes how the payload segment is to be read, so it must be refused as
        // `UnknownCritical` first, not reported as bad base64.
        let header = header::parse(header_json)?;
        // Then strict base64url on the payload and signature.
        let payload = base64url::decode(p).ok_or(Error::Base64 {
            segment: Segment::Payload,
        })?;
        let signature = SignatureBytes::decode(s).ok_or(Error::Base64 {
            segment: Segment::Signature,
        })?;
        // Invariant: `h` and `p` are prefixes of `token` joined by one '.'.
        let signing_input = token.get(..h.len() + 1 + p.len()).unwrap_or_default();
        Ok(Self {
            header,
            signing_input,
            payload,
            signature,
        })
    }

    /// The header, for choosing a key (by `kid`) before verification.
    ///
    /// # Security
    /// Attacker-controlled until verified. Never let it choose the algorithm or fetch keys.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload bytes without any verification, for diagnostics only.
    #[must_use]
    pub fn payload_unverified(&self) -> &[u8] {
        &self.payload
    }

    /// Verifies the signature with `key` (steps 7–8: the algorithm must equal the key's,
    /// then the signature must verify).
    ///
    /// # Errors
    /// [`Error::AlgorithmMismatch`] or [`Error::InvalidSignature`].
    pub fn verify(self, key: &VerifyingKey) -> Result<VerifiedJws> {
        if self.header.alg != key.algorithm() {
            return Err(Error::AlgorithmMismatch {
                expected: key.algorithm(),
                found: self.header.alg,
            });
        }
        if !key.verify_signature(self.signing_input.as_bytes(), self.signature.as_slice()) {
            return Err(Error::InvalidSignature);
        }
        Ok(VerifiedJws {
            header: self.header,
            payload: self.payload,
        })
    }
}

fn decode_segment<'b>(segment: &str, buf: &'b mut [u8], which: Segment) -> Result<&'b [u8]> {
    let n = base64url::decode_slice(segment, buf).ok_or(Error::Base64 { segment: which })?;
    buf.get(..n).ok_or(Error::Base64 { segment: which })
}

/// A JWS whose signature has been verified. Its payload is authentic; for a JWT, the claims
/// still need [`VerifiedJws::claims`] to check their validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJws {
    header: Header,
    payload: Vec<u8>,
}

impl VerifiedJws {
    /// The verified header.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The verified payload bytes.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload, by value.
    #[must_use]
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// Decodes the payload as JWT claims (steps 9–10) and validates them at `now` (Unix
    /// seconds). Custom claims may borrow from this value.
    ///
    /// # Errors
    /// [`Error::MalformedClaims`], [`Error::DuplicateMember`], [`Error::InvalidClaimType`],
    /// or the validation failure ([`Error::Expired`], [`Error::TypeMismatch`]...).
    pub fn claims<'a, T: Deserialize<'a>>(
        &'a self,
        validation: &Validation,
        now: i64,
    ) -> Result<Claims<'a, T>> {
        let claims = claims::parse::<T>(&self.payload)?;
        validation.validate(&self.header, &claims.registered, now)?;
        Ok(claims)
    }
}

/// A verified and validated JWT with owned claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJwt<T> {
    /// The verified header.
    pub header: Header,
    /// The validated claims.
    pub claims: Claims<'static, T>,
}

impl VerifyingKey {
    /// Verifies a compact JWS and returns its payload (no JWT rules).
    ///
    /// # Errors
    /// Any structural error of [`Unverified::parse`], then [`Error::AlgorithmMismatch`] or
    /// [`Error::InvalidSignature`].
    pub fn verify_jws(&self, token: &str, limits: &Limits) -> Result<VerifiedJws> {
        Unverified::parse(token, limits)?.verify(self)
    }

    /// Verifies a JWT completely: structure, signature, then claims at `now`.
    ///
    /// ```
    /// use tessera_jose::{Algorithm, Claims, NoCustomClaims, NumericDate, SigningKey, Validation};
    ///
    /// let key = SigningKey::generate(Algorithm::Hs256)?;
    /// let mut claims = Claims::new(NoCustomClaims);
    /// claims.registered.sub = Some("alice".into());
    /// claims.registered.exp = Some(NumericDate(2_000));
    /// let token = key.sign_jwt(&claims, Some("JWT"))?;
    ///
    /// let jwt = key.verifying_key().verify_jwt::<NoCustomClaims>(&token, &Validation::new(), 1_000)?;
    /// assert_eq!(jwt.claims.registered.sub.as_deref(), Some("alice"));
    /// assert!(key.verifying_key().verify_jwt::<NoCustomClaims>(&token, &Validation::new(), 9_000).is_err());
    /// # Ok::<(), tessera_jose::Error>(())
    /// ```
    ///
    /// # Errors
    /// Every error of [`VerifyingKey::verify_jws`] and [`VerifiedJws::claims`].
    pub fn verify_jwt<T: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
        now: i64,
    ) -> Result<VerifiedJwt<T>> {
        let jws = self.verify_jws(token, &validation.limits)?;
        into_jwt(jws, validation, now)
    }
}

impl KeySet {
    /// Verifies a compact JWS with the key its `kid` selects (then its algorithm must match).
    ///
    /// # Errors
    /// As [`VerifyingKey::verify_jws`], plus [`Error::UnknownKid`].
    pub fn verify_jws(&self, token: &str, limits: &Limits) -> Result<VerifiedJws> {
        let unverified = Unverified::parse(token, limits)?;
        let key = self.select(unverified.header())?;
        unverified.verify(key)
    }

    /// Verifies a JWT completely with the key its `kid` selects.
    ///
    /// # Errors
    /// As [`VerifyingKey::verify_jwt`], plus [`Error::UnknownKid`].
    pub fn verify_jwt<T: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
        now: i64,
    ) -> Result<VerifiedJwt<T>> {
        let jws = self.verify_jws(token, &validation.limits)?;
        into_jwt(jws, validation, now)
    }
}

fn into_jwt<T: DeserializeOwned>(
    jws: VerifiedJws,
    validation: &Validation,
    now: i64,
) -> Result<VerifiedJwt<T>> {
    let claims = jws.claims::<T>(validation, now)?.into_owned();
    Ok(VerifiedJwt {
        header: jws.header,
        claims,
    })
}

impl SigningKey {
    /// Signs `payload` as a compact JWS with a header of `alg`, `kid` (if the key has one),
    /// and the optional `typ` and `cty`.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the primitive fails.
    pub fn sign_jws(&self, payload: &[u8], typ: Option<&str>, cty: Option<&str>) -> Result<String> {
        // The encoded header is made once per key for the common `typ` values.
        let made;
        let header = match self.headers.slot(typ, cty) {
            Some(slot) => {
                if slot.get().is_none() {
                    // Threads racing here all make the same string; the first one is kept.
                    let _ = slot.set(base64url::encode(self.header_json(typ, cty)?));
                }
                slot.get().map_or("", String::as_str)
            }
            None => {
                made = base64url::encode(self.header_json(typ, cty)?);
                made.as_str()
            }
        };
        // Invariant: the slot was filled just above, so this never fires.
        if header.is_empty() {
            return Err(Error::Encode {
                reason: "no protected header".into(),
            });
        }
        let sig_len_hint = 512;
        let mut out =
            String::with_capacity(header.len() + payload.len() * 4 / 3 + sig_len_hint + 8);
        out.push_str(header);
        out.push('.');
        base64url::encode_into(payload, &mut out);
        let signature = self.sign(out.as_bytes())?;
        out.push('.');
        base64url::encode_into(&signature, &mut out);
        Ok(out)
    }

    /// Serializes `claims` and signs them as a JWT.
    ///
    /// The serialized claims are re-read with the same strict parser verifiers use, so this
    /// never produces a token with duplicate or mistyped registered claims.
    ///
    /// # Errors
    /// [`Error::Encode`] if the claims do not serialize to a valid claims object;
    /// [`Error::Crypto`] if signing fails.
    pub fn sign_jwt<C: Serialize>(&self, claims: &C, typ: Option<&str>) -> Result<String> {
        // Sized for a typical access token's claims, so the buffer does not regrow.
        let mut json = Vec::with_capacity(512);
        serde_json::to_writer(&mut json, claims).map_err(|e| Error::Encode {
            reason: e.to_string(),
        })?;
        claims::check_encodable(&json)?;
        self.sign_jws(&json, typ, None)
    }

    fn header_json(&self, typ: Option<&str>, cty: Option<&str>) -> Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Out<'a> {
            alg: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            typ: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            cty: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            kid: Option<&'a str>,
        }
        serde_json::to_vec(&Out {
            alg: self.algorithm().as_str(),
            typ,
            cty,
            kid: self.kid(),
        })
        .map_err(|e| Error::Encode {
            reason: e.to_string(),
        })
    }
}

/// The parts of a token decoded **without any verification**, for diagnostics
/// (`tessera token decode`). Works on tokens this crate would refuse (e.g. `alg: none`).
#[derive(Debug, Clone, PartialEq)]
pub struct UnverifiedParts {
    /// The header as JSON.
    pub header: serde_json::Value,
    /// The raw payload bytes.
    pub payload: Vec<u8>,
    /// The payload as JSON, if it is JSON.
    pub claims: Option<serde_json::Value>,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
}

/// Decodes a compact token for display, checking nothing but its shape and size.
///
/// # Security
/// Nothing returned here is authentic. Never make an access decision from it.
///
/// # Errors
/// [`Error::TokenTooLarge`], [`Error::SegmentCount`], [`Error::Base64`] or
/// [`Error::MalformedHeader`] when the header is not JSON.
pub fn decode_unverified(token: &str, limits: &Limits) -> Result<UnverifiedParts> {
    if token.len() > limits.max_token_len {
        return Err(Error::TokenTooLarge {
            len: token.len(),
            max: limits.max_token_len,
        });
    }
    let segs: Vec<&str> = token.split('.').take(4).collect();
    let [h, p, s] = segs.as_slice() else {
        return Err(Error::SegmentCount { found: segs.len() });
    };
    let header_bytes = base64url::decode(h).ok_or(Error::Base64 {
        segment: Segment::Header,
    })?;
    let header = serde_json::from_slice(&header_bytes).map_err(|e| Error::MalformedHeader {
        reason: e.to_string(),
    })?;
    let payload = base64url::decode(p).ok_or(Error::Base64 {
        segment: Segment::Payload,
    })?;
    let signature = base64url::decode(s).ok_or(Error::Base64 {
        segment: Segment::Signature,
    })?;
    let claims = serde_json::from_slice(&payload).ok();
    Ok(UnverifiedParts {
        header,
        payload,
        claims,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, NoCustomClaims, NumericDate};

    fn hs256() -> SigningKey {
        SigningKey::from_hmac_secret(Algorithm::Hs256, &[7u8; 32]).unwrap()
    }

    fn token(key: &SigningKey, exp: i64) -> String {
        let mut c = Claims::new(NoCustomClaims);
        c.registered.exp = Some(NumericDate(exp));
        key.sign_jwt(&c, Some("JWT")).unwrap()
    }

    #[test]
    fn structure_checks_come_in_order() {
        let l = Limits::default();
        let long = "a".repeat(l.max_token_len + 1);
        assert!(matches!(
            Unverified::parse(&long, &l),
            Err(Error::TokenTooLarge { .. })
        ));
        assert_eq!(
            Unverified::parse("a.b", &l).unwrap_err(),
            Error::SegmentCount { found: 2 }
        );
        assert_eq!(
            Unverified::parse("a.b.c.d", &l).unwrap_err(),
            Error::SegmentCount { found: 4 }
        );
        assert_eq!(
            Unverified::parse("a.b.c.d.e.f", &l).unwrap_err(),
            Error::SegmentCount { found: 4 }
        );
        let big_header = format!("{}.e30.AA", "a".repeat(l.max_header_len + 4));
        assert!(matches!(
            Unverified::parse(&big_header, &l),
            Err(Error::HeaderTooLarge { .. })
        ));
        assert_eq!(
            Unverified::parse("e30=.e30.AA", &l).unwrap_err(),
            Error::Base64 {
                segment: Segment::Header
            }
        );
    }

    #[test]
    fn round_trip_and_tamper() {
        let key = hs256();
        let t = token(&key, 100);
        let vk = key.verifying_key();
        assert!(
            vk.verify_jwt::<NoCustomClaims>(&t, &Validation::new(), 50)
                .is_ok()
        );
        let mut bad = t.into_bytes();
        let i = bad.len() - 3;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(
            vk.verify_jwt::<NoCustomClaims>(&bad, &Validation::new(), 50)
                .is_err()
        );
    }

    #[test]
    fn the_key_decides_the_algorithm() {
        let t = token(&hs256(), 100);
        let other = SigningKey::from_hmac_secret(Algorithm::Hs384, &[7u8; 48]).unwrap();
        assert_eq!(
            other
                .verifying_key()
                .verify_jws(&t, &Limits::default())
                .unwrap_err(),
            Error::AlgorithmMismatch {
                expected: Algorithm::Hs384,
                found: Algorithm::Hs256
            }
        );
    }

    #[test]
    fn cached_headers_follow_the_kid() {
        let kid_of = |t: &str| {
            Unverified::parse(t, &Limits::default())
                .unwrap()
                .header()
                .kid()
                .map(str::to_owned)
        };
        let a = hs256().with_kid("a");
        let t = a.sign_jws(b"{}", Some("JWT"), None).unwrap();
        assert_eq!(kid_of(&t).as_deref(), Some("a"));
        let b = a.clone().with_kid("b");
        assert_eq!(
            kid_of(&b.sign_jws(b"{}", Some("JWT"), None).unwrap()).as_deref(),
            Some("b")
        );
        assert_eq!(
            kid_of(&a.sign_jws(b"{}", Some("JWT"), None).unwrap()).as_deref(),
            Some("a")
        );
        // Uncached combinations are made per call and agree with the cached ones.
        let with_cty = a.sign_jws(b"{}", Some("JWT"), Some("x")).unwrap();
        let h = Unverified::parse(&with_cty, &Limits::default()).unwrap();
        assert_eq!((h.header().kid(), h.header().cty()), (Some("a"), Some("x")));
        assert_eq!(
            a.sign_jws(b"{}", None, None).unwrap(),
            hs256().with_kid("a").sign_jws(b"{}", None, None).unwrap()
        );
    }

    #[test]
    fn unverified_decode_shows_even_alg_none() {
        let parts =
            decode_unverified("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", &Limits::default()).unwrap();
        assert_eq!(parts.header["alg"], "none");
        assert_eq!(parts.claims.unwrap()["sub"], "x");
        assert!(parts.signature.is_empty());
    }
}
