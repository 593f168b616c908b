//! The remote key cache against a fake issuer whose every fetch is counted.
//!
//! Time-dependent rules (cooldown, freshness) run on a `ManualClock`; the only real waits
//! are the background refresh (min TTL 1 s) and the slow answer of the single-flight test.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_axum::{Error, JwksOptions, Verifier};
use tessera_jose::{NoCustomClaims, SigningKey};

use crate::{Issuer, ManualClock, es256, eventually, runtime, sign, unix_now};

fn claims(iss: &str) -> Value {
    let now = unix_now();
    json!({"iss": iss, "sub": "u", "exp": now + 600, "iat": now})
}

fn options() -> JwksOptions {
    let mut o = JwksOptions::default();
    o.min_ttl = Duration::from_secs(60);
    o.max_ttl = Duration::from_secs(3600);
    o.unknown_kid_cooldown = Duration::from_secs(30);
    o.retry_interval = Duration::from_secs(3600);
    o
}

async fn verifier(issuer: &Issuer, clock: &ManualClock, opts: JwksOptions) -> Verifier {
    Verifier::builder()
        .jwks_uri(issuer.jwks_uri())
        .issuer(&issuer.base)
        .jwks_options(opts)
        .clock(clock.shared())
        .token_cache_capacity(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn keys_are_discovered_from_the_issuer_and_iss_is_then_required() {
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let v = Verifier::builder()
        .issuer_url(&issuer.base)
        .build()
        .unwrap();
    let good = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    v.verify::<NoCustomClaims>(&good).await.unwrap();
    assert_eq!(issuer.state.discovery_fetches.load(Ordering::SeqCst), 1);
    assert_eq!(v.key_status().unwrap().kids, ["k1"]);
    let foreign = sign(&k1, &claims("https://other.test"), Some("at+jwt"));
    assert!(matches!(
        v.verify::<NoCustomClaims>(&foreign).await,
        Err(Error::Token(tessera_jose::Error::IssuerMismatch { .. }))
    ));
}

#[tokio::test]
async fn a_jwks_uri_on_another_origin_or_a_lying_issuer_is_refused() {
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    // `localhost` and `127.0.0.1` are different origins.
    let elsewhere = issuer.jwks_uri().replace("127.0.0.1", "localhost");
    *issuer.state.jwks_uri.lock().unwrap() = Some(elsewhere.clone());
    let v = Verifier::builder()
        .issuer_url(&issuer.base)
        .build()
        .unwrap();
    assert!(matches!(
        v.refresh_keys().await,
        Err(Error::UrlRefused { .. })
    ));
    assert_eq!(issuer.jwks_fetches(), 0);

    let mut allow = JwksOptions::default();
    allow.allow_foreign_jwks_uri = true;
    let v = Verifier::builder()
        .issuer_url(&issuer.base)
        .jwks_options(allow)
        .build()
        .unwrap();
    v.refresh_keys().await.unwrap();
    assert_eq!(v.key_status().unwrap().jwks_uri, elsewhere);

    *issuer.state.jwks_uri.lock().unwrap() = None;
    *issuer.state.issuer.lock().unwrap() = Some("https://impostor.test".into());
    let v = Verifier::builder()
        .issuer_url(&issuer.base)
        .build()
        .unwrap();
    assert!(matches!(
        v.refresh_keys().await,
        Err(Error::IssuerMismatch { .. })
    ));
}

#[tokio::test]
async fn the_last_issuer_url_decides_both_the_keys_and_the_required_iss() {
    let (ka, kb) = (es256("ka"), es256("kb"));
    let (a, b) = (Issuer::start(&[&ka]).await, Issuer::start(&[&kb]).await);
    let v = Verifier::builder()
        .issuer_url(&a.base)
        .issuer_url(&b.base)
        .build()
        .unwrap();
    v.verify::<NoCustomClaims>(&sign(&kb, &claims(&b.base), Some("at+jwt")))
        .await
        .unwrap();
    assert!(matches!(
        v.verify::<NoCustomClaims>(&sign(&kb, &claims(&a.base), Some("at+jwt")))
            .await,
        Err(Error::Token(tessera_jose::Error::IssuerMismatch { .. }))
    ));
    assert_eq!(a.state.discovery_fetches.load(Ordering::SeqCst), 0);
    // An explicit `issuer` wins over any `issuer_url`, before or after it.
    for v in [
        Verifier::builder()
            .issuer("https://iss.test")
            .issuer_url(&b.base),
        Verifier::builder()
            .issuer_url(&b.base)
            .issuer("https://iss.test"),
    ] {
        let v = v.build().unwrap();
        v.verify::<NoCustomClaims>(&sign(&kb, &claims("https://iss.test"), Some("at+jwt")))
            .await
            .unwrap();
    }
}

/// RFC 8414 §3.3: the metadata's `issuer` is compared as sent, not with its slashes cut.
#[tokio::test]
async fn the_discovered_issuer_must_match_exactly() {
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let discover = async |configured: String, published: String| {
        *issuer.state.issuer.lock().unwrap() = Some(published);
        let v = Verifier::builder().issuer_url(configured).build().unwrap();
        v.refresh_keys().await
    };
    let base = issuer.base.clone();
    assert!(matches!(
        discover(base.clone(), format!("{base}/")).await,
        Err(Error::IssuerMismatch { .. })
    ));
    assert!(matches!(
        discover(base.clone(), format!("{base}//")).await,
        Err(Error::IssuerMismatch { .. })
    ));
    // The form `tessera serve` publishes (no terminating slash), however it is configured.
    discover(base.clone(), base.clone()).await.unwrap();
    discover(format!("{base}/"), base.clone()).await.unwrap();
    // An issuer whose identifier ends in a slash, configured as such.
    discover(format!("{base}/"), format!("{base}/"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_on_its_first_unknown_kid() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    let fetches = issuer.jwks_fetches();
    issuer.set_keys(&[&k1, &k2]);
    clock.advance(31);
    let t2 = sign(&k2, &claims(&issuer.base), Some("at+jwt"));
    v.verify::<NoCustomClaims>(&t2).await.unwrap();
    assert_eq!(issuer.jwks_fetches(), fetches + 1);
    assert_eq!(v.key_status().unwrap().kids, ["k1", "k2"]);
}

#[tokio::test]
async fn unknown_kids_trigger_at_most_one_fetch_per_cooldown() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    clock.advance(31);
    let before = issuer.jwks_fetches();
    for i in 0..50 {
        let forged = sign(
            &es256(&format!("random-{i}")),
            &claims(&issuer.base),
            Some("at+jwt"),
        );
        assert!(matches!(
            v.verify::<NoCustomClaims>(&forged).await,
            Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
        ));
    }
    assert_eq!(
        issuer.jwks_fetches(),
        before + 1,
        "one fetch for 50 unknown kids"
    );
    clock.advance(29);
    let forged = sign(&es256("late"), &claims(&issuer.base), Some("at+jwt"));
    assert!(v.verify::<NoCustomClaims>(&forged).await.is_err());
    assert_eq!(issuer.jwks_fetches(), before + 1, "still cooling down");
    clock.advance(2);
    assert!(v.verify::<NoCustomClaims>(&forged).await.is_err());
    assert_eq!(issuer.jwks_fetches(), before + 2, "cooldown over");
}

#[tokio::test]
async fn when_the_issuer_is_down_the_last_good_keys_keep_working() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    let token = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    issuer.set_failing(true);
    clock.advance(4000); // far past max_ttl: the keys are stale
    assert!(matches!(
        v.refresh_keys().await,
        Err(Error::Status { status: 500, .. })
    ));
    assert!(v.key_status().unwrap().fresh_until < clock.now());
    // Re-signing with a shifted clock keeps the token valid at the new time.
    let mut c = claims(&issuer.base);
    c["exp"] = json!(clock.now() + 600);
    c["iat"] = json!(clock.now());
    let token_now = sign(&k1, &c, Some("at+jwt"));
    v.verify::<NoCustomClaims>(&token_now).await.unwrap();
    let _ = token;
    assert!(v.stats().jwks_fetch_failures >= 1);
    // Recovery: the next refresh replaces the stale set.
    issuer.set_failing(false);
    v.refresh_keys().await.unwrap();
    assert!(v.key_status().unwrap().fresh_until > clock.now());
}

/// Stale-if-error has a bound: past `max_staleness` beyond its freshness lifetime, a key
/// set the issuer can no longer confirm verifies nothing (a withdrawn key must not live for
/// as long as the issuer is down), tokens seen before included; the first successful fetch
/// ends it.
#[tokio::test]
async fn keys_stale_beyond_max_staleness_fail_closed_until_a_refresh_succeeds() {
    assert_eq!(
        JwksOptions::default().max_staleness,
        Duration::from_secs(24 * 3600)
    );
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let mut o = options();
    o.max_staleness = Duration::from_secs(600);
    let v = Verifier::builder()
        .jwks_uri(issuer.jwks_uri())
        .issuer(&issuer.base)
        .jwks_options(o)
        .clock(clock.shared())
        .build()
        .unwrap();
    v.refresh_keys().await.unwrap();
    let fresh_until = v.key_status().unwrap().fresh_until;
    // Monitoring can see when the set stops being usable.
    assert_eq!(v.key_status().unwrap().usable_until, fresh_until + 600);
    let mut c = claims(&issuer.base);
    c["exp"] = json!(clock.now() + 7200);
    let token = sign(&k1, &c, Some("at+jwt"));
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    issuer.set_failing(true);
    // Stale, but within the bound: still served (and the token still comes from the cache).
    clock.advance(fresh_until + 600 - clock.now());
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    let hits = v.stats().token_cache_hits;
    assert!(hits >= 1);
    clock.advance(1);
    assert!(v.key_status().unwrap().usable_until < clock.now());
    assert_eq!(
        v.verify::<NoCustomClaims>(&token).await.unwrap_err(),
        Error::KeysStale
    );
    assert_eq!(
        v.stats().token_cache_hits,
        hits,
        "no cache hit past the bound"
    );
    // A token never seen before is refused the same way.
    c["jti"] = json!("another");
    assert_eq!(
        v.verify::<NoCustomClaims>(&sign(&k1, &c, Some("at+jwt")))
            .await
            .unwrap_err(),
        Error::KeysStale
    );
    issuer.set_failing(false);
    clock.advance(31); // the unknown-kid cooldown: the next request may fetch
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    assert!(v.key_status().unwrap().fresh_until > clock.now());
}

#[tokio::test]
async fn with_no_keys_ever_fetched_requests_get_unavailable_not_invalid() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    issuer.set_failing(true);
    let v = verifier(&issuer, &clock, options()).await;
    let token = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    assert_eq!(
        v.verify::<NoCustomClaims>(&token).await.unwrap_err(),
        Error::KeysUnavailable
    );
    issuer.set_failing(false);
    clock.advance(31);
    v.verify::<NoCustomClaims>(&token).await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_that_need_keys_share_one_fetch() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    issuer.set_delay(Duration::from_millis(300));
    let v = verifier(&issuer, &clock, options()).await;
    let token = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (v, t) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify::<NoCustomClaims>(&t).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "the background fetch served all 32"
    );
}

