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
    // A browser signed in with cookies, too.
    let res = a
        .client
        .post(a.url("/session"))
        .form(&[
            ("username", "admin"),
            ("password", tessera_testkit::ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = |name: &str| {
        res.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_owned()
    };
    let (rt, csrf) = (cookie("__Secure-tessera_rt"), cookie("__Host-tessera_csrf"));
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
    // The browser keeps its cookies: an outage says nothing about its session.
    let cookie_refresh = || {
        a.client
            .post(a.url("/session/refresh"))
            .header(
                "cookie",
                format!("__Secure-tessera_rt={rt}; __Host-tessera_csrf={csrf}"),
            )
            .header("x-csrf-token", &csrf)
            .header("sec-fetch-site", "same-origin")
            .send()
    };
    let res = cookie_refresh().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("set-cookie").is_none());
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
    assert_eq!(cookie_refresh().await.unwrap().status(), 200);
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
    assert!(before.contains("tessera_database_up 1\n"), "{before}");
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
        during.contains("tessera_database_up 0\n"),
        "the scrape says the gauge is stale: {during}"
    );
    assert!(
        during.contains(
            r#"tessera_http_requests_total{method="POST",route="/token",status="5xx"} 1"#
        ),
        "{during}"
    );
    db.set_available(true).await;
    within(Duration::from_secs(10), || async {
        scrape().await.1.contains("tessera_database_up 1\n")
    })
    .await;
}

#[tokio::test]
async fn active_sessions_is_absent_until_it_has_been_counted() {
    // 0 would claim there are no sessions; before the first count there is no value.
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = spawn_app_on(Some(db.url()), |c| c.metrics_enabled = true).await;
    db.set_available(false).await;
    let text = a
        .client
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("tessera_database_up 0\n"), "{text}");
    assert!(
        text.contains("# TYPE tessera_active_sessions gauge\n")
            && !text.contains("\ntessera_active_sessions "),
        "{text}"
    );
    db.set_available(true).await;
}

/// Starts an instance through `relay` whose shutdown deadline is `deadline_secs`, with
/// `force` as its second-signal notifier; logs in, stalls the relay, and waits until the
/// background sync is waiting on the stalled database. Returns the stop sender and the task.
async fn serving_through_a_stalled_database(
    relay: &tessera_testkit::pg::StallingRelay,
    deadline_secs: u64,
    force: Option<std::sync::Arc<tokio::sync::Notify>>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = tessera_server::config::Config::for_tests(dir.path());
    config.set_public_addr(addr);
    config.bootstrap_admin_password = Some(tessera_testkit::ADMIN_PASSWORD.to_owned().into());
    config.database = tessera_server::config::DatabaseConfig::Url(relay.url().to_owned().into());
    config.master_key = Some(tessera_testkit::TEST_MASTER_KEY.to_owned().into());
    let prepared = tessera_server::prepare(
        config,
        std::sync::Arc::new(tessera_auth::clock::ManualClock::starting_now()),
    )
    .await
    .unwrap();
    let options = tessera_server::ServeOptions {
        metrics_listener: None,
        tls: None,
        shutdown_timeout: Duration::from_secs(deadline_secs),
        idle_timeout: Duration::from_secs(60),
        force_shutdown: force,
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tessera_server::serve(
        listener,
        prepared.state,
        options,
        async move {
            let _ = rx.await;
        },
    ));
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let res = client
        .post(format!("{base}/token"))
        .form(&[
            ("username", "admin"),
            ("password", tessera_testkit::ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token = json(res).await["access_token"].as_str().unwrap().to_owned();
    relay.stall();
    // The background sync runs every second: by now it waits on the stalled database.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = client
        .get(format!("{base}/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "verification does not need the database");
    (stop, task, dir)
}

#[tokio::test]
async fn shutdown_keeps_its_deadline_while_the_database_hangs() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let relay = db.relay().await;
    let (stop, task, _dir) = serving_through_a_stalled_database(&relay, 1, None).await;
    let started = Instant::now();
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    // The deadline (1 s) for the requests and the background tasks, then at most a second
    // for the pool. Unbounded, the exit waited for good: on the hung sync, then on the pool's
    // close, which waits for the change listener's connection (its `UNLISTEN *` hangs too).
    assert!(took < Duration::from_millis(2800), "shutdown took {took:?}");
    // ...and not much less: both bounded steps were reached, so the stall did hold them.
    assert!(
        took >= Duration::from_millis(1900),
        "the relay stalled nothing: {took:?}"
    );
}

#[tokio::test]
async fn a_second_signal_ends_the_shutdown_while_the_database_hangs() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let relay = db.relay().await;
    let force = std::sync::Arc::new(tokio::sync::Notify::new());
    let (stop, task, _dir) =
        serving_through_a_stalled_database(&relay, 30, Some(std::sync::Arc::clone(&force))).await;
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished(), "the hung sync holds the shutdown");
    let forced = Instant::now();
    force.notify_one();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    let took = forced.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "after the second signal: {took:?}"
    );
}
