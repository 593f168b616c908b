//! `MetaStore` (small named values) and `Store::ping`.

use tessera_auth::model::UserId;
use tessera_auth::store::{MetaStore as _, SessionStore as _, Store as _, StoreErrorKind};

use crate::support::{TestDb, conformance};

conformance!(
    meta_values_are_set_read_and_overwritten,
    ping_answers,
    a_closed_store_reports_unavailable,
);

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
