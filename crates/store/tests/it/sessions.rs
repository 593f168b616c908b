//! `SessionStore` outside rotation: creation and lookups, the live-session listing and count, and
//! revocation of one session or all of a user's (with their revocation events).

use tessera_auth::audit::{chain_hash, verify_chain};
use tessera_auth::model::{RevocationEvent, RevocationKind, SessionId};
use tessera_auth::security::SecurityPolicy;
use tessera_auth::store::{
    AuditStore as _, RevocationStore as _, SecurityStore as _, SessionStore as _, UserStore as _,
};

use crate::support::{
    EVENT_TTL, NOW, TestDb, audit_event, conformance, insert_user, session, session_with, token,
};

conformance!(
    created_session_round_trips_with_its_refresh_token,
    a_session_and_its_audit_row_are_stored_together_or_not_at_all,
    a_stored_login_reads_its_user_as_it_stands_with_the_session,
    unknown_sessions_and_refresh_tokens_are_not_found,
    duplicate_refresh_token_hash_is_refused_and_stores_nothing,
    live_sessions_exclude_revoked_and_expired_ones_and_come_newest_first,
    revoking_a_session_succeeds_once_and_appends_one_event,
    revoking_an_unknown_session_returns_none_and_appends_nothing,
    revoking_user_sessions_spares_the_kept_session_and_other_users,
    revoking_user_sessions_with_user_tokens_appends_a_user_event,
);

/// Every revocation event still alive at [`NOW`].
async fn events(db: &TestDb) -> Vec<RevocationEvent> {
    db.revocations_since(0, NOW, 1000).await.unwrap()
}

async fn a_session_and_its_audit_row_are_stored_together_or_not_at_all(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    let first = db
        .append_audit(&audit_event(NOW, "user_created", Some("u-1")), chain_hash)
        .await
        .unwrap();
    let s = session(u.id, NOW);
    let login = audit_event(NOW + 1, "login", Some("u-1"));
    // The login's throttle keys are cleared with it, and only with it.
    for key in ["user:alice", "mfa:alice"] {
        db.reserve_attempt(key, NOW, &SecurityPolicy::default())
            .await
            .unwrap();
    }
    let id = db
        .create_session_audited(&s, &token(1), &login, chain_hash, &["user:alice"])
        .await
        .unwrap()
        .audit_id;
    assert_eq!(db.find_throttle("user:alice").await.unwrap(), None);
    assert!(db.find_throttle("mfa:alice").await.unwrap().is_some());
    assert!(id > first, "{id} after {first}");
    assert_eq!(db.find_session(s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(
        db.find_refresh_token(&token(1)).await.unwrap(),
        Some((s.clone(), None))
    );
    let rows = db.list_audit(0, None, None, 100).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].id, &rows[1].event), (id, &login));
    // Chained to the row before it, like any other append.
    assert!(verify_chain(vec![0; 32], &rows).is_ok(), "{rows:?}");

    // The session fails (its refresh token hash is taken): no audit row either.
    let again = session(u.id, NOW + 2);
    assert!(
        db.create_session_audited(&again, &token(1), &login, chain_hash, &["mfa:alice"])
            .await
            .is_err()
    );
    assert_eq!(db.find_session(again.id).await.unwrap(), None);
    assert!(
        db.find_throttle("mfa:alice").await.unwrap().is_some(),
        "a login not stored clears nothing"
    );
    assert_eq!(db.list_audit(0, None, None, 100).await.unwrap().len(), 2);

    // The audit row fails (the database refuses it): no session either.
    let refuse = match db.backend() {
        "sqlite" => vec![
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'refused'); END",
        ],
        _ => vec![
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        ],
    };
    for sql in refuse {
        db.execute(sql).await;
    }
    let third = session(u.id, NOW + 3);
    let err = db
        .create_session_audited(&third, &token(3), &login, chain_hash, &[])
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("refused"), "{err:?}");
    assert_eq!(db.find_session(third.id).await.unwrap(), None);
    assert_eq!(db.find_refresh_token(&token(3)).await.unwrap(), None);
    assert_eq!(db.list_audit(0, None, None, 100).await.unwrap().len(), 2);
}

