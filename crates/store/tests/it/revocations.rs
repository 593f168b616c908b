//! `RevocationStore`: the append-only log (ids, paging, expiry) and `prune`.

use tessera_auth::model::{RevocationEvent, RevocationKind, UserId};
use tessera_auth::security::SecurityPolicy;
use tessera_auth::store::{
    RevocationStore as _, SecurityStore as _, SessionStore as _, UserStore as _,
};

use crate::support::{EVENT_TTL, NOW, TestDb, conformance, insert_user, session_with, token};

conformance!(
    appended_revocations_get_increasing_ids_and_round_trip,
    revocations_since_pages_by_id_oldest_first,
    revocations_since_skips_expired_events,
    prune_removes_expired_events_and_long_dead_sessions_only,
    prune_deletes_throttle_rows_keyed_by_a_plain_name,
);

async fn appended_revocations_get_increasing_ids_and_round_trip(db: TestDb) {
    let input = [
        (RevocationKind::Jti, "jti-1", NOW, NOW + 60),
        (
            RevocationKind::Session,
            "0190b5c4-aaaa-7bbb-8ccc-000000000001",
            NOW + 1,
            NOW + 900,
        ),
        (
            RevocationKind::User,
            "0190b5c4-aaaa-7bbb-8ccc-000000000002",
            NOW + 2,
            NOW + 901,
        ),
        (RevocationKind::Jti, "jti-1", NOW + 3, NOW + 60),
    ];
    let mut expected = Vec::new();
    for (kind, subject, created_at, expires_at) in input {
        let id = db
            .append_revocation(kind, subject, created_at, expires_at)
            .await
            .unwrap();
        expected.push(RevocationEvent {
            id,
            kind,
            subject: subject.into(),
            created_at,
            expires_at,
        });
    }
    assert!(
        expected.windows(2).all(|w| w[0].id < w[1].id),
        "{expected:?}"
    );
    assert_eq!(db.revocations_since(0, NOW, 100).await.unwrap(), expected);
}

async fn revocations_since_pages_by_id_oldest_first(db: TestDb) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            db.append_revocation(
                RevocationKind::Jti,
                &format!("jti-{n}"),
                NOW,
                NOW + EVENT_TTL,
            )
            .await
            .unwrap(),
        );
    }
    let mut cursor = 0;
    let mut pages = Vec::new();
    loop {
        let page = db.revocations_since(cursor, NOW, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.id;
        pages.push(page.iter().map(|e| e.id).collect::<Vec<_>>());
    }
    assert_eq!(
        pages,
        [vec![ids[0], ids[1]], vec![ids[2], ids[3]], vec![ids[4]]]
    );
    let subjects: Vec<String> = db
        .revocations_since(ids[1], NOW, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.subject)
        .collect();
    assert_eq!(subjects, ["jti-2", "jti-3", "jti-4"]);
}

async fn revocations_since_skips_expired_events(db: TestDb) {
    let short = db
        .append_revocation(RevocationKind::Jti, "short", NOW, NOW + 10)
        .await
        .unwrap();
    let long = db
        .append_revocation(RevocationKind::Jti, "long", NOW, NOW + 100)
        .await
        .unwrap();
    let ids = |v: Vec<RevocationEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.revocations_since(0, NOW + 9, 10).await.unwrap()),
        [short, long]
    );
    // An event is dead from its `expires_at` on (the same boundary `prune` uses).
    assert_eq!(
        ids(db.revocations_since(0, NOW + 10, 10).await.unwrap()),
        [long]
    );
    assert!(
        db.revocations_since(0, NOW + 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn prune_removes_expired_events_and_long_dead_sessions_only(db: TestDb) {
    const DAY: i64 = 86_400;
    // Prune a month later; sessions dead for more than a week (the retention) go.
    let p = NOW + 30 * DAY;
    let u = insert_user(&db, "alice").await;

    let expired_event = db
        .append_revocation(RevocationKind::Jti, "old", NOW, p)
        .await
        .unwrap();
    let live_event = db
        .append_revocation(RevocationKind::Jti, "new", NOW, p + 1)
        .await
        .unwrap();

    let absolute_dead = session_with(u.id, NOW, NOW + 3_600, NOW + DAY);
    let idle_dead = session_with(u.id, NOW, NOW + 3_600, NOW + 60 * DAY);
    let revoked_long_ago = session_with(u.id, p - 10 * DAY, p + DAY, p + DAY);
    let revoked_recently = session_with(u.id, p - 2 * DAY, p + DAY, p + DAY);
    let expired_recently = session_with(u.id, p - 2 * DAY, p - DAY, p + DAY);
    let live = session_with(u.id, p - 60, p + 3_600, p + DAY);
    let all = [
        &absolute_dead,
        &idle_dead,
        &revoked_long_ago,
        &revoked_recently,
        &expired_recently,
        &live,
    ];
    for (n, s) in all.into_iter().enumerate() {
        db.create_session(s, &token(u8::try_from(n).unwrap()))
            .await
            .unwrap();
    }
    // Their events outlive the prune time, so only `expired_event` goes from the log.
    db.revoke_session(revoked_long_ago.id, p - 8 * DAY, "logout", p + 2)
        .await
        .unwrap()
        .unwrap();
    db.revoke_session(revoked_recently.id, p - DAY, "logout", p + 2)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(db.prune(p).await.unwrap(), 1 + 3);
    assert_eq!(db.prune(p).await.unwrap(), 0, "pruning is idempotent");

    let left: Vec<i64> = db
        .revocations_since(0, NOW, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert!(!left.contains(&expired_event));
    assert!(left.contains(&live_event));
    assert_eq!(left.len(), 3);

    for (n, s) in all.into_iter().enumerate() {
        let kept = n >= 3;
        assert_eq!(
            db.find_session(s.id).await.unwrap().is_some(),
            kept,
            "session #{n}"
        );
        let t = db
            .find_refresh_token(&token(u8::try_from(n).unwrap()))
            .await
            .unwrap();
        assert_eq!(t.is_some(), kept, "refresh token of session #{n}");
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM refresh_tokens").await,
        3,
        "tokens go with their sessions"
    );
    assert!(
        db.find_user_by_id(u.id).await.unwrap().is_some(),
        "users are never pruned"
    );
}

/// Throttle rows keyed by a username as typed (`user:<name>`, the form before the keyed
/// hash) go at every prune, locked or not, however recent: an instance of an earlier
/// version still running during a rolling upgrade writes them after the migration deleted
/// those there were, and the text is often a password typed into the wrong field. Rows of
/// every other form are left to their own expiry.
async fn prune_deletes_throttle_rows_keyed_by_a_plain_name(db: TestDb) {
    let policy = SecurityPolicy::default();
    let id = UserId::new();
    let plain = ["user:alice", "user:correct horse battery staple"];
    let kept = [
        format!("username:{}", "ab".repeat(32)),
        format!("mfa:{id}"),
        format!("reauth:{id}"),
        format!("reauth:user:{id}"),
    ];
    for key in plain.iter().copied().chain(kept.iter().map(String::as_str)) {
        for _ in 0..policy.lockout_threshold {
            db.reserve_attempt(key, NOW, &policy).await.unwrap();
        }
    }
    assert_eq!(db.prune(NOW).await.unwrap(), 2);
    for key in plain {
        assert_eq!(db.find_throttle(key).await.unwrap(), None, "{key}");
    }
    for key in &kept {
        assert!(db.find_throttle(key).await.unwrap().is_some(), "{key}");
    }
}
