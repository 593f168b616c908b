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
    let res = app.logout(&t.access_token).await;
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
    let res = app.logout(&t.access_token).await;
    assert!(res.status().is_success());
    assert_eq!(app.me(&t.access_token).await.status(), 401);
    let body = json(app.me(&t.access_token).await).await;
    assert_eq!(body["error"], "invalid_token");
}

/// A token signed with the server's current key, with `claims` and, if `kid` is false,
/// no `kid` in its header (Tessera never signs such a token; a holder of the key could).
pub(crate) fn signed_like_the_server(
    app: &TestApp,
    claims: &serde_json::Value,
    kid: bool,
) -> String {
    let signer = app.state.auth.key_ring().signer.clone();
    let mut header = serde_json::json!({"alg": signer.algorithm().as_str(), "typ": "at+jwt"});
    if kid {
        header["kid"] = signer.kid().unwrap().into();
    }
    let b64 = |v: &serde_json::Value| tessera_jose::base64url::encode(v.to_string());
    let input = format!("{}.{}", b64(&header), b64(claims));
    let signature = signer.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", tessera_jose::base64url::encode(signature))
}

#[tokio::test]
async fn a_token_without_kid_is_not_cached_so_it_dies_with_its_key() {
    // A one-key set accepts a token without `kid` (RFC 7515 §4.1.4 leaves the choice to
    // the recipient). Cached, it would have passed the key check whichever key the set
    // held later: here, after its own key was revoked and replaced.
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let kid = header_of(&t.access_token)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.state.auth.key_ring().verifier.len(), 1);
    let kidless = signed_like_the_server(&app, &crate::claims_of(&t.access_token), false);
    assert_eq!(app.me(&kidless).await.status(), 200);
    assert_eq!(app.me(&kidless).await.status(), 200);
    app.state
        .auth
        .keys()
        .revoke(app.state.db(), &kid, app.now())
        .await
        .unwrap();
    assert_eq!(app.state.auth.key_ring().verifier.len(), 1);
    assert_eq!(app.me(&kidless).await.status(), 401);
}

#[tokio::test]
async fn an_empty_jti_means_the_same_on_a_cache_hit_and_a_miss() {
    // Revoking an access token denies its `jti`; an empty one identifies nothing, so it is
    // not denied, and a hit and a miss agree (before, the miss refused every token with an
    // empty `jti` while the hit let the revoked one through).
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let mut claims = crate::claims_of(&t.access_token);
    claims["jti"] = "".into();
    let first = signed_like_the_server(&app, &claims, true);
    claims["exp"] = (claims["exp"].as_i64().unwrap() - 1).into();
    let second = signed_like_the_server(&app, &claims, true);
    cached(&app, &first).await;
    let res = app
        .client
        .post(app.url("/revoke"))
        .form(&[("token", first.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let hit = app.me(&first).await.status();
    let miss = app.me(&second).await.status();
    assert_eq!((hit.as_u16(), miss.as_u16()), (200, 200));
    // The session it names still ends it, on both paths.
    let res = app.logout(&t.access_token).await;
    assert!(res.status().is_success());
    assert_eq!(app.me(&first).await.status(), 401);
    assert_eq!(app.me(&second).await.status(), 401);
}
