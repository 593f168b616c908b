//! `SecurityStore`: throttle counters and locks, TOTP state (pending and active secrets,
//! the last accepted step as replay protection, RFC 6238 §5.2), recovery codes, and MFA
//! login challenges — including the single-use properties under concurrent callers.

use std::future::Future;

use tessera_auth::model::{Attempt, MfaChallenge, Throttle, TotpState, UserId, Username};
use tessera_auth::security::SecurityPolicy;
use tessera_auth::store::{SecurityStore as _, StoreErrorKind, UserStore as _};
use tessera_store::Database;

use crate::support::{NOW, TestDb, conformance, insert_user};

conformance!(
    an_unknown_throttle_key_has_no_state_and_nothing_to_clear,
    reservations_are_counted_and_the_last_one_is_kept,
    a_reservation_after_the_window_restarts_the_count,
    a_lock_is_stored_until_the_throttle_is_cleared,
    throttle_keys_are_independent,
    concurrent_reservations_are_all_counted,
    the_upgrade_deletes_throttle_rows_keyed_by_a_plain_name,
    a_reservation_counts_locks_at_the_threshold_and_is_refused_while_locked,
    a_login_reservation_counts_and_locks_as_any_and_reads_the_user,
    concurrent_reservations_admit_no_more_than_the_threshold,
    a_released_reservation_is_one_failure_fewer_and_lifts_the_lock_it_set,
    a_new_user_has_totp_off_and_an_unknown_user_has_no_totp_state,
    enrolment_keeps_the_secret_pending_until_activation_turns_it_on,
    activation_is_refused_unless_the_secret_is_still_pending,
    concurrent_activations_of_one_pending_secret_succeed_once,
    reactivation_replaces_every_recovery_code,
    a_totp_step_is_accepted_only_if_it_is_newer_than_the_last,
    concurrent_uses_of_one_totp_step_succeed_once,
    a_totp_step_is_refused_while_totp_is_off,
    disabling_totp_clears_the_secret_the_pending_secret_and_the_last_step,
    disabling_totp_deletes_every_recovery_code_of_that_user_only,
    recovery_codes_work_once_each,
    recovery_codes_belong_to_their_user,
    concurrent_uses_of_one_recovery_code_succeed_once,
    an_mfa_challenge_round_trips_until_it_expires,
    an_mfa_challenge_token_hash_is_unique,
    wrong_codes_are_counted_against_their_challenge_only,
    concurrent_wrong_codes_are_all_counted,
    an_mfa_challenge_is_consumed_once,
    an_mfa_challenge_with_its_wrong_codes_used_up_is_not_consumed,
    concurrent_consumes_of_one_mfa_challenge_succeed_once,
    deleting_a_user_deletes_their_recovery_codes_and_challenges,
);

/// Concurrent callers in the single-use tests.
const N: usize = 16;
/// Lifetime of the MFA challenges built here.
const MFA_TTL: i64 = 300;
/// The failure window of [`counting`].
const WINDOW: i64 = 3_600;

/// A policy that counts reservations without locking, for tests of the count itself.
fn counting() -> SecurityPolicy {
    SecurityPolicy {
        lockout_threshold: 100,
        failure_window: WINDOW,
        ..SecurityPolicy::default()
    }
}

/// A sealed TOTP secret as the store sees it: opaque bytes, not text.
fn sealed(n: u8) -> Vec<u8> {
    vec![0x00, 0xFF, n, 0x80, b's', b'e', b'a', b'l', b'e', b'd', n]
}

/// A distinct recovery-code hash per `n`.
fn code(n: u8) -> [u8; 32] {
    let mut h = [n; 32];
    h[0] = 0x5C;
    h
}

/// Hashes of recovery codes `ns`.
fn codes(ns: impl IntoIterator<Item = u8>) -> Vec<[u8; 32]> {
    ns.into_iter().map(code).collect()
}

/// A distinct MFA challenge token hash per `n`.
fn challenge_hash(n: u8) -> [u8; 32] {
    let mut h = [n; 32];
    h[0] = 0xC3;
    h
}

/// A fresh challenge of `user` created at `created_at`.
fn challenge(user: UserId, created_at: i64) -> MfaChallenge {
    MfaChallenge {
        user_id: user,
        client_id: "tessera-web".into(),
        scope: "openid profile".into(),
        created_at,
        expires_at: created_at + MFA_TTL,
        attempts: 0,
    }
}

/// Turns TOTP on for `user` with `sealed(secret)`, `step` as the last accepted step and
/// the given recovery codes.
async fn enable_totp(db: &TestDb, user: UserId, secret: u8, step: i64, recovery: &[[u8; 32]]) {
    assert!(db.set_totp_pending(user, &sealed(secret)).await.unwrap());
    assert!(
        db.activate_totp(user, &sealed(secret), step, recovery)
            .await
            .unwrap()
    );
}