#[tokio::test]
async fn cache_control_is_honoured_within_the_configured_bounds() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    let cases = [
        (Some("public, max-age=300"), 300),
        (Some("max-age=5"), 60),
        (Some("max-age=999999"), 3600),
        // RFC 9111 §1.2.2: too large to represent saturates; not digits only is invalid,
        // and an invalid max-age makes the answer stale (§4.2.1).
        (Some("max-age=99999999999999999999999"), 3600),
        (Some("max-age=+300"), 60),
        (Some("no-store"), 60),
        (None, 300),
    ];
    for (header, expected) in cases {
        issuer.set_cache_control(header);
        v.refresh_keys().await.unwrap();
        let s = v.key_status().unwrap();
        assert_eq!(s.fresh_until - s.fetched_at, expected, "{header:?}");
    }
}

/// RFC 9111 §4.2.3: an answer a cache in between has held for `Age` seconds has that much
/// less of its `max-age` left. Counting from the fetch kept withdrawn keys up to a whole
/// `max-age` too long behind a CDN.
#[tokio::test]
async fn the_age_of_an_answer_is_subtracted_from_its_max_age() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    issuer.set_cache_control(Some("public, max-age=600"));
    let v = verifier(&issuer, &clock, options()).await;
    // Let the background task make its first fetch, so none of its own joins a case below.
    assert!(
        eventually(Duration::from_secs(10), async || v.stats().jwks_fetches
            >= 1)
        .await
    );
    let cases = [
        (Some("500"), 100),
        // Older than its max-age: stale on arrival, so the lower bound applies.
        (Some("700"), 60),
        (Some("99999999999999999999999"), 60),
        // RFC 9111 §5.1: the first member of a list; an invalid value is ignored.
        (Some("200, 400"), 400),
        (Some("-5"), 600),
        (Some("soon"), 600),
        (None, 600),
    ];
    for (age, expected) in cases {
        issuer.set_age(age);
        v.refresh_keys().await.unwrap();
        let s = v.key_status().unwrap();
        assert_eq!(s.fresh_until - s.fetched_at, expected, "Age: {age:?}");
    }
}

#[tokio::test]
async fn keys_are_refreshed_in_the_background_before_they_expire() {
    let k1 = es256("k1");
    let k2 = es256("k2");
    let issuer = Issuer::start(&[&k1]).await;
    issuer.set_cache_control(Some("max-age=1"));
    let mut o = options();
    o.min_ttl = Duration::from_secs(1);
    // No demand fetch can help: only the background task can find k2.
    o.unknown_kid_cooldown = Duration::from_secs(3600);
    let v = Verifier::builder()
        .jwks_uri(issuer.jwks_uri())
        .accept_any_issuer()
        .jwks_options(o)
        .build()
        .unwrap();
    v.refresh_keys().await.unwrap();
    issuer.set_keys(&[&k2]);
    let found = eventually(Duration::from_secs(3), async || {
        v.key_status().is_some_and(|s| s.kids == ["k2"])
    })
    .await;
    assert!(found, "the background refresh replaced the key set");
}

