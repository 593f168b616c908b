//! The revocation feed: against the fake issuer for failures, then end to end with a real
//! Tessera server, a verifier following its feed, and revocations made on the server
//! reaching the verifier within seconds.

use std::time::{Duration, Instant};

use tessera_auth::Actor;
use tessera_axum::{Authenticated, Error, JwksOptions, RevocationFeed, Verifier};
use tessera_jose::NoCustomClaims;
use tessera_testkit::{TestApp, spawn_app};

use crate::{Issuer, ManualClock, es256, eventually, runtime, sign, unix_now};

const PASSWORD: &str = "a long enough password";

#[tokio::test]
async fn after_a_failed_poll_the_feed_resumes_from_the_same_cursor() {
    let key = es256("k1");
    let issuer = Issuer::start(&[]).await;
    let v = Verifier::builder()
        .key(key.verifying_key())
        .accept_any_typ()
        .revocation_feed(
            RevocationFeed::new("svc", "feed-secret")
                .url(format!("{}/revocations", issuer.base))
                .poll_interval(Duration::from_secs(3600)),
        )
        .build()
        .unwrap();
    let now = unix_now();
    let token = |jti: &str| {
        sign(
            &key,
            &serde_json::json!({"sub": "u", "jti": jti, "exp": now + 300}),
            None,
        )
    };
    issuer.revoke("jti", "a", now);
    assert_eq!(v.sync_revocations().await.unwrap(), 1);
    assert_eq!(v.stats().feed_cursor, 1);

    issuer.set_failing(true);
    issuer.revoke("jti", "b", now);
    assert!(v.sync_revocations().await.is_err());
    assert_eq!(
        v.stats().feed_cursor,
        1,
        "the cursor does not move on errors"
    );
    // What was known stays known; the new event is not there yet.
    assert!(v.verify::<NoCustomClaims>(&token("a")).await.is_err());
    v.verify::<NoCustomClaims>(&token("b")).await.unwrap();

    issuer.set_failing(false);
    assert_eq!(
        v.sync_revocations().await.unwrap(),
        1,
        "only the missed event"
    );
    assert_eq!(v.stats().feed_cursor, 2);
    assert_eq!(
        v.verify::<NoCustomClaims>(&token("b")).await.unwrap_err(),
        Error::Revoked { reason: "token" }
    );
    // Wrong credentials are an error too, not an empty feed.
    *issuer.state.feed_secret.lock().unwrap() = "rotated".into();
    assert!(matches!(
        v.sync_revocations().await,
        Err(Error::Status { status: 401, .. })
    ));
}

#[tokio::test]
async fn a_feed_that_ignores_since_stops_the_sync_instead_of_looping() {
    let key = es256("k1");
    let issuer = Issuer::start(&[]).await;
    issuer
        .state
        .feed_ignores_since
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let now = unix_now();
    issuer.revoke("jti", "a", now);
    issuer.revoke("jti", "b", now);
    let v = Verifier::builder()
        .key(key.verifying_key())
        .accept_any_typ()
        .revocation_feed(
            RevocationFeed::new("svc", "feed-secret")
                .url(format!("{}/revocations", issuer.base))
                .poll_interval(Duration::from_secs(3600))
                .page_size(2),
        )
        .build()
        .unwrap();
    // The background poller's first sync ends, as a failure.
    assert!(
        eventually(Duration::from_secs(5), async || v.stats().feed_failures
            == 1)
        .await,
        "the poller's first sync never ended"
    );
    let polls_before = issuer
        .state
        .feed_polls
        .load(std::sync::atomic::Ordering::SeqCst);
    let result = tokio::time::timeout(Duration::from_secs(5), v.sync_revocations())
        .await
        .expect("the sync loops on a full page that does not move the cursor");
    assert!(
        matches!(result, Err(Error::InvalidDocument { .. })),
        "{result:?}"
    );
    let polls = issuer
        .state
        .feed_polls
        .load(std::sync::atomic::Ordering::SeqCst)
        - polls_before;
    assert!(polls <= 2, "{polls} requests for one sync");
    // What the page held was applied.
    let token = sign(
        &key,
        &serde_json::json!({"sub": "u", "jti": "a", "exp": now + 300}),
        None,
    );
    assert_eq!(
        v.verify::<NoCustomClaims>(&token).await.unwrap_err(),
        Error::Revoked { reason: "token" }
    );
}