/// The TOTP state of an existing user.
async fn totp(db: &TestDb, user: UserId) -> TotpState {
    db.find_totp(user).await.unwrap().unwrap()
}

/// Whether the user row says TOTP is on.
async fn totp_enabled(db: &TestDb, user: UserId) -> bool {
    db.find_user_by_id(user)
        .await
        .unwrap()
        .unwrap()
        .totp_enabled
}

/// Recovery-code rows of `user`, used or not.
async fn recovery_rows(db: &TestDb, user: UserId) -> i64 {
    db.count(&format!(
        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = '{user}'"
    ))
    .await
}

/// Runs `op` in `N` concurrent tasks and returns what each returned.
async fn concurrently<T, F, Fut>(db: &TestDb, op: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Database) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..N).map(|_| tokio::spawn(op(db.database()))).collect();
    let mut results = Vec::with_capacity(N);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

// ---- throttles ------------------------------------------------------------------------

async fn an_unknown_throttle_key_has_no_state_and_nothing_to_clear(db: TestDb) {
    assert_eq!(db.find_throttle("user:alice").await.unwrap(), None);
    assert!(!db.clear_throttle("user:alice").await.unwrap());
    assert_eq!(db.find_throttle("").await.unwrap(), None);
}

async fn reservations_are_counted_and_the_last_one_is_kept(db: TestDb) {
    let key = "user:alice";
    for (attempts, t) in [(1, NOW), (2, NOW + 5), (3, NOW + 9)] {
        assert_eq!(
            db.reserve_attempt(key, t, &counting()).await.unwrap(),
            Attempt::Admitted { attempts, lock: 0 }
        );
    }
    assert_eq!(
        db.find_throttle(key).await.unwrap(),
        Some(Throttle {
            failures: 3,
            locked_until: 0,
            last_failure_at: NOW + 9,
        })
    );
}

async fn a_reservation_after_the_window_restarts_the_count(db: TestDb) {
    let key = "user:alice";
    let count = |t: i64| {
        let db = db.database();
        async move {
            match db.reserve_attempt(key, t, &counting()).await.unwrap() {
                Attempt::Admitted { attempts, .. } => attempts,
                Attempt::Refused { until } => panic!("refused until {until}"),
            }
        }
    };
    assert_eq!(count(NOW).await, 1);
    assert_eq!(count(NOW).await, 2);
    // A last attempt exactly at the window start still counts…
    assert_eq!(count(NOW + WINDOW).await, 3);
    // …one older than the window start is forgotten, and the count starts over.
    let t = NOW + 2 * WINDOW + 1;
    assert_eq!(count(t).await, 1);
    assert_eq!(
        db.find_throttle(key)
            .await
            .unwrap()
            .unwrap()
            .last_failure_at,
        t
    );
    assert_eq!(count(t + 1).await, 2);
}

async fn a_lock_is_stored_until_the_throttle_is_cleared(db: TestDb) {
    let policy = SecurityPolicy::default();
    let key = "user:alice";
    for _ in 0..policy.lockout_threshold {
        db.reserve_attempt(key, NOW, &policy).await.unwrap();
    }
    assert_eq!(
        db.find_throttle(key).await.unwrap(),
        Some(Throttle {
            failures: policy.lockout_threshold,
            locked_until: NOW + policy.lockout_base,
            last_failure_at: NOW,
        })
    );
    assert!(db.clear_throttle(key).await.unwrap());
    assert_eq!(db.find_throttle(key).await.unwrap(), None);
    assert!(!db.clear_throttle(key).await.unwrap(), "cleared twice");
    // After clearing, counting starts from scratch and without a lock.
    assert_eq!(
        db.reserve_attempt(key, NOW + 2, &policy).await.unwrap(),
        Attempt::Admitted {
            attempts: 1,
            lock: 0
        }
    );
    assert_eq!(
        db.find_throttle(key).await.unwrap(),
        Some(Throttle {
            failures: 1,
            locked_until: 0,
            last_failure_at: NOW + 2,
        })
    );
}

