//! Refresh-token rotation (`SessionStore::rotate_refresh_token`, RFC 9700 §4.14.2): every
//! `RotateOutcome`, the grace window, reuse detection, dead sessions, and concurrent
//! rotation of one token.

use tessera_auth::model::{RevocationKind, Role, Session};
use tessera_auth::store::{
    RevocationStore as _, RotateOutcome, RotateRequest, SessionStore as _, UserStore as _,
};

use crate::support::{
    ABSOLUTE_TTL, EVENT_TTL, GRACE, IDLE_TTL, NOW, TestDb, conformance, insert_user, rotate,
    session, session_with, token,
};

conformance!(
    rotation_stores_the_successor_and_moves_only_the_idle_expiry,
    rotation_caps_the_idle_expiry_at_the_absolute_expiry,
    rotation_returns_the_users_current_row,
    retry_within_grace_with_the_same_unused_successor_is_a_grace_retry,
    retry_within_grace_with_a_different_successor_is_reuse,
    a_parent_whose_successor_was_rotated_within_grace_is_superseded_and_changes_nothing,
    replaying_a_parent_whose_successor_was_rotated_after_the_window_is_reuse,
    replaying_a_parent_outside_the_grace_window_is_reuse,
    replaying_a_parent_with_zero_grace_is_reuse,
    after_reuse_every_token_of_the_family_is_invalid,
    unknown_refresh_token_is_invalid,
    another_clients_token_is_invalid_and_changes_nothing,
    idle_expired_session_is_invalid_and_stores_no_successor,
    absolutely_expired_session_is_invalid_and_stores_no_successor,
    revoked_session_is_invalid_and_stores_no_successor,
    concurrent_rotations_of_one_token_yield_one_rotation_and_grace_retries,
    a_rotation_failing_half_way_changes_nothing_and_leaves_no_transaction_open,
);

const PARENT: u8 = 1;
const CHILD: u8 = 2;
const GRANDCHILD: u8 = 3;

/// A user with one session created at [`NOW`] whose refresh token is `token(PARENT)`.
async fn one_session(db: &TestDb) -> Session {
    let u = insert_user(db, "alice").await;
    let s = session(u.id, NOW);
    db.create_session(&s, &token(PARENT)).await.unwrap();
    s
}

async fn rotated(db: &TestDb, req: &RotateRequest) -> Session {
    match db.rotate_refresh_token(req).await.unwrap() {
        RotateOutcome::Rotated { session, user } => {
            let stored = db.find_user_by_id(session.user_id).await.unwrap();
            assert!(stored.is_some());
            assert_eq!(
                user, stored,
                "the rotation returns the session's user as stored"
            );
            session
        }
        other => panic!("expected Rotated, got {other:?}"),
    }
}

/// Asserts the rotation was refused and left no trace: parent unused, no successor, the
/// session row as it was, no revocation event.
async fn assert_invalid_without_trace(db: &TestDb, req: &RotateRequest, before: &Session) {
    let out = db.rotate_refresh_token(req).await.unwrap();
    assert!(matches!(out, RotateOutcome::Invalid(_)), "{out:?}");
    assert_eq!(
        db.find_refresh_token(&req.successor_hash).await.unwrap(),
        None
    );
    assert_eq!(
        db.find_refresh_token(&req.parent_hash).await.unwrap(),
        Some((before.clone(), None)),
        "the parent is still unused"
    );
    assert_eq!(
        db.find_session(before.id).await.unwrap().as_ref(),
        Some(before)
    );
    let revoked_before = usize::from(before.revoked_at.is_some());
    assert_eq!(
        db.revocations_since(0, NOW, 100).await.unwrap().len(),
        revoked_before
    );
}

async fn rotation_stores_the_successor_and_moves_only_the_idle_expiry(db: TestDb) {
    let s = one_session(&db).await;
    let t = NOW + 600;
    let r = rotated(&db, &rotate(token(PARENT), token(CHILD), t)).await;
    assert_eq!(
        r,
        Session {
            last_used_at: t,
            idle_expires_at: t + IDLE_TTL,
            ..s.clone()
        }
    );
    assert_eq!(
        r.absolute_expires_at,
        NOW + ABSOLUTE_TTL,
        "the absolute expiry never moves"
    );
    assert_eq!(db.find_session(s.id).await.unwrap(), Some(r.clone()));
    assert_eq!(
        db.find_refresh_token(&token(PARENT)).await.unwrap(),
        Some((r.clone(), Some(t)))
    );
    assert_eq!(
        db.find_refresh_token(&token(CHILD)).await.unwrap(),
        Some((r.clone(), None))
    );

    // The successor rotates in turn.
    let r2 = rotated(&db, &rotate(token(CHILD), token(GRANDCHILD), t + 600)).await;
    assert_eq!(r2.idle_expires_at, t + 600 + IDLE_TTL);
    assert_eq!(r2.absolute_expires_at, s.absolute_expires_at);
    assert!(db.revocations_since(0, NOW, 100).await.unwrap().is_empty());
}

