//! `MetaStore` (small named values) and `Store::ping`.

use tessera_auth::model::UserId;
use tessera_auth::store::{MetaStore as _, SessionStore as _, Store as _, StoreErrorKind};

use crate::support::{TestDb, conformance};

conformance!(
    meta_values_are_set_read_and_overwritten,
    set_if_absent_keeps_the_first_value_even_when_racing,
    ping_answers,
    a_closed_store_reports_unavailable,
);

async fn set_if_absent_keeps_the_first_value_even_when_racing(db: TestDb) {
    assert_eq!(
        db.set_meta_if_absent("check", "first").await.unwrap(),
        "first"
    );
    assert_eq!(
        db.set_meta_if_absent("check", "second").await.unwrap(),
        "first"
    );
    assert_eq!(
        db.get_meta("check").await.unwrap().as_deref(),
        Some("first")
    );
    let results = set_concurrently(&db).await;
    let winner = results[0].clone();
    assert!(results.iter().all(|r| *r == winner), "{results:?}");
    assert_eq!(db.get_meta("race").await.unwrap(), Some(winner));
}

/// Eight concurrent `set_meta_if_absent` of one key with different values.
async fn set_concurrently(db: &TestDb) -> Vec<String> {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let db = db.database();
        tasks.push(tokio::spawn(async move {
            db.set_meta_if_absent("race", &format!("instance {i}"))
                .await
                .unwrap()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn meta_values_are_set_read_and_overwritten(db: TestDb) {
    assert_eq!(db.get_meta("bootstrap").await.unwrap(), None);
    db.set_meta("bootstrap", "done").await.unwrap();
    db.set_meta("schema-note", "").await.unwrap();
    assert_eq!(
        db.get_meta("bootstrap").await.unwrap().as_deref(),
        Some("done")
    );
    assert_eq!(
        db.get_meta("schema-note").await.unwrap().as_deref(),
        Some("")
    );

    db.set_meta("bootstrap", "redone ✓").await.unwrap();
    assert_eq!(
        db.get_meta("bootstrap").await.unwrap().as_deref(),
        Some("redone ✓")
    );
    assert_eq!(
        db.get_meta("schema-note").await.unwrap().as_deref(),
        Some("")
    );
    assert_eq!(
        db.get_meta("BOOTSTRAP").await.unwrap(),
        None,
        "keys are case-sensitive"
    );
}

async fn ping_answers(db: TestDb) {
    db.ping().await.unwrap();
}

async fn a_closed_store_reports_unavailable(db: TestDb) {
    db.close().await;
    assert_eq!(
        db.ping().await.unwrap_err().kind(),
        StoreErrorKind::Unavailable
    );
    let err = db.get_meta("bootstrap").await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err:?}");
    // A write transaction (on SQLite, the writer connection: closed, not reopened).
    let err = db
        .revoke_user_sessions(UserId::new(), None, 0, "test", 0, true)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err:?}");
}