async fn created_session_round_trips_with_its_refresh_token(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    let s = session(u.id, NOW);
    db.create_session(&s, &token(1)).await.unwrap();
    assert_eq!(db.find_session(s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(
        db.find_refresh_token(&token(1)).await.unwrap(),
        Some((s.clone(), None))
    );

    // Optional fields stay empty.
    let mut bare = session(u.id, NOW + 1);
    bare.amr = vec![];
    bare.scope = String::new();
    bare.ip = None;
    bare.user_agent = None;
    db.create_session(&bare, &token(2)).await.unwrap();
    assert_eq!(db.find_session(bare.id).await.unwrap(), Some(bare));
}

async fn a_stored_login_reads_its_user_as_it_stands_with_the_session(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    for key in ["user:alice", "mfa:alice", "user:bob"] {
        db.reserve_attempt(key, NOW, &SecurityPolicy::default())
            .await
            .unwrap();
    }
    // The first row of the audit log, chained to 32 zero bytes; both keys cleared.
    let login = audit_event(NOW, "login", Some("u-1"));
    let s = session(u.id, NOW);
    let stored = db
        .create_session_audited(
            &s,
            &token(1),
            &login,
            chain_hash,
            &["user:alice", "mfa:alice"],
        )
        .await
        .unwrap();
    assert_eq!(stored.user.unwrap().as_ref(), Some(&u));
    for key in ["user:alice", "mfa:alice"] {
        assert_eq!(db.find_throttle(key).await.unwrap(), None, "{key}");
    }
    assert!(db.find_throttle("user:bob").await.unwrap().is_some());
    let rows = db.list_audit(0, None, None, 100).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].id, &rows[0].event), (stored.audit_id, &login));
    assert!(verify_chain(vec![0; 32], &rows).is_ok(), "{rows:?}");

    // What changed before the login was stored is what it reads.
    assert!(
        db.update_password_hash(u.id, "$argon2id$changed", NOW + 1, true)
            .await
            .unwrap()
    );
    assert!(db.update_user_disabled(u.id, true, NOW + 1).await.unwrap());
    let stored = db
        .create_session_audited(&session(u.id, NOW + 2), &token(2), &login, chain_hash, &[])
        .await
        .unwrap();
    let read = stored.user.unwrap().expect("the user exists");
    assert_eq!(read.password_hash, "$argon2id$changed");
    assert!(read.disabled);
    assert_eq!(
        Some(&read),
        db.find_user_by_id(u.id).await.unwrap().as_ref()
    );

    // A user deleted before the login is stored: its session is refused, nothing is kept,
    // and the store goes on working.
    assert!(db.delete_user(u.id).await.unwrap());
    let gone = session(u.id, NOW + 3);
    assert!(
        db.create_session_audited(&gone, &token(3), &login, chain_hash, &["user:bob"])
            .await
            .is_err()
    );
    assert_eq!(db.find_session(gone.id).await.unwrap(), None);
    assert!(db.find_throttle("user:bob").await.unwrap().is_some());
    assert_eq!(db.list_audit(0, None, None, 100).await.unwrap().len(), 2);
    let v = insert_user(&db, "bob").await;
    let stored = db
        .create_session_audited(
            &session(v.id, NOW + 4),
            &token(4),
            &login,
            chain_hash,
            &["user:bob"],
        )
        .await
        .unwrap();
    assert_eq!(stored.user.unwrap(), Some(v));
    assert_eq!(db.find_throttle("user:bob").await.unwrap(), None);
    let rows = db.list_audit(0, None, None, 100).await.unwrap();
    assert!(verify_chain(vec![0; 32], &rows).is_ok(), "{rows:?}");
}

async fn unknown_sessions_and_refresh_tokens_are_not_found(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    db.create_session(&session(u.id, NOW), &token(1))
        .await
        .unwrap();
    assert_eq!(db.find_session(SessionId::new()).await.unwrap(), None);
    assert_eq!(db.find_refresh_token(&token(9)).await.unwrap(), None);
}

