//! Claim validation rules (RFC 7519 §4.1, §7.2; RFC 8725 §3; RFC 9068 §4).

use crate::claims::RegisteredClaims;
use crate::error::{Error, Result, truncate};
use crate::header::Header;

/// Size caps applied before any parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum length of the whole compact token in bytes (default 8 KiB).
    pub max_token_len: usize,
    /// Maximum length of the encoded header segment in bytes (default 2 KiB).
    pub max_header_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_token_len: 8 * 1024,
            max_header_len: 2 * 1024,
        }
    }
}

/// A registered claim that can be made mandatory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequiredClaim {
    /// `aud`
    Aud,
    /// `exp`
    Exp,
    /// `iat`
    Iat,
    /// `iss`
    Iss,
    /// `jti`
    Jti,
    /// `nbf`
    Nbf,
    /// `sub`
    Sub,
}

impl RequiredClaim {
    /// The claim name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Aud => "aud",
            Self::Exp => "exp",
            Self::Iat => "iat",
            Self::Iss => "iss",
            Self::Jti => "jti",
            Self::Nbf => "nbf",
            Self::Sub => "sub",
        }
    }
}

/// What a JWT must satisfy beyond a valid signature.
///
/// The defaults are strict: `exp` is required, leeway is 30 seconds, and `nbf`/`iat` are
/// checked whenever present. Setting an issuer or audiences makes the claim mandatory, not
/// merely "checked if present" (the jsonwebtoken footgun, its issue #493). The current time
/// is always passed in; this crate never reads a clock.
///
/// ```
/// use tessera_jose::Validation;
///
/// let v = Validation::new()
///     .with_issuer("https://auth.example.com")
///     .with_audience("orders-api")
///     .with_required_typ("at+jwt");
/// assert_eq!(v.leeway, 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
    /// Claims that must be present (`exp` by default).
    pub required: Vec<RequiredClaim>,
    /// When set, `iss` must be present and equal.
    pub issuer: Option<String>,
    /// When non-empty, `aud` must be present and contain at least one of these.
    ///
    /// When empty, `aud` is not looked at, and a token naming other audiences passes. RFC 7519
    /// §4.1.3 says a recipient that does not identify itself with a value of a present `aud`
    /// MUST reject the token: a verifier that serves an audience should name it here
    /// (tessera-axum's verifier refuses such tokens unless told to accept any audience).
    pub audiences: Vec<String>,
    /// When set, the header `typ` must be this media type (compared case-insensitively,
    /// with or without the `application/` prefix, RFC 7515 §4.1.9).
    pub required_typ: Option<String>,
    /// Size caps applied before parsing.
    pub limits: Limits,
}

impl Default for Validation {
    fn default() -> Self {
        Self::new()
    }
}

impl Validation {
    /// Strict defaults: `exp` required, 30 s leeway, no issuer, audience or `typ` rule.
    #[must_use]
    pub fn new() -> Self {
        Self {
            leeway: 30,
            required: vec![RequiredClaim::Exp],
            issuer: None,
            audiences: Vec::new(),
            required_typ: None,
            limits: Limits::default(),
        }
    }

    /// Requires `iss` to equal `issuer`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Adds an accepted audience; `aud` becomes mandatory.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Requires the header `typ` (e.g. `at+jwt` for RFC 9068 access tokens).
    #[must_use]
    pub fn with_required_typ(mut self, typ: impl Into<String>) -> Self {
        self.required_typ = Some(typ.into());
        self
    }

