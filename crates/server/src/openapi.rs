//! The OpenAPI 3.1 document (`GET /openapi.json`), generated from the handler annotations,
//! and the Swagger UI at `/docs`, served from the binary (no CDN).
//!
//! The password flow is declared as an OAuth2 security scheme pointing at `/token`, so
//! "Authorize" in Swagger UI logs in with a username and password exactly as the tutorial's
//! FastAPI docs do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{
    Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes;

/// The API document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "JWT authentication server: OAuth 2.0 token endpoint (password, refresh_token, client_credentials), revocation (RFC 7009), introspection (RFC 7662), JWKS and discovery.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        routes::oauth::token,
        routes::oauth::revoke,
        routes::oauth::introspect,
        routes::feed::revocations,
        routes::oauth::logout,
        routes::session::create,
        routes::session::refresh,
        routes::session::logout,
        routes::users::me,
        routes::users::register,
        routes::account::change_password,
        routes::account::list_sessions,
        routes::account::revoke_session,
        routes::account::begin_totp,
        routes::account::confirm_totp,
        routes::account::disable_totp,
        routes::admin::list_users,
        routes::admin::create_user,
        routes::admin::show_user,
        routes::admin::set_roles,
        routes::admin::disable_user,
        routes::admin::enable_user,
        routes::admin::reset_password,
        routes::admin::delete_user,
        routes::admin::unlock_user,
        routes::admin::reset_mfa,
        routes::admin::revoke_user_sessions,
        routes::admin::audit,
        routes::admin::list_sessions,
        routes::admin::revoke_session,
        routes::admin::list_keys,
        routes::admin::rotate_keys,
        routes::meta::jwks,
        routes::meta::oauth_metadata,
        routes::meta::openid_configuration,
        routes::meta::healthz,
        routes::meta::readyz,
    ),
    modifiers(&SecuritySchemes, &CommonResponses),
    tags(
        (name = "oauth", description = "OAuth 2.0 endpoints"),
        (name = "session", description = "Cookie mode for browsers: HttpOnly session cookies and CSRF protection"),
        (name = "users", description = "The current user and registration"),
        (name = "admin", description = "Administration (admin role)"),
        (name = "discovery", description = "Keys, metadata and health"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new(
                    "/token",
                    Scopes::from_iter([("profile", "Your profile")]),
                ))],
                "Log in with a username and password (RFC 6749 §4.3).",
            )),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Paths answered from memory alone: no database, nothing that can time out.
const FROM_MEMORY: &[&str] = &[
    "/healthz",
    "/users/me",
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
];

/// Adds the answers that extractors and middleware give on any operation, so the document
/// lists every status the server can send (schemathesis checks it):
/// * 400 `invalid_request` on every operation with a body or parameters: a malformed body,
///   a missing or wrong `Content-Type` (reported as 400 in the RFC 6749 §5.2 shape rather
///   than axum's 415/422 plain text) or an invalid parameter; and on every operation that
///   takes a bearer token: a malformed `Authorization` header (RFC 6750 §3.1);
/// * 413 `invalid_request` on every operation with a body, for one over
///   `limits.max_body_bytes`;
/// * 503 `temporarily_unavailable` with `Retry-After` on every operation that touches the
///   database (unreachable, or refusing writes) or may exceed the request timeout.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in &mut openapi.paths.paths {
            let from_memory = FROM_MEMORY.contains(&path.as_str());
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let has_input = op.request_body.is_some()
                    || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let takes_bearer = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let responses = &mut op.responses.responses;
                if (has_input || takes_bearer) && !responses.contains_key("400") {
                    responses.insert(
                        "400".into(),
                        error("invalid_request: malformed body, wrong content type, invalid parameter, or a malformed or repeated Authorization header").into(),
                    );
                }
                if op.request_body.is_some() && !responses.contains_key("413") {
                    responses.insert(
                        "413".into(),
                        error("invalid_request: the body is over limits.max_body_bytes").into(),
                    );
                }
                if !from_memory && !responses.contains_key("503") {
                    responses.insert(
                        "503".into(),
                        error("temporarily_unavailable (with Retry-After): the database is unavailable or the request timed out").into(),
                    );
                }
            }
        }
    }
}

/// A role name (`admin`, `user`, ...).
#[derive(Debug, ToSchema)]
#[schema(pattern = r"^[a-z0-9_:.-]{1,64}$")]
#[allow(
    dead_code,
    reason = "schema only: roles are parsed by tessera_auth::model::Role"
)]
pub(crate) struct RoleName(String);

