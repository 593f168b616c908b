//! Refresh tokens (RFC 6749 §6) with rotation, reuse detection and a grace window
//! (RFC 9700 §4.14.2).

use std::collections::HashSet;

use tessera_auth::store::SessionStore as _;
use tessera_testkit::{ADMIN_PASSWORD, spawn_app, spawn_app_with};

use crate::json;

async fn refreshed(app: &tessera_testkit::TestApp, rt: &str) -> tessera_testkit::Tokens {
    let res = app.refresh(rt).await;
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn every_refresh_rotates_the_token() {
    let app = spawn_app().await;
    let t0 = app.admin_login().await;
    let rt0 = t0.refresh_token.unwrap();
    assert_eq!(rt0.len(), 43, "256 bits, base64url");
    let t1 = refreshed(&app, &rt0).await;
    let rt1 = t1.refresh_token.unwrap();
    assert_ne!(rt0, rt1);
    assert_eq!(app.me(&t1.access_token).await.status(), 200);
    let t2 = refreshed(&app, &rt1).await;
    assert_ne!(t2.refresh_token.unwrap(), rt1);
}

#[tokio::test]
async fn reusing_a_rotated_token_revokes_the_whole_family() {
    let app = spawn_app().await;
    let t0 = app.admin_login().await;
    let rt0 = t0.refresh_token.unwrap();
    let t1 = refreshed(&app, &rt0).await;
    let rt1 = t1.refresh_token.clone().unwrap();
    app.advance(11).await; // past the 10 s grace window
    let res = app.refresh(&rt0).await;
    assert_eq!(res.status(), 400);
    let b = json(res).await;
    assert_eq!(b["error"], "invalid_grant");
    assert!(b["error_description"].as_str().unwrap().contains("revoked"));
    // The family is dead: the legitimate successor and every access token of it.
    assert_eq!(app.refresh(&rt1).await.status(), 400);
    assert_eq!(app.me(&t1.access_token).await.status(), 401);
    assert_eq!(app.me(&t0.access_token).await.status(), 401);
    // Another session of the same user is untouched.
    let other = app.admin_login().await;
    assert_eq!(app.me(&other.access_token).await.status(), 200);
    // And it was audited.
    use tessera_auth::store::AuditStore as _;
    let rows = app.state.db().list_audit(0, None, None, 100).await.unwrap();
    assert!(rows.iter().any(|r| r.event.event == "refresh_reuse"));
}

#[tokio::test]
async fn a_retry_within_the_grace_window_gets_the_same_successor() {
    let app = spawn_app().await;
    let rt0 = app.admin_login().await.refresh_token.unwrap();
    let a = refreshed(&app, &rt0).await;
    app.advance(5).await;
    let b = refreshed(&app, &rt0).await;
    assert_eq!(
        a.refresh_token, b.refresh_token,
        "same successor, not a second one"
    );
    // Not counted as reuse: the successor still works.
    refreshed(&app, &b.refresh_token.unwrap()).await;
}

#[tokio::test]
async fn a_stale_token_within_the_window_gets_the_chains_newest_token() {
    // Parallel requests of one browser: one left with rt0 while another's rotation of rt0
    // and a later one's of rt1 had already been answered.
    let app = spawn_app().await;
    let rt0 = app.admin_login().await.refresh_token.unwrap();
    let rt1 = refreshed(&app, &rt0).await.refresh_token.unwrap();
    app.advance(2).await;
    let rt2 = refreshed(&app, &rt1).await.refresh_token.unwrap();
    app.advance(3).await;
    let late = refreshed(&app, &rt0).await;
    assert_eq!(
        late.refresh_token.as_deref(),
        Some(rt2.as_str()),
        "the chain's current token, not a revoked session"
    );
    assert_eq!(app.me(&late.access_token).await.status(), 200);
    // rt1 too, and nothing was rotated by either.
    assert_eq!(
        refreshed(&app, &rt1).await.refresh_token.as_deref(),
        Some(rt2.as_str())
    );
    let rt3 = refreshed(&app, &rt2).await.refresh_token.unwrap();
    assert_ne!(rt3, rt2);
    assert_eq!(
        refreshed(&app, &rt0).await.refresh_token.as_deref(),
        Some(rt3.as_str()),
        "still within rt0's window"
    );
}

#[tokio::test]
async fn a_stale_token_after_the_window_is_reuse_even_when_its_chain_moved_on() {
    let app = spawn_app().await;
    let rt0 = app.admin_login().await.refresh_token.unwrap();
    let rt1 = refreshed(&app, &rt0).await.refresh_token.unwrap();
    let rt2 = refreshed(&app, &rt1).await.refresh_token.unwrap();
    app.advance(11).await; // past the 10 s grace window
    let res = app.refresh(&rt0).await;
    assert_eq!(res.status(), 400);
    assert!(
        json(res).await["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    assert_eq!(app.refresh(&rt2).await.status(), 400, "family revoked");
}

#[tokio::test]
async fn a_chain_longer_than_a_window_allows_is_refused_without_revoking() {
    let app = spawn_app().await;
    let rt0 = app.admin_login().await.refresh_token.unwrap();
    let mut rt = refreshed(&app, &rt0).await.refresh_token.unwrap();
    for _ in 0..9 {
        rt = refreshed(&app, &rt).await.refresh_token.unwrap();
    }
    let res = app.refresh(&rt0).await;
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"], "invalid_grant");
    refreshed(&app, &rt).await;
}

#[tokio::test]
async fn a_zero_grace_window_treats_any_retry_as_reuse() {
    let app = spawn_app_with(|c| c.refresh_grace_period = 0).await;
    let rt0 = app.admin_login().await.refresh_token.unwrap();
    let rt1 = refreshed(&app, &rt0).await.refresh_token.unwrap();
    assert_eq!(app.refresh(&rt0).await.status(), 400);
    assert_eq!(app.refresh(&rt1).await.status(), 400, "family revoked");
}

#[tokio::test]
async fn concurrent_refreshes_end_with_exactly_one_live_successor() {
    let app = spawn_app().await;
    let rt0 = app.admin_login().await.refresh_token.unwrap();
    let results = futures_util::future::join_all((0..16).map(|_| app.refresh(&rt0))).await;
    let mut successors = HashSet::new();
    for r in results {
        assert_eq!(
            r.status(),
            200,
            "no 5xx and no spurious reuse under concurrency"
        );
        successors.insert(json(r).await["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(successors.len(), 1, "one successor for all 16 requests");
    let successor = successors.into_iter().next().unwrap();
    let db = app.state.db();
    let parent = db
        .find_refresh_token(&tessera_auth::tokens::refresh_token_hash(&rt0))
        .await
        .unwrap()
        .unwrap();
    assert!(parent.1.is_some(), "the parent is rotated");
    let child = db
        .find_refresh_token(&tessera_auth::tokens::refresh_token_hash(&successor))
        .await
        .unwrap()
        .unwrap();
    assert!(child.1.is_none(), "the successor is the one live token");
    refreshed(&app, &successor).await;
}

#[tokio::test]
async fn idle_expiry_moves_but_absolute_expiry_never_does() {
    let app = spawn_app_with(|c| {
        c.refresh_token_ttl = 600;
        c.session_max_age = 1500;
        c.access_token_ttl = 300;
    })
    .await;
    let mut rt = app.admin_login().await.refresh_token.unwrap();
    // Refreshing every 500 s keeps the idle timer alive...
    for _ in 0..2 {
        app.advance(500).await;
        rt = refreshed(&app, &rt).await.refresh_token.unwrap();
    }
    // ...until the absolute limit (1500 s after login), whatever happens.
    app.advance(500).await;
    let res = app.refresh(&rt).await;
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"], "invalid_grant");
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = spawn_app_with(|c| c.refresh_token_ttl = 600).await;
    let rt = app.admin_login().await.refresh_token.unwrap();
    app.advance(600).await;
    assert_eq!(app.refresh(&rt).await.status(), 400);
}

#[tokio::test]
async fn access_tokens_never_outlive_the_session() {
    let app = spawn_app_with(|c| {
        c.session_max_age = 120;
        c.refresh_token_ttl = 120;
    })
    .await;
    let t = app.admin_login().await;
    assert_eq!(t.expires_in, 120);
}

#[tokio::test]
async fn scope_can_narrow_but_never_widen() {
    let app = spawn_app_with(|c| c.default_scopes = vec!["profile".into(), "orders".into()]).await;
    let t = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(t.scope, "profile orders");
    let rt = t.refresh_token.unwrap();
    let narrowed = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", "orders"),
        ])
        .await;
    let narrowed = json(narrowed).await;
    assert_eq!(narrowed["scope"], "orders");
    let rt2 = narrowed["refresh_token"].as_str().unwrap();
    let wider = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt2),
            ("scope", "profile admin"),
        ])
        .await;
    assert_eq!(json(wider).await["error"], "invalid_scope");
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens_are_invalid_grant() {
    let app = spawn_app().await;
    for rt in [
        "x",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &"A".repeat(4000),
    ] {
        let res = app.refresh(rt).await;
        assert_eq!(res.status(), 400);
        assert_eq!(json(res).await["error"], "invalid_grant");
    }
}

#[tokio::test]
async fn an_access_token_is_not_a_refresh_token_and_vice_versa() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    assert_eq!(
        json(app.refresh(&t.access_token).await).await["error"],
        "invalid_grant"
    );
    assert_eq!(
        app.me(t.refresh_token.as_deref().unwrap()).await.status(),
        401
    );
}

#[tokio::test]
async fn a_refused_scope_leaves_the_refresh_token_usable() {
    // RFC 6749 §6: an `invalid_scope` answer carries no successor, so the token the client
    // holds must not have been rotated; using it later is not reuse.
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let rt = t.refresh_token.unwrap();
    let wider = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", "profile admin"),
        ])
        .await;
    assert_eq!(json(wider).await["error"], "invalid_scope");
    app.advance(11).await; // past the 10 s grace window
    let again = refreshed(&app, &rt).await;
    assert_eq!(app.me(&again.access_token).await.status(), 200);
    assert_eq!(app.me(&t.access_token).await.status(), 200, "no reuse");
}

