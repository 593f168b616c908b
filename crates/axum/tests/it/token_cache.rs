//! The verified-token cache: a hit skips only the signature check, nothing else.

use std::time::Duration;

use serde_json::json;
use tessera_axum::{Error, RevocationFeed, Verifier};
use tessera_jose::NoCustomClaims;

use crate::{Issuer, ManualClock, es256, flip, sign};

#[tokio::test]
async fn a_token_differing_in_any_byte_is_never_served_from_the_cache() {
    let clock = ManualClock::new();
    let key = es256("k1");
    let v = Verifier::builder()
        .key(key.verifying_key())
        .clock(clock.shared())
        .build()
        .unwrap();
    let token = sign(
        &key,
        &json!({"sub": "alice", "exp": clock.now() + 300}),
        Some("at+jwt"),
    );
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    let s = v.stats();
    assert_eq!((s.token_cache_misses, s.token_cache_hits), (1, 1));
    assert_eq!(s.token_cache_len, 1);

    // Every position of the header, payload and signature.
    for i in (0..token.len()).filter(|i| token.as_bytes()[*i] != b'.') {
        let tampered = flip(&token, i);
        assert!(
            v.verify::<NoCustomClaims>(&tampered).await.is_err(),
            "byte {i} changed and still accepted"
        );
    }
    let s = v.stats();
    assert_eq!(s.token_cache_hits, 1, "no tampered token was a cache hit");
    assert_eq!(s.token_cache_len, 1);
}

#[tokio::test]
async fn expiry_is_checked_again_on_every_hit() {
    let clock = ManualClock::new();
    let key = es256("k1");
    let v = Verifier::builder()
        .key(key.verifying_key())
        .clock(clock.shared())
        .leeway(0)
        .build()
        .unwrap();
    let token = sign(
        &key,
        &json!({"sub": "alice", "exp": clock.now() + 60, "nbf": clock.now() + 10}),
        Some("at+jwt"),
    );
    assert!(matches!(
        v.verify::<NoCustomClaims>(&token).await,
        Err(Error::Token(tessera_jose::Error::NotYetValid { .. }))
    ));
    assert_eq!(
        v.stats().token_cache_len,
        0,
        "invalid tokens are not cached"
    );
    clock.advance(10);
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    clock.advance(49);
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    assert_eq!(v.stats().token_cache_hits, 1);
    clock.advance(1);
    assert!(matches!(
        v.verify::<NoCustomClaims>(&token).await,
        Err(Error::Token(tessera_jose::Error::Expired { .. }))
    ));
    assert_eq!(
        v.stats().token_cache_hits,
        2,
        "the hit was refused for expiry"
    );
}

#[tokio::test]
async fn revocation_is_checked_again_on_every_hit() {
    let clock = ManualClock::new();
    let key = es256("k1");
    let issuer = Issuer::start(&[]).await;
    let v = Verifier::builder()
        .key(key.verifying_key())
        .clock(clock.shared())
        .revocation_feed(
            RevocationFeed::new("svc", "feed-secret")
                .url(format!("{}/revocations", issuer.base))
                .poll_interval(Duration::from_secs(3600)),
        )
        .build()
        .unwrap();
    let token = sign(
        &key,
        &json!({"sub": "alice", "jti": "t1", "exp": clock.now() + 300}),
        Some("at+jwt"),
    );
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    issuer.revoke("jti", "t1", clock.now());
    v.sync_revocations().await.unwrap();
    assert_eq!(
        v.verify::<NoCustomClaims>(&token).await.unwrap_err(),
        Error::Revoked { reason: "token" }
    );
    assert_eq!(v.stats().token_cache_hits, 1);
}

#[tokio::test]
async fn the_cache_holds_at_most_its_capacity() {
    let clock = ManualClock::new();
    let key = es256("k1");
    let v = Verifier::builder()
        .key(key.verifying_key())
        .clock(clock.shared())
        .token_cache_capacity(8)
        .build()
        .unwrap();
    let tokens: Vec<String> = (0..20)
        .map(|i| {
            sign(
                &key,
                &json!({"sub": format!("u{i}"), "exp": clock.now() + 300}),
                Some("at+jwt"),
            )
        })
        .collect();
    for t in &tokens {
        v.verify::<NoCustomClaims>(t).await.unwrap();
    }
    assert_eq!(v.stats().token_cache_len, 8);
    // The newest are kept, the oldest evicted.
    v.verify::<NoCustomClaims>(&tokens[19]).await.unwrap();
    v.verify::<NoCustomClaims>(&tokens[0]).await.unwrap();
    let s = v.stats();
    assert_eq!((s.token_cache_hits, s.token_cache_misses), (1, 21));
}

#[tokio::test]
async fn entries_made_under_an_old_key_set_are_not_used() {
    let clock = ManualClock::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let v = Verifier::builder()
        .jwks_uri(issuer.jwks_uri())
        .accept_any_issuer()
        .clock(clock.shared())
        .build()
        .unwrap();
    let token = sign(
        &k1,
        &json!({"sub": "a", "exp": clock.now() + 300}),
        Some("at+jwt"),
    );
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    v.verify::<NoCustomClaims>(&token).await.unwrap();
    assert_eq!(v.stats().token_cache_hits, 1);
    // k1 is withdrawn (say, compromised): its tokens must stop verifying at once, cached
    // or not.
    issuer.set_keys(&[&k2]);
    v.refresh_keys().await.unwrap();
    assert!(matches!(
        v.verify::<NoCustomClaims>(&token).await,
        Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
    ));
    assert_eq!(v.stats().token_cache_hits, 1);
}