async fn a_login_reservation_counts_and_locks_as_any_and_reads_the_user(db: TestDb) {
    // Every lock from the threshold on, doubling up to the 30 doublings `lock_for` stops
    // at, and on past them: a login's reservation (`login`) and a plain one (`plain`) on
    // two keys stay in step, each lock waited out before the next attempt.
    let policy = SecurityPolicy {
        lockout_threshold: 3,
        lockout_base: 1,
        lockout_max: i64::MAX,
        failure_window: 1 << 40,
        ..SecurityPolicy::default()
    };
    let alice = insert_user(&db, "alice").await;
    let name = Username::parse("alice").unwrap();
    let mut t = NOW;
    for attempt in 1..=(policy.lockout_threshold + 33) {
        let (login, user) = db
            .reserve_login("user:alice", t, &policy, Some(&name))
            .await
            .unwrap();
        let plain = db.reserve_attempt("other", t, &policy).await.unwrap();
        let lock = policy.lock_for(attempt);
        assert_eq!(
            login,
            Attempt::Admitted {
                attempts: attempt,
                lock
            },
            "{attempt}"
        );
        assert_eq!(plain, login, "{attempt}");
        assert_eq!(user.as_ref(), Some(&alice));
        let row = db.find_throttle("user:alice").await.unwrap();
        assert_eq!(row, db.find_throttle("other").await.unwrap());
        let locked_until = if lock > 0 { t + lock } else { 0 };
        assert_eq!(
            row,
            Some(Throttle {
                failures: attempt,
                locked_until,
                last_failure_at: t,
            })
        );
        if lock > 0 {
            // Refused while locked, with the user still read.
            let (refused, user) = db
                .reserve_login("user:alice", t + lock - 1, &policy, Some(&name))
                .await
                .unwrap();
            assert_eq!(refused, Attempt::Refused { until: t + lock });
            assert_eq!(user.as_ref(), Some(&alice));
            assert_eq!(
                db.reserve_attempt("other", t + lock - 1, &policy)
                    .await
                    .unwrap(),
                refused
            );
            t += lock;
        }
    }
    assert_eq!(policy.lock_for(policy.lockout_threshold + 33), 1 << 30);

    // No name, or a name no user has: no user, and the attempt counted all the same.
    let (first, none) = db
        .reserve_login("user:x", NOW, &policy, None)
        .await
        .unwrap();
    assert_eq!(
        first,
        Attempt::Admitted {
            attempts: 1,
            lock: 0
        }
    );
    assert_eq!(none, None);
    let bob = Username::parse("bob").unwrap();
    let (second, none) = db
        .reserve_login("user:x", NOW, &policy, Some(&bob))
        .await
        .unwrap();
    assert_eq!(
        second,
        Attempt::Admitted {
            attempts: 2,
            lock: 0
        }
    );
    assert_eq!(none, None);
}

async fn throttle_keys_are_independent(db: TestDb) {
    let id = UserId::new();
    let keys = [
        "user:alice".to_owned(),
        "user:Alice".to_owned(),
        "user:alice ".to_owned(),
        "user:ali".to_owned(),
        "user:jos\u{e9}".to_owned(),   // NFC
        "user:jose\u{301}".to_owned(), // NFD: looks the same, is another key
        format!("mfa:{id}"),
        format!("user:{id}"),
    ];
    for (i, key) in keys.iter().enumerate() {
        let failures = i64::try_from(i).unwrap() + 1;
        for _ in 0..failures {
            db.reserve_attempt(key, NOW, &counting()).await.unwrap();
        }
    }
    // One more attempt at `keys[2]`, under a policy that locks at once, locks that key only.
    let at_once = SecurityPolicy {
        lockout_threshold: 1,
        ..SecurityPolicy::default()
    };
    db.reserve_attempt(&keys[2], NOW, &at_once).await.unwrap();
    assert!(db.clear_throttle(&keys[1]).await.unwrap());

    for (i, key) in keys.iter().enumerate() {
        let failures = i64::try_from(i).unwrap() + 1;
        let expected = match i {
            1 => None,
            2 => Some(Throttle {
                failures: failures + 1,
                locked_until: NOW + at_once.lock_for(failures + 1),
                last_failure_at: NOW,
            }),
            _ => Some(Throttle {
                failures,
                locked_until: 0,
                last_failure_at: NOW,
            }),
        };
        assert_eq!(db.find_throttle(key).await.unwrap(), expected, "{key:?}");
    }
}

/// Below the threshold, concurrent reservations of one key are all admitted, each with a
/// count of its own.
async fn concurrent_reservations_are_all_counted(db: TestDb) {
    let mut counts = concurrently(&db, |db| async move {
        match db.reserve_attempt("user:alice", NOW, &counting()).await {
            Ok(Attempt::Admitted { attempts, .. }) => attempts,
            other => panic!("{other:?}"),
        }
    })
    .await;
    counts.sort_unstable();
    let expected: Vec<i64> = (1..=i64::try_from(N).unwrap()).collect();
    assert_eq!(counts, expected, "every reservation got its own count");
    assert_eq!(
        db.find_throttle("user:alice")
            .await
            .unwrap()
            .unwrap()
            .failures,
        i64::try_from(N).unwrap()
    );
}

