//! The server on PostgreSQL, with several instances sharing one database (in-process here;
//! `crates/cli/tests/instances` starts real processes). Skipped loudly without PostgreSQL
//! unless `TESSERA_REQUIRE_POSTGRES=1`.

use std::future::Future;
use std::time::{Duration, Instant};

use tessera_testkit::pg::TestDatabase;
use tessera_testkit::{TestApp, spawn_app_on};

use crate::json;

const ISSUER: &str = "http://tessera.test";

async fn instance(db: &TestDatabase) -> TestApp {
    spawn_app_on(Some(db.url()), |c| {
        c.issuer = ISSUER.into();
        c.audience = ISSUER.into();
        c.key_publish_ahead = 0;
    })
    .await
}

/// Polls until `f` holds, returning how long it took, or panics after `limit`.
async fn within<F, Fut>(limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_tutorial_flow_works_on_postgres() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let app = instance(&db).await;
    app.create_user("johndoe", "correct horse battery", &["user"])
        .await;
    let t = app.login("johndoe", "correct horse battery").await;
    assert_eq!(
        json(app.me(&t.access_token).await).await["username"],
        "johndoe"
    );
    let r = json(app.refresh(t.refresh_token.as_deref().unwrap()).await).await;
    assert!(r["refresh_token"].is_string());
    let res = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(r["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        json(app.client.get(app.url("/readyz")).send().await.unwrap()).await["database"],
        "postgres"
    );
}

#[tokio::test]
async fn a_revocation_on_one_instance_reaches_the_others_within_a_second() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = instance(&db).await;
    let b = instance(&db).await;
    let t = a.admin_login().await;
    assert_eq!(
        b.me(&t.access_token).await.status(),
        200,
        "instances accept each other's tokens"
    );
    let res = b.logout(&t.access_token).await;
    assert_eq!(res.status(), 200);
    let took = within(Duration::from_secs(1), || async {
        a.me(&t.access_token).await.status() == 401
    })
    .await;
    eprintln!("revocation reached the other instance in {took:?}");
}

#[tokio::test]
async fn concurrent_refreshes_on_two_instances_yield_one_successor() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = instance(&db).await;
    let b = instance(&db).await;
    let rt = a.admin_login().await.refresh_token.unwrap();
    let calls = (0..8).flat_map(|_| [a.refresh(&rt), b.refresh(&rt)]);
    let results = futures_util::future::join_all(calls).await;
    let mut successors = std::collections::HashSet::new();
    for r in results {
        assert_eq!(r.status(), 200, "no 5xx, no spurious reuse");
        successors.insert(json(r).await["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(successors.len(), 1);
}

#[tokio::test]
async fn a_key_rotation_on_one_instance_is_served_by_all() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = instance(&db).await;
    let b = instance(&db).await;
    let old = a.admin_login().await;
    let res = a
        .client
        .post(a.url("/admin/keys/rotate?now=true"))
        .bearer_auth(&old.access_token)
        .send()
        .await
        .unwrap();
    let kid = json(res).await["kid"].as_str().unwrap().to_owned();
    let jwks = |app: &TestApp| {
        let req = app.client.get(app.url("/.well-known/jwks.json")).send();
        async move { json(req.await.unwrap()).await }
    };
    within(Duration::from_secs(2), || async {
        jwks(&a).await == jwks(&b).await && jwks(&b).await.to_string().contains(&kid)
    })
    .await;
    within(Duration::from_secs(2), || async {
        let t = b.admin_login().await;
        crate::header_of(&t.access_token)["kid"] == kid.as_str()
    })
    .await;
    assert_eq!(
        b.me(&old.access_token).await.status(),
        200,
        "tokens of the old key still verify"
    );
}

#[tokio::test]
async fn instances_keep_verifying_while_the_database_is_away_and_recover() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = instance(&db).await;
    let t = a.admin_login().await;
    db.set_available(false).await;
    assert_eq!(
        a.me(&t.access_token).await.status(),
        200,
        "verification is served from memory"
    );
    let res = a
        .password_grant("admin", tessera_testkit::ADMIN_PASSWORD)
        .await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1", "503 says when to retry");
    assert_eq!(json(res).await["error"], "temporarily_unavailable");
    let res = a.refresh(t.refresh_token.as_deref().unwrap()).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1", "503 says when to retry");
    assert_eq!(
        a.client
            .get(a.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    db.set_available(true).await;
    within(Duration::from_secs(10), || async {
        a.client
            .get(a.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    let again = a.admin_login().await;
    assert_eq!(a.me(&again.access_token).await.status(), 200);
    // The refresh token that met the outage is still good: the failed attempt changed nothing.
    assert_eq!(
        a.refresh(t.refresh_token.as_deref().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn revocations_still_propagate_after_connections_are_killed() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = instance(&db).await;
    let b = instance(&db).await;
    let t = a.admin_login().await;
    assert!(db.terminate_connections().await > 0);
    // Writes on B succeed again once its pool reconnects...
    within(Duration::from_secs(10), || async {
        b.client
            .post(b.url("/logout"))
            .bearer_auth(&t.access_token)
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    // ...and A's listener, re-established, still hears about it.
    let took = within(Duration::from_secs(3), || async {
        a.me(&t.access_token).await.status() == 401
    })
    .await;
    eprintln!("revocation after reconnect reached the other instance in {took:?}");
}

#[tokio::test]
async fn metrics_are_served_while_the_database_is_away() {
    // The request counters, 503 rates and the hashing queue matter most during an outage:
    // the scrape answers within about a second, with the live-session gauge at its last value.
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = spawn_app_on(Some(db.url()), |c| c.metrics_enabled = true).await;
    let t = a.admin_login().await;
    assert_eq!(a.me(&t.access_token).await.status(), 200);
    let scrape = || async {
        let started = Instant::now();
        let res = a.client.get(a.url("/metrics")).send().await.unwrap();
        (res.status(), res.text().await.unwrap(), started.elapsed())
    };
    let (status, before, _) = scrape().await;
    assert_eq!(status, 200);
    assert!(before.contains("tessera_active_sessions 1\n"), "{before}");
    db.set_available(false).await;
    let res = a
        .password_grant("admin", tessera_testkit::ADMIN_PASSWORD)
        .await;
    assert_eq!(res.status(), 503);
    let (status, during, took) = scrape().await;
    assert_eq!(status, 200, "{during}");
    assert!(took < Duration::from_secs(3), "the scrape took {took:?}");
    assert!(during.contains("tessera_active_sessions 1\n"), "{during}");
    assert!(
        during.contains(
            r#"tessera_http_requests_total{method="POST",route="/token",status="5xx"} 1"#
        ),
        "{during}"
    );
    db.set_available(true).await;
}
