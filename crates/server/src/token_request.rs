//! Parsing of `POST /token` requests (RFC 6749 §3.2, §4.3.2, §4.4.2, §6), kept free of I/O so
//! that the handler and the `token_form` fuzz target run the very same code.
//!
//! The handler calls the steps one by one, authenticating the client (which needs the
//! database) between [`PresentedClient::from_request`] and [`Grant::from_form`];
//! [`TokenRequest::parse`] runs the same steps in the same order without that lookup.

use axum::http::StatusCode;
use tessera_auth::SecondFactor;
use tessera_auth::security::MFA_GRANT_TYPE;
use zeroize::Zeroizing;

use crate::error::AppError;
use crate::extract::OAuthForm;

/// The `grant_type` parameter (RFC 6749 §4.3.2, §4.4.2, §6, plus the MFA grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    /// `client_credentials`.
    ClientCredentials,
    /// The MFA grant ([`MFA_GRANT_TYPE`]).
    Mfa,
    /// `password`, or no `grant_type` at all: the tutorial's `OAuth2PasswordRequestForm`
    /// clients send either.
    Password,
    /// `refresh_token`.
    RefreshToken,
}

impl GrantType {
    /// Reads `grant_type`. It is checked before anything else so that an unsupported grant
    /// is reported as such, whatever the client presented.
    ///
    /// # Errors
    /// `invalid_request` if repeated; `unsupported_grant_type` for any other value.
    pub fn from_form(form: &OAuthForm) -> Result<Self, AppError> {
        match form.get("grant_type")? {
            None | Some("password") => Ok(Self::Password),
            Some("refresh_token") => Ok(Self::RefreshToken),
            Some("client_credentials") => Ok(Self::ClientCredentials),
            Some(MFA_GRANT_TYPE) => Ok(Self::Mfa),
            Some(g) => Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "grant_type `{}` is not supported; use password, refresh_token, client_credentials or {MFA_GRANT_TYPE}",
                    g.chars().take(64).collect::<String>()
                ),
            )),
        }
    }
}

/// Client credentials as presented: HTTP Basic or `client_id`/`client_secret` form fields
/// (RFC 6749 §2.3.1). Using both methods at once is refused.
pub struct PresentedClient {
    /// The client id, if any was named.
    pub id: Option<String>,
    /// The client secret, if any was sent.
    pub secret: Option<Zeroizing<String>>,
}

impl PresentedClient {
    /// Reads the client from the `Authorization` header value (if any) and the form.
    ///
    /// # Errors
    /// `invalid_client` for malformed HTTP Basic credentials; `invalid_request` when both
    /// methods are used or the ids differ, or a parameter is repeated.
    pub fn from_request(form: &OAuthForm, authorization: Option<&str>) -> Result<Self, AppError> {
        let basic = basic_credentials(authorization)?;
        let form_id = form.get("client_id")?.map(str::to_owned);
        let form_secret = form
            .get("client_secret")?
            .map(|s| Zeroizing::new(s.to_owned()));
        // Swagger UI and some libraries send `Basic Og==` (an empty id and secret) when no
        // client is configured: that names no client at all.
        let basic = basic.filter(|(id, secret)| !(id.is_empty() && secret.is_empty()));
        match basic {
            Some((id, secret)) => {
                if form_secret.is_some() {
                    return Err(AppError::invalid_request(
                        "use one client authentication method: HTTP Basic or client_secret, not both (RFC 6749 §2.3.1)",
                    ));
                }
                if form_id.as_deref().is_some_and(|f| f != id) {
                    return Err(AppError::invalid_request(
                        "client_id in the form differs from HTTP Basic",
                    ));
                }
                Ok(Self {
                    id: Some(id),
                    secret: (!secret.is_empty()).then_some(secret),
                })
            }
            None => Ok(Self {
                id: form_id,
                secret: form_secret,
            }),
        }
    }
}