/// A username's throttle row was keyed by the name as typed (`user:<name>`), often a
/// password typed into the wrong field; it is now keyed by a keyed hash (`username:<hex>`).
/// The migration that came with that (SQLite 0005, PostgreSQL 0007) deletes the rows of the
/// old form, which nothing reads any more, and leaves every other key alone.
async fn the_upgrade_deletes_throttle_rows_keyed_by_a_plain_name(db: TestDb) {
    let policy = SecurityPolicy::default();
    let id = UserId::new();
    let old = ["user:alice", "user:correct horse battery staple"];
    let kept = [
        format!("username:{}", "ab".repeat(32)),
        format!("mfa:{id}"),
        format!("reauth:{id}"),
        format!("reauth:user:{id}"),
    ];
    for key in old.iter().copied().chain(kept.iter().map(String::as_str)) {
        for _ in 0..policy.lockout_threshold {
            db.reserve_attempt(key, NOW, &policy).await.unwrap();
        }
    }
    // As the version before left the database: that migration not yet applied.
    let version = if db.backend() == "sqlite" { 5 } else { 7 };
    assert_eq!(
        db.execute(&format!(
            "DELETE FROM _sqlx_migrations WHERE version = {version}"
        ))
        .await,
        1
    );
    let upgraded = db.reopened().await;
    for key in old {
        assert_eq!(upgraded.find_throttle(key).await.unwrap(), None, "{key}");
    }
    for key in &kept {
        assert!(
            upgraded.find_throttle(key).await.unwrap().is_some(),
            "{key}"
        );
    }
    upgraded.close().await;
}

/// An attempt that could not be checked is given back: one failure fewer, and the lock its
/// reservation set lifted, so that an overloaded server does not lock its users out.
async fn a_released_reservation_is_one_failure_fewer_and_lifts_the_lock_it_set(db: TestDb) {
    let policy = SecurityPolicy::default();
    let key = "user:bob";
    for _ in 1..policy.lockout_threshold {
        db.reserve_attempt(key, NOW, &policy).await.unwrap();
    }
    db.release_attempt(key, false).await.unwrap();
    let t = db.find_throttle(key).await.unwrap().unwrap();
    assert_eq!(t.failures, policy.lockout_threshold - 2);
    assert_eq!(t.locked_until, 0);
    db.reserve_attempt(key, NOW, &policy).await.unwrap();
    let locking = db.reserve_attempt(key, NOW, &policy).await.unwrap();
    assert!(matches!(locking, Attempt::Admitted { lock, .. } if lock > 0));
    db.release_attempt(key, true).await.unwrap();
    let t = db.find_throttle(key).await.unwrap().unwrap();
    assert_eq!(t.failures, policy.lockout_threshold - 1);
    assert!(matches!(
        db.reserve_attempt(key, NOW, &policy).await.unwrap(),
        Attempt::Admitted { .. }
    ));
    // Never below zero; an unknown key is left alone.
    db.clear_throttle(key).await.unwrap();
    db.release_attempt(key, true).await.unwrap();
    assert!(db.find_throttle(key).await.unwrap().is_none());
}

async fn a_reservation_counts_locks_at_the_threshold_and_is_refused_while_locked(db: TestDb) {
    let policy = SecurityPolicy::default();
    let key = "user:alice";
    for attempts in 1..policy.lockout_threshold {
        assert_eq!(
            db.reserve_attempt(key, NOW, &policy).await.unwrap(),
            Attempt::Admitted { attempts, lock: 0 }
        );
    }
    // The threshold's reservation is admitted and locks the key in the same transaction.
    assert_eq!(
        db.reserve_attempt(key, NOW, &policy).await.unwrap(),
        Attempt::Admitted {
            attempts: policy.lockout_threshold,
            lock: policy.lockout_base,
        }
    );
    // Refused while locked, and not counted.
    let until = NOW + policy.lockout_base;
    assert_eq!(
        db.reserve_attempt(key, until - 1, &policy).await.unwrap(),
        Attempt::Refused { until }
    );
    assert_eq!(
        db.find_throttle(key).await.unwrap().unwrap().failures,
        policy.lockout_threshold
    );
    // Once it ends, the next attempt is admitted and locks for twice as long.
    assert_eq!(
        db.reserve_attempt(key, until, &policy).await.unwrap(),
        Attempt::Admitted {
            attempts: policy.lockout_threshold + 1,
            lock: 2 * policy.lockout_base,
        }
    );
    // A success clears it; after the window, the count starts over.
    assert!(db.clear_throttle(key).await.unwrap());
    assert_eq!(
        db.reserve_attempt(key, until, &policy).await.unwrap(),
        Attempt::Admitted {
            attempts: 1,
            lock: 0
        }
    );
    let later = until + policy.failure_window + 1;
    assert_eq!(
        db.reserve_attempt(key, later, &policy).await.unwrap(),
        Attempt::Admitted {
            attempts: 1,
            lock: 0
        }
    );
}

/// The lock is decided with the count, so callers racing on one key never get more than
/// the threshold's attempts admitted (the rest see the lock), on either backend.
async fn concurrent_reservations_admit_no_more_than_the_threshold(db: TestDb) {
    let policy = SecurityPolicy::default();
    let outcomes = concurrently(&db, |db| async move {
        db.reserve_attempt("user:alice", NOW, &SecurityPolicy::default())
            .await
            .unwrap()
    })
    .await;
    let mut admitted: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| match o {
            Attempt::Admitted { attempts, .. } => Some(*attempts),
            Attempt::Refused { .. } => None,
        })
        .collect();
    admitted.sort_unstable();
    assert_eq!(admitted, (1..=policy.lockout_threshold).collect::<Vec<_>>());
    assert!(outcomes.iter().all(|o| match o {
        Attempt::Admitted { .. } => true,
        Attempt::Refused { until } => *until == NOW + policy.lockout_base,
    }));
}

