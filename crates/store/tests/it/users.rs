//! `UserStore`: insert and lookups, uniqueness, listing order, updates, cascading delete.

use tessera_auth::model::{Role, SessionId, UserId, Username};
use tessera_auth::store::{SessionStore as _, StoreErrorKind, StoreResult, UserStore as _};

use crate::support::{NOW, TestDb, conformance, insert_user, session, token, user};

conformance!(
    inserted_user_is_found_by_username_and_by_id,
    unknown_users_are_not_found,
    duplicate_username_is_a_conflict,
    users_are_listed_in_username_byte_order_and_counted,
    updating_roles_replaces_them_and_bumps_updated_at,
    disabling_and_enabling_a_user_is_persisted,
    password_change_moves_password_changed_at_but_a_rehash_does_not,
    a_rehash_replaces_only_the_hash_it_was_made_from,
    updates_and_deletes_of_an_unknown_user_report_false,
    deleting_a_user_deletes_their_sessions_and_refresh_tokens,
    undecodable_user_and_session_rows_are_reported_as_corrupt,
);

async fn inserted_user_is_found_by_username_and_by_id(db: TestDb) {
    let mut u = user("alice");
    u.roles = Role::parse_all(["admin", "user", "ops:read"]).unwrap();
    u.disabled = true;
    u.created_at = NOW - 10;
    u.updated_at = NOW - 5;
    u.password_changed_at = NOW - 7;
    db.insert_user(&u).await.unwrap();

    let by_name = db
        .find_user_by_username(&Username::parse("ALICE").unwrap())
        .await
        .unwrap();
    assert_eq!(by_name.as_ref(), Some(&u));
    // `User`'s Debug hides the hash; compare it explicitly.
    assert_eq!(by_name.unwrap().password_hash, u.password_hash);
    let by_id = db.find_user_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(by_id, u);
    assert_eq!(by_id.roles, u.roles, "role order is preserved");
}

async fn unknown_users_are_not_found(db: TestDb) {
    insert_user(&db, "alice").await;
    assert_eq!(
        db.find_user_by_username(&Username::parse("bob").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.find_user_by_id(UserId::new()).await.unwrap(), None);
}

async fn duplicate_username_is_a_conflict(db: TestDb) {
    let first = insert_user(&db, "alice").await;
    let err = db.insert_user(&user("alice")).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err:?}");
    // The same id twice is a conflict too.
    let mut same_id = user("alice2");
    same_id.id = first.id;
    assert_eq!(
        db.insert_user(&same_id).await.unwrap_err().kind(),
        StoreErrorKind::Conflict
    );
    assert_eq!(db.count_users().await.unwrap(), 1);
}

async fn users_are_listed_in_username_byte_order_and_counted(db: TestDb) {
    assert!(db.list_users().await.unwrap().is_empty());
    assert_eq!(db.count_users().await.unwrap(), 0);

    // Punctuation is where byte order and linguistic collations disagree.
    let names = [
        "zed", "a_z", "ab", "a.c", "a-b", "a+1", "a@x", "a", "a0", "b",
    ];
    for name in names {
        insert_user(&db, name).await;
    }
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort_unstable();
    let listed: Vec<String> = db
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username.as_str().to_owned())
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(db.count_users().await.unwrap(), 10);
}

async fn updating_roles_replaces_them_and_bumps_updated_at(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    let roles = Role::parse_all(["ops", "admin"]).unwrap();
    assert!(db.update_user_roles(u.id, &roles, NOW + 10).await.unwrap());
    let got = db.find_user_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(got.roles, roles);
    assert_eq!(got.updated_at, NOW + 10);
    assert_eq!(got.password_changed_at, u.password_changed_at);

    assert!(db.update_user_roles(u.id, &[], NOW + 20).await.unwrap());
    let got = db.find_user_by_id(u.id).await.unwrap().unwrap();
    assert!(got.roles.is_empty());
    assert_eq!(got.updated_at, NOW + 20);
}

async fn disabling_and_enabling_a_user_is_persisted(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    let other = insert_user(&db, "bob").await;
    assert!(db.update_user_disabled(u.id, true, NOW + 10).await.unwrap());
    let got = db.find_user_by_id(u.id).await.unwrap().unwrap();
    assert!(got.disabled);
    assert_eq!(got.updated_at, NOW + 10);
    assert!(
        !db.find_user_by_id(other.id)
            .await
            .unwrap()
            .unwrap()
            .disabled
    );

    assert!(
        db.update_user_disabled(u.id, false, NOW + 20)
            .await
            .unwrap()
    );
    let got = db.find_user_by_id(u.id).await.unwrap().unwrap();
    assert!(!got.disabled);
    assert_eq!(got.updated_at, NOW + 20);
}