#[tokio::test]
async fn oversized_answers_and_cross_origin_redirects_are_refused() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let big = Verifier::builder()
        .jwks_uri(format!("{}/big", issuer.base))
        .accept_any_issuer()
        .clock(clock.shared())
        .build()
        .unwrap();
    assert!(matches!(
        big.refresh_keys().await,
        Err(Error::TooLarge { limit: 262_144, .. })
    ));
    let redirected = Verifier::builder()
        .jwks_uri(format!("{}/redirect", issuer.base))
        .accept_any_issuer()
        .clock(clock.shared())
        .build()
        .unwrap();
    let err = redirected.refresh_keys().await.unwrap_err();
    assert!(
        matches!(&err, Error::Fetch { reason, .. } if reason.contains("another origin")),
        "{err}"
    );
    assert_eq!(issuer.jwks_fetches(), 0);
}

#[tokio::test]
async fn a_published_shared_secret_is_never_used() {
    let clock = ManualClock::new();
    let issuer = Issuer::start(&[]).await;
    *issuer.state.jwks.lock().unwrap() =
        r#"{"keys":[{"kty":"oct","kid":"h","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#.into();
    let v = verifier(&issuer, &clock, options()).await;
    // A set with nothing usable in it: fetched, and no key held.
    v.refresh_keys().await.unwrap();
    assert!(v.key_status().unwrap().kids.is_empty());
}

/// A private key published in the key set (`d`, RFC 7518 §6.2.2.1 and §6.3.2) is known to
/// whoever can read the set: it is dropped like a published secret, and the other keys stay
/// in use.
#[tokio::test]
async fn a_published_private_key_is_never_used() {
    let clock = ManualClock::new();
    let (k1, leaked) = (es256("k1"), es256("leaked"));
    let issuer = Issuer::start(&[&k1]).await;
    let mut set: Value = serde_json::from_str(&issuer.state.jwks.lock().unwrap()).unwrap();
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::from_str(&leaked.to_private_jwk().unwrap().to_json()).unwrap());
    *issuer.state.jwks.lock().unwrap() = set.to_string();
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    assert_eq!(v.key_status().unwrap().kids, ["k1"]);
    v.verify::<NoCustomClaims>(&sign(&k1, &claims(&issuer.base), Some("at+jwt")))
        .await
        .unwrap();
    assert!(matches!(
        v.verify::<NoCustomClaims>(&sign(&leaked, &claims(&issuer.base), Some("at+jwt")))
            .await,
        Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
    ));
}

/// One odd entry does not take down the others: every key sharing a duplicated `kid` is
/// dropped (which one a token means is ambiguous), and so is every published secret.
#[tokio::test]
async fn a_duplicated_kid_or_a_published_secret_drops_only_those_entries() {
    let clock = ManualClock::new();
    let (k1, k2, k2b) = (es256("k1"), es256("k2"), es256("k2"));
    let issuer = Issuer::start(&[&k1, &k2, &k2b]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    assert_eq!(v.key_status().unwrap().kids, ["k1"]);
    v.verify::<NoCustomClaims>(&sign(&k1, &claims(&issuer.base), Some("at+jwt")))
        .await
        .unwrap();
    for k2 in [&k2, &k2b] {
        assert!(matches!(
            v.verify::<NoCustomClaims>(&sign(k2, &claims(&issuer.base), Some("at+jwt")))
                .await,
            Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
        ));
    }

    let issuer = Issuer::start(&[&k1]).await;
    let mut set: Value = serde_json::from_str(&issuer.state.jwks.lock().unwrap()).unwrap();
    set["keys"].as_array_mut().unwrap().push(json!({
        "kty": "oct", "kid": "h", "alg": "HS256",
        "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA",
    }));
    *issuer.state.jwks.lock().unwrap() = set.to_string();
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    assert_eq!(v.key_status().unwrap().kids, ["k1"]);
    v.verify::<NoCustomClaims>(&sign(&k1, &claims(&issuer.base), Some("at+jwt")))
        .await
        .unwrap();

    // Nothing usable left: no key is held, k1 (no longer published) included.
    issuer.set_keys(&[&k2, &k2b]);
    v.refresh_keys().await.unwrap();
    assert!(v.key_status().unwrap().kids.is_empty());
    assert!(matches!(
        v.verify::<NoCustomClaims>(&sign(&k1, &claims(&issuer.base), Some("at+jwt")))
            .await,
        Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
    ));
}

#[tokio::test]
async fn a_jwks_document_read_by_the_application_is_a_static_key_source() {
    let (k1, k2) = (es256("k1"), es256("k2"));
    let jwks = tessera_jose::JwkSet {
        keys: vec![k1.to_public_jwk().unwrap(), k2.to_public_jwk().unwrap()],
    }
    .to_json();
    let v = Verifier::builder()
        .jwks_json(&jwks)
        .issuer("https://issuer.test")
        .build()
        .unwrap();
    for key in [&k1, &k2] {
        let t = sign(key, &claims("https://issuer.test"), Some("at+jwt"));
        v.verify::<NoCustomClaims>(&t).await.unwrap();
    }
    assert!(v.key_status().is_none(), "nothing is fetched");
    assert!(matches!(
        Verifier::builder().jwks_json("{\"keys\": 1}").build(),
        Err(Error::Config { .. })
    ));
}

/// A request that goes away while its unknown-`kid` fetch is under way (the client
/// disconnected, a timeout fired) must not cancel that fetch: the cooldown is spent either
/// way, and a cancelled fetch would leave a rotated key unknown until the cooldown ends,
/// for every request, as often as anyone cares to send a made-up `kid` and hang up.
#[tokio::test]
async fn a_cancelled_request_does_not_cancel_the_fetch_it_started() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    issuer.set_keys(&[&k1, &k2]);
    issuer.set_delay(Duration::from_millis(400));
    clock.advance(31);
    let forged = sign(&es256("made-up"), &claims(&issuer.base), Some("at+jwt"));
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        v.verify::<NoCustomClaims>(&forged),
    )
    .await;
    assert!(gave_up.is_err(), "the request was cancelled mid-fetch");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Still within the cooldown: only the fetch the cancelled request started can know k2.
    let t2 = sign(&k2, &claims(&issuer.base), Some("at+jwt"));
    v.verify::<NoCustomClaims>(&t2).await.unwrap();
    assert_eq!(v.key_status().unwrap().kids, ["k1", "k2"]);
}

/// Requests with an unknown `kid` never queue behind a slow issuer for longer than
/// `max_fetch_wait`: the one whose `kid` started the fetch, and those arriving within the
/// cooldown while it runs, are all answered while the issuer is still sending its answer.
#[tokio::test]
async fn unknown_kids_do_not_queue_behind_a_slow_fetch() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let mut o = options();
    o.max_fetch_wait = Duration::from_millis(100);
    let v = verifier(&issuer, &clock, o).await;
    v.refresh_keys().await.unwrap();
    let (fetches, answered) = (issuer.jwks_fetches(), issuer.jwks_answered());
    issuer.set_delay(Duration::from_secs(5));
    clock.advance(31);
    for i in 0..5 {
        let forged = sign(
            &es256(&format!("made-up-{i}")),
            &claims(&issuer.base),
            Some("at+jwt"),
        );
        assert!(matches!(
            v.verify::<NoCustomClaims>(&forged).await,
            Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
        ));
    }
    assert_eq!(
        issuer.jwks_answered(),
        answered,
        "every request was answered while the fetch was still under way"
    );
    assert!(
        issuer.jwks_fetches() <= fetches + 1,
        "one fetch per cooldown"
    );
    // Known keys are not held up at all.
    v.verify::<NoCustomClaims>(&sign(&k1, &claims(&issuer.base), Some("at+jwt")))
        .await
        .unwrap();
}