/// The client id and secret of an `Authorization: Basic` header value (RFC 7617 §2:
/// `Basic` 1*SP token68, the scheme case-insensitive), or `None` for no header or one of
/// another scheme.
///
/// # Errors
/// `invalid_client` (401 with the Basic challenge, RFC 6749 §5.2) naming what is malformed:
/// a client that tried to authenticate is never served as the public client.
pub fn basic_credentials(
    authorization: Option<&str>,
) -> Result<Option<(String, Zeroizing<String>)>, AppError> {
    let Some(value) = authorization else {
        return Ok(None);
    };
    let value = value.trim_matches([' ', '\t']);
    // The auth-scheme is a token (RFC 9110 §11.1): it ends at the first non-tchar.
    let scheme_len = value
        .find(|c: char| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)))
        .unwrap_or(value.len());
    let Some((scheme, rest)) = value.split_at_checked(scheme_len) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let token68 = rest.trim_start_matches(' ');
    let decoded = if token68.len() == rest.len() {
        Err("send `Basic`, a space and base64(client_id:client_secret)")
    } else {
        decode_basic(token68)
    };
    decoded.map(Some).map_err(|why| {
        AppError::invalid_client(format!(
            "malformed HTTP Basic credentials: {why} (RFC 6749 §2.3.1)"
        ))
    })
}

/// Decodes the token68 of HTTP Basic client authentication (RFC 6749 §2.3.1): base64 of
/// `id:secret`, each part form-urlencoded first (Appendix B). The text is split at its first
/// `:` (an encoded id holds none; the secret may), then each part is percent-decoded, `+`
/// being a space. A raw `&` or `=` is a character of the value like any other: a value is
/// not a form of pairs (this decoder once read `a&v=b` as `b`, the last pair's value).
///
/// # Errors
/// What is malformed: not base64, no `:`, a `%` without two hex digits after it, or a
/// decoded character outside `VSCHAR` (%x20-7E, RFC 6749 Appendix A.1, A.2).
pub fn decode_basic(b64: &str) -> Result<(String, Zeroizing<String>), &'static str> {
    use base64::Engine as _;
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim_matches(' '))
            .map_err(|_| "not base64")?,
    );
    let mut parts = raw.splitn(2, |b| *b == b':');
    let (Some(id), Some(secret)) = (parts.next(), parts.next()) else {
        return Err("no `:` between the client id and the secret");
    };
    let id = form_urldecode(id)?;
    Ok((id.as_str().to_owned(), form_urldecode(secret)?))
}

/// Reverses the application/x-www-form-urlencoded encoding of one value (RFC 6749
/// Appendix B; WHATWG URL §5.1 without the split into pairs): `+` is a space, `%HH` a byte.
/// Only `VSCHAR` may result (RFC 6749 Appendix A.1, A.2).
fn form_urldecode(part: &[u8]) -> Result<Zeroizing<String>, &'static str> {
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
    // Never longer than its input: no reallocation leaves a copy of the secret behind.
    let mut out = Zeroizing::new(String::with_capacity(part.len()));
    let mut bytes = part.iter();
    while let Some(&b) = bytes.next() {
        let decoded = match b {
            b'+' => b' ',
            b'%' => match (hex(bytes.next()), hex(bytes.next())) {
                (Some(hi), Some(lo)) => u8::try_from(hi * 16 + lo).unwrap_or(0),
                _ => return Err("a `%` not followed by two hex digits"),
            },
            other => other,
        };
        if !(0x20..=0x7e).contains(&decoded) {
            return Err("a client id and secret hold only visible ASCII and spaces");
        }
        out.push(char::from(decoded));
    }
    Ok(out)
}

