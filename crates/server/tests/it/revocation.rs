//! `/revoke` (RFC 7009), `/logout`, and the revocations that follow account changes.

use tessera_auth::Actor;
use tessera_testkit::{ADMIN_PASSWORD, spawn_app};

use crate::json;

async fn revoke(app: &tessera_testkit::TestApp, form: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .post(app.url("/revoke"))
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn revoking_an_access_token_kills_only_that_token() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let res = revoke(
        &app,
        &[
            ("token", &t.access_token),
            ("token_type_hint", "access_token"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.me(&t.access_token).await.status(), 401);
    // The session lives on: its refresh token still works and yields a fresh access token.
    let rt = t.refresh_token.unwrap();
    let fresh = json(app.refresh(&rt).await).await;
    assert_eq!(
        app.me(fresh["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_kills_its_session_and_access_tokens() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let rt = t.refresh_token.unwrap();
    assert_eq!(revoke(&app, &[("token", &rt)]).await.status(), 200);
    assert_eq!(app.refresh(&rt).await.status(), 400);
    assert_eq!(
        app.me(&t.access_token).await.status(),
        401,
        "jti denylist via the session"
    );
}

#[tokio::test]
async fn unknown_tokens_revoke_successfully() {
    let app = spawn_app().await;
    assert_eq!(
        revoke(&app, &[("token", "never-issued")]).await.status(),
        200
    );
    assert_eq!(revoke(&app, &[("token", "a.b.c")]).await.status(), 200);
    let res = revoke(&app, &[("token", "x"), ("token_type_hint", "id_token")]).await;
    assert_eq!(res.status(), 200);
    let res = revoke(&app, &[]).await;
    assert_eq!(json(res).await["error"], "invalid_request");
}

/// RFC 7009 §2.1: `token_type_hint` is only a hint, and the server extends its search to
/// every token type it supports; a value it does not know is no hint, not an error (it was
/// a 400 `unsupported_token_type`, and the token stayed valid). A wrong known hint is no
/// hindrance either.
#[tokio::test]
async fn an_unknown_or_wrong_token_type_hint_still_revokes_the_token() {
    let app = spawn_app().await;
    for hint in ["foo", "id_token", "refresh_token"] {
        let t = app.admin_login().await;
        let res = revoke(
            &app,
            &[("token", &t.access_token), ("token_type_hint", hint)],
        )
        .await;
        assert_eq!(res.status(), 200, "{hint}");
        assert_eq!(app.me(&t.access_token).await.status(), 401, "{hint}");
    }
    for hint in ["foo", "access_token"] {
        let t = app.admin_login().await;
        let rt = t.refresh_token.unwrap();
        let res = revoke(&app, &[("token", &rt), ("token_type_hint", hint)]).await;
        assert_eq!(res.status(), 200, "{hint}");
        assert_eq!(app.refresh(&rt).await.status(), 400, "{hint}");
    }
}

#[tokio::test]
async fn logout_ends_the_current_session() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let other = app.admin_login().await;
    let res = app.logout(&t.access_token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["revoked_sessions"], 1);
    assert_eq!(app.me(&t.access_token).await.status(), 401);
    assert_eq!(
        app.refresh(t.refresh_token.as_deref().unwrap())
            .await
            .status(),
        400
    );
    assert_eq!(
        app.me(&other.access_token).await.status(),
        200,
        "other sessions survive"
    );
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user() {
    let app = spawn_app().await;
    app.create_user("carol", "violet gramophone harbour", &[])
        .await;
    let a = app.admin_login().await;
    let b = app.admin_login().await;
    let carol = app.login("carol", "violet gramophone harbour").await;
    let res = app
        .client
        .post(app.url("/logout?all=true"))
        .bearer_auth(&a.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["revoked_sessions"], 2);
    for t in [&a, &b] {
        assert_eq!(app.me(&t.access_token).await.status(), 401);
        assert_eq!(
            app.refresh(t.refresh_token.as_deref().unwrap())
                .await
                .status(),
            400
        );
    }
    assert_eq!(app.me(&carol.access_token).await.status(), 200);
    // A new login works right away.
    let again = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(app.me(&again.access_token).await.status(), 200);
}

#[tokio::test]
async fn disabling_a_user_kills_every_token_and_session() {
    let app = spawn_app().await;
    let user = app
        .create_user("dave", "violet gramophone harbour", &[])
        .await;
    let t = app.login("dave", "violet gramophone harbour").await;
    app.state
        .auth
        .set_disabled(&user, true, &Actor::System, &Default::default())
        .await
        .unwrap();
    assert_eq!(app.me(&t.access_token).await.status(), 401);
    assert_eq!(
        app.refresh(t.refresh_token.as_deref().unwrap())
            .await
            .status(),
        400
    );
    app.state
        .auth
        .set_disabled(&user, false, &Actor::System, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        app.me(&t.access_token).await.status(),
        401,
        "old tokens stay dead after re-enabling"
    );
    app.advance(1).await;
    let fresh = app.login("dave", "violet gramophone harbour").await;
    assert_eq!(app.me(&fresh.access_token).await.status(), 200);
}

#[tokio::test]
async fn a_password_reset_ends_every_session() {
    let app = spawn_app().await;
    let user = app
        .create_user("erin", "violet gramophone harbour", &[])
        .await;
    let t = app.login("erin", "violet gramophone harbour").await;
    app.state
        .auth
        .set_password(
            &user,
            zeroize::Zeroizing::new("amber lighthouse symphony".into()),
            None,
            &Actor::Cli,
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(app.me(&t.access_token).await.status(), 401);
    assert_eq!(
        app.refresh(t.refresh_token.as_deref().unwrap())
            .await
            .status(),
        400
    );
    assert_eq!(
        app.password_grant("erin", "violet gramophone harbour")
            .await
            .status(),
        400
    );
    app.advance(1).await;
    app.login("erin", "amber lighthouse symphony").await;
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    assert_eq!(
        revoke(&app, &[("token", &t.access_token)]).await.status(),
        200
    );
    // A second service on the same database replays the revocation log at start.
    let config = (*app.state.config).clone();
    let again = tessera_server::prepare(config, std::sync::Arc::new(app.clock.clone()))
        .await
        .unwrap();
    assert!(again.state.auth.authenticate(&t.access_token).is_err());
}

#[tokio::test]
async fn no_revocation_path_records_an_empty_or_absurd_jti() {
    // `/logout` recorded the presented token's `jti` whatever it was: an empty one went
    // into the revocation log (and the feed) and, with no session, the call answered 200
    // while the token went on working. `/revoke` recorded a `jti` of any length.
    use tessera_auth::store::RevocationStore as _;
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let claims = crate::claims_of(&t.access_token);
    let with = |jti: &str, sid: bool| {
        let mut c = claims.clone();
        c["jti"] = jti.into();
        if !sid {
            c.as_object_mut().unwrap().remove("sid");
        }
        crate::token_cache::signed_like_the_server(&app, &c, true)
    };
    let absurd = "j".repeat(300);
    // RFC 7009 §2.2: `/revoke` answers 200 for what it cannot revoke; nothing recorded.
    for jti in ["", absurd.as_str()] {
        let res = revoke(&app, &[("token", &with(jti, true))]).await;
        assert_eq!(res.status(), 200);
    }
    // `/logout` of a token without a usable `jti` and without a session: nothing names
    // it, so it is refused, not answered with a success that leaves it working.
    for jti in ["", absurd.as_str()] {
        let token = with(jti, false);
        assert_eq!(app.me(&token).await.status(), 200);
        let res = app.logout(&token).await;
        assert_eq!(res.status(), 400, "jti of {} bytes", jti.len());
        assert_eq!(json(res).await["error"], "invalid_request");
    }
    // With its session, the session ends it; still no `jti` recorded.
    let token = with("", true);
    let res = app.logout(&token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["revoked_sessions"], 1);
    assert_eq!(app.me(&token).await.status(), 401);
    let events = app
        .state
        .db()
        .revocations_since(0, app.now(), 1000)
        .await
        .unwrap();
    assert!(!events.is_empty(), "the session's revocation is recorded");
    for e in &events {
        assert!(
            !e.subject.is_empty() && e.subject.len() <= 255,
            "recorded a revocation of {:?} with a {}-byte subject",
            e.kind,
            e.subject.len()
        );
    }
}