/// A request that arrives while a fetch is under way may wait for it (within
/// `max_fetch_wait`), cooldown or not: that fetch may bring its key.
#[tokio::test]
async fn a_request_shares_a_fetch_under_way_within_the_cooldown() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let mut o = options();
    o.max_fetch_wait = Duration::from_secs(30);
    let v = verifier(&issuer, &clock, o).await;
    v.refresh_keys().await.unwrap();
    let fetches = issuer.jwks_fetches();
    issuer.set_keys(&[&k1, &k2]);
    issuer.set_delay(Duration::from_millis(300));
    clock.advance(31);
    let forged = sign(&es256("made-up"), &claims(&issuer.base), Some("at+jwt"));
    let first = tokio::spawn({
        let v = v.clone();
        async move { v.verify::<NoCustomClaims>(&forged).await }
    });
    assert!(
        eventually(Duration::from_secs(10), async || issuer.jwks_fetches()
            > fetches)
        .await
    );
    // The made-up kid spent the cooldown; this request joins its fetch instead.
    let t2 = sign(&k2, &claims(&issuer.base), Some("at+jwt"));
    v.verify::<NoCustomClaims>(&t2).await.unwrap();
    assert!(first.await.unwrap().is_err());
    assert_eq!(issuer.jwks_fetches(), fetches + 1);
}

/// Keys fetched from a bare JWKS URL say nothing about whose tokens they sign (one key set
/// may serve many issuers or tenants): without an `iss` to require, building fails unless
/// the caller says any issuer will do.
#[tokio::test]
async fn a_jwks_uri_without_an_issuer_is_refused_unless_any_issuer_is_accepted() {
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let err = Verifier::builder()
        .jwks_uri(issuer.jwks_uri())
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config { reason } if reason.contains("issuer")),
        "{err}"
    );
    let v = Verifier::builder()
        .jwks_uri(issuer.jwks_uri())
        .accept_any_issuer()
        .build()
        .unwrap();
    v.verify::<NoCustomClaims>(&sign(&k1, &claims("https://anyone.test"), Some("at+jwt")))
        .await
        .unwrap();
}

/// The time a token is checked against is read after any key fetch it waited for, not
/// before: a slow issuer must not stretch a token's life by the length of the fetch.
#[tokio::test]
async fn expiry_is_judged_at_the_end_of_a_key_fetch_not_its_start() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let v = Verifier::builder()
        .jwks_uri(issuer.jwks_uri())
        .issuer(&issuer.base)
        .jwks_options(options())
        .clock(clock.shared())
        .leeway(0)
        .build()
        .unwrap();
    v.refresh_keys().await.unwrap();
    issuer.set_keys(&[&k1, &k2]);
    issuer.set_delay(Duration::from_millis(400));
    clock.advance(31);
    let mut c = claims(&issuer.base);
    c["exp"] = json!(clock.now() + 5);
    let t2 = sign(&k2, &c, Some("at+jwt"));
    let pending = tokio::spawn({
        let v = v.clone();
        async move { v.verify::<NoCustomClaims>(&t2).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    clock.advance(10); // the token expires while its key is being fetched
    assert!(matches!(
        pending.await.unwrap(),
        Err(Error::Token(tessera_jose::Error::Expired { .. }))
    ));
}

/// Options that would switch off the issuer's protection are configuration errors: a
/// cooldown under one second (counted in whole seconds, it meant none: a fetch per made-up
/// `kid`), and a zero retry interval or timeout (a failing issuer asked again at once,
/// forever).
#[tokio::test]
async fn options_that_would_hammer_the_issuer_are_refused() {
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let zero = Duration::ZERO;
    let sub_second = Duration::from_millis(500);
    let cases: [fn(&mut JwksOptions, Duration); 4] = [
        |o, d| o.unknown_kid_cooldown = d,
        |o, d| o.retry_interval = d,
        |o, d| o.timeout = d,
        |o, d| o.connect_timeout = d,
    ];
    for (i, set) in cases.iter().enumerate() {
        let mut o = options();
        set(&mut o, if i == 0 { sub_second } else { zero });
        let built = Verifier::builder()
            .jwks_uri(issuer.jwks_uri())
            .issuer(&issuer.base)
            .jwks_options(o)
            .build();
        assert!(matches!(built, Err(Error::Config { .. })), "case {i}");
    }
}

/// `refresh_keys` reports how the fetch that answered it ended, also to the callers that
/// shared it: a caller checking readiness must not hear "ready" from a fetch that failed
/// (and the background task, told the same, must wait `retry_interval`, not retry every
/// second).
#[tokio::test]
async fn a_refresh_that_shares_a_failing_fetch_reports_the_failure() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    let fetches = issuer.jwks_fetches();
    issuer.set_failing(true);
    // Long enough for the later calls to find the first one's fetch still under way.
    issuer.set_delay(Duration::from_secs(1));
    let refresh = || {
        let v = v.clone();
        tokio::spawn(async move { v.refresh_keys().await })
    };
    let first = refresh();
    assert!(
        eventually(Duration::from_secs(10), async || issuer.jwks_fetches()
            > fetches)
        .await
    );
    // The first call's fetch is under way: these two share the next one.
    let later = [refresh(), refresh()];
    for call in later {
        assert!(matches!(
            call.await.unwrap(),
            Err(Error::Status { status: 500, .. })
        ));
    }
    assert!(matches!(
        first.await.unwrap(),
        Err(Error::Status { status: 500, .. })
    ));
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 2,
        "the fetch under way, then one shared by the two later calls"
    );
}

/// `refresh_keys` after the issuer rotated its keys answers with the rotated set: not with
/// a fetch that was already under way when it was called (the background refresh, or one
/// started by an unknown `kid`), whose answer may predate the rotation. It waits for that
/// fetch to end and fetches again, once for any number of concurrent callers.
#[tokio::test]
async fn refresh_keys_answers_with_a_fetch_that_starts_after_the_call() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    let fetches = issuer.jwks_fetches();
    // The fake issuer answers with the set as it was when the request arrived.
    issuer.set_delay(Duration::from_millis(500));
    let refresh = || {
        let v = v.clone();
        tokio::spawn(async move { v.refresh_keys().await })
    };
    let under_way = refresh();
    assert!(
        eventually(Duration::from_secs(10), async || issuer.jwks_fetches()
            > fetches)
        .await
    );
    issuer.set_keys(&[&k2]);
    let after: Vec<_> = (0..4).map(|_| refresh()).collect();
    for call in after {
        call.await.unwrap().unwrap();
        assert_eq!(
            v.key_status().unwrap().kids,
            ["k2"],
            "answered by a fetch that began before the call"
        );
    }
    under_way.await.unwrap().unwrap();
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 2,
        "the fetch under way, then one shared by the four later calls"
    );
}