    /// Sets the leeway in seconds.
    #[must_use]
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds;
        self
    }

    /// Makes a claim mandatory.
    #[must_use]
    pub fn require(mut self, claim: RequiredClaim) -> Self {
        if !self.required.contains(&claim) {
            self.required.push(claim);
        }
        self
    }

    /// Drops the `exp` requirement.
    ///
    /// # Security
    /// A token without `exp` is valid forever unless something else revokes it. Only for
    /// verifying documents that are not access tokens.
    #[must_use]
    pub fn danger_allow_missing_exp(mut self) -> Self {
        self.required.retain(|c| *c != RequiredClaim::Exp);
        self
    }

    /// Checks the header `typ` and the registered claims at time `now` (Unix seconds).
    ///
    /// # Errors
    /// The first rule that fails, as a precise [`Error`] variant.
    pub fn validate(&self, header: &Header, claims: &RegisteredClaims<'_>, now: i64) -> Result<()> {
        if let Some(expected) = &self.required_typ {
            let ok = header.typ().is_some_and(|t| typ_matches(t, expected));
            if !ok {
                return Err(Error::TypeMismatch {
                    expected: expected.clone(),
                    found: header.typ().map(|t| truncate(t, 64)),
                });
            }
        }
        for claim in &self.required {
            let present = match claim {
                RequiredClaim::Aud => claims.aud.is_some(),
                RequiredClaim::Exp => claims.exp.is_some(),
                RequiredClaim::Iat => claims.iat.is_some(),
                RequiredClaim::Iss => claims.iss.is_some(),
                RequiredClaim::Jti => claims.jti.is_some(),
                RequiredClaim::Nbf => claims.nbf.is_some(),
                RequiredClaim::Sub => claims.sub.is_some(),
            };
            if !present {
                return Err(Error::MissingClaim {
                    claim: claim.name(),
                });
            }
        }
        let leeway = i64::try_from(self.leeway).unwrap_or(i64::MAX);
        // RFC 7519 §4.1.4: the current time MUST be before `exp`.
        if let Some(exp) = claims.exp
            && now >= exp.0.saturating_add(leeway)
        {
            return Err(Error::Expired {
                exp: exp.0,
                now,
                leeway: self.leeway,
            });
        }
        // RFC 7519 §4.1.5: the current time MUST be after or equal to `nbf`.
        if let Some(nbf) = claims.nbf
            && now.saturating_add(leeway) < nbf.0
        {
            return Err(Error::NotYetValid {
                nbf: nbf.0,
                now,
                leeway: self.leeway,
            });
        }
        // A token issued in the future is a clock fault or a forgery (RFC 7519 §4.1.6).
        if let Some(iat) = claims.iat
            && iat.0 > now.saturating_add(leeway)
        {
            return Err(Error::IssuedInFuture {
                iat: iat.0,
                now,
                leeway: self.leeway,
            });
        }
        if let Some(expected) = &self.issuer {
            match claims.iss.as_deref() {
                None => return Err(Error::MissingClaim { claim: "iss" }),
                Some(iss) if iss != expected => {
                    return Err(Error::IssuerMismatch {
                        expected: expected.clone(),
                        found: truncate(iss, 128),
                    });
                }
                Some(_) => {}
            }
        }
        if !self.audiences.is_empty() {
            // RFC 7519 §4.1.3: reject unless we are one of the audiences.
            let aud = claims
                .aud
                .as_ref()
                .ok_or(Error::MissingClaim { claim: "aud" })?;
            if !self.audiences.iter().any(|a| aud.contains(a)) {
                return Err(Error::AudienceMismatch {
                    expected: self.audiences.clone(),
                    found: aud.iter().take(8).map(|a| truncate(a, 64)).collect(),
                });
            }
        }
        Ok(())
    }
}

