//! `KeyStore`: signing keys round trip, list oldest first, schedule updates, deletion.

use tessera_auth::model::StoredKey;
use tessera_auth::store::RotateGuard;
use tessera_auth::store::{KeyStore as _, StoreErrorKind};

use crate::support::{NOW, TestDb, conformance, key};

conformance!(
    signing_keys_round_trip_and_list_oldest_first,
    duplicate_kid_is_a_conflict,
    updating_a_key_changes_only_its_schedule,
    deleting_a_key_removes_it_once,
    rotation_retires_every_usable_key_at_the_new_keys_activation,
    an_immediate_rotation_supersedes_the_keys_earlier_rotations_scheduled,
    guarded_rotations_happen_once,
    concurrent_guarded_rotations_insert_one_key,
);

/// `StoredKey`'s Debug hides the key material; compare it explicitly too.
fn assert_same_keys(got: &[StoredKey], want: &[&StoredKey]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, *w);
        assert_eq!(g.sealed_private_key, w.sealed_private_key);
        assert_eq!(g.public_jwk, w.public_jwk);
    }
}

async fn signing_keys_round_trip_and_list_oldest_first(db: TestDb) {
    assert!(db.list_signing_keys().await.unwrap().is_empty());
    let middle = key("kid-b", NOW + 10);
    let oldest = StoredKey {
        retires_at: Some(NOW + 100),
        expires_at: Some(NOW + 200),
        revoked_at: Some(NOW + 50),
        ..key("kid-c", NOW)
    };
    let newest = key("kid-a", NOW + 20);
    for k in [&middle, &oldest, &newest] {
        db.insert_signing_key(k).await.unwrap();
    }
    assert_same_keys(
        &db.list_signing_keys().await.unwrap(),
        &[&oldest, &middle, &newest],
    );
}