async fn duplicate_refresh_token_hash_is_refused_and_stores_nothing(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    db.create_session(&session(u.id, NOW), &token(1))
        .await
        .unwrap();
    let second = session(u.id, NOW + 1);
    assert!(db.create_session(&second, &token(1)).await.is_err());
    // The session insert was rolled back with the token insert.
    assert_eq!(db.find_session(second.id).await.unwrap(), None);
}

async fn live_sessions_exclude_revoked_and_expired_ones_and_come_newest_first(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let bob = insert_user(&db, "bob").await;
    let at = NOW + 200;

    let a1 = session(alice.id, NOW);
    let a2 = session(alice.id, NOW + 10);
    let revoked = session(alice.id, NOW + 20);
    let idle_expired = session_with(alice.id, NOW + 5, at, NOW + 10_000);
    let absolute_expired = session_with(alice.id, NOW + 6, NOW + 10_000, at);
    let b1 = session(bob.id, NOW + 15);
    for (n, s) in [&a1, &a2, &revoked, &idle_expired, &absolute_expired, &b1]
        .into_iter()
        .enumerate()
    {
        db.create_session(s, &token(u8::try_from(n).unwrap()))
            .await
            .unwrap();
    }
    db.revoke_session(revoked.id, NOW + 30, "logout", NOW + EVENT_TTL)
        .await
        .unwrap()
        .unwrap();

    let ids =
        |v: Vec<tessera_auth::model::Session>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.list_live_sessions(Some(alice.id), at).await.unwrap()),
        [a2.id, a1.id]
    );
    assert_eq!(
        ids(db.list_live_sessions(Some(bob.id), at).await.unwrap()),
        [b1.id]
    );
    assert_eq!(
        ids(db.list_live_sessions(None, at).await.unwrap()),
        [b1.id, a2.id, a1.id]
    );
    // One second earlier the two expired sessions were still live.
    assert_eq!(
        ids(db.list_live_sessions(Some(alice.id), at - 1).await.unwrap()),
        [a2.id, absolute_expired.id, idle_expired.id, a1.id]
    );
    // Full rows come back.
    assert_eq!(db.list_live_sessions(Some(bob.id), at).await.unwrap(), [b1]);
    // The count (for metrics) agrees with the listing.
    assert_eq!(db.count_live_sessions(at).await.unwrap(), 3);
    assert_eq!(db.count_live_sessions(at - 1).await.unwrap(), 5);
}

async fn revoking_a_session_succeeds_once_and_appends_one_event(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    let s = session(u.id, NOW);
    db.create_session(&s, &token(1)).await.unwrap();

    let revoked = db
        .revoke_session(s.id, NOW + 5, "logout", NOW + EVENT_TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 5));
    assert_eq!(revoked.revoke_reason.as_deref(), Some("logout"));
    assert_eq!(revoked.id, s.id);
    assert_eq!(db.find_session(s.id).await.unwrap(), Some(revoked.clone()));
    assert_eq!(
        db.find_refresh_token(&token(1)).await.unwrap(),
        Some((revoked, None))
    );

    assert_eq!(
        db.revoke_session(s.id, NOW + 6, "again", NOW + EVENT_TTL)
            .await
            .unwrap(),
        None
    );
    let got = db.find_session(s.id).await.unwrap().unwrap();
    assert_eq!(
        got.revoked_at,
        Some(NOW + 5),
        "a second revocation changes nothing"
    );
    assert_eq!(got.revoke_reason.as_deref(), Some("logout"));

    let ev = events(&db).await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        ev[0],
        RevocationEvent {
            id: ev[0].id,
            kind: RevocationKind::Session,
            subject: s.id.to_string(),
            created_at: NOW + 5,
            expires_at: NOW + EVENT_TTL,
        }
    );
}

async fn revoking_an_unknown_session_returns_none_and_appends_nothing(db: TestDb) {
    assert_eq!(
        db.revoke_session(SessionId::new(), NOW, "logout", NOW + EVENT_TTL)
            .await
            .unwrap(),
        None
    );
    assert!(events(&db).await.is_empty());
}

