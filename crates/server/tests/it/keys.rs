//! Signing-key rotation: a new key is published before it signs, and the old one stays
//! published (and keeps verifying) until every token it signed has expired.

use tessera_testkit::{spawn_app, spawn_app_with};

use crate::{header_of, json};

async fn jwks_kids(app: &tessera_testkit::TestApp) -> Vec<String> {
    let j = json(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    j["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// `POST path` (`/admin/keys/rotate`, optionally `?now=true`) as the admin.
async fn rotate(
    app: &tessera_testkit::TestApp,
    admin_token: &str,
    path: &str,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rotation_publishes_first_then_signs_and_keeps_old_tokens_valid() {
    let app = spawn_app_with(|c| {
        c.key_publish_ahead = 60;
        c.jwks_max_age = 60;
    })
    .await;
    let admin = app.admin_login().await;
    let old_kid = header_of(&admin.access_token)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = rotate(&app, &admin.access_token, "/admin/keys/rotate").await;
    assert_eq!(res.status(), 200);
    let rotated = json(res).await;
    assert_eq!(rotated["state"], "next");
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    let mut published = jwks_kids(&app).await;
    published.sort();
    let mut expected = vec![old_kid.clone(), new_kid.clone()];
    expected.sort();
    assert_eq!(published, expected, "published before it signs");
    let still_old = app.admin_login().await;
    assert_eq!(header_of(&still_old.access_token)["kid"], old_kid.as_str());

    app.advance(60).await;
    let new = app.admin_login().await;
    assert_eq!(
        header_of(&new.access_token)["kid"],
        new_kid.as_str(),
        "the new key signs once active"
    );
    assert_eq!(
        app.me(&admin.access_token).await.status(),
        200,
        "tokens of the retired key still verify"
    );
    assert_eq!(jwks_kids(&app).await.len(), 2);

    let listing = json(app.get_auth("/admin/keys", &new.access_token).await).await;
    let states: Vec<&str> = listing["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retired", "active"]);

    // Once every token the old key signed has expired, it leaves the JWKS.
    app.advance(900 + 30 + 60).await;
    assert_eq!(jwks_kids(&app).await, [new_kid]);
}

#[tokio::test]
async fn an_immediate_rotation_signs_at_once() {
    let app = spawn_app_with(|c| c.key_publish_ahead = 300).await;
    let admin = app.admin_login().await;
    let res = rotate(&app, &admin.access_token, "/admin/keys/rotate?now=true").await;
    let new_kid = json(res).await["kid"].as_str().unwrap().to_owned();
    let t = app.admin_login().await;
    assert_eq!(header_of(&t.access_token)["kid"], new_kid.as_str());
    assert_eq!(app.me(&admin.access_token).await.status(), 200);
}

#[tokio::test]
async fn a_restart_keeps_the_keys_and_their_tokens() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let config = (*app.state.config).clone();
    let again = tessera_server::prepare(config, std::sync::Arc::new(app.clock.clone()))
        .await
        .unwrap();
    let ctx = again.state.auth.authenticate(&t.access_token).unwrap();
    assert_eq!(ctx.username(), "admin");
    assert_eq!(
        again.state.auth.key_ring().signer.kid(),
        app.state.auth.key_ring().signer.kid()
    );
}

#[tokio::test]
async fn private_keys_are_sealed_at_rest() {
    use tessera_auth::store::KeyStore as _;
    let app = spawn_app().await;
    let keys = app.state.db().list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    let jwk = app.state.auth.key_ring().signer.to_private_jwk().unwrap();
    let d = jwk.d.unwrap();
    let d = tessera_jose::base64url::decode(d.expose()).unwrap();
    let stored = &keys[0].sealed_private_key;
    assert!(
        !stored.windows(d.len()).any(|w| w == d.as_slice()),
        "the private scalar is not stored in clear"
    );
    assert!(!String::from_utf8_lossy(stored).contains("PRIVATE KEY"));
}

#[tokio::test]
async fn hmac_mode_cannot_rotate_through_the_api() {
    let app = spawn_app_with(|c| {
        let key =
            tessera_jose::SigningKey::from_hmac_secret(tessera_jose::Algorithm::Hs256, &[9u8; 32])
                .unwrap();
        c.signing = tessera_server::config::SigningConfig::Hmac(key);
    })
    .await;
    let admin = app.admin_login().await;
    let res = rotate(&app, &admin.access_token, "/admin/keys/rotate").await;
    assert_eq!(res.status(), 400);
    assert!(
        json(res).await["error_description"]
            .as_str()
            .unwrap()
            .contains("signing.secret")
    );
}

#[tokio::test]
async fn a_sync_with_unchanged_keys_keeps_the_parsed_ring_and_a_change_rebuilds_it() {
    let app = spawn_app_with(|c| {
        c.key_publish_ahead = 60;
        c.jwks_max_age = 60;
    })
    .await;
    let keys = app.state.auth.keys();
    let before = keys.current();
    // The upkeep loop syncs every second; with nothing changed it must not unseal and
    // parse the private key again (milliseconds of CPU for RSA, on a runtime worker).
    app.state.auth.sync().await.unwrap();
    app.state.auth.sync().await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&before, &keys.current()));

    let admin = app.admin_login().await;
    let res = rotate(&app, &admin.access_token, "/admin/keys/rotate").await;
    assert_eq!(res.status(), 200);
    app.state.auth.sync().await.unwrap();
    let rotated = keys.current();
    assert!(!std::sync::Arc::ptr_eq(&before, &rotated));
    assert_eq!(rotated.keys.len(), 2);
    // A scheduled state change (the new key activating) rebuilds it without a new row.
    assert_eq!(rotated.signer.kid(), Some(rotated.keys[0].kid.as_str()));
    app.advance(60).await;
    let active = keys.current();
    assert!(!std::sync::Arc::ptr_eq(&rotated, &active));
    assert_eq!(
        active.signer.kid(),
        Some(rotated.keys[1].kid.as_str()),
        "the new key signs once its activation time passes"
    );
}
