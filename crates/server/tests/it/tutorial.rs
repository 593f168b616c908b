//! The seed tutorial's client must work unchanged: a form POST to /token with username and
//! password, then a Bearer GET of /users/me returning {username, role}.

use tessera_jose::{NoCustomClaims, Validation, VerifyingKey};
use tessera_testkit::{ADMIN_PASSWORD, spawn_app, spawn_app_with};

use crate::{claims_of, header_of, json};

#[tokio::test]
async fn the_tutorial_client_logs_in_and_reads_users_me() {
    let app = spawn_app().await;
    app.create_user("johndoe", "correct horse battery", &["user"])
        .await;
    // Exactly what OAuth2PasswordRequestForm clients send (no grant_type).
    let res = app
        .client
        .post(app.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=johndoe&password=correct+horse+battery")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = json(res).await;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap();
    let me = app.me(token).await;
    assert_eq!(me.status(), 200);
    assert_eq!(me.headers()["content-type"], "application/json");
    let me = json(me).await;
    assert_eq!(me["username"], "johndoe");
    assert_eq!(me["role"], "user");
    assert_eq!(me["roles"], serde_json::json!(["user"]));
    let keys: Vec<&str> = me.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = [
        "id",
        "username",
        "role",
        "roles",
        "scope",
        "client_id",
        "session_id",
        "amr",
        "expires_at",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn grant_type_password_is_accepted_too() {
    let app = spawn_app().await;
    let res = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("scope", ""),
        ])
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn access_tokens_follow_rfc_9068() {
    let app = spawn_app().await;
    let user = app
        .create_user("alice", "a long enough password", &["editor", "user"])
        .await;
    let tokens = app.login("ALICE", "a long enough password").await;
    let header = header_of(&tokens.access_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].is_string());
    let c = claims_of(&tokens.access_token);
    assert_eq!(c["iss"], app.base);
    assert_eq!(c["aud"], app.base);
    assert_eq!(c["sub"], user.id.to_string());
    assert_eq!(c["client_id"], "tessera");
    assert_eq!(c["scope"], "profile");
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["roles"], serde_json::json!(["editor", "user"]));
    assert_eq!(c["role"], "editor");
    assert!(c["jti"].as_str().unwrap().len() >= 22);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    // Nothing secret in tokens.
    let text = c.to_string();
    assert!(
        !text.contains("password") && !text.contains("argon2"),
        "{text}"
    );
}

#[tokio::test]
async fn tutorial_profile_tokens_verify_with_the_tutorials_own_check() {
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    let app = spawn_app_with(|c| {
        c.profile = tessera_auth::Profile::Tutorial;
        let key = tessera_jose::SigningKey::from_hmac_secret(
            tessera_jose::Algorithm::Hs256,
            secret.as_bytes(),
        )
        .unwrap();
        c.signing = tessera_server::config::SigningConfig::Hmac(key);
    })
    .await;
    app.create_user("johndoe", "correct horse battery", &["admin"])
        .await;
    let tokens = app.login("johndoe", "correct horse battery").await;
    // jwt.decode(token, SECRET_KEY, algorithms=["HS256"]) then payload["sub"], payload["role"]:
    // HS256, no audience to check, `sub` is the username.
    let key =
        VerifyingKey::from_hmac_secret(tessera_jose::Algorithm::Hs256, secret.as_bytes()).unwrap();
    let now = app.now();
    let jwt = key
        .verify_jwt::<serde_json::Map<String, serde_json::Value>>(
            &tokens.access_token,
            &Validation::new(),
            now,
        )
        .unwrap();
    assert_eq!(jwt.claims.registered.sub.as_deref(), Some("johndoe"));
    assert!(jwt.claims.registered.aud.is_none());
    assert_eq!(jwt.claims.custom["role"], "admin");
    assert!(
        key.verify_jwt::<NoCustomClaims>(&tokens.access_token, &Validation::new(), now)
            .is_ok()
    );
    // And the server itself accepts its tutorial tokens.
    let me = json(app.me(&tokens.access_token).await).await;
    assert_eq!(me["username"], "johndoe");
    // The JWKS never publishes the shared secret.
    let jwks = json(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jwks["keys"], serde_json::json!([]));
}
