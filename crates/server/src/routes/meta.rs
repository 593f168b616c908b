//! Health, JWKS and discovery documents (RFC 8414, OpenID Connect Discovery 1.0).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tessera_auth::Profile;
use tessera_auth::security::MFA_GRANT_TYPE;

use crate::state::AppState;

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "discovery", responses((status = 200, description = "The process is up", body = crate::openapi::JsonObject)))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers (within 2 s).
#[utoipa::path(get, path = "/readyz", tag = "discovery", responses(
    (status = 200, description = "The database answers", body = crate::openapi::JsonObject),
    (status = 503, description = "The database is unreachable", body = crate::openapi::JsonObject)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let ping = tokio::time::timeout(
        Duration::from_secs(2),
        tessera_auth::store::Store::ping(state.db()),
    )
    .await;
    match ping {
        Ok(Ok(())) => {
            Json(json!({"status": "ready", "database": state.db().backend()})).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "database": "unreachable"})),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "database": "timeout"})),
        )
            .into_response(),
    }
}

/// `GET /.well-known/jwks.json`: public keys only, cacheable for less than the key
/// publish-ahead delay so verifiers always see a key before it signs.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    responses((status = 200, description = "Public signing keys", body = crate::openapi::JwkSet, content_type = "application/jwk-set+json")))]
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let ring = state.auth.key_ring();
    let max_age = state.auth.keys().jwks_max_age();
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json".to_owned()),
            (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
        ],
        ring.jwks_json.clone(),
    )
        .into_response()
}

fn metadata(state: &AppState, openid: bool) -> serde_json::Value {
    let base = &state.config.public_url;
    let alg = state.auth.signing_algorithm().as_str();
    let mut m = json!({
        "issuer": state.config.issuer,
        "token_endpoint": format!("{base}/token"),
        "revocation_endpoint": format!("{base}/revoke"),
        "introspection_endpoint": format!("{base}/introspect"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        // No `registration_endpoint`: RFC 8414 §2 reserves it for RFC 7591 dynamic client
        // registration, and `POST /users` registers users, not clients.
        "grant_types_supported": ["password", "refresh_token", "client_credentials", MFA_GRANT_TYPE],
        "response_types_supported": [],
        "scopes_supported": state.config.default_scopes,
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "bearer"],
        // No `token_endpoint_auth_signing_alg_values_supported`: RFC 8414 §2 defines it for
        // the JWT client authentication of `private_key_jwt` and `client_secret_jwt`,
        // which are not offered.
        "service_documentation": format!("{base}/docs"),
    });
    if let Some(obj) = m.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
        if openid {
            // No `userinfo_endpoint`: `/users/me` is not an OpenID Connect UserInfo endpoint
            // (Core §5.3.2 requires a `sub` member, and the `openid` scope to call it), and
            // the document exists for JWT middleware that finds `jwks_uri` this way.
            obj.insert("subject_types_supported".into(), json!(["public"]));
            obj.insert("id_token_signing_alg_values_supported".into(), json!([alg]));
            // The claims our access tokens carry, as `auth` issues them per profile: the
            // tutorial's have no `aud` and add `uid` (their `sub` is the username).
            let audience_or_uid = match state.config.profile {
                Profile::Standard => "aud",
                Profile::Tutorial => "uid",
            };
            obj.insert(
                "claims_supported".into(),
                json!([
                    "iss",
                    "sub",
                    audience_or_uid,
                    "exp",
                    "iat",
                    "jti",
                    "client_id",
                    "scope",
                    "preferred_username",
                    "roles",
                    "role",
                    "sid",
                    "amr",
                    "auth_time"
                ]),
            );
        }
        if state.config.profile == Profile::Tutorial {
            obj.insert("tessera_profile".into(), json!("tutorial"));
        }
    }
    m
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414 §3).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery",
    responses((status = 200, description = "RFC 8414 metadata", body = crate::openapi::JsonObject)))]
pub(crate) async fn oauth_metadata(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(metadata(&state, false)),
    )
        .into_response()
}

/// `GET /.well-known/openid-configuration`.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, description = "OpenID Connect discovery metadata", body = crate::openapi::JsonObject)))]
pub(crate) async fn openid_configuration(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(metadata(&state, true)),
    )
        .into_response()
}