/// RFC 7515 §4.1.9: `typ` values are case-insensitive media types, and the `application/`
/// prefix may be omitted (RFC 9068 §4 names both `at+jwt` and `application/at+jwt`).
fn typ_matches(found: &str, expected: &str) -> bool {
    fn strip(s: &str) -> &str {
        match s.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") => s.get(12..).unwrap_or(s),
            _ => s,
        }
    }
    strip(found).eq_ignore_ascii_case(strip(expected))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::Algorithm;
    use crate::claims::{Audience, NumericDate};

    fn header(typ: Option<&str>) -> Header {
        Header {
            alg: Algorithm::Hs256,
            kid: None,
            typ: typ.map(|t| Cow::Owned(t.to_owned())),
            cty: None,
            embedded_key: false,
        }
    }

    fn claims(exp: i64) -> RegisteredClaims<'static> {
        RegisteredClaims {
            exp: Some(NumericDate(exp)),
            ..RegisteredClaims::default()
        }
    }

    #[test]
    fn exp_is_required_and_honours_leeway() {
        let v = Validation::new();
        let h = header(None);
        assert_eq!(
            v.validate(&h, &RegisteredClaims::default(), 0),
            Err(Error::MissingClaim { claim: "exp" })
        );
        assert!(v.validate(&h, &claims(1000), 1029).is_ok());
        assert_eq!(
            v.validate(&h, &claims(1000), 1030),
            Err(Error::Expired {
                exp: 1000,
                now: 1030,
                leeway: 30
            })
        );
        let strict = Validation::new().with_leeway(0);
        assert!(strict.validate(&h, &claims(1000), 999).is_ok());
        assert!(strict.validate(&h, &claims(1000), 1000).is_err());
    }

    #[test]
    fn nbf_and_iat_in_the_future_are_refused_beyond_leeway() {
        let v = Validation::new();
        let h = header(None);
        let mut c = claims(10_000);
        c.nbf = Some(NumericDate(1030));
        assert!(v.validate(&h, &c, 1000).is_ok());
        c.nbf = Some(NumericDate(1031));
        assert_eq!(
            v.validate(&h, &c, 1000),
            Err(Error::NotYetValid {
                nbf: 1031,
                now: 1000,
                leeway: 30
            })
        );
        c.nbf = None;
        c.iat = Some(NumericDate(1031));
        assert!(matches!(
            v.validate(&h, &c, 1000),
            Err(Error::IssuedInFuture { .. })
        ));
    }

    #[test]
    fn configured_issuer_and_audience_are_mandatory() {
        let v = Validation::new().with_issuer("iss").with_audience("api");
        let h = header(None);
        let mut c = claims(10_000);
        assert_eq!(
            v.validate(&h, &c, 0),
            Err(Error::MissingClaim { claim: "iss" })
        );
        c.iss = Some(Cow::Borrowed("other"));
        assert!(matches!(
            v.validate(&h, &c, 0),
            Err(Error::IssuerMismatch { .. })
        ));
        c.iss = Some(Cow::Borrowed("iss"));
        assert_eq!(
            v.validate(&h, &c, 0),
            Err(Error::MissingClaim { claim: "aud" })
        );
        c.aud = Some(Audience::Many(vec![Cow::Borrowed("x"), Cow::Borrowed("y")]));
        assert!(matches!(
            v.validate(&h, &c, 0),
            Err(Error::AudienceMismatch { .. })
        ));
        c.aud = Some(Audience::Many(vec![
            Cow::Borrowed("x"),
            Cow::Borrowed("api"),
        ]));
        assert!(v.validate(&h, &c, 0).is_ok());
    }

    #[test]
    fn typ_is_compared_as_a_media_type() {
        let v = Validation::new().with_required_typ("at+jwt");
        let c = claims(10_000);
        assert!(v.validate(&header(Some("at+jwt")), &c, 0).is_ok());
        assert!(
            v.validate(&header(Some("application/AT+JWT")), &c, 0)
                .is_ok()
        );
        assert!(matches!(
            v.validate(&header(Some("JWT")), &c, 0),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            v.validate(&header(None), &c, 0),
            Err(Error::TypeMismatch { .. })
        ));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let v = Validation::new().with_leeway(u64::MAX);
        assert!(
            v.validate(&header(None), &claims(i64::MAX), i64::MIN)
                .is_ok()
        );
        let v = Validation::new();
        assert!(
            v.validate(&header(None), &claims(i64::MIN), i64::MAX)
                .is_err()
        );
    }
}