/// A fetch task spawned on a runtime that shuts down before the task first runs (a
/// verifier shared between runtimes: a short-lived `block_on`, one runtime per test) must
/// still end its attempt. Otherwise the "a fetch is running" flag stays set for good:
/// `refresh_keys` and the background refresh wait forever for a fetch that will never
/// finish, and every unknown `kid` waits `max_fetch_wait` for nothing.
#[tokio::test]
async fn a_fetch_task_dropped_before_it_ran_does_not_block_later_fetches() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    let before = v.stats().jwks_fetches;
    let other = v.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // One poll: the fetch task is spawned on this runtime, which never runs it.
            tokio::select! {
                biased;
                _ = other.refresh_keys() => panic!("the fetch cannot have run yet"),
                () = std::future::ready(()) => {}
            }
        });
        drop(rt);
    })
    .join()
    .unwrap();
    assert_eq!(
        v.stats().jwks_fetches,
        before + 1,
        "the dropped attempt counts"
    );
    issuer.set_keys(&[&k1, &k2]);
    // A guard against hanging forever, not a timing assertion.
    let refreshed = tokio::time::timeout(Duration::from_secs(60), v.refresh_keys()).await;
    assert!(matches!(refreshed, Ok(Ok(()))), "{refreshed:?}");
    assert_eq!(v.key_status().unwrap().kids, ["k1", "k2"]);
}

/// A wall clock stepped back (an NTP correction) must not stop unknown-`kid` fetches until
/// it passes the time of the last one again: a key rotated meanwhile would be refused for
/// as long as the step.
#[tokio::test]
async fn a_clock_stepped_back_does_not_extend_the_unknown_kid_cooldown() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    clock.advance(31);
    let forged = sign(&es256("made-up"), &claims(&issuer.base), Some("at+jwt"));
    assert!(v.verify::<NoCustomClaims>(&forged).await.is_err());
    let fetches = issuer.jwks_fetches();
    clock.advance(-3600);
    issuer.set_keys(&[&k1, &k2]);
    let mut c = claims(&issuer.base);
    c["iat"] = json!(clock.now());
    c["exp"] = json!(clock.now() + 600);
    v.verify::<NoCustomClaims>(&sign(&k2, &c, Some("at+jwt")))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), fetches + 1);
}

/// `max_fetch_wait` zero never waits: an unknown `kid` starts its fetch and is answered at
/// once, without yielding to the runtime (a zero timeout still parks the request until the
/// timer's next tick, letting every other task run first). On this single-threaded test
/// runtime another task can only run if the request yields.
#[tokio::test]
async fn a_zero_max_fetch_wait_answers_without_yielding() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let mut o = options();
    o.max_fetch_wait = Duration::ZERO;
    let v = verifier(&issuer, &clock, o).await;
    v.refresh_keys().await.unwrap();
    clock.advance(31);
    let forged = sign(&es256("made-up"), &claims(&issuer.base), Some("at+jwt"));
    let attempts = v.stats().jwks_fetches;
    let other_ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn({
        let other_ran = std::sync::Arc::clone(&other_ran);
        async move { other_ran.store(true, Ordering::SeqCst) }
    });
    assert!(matches!(
        v.verify::<NoCustomClaims>(&forged).await,
        Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
    ));
    assert!(
        !other_ran.load(Ordering::SeqCst),
        "the request yielded to the runtime"
    );
    // The fetch it started still happens.
    assert!(
        eventually(Duration::from_secs(10), async || v.stats().jwks_fetches
            > attempts)
        .await
    );
}

/// A verifier can outlive the runtime that built it (kept in a `static`, shared by the
/// runtimes of several `#[tokio::test]`s, built in a short-lived `block_on`), and the
/// background refresh spawned there dies with that runtime. The next caller on a live
/// runtime starts it again: here only the background refresh can find the rotated key (the
/// unknown-`kid` cooldown allows no fetch on demand), and it does.
#[test]
fn the_background_refresh_restarts_on_a_live_runtime_when_its_own_shut_down() {
    // The issuer lives on a runtime of its own, for the whole test.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = server.block_on(Issuer::start(&[&k1]));
    issuer.set_cache_control(Some("max-age=1"));
    let mut o = options();
    o.min_ttl = Duration::from_secs(1);
    o.unknown_kid_cooldown = Duration::from_secs(3600);
    let token = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    let first = runtime();
    let v = first.block_on(async {
        let v = Verifier::builder()
            .jwks_uri(issuer.jwks_uri())
            .issuer(&issuer.base)
            .jwks_options(o)
            .build()
            .unwrap();
        v.verify::<NoCustomClaims>(&token).await.unwrap();
        v
    });
    drop(first);
    issuer.set_keys(&[&k2]);
    runtime().block_on(async {
        // A request on this runtime; k1 is still held, so it fetches nothing itself.
        v.verify::<NoCustomClaims>(&token).await.unwrap();
        let refreshed = eventually(Duration::from_secs(10), async || {
            v.key_status().is_some_and(|s| s.kids == ["k2"])
        })
        .await;
        assert!(
            refreshed,
            "the key set was not refreshed after the runtime of the refresh shut down: {:?}",
            v.stats()
        );
    });
}

/// RFC 7517 §5: entries of a JWK Set that are not JWKs as this verifier reads them (a
/// member of the wrong JSON type, a missing `kty`, a member named twice) are ignored, like
/// keys it cannot use: the keys beside them stay in use, and replace the keys held. Such an
/// entry used to fail the whole fetch, so one odd key from the issuer kept every new key
/// from being picked up.
#[tokio::test]
async fn entries_that_are_not_jwks_are_skipped_and_the_other_keys_used() {
    let clock = ManualClock::new();
    let (k1, k2, k3) = (es256("k1"), es256("k2"), es256("k3"));
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    assert_eq!(v.key_status().unwrap().kids, ["k1"]);

    let jwk = |k: &SigningKey| -> Value {
        serde_json::from_str(&k.to_public_jwk().unwrap().to_json()).unwrap()
    };
    let mut wrong_ops = jwk(&k3);
    wrong_ops["key_ops"] = json!("verify");
    let mut no_kty = jwk(&k3);
    no_kty.as_object_mut().unwrap().remove("kty");
    let set = json!({"keys": [
        {"kty": "RSA", "kid": "r", "alg": "RS256", "n": 123, "e": "AQAB"},
        wrong_ops,
        jwk(&k2),
        no_kty,
        {"kty": "EC", "kid": "x", "crv": ["P-256"]},
    ]});
    let mut text = set.to_string();
    // A member named twice, which serde_json's `Value` would have merged.
    text.insert_str(
        text.len() - 2,
        r#",{"kty":"EC","kid":"dup","kid":"dup2","crv":"P-256","x":"AA","y":"AA"}"#,
    );
    *issuer.state.jwks.lock().unwrap() = text;
    v.refresh_keys().await.unwrap();
    assert_eq!(v.key_status().unwrap().kids, ["k2"]);
    v.verify::<NoCustomClaims>(&sign(&k2, &claims(&issuer.base), Some("at+jwt")))
        .await
        .unwrap();
    // k1 is no longer published, and k3's entries were unreadable.
    for k in [&k1, &k3] {
        assert!(matches!(
            v.verify::<NoCustomClaims>(&sign(k, &claims(&issuer.base), Some("at+jwt")))
                .await,
            Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
        ));
    }
}

