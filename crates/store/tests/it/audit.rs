//! `AuditStore`: the hash chain as written by `append_audit` and checked by
//! `tessera_auth::audit::verify_chain`, listing filters, tamper detection through direct
//! SQL edits, and concurrent appends.

use tessera_auth::audit::{ChainBreak, chain_hash, verify_chain};
use tessera_auth::model::{AuditEvent, AuditRecord};
use tessera_auth::store::{AuditStore as _, StoreErrorKind};

use crate::support::{NOW, TestDb, audit_event, conformance};

conformance!(
    appended_audit_rows_round_trip_and_form_a_verifiable_chain,
    audit_listing_filters_by_user_and_time_and_pages_by_id,
    editing_an_audit_row_breaks_its_content_hash,
    deleting_an_audit_row_breaks_the_next_link,
    concurrent_audit_appends_form_one_chain,
    undecodable_audit_detail_is_reported_as_corrupt,
    the_database_refuses_to_change_or_delete_audit_rows,
);

const GENESIS: [u8; 32] = [0; 32];

async fn all_rows(db: &TestDb) -> Vec<AuditRecord> {
    db.list_audit(0, None, None, 10_000).await.unwrap()
}

async fn append(db: &TestDb, events: &[AuditEvent]) -> Vec<i64> {
    let mut ids = Vec::new();
    for e in events {
        ids.push(db.append_audit(e, chain_hash).await.unwrap());
    }
    ids
}

async fn appended_audit_rows_round_trip_and_form_a_verifiable_chain(db: TestDb) {
    assert!(all_rows(&db).await.is_empty());
    let bare = AuditEvent {
        at: NOW + 2,
        event: "login".into(),
        outcome: "failure".into(),
        user_id: None,
        username: Some("unknown-user".into()),
        client_id: None,
        ip: None,
        user_agent: None,
        request_id: None,
        detail: serde_json::json!({}),
    };
    let rich = AuditEvent {
        detail: serde_json::json!({
            "reason": "bad password — «ü» ✓",
            "attempts": 3,
            "ratio": 0.25,
            "nested": { "z": [true, null, -1], "a": "first" },
        }),
        ..audit_event(NOW + 3, "user_updated", Some("u-1"))
    };
    let events = [audit_event(NOW, "user_created", Some("u-1")), bare, rich];
    let ids = append(&db, &events).await;
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let rows = all_rows(&db).await;
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        rows.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        events
    );
    assert_eq!(rows[0].prev_hash, GENESIS);
    for pair in rows.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    for r in &rows {
        assert_eq!(r.hash, chain_hash(&r.prev_hash, &r.event));
    }
    assert_eq!(
        verify_chain(GENESIS.to_vec(), &rows),
        Ok(rows[2].hash.clone())
    );

    // A later append continues the chain from the last row.
    append(&db, &[audit_event(NOW + 4, "logout", Some("u-1"))]).await;
    let rows = all_rows(&db).await;
    assert_eq!(rows[3].prev_hash, rows[2].hash);
    assert!(verify_chain(GENESIS.to_vec(), &rows).is_ok());
}