#[tokio::test]
async fn with_a_staleness_bound_a_feed_not_read_in_time_fails_closed_until_it_is_read() {
    let clock = ManualClock::new();
    let key = es256("k1");
    let issuer = Issuer::start(&[]).await;
    issuer.set_failing(true);
    let feed = || {
        RevocationFeed::new("svc", "feed-secret")
            .url(format!("{}/revocations", issuer.base))
            .poll_interval(Duration::from_millis(100))
    };
    let v = Verifier::builder()
        .key(key.verifying_key())
        .accept_any_typ()
        .clock(clock.shared())
        .revocation_feed(feed())
        .revocation_feed_max_staleness(Duration::from_secs(60))
        .build()
        .unwrap();
    let token = |jti: &str| {
        sign(
            &key,
            &serde_json::json!({"sub": "u", "jti": jti, "exp": clock.now() + 3600}),
            None,
        )
    };
    let good = token("good");
    // Never read, but the verifier started less than the bound ago.
    v.verify::<NoCustomClaims>(&good).await.unwrap();
    clock.advance(61);
    assert_eq!(
        v.verify::<NoCustomClaims>(&good).await.unwrap_err(),
        Error::RevocationFeedStale
    );
    // The extractor answers it like unavailable keys: 503 with Retry-After.
    let app = axum::Router::new()
        .route("/", axum::routing::get(|_: Authenticated| async { "ok" }))
        .with_state(v.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let get = async || {
        reqwest::Client::new()
            .get(&base)
            .bearer_auth(&good)
            .send()
            .await
            .unwrap()
    };
    let res = get().await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));

    // A successful read recovers.
    issuer.set_failing(false);
    v.sync_revocations().await.unwrap();
    v.verify::<NoCustomClaims>(&good).await.unwrap();
    assert_eq!(get().await.status(), 200);

    // Read once, then failing for longer than the bound: refused again; a known revocation
    // is still a 401 reason, not a 503 one.
    issuer.revoke("jti", "gone", clock.now());
    v.sync_revocations().await.unwrap();
    issuer.set_failing(true);
    clock.advance(30);
    v.verify::<NoCustomClaims>(&good).await.unwrap();
    clock.advance(31);
    assert_eq!(
        v.verify::<NoCustomClaims>(&good).await.unwrap_err(),
        Error::RevocationFeedStale
    );
    assert_eq!(
        v.verify::<NoCustomClaims>(&token("gone"))
            .await
            .unwrap_err(),
        Error::Revoked { reason: "token" }
    );
    // The background poller recovers on its own once the feed answers.
    issuer.set_failing(false);
    assert!(
        eventually(Duration::from_secs(5), async || v
            .verify::<NoCustomClaims>(&good)
            .await
            .is_ok())
        .await
    );

    // Without the option the feed fails open (the default), and the option needs a feed
    // and a bound of at least one poll interval.
    issuer.set_failing(true);
    let open = Verifier::builder()
        .key(key.verifying_key())
        .accept_any_typ()
        .clock(clock.shared())
        .revocation_feed(feed())
        .build()
        .unwrap();
    clock.advance(3600);
    open.verify::<NoCustomClaims>(&token("fresh"))
        .await
        .unwrap();
    for builder in [
        Verifier::builder()
            .key(key.verifying_key())
            .revocation_feed_max_staleness(Duration::from_secs(60)),
        Verifier::builder()
            .key(key.verifying_key())
            .revocation_feed(feed().poll_interval(Duration::from_secs(10)))
            .revocation_feed_max_staleness(Duration::from_secs(5)),
    ] {
        assert!(matches!(builder.build(), Err(Error::Config { .. })));
    }
}

/// A feed for the fake issuer, read every hour unless a test asks.
fn hourly_feed(issuer: &Issuer) -> RevocationFeed {
    RevocationFeed::new("svc", "feed-secret")
        .url(format!("{}/revocations", issuer.base))
        .poll_interval(Duration::from_secs(3600))
}