/// RFC 7517 §5: the `keys` of a JWK Set are the keys its issuer publishes, and an issuer
/// that publishes none trusts none. Once an empty set has been fetched, a token signed by a
/// key held before (one seen before included) is refused as a token with an unknown `kid`,
/// and `key_status` shows the empty set. A fetch that fails (here, a document that is not
/// JSON) keeps the keys held, and a set with keys again restores service.
#[tokio::test]
async fn an_empty_key_set_withdraws_every_key_held_before() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let v = Verifier::builder()
        .jwks_uri(issuer.jwks_uri())
        .issuer(&issuer.base)
        .jwks_options(options())
        .clock(clock.shared())
        .build()
        .unwrap();
    v.refresh_keys().await.unwrap();
    let token = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    *issuer.state.jwks.lock().unwrap() = r#"{"keys":"#.into();
    assert!(matches!(
        v.refresh_keys().await,
        Err(Error::InvalidDocument { .. })
    ));
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    assert_eq!(v.key_status().unwrap().kids, ["k1"]);

    withdraws_every_key_then_restores(&v, &issuer, &clock, &k1, &token, r#"{"keys":[]}"#).await;
}

/// RFC 7517 §5: entries of a JWK Set that a verifier cannot use are ignored, so a set whose
/// entries are all of that kind (a key type or curve it does not support, an encryption
/// key, a malformed key, a published secret) holds no key for it, exactly like an empty
/// set: the keys held before are no longer published, and are withdrawn. Keeping them would
/// accept tokens signed by keys the issuer withdrew (the same set with one usable entry
/// more replaces them). A set with usable keys again restores service.
#[tokio::test]
async fn a_key_set_with_no_usable_key_withdraws_every_key_held_before() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let v = Verifier::builder()
        .jwks_uri(issuer.jwks_uri())
        .issuer(&issuer.base)
        .jwks_options(options())
        .clock(clock.shared())
        .build()
        .unwrap();
    v.refresh_keys().await.unwrap();
    let token = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    v.verify::<NoCustomClaims>(&token).await.unwrap();

    let mut enc: Value =
        serde_json::from_str(&es256("enc").to_public_jwk().unwrap().to_json()).unwrap();
    enc["use"] = json!("enc");
    let unusable = json!({"keys": [
        {"kty": "future-kty", "kid": "f"},
        {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"},
        {"kty": "EC", "crv": "P-256", "kid": "bad", "x": "AAAA", "y": "AAAA"},
        enc,
        {"kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"},
        // Entries that are not even JWKs as this verifier reads them: ignored the same way.
        {"kty": "RSA", "kid": "r", "alg": "RS256", "n": 123, "e": "AQAB"},
        {"kty": "EC", "kid": "ops", "crv": "P-256", "key_ops": "verify"},
        {"kid": "no-kty"},
    ]});
    withdraws_every_key_then_restores(&v, &issuer, &clock, &k1, &token, &unusable.to_string())
        .await;
}

/// Serves `set`, which holds no key the verifier can use, and checks that the keys held
/// before are withdrawn: a token seen before (the verified-token cache holds nothing past
/// the set) and a new one signed by `k1` are both refused as of an unknown `kid`. Then
/// `k1` published again restores service.
async fn withdraws_every_key_then_restores(
    v: &Verifier,
    issuer: &Issuer,
    clock: &ManualClock,
    k1: &SigningKey,
    token: &str,
    set: &str,
) {
    *issuer.state.jwks.lock().unwrap() = set.into();
    v.refresh_keys().await.unwrap();
    let status = v.key_status().unwrap();
    assert!(status.kids.is_empty(), "{status:?}");
    assert_eq!(status.fetched_at, clock.now());
    let unknown_kid = |r: Result<_, Error>| {
        matches!(r, Err(Error::Token(tessera_jose::Error::UnknownKid { .. })))
    };
    assert!(unknown_kid(v.verify::<NoCustomClaims>(token).await));
    let mut c = claims(&issuer.base);
    c["jti"] = json!("never seen");
    assert!(unknown_kid(
        v.verify::<NoCustomClaims>(&sign(k1, &c, Some("at+jwt")))
            .await
    ));

    issuer.set_keys(&[k1]);
    v.refresh_keys().await.unwrap();
    v.verify::<NoCustomClaims>(token).await.unwrap();
}

/// A fetch made on demand (for an unknown `kid`) is a refresh like any other: the
/// background refresh counts from it, and does not fetch again when the set it replaced
/// would have been due.
#[tokio::test]
async fn a_fetch_on_demand_counts_as_a_background_refresh() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    // Due one second after the fetch (four fifths of `max-age`, at least one second).
    issuer.set_cache_control(Some("max-age=1"));
    let mut o = options();
    o.min_ttl = Duration::from_secs(1);
    let v = verifier(&issuer, &clock, o).await;
    // The background task's first fetch; it is due again in one second.
    assert!(
        eventually(Duration::from_secs(10), async || v.stats().jwks_fetches
            >= 1)
        .await
    );
    assert_eq!(issuer.jwks_fetches(), 1);
    // The fetch on demand brings a set due in four seconds (of the verifier's clock).
    issuer.set_cache_control(Some("max-age=5"));
    issuer.set_keys(&[&k1, &k2]);
    v.verify::<NoCustomClaims>(&sign(&k2, &claims(&issuer.base), Some("at+jwt")))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), 2);
    // Only waiting past the moment can show that nothing happens at it: the first set came
    // due a second after its fetch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        issuer.jwks_fetches(),
        2,
        "the background task fetched again on the schedule of the set the fetch on demand \
         replaced"
    );
    // The schedule is the new set's: due once the clock reaches it.
    clock.advance(4);
    assert!(
        eventually(Duration::from_secs(10), async || issuer.jwks_fetches() >= 3).await,
        "the background refresh stopped"
    );
}

/// A fetch on demand that brings a set due sooner than the one the background refresh is
/// waiting for (the issuer shortened `max-age`, as it does before a rotation) is refreshed
/// on its own schedule: the refresh does not sleep out the longer lifetime of the set it
/// replaced while a key the issuer withdrew stays in use.
#[tokio::test]
async fn a_set_fetched_on_demand_that_is_due_sooner_is_refreshed_on_its_own_schedule() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    // The background task's first fetch is due again in 48 minutes.
    issuer.set_cache_control(Some("max-age=3600"));
    let mut o = options();
    o.min_ttl = Duration::from_secs(1);
    let v = verifier(&issuer, &clock, o).await;
    assert!(
        eventually(Duration::from_secs(10), async || v.stats().jwks_fetches
            >= 1)
        .await
    );
    // The issuer shortens `max-age` and publishes k2; a token signed by k2 fetches on
    // demand a set due one second after its fetch.
    issuer.set_cache_control(Some("max-age=1"));
    issuer.set_keys(&[&k1, &k2]);
    v.verify::<NoCustomClaims>(&sign(&k2, &claims(&issuer.base), Some("at+jwt")))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), 2);
    // The issuer withdraws k1, and the set held comes due.
    issuer.set_keys(&[&k2]);
    clock.advance(1);
    let refreshed = eventually(Duration::from_secs(10), async || {
        v.key_status().is_some_and(|s| s.kids == ["k2"])
    })
    .await;
    assert!(
        refreshed,
        "the background refresh kept the schedule of the set the fetch on demand replaced: \
         {:?}",
        v.key_status()
    );
}