/// The grant's own parameters.
pub enum Grant {
    /// RFC 6749 §4.3.2, optionally with a second factor in the same request.
    Password {
        /// `username`.
        username: String,
        /// `password`.
        password: Zeroizing<String>,
        /// `scope`.
        scope: Option<String>,
        /// `otp` or `recovery_code`.
        second_factor: Option<SecondFactor>,
    },
    /// RFC 6749 §6.
    RefreshToken {
        /// `refresh_token`.
        refresh_token: Zeroizing<String>,
        /// `scope`.
        scope: Option<String>,
    },
    /// The MFA grant: an `mfa_token` with `otp` or `recovery_code`.
    Mfa {
        /// `mfa_token`.
        mfa_token: Zeroizing<String>,
        /// `otp`.
        otp: Option<Zeroizing<String>>,
        /// `recovery_code`.
        recovery_code: Option<Zeroizing<String>>,
    },
    /// RFC 6749 §4.4.2.
    ClientCredentials {
        /// `scope`.
        scope: Option<String>,
    },
}

impl Grant {
    /// Reads the parameters `grant_type` needs.
    ///
    /// # Errors
    /// `invalid_request` naming a missing or repeated parameter, or both `otp` and
    /// `recovery_code` on the password grant.
    pub fn from_form(form: &OAuthForm, grant_type: GrantType) -> Result<Self, AppError> {
        let owned = |s: Option<&str>| s.map(|s| Zeroizing::new(s.to_owned()));
        Ok(match grant_type {
            GrantType::Password => {
                // A second factor may come with the password (one-step MFA login; the only
                // way in while the username is locked, see docs/security.md).
                let second_factor = match (form.get("otp")?, form.get("recovery_code")?) {
                    (None, None) => None,
                    (Some(c), None) => Some(SecondFactor::Otp(Zeroizing::new(c.to_owned()))),
                    (None, Some(c)) => {
                        Some(SecondFactor::RecoveryCode(Zeroizing::new(c.to_owned())))
                    }
                    (Some(_), Some(_)) => {
                        return Err(AppError::invalid_request(
                            "send at most one of `otp` and `recovery_code`",
                        ));
                    }
                };
                Self::Password {
                    username: form.require("username")?.to_owned(),
                    password: Zeroizing::new(form.require("password")?.to_owned()),
                    scope: form.get("scope")?.map(str::to_owned),
                    second_factor,
                }
            }
            GrantType::RefreshToken => Self::RefreshToken {
                refresh_token: Zeroizing::new(form.require("refresh_token")?.to_owned()),
                scope: form.get("scope")?.map(str::to_owned),
            },
            GrantType::Mfa => Self::Mfa {
                mfa_token: Zeroizing::new(form.require("mfa_token")?.to_owned()),
                otp: owned(form.get("otp")?),
                recovery_code: owned(form.get("recovery_code")?),
            },
            GrantType::ClientCredentials => Self::ClientCredentials {
                scope: form.get("scope")?.map(str::to_owned),
            },
        })
    }
}

/// A whole `POST /token` request, parsed but not authenticated.
pub struct TokenRequest {
    /// Which grant.
    pub grant_type: GrantType,
    /// The client as presented (not yet authenticated).
    pub client: PresentedClient,
    /// The grant's parameters.
    pub grant: Grant,
}