// ---- TOTP -----------------------------------------------------------------------------

async fn a_new_user_has_totp_off_and_an_unknown_user_has_no_totp_state(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    assert_eq!(
        db.find_totp(alice.id).await.unwrap(),
        Some(TotpState {
            secret: None,
            pending: None,
            last_step: 0,
        })
    );
    assert!(!totp_enabled(&db, alice.id).await);
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 0);

    let ghost = UserId::new();
    assert_eq!(db.find_totp(ghost).await.unwrap(), None);
    assert!(!db.set_totp_pending(ghost, &sealed(1)).await.unwrap());
    assert!(
        !db.activate_totp(ghost, &sealed(1), 5, &codes([1]))
            .await
            .unwrap()
    );
    assert!(!db.disable_totp(ghost).await.unwrap());
    assert!(!db.advance_totp_step(ghost, 5).await.unwrap());
    assert!(!db.use_recovery_code(ghost, &code(1), NOW).await.unwrap());
    assert_eq!(db.count_recovery_codes(ghost).await.unwrap(), 0);
}

async fn enrolment_keeps_the_secret_pending_until_activation_turns_it_on(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    assert!(db.set_totp_pending(alice.id, &sealed(1)).await.unwrap());
    // Starting over replaces the pending secret.
    assert!(db.set_totp_pending(alice.id, &sealed(2)).await.unwrap());
    assert_eq!(
        totp(&db, alice.id).await,
        TotpState {
            secret: None,
            pending: Some(sealed(2)),
            last_step: 0,
        }
    );
    assert!(!totp_enabled(&db, alice.id).await, "pending is not on");

    let step = 56_666_667;
    assert!(
        db.activate_totp(alice.id, &sealed(2), step, &codes(1..=10))
            .await
            .unwrap()
    );
    assert_eq!(
        totp(&db, alice.id).await,
        TotpState {
            secret: Some(sealed(2)),
            pending: None,
            last_step: step,
        }
    );
    assert!(totp_enabled(&db, alice.id).await);
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 10);

    // A new enrolment while TOTP is on leaves the active secret alone until activated.
    assert!(db.set_totp_pending(alice.id, &sealed(3)).await.unwrap());
    assert_eq!(
        totp(&db, alice.id).await,
        TotpState {
            secret: Some(sealed(2)),
            pending: Some(sealed(3)),
            last_step: step,
        }
    );
    assert!(totp_enabled(&db, alice.id).await);
}

async fn activation_is_refused_unless_the_secret_is_still_pending(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    assert!(
        !db.activate_totp(alice.id, &sealed(1), 7, &codes([1]))
            .await
            .unwrap(),
        "nothing pending"
    );

    assert!(db.set_totp_pending(alice.id, &sealed(1)).await.unwrap());
    assert!(db.set_totp_pending(alice.id, &sealed(2)).await.unwrap());
    assert!(
        !db.activate_totp(alice.id, &sealed(1), 7, &codes([1]))
            .await
            .unwrap(),
        "the pending secret changed meanwhile"
    );
    let pending_only = TotpState {
        secret: None,
        pending: Some(sealed(2)),
        last_step: 0,
    };
    assert_eq!(totp(&db, alice.id).await, pending_only);
    assert_eq!(
        recovery_rows(&db, alice.id).await,
        0,
        "a refused activation stores no codes"
    );

    assert!(
        db.activate_totp(alice.id, &sealed(2), 7, &codes([1, 2]))
            .await
            .unwrap()
    );
    assert!(
        !db.activate_totp(alice.id, &sealed(2), 9, &codes([3]))
            .await
            .unwrap(),
        "activated twice"
    );
    assert_eq!(
        totp(&db, alice.id).await,
        TotpState {
            secret: Some(sealed(2)),
            pending: None,
            last_step: 7,
        }
    );
    assert!(db.use_recovery_code(alice.id, &code(1), NOW).await.unwrap());
    assert!(
        !db.use_recovery_code(alice.id, &code(3), NOW).await.unwrap(),
        "the refused activation's codes were not stored"
    );
}