/// The grant checks the user (disabled? roles?) from the row the rotation returns, so that
/// row must be the user's current one, not the one at login.
async fn rotation_returns_the_users_current_row(db: TestDb) {
    let s = one_session(&db).await;
    let admin = Role::parse("admin").unwrap();
    assert!(
        db.update_user_roles(s.user_id, std::slice::from_ref(&admin), NOW + 1)
            .await
            .unwrap()
    );
    assert!(
        db.update_user_disabled(s.user_id, true, NOW + 2)
            .await
            .unwrap()
    );
    let out = db
        .rotate_refresh_token(&rotate(token(PARENT), token(CHILD), NOW + 10))
        .await
        .unwrap();
    let RotateOutcome::Rotated {
        session,
        user: Some(user),
    } = out
    else {
        panic!("expected Rotated with the user, got {out:?}");
    };
    assert_eq!(session.id, s.id);
    assert_eq!(user.id, s.user_id);
    assert!(
        user.disabled,
        "the rotation reads the user after it was disabled"
    );
    assert_eq!(user.roles, vec![admin]);
    assert_eq!(user.updated_at, NOW + 2);
}

async fn rotation_caps_the_idle_expiry_at_the_absolute_expiry(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    let s = session_with(u.id, NOW, NOW + 900, NOW + 1_000);
    db.create_session(&s, &token(PARENT)).await.unwrap();
    let r = rotated(&db, &rotate(token(PARENT), token(CHILD), NOW + 500)).await;
    assert_eq!(r.idle_expires_at, NOW + 1_000);
    assert_eq!(r.absolute_expires_at, NOW + 1_000);
    assert_eq!(db.find_session(s.id).await.unwrap(), Some(r));
}

async fn retry_within_grace_with_the_same_unused_successor_is_a_grace_retry(db: TestDb) {
    let s = one_session(&db).await;
    let t = NOW + 600;
    let r = rotated(&db, &rotate(token(PARENT), token(CHILD), t)).await;

    // Right away, and at the last second of the window.
    for now in [t, t + GRACE] {
        let out = db
            .rotate_refresh_token(&rotate(token(PARENT), token(CHILD), now))
            .await
            .unwrap();
        assert_eq!(out, RotateOutcome::GraceRetry(r.clone()));
    }
    // Nothing changed: the successor is still the one live token, the session is live.
    assert_eq!(
        db.find_refresh_token(&token(CHILD)).await.unwrap(),
        Some((r.clone(), None))
    );
    assert_eq!(
        db.find_refresh_token(&token(PARENT)).await.unwrap(),
        Some((r.clone(), Some(t)))
    );
    assert_eq!(db.find_session(s.id).await.unwrap(), Some(r));
    assert!(db.revocations_since(0, NOW, 100).await.unwrap().is_empty());
    let tokens = db
        .count(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{}'",
            s.id
        ))
        .await;
    assert_eq!(tokens, 2);
}

/// Asserts `req` (a replay of an already rotated parent) is reuse: the session is revoked
/// in the store and one `session` revocation event was appended.
async fn assert_reuse(db: &TestDb, req: &RotateRequest, s: &Session) {
    let out = db.rotate_refresh_token(req).await.unwrap();
    let RotateOutcome::Reused(reused) = out else {
        panic!("expected Reused, got {out:?}");
    };
    assert_eq!(reused.id, s.id);
    assert_eq!(reused.revoked_at, Some(req.now));
    assert_eq!(reused.revoke_reason.as_deref(), Some("refresh_reuse"));
    let stored = db.find_session(s.id).await.unwrap().unwrap();
    assert_eq!(stored, reused);
    assert!(!stored.is_live(req.now));

    let events = db.revocations_since(0, NOW, 100).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, RevocationKind::Session);
    assert_eq!(events[0].subject, s.id.to_string());
    assert_eq!(events[0].created_at, req.now);
    assert_eq!(events[0].expires_at, req.revocation_expires_at);
}

async fn retry_within_grace_with_a_different_successor_is_reuse(db: TestDb) {
    let s = one_session(&db).await;
    rotated(&db, &rotate(token(PARENT), token(CHILD), NOW + 600)).await;
    assert_reuse(&db, &rotate(token(PARENT), token(9), NOW + 601), &s).await;
    assert_eq!(db.find_refresh_token(&token(9)).await.unwrap(), None);
}

