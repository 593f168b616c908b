//! The verified-token cache behind every protected request: a cached token is refused as
//! soon as it is revoked, expires or loses its signing key, and the cache stays bounded.

use tessera_auth::Actor;
use tessera_testkit::{TestApp, spawn_app, spawn_app_with};

use crate::{header_of, json};

/// Presents `token` twice: the first request verifies and caches it, the second is a hit.
async fn cached(app: &TestApp, token: &str) {
    assert_eq!(app.me(token).await.status(), 200);
    assert_eq!(app.me(token).await.status(), 200);
    assert!(!app.state.auth.token_cache().is_empty());
}

#[tokio::test]
async fn a_cached_token_stops_working_at_logout() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    cached(&app, &t.access_token).await;
    let res = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(&t.access_token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(app.me(&t.access_token).await.status(), 401);
    assert_eq!(app.me(&t.access_token).await.status(), 401);
}

#[tokio::test]
async fn a_cached_token_stops_working_when_revoked_or_its_user_disabled() {
    let app = spawn_app().await;
    let user = app
        .create_user("erin", "violet gramophone harbour", &[])
        .await;
    let revoked = app.login("erin", "violet gramophone harbour").await;
    let other = app.login("erin", "violet gramophone harbour").await;
    cached(&app, &revoked.access_token).await;
    cached(&app, &other.access_token).await;
    let res = app
        .client
        .post(app.url("/revoke"))
        .form(&[("token", revoked.access_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.me(&revoked.access_token).await.status(), 401);
    assert_eq!(app.me(&other.access_token).await.status(), 200);
    app.state
        .auth
        .set_disabled(&user, true, &Actor::System, &Default::default())
        .await
        .unwrap();
    assert_eq!(app.me(&other.access_token).await.status(), 401);
}

#[tokio::test]
async fn an_expired_cached_token_is_refused() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    cached(&app, &t.access_token).await;
    let exp = crate::claims_of(&t.access_token)["exp"].as_i64().unwrap();
    let leeway = i64::try_from(app.state.config.leeway).unwrap();
    // The last second of validity (RFC 7519 §4.1.4 with the leeway), then the first after.
    app.clock.set(exp + leeway - 1);
    assert_eq!(app.me(&t.access_token).await.status(), 200);
    app.clock.set(exp + leeway);
    assert_eq!(app.me(&t.access_token).await.status(), 401);
    // And a clock moved back before `iat` (beyond the leeway) refuses it too.
    let iat = crate::claims_of(&t.access_token)["iat"].as_i64().unwrap();
    app.clock.set(iat - leeway - 1);
    assert_eq!(app.me(&t.access_token).await.status(), 401);
}

#[tokio::test]
async fn a_cached_token_dies_with_its_revoked_signing_key() {
    let app = spawn_app().await;
    let admin = app.admin_login().await;
    let t = app.admin_login().await;
    cached(&app, &t.access_token).await;
    let kid = header_of(&t.access_token)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    app.state
        .auth
        .keys()
        .revoke(app.state.db(), &kid, app.now())
        .await
        .unwrap();
    assert_eq!(app.me(&t.access_token).await.status(), 401);
    assert_eq!(app.me(&admin.access_token).await.status(), 401);
    let fresh = app.admin_login().await;
    assert_ne!(header_of(&fresh.access_token)["kid"], kid.as_str());
    assert_eq!(app.me(&fresh.access_token).await.status(), 200);
}

#[tokio::test]
async fn the_cache_holds_at_most_its_capacity() {
    let app = spawn_app_with(|c| c.token_cache_entries = 4).await;
    assert!(app.state.auth.token_cache().capacity() <= 4);
    let mut tokens = Vec::new();
    for _ in 0..12 {
        tokens.push(app.admin_login().await.access_token);
    }
    for t in tokens.iter().chain(tokens.iter()) {
        assert_eq!(app.me(t).await.status(), 200);
        assert!(app.state.auth.token_cache().len() <= 4);
    }
}

#[tokio::test]
async fn without_a_cache_every_check_still_holds() {
    let app = spawn_app_with(|c| c.token_cache_entries = 0).await;
    let t = app.admin_login().await;
    assert_eq!(app.me(&t.access_token).await.status(), 200);
    assert_eq!(app.state.auth.token_cache().len(), 0);
    let res = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(&t.access_token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(app.me(&t.access_token).await.status(), 401);
    let body = json(app.me(&t.access_token).await).await;
    assert_eq!(body["error"], "invalid_token");
}
