//! Properties only PostgreSQL can break, because only there do several writers commit
//! concurrently (SQLite has one writer at a time). Each test runs once, on PostgreSQL.

use std::time::Duration;

use tessera_auth::model::RevocationKind;
use tessera_auth::store::RevocationStore as _;

use crate::support::{EVENT_TTL, NOW, TestDb, on_postgres};

/// The revocation feed is read by id cursor (`revocations_since(after)`): once a reader
/// has seen id N, it never asks for anything at or below N again. So an event must never
/// become visible while an event with a smaller id is still uncommitted, or readers skip
/// that revocation for good. Here a transaction holds an uncommitted event (another
/// instance mid-append) while the store appends the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_events_become_visible_in_id_order() {
    on_postgres(revocation_events_become_visible_in_id_order_body).await;
}

async fn revocation_events_become_visible_in_id_order_body(db: TestDb) {
    let pool = db.pg_pool().unwrap().clone();
    let mut open = pool.begin().await.unwrap();
    let first: i64 = sqlx::query_scalar(
        "INSERT INTO revocation_events (kind, subject, created_at, expires_at)
         VALUES ('jti', 'first', $1, $2) RETURNING id",
    )
    .bind(NOW)
    .bind(NOW + EVENT_TTL)
    .fetch_one(&mut *open)
    .await
    .unwrap();

    let mut writer = {
        let db = db.database();
        tokio::spawn(async move {
            db.append_revocation(RevocationKind::Jti, "second", NOW, NOW + EVENT_TTL)
                .await
        })
    };
    // Either the append waits for the open transaction (right), or it commits past it.
    tokio::select! {
        done = &mut writer => {
            let second = done.unwrap().unwrap();
            let seen = db.revocations_since(0, NOW, 10).await.unwrap();
            panic!(
                "event {second} became visible ({seen:?}) while event {first} was uncommitted: \
                 a feed reader now at cursor {second} would never see event {first}"
            );
        }
        () = wait_for_a_lock_waiter(&db) => {}
    }
    assert!(db.revocations_since(0, NOW, 10).await.unwrap().is_empty());

    open.commit().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let seen: Vec<i64> = db
        .revocations_since(0, NOW, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(seen, [first, second]);
}

/// Returns once some session of this database waits for a lock.
async fn wait_for_a_lock_waiter(db: &TestDb) {
    loop {
        let waiting = db
            .count(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await;
        if waiting > 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
}