async fn concurrent_activations_of_one_pending_secret_succeed_once(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    assert!(db.set_totp_pending(alice.id, &sealed(1)).await.unwrap());
    let id = alice.id;
    let results = concurrently(&db, move |db| async move {
        db.activate_totp(id, &sealed(1), 42, &codes(1..=10))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    assert_eq!(
        totp(&db, alice.id).await,
        TotpState {
            secret: Some(sealed(1)),
            pending: None,
            last_step: 42,
        }
    );
    assert_eq!(recovery_rows(&db, alice.id).await, 10);
}

async fn reactivation_replaces_every_recovery_code(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    enable_totp(&db, alice.id, 1, 100, &codes(1..=3)).await;
    assert!(db.use_recovery_code(alice.id, &code(1), NOW).await.unwrap());
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 2);

    enable_totp(&db, alice.id, 2, 200, &codes(11..=15)).await;
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 5);
    assert_eq!(
        recovery_rows(&db, alice.id).await,
        5,
        "the used one is gone too"
    );
    for old in 1..=3 {
        assert!(
            !db.use_recovery_code(alice.id, &code(old), NOW + 1)
                .await
                .unwrap()
        );
    }
    assert!(
        db.use_recovery_code(alice.id, &code(11), NOW + 1)
            .await
            .unwrap()
    );
    assert_eq!(totp(&db, alice.id).await.secret, Some(sealed(2)));
}

async fn a_totp_step_is_accepted_only_if_it_is_newer_than_the_last(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let step = 56_666_667;
    enable_totp(&db, alice.id, 1, step, &[]).await;

    assert!(
        !db.advance_totp_step(alice.id, step).await.unwrap(),
        "the activation's code is used"
    );
    assert!(!db.advance_totp_step(alice.id, step - 1).await.unwrap());
    assert!(db.advance_totp_step(alice.id, step + 1).await.unwrap());
    assert!(
        !db.advance_totp_step(alice.id, step + 1).await.unwrap(),
        "a code is accepted at most once"
    );
    assert!(db.advance_totp_step(alice.id, step + 5).await.unwrap());
    assert!(
        !db.advance_totp_step(alice.id, step + 3).await.unwrap(),
        "an older step after a newer one"
    );
    assert!(!db.advance_totp_step(alice.id, 0).await.unwrap());
    assert!(!db.advance_totp_step(alice.id, -1).await.unwrap());
    assert_eq!(totp(&db, alice.id).await.last_step, step + 5);

    // The step is per user.
    let bob = insert_user(&db, "bob").await;
    enable_totp(&db, bob.id, 2, step, &[]).await;
    assert!(db.advance_totp_step(bob.id, step + 1).await.unwrap());
    assert_eq!(totp(&db, alice.id).await.last_step, step + 5);
    assert_eq!(totp(&db, bob.id).await.last_step, step + 1);
}

async fn concurrent_uses_of_one_totp_step_succeed_once(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    enable_totp(&db, alice.id, 1, 1_000, &[]).await;
    let id = alice.id;
    let results = concurrently(&db, move |db| async move {
        db.advance_totp_step(id, 1_001).await.unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    assert_eq!(totp(&db, alice.id).await.last_step, 1_001);
}

async fn a_totp_step_is_refused_while_totp_is_off(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    assert!(
        !db.advance_totp_step(alice.id, 1).await.unwrap(),
        "never enrolled"
    );
    assert_eq!(totp(&db, alice.id).await.last_step, 0);

    assert!(db.set_totp_pending(alice.id, &sealed(1)).await.unwrap());
    assert!(
        !db.advance_totp_step(alice.id, 1).await.unwrap(),
        "only pending"
    );
    assert_eq!(totp(&db, alice.id).await.last_step, 0);

    assert!(
        db.activate_totp(alice.id, &sealed(1), 10, &[])
            .await
            .unwrap()
    );
    assert!(db.disable_totp(alice.id).await.unwrap());
    assert!(
        !db.advance_totp_step(alice.id, 11).await.unwrap(),
        "turned off again"
    );
    assert_eq!(totp(&db, alice.id).await.last_step, 0);
}

async fn disabling_totp_clears_the_secret_the_pending_secret_and_the_last_step(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    enable_totp(&db, alice.id, 1, 500, &codes(1..=3)).await;
    assert!(db.advance_totp_step(alice.id, 501).await.unwrap());
    // A re-enrolment in progress is dropped too.
    assert!(db.set_totp_pending(alice.id, &sealed(2)).await.unwrap());

    assert!(db.disable_totp(alice.id).await.unwrap());
    let off = TotpState {
        secret: None,
        pending: None,
        last_step: 0,
    };
    assert_eq!(totp(&db, alice.id).await, off);
    assert!(!totp_enabled(&db, alice.id).await);
    assert!(
        !db.activate_totp(alice.id, &sealed(2), 600, &[])
            .await
            .unwrap(),
        "the dropped pending secret cannot be activated"
    );

    assert!(
        db.disable_totp(alice.id).await.unwrap(),
        "disabling again is fine: the user exists"
    );
    assert_eq!(totp(&db, alice.id).await, off);
}

async fn disabling_totp_deletes_every_recovery_code_of_that_user_only(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let bob = insert_user(&db, "bob").await;
    enable_totp(&db, alice.id, 1, 100, &codes(1..=4)).await;
    enable_totp(&db, bob.id, 2, 100, &codes(1..=4)).await;
    assert!(db.use_recovery_code(alice.id, &code(1), NOW).await.unwrap());

    assert!(db.disable_totp(alice.id).await.unwrap());
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 0);
    assert_eq!(
        recovery_rows(&db, alice.id).await,
        0,
        "deleted, used or not, not just marked"
    );
    assert!(
        !db.use_recovery_code(alice.id, &code(2), NOW + 1)
            .await
            .unwrap()
    );

    assert_eq!(db.count_recovery_codes(bob.id).await.unwrap(), 4);
    assert!(
        db.use_recovery_code(bob.id, &code(2), NOW + 1)
            .await
            .unwrap()
    );
    assert!(totp_enabled(&db, bob.id).await);
}

// ---- recovery codes -------------------------------------------------------------------

async fn recovery_codes_work_once_each(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    enable_totp(&db, alice.id, 1, 100, &codes(1..=3)).await;
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 3);

    assert!(db.use_recovery_code(alice.id, &code(2), NOW).await.unwrap());
    assert!(
        !db.use_recovery_code(alice.id, &code(2), NOW + 1)
            .await
            .unwrap(),
        "used twice"
    );
    assert!(
        !db.use_recovery_code(alice.id, &code(9), NOW).await.unwrap(),
        "unknown code"
    );
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 2);
    let used_at = db
        .count(&format!(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = '{}' AND used_at = {NOW}",
            alice.id
        ))
        .await;
    assert_eq!(used_at, 1, "the first use is recorded, not the refused one");

    assert!(db.use_recovery_code(alice.id, &code(1), NOW).await.unwrap());
    assert!(db.use_recovery_code(alice.id, &code(3), NOW).await.unwrap());
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 0);
    assert!(
        totp_enabled(&db, alice.id).await,
        "running out of codes leaves TOTP on"
    );
}