/// A wall clock stepped back while the background refresh waits (an NTP correction) does
/// not postpone that refresh by the size of the step: the wait ran for the lifetime of the
/// set still held, so it is due. Otherwise a key the issuer withdrew would stay in use for
/// as long as the step.
#[tokio::test]
async fn a_clock_stepped_back_does_not_postpone_the_background_refresh() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    // Due four seconds after its fetch (four fifths of `max-age`).
    issuer.set_cache_control(Some("max-age=5"));
    let mut o = options();
    o.min_ttl = Duration::from_secs(1);
    let v = verifier(&issuer, &clock, o).await;
    // The background task's first fetch; it now waits four seconds for the next.
    assert!(
        eventually(Duration::from_secs(10), async || v.stats().jwks_fetches
            >= 1)
        .await
    );
    clock.advance(-3600);
    issuer.set_keys(&[&k2]);
    let refreshed = eventually(Duration::from_secs(10), async || {
        v.key_status().is_some_and(|s| s.kids == ["k2"])
    })
    .await;
    assert!(
        refreshed,
        "the background refresh waited for the clock to catch up with the step: {:?}",
        v.key_status()
    );
}

/// A key-set fetch runs on the runtime of the caller that started it. When that runtime
/// shuts down mid-fetch (a verifier shared by the runtimes of several `#[tokio::test]`s),
/// a `refresh_keys` on a live runtime that shares the fetch learns nothing about the issuer
/// from its end: it is not answered with an error, the fetch is made again on its own
/// runtime.
#[test]
fn a_shared_fetch_cut_short_by_its_runtime_shutting_down_is_made_again() {
    // The issuer lives on a runtime of its own, for the whole test.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = server.block_on(Issuer::start(&[&k1]));
    let first = runtime();
    let v = first.block_on(async {
        let v = Verifier::builder()
            .jwks_uri(issuer.jwks_uri())
            .issuer(&issuer.base)
            .jwks_options(options())
            .build()
            .unwrap();
        v.refresh_keys().await.unwrap();
        v
    });
    // A fetch started on `first`, which stops running it before the issuer answers.
    issuer.set_keys(&[&k1, &k2]);
    issuer.set_delay(Duration::from_millis(300));
    first.block_on(async {
        let cut = tokio::time::timeout(Duration::from_millis(50), v.refresh_keys()).await;
        assert!(cut.is_err(), "the issuer answered within 50 ms: {cut:?}");
    });
    let second = runtime();
    let waiting = second.spawn({
        let v = v.clone();
        async move { v.refresh_keys().await }
    });
    // One turn of `second`: the task is polled once, asks, and shares the fetch under way
    // on `first`.
    second.block_on(tokio::task::yield_now());
    drop(first);
    let answer = second.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the caller waited for the fetch of a runtime that shut down")
            .unwrap()
    });
    assert_eq!(answer, Ok(()), "{:?}", v.stats());
    assert_eq!(v.key_status().unwrap().kids, ["k1", "k2"]);
}

/// The same after a failed refresh: the set held was due, and stays due until a fetch
/// replaces it, so the retry comes `retry_interval` later, not once the clock has caught up
/// with a step back.
#[tokio::test]
async fn a_clock_stepped_back_does_not_postpone_the_retry_of_a_failed_refresh() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    // Due four seconds after its fetch (four fifths of `max-age`).
    issuer.set_cache_control(Some("max-age=5"));
    let mut o = options();
    o.min_ttl = Duration::from_secs(1);
    o.retry_interval = Duration::from_secs(1);
    let v = verifier(&issuer, &clock, o).await;
    assert!(
        eventually(Duration::from_secs(10), async || v.stats().jwks_fetches
            >= 1)
        .await
    );
    clock.advance(-3600);
    issuer.set_failing(true);
    issuer.set_keys(&[&k2]);
    assert!(
        eventually(Duration::from_secs(10), async || v
            .stats()
            .jwks_fetch_failures
            >= 1)
        .await,
        "the refresh came due and failed"
    );
    issuer.set_failing(false);
    let refreshed = eventually(Duration::from_secs(10), async || {
        v.key_status().is_some_and(|s| s.kids == ["k2"])
    })
    .await;
    assert!(
        refreshed,
        "the retry waited for the clock to catch up with the step: {:?}",
        v.key_status()
    );
}

/// A fetch on demand (an unknown `kid`) runs on the runtime of the request that started it.
/// When that runtime shuts down before the issuer answers (a verifier shared by several
/// runtimes, or a runtime per call), the answer is never read: the unknown-`kid` cooldown
/// the fetch spent is given back, so a request on a live runtime that needs the rotated key
/// fetches it at once instead of being refused for the whole cooldown.
#[test]
fn a_demand_fetch_cut_short_by_its_runtime_shutting_down_gives_back_the_cooldown() {
    // The issuer lives on a runtime of its own, for the whole test.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = server.block_on(Issuer::start(&[&k1]));
    let clock = ManualClock::new();
    let mut o = options();
    o.max_fetch_wait = Duration::from_millis(500);
    let first = runtime();
    let v = first.block_on(async {
        let v = verifier(&issuer, &clock, o).await;
        v.refresh_keys().await.unwrap();
        v
    });
    issuer.set_keys(&[&k1, &k2]);
    issuer.set_delay(Duration::from_secs(5));
    let t2 = sign(&k2, &claims(&issuer.base), Some("at+jwt"));
    first.block_on(async {
        // Gives up after `max_fetch_wait`; its fetch goes on, on `first`.
        assert!(matches!(
            v.verify::<NoCustomClaims>(&t2).await,
            Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
        ));
    });
    drop(first);
    issuer.set_delay(Duration::ZERO);
    // Within the cooldown by the clock, which has not moved.
    runtime().block_on(async {
        let verified = v.verify::<NoCustomClaims>(&t2).await;
        assert!(verified.is_ok(), "{verified:?} {:?}", v.stats());
    });
}

/// The same for a request on a live runtime that was waiting for that fetch when it was cut
/// short: it learns nothing about the issuer from its end, so it asks once more (within its
/// `max_fetch_wait`), and gets the key from a fetch on its own runtime.
#[test]
fn a_request_sharing_a_demand_fetch_cut_short_fetches_again() {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = server.block_on(Issuer::start(&[&k1]));
    let clock = ManualClock::new();
    let first = runtime();
    let v = first.block_on(async {
        let v = verifier(&issuer, &clock, options()).await;
        v.refresh_keys().await.unwrap();
        v
    });
    issuer.set_keys(&[&k1, &k2]);
    issuer.set_delay(Duration::from_millis(300));
    let t2 = sign(&k2, &claims(&issuer.base), Some("at+jwt"));
    // A demand fetch started on `first`, which stops running it before the issuer answers.
    first.block_on(async {
        let cut =
            tokio::time::timeout(Duration::from_millis(50), v.verify::<NoCustomClaims>(&t2)).await;
        assert!(cut.is_err(), "the issuer answered within 50 ms: {cut:?}");
    });
    let second = runtime();
    let waiting = second.spawn({
        let v = v.clone();
        async move { v.verify::<NoCustomClaims>(&t2).await.map(|_| ()) }
    });
    // One turn of `second`: the request is polled once and waits for the fetch on `first`.
    second.block_on(tokio::task::yield_now());
    drop(first);
    let answer = second.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(answer, Ok(()), "{:?}", v.stats());
}