async fn revoking_user_sessions_spares_the_kept_session_and_other_users(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let bob = insert_user(&db, "bob").await;
    let keep = session(alice.id, NOW);
    let a2 = session(alice.id, NOW + 1);
    let a3 = session(alice.id, NOW + 2);
    let already = session(alice.id, NOW + 3);
    let b1 = session(bob.id, NOW);
    for (n, s) in [&keep, &a2, &a3, &already, &b1].into_iter().enumerate() {
        db.create_session(s, &token(u8::try_from(n).unwrap()))
            .await
            .unwrap();
    }
    db.revoke_session(already.id, NOW + 4, "logout", NOW + EVENT_TTL)
        .await
        .unwrap()
        .unwrap();
    let before = events(&db).await.len();

    let n = db
        .revoke_user_sessions(
            alice.id,
            Some(keep.id),
            NOW + 5,
            "password_changed",
            NOW + EVENT_TTL,
            false,
        )
        .await
        .unwrap();
    assert_eq!(n, 2);

    for s in [&a2, &a3] {
        let got = db.find_session(s.id).await.unwrap().unwrap();
        assert_eq!(got.revoked_at, Some(NOW + 5));
        assert_eq!(got.revoke_reason.as_deref(), Some("password_changed"));
    }
    let untouched = db.find_session(already.id).await.unwrap().unwrap();
    assert_eq!(
        untouched.revoked_at,
        Some(NOW + 4),
        "an already revoked session keeps its revocation"
    );
    assert_eq!(db.find_session(keep.id).await.unwrap(), Some(keep.clone()));
    assert_eq!(db.find_session(b1.id).await.unwrap(), Some(b1));

    let ev = events(&db).await;
    let new: Vec<_> = ev.iter().skip(before).collect();
    let mut subjects: Vec<&str> = new.iter().map(|e| e.subject.as_str()).collect();
    subjects.sort_unstable();
    let mut expected = [a2.id.to_string(), a3.id.to_string()];
    expected.sort_unstable();
    assert_eq!(subjects, expected);
    assert!(
        new.iter()
            .all(|e| e.kind == RevocationKind::Session && e.created_at == NOW + 5)
    );

    // Nothing left to revoke but the kept session.
    let n = db
        .revoke_user_sessions(
            alice.id,
            Some(keep.id),
            NOW + 6,
            "again",
            NOW + EVENT_TTL,
            false,
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(events(&db).await.len(), ev.len());
}

async fn revoking_user_sessions_with_user_tokens_appends_a_user_event(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let a1 = session(alice.id, NOW);
    let a2 = session(alice.id, NOW + 1);
    db.create_session(&a1, &token(1)).await.unwrap();
    db.create_session(&a2, &token(2)).await.unwrap();

    let n = db
        .revoke_user_sessions(alice.id, None, NOW + 5, "disabled", NOW + EVENT_TTL, true)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(
        db.list_live_sessions(Some(alice.id), NOW + 5)
            .await
            .unwrap()
            .is_empty()
    );

    let ev = events(&db).await;
    assert_eq!(ev.len(), 3, "{ev:?}");
    let user_events: Vec<_> = ev
        .iter()
        .filter(|e| e.kind == RevocationKind::User)
        .collect();
    assert_eq!(user_events.len(), 1);
    assert_eq!(user_events[0].subject, alice.id.to_string());
    assert_eq!(user_events[0].created_at, NOW + 5);
    assert_eq!(user_events[0].expires_at, NOW + EVENT_TTL);

    // A user without sessions still gets the user event.
    let bob = insert_user(&db, "bob").await;
    let n = db
        .revoke_user_sessions(bob.id, None, NOW + 6, "disabled", NOW + EVENT_TTL, true)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let ev = events(&db).await;
    assert_eq!(ev.len(), 4);
    let last = ev.last().unwrap();
    assert_eq!(
        (last.kind, last.subject.as_str()),
        (RevocationKind::User, bob.id.to_string().as_str())
    );
}