async fn audit_listing_filters_by_user_and_time_and_pages_by_id(db: TestDb) {
    let ids = append(
        &db,
        &[
            audit_event(NOW, "login", Some("u-1")),
            audit_event(NOW + 10, "login", Some("u-2")),
            audit_event(NOW + 20, "login_failed", None),
            audit_event(NOW + 30, "logout", Some("u-1")),
            audit_event(NOW + 40, "logout", Some("u-2")),
        ],
    )
    .await;
    let list = |after, user: Option<&'static str>, since, limit| {
        let db = db.clone();
        async move {
            db.list_audit(after, user, since, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(0, None, None, 100).await, ids);
    assert_eq!(list(0, Some("u-1"), None, 100).await, [ids[0], ids[3]]);
    assert_eq!(list(0, Some("u-3"), None, 100).await, Vec::<i64>::new());
    assert_eq!(list(0, None, Some(NOW + 20), 100).await, ids[2..]);
    assert_eq!(list(0, Some("u-2"), Some(NOW + 11), 100).await, [ids[4]]);
    assert_eq!(list(0, None, None, 2).await, ids[..2]);
    assert_eq!(list(ids[1], None, None, 2).await, ids[2..4]);
    assert_eq!(list(ids[4], None, None, 2).await, Vec::<i64>::new());

    // A page taken from the start of the log verifies on its own; the next page verifies
    // from the last hash of the previous one.
    let first = db.list_audit(0, None, None, 2).await.unwrap();
    let cursor = verify_chain(GENESIS.to_vec(), &first).unwrap();
    let rest = db.list_audit(first[1].id, None, None, 100).await.unwrap();
    assert!(verify_chain(cursor, &rest).is_ok());
}

async fn editing_an_audit_row_breaks_its_content_hash(db: TestDb) {
    db.drop_audit_guards().await;
    let ids = append(
        &db,
        &[
            audit_event(NOW, "login", Some("u-1")),
            audit_event(NOW + 1, "login", Some("u-1")),
            audit_event(NOW + 2, "logout", Some("u-1")),
        ],
    )
    .await;
    let edited = db
        .execute(&format!(
            "UPDATE audit_log SET outcome = 'failure' WHERE id = {}",
            ids[1]
        ))
        .await;
    assert_eq!(edited, 1);
    let rows = all_rows(&db).await;
    assert_eq!(rows[1].event.outcome, "failure");
    assert_eq!(
        verify_chain(GENESIS.to_vec(), &rows),
        Err(ChainBreak::Content { id: ids[1] })
    );

    // Undoing that edit repairs row 2; editing row 3's detail JSON is caught the same way.
    db.execute(&format!(
        r#"UPDATE audit_log SET outcome = 'success' WHERE id = {}"#,
        ids[1]
    ))
    .await;
    db.execute(&format!(
        r#"UPDATE audit_log SET detail = '{{"reason":"edited"}}' WHERE id = {}"#,
        ids[2]
    ))
    .await;
    let rows = all_rows(&db).await;
    assert_eq!(
        verify_chain(GENESIS.to_vec(), &rows),
        Err(ChainBreak::Content { id: ids[2] })
    );
}

async fn deleting_an_audit_row_breaks_the_next_link(db: TestDb) {
    db.drop_audit_guards().await;
    let ids = append(
        &db,
        &[
            audit_event(NOW, "login", Some("u-1")),
            audit_event(NOW + 1, "password_changed", Some("u-1")),
            audit_event(NOW + 2, "logout", Some("u-1")),
        ],
    )
    .await;
    assert_eq!(
        db.execute(&format!("DELETE FROM audit_log WHERE id = {}", ids[1]))
            .await,
        1
    );
    let rows = all_rows(&db).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        verify_chain(GENESIS.to_vec(), &rows),
        Err(ChainBreak::Link { id: ids[2] })
    );

    // Deleting the first row breaks the chain at the new first row.
    db.execute(&format!("DELETE FROM audit_log WHERE id = {}", ids[0]))
        .await;
    let rows = all_rows(&db).await;
    assert_eq!(
        verify_chain(GENESIS.to_vec(), &rows),
        Err(ChainBreak::Link { id: ids[2] })
    );
}

async fn concurrent_audit_appends_form_one_chain(db: TestDb) {
    const N: i64 = 20;
    let tasks: Vec<_> = (0..N)
        .map(|n| {
            let db = db.database();
            tokio::spawn(async move {
                db.append_audit(&audit_event(NOW + n, "login", Some("u-1")), chain_hash)
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20);

    let rows = all_rows(&db).await;
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    assert!(
        verify_chain(GENESIS.to_vec(), &rows).is_ok(),
        "{:?}",
        verify_chain(GENESIS.to_vec(), &rows)
    );
    let mut ats: Vec<i64> = rows.iter().map(|r| r.event.at).collect();
    ats.sort_unstable();
    assert_eq!(ats, (0..N).map(|n| NOW + n).collect::<Vec<_>>());
}

async fn undecodable_audit_detail_is_reported_as_corrupt(db: TestDb) {
    db.drop_audit_guards().await;
    let ids = append(&db, &[audit_event(NOW, "login", Some("u-1"))]).await;
    db.execute(&format!(
        "UPDATE audit_log SET detail = '{{' WHERE id = {}",
        ids[0]
    ))
    .await;
    let err = db.list_audit(0, None, None, 10).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err:?}");
}

async fn the_database_refuses_to_change_or_delete_audit_rows(db: TestDb) {
    let ids = append(&db, &[audit_event(NOW, "login", Some("u-1"))]).await;
    for sql in [
        format!(
            "UPDATE audit_log SET outcome = 'failure' WHERE id = {}",
            ids[0]
        ),
        format!("DELETE FROM audit_log WHERE id = {}", ids[0]),
        "DELETE FROM audit_log".to_owned(),
    ] {
        let err = db.execute_err(&sql).await;
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(all_rows(&db).await.len(), 1);
    // Appending still works.
    append(&db, &[audit_event(NOW + 1, "logout", Some("u-1"))]).await;
    assert!(verify_chain(GENESIS.to_vec(), &all_rows(&db).await).is_ok());
}
