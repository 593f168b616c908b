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
        let mut basic = None;
        if let Some(auth) = authorization {
            let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
            if scheme.eq_ignore_ascii_case("basic") {
                basic =
                    Some(decode_basic(rest).ok_or_else(|| {
                        AppError::invalid_client("malformed HTTP Basic credentials")
                    })?);
            }
        }
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

/// Decodes `base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
pub fn decode_basic(b64: &str) -> Option<(String, Zeroizing<String>)> {
    use base64::Engine as _;
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(&raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    let dec = |s: &str| -> Option<String> {
        let pairs = Zeroizing::new(format!("v={s}"));
        serde_urlencoded::from_str::<Vec<(String, String)>>(&pairs)
            .ok()?
            .pop()
            .map(|(_, v)| v)
    };
    Some((dec(id)?, Zeroizing::new(dec(secret)?)))
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
    fn basic_credentials_are_url_decoded() {
        use base64::Engine as _;
        let enc = base64::engine::general_purpose::STANDARD.encode("my%20client:s%3Acret");
        let (id, secret) = decode_basic(&enc).unwrap_or_else(|| panic!("decodes"));
        assert_eq!((id.as_str(), secret.as_str()), ("my client", "s:cret"));
        assert!(decode_basic("!!!").is_none());
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
