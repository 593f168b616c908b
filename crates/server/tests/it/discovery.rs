//! JWKS (RFC 7517) and the metadata documents (RFC 8414, OpenID Connect Discovery).

use tessera_jose::{JwkSet, KeySet, NoCustomClaims, Validation};
use tessera_testkit::{spawn_app, spawn_app_with};

use crate::json;

#[tokio::test]
async fn the_jwks_has_public_keys_only_and_verifies_our_tokens() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/jwk-set+json");
    let cc = res.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cc.starts_with("public, max-age="), "{cc}");
    let text = res.text().await.unwrap();
    for private in [
        "\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"dq\"", "\"qi\"", "\"k\"",
    ] {
        assert!(!text.contains(private), "JWKS leaks {private}: {text}");
    }
    let jwks = JwkSet::from_json(&text).unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let key = &jwks.keys[0];
    assert_eq!(key.key_use.as_deref(), Some("sig"));
    assert_eq!(key.alg.as_deref(), Some("ES256"));
    assert_eq!(
        key.kid.as_deref(),
        Some(key.thumbprint().unwrap().as_str()),
        "kid is the RFC 7638 thumbprint"
    );
    let set = KeySet::from_jwks(&jwks).unwrap();
    let t = app.admin_login().await;
    let v = Validation::new()
        .with_issuer(app.base.clone())
        .with_audience(app.base.clone())
        .with_required_typ("at+jwt");
    set.verify_jwt::<NoCustomClaims>(&t.access_token, &v, app.now())
        .unwrap();
}

#[tokio::test]
async fn authorization_server_metadata_has_what_clients_need() {
    let app = spawn_app_with(|c| c.registration_open = true).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let m = json(app.client.get(app.url(path)).send().await.unwrap()).await;
        assert_eq!(m["issuer"], app.base, "{path}");
        assert_eq!(m["token_endpoint"], app.url("/token"));
        assert_eq!(m["revocation_endpoint"], app.url("/revoke"));
        assert_eq!(m["introspection_endpoint"], app.url("/introspect"));
        assert_eq!(m["jwks_uri"], app.url("/.well-known/jwks.json"));
        assert_eq!(
            m["grant_types_supported"],
            serde_json::json!([
                "password",
                "refresh_token",
                "client_credentials",
                "urn:tessera:params:oauth:grant-type:mfa-otp"
            ]),
            "every grant /token accepts"
        );
        // RFC 8414 §2: client registration (RFC 7591), which user sign-up is not, and the
        // algorithms of JWT client authentication, which is not offered.
        for absent in [
            "registration_endpoint",
            "token_endpoint_auth_signing_alg_values_supported",
        ] {
            assert!(m.get(absent).is_none(), "{path}: {absent}");
        }
        assert!(
            m["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&"none".into())
        );
        assert!(m["scopes_supported"].is_array());
        assert!(m["response_types_supported"].is_array());
    }
    let oidc = json(
        app.client
            .get(app.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // `/users/me` is not an OpenID Connect UserInfo endpoint (no `sub`): not advertised.
    assert!(oidc.get("userinfo_endpoint").is_none(), "{oidc}");
    assert_eq!(
        oidc["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    assert_eq!(
        oidc["subject_types_supported"],
        serde_json::json!(["public"])
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let h = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let r = json(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(r["status"], "ready");
    assert_eq!(r["database"], "sqlite");
}

async fn openapi_document() -> serde_json::Value {
    let app = spawn_app().await;
    json(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn optional_query_parameters_are_documented_as_optional_and_in_the_query() {
    let doc = openapi_document().await;
    for (path, method) in [
        ("/logout", "post"),
        ("/admin/audit", "get"),
        ("/admin/sessions", "get"),
        ("/admin/keys/rotate", "post"),
        ("/revocations", "get"),
    ] {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
        assert!(!params.is_empty(), "{method} {path}");
        for p in params {
            assert_eq!(p["in"], "query", "{method} {path}: {p}");
            assert_ne!(p["required"], true, "{method} {path}: {p}");
        }
    }
}

#[tokio::test]
async fn operations_document_the_errors_extractors_and_middleware_give() {
    let doc = openapi_document().await;
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has_input = op.get("requestBody").is_some()
                || op["parameters"].as_array().is_some_and(|p| !p.is_empty());
            // A malformed or repeated `Authorization` header is 400 `invalid_request`
            // (RFC 6750 §3.1) wherever a bearer token is taken.
            let takes_bearer = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if has_input || takes_bearer {
                assert!(responses.contains_key("400"), "{method} {path}: 400");
            }
            let from_memory = matches!(
                path.as_str(),
                "/healthz" | "/users/me" | "/.well-known/jwks.json"
            ) || path.starts_with("/.well-known/");
            if !from_memory {
                assert!(responses.contains_key("503"), "{method} {path}: 503");
            }
        }
    }
    assert!(doc["paths"]["/token"]["post"]["responses"]["429"].is_object());
}

#[tokio::test]
async fn claims_supported_names_the_claims_our_tokens_carry_in_each_profile() {
    // The OpenID document listed `aud` in the tutorial profile, whose tokens have none,
    // and not the `uid` they do have.
    for profile in [
        tessera_auth::Profile::Standard,
        tessera_auth::Profile::Tutorial,
    ] {
        let app = spawn_app_with(|c| c.profile = profile).await;
        let oidc = json(
            app.client
                .get(app.url("/.well-known/openid-configuration"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let listed: Vec<&str> = oidc["claims_supported"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let token = app.admin_login().await.access_token;
        let claims = crate::claims_of(&token);
        let carried: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for claim in &carried {
            assert!(
                listed.contains(claim),
                "{profile:?}: `{claim}` not in {listed:?}"
            );
        }
        for claim in ["aud", "uid"] {
            assert_eq!(
                listed.contains(&claim),
                carried.contains(&claim),
                "{profile:?}: `{claim}` listed {listed:?}, carried {carried:?}"
            );
        }
    }
}