async fn recovery_codes_belong_to_their_user(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let bob = insert_user(&db, "bob").await;
    // The same hash for both users (possible in principle), and one code each.
    enable_totp(&db, alice.id, 1, 100, &codes([1, 2])).await;
    enable_totp(&db, bob.id, 2, 100, &codes([1, 3])).await;

    assert!(!db.use_recovery_code(bob.id, &code(2), NOW).await.unwrap());
    assert!(!db.use_recovery_code(alice.id, &code(3), NOW).await.unwrap());
    assert!(db.use_recovery_code(alice.id, &code(1), NOW).await.unwrap());
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 1);
    assert_eq!(
        db.count_recovery_codes(bob.id).await.unwrap(),
        2,
        "alice's use of a shared hash leaves bob's code alone"
    );
    assert!(db.use_recovery_code(bob.id, &code(1), NOW).await.unwrap());
}

async fn concurrent_uses_of_one_recovery_code_succeed_once(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    enable_totp(&db, alice.id, 1, 100, &codes(1..=10)).await;
    let id = alice.id;
    let results = concurrently(&db, move |db| async move {
        db.use_recovery_code(id, &code(7), NOW).await.unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    assert_eq!(db.count_recovery_codes(alice.id).await.unwrap(), 9);
}

// ---- MFA challenges -------------------------------------------------------------------

async fn an_mfa_challenge_round_trips_until_it_expires(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let c = MfaChallenge {
        user_id: alice.id,
        client_id: "cli-ünïcode".into(),
        scope: "openid profile offline_access".into(),
        created_at: NOW,
        expires_at: NOW + MFA_TTL,
        attempts: 2,
    };
    db.insert_mfa_challenge(&challenge_hash(1), &c)
        .await
        .unwrap();

    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(1), NOW)
            .await
            .unwrap(),
        Some(c.clone())
    );
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(1), NOW + MFA_TTL - 1)
            .await
            .unwrap(),
        Some(c.clone()),
        "alive until its last second"
    );
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(1), NOW + MFA_TTL)
            .await
            .unwrap(),
        None,
        "expired at expires_at"
    );
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(1), NOW + 10 * MFA_TTL)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(2), NOW)
            .await
            .unwrap(),
        None,
        "unknown hash"
    );
}

async fn an_mfa_challenge_token_hash_is_unique(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let bob = insert_user(&db, "bob").await;
    let first = challenge(alice.id, NOW);
    db.insert_mfa_challenge(&challenge_hash(1), &first)
        .await
        .unwrap();
    let err = db
        .insert_mfa_challenge(&challenge_hash(1), &challenge(bob.id, NOW + 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err:?}");
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(1), NOW)
            .await
            .unwrap(),
        Some(first)
    );
}