async fn a_parent_whose_successor_was_rotated_within_grace_is_superseded_and_changes_nothing(
    db: TestDb,
) {
    let s = one_session(&db).await;
    let t = NOW + 600;
    rotated(&db, &rotate(token(PARENT), token(CHILD), t)).await;
    let r = rotated(&db, &rotate(token(CHILD), token(GRANDCHILD), t + 1)).await;
    // Inside the parent's grace window, its successor spent: the caller follows the chain.
    // At the window's last second too.
    for now in [t + 2, t + GRACE] {
        let out = db
            .rotate_refresh_token(&rotate(token(PARENT), token(CHILD), now))
            .await
            .unwrap();
        assert_eq!(out, RotateOutcome::Superseded(r.clone()));
    }
    // The next link answers with the chain's current token, still unused.
    let out = db
        .rotate_refresh_token(&rotate(token(CHILD), token(GRANDCHILD), t + 3))
        .await
        .unwrap();
    assert_eq!(out, RotateOutcome::GraceRetry(r.clone()));
    assert_eq!(
        db.find_refresh_token(&token(GRANDCHILD)).await.unwrap(),
        Some((r.clone(), None))
    );
    assert_eq!(db.find_session(s.id).await.unwrap(), Some(r));
    assert!(db.revocations_since(0, NOW, 100).await.unwrap().is_empty());
    // A different successor for the parent is not its chain: reuse.
    assert_reuse(&db, &rotate(token(PARENT), token(9), t + 4), &s).await;
}

async fn replaying_a_parent_whose_successor_was_rotated_after_the_window_is_reuse(db: TestDb) {
    let s = one_session(&db).await;
    let t = NOW + 600;
    rotated(&db, &rotate(token(PARENT), token(CHILD), t)).await;
    rotated(&db, &rotate(token(CHILD), token(GRANDCHILD), t + 1)).await;
    assert_reuse(&db, &rotate(token(PARENT), token(CHILD), t + GRACE + 1), &s).await;
}

async fn replaying_a_parent_outside_the_grace_window_is_reuse(db: TestDb) {
    let s = one_session(&db).await;
    let t = NOW + 600;
    rotated(&db, &rotate(token(PARENT), token(CHILD), t)).await;
    assert_reuse(&db, &rotate(token(PARENT), token(CHILD), t + GRACE + 1), &s).await;
}

async fn replaying_a_parent_with_zero_grace_is_reuse(db: TestDb) {
    let s = one_session(&db).await;
    let t = NOW + 600;
    rotated(&db, &rotate(token(PARENT), token(CHILD), t)).await;
    let req = RotateRequest {
        grace_secs: 0,
        ..rotate(token(PARENT), token(CHILD), t)
    };
    assert_reuse(&db, &req, &s).await;
}

async fn after_reuse_every_token_of_the_family_is_invalid(db: TestDb) {
    let s = one_session(&db).await;
    let t = NOW + 600;
    rotated(&db, &rotate(token(PARENT), token(CHILD), t)).await;
    assert_reuse(&db, &rotate(token(PARENT), token(CHILD), t + GRACE + 1), &s).await;

    for (parent, child) in [(CHILD, GRANDCHILD), (PARENT, CHILD)] {
        let out = db
            .rotate_refresh_token(&rotate(token(parent), token(child), t + GRACE + 2))
            .await
            .unwrap();
        assert!(matches!(out, RotateOutcome::Invalid(_)), "{out:?}");
    }
    assert_eq!(
        db.find_refresh_token(&token(GRANDCHILD)).await.unwrap(),
        None
    );
    assert_eq!(
        db.revocations_since(0, NOW, 100).await.unwrap().len(),
        1,
        "no second event"
    );
}

async fn unknown_refresh_token_is_invalid(db: TestDb) {
    let s = one_session(&db).await;
    let out = db
        .rotate_refresh_token(&rotate(token(7), token(8), NOW + 1))
        .await
        .unwrap();
    assert!(matches!(out, RotateOutcome::Invalid(_)), "{out:?}");
    assert_eq!(db.find_refresh_token(&token(8)).await.unwrap(), None);
    assert_eq!(db.find_session(s.id).await.unwrap(), Some(s));
}