/// `POST /token` form fields (RFC 6749 §4.3.2, §4.4.2, §6).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(
    dead_code,
    reason = "schema only: the handler reads the form field by field"
)]
pub(crate) struct TokenRequest {
    /// `password` (the default when absent), `refresh_token`, `client_credentials` or
    /// `urn:tessera:params:oauth:grant-type:mfa-otp` (completes an `mfa_required` answer).
    grant_type: Option<String>,
    /// Password grant: the username.
    username: Option<String>,
    /// Password grant: the password.
    #[schema(format = Password)]
    password: Option<String>,
    /// Refresh grant: the refresh token.
    refresh_token: Option<String>,
    /// MFA grant: the `mfa_token` of the `mfa_required` answer.
    mfa_token: Option<String>,
    /// MFA grant, or password grant in one step: a TOTP code. While a username is locked
    /// after failed attempts, the password grant succeeds only with a code.
    otp: Option<String>,
    /// MFA grant, or password grant in one step: a single-use recovery code instead of `otp`.
    #[schema(format = Password)]
    recovery_code: Option<String>,
    /// Requested scope, space separated.
    scope: Option<String>,
    /// Client id (or use HTTP Basic).
    client_id: Option<String>,
    /// Client secret, for confidential clients (or use HTTP Basic).
    #[schema(format = Password)]
    client_secret: Option<String>,
}

/// `POST /session` form fields: a password sign-in (optionally with a one-step second
/// factor), or the second step of an MFA sign-in (`mfa_token` with `otp` or `recovery_code`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(
    dead_code,
    reason = "schema only: the handler reads the form field by field"
)]
pub(crate) struct SessionRequest {
    /// The username (password step).
    username: Option<String>,
    /// The password (password step).
    #[schema(format = Password)]
    password: Option<String>,
    /// The `mfa_token` of an `mfa_required` answer (second step).
    mfa_token: Option<String>,
    /// A TOTP code.
    otp: Option<String>,
    /// A single-use recovery code instead of `otp`.
    #[schema(format = Password)]
    recovery_code: Option<String>,
}

/// The CSRF token as a form field (or send the `X-CSRF-Token` header instead).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code, reason = "schema only")]
pub(crate) struct CsrfForm {
    /// The value of the `__Host-tessera_csrf` cookie.
    csrf_token: Option<String>,
}

/// A token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
#[allow(
    dead_code,
    reason = "schema only: the handler serializes tessera_auth::TokenResponse"
)]
pub(crate) struct TokenResponse {
    /// The access token (an RFC 9068 JWT).
    access_token: String,
    /// Always `bearer`.
    token_type: String,
    /// Lifetime of the access token in seconds.
    expires_in: i64,
    /// The refresh token (absent for client_credentials).
    refresh_token: Option<String>,
    /// Granted scope (absent when none is granted: a client with no scopes).
    scope: Option<String>,
}

/// An error (RFC 6749 §5.2, RFC 6750 §3).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "schema only: AppError builds the body")]
pub(crate) struct ErrorBody {
    /// Error code, e.g. `invalid_grant`, `invalid_token`, `not_found`.
    error: String,
    /// Human-readable explanation.
    error_description: String,
    /// For 401s on protected resources: the tutorial's FastAPI-style message.
    detail: Option<String>,
    /// For 5xx: the request id to quote when reporting the problem.
    request_id: Option<String>,
}

/// `POST /revoke` form fields (RFC 7009 §2.1).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code, reason = "schema only")]
pub(crate) struct RevokeRequest {
    /// The access or refresh token to revoke (an empty value counts as absent, RFC 6749 §3.2).
    #[schema(min_length = 1)]
    token: String,
    /// `access_token` or `refresh_token`. Only a hint: every token type is searched, and
    /// any other value counts as no hint (RFC 7009 §2.1). Empty counts as absent
    /// (RFC 6749 §3.2).
    #[schema(value_type = String, required = false)]
    token_type_hint: Option<String>,
    /// Client id (or HTTP Basic).
    client_id: Option<String>,
    /// Client secret for confidential clients (or HTTP Basic).
    client_secret: Option<String>,
}

/// `POST /introspect` form fields (RFC 7662 §2.1).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code, reason = "schema only")]
pub(crate) struct IntrospectRequest {
    /// The token to inspect (an empty value counts as absent, RFC 6749 §3.2).
    #[schema(min_length = 1)]
    token: String,
    /// Accepted and not needed: every token type is searched, whatever the value
    /// (RFC 7662 §2.1).
    token_type_hint: Option<String>,
}

/// An introspection response (RFC 7662 §2.2); only `active` when inactive.
#[derive(Debug, Serialize, ToSchema)]
#[allow(
    dead_code,
    reason = "schema only: the handler serializes tessera_auth::Introspection"
)]
pub(crate) struct Introspection {
    active: bool,
    /// `bearer` for an access token (RFC 7662 §2.2, the RFC 6749 §5.1 type); absent for a
    /// refresh token.
    token_type: Option<String>,
    /// `access_token` or `refresh_token`.
    token_use: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    /// The resource owner's username (RFC 7662 §2.2); absent for a client-credentials
    /// token, which has none.
    username: Option<String>,
    sub: Option<String>,
    aud: Option<String>,
    iss: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
    sid: Option<String>,
}

/// A JSON Web Key Set (RFC 7517 §5), public keys only.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "schema only")]
pub(crate) struct JwkSet {
    /// Public JWKs with `kty`, `kid`, `alg`, `use` and the key's public members.
    keys: Vec<BTreeMap<String, serde_json::Value>>,
}

/// A JSON object (metadata documents, health).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "schema only")]
pub(crate) struct JsonObject(BTreeMap<String, serde_json::Value>);