/// Concurrent reads of the feed are one request, not one each: callers that arrive before
/// a read has sent its request share it. One that arrives while a request is under way is
/// not answered by it (the answer may predate the call, and miss a revocation made just
/// before): it gets the next read, shared again.
#[tokio::test]
async fn concurrent_reads_of_the_feed_share_one_request() {
    let key = es256("k1");
    let issuer = Issuer::start(&[]).await;
    let v = Verifier::builder()
        .key(key.verifying_key())
        .accept_any_typ()
        .revocation_feed(hourly_feed(&issuer))
        .build()
        .unwrap();
    // The poller's first read.
    assert!(
        eventually(Duration::from_secs(5), async || v
            .stats()
            .feed_synced_at
            .is_some())
        .await
    );
    let polls = || {
        issuer
            .state
            .feed_polls
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let before = polls();
    let now = unix_now();
    issuer.revoke("jti", "a", now);
    *issuer.state.feed_delay.lock().unwrap() = Duration::from_millis(300);
    let sync = || {
        let v = v.clone();
        tokio::spawn(async move { v.sync_revocations().await })
    };
    let callers: Vec<_> = (0..16).map(|_| sync()).collect();
    for c in callers {
        assert_eq!(c.await.unwrap().unwrap(), 1);
    }
    assert_eq!(polls() - before, 1, "one request for 16 concurrent callers");

    let under_way = sync();
    assert!(eventually(Duration::from_secs(5), async || polls() == before + 2).await);
    issuer.revoke("jti", "b", now);
    let later: Vec<_> = (0..8).map(|_| sync()).collect();
    assert_eq!(
        under_way.await.unwrap().unwrap(),
        0,
        "its answer predates `b`"
    );
    for c in later {
        assert_eq!(c.await.unwrap().unwrap(), 1);
    }
    assert_eq!(
        polls() - before,
        3,
        "one more request for the 8 later callers"
    );
    let token = sign(
        &key,
        &serde_json::json!({"sub": "u", "jti": "b", "exp": now + 300}),
        None,
    );
    assert_eq!(
        v.verify::<NoCustomClaims>(&token).await.unwrap_err(),
        Error::Revoked { reason: "token" }
    );
}

/// A verifier can outlive the runtime that built it (kept in a `static`, shared by the
/// runtimes of several `#[tokio::test]`s), and the feed poller spawned there dies with that
/// runtime. The next request on a live runtime starts it again, so revocations keep
/// arriving.
#[test]
fn the_feed_poller_restarts_on_a_live_runtime_when_its_own_shut_down() {
    // The issuer lives on a runtime of its own, for the whole test.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let key = es256("k1");
    let issuer = server.block_on(Issuer::start(&[]));
    let now = unix_now();
    let token = sign(
        &key,
        &serde_json::json!({"sub": "u", "jti": "a", "exp": now + 300}),
        None,
    );
    let first = runtime();
    let v = first.block_on(async {
        let v = Verifier::builder()
            .key(key.verifying_key())
            .accept_any_typ()
            .revocation_feed(hourly_feed(&issuer).poll_interval(Duration::from_millis(100)))
            .build()
            .unwrap();
        v.sync_revocations().await.unwrap();
        v.verify::<NoCustomClaims>(&token).await.unwrap();
        v
    });
    drop(first);
    issuer.revoke("jti", "a", now);
    runtime().block_on(async {
        let refused = eventually(Duration::from_secs(10), async || {
            matches!(
                v.verify::<NoCustomClaims>(&token).await,
                Err(Error::Revoked { .. })
            )
        })
        .await;
        assert!(
            refused,
            "the feed was not read after the runtime of its poller shut down: {:?}",
            v.stats()
        );
    });
}

/// A verifier used from a runtime per call (a `block_on` or `#[tokio::main]` per request in
/// a synchronous app) finds its feed poll gone with the previous call's runtime and starts
/// it again on each call. The poll reads `poll_interval` after the last read ended, not at
/// once when started, so calls do not each read the feed.
#[test]
fn a_runtime_per_call_does_not_read_the_feed_on_every_call() {
    // The issuer lives on a runtime of its own, for the whole test.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let key = es256("k1");
    let issuer = server.block_on(Issuer::start(&[]));
    let token = sign(
        &key,
        &serde_json::json!({"sub": "u", "jti": "a", "exp": unix_now() + 300}),
        None,
    );
    let v = runtime().block_on(async {
        let v = Verifier::builder()
            .key(key.verifying_key())
            .accept_any_typ()
            .revocation_feed(hourly_feed(&issuer))
            .build()
            .unwrap();
        v.sync_revocations().await.unwrap();
        v
    });
    let polls = || {
        issuer
            .state
            .feed_polls
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    // A request of the build's runtime cut short as it shut down may still be arriving.
    std::thread::sleep(Duration::from_millis(200));
    let before = polls();
    for _ in 0..10 {
        runtime().block_on(async {
            v.verify::<NoCustomClaims>(&token).await.unwrap();
            // The rest of the call: time enough for a read it started to reach the feed.
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
    }
    assert_eq!(
        polls(),
        before,
        "the feed was read by calls within an hour of the last read: {:?}",
        v.stats()
    );
}

/// A read of the feed runs on the runtime of the caller that started it. When that runtime
/// shuts down mid-read (a verifier shared by the runtimes of several `#[tokio::test]`s), a
/// caller on a live runtime that shares the read learns nothing about the feed from its
/// end: it is not answered with an error, the read is made again on its own runtime.
#[test]
fn a_shared_read_cut_short_by_its_runtime_shutting_down_is_made_again() {
    // The issuer lives on a runtime of its own, for the whole test.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let issuer = server.block_on(Issuer::start(&[]));
    let first = runtime();
    let v = first.block_on(async {
        let v = Verifier::builder()
            .key(es256("k1").verifying_key())
            .accept_any_typ()
            .revocation_feed(hourly_feed(&issuer))
            .build()
            .unwrap();
        v.sync_revocations().await.unwrap();
        v
    });
    // A read started on `first`, which stops running it before the feed answers.
    *issuer.state.feed_delay.lock().unwrap() = Duration::from_millis(300);
    first.block_on(async {
        let cut = tokio::time::timeout(Duration::from_millis(50), v.sync_revocations()).await;
        assert!(cut.is_err(), "the feed answered within 50 ms: {cut:?}");
    });
    issuer.revoke("jti", "a", unix_now());
    let second = runtime();
    let waiting = second.spawn({
        let v = v.clone();
        async move { v.sync_revocations().await }
    });
    // One turn of `second`: the task is polled once, asks, and shares the read under way
    // on `first`.
    second.block_on(tokio::task::yield_now());
    drop(first);
    let answer = second.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the caller waited for the read of a runtime that shut down")
            .unwrap()
    });
    assert_eq!(answer, Ok(1), "{:?}", v.stats());
}

/// A read of the feed runs in a task of its own, which stops with the verifier like the
/// poll: a feed with a long backlog (or one that never ends) is not read on for nobody
/// once the last clone is dropped.
#[tokio::test]
async fn a_read_under_way_stops_when_the_verifier_is_dropped() {
    let issuer = Issuer::start(&[]).await;
    let now = unix_now();
    for i in 0..100 {
        issuer.revoke("jti", &format!("j{i}"), now);
    }
    *issuer.state.feed_delay.lock().unwrap() = Duration::from_millis(20);
    let v = Verifier::builder()
        .key(es256("k1").verifying_key())
        .accept_any_typ()
        .revocation_feed(hourly_feed(&issuer).page_size(1))
        .build()
        .unwrap();
    let polls = || {
        issuer
            .state
            .feed_polls
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    // The poll's first read is under way, one event a page.
    assert!(eventually(Duration::from_secs(5), async || polls() >= 3).await);
    drop(v);
    // Only waiting can show that nothing more happens. The page under way may still be
    // answered; none is asked for after it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = polls();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        polls(),
        after,
        "the read went on after the verifier was dropped"
    );
    assert!(after < 50, "{after} pages read");
}

/// A verifier for `app`'s tokens, following its feed as the confidential client `svc`.
async fn verifier_for(app: &TestApp) -> Verifier {
    let (_, secret) = app
        .state
        .auth
        .create_client("svc", &["feed".to_owned()], true, &Actor::System)
        .await
        .unwrap();
    let v = Verifier::builder()
        .issuer_url(&app.base)
        .audience(&app.base)
        .revocation_feed(
            RevocationFeed::new("svc", secret.unwrap().to_string())
                .poll_interval(Duration::from_millis(250)),
        )
        .build()
        .unwrap();
    v.refresh_keys().await.unwrap();
    v
}

/// Waits (at most 5 s) until the verifier refuses `token`; returns how long it took.
async fn refused_within(v: &Verifier, token: &str) -> Duration {
    let start = Instant::now();
    let refused = eventually(Duration::from_secs(5), async || {
        matches!(
            v.verify::<NoCustomClaims>(token).await,
            Err(Error::Revoked { .. })
        )
    })
    .await;
    assert!(refused, "the revocation never reached the verifier");
    start.elapsed()
}

#[tokio::test]
async fn a_logout_on_the_server_reaches_the_verifier_within_seconds() {
    let app = spawn_app().await;
    let v = verifier_for(&app).await;
    app.create_user("alice", PASSWORD, &["user"]).await;
    let tokens = app.login("alice", PASSWORD).await;
    let user = v
        .verify::<NoCustomClaims>(&tokens.access_token)
        .await
        .unwrap();
    assert_eq!(user.roles(), ["user"]);
    assert!(user.session_id().is_some());

    let res = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(&tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let took = refused_within(&v, &tokens.access_token).await;
    eprintln!("logout reached the verifier in {took:?}");
    assert!(v.stats().feed_cursor > 0);
}

#[tokio::test]
async fn a_detected_refresh_token_theft_reaches_the_verifier() {
    let app = spawn_app().await;
    let v = verifier_for(&app).await;
    app.create_user("bob", PASSWORD, &["user"]).await;
    let first = app.login("bob", PASSWORD).await;
    let stolen = first.refresh_token.clone().unwrap();
    // The legitimate client rotates twice; the thief then replays the first refresh token.
    let second: tessera_testkit::Tokens = app.refresh(&stolen).await.json().await.unwrap();
    let third: tessera_testkit::Tokens = app
        .refresh(second.refresh_token.as_deref().unwrap())
        .await
        .json()
        .await
        .unwrap();
    v.verify::<NoCustomClaims>(&third.access_token)
        .await
        .unwrap();
    // Past the grace window (within it, a token of the chain gets the chain's newest).
    app.advance(11).await;
    let replay = app.refresh(&stolen).await;
    assert_eq!(replay.status(), 400, "reuse is detected");
    refused_within(&v, &third.access_token).await;
}

#[tokio::test]
async fn disabling_a_user_revokes_every_token_they_hold() {
    let app = spawn_app().await;
    let v = verifier_for(&app).await;
    app.create_user("carol", PASSWORD, &["user"]).await;
    let a = app.login("carol", PASSWORD).await;
    let b = app.login("carol", PASSWORD).await;
    v.verify::<NoCustomClaims>(&a.access_token).await.unwrap();
    let admin = app.admin_login().await;
    let res = app
        .client
        .post(app.url("/admin/users/carol/disable"))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    refused_within(&v, &a.access_token).await;
    refused_within(&v, &b.access_token).await;
    // The admin's own token is untouched.
    v.verify::<NoCustomClaims>(&admin.access_token)
        .await
        .unwrap();
}

/// The feed's requests use `JwksOptions`' timeouts. With static keys no key cache checks
/// them, and a zero timeout made every poll fail at once: the feed was never read, and with
/// the default fail-open a revoked token was accepted for as long as the process ran.
#[tokio::test]
async fn a_feed_with_static_keys_refuses_zero_timeouts() {
    let key = es256("k1");
    let issuer = Issuer::start(&[]).await;
    let build = |opts: JwksOptions| {
        Verifier::builder()
            .key(key.verifying_key())
            .accept_any_typ()
            .jwks_options(opts)
            .revocation_feed(
                RevocationFeed::new("svc", "feed-secret")
                    .url(format!("{}/revocations", issuer.base)),
            )
            .build()
    };
    let cases: [fn(&mut JwksOptions); 3] = [
        |o| o.timeout = Duration::ZERO,
        |o| o.connect_timeout = Duration::ZERO,
        |o| o.retry_interval = Duration::ZERO,
    ];
    for (i, set) in cases.iter().enumerate() {
        let mut o = JwksOptions::default();
        set(&mut o);
        let err = build(o).unwrap_err();
        assert!(
            matches!(&err, Error::Config { reason } if reason.contains("JwksOptions::")),
            "case {i}: {err}"
        );
    }
    build(JwksOptions::default()).unwrap();
}