async fn wrong_codes_are_counted_against_their_challenge_only(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let c = challenge(alice.id, NOW);
    db.insert_mfa_challenge(&challenge_hash(1), &c)
        .await
        .unwrap();
    db.insert_mfa_challenge(&challenge_hash(2), &c)
        .await
        .unwrap();

    for n in 1..=3 {
        assert_eq!(db.fail_mfa_challenge(&challenge_hash(1)).await.unwrap(), n);
    }
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(1), NOW + 1)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        3
    );
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(2), NOW + 1)
            .await
            .unwrap(),
        Some(c),
        "the other challenge has no attempts"
    );
    assert_eq!(db.fail_mfa_challenge(&challenge_hash(2)).await.unwrap(), 1);

    // A challenge that does not exist counts as exhausted, so callers burn it.
    assert_eq!(
        db.fail_mfa_challenge(&challenge_hash(9)).await.unwrap(),
        i64::MAX
    );
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(9), NOW)
            .await
            .unwrap(),
        None
    );
}

async fn concurrent_wrong_codes_are_all_counted(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    db.insert_mfa_challenge(&challenge_hash(1), &challenge(alice.id, NOW))
        .await
        .unwrap();
    let mut attempts = concurrently(&db, |db| async move {
        db.fail_mfa_challenge(&challenge_hash(1)).await.unwrap()
    })
    .await;
    attempts.sort_unstable();
    let expected: Vec<i64> = (1..=i64::try_from(N).unwrap()).collect();
    assert_eq!(attempts, expected, "every wrong code got its own count");
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(1), NOW)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        i64::try_from(N).unwrap()
    );
}

async fn an_mfa_challenge_is_consumed_once(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let c = challenge(alice.id, NOW);
    db.insert_mfa_challenge(&challenge_hash(1), &c)
        .await
        .unwrap();
    db.insert_mfa_challenge(&challenge_hash(2), &c)
        .await
        .unwrap();

    assert!(
        db.consume_mfa_challenge(&challenge_hash(1), NOW + 10, 5)
            .await
            .unwrap()
    );
    assert!(
        !db.consume_mfa_challenge(&challenge_hash(1), NOW + 11, 5)
            .await
            .unwrap(),
        "consumed twice"
    );
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(1), NOW + 10)
            .await
            .unwrap(),
        None,
        "a used challenge is unknown, even before it expires"
    );
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(2), NOW + 10)
            .await
            .unwrap(),
        Some(c),
        "another challenge of the same user is untouched"
    );
    assert!(
        !db.consume_mfa_challenge(&challenge_hash(9), NOW, 5)
            .await
            .unwrap(),
        "unknown challenge"
    );
}

async fn an_mfa_challenge_with_its_wrong_codes_used_up_is_not_consumed(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    db.insert_mfa_challenge(&challenge_hash(1), &challenge(alice.id, NOW))
        .await
        .unwrap();
    for _ in 0..2 {
        db.fail_mfa_challenge(&challenge_hash(1)).await.unwrap();
    }
    assert!(
        !db.consume_mfa_challenge(&challenge_hash(1), NOW + 1, 2)
            .await
            .unwrap(),
        "two wrong codes counted, two allowed: a right one comes too late"
    );
    assert!(
        db.find_mfa_challenge(&challenge_hash(1), NOW + 1)
            .await
            .unwrap()
            .is_some(),
        "refused, not used: the burn is the caller's"
    );
    assert!(
        db.consume_mfa_challenge(&challenge_hash(1), NOW + 1, 3)
            .await
            .unwrap(),
        "below the limit it is consumed"
    );
}

async fn concurrent_consumes_of_one_mfa_challenge_succeed_once(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    db.insert_mfa_challenge(&challenge_hash(1), &challenge(alice.id, NOW))
        .await
        .unwrap();
    let results = concurrently(&db, |db| async move {
        db.consume_mfa_challenge(&challenge_hash(1), NOW + 1, 5)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    assert_eq!(
        db.find_mfa_challenge(&challenge_hash(1), NOW + 1)
            .await
            .unwrap(),
        None
    );
}

async fn deleting_a_user_deletes_their_recovery_codes_and_challenges(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let bob = insert_user(&db, "bob").await;
    enable_totp(&db, alice.id, 1, 100, &codes(1..=3)).await;
    enable_totp(&db, bob.id, 2, 100, &codes(1..=3)).await;
    db.insert_mfa_challenge(&challenge_hash(1), &challenge(alice.id, NOW))
        .await
        .unwrap();
    db.insert_mfa_challenge(&challenge_hash(2), &challenge(bob.id, NOW))
        .await
        .unwrap();

    assert!(db.delete_user(alice.id).await.unwrap());
    assert_eq!(db.find_totp(alice.id).await.unwrap(), None);
    assert_eq!(recovery_rows(&db, alice.id).await, 0);
    let challenges = db
        .count(&format!(
            "SELECT COUNT(*) FROM mfa_challenges WHERE user_id = '{}'",
            alice.id
        ))
        .await;
    assert_eq!(challenges, 0);

    assert_eq!(db.count_recovery_codes(bob.id).await.unwrap(), 3);
    assert!(
        db.find_mfa_challenge(&challenge_hash(2), NOW)
            .await
            .unwrap()
            .is_some()
    );
}