/// A verifier used from a runtime per call (a `block_on` or `#[tokio::main]` per request in
/// a synchronous app) finds its background refresh gone with the previous call's runtime and
/// starts it again on each call. While the set held is due and the issuer fails, a refresh
/// started again waits `retry_interval` after the last failed fetch, like the one that
/// failed would have: it does not ask the failing issuer again on every call.
#[test]
fn a_runtime_per_call_does_not_fetch_the_key_set_on_every_call_while_the_issuer_fails() {
    // The issuer lives on a runtime of its own, for the whole test.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let k1 = es256("k1");
    let issuer = server.block_on(Issuer::start(&[&k1]));
    let clock = ManualClock::new();
    let token = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    let v = runtime().block_on(async {
        let v = verifier(&issuer, &clock, options()).await;
        v.refresh_keys().await.unwrap();
        v
    });
    // Due (four fifths of its 300 s have passed), still usable, and the issuer fails.
    clock.advance(290);
    issuer.set_failing(true);
    // A request of the build's runtime cut short as it shut down may still be arriving.
    std::thread::sleep(Duration::from_millis(200));
    let before = issuer.jwks_fetches();
    for _ in 0..10 {
        runtime().block_on(async {
            v.verify::<NoCustomClaims>(&token).await.unwrap();
            // The rest of the call: time enough for a fetch it started to reach the issuer.
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
    }
    let fetches = issuer.jwks_fetches() - before;
    assert!(
        fetches <= 1,
        "{fetches} fetches from 10 calls within `retry_interval`: {:?}",
        v.stats()
    );
}

/// `max_fetch_wait` has no upper bound: `Duration::MAX` (as for `max_staleness`) means a
/// request waits for the fetch its unknown `kid` started however long it takes (the fetch's
/// own timeouts bound it), and is answered from it, not a panic.
#[tokio::test]
async fn an_unbounded_max_fetch_wait_waits_for_the_fetch() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let mut o = options();
    o.max_fetch_wait = Duration::MAX;
    let v = verifier(&issuer, &clock, o).await;
    v.refresh_keys().await.unwrap();
    issuer.set_keys(&[&k1, &k2]);
    issuer.set_delay(Duration::from_millis(200));
    clock.advance(31);
    let t2 = sign(&k2, &claims(&issuer.base), Some("at+jwt"));
    let verified = tokio::spawn({
        let v = v.clone();
        async move { v.verify::<NoCustomClaims>(&t2).await.map(|_| ()) }
    })
    .await;
    assert!(matches!(verified, Ok(Ok(()))), "{verified:?}");
}

/// Only a JWK Set withdraws the keys held: RFC 7517 §5 (a JSON object with a `keys` array)
/// whose entries are JWKs (§4: JSON objects). A body that is not one, however it parses as
/// JSON (an array in the place of the set, or of an entry), is a failed fetch: the keys
/// held stay in use.
#[tokio::test]
async fn a_body_that_is_not_a_jwk_set_never_withdraws_the_keys_held() {
    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let v = verifier(&issuer, &clock, options()).await;
    v.refresh_keys().await.unwrap();
    let token = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    for body in [
        "[[]]",
        r#"[[{"kty":"EC"}]]"#,
        r#"{"keys":[["EC"]]}"#,
        r#"{"keys":[["EC", null, null, null, "k1"]]}"#,
        r#"{"keys":[{"kty":"EC"}, "k1"]}"#,
        r#"{"keys":5}"#,
        "[]",
        "not JSON",
        r#"{"keys":[],"keys":[]}"#,
    ] {
        *issuer.state.jwks.lock().unwrap() = body.into();
        let refreshed = v.refresh_keys().await;
        assert!(
            matches!(refreshed, Err(Error::InvalidDocument { .. })),
            "{body}: {refreshed:?}"
        );
        assert_eq!(v.key_status().unwrap().kids, ["k1"], "{body}");
        v.verify::<NoCustomClaims>(&token).await.unwrap();
    }
}

/// A 200 whose body is cut short (fewer bytes than its `Content-Length`, or a
/// close-delimited body that ends early) is a failed fetch, never a key set: whatever
/// arrived is not read as one, and the keys held stay in use.
#[tokio::test]
async fn a_truncated_answer_never_withdraws_the_keys_held() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let clock = ManualClock::new();
    let k1 = es256("k1");
    let issuer = Issuer::start(&[&k1]).await;
    let full = issuer.state.jwks.lock().unwrap().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    // Each connection in turn: the first gets the whole set, then truncated answers.
    let answers = [
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{full}",
            full.len()
        ),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{\"keys\":[]}}",
            full.len()
        ),
        format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}",
            &full[..full.len() - 2]
        ),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nb\r\n{\"keys\":[]}\r\n"
            .to_owned(),
    ];
    let rounds = answers.len();
    tokio::spawn(async move {
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            socket.write_all(answer.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
        }
    });
    let v = Verifier::builder()
        .jwks_uri(uri)
        .issuer(&issuer.base)
        .jwks_options(options())
        .clock(clock.shared())
        .token_cache_capacity(0)
        .build()
        .unwrap();
    v.refresh_keys().await.unwrap();
    let token = sign(&k1, &claims(&issuer.base), Some("at+jwt"));
    for round in 1..rounds {
        let refreshed = v.refresh_keys().await;
        assert!(refreshed.is_err(), "answer {round}: {refreshed:?}");
        assert_eq!(v.key_status().unwrap().kids, ["k1"], "answer {round}");
        v.verify::<NoCustomClaims>(&token).await.unwrap();
    }
}

/// The bound on giving back the unknown-`kid` cooldown: runtimes that keep shutting down
/// before a slow issuer answers (here four threads, each a runtime per call, each call with
/// a made-up `kid`, within one cooldown by the clock) cost the issuer at most two demand
/// fetches per cooldown, not one per call: the first fetch cut short gives the cooldown
/// back, the second does not.
#[test]
fn runtimes_that_keep_shutting_down_mid_fetch_cost_at_most_two_fetches_per_cooldown() {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let k1 = es256("k1");
    let issuer = server.block_on(Issuer::start(&[&k1]));
    let clock = ManualClock::new();
    let mut o = options();
    o.max_fetch_wait = Duration::from_millis(30);
    let v = runtime().block_on(async {
        let v = verifier(&issuer, &clock, o).await;
        v.refresh_keys().await.unwrap();
        v
    });
    issuer.set_delay(Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(100));
    let before = issuer.jwks_fetches();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let v = v.clone();
            let iss = issuer.base.clone();
            std::thread::spawn(move || {
                for i in 0..15 {
                    let k = es256(&format!("made-up-{t}-{i}"));
                    let tok = sign(&k, &claims(&iss), Some("at+jwt"));
                    runtime().block_on(async {
                        let _ = v.verify::<NoCustomClaims>(&tok).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let fetches = issuer.jwks_fetches() - before;
    assert!(
        fetches <= 2,
        "{fetches} demand fetches within one cooldown: {:?}",
        v.stats()
    );
}
