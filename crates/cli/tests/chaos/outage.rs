//! The SQLite database stops accepting writes while the server runs.
//!
//! How the outage is made: another process's connection takes SQLite's write lock
//! (`BEGIN EXCLUSIVE`) and keeps it, as a long `VACUUM`, a backup tool or a forgotten
//! `sqlite3` shell does. Every write of the server then waits out the busy timeout and fails
//! with `SQLITE_BUSY`. Making the file unreadable does not work: `chmod 000` and moving the
//! file away leave the server's open descriptors (and the WAL's shared memory) working, so
//! nothing fails until a new connection is opened, which the pool rarely needs.

use std::time::Duration;

use sqlx::Connection as _;

use crate::{
    ADMIN_PASSWORD, assert_unavailable, client, json, password_grant, refresh_grant, serve, within,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_sqlite_refuses_writes_tokens_verify_logins_get_503_and_service_recovers_without_a_restart()
 {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), None);
    let base = server.base().to_owned();
    let http = client();
    let res = password_grant(&http, &base, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t = json(res).await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();

    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("tessera.db"));
    let mut holder = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();

    let me = async {
        http.get(format!("{base}/users/me"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
    };
    let healthz = async { http.get(format!("{base}/healthz")).send().await.unwrap() };
    let readyz = async { http.get(format!("{base}/readyz")).send().await.unwrap() };
    let login = async {
        password_grant(&http, &base, "admin", ADMIN_PASSWORD)
            .await
            .unwrap()
    };
    let refreshed = async { refresh_grant(&http, &base, &refresh).await.unwrap() };
    let (me, healthz, readyz, login, refreshed) =
        tokio::join!(me, healthz, readyz, login, refreshed);

    assert_eq!(me.status(), 200, "verification is served from memory");
    assert_eq!(healthz.status(), 200, "the process is alive");
    assert_eq!(readyz.status(), 503, "not ready while writes fail");
    for (what, res) in [("login", login), ("refresh", refreshed)] {
        assert_unavailable(what, res).await;
    }

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();

    let took = within(Duration::from_secs(15), || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    eprintln!("ready again {took:?} after the write lock was released");
    let res = password_grant(&http, &base, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "logins work again");
    let res = refresh_grant(&http, &base, &refresh).await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "the refresh token that met the outage is unchanged and still works"
    );
    drop(server);
}
