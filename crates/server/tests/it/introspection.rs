//! `POST /introspect` (RFC 7662).

use tessera_testkit::spawn_app;

use crate::json;

async fn introspect(
    app: &tessera_testkit::TestApp,
    caller: &str,
    token: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/introspect"))
        .bearer_auth(caller)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn admins_see_active_access_and_refresh_tokens() {
    let app = spawn_app().await;
    let admin = app.admin_login().await;
    let r = json(introspect(&app, &admin.access_token, &admin.access_token).await).await;
    assert_eq!(r["active"], true);
    assert_eq!(r["token_type"], "bearer");
    assert_eq!(r["token_use"], "access_token");
    assert_eq!(r["username"], "admin");
    assert_eq!(r["client_id"], "tessera");
    assert_eq!(r["iss"], app.base);
    let r = json(
        introspect(
            &app,
            &admin.access_token,
            admin.refresh_token.as_deref().unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(r["active"], true);
    assert!(r.get("token_type").is_none(), "{r}");
    assert_eq!(r["token_use"], "refresh_token");
}

/// RFC 7662 §2.1: like `/revoke`'s (RFC 7009 §2.1), the hint is only a hint; a value the
/// server does not know, or a wrong one, answers as no hint would.
#[tokio::test]
async fn an_unknown_or_wrong_token_type_hint_is_no_hint() {
    let app = spawn_app().await;
    let admin = app.admin_login().await;
    let rt = admin.refresh_token.clone().unwrap();
    for (token, used) in [
        (admin.access_token.as_str(), "access_token"),
        (rt.as_str(), "refresh_token"),
    ] {
        for hint in ["foo", "id_token", "access_token", "refresh_token"] {
            let res = app
                .client
                .post(app.url("/introspect"))
                .bearer_auth(&admin.access_token)
                .form(&[("token", token), ("token_type_hint", hint)])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{used} {hint}");
            let r = json(res).await;
            assert_eq!(r["active"], true, "{used} {hint}: {r}");
            assert_eq!(r["token_use"], used, "{used} {hint}: {r}");
        }
    }
    // Like every parameter, it may appear once (RFC 6749 §3.1), as at `/revoke`.
    let res = app
        .client
        .post(app.url("/introspect"))
        .bearer_auth(&admin.access_token)
        .form(&[
            ("token", admin.access_token.as_str()),
            ("token_type_hint", "access_token"),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"], "invalid_request");
}

#[tokio::test]
async fn revoked_rotated_and_junk_tokens_are_inactive() {
    let app = spawn_app().await;
    let admin = app.admin_login().await;
    let other = app.admin_login().await;
    let rt = other.refresh_token.clone().unwrap();
    let _ = app.refresh(&rt).await;
    let r = json(introspect(&app, &admin.access_token, &rt).await).await;
    assert_eq!(
        r,
        serde_json::json!({"active": false}),
        "a rotated refresh token is inactive"
    );
    app.client
        .post(app.url("/revoke"))
        .form(&[("token", &other.access_token)])
        .send()
        .await
        .unwrap();
    let r = json(introspect(&app, &admin.access_token, &other.access_token).await).await;
    assert_eq!(r, serde_json::json!({"active": false}));
    let r = json(introspect(&app, &admin.access_token, "junk").await).await;
    assert_eq!(r, serde_json::json!({"active": false}));
}

#[tokio::test]
async fn introspection_requires_an_admin_caller() {
    let app = spawn_app().await;
    app.create_user("frank", "violet gramophone harbour", &["user"])
        .await;
    let frank = app.login("frank", "violet gramophone harbour").await;
    let res = introspect(&app, &frank.access_token, &frank.access_token).await;
    assert_eq!(res.status(), 403);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    let res = app
        .client
        .post(app.url("/introspect"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn an_access_token_past_its_exp_is_inactive_even_within_the_leeway() {
    let app = spawn_app().await;
    let old = app.admin_login().await;
    app.advance(old.expires_in - 1).await;
    let r = json(introspect(&app, &old.access_token, &old.access_token).await).await;
    assert_eq!(r["active"], true, "one second to go");
    app.advance(2).await;
    // Still accepted as a bearer (the 30 s leeway is for other hosts' clocks), but the
    // issuer's own answer is that it has expired.
    assert_eq!(app.me(&old.access_token).await.status(), 200);
    let r = json(introspect(&app, &old.access_token, &old.access_token).await).await;
    assert_eq!(r, serde_json::json!({"active": false}));
}

#[tokio::test]
async fn a_client_credentials_token_has_no_username() {
    // RFC 7662 §2.2: `username` is the resource owner who authorized the token. A
    // client-credentials token has none; it used to name the client id there.
    let app = spawn_app().await;
    let admin = app.admin_login().await;
    let (_, secret) = app
        .state
        .auth
        .create_client(
            "reports",
            &["reports:read".to_owned()],
            true,
            &tessera_auth::Actor::System,
        )
        .await
        .unwrap();
    let res = app
        .client
        .post(app.url("/token"))
        .basic_auth("reports", secret.as_deref().map(String::as_str))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let service = json(res).await["access_token"].as_str().unwrap().to_owned();
    let r = json(introspect(&app, &admin.access_token, &service).await).await;
    assert_eq!(r["active"], true);
    assert_eq!(r["client_id"], "reports");
    assert_eq!(r["sub"], "reports");
    assert!(r.get("username").is_none(), "{r}");
    // A user's token keeps it.
    let r = json(introspect(&app, &admin.access_token, &admin.access_token).await).await;
    assert_eq!(r["username"], "admin");
}