impl TokenRequest {
    /// Parses a request from its `Content-Type` and `Authorization` header values and its
    /// body, in the handler's order (minus the client lookup).
    ///
    /// # Errors
    /// The `invalid_request`, `invalid_client` or `unsupported_grant_type` error the
    /// endpoint would answer.
    pub fn parse(
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<Self, AppError> {
        let form = OAuthForm::parse(content_type, body)?;
        let grant_type = GrantType::from_form(&form)?;
        let client = PresentedClient::from_request(&form, authorization)?;
        let grant = Grant::from_form(&form, grant_type)?;
        Ok(Self {
            grant_type,
            client,
            grant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    /// `(content type, authorization, body, expected error code or "ok")`.
    type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a [u8], &'a str);

    #[test]
    fn basic_credentials_are_decoded_per_rfc_6749_section_2_3_1() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for (text, id, secret) in [
            ("my%20client:s%3Acret", "my client", "s:cret"),
            ("svc:a:b", "svc", "a:b"),
            ("a+b:c+d", "a b", "c d"),
            // Raw `&` and `=` are characters, not pair separators: these read as `b` (the
            // last pair's value) and as the empty string before.
            ("a&v=b:s&v=t", "a&v=b", "s&v=t"),
            ("&b:&", "&b", "&"),
            ("svc%26x:%3d", "svc&x", "="),
            (":", "", ""),
            ("svc:", "svc", ""),
        ] {
            let (got_id, got_secret) = decode_basic(&b64(text)).unwrap();
            assert_eq!(
                (got_id.as_str(), got_secret.as_str()),
                (id, secret),
                "{text}"
            );
        }
        for bad in [
            "!!!".to_owned(),
            b64("no colon"),
            b64("svc:%zz"),
            b64("svc:%4"),
            b64("svc%:x"),
            b64("svc:%00"),
            b64("svc:a\tb"),
            b64("svc:%ff"),
            b64("sv\u{e9}c:x"),
        ] {
            assert!(decode_basic(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_header_of_the_basic_scheme_must_hold_credentials() {
        let client = |v: &str| basic_credentials(Some(v)).map(|c| c.map(|(id, _)| id));
        assert_eq!(client("Basic c3ZjOng=").unwrap().as_deref(), Some("svc"));
        assert_eq!(client("bAsIc  c3ZjOng=").unwrap().as_deref(), Some("svc"));
        assert_eq!(client("Bearer abc").unwrap(), None);
        assert_eq!(client("Basicc3ZjOng=").unwrap(), None);
        for bad in [
            "Basic",
            "Basic\tc3ZjOng=",
            "Basic c3Zj Ong=",
            "Basic c3ZjOg",
        ] {
            let e = client(bad).unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (401, "invalid_client"),
                "{bad}"
            );
            assert!(e.description().starts_with("malformed HTTP Basic"), "{bad}");
        }
    }

    fn error_of(r: Result<TokenRequest, AppError>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => e.code().to_owned(),
        }
    }

    #[test]
    fn the_tutorial_form_is_a_password_grant() {
        let r = TokenRequest::parse(FORM, None, b"username=johndoe&password=correct+horse")
            .unwrap_or_else(|_| panic!("parses"));
        assert_eq!(r.grant_type, GrantType::Password);
        match r.grant {
            Grant::Password {
                username, password, ..
            } => {
                assert_eq!(username, "johndoe");
                assert_eq!(password.as_str(), "correct horse");
            }
            _ => panic!("a password grant"),
        }
    }

    #[test]
    fn malformed_requests_get_the_endpoint_errors() {
        let cases: &[Case<'_>] = &[
            (Some("application/json"), None, b"{}", "invalid_request"),
            (None, None, b"username=a&password=b", "invalid_request"),
            (FORM, None, b"grant_type=implicit", "unsupported_grant_type"),
            (
                FORM,
                None,
                b"grant_type=password&grant_type=password",
                "invalid_request",
            ),
            (
                FORM,
                None,
                b"username=a&username=b&password=c",
                "invalid_request",
            ),
            (FORM, None, b"grant_type=refresh_token", "invalid_request"),
            (
                FORM,
                Some("Basic !!!"),
                b"grant_type=client_credentials",
                "invalid_client",
            ),
            (
                FORM,
                Some("Basic YTpi"),
                b"grant_type=client_credentials&client_secret=c",
                "invalid_request",
            ),
            (
                FORM,
                None,
                b"username=a&password=b&otp=1&recovery_code=2",
                "invalid_request",
            ),
            (FORM, None, b"\xff\xfe=\xff", "invalid_request"),
            (FORM, None, b"grant_type=client_credentials", "ok"),
            (
                FORM,
                Some("Basic Og=="),
                b"grant_type=refresh_token&refresh_token=x",
                "ok",
            ),
        ];
        for (ct, auth, body, want) in cases {
            let got = error_of(TokenRequest::parse(*ct, *auth, body));
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(body));
        }
    }
}