async fn password_change_moves_password_changed_at_but_a_rehash_does_not(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    assert!(
        db.update_password_hash(u.id, "$argon2id$new", NOW + 10, true)
            .await
            .unwrap()
    );
    let got = db.find_user_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(got.password_hash, "$argon2id$new");
    assert_eq!(got.updated_at, NOW + 10);
    assert_eq!(got.password_changed_at, NOW + 10);

    // A transparent rehash (new parameters, same password).
    assert!(
        db.update_password_hash(u.id, "$argon2id$rehashed", NOW + 20, false)
            .await
            .unwrap()
    );
    let got = db.find_user_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(got.password_hash, "$argon2id$rehashed");
    assert_eq!(got.updated_at, NOW + 20);
    assert_eq!(got.password_changed_at, NOW + 10);
}

/// A login that checked the old password rehashes it (new parameters); a password change
/// that committed meanwhile must not be undone by that rehash.
async fn a_rehash_replaces_only_the_hash_it_was_made_from(db: TestDb) {
    let u = insert_user(&db, "alice").await;
    let checked = u.password_hash.clone();
    assert!(
        db.update_password_hash(u.id, "$argon2id$changed", NOW + 10, true)
            .await
            .unwrap()
    );
    assert!(
        !db.rehash_password(u.id, &checked, "$argon2id$rehashed-old", NOW + 11)
            .await
            .unwrap()
    );
    let got = db.find_user_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(got.password_hash, "$argon2id$changed");
    assert_eq!(got.updated_at, NOW + 10);

    assert!(
        db.rehash_password(u.id, "$argon2id$changed", "$argon2id$rehashed", NOW + 20)
            .await
            .unwrap()
    );
    let got = db.find_user_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(got.password_hash, "$argon2id$rehashed");
    assert_eq!(got.updated_at, NOW + 20);
    assert_eq!(got.password_changed_at, NOW + 10);
    assert!(
        !db.rehash_password(UserId::new(), "x", "y", NOW)
            .await
            .unwrap()
    );
}

async fn updates_and_deletes_of_an_unknown_user_report_false(db: TestDb) {
    insert_user(&db, "alice").await;
    let nobody = UserId::new();
    let roles = Role::parse_all(["admin"]).unwrap();
    assert!(!db.update_user_roles(nobody, &roles, NOW).await.unwrap());
    assert!(!db.update_user_disabled(nobody, true, NOW).await.unwrap());
    assert!(
        !db.update_password_hash(nobody, "x", NOW, true)
            .await
            .unwrap()
    );
    assert!(!db.delete_user(nobody).await.unwrap());
    assert_eq!(db.count_users().await.unwrap(), 1);
}

async fn deleting_a_user_deletes_their_sessions_and_refresh_tokens(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let bob = insert_user(&db, "bob").await;
    let a = session(alice.id, NOW);
    let b = session(bob.id, NOW);
    db.create_session(&a, &token(1)).await.unwrap();
    db.create_session(&b, &token(2)).await.unwrap();

    assert!(db.delete_user(alice.id).await.unwrap());
    assert!(
        !db.delete_user(alice.id).await.unwrap(),
        "deleting twice reports false"
    );
    assert_eq!(db.find_user_by_id(alice.id).await.unwrap(), None);
    assert_eq!(db.find_session(a.id).await.unwrap(), None);
    assert_eq!(db.find_refresh_token(&token(1)).await.unwrap(), None);
    let orphans = db
        .count(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{}'",
            a.id
        ))
        .await;
    assert_eq!(orphans, 0);

    assert_eq!(db.find_session(b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(
        db.find_refresh_token(&token(2)).await.unwrap(),
        Some((b, None))
    );
    assert_eq!(db.find_session(SessionId::new()).await.unwrap(), None);
}

async fn undecodable_user_and_session_rows_are_reported_as_corrupt(db: TestDb) {
    let alice = insert_user(&db, "alice").await;
    let s = session(alice.id, NOW);
    db.create_session(&s, &token(1)).await.unwrap();

    // A bad manual edit of the roles JSON, then of a role name.
    for roles in ["not json", r#"["Admin"]"#] {
        db.execute(&format!(
            "UPDATE users SET roles = '{roles}' WHERE id = '{}'",
            alice.id
        ))
        .await;
        assert_corrupt(db.find_user_by_id(alice.id).await);
        assert_corrupt(db.list_users().await);
    }
    db.execute("UPDATE users SET roles = '[]'").await;
    db.execute("UPDATE users SET username = 'not a username'")
        .await;
    assert_corrupt(db.find_user_by_id(alice.id).await);

    db.execute("UPDATE sessions SET amr = '{'").await;
    assert_corrupt(db.find_session(s.id).await);
    assert_corrupt(db.find_refresh_token(&token(1)).await);
    assert_corrupt(db.list_live_sessions(None, NOW).await);
}

fn assert_corrupt<T: std::fmt::Debug>(r: StoreResult<T>) {
    match r {
        Err(e) => assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e:?}"),
        Ok(v) => panic!("decoded a corrupt row: {v:?}"),
    }
}