#[tokio::test]
async fn a_blank_scope_on_refresh_means_the_sessions_scope() {
    // RFC 6749 §3.3: a scope has at least one token; `scope=%20` names none and is taken
    // as omitted (as the password grant takes it), not as a grant of no scope at all.
    let app = spawn_app().await;
    let rt = app.admin_login().await.refresh_token.unwrap();
    let res = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", "  "),
        ])
        .await;
    let body = json(res).await;
    assert_eq!(body["scope"], "profile", "{body}");
    assert_eq!(
        crate::claims_of(body["access_token"].as_str().unwrap())["scope"],
        "profile"
    );
}

#[tokio::test]
async fn a_reused_or_dead_token_with_a_refused_scope_is_still_reuse_or_invalid_grant() {
    // The scope check made before the rotation must not answer for tokens the rotation
    // refuses: a rotated token replayed past the grace window is reuse (RFC 9700 §4.14.2)
    // whatever scope it asks for, and a token of a revoked session is invalid_grant
    // (RFC 6749 §5.2), not invalid_scope.
    let app = spawn_app().await;
    let t0 = app.admin_login().await;
    let rt0 = t0.refresh_token.unwrap();
    let t1 = refreshed(&app, &rt0).await;
    app.advance(11).await; // past the 10 s grace window
    let replay = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt0),
            ("scope", "admin"),
        ])
        .await;
    let body = json(replay).await;
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert_eq!(
        app.me(&t1.access_token).await.status(),
        401,
        "reuse revokes"
    );
    // The session is now revoked: its current token is invalid_grant, any scope.
    let rt1 = t1.refresh_token.unwrap();
    let dead = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt1),
            ("scope", "admin"),
        ])
        .await;
    let body = json(dead).await;
    assert_eq!(body["error"], "invalid_grant", "{body}");
}