async fn duplicate_kid_is_a_conflict(db: TestDb) {
    db.insert_signing_key(&key("kid-a", NOW)).await.unwrap();
    let err = db
        .insert_signing_key(&key("kid-a", NOW + 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err:?}");
    assert_eq!(db.list_signing_keys().await.unwrap().len(), 1);
}

async fn updating_a_key_changes_only_its_schedule(db: TestDb) {
    let k = key("kid-a", NOW);
    let other = key("kid-b", NOW + 1);
    db.insert_signing_key(&k).await.unwrap();
    db.insert_signing_key(&other).await.unwrap();

    let scheduled = StoredKey {
        activates_at: NOW + 5,
        retires_at: Some(NOW + 100),
        expires_at: Some(NOW + 200),
        revoked_at: Some(NOW + 150),
        ..k.clone()
    };
    // Fields outside the schedule are not touched, whatever the caller passes.
    let attempt = StoredKey {
        alg: "EdDSA".into(),
        public_jwk: "{}".into(),
        sealed_private_key: vec![9],
        created_at: NOW + 999,
        ..scheduled.clone()
    };
    assert!(db.update_signing_key(&attempt).await.unwrap());
    assert_same_keys(
        &db.list_signing_keys().await.unwrap(),
        &[&scheduled, &other],
    );

    // And back to unscheduled.
    assert!(db.update_signing_key(&k).await.unwrap());
    assert_same_keys(&db.list_signing_keys().await.unwrap(), &[&k, &other]);

    assert!(
        !db.update_signing_key(&key("kid-unknown", NOW))
            .await
            .unwrap()
    );
}

async fn deleting_a_key_removes_it_once(db: TestDb) {
    let a = key("kid-a", NOW);
    let b = key("kid-b", NOW + 1);
    db.insert_signing_key(&a).await.unwrap();
    db.insert_signing_key(&b).await.unwrap();
    assert!(db.delete_signing_key("kid-a").await.unwrap());
    assert!(!db.delete_signing_key("kid-a").await.unwrap());
    assert!(!db.delete_signing_key("kid-unknown").await.unwrap());
    assert_same_keys(&db.list_signing_keys().await.unwrap(), &[&b]);
}

async fn rotation_retires_every_usable_key_at_the_new_keys_activation(db: TestDb) {
    let mut active = key("active", NOW);
    active.activates_at = NOW;
    db.insert_signing_key(&active).await.unwrap();
    let mut old = key("old", NOW - 10);
    old.activates_at = NOW - 10;
    old.retires_at = Some(NOW - 5);
    old.expires_at = Some(NOW + 100);
    db.insert_signing_key(&old).await.unwrap();
    let mut new = key("new", NOW + 1);
    new.activates_at = NOW + 301;
    assert!(
        db.rotate_signing_key(&new, 1000, RotateGuard::Always)
            .await
            .unwrap()
    );
    let keys = db.list_signing_keys().await.unwrap();
    let by = |kid: &str| keys.iter().find(|k| k.kid == kid).unwrap().clone();
    assert_eq!(
        (by("active").retires_at, by("active").expires_at),
        (Some(NOW + 301), Some(NOW + 1301))
    );
    assert_eq!(
        by("old").retires_at,
        Some(NOW - 5),
        "an already retiring key keeps its schedule"
    );
    assert_eq!(by("new").retires_at, None);
}

async fn an_immediate_rotation_supersedes_the_keys_earlier_rotations_scheduled(db: TestDb) {
    // Two scheduled rotations (`keys rotate` twice), then `keys rotate --now`: the signer
    // and both scheduled successors retire now; the successors, which never signed, leave
    // the JWKS at once. (They kept their schedule, so the first one later became active
    // and signed tokens beside the new key.)
    let schedule = |kid: &str, activates_at: i64, retires_at: Option<i64>| StoredKey {
        activates_at,
        retires_at,
        expires_at: retires_at.map(|r| r + 1000),
        ..key(kid, NOW - 100)
    };
    db.insert_signing_key(&schedule("a", NOW - 100, Some(NOW + 300)))
        .await
        .unwrap();
    db.insert_signing_key(&schedule("b", NOW + 300, Some(NOW + 600)))
        .await
        .unwrap();
    db.insert_signing_key(&schedule("c", NOW + 600, None))
        .await
        .unwrap();
    let mut now_key = key("d", NOW);
    now_key.activates_at = NOW;
    assert!(
        db.rotate_signing_key(&now_key, 1000, RotateGuard::Always)
            .await
            .unwrap()
    );
    let keys = db.list_signing_keys().await.unwrap();
    let by = |kid: &str| {
        let k = keys.iter().find(|k| k.kid == kid).unwrap();
        (k.retires_at, k.expires_at)
    };
    assert_eq!(
        by("a"),
        (Some(NOW), Some(NOW + 1000)),
        "the signer retires now"
    );
    assert_eq!(
        by("b"),
        (Some(NOW), Some(NOW)),
        "never signed: gone at once"
    );
    assert_eq!(
        by("c"),
        (Some(NOW), Some(NOW)),
        "never signed: gone at once"
    );
    assert_eq!(by("d"), (None, None));
}

async fn guarded_rotations_happen_once(db: TestDb) {
    let mut first = key("first", NOW);
    first.activates_at = NOW;
    assert!(
        db.rotate_signing_key(&first, 1000, RotateGuard::NoUsableKey)
            .await
            .unwrap()
    );
    let mut second = key("second", NOW);
    second.activates_at = NOW;
    assert!(
        !db.rotate_signing_key(&second, 1000, RotateGuard::NoUsableKey)
            .await
            .unwrap(),
        "a usable key exists"
    );
    let mut next = key("next", NOW + 1);
    next.activates_at = NOW + 300;
    assert!(
        db.rotate_signing_key(&next, 1000, RotateGuard::NoPendingKey)
            .await
            .unwrap()
    );
    let mut again = key("again", NOW + 2);
    again.activates_at = NOW + 302;
    assert!(
        !db.rotate_signing_key(&again, 1000, RotateGuard::NoPendingKey)
            .await
            .unwrap(),
        "a successor is pending"
    );
    let kids: Vec<String> = db
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, ["first", "next"]);
}

async fn concurrent_guarded_rotations_insert_one_key(db: TestDb) {
    let attempts = (0..8).map(|i| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut k = key(&format!("k{i}"), NOW);
            k.activates_at = NOW;
            db.rotate_signing_key(&k, 1000, RotateGuard::NoUsableKey)
                .await
                .unwrap()
        })
    });
    let won: Vec<bool> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    assert_eq!(db.list_signing_keys().await.unwrap().len(), 1);
}