async fn another_clients_token_is_invalid_and_changes_nothing(db: TestDb) {
    let s = one_session(&db).await;
    let req = RotateRequest {
        client_id: "someone-else".into(),
        ..rotate(token(PARENT), token(CHILD), NOW + 1)
    };
    let out = db.rotate_refresh_token(&req).await.unwrap();
    assert!(matches!(out, RotateOutcome::Invalid(_)), "{out:?}");
    assert_eq!(db.find_refresh_token(&token(CHILD)).await.unwrap(), None);
    let (session, used) = db
        .find_refresh_token(&token(PARENT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (session, used),
        (s, None),
        "the token stays usable by its own client"
    );
    rotated(&db, &rotate(token(PARENT), token(CHILD), NOW + 2)).await;
}

async fn idle_expired_session_is_invalid_and_stores_no_successor(db: TestDb) {
    let s = one_session(&db).await;
    assert_invalid_without_trace(
        &db,
        &rotate(token(PARENT), token(CHILD), s.idle_expires_at),
        &s,
    )
    .await;
    // The same holds for a session that went idle after a rotation.
    let r = rotated(&db, &rotate(token(PARENT), token(CHILD), NOW + 10)).await;
    assert_invalid_without_trace(
        &db,
        &rotate(token(CHILD), token(GRANDCHILD), r.idle_expires_at + 1),
        &r,
    )
    .await;
}

async fn absolutely_expired_session_is_invalid_and_stores_no_successor(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    let s = session_with(u.id, NOW, NOW + 10_000, NOW + 1_000);
    db.create_session(&s, &token(PARENT)).await.unwrap();
    assert_invalid_without_trace(&db, &rotate(token(PARENT), token(CHILD), NOW + 1_000), &s).await;
}

async fn revoked_session_is_invalid_and_stores_no_successor(db: TestDb) {
    let s = one_session(&db).await;
    let revoked = db
        .revoke_session(s.id, NOW + 1, "logout", NOW + EVENT_TTL)
        .await
        .unwrap()
        .unwrap();
    assert_invalid_without_trace(&db, &rotate(token(PARENT), token(CHILD), NOW + 2), &revoked)
        .await;
}

async fn concurrent_rotations_of_one_token_yield_one_rotation_and_grace_retries(db: TestDb) {
    const N: usize = 16;
    let s = one_session(&db).await;
    let t = NOW + 600;
    let req = rotate(token(PARENT), token(CHILD), t);
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (db, req) = (db.database(), req.clone());
            tokio::spawn(async move { db.rotate_refresh_token(&req).await })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(N);
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }

    let rotations: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::Rotated { .. }))
        .collect();
    let retries = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::GraceRetry(_)))
        .count();
    assert_eq!(rotations.len(), 1, "{outcomes:?}");
    assert_eq!(retries, N - 1, "{outcomes:?}");

    let r = db.find_session(s.id).await.unwrap().unwrap();
    assert!(r.is_live(t));
    assert_eq!(r.idle_expires_at, t + IDLE_TTL);
    assert_eq!(
        db.find_refresh_token(&token(PARENT)).await.unwrap(),
        Some((r.clone(), Some(t)))
    );
    assert_eq!(
        db.find_refresh_token(&token(CHILD)).await.unwrap(),
        Some((r, None))
    );
    let sid = s.id;
    let live = db
        .count(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{sid}' AND used_at IS NULL"
        ))
        .await;
    assert_eq!(live, 1, "exactly one unused token in the family");
    let all = db
        .count(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{sid}'"
        ))
        .await;
    assert_eq!(all, 2);
    assert!(db.revocations_since(0, NOW, 100).await.unwrap().is_empty());
}

/// The successor cannot be stored (its hash is taken: a unique violation after the claim
/// succeeded). The whole rotation must roll back, and nothing may stay open: on SQLite the
/// rotation runs as one batch with its own BEGIN/COMMIT, so a transaction left open on a
/// pooled connection would hold the write lock and every later write would time out.
async fn a_rotation_failing_half_way_changes_nothing_and_leaves_no_transaction_open(db: TestDb) {
    let s = one_session(&db).await;
    let other = session(s.user_id, NOW);
    db.create_session(&other, &token(CHILD)).await.unwrap();
    let req = rotate(token(PARENT), token(CHILD), NOW + 10);
    assert!(db.rotate_refresh_token(&req).await.is_err());
    assert_eq!(
        db.find_refresh_token(&token(PARENT)).await.unwrap(),
        Some((s.clone(), None)),
        "the claim was rolled back"
    );
    assert_eq!(db.find_session(s.id).await.unwrap().as_ref(), Some(&s));
    // Later writes go through (a held write lock would make them fail after the busy
    // timeout), and the same token still rotates.
    for n in 0..10u8 {
        let extra = session(s.user_id, NOW);
        db.create_session(&extra, &token(100 + n)).await.unwrap();
    }
    let r = rotated(&db, &rotate(token(PARENT), token(GRANDCHILD), NOW + 20)).await;
    assert_eq!(r.id, s.id);
}
