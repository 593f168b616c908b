//! `kill -9` in the middle of a storm of logins, refreshes and user creations, then a restart
//! on the same database. What must hold afterwards:
//! - in the database: no refresh-token family (session) with two unused tokens, no live
//!   session without exactly one, no rotated token whose successor is missing, no user whose
//!   creation was acknowledged missing;
//! - for the clients: every refresh token they hold gets 200 or a clean 400 `invalid_grant`
//!   (never a 5xx), the newest token of each family still works (the rotation was durable,
//!   or its answer was lost and the retry falls in the grace window), and once the grace
//!   window is over no other token of the family works.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tessera_testkit::pg::TestDatabase;

use crate::{
    USER_PASSWORD, admin_token, client, create_user, json, password_grant, refresh_grant, serve,
    serve_with_grace,
};

/// Users that exist before the storm.
const USERS: usize = 4;
/// Tasks that log in once and then refresh in a loop, each holding one family.
const CHAINS: usize = 16;
/// Tasks that log in over and over, each login a new family.
const LOGINS: usize = 2;
/// The storm runs until this many refreshes succeeded (or `STORM_LIMIT` passed).
const TARGET_REFRESHES: usize = 400;
const STORM_LIMIT: Duration = Duration::from_secs(20);

/// Where the test reads the database directly.
enum Db {
    Sqlite(PathBuf),
    Pg(String),
}

impl Db {
    async fn count(&self, sql: &'static str) -> i64 {
        match self {
            Self::Sqlite(path) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
                c.close().await.unwrap();
                n
            }
            Self::Pg(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
                c.close().await.unwrap();
                n
            }
        }
    }

    async fn usernames(&self) -> HashSet<String> {
        const SQL: &str = "SELECT username FROM users";
        let names: Vec<String> = match self {
            Self::Sqlite(path) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                sqlx::query_scalar(SQL).fetch_all(&mut c).await.unwrap()
            }
            Self::Pg(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(SQL).fetch_all(&mut c).await.unwrap()
            }
        };
        names.into_iter().collect()
    }

    /// The refresh-token invariants; `when` says at which point of the test they are checked.
    async fn assert_invariants(&self, when: &str) {
        let two_live = self
            .count(
                "SELECT COUNT(*) FROM (SELECT session_id FROM refresh_tokens WHERE used_at IS NULL
                 GROUP BY session_id HAVING COUNT(*) > 1) AS families",
            )
            .await;
        assert_eq!(
            two_live, 0,
            "{when}: families with two or more unused refresh tokens"
        );
        let live_without_token = self
            .count(
                "SELECT COUNT(*) FROM sessions s WHERE s.revoked_at IS NULL AND (SELECT COUNT(*)
                 FROM refresh_tokens r WHERE r.session_id = s.id AND r.used_at IS NULL) <> 1",
            )
            .await;
        assert_eq!(
            live_without_token, 0,
            "{when}: live sessions without exactly one unused refresh token"
        );
        let lost_successors = self
            .count(
                "SELECT COUNT(*) FROM refresh_tokens a WHERE a.successor_hash IS NOT NULL AND NOT
                 EXISTS (SELECT 1 FROM refresh_tokens b WHERE b.hash = a.successor_hash)",
            )
            .await;
        assert_eq!(
            lost_successors, 0,
            "{when}: rotated refresh tokens whose successor is not stored"
        );
    }
}

/// What the storm's clients ended up holding.
#[derive(Default)]
struct Held {
    /// Each family's refresh tokens in the order the client received them.
    families: Vec<Vec<String>>,
    /// Users whose creation was acknowledged (201).
    created: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_login_and_refresh_storm_loses_nothing_and_leaves_one_live_token_per_family_on_sqlite()
 {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Sqlite(dir.path().join("tessera.db"));
    kill_restart_and_check(dir.path(), None, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_login_and_refresh_storm_loses_nothing_and_leaves_one_live_token_per_family_on_postgres()
 {
    let Some(pg) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Pg(pg.url().to_owned());
    kill_restart_and_check(dir.path(), Some(pg.url()), &db).await;
}

async fn kill_restart_and_check(data_dir: &Path, database_url: Option<&str>, db: &Db) {
    let mut server = serve(data_dir, database_url);
    let base = server.base().to_owned();
    let http = client();
    let admin = admin_token(&http, &base).await;
    let users: Vec<String> = (0..USERS).map(|i| format!("storm-{i}")).collect();
    for res in
        futures_util::future::join_all(users.iter().map(|u| create_user(&http, &base, &admin, u)))
            .await
    {
        assert_eq!(res.unwrap().status(), 201);
    }

    let refreshes = Arc::new(AtomicUsize::new(0));
    let logins = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CHAINS {
        let (http, base, n) = (http.clone(), base.clone(), Arc::clone(&refreshes));
        let user = users[i % USERS].clone();
        tasks.push(tokio::spawn(async move {
            refresh_chain(&http, &base, &user, &n).await
        }));
    }
    for i in 0..LOGINS {
        let (http, base, n) = (http.clone(), base.clone(), Arc::clone(&logins));
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            login_loop(&http, &base, &users, i, &n).await
        }));
    }
    let creator = {
        let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
        tokio::spawn(async move { create_loop(&http, &base, &admin).await })
    };

    let start = Instant::now();
    while refreshes.load(Ordering::Relaxed) < TARGET_REFRESHES && start.elapsed() < STORM_LIMIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL: no graceful shutdown, no pool close, requests in flight are cut.
    server.kill();
    let (done_refreshes, done_logins) = (
        refreshes.load(Ordering::Relaxed),
        logins.load(Ordering::Relaxed),
    );
    let mut held = Held::default();
    for t in tasks {
        held.families.extend(t.await.unwrap());
    }
    held.created = creator.await.unwrap();
    eprintln!(
        "storm: {done_refreshes} refreshes and {done_logins} logins answered in {:?} before kill -9; {} users created; {} families held",
        start.elapsed(),
        held.created.len(),
        held.families.len()
    );
    assert!(
        done_refreshes >= 50,
        "the storm was too weak to mean anything ({done_refreshes} refreshes)"
    );

    let server = serve(data_dir, database_url);
    let base = server.base().to_owned();
    db.assert_invariants("after the restart").await;

    // No lost user: every user that existed or whose creation was acknowledged is there.
    let stored = db.usernames().await;
    for u in users.iter().chain(&held.created) {
        assert!(stored.contains(u), "user {u} was lost in the crash");
    }
    for u in &users {
        let res = password_grant(&http, &base, u, USER_PASSWORD)
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{u} can still log in");
    }

    // Every refresh token the clients hold: the newest of each family first.
    let started = Instant::now();
    let mut presented = 0;
    let mut successors = Vec::new();
    for family in held.families.iter().filter(|f| !f.is_empty()) {
        let (newest, older) = family.split_last().unwrap();
        let (status, body) = present(&http, &base, newest).await;
        presented += 1;
        assert_eq!(
            status, 200,
            "the newest refresh token of a family works after the restart: {body}"
        );
        let successor = body["refresh_token"].as_str().unwrap().to_owned();
        successors.push((older, successor));
    }
    // Within the grace window an older token gets its chain's newest. Past it, as a thief
    // replaying a stolen token later would be: restarted without one (SIGKILL again).
    drop(server);
    let server = serve_with_grace(data_dir, database_url, "0");
    let base = server.base().to_owned();
    for (older, successor) in successors {
        // The others are spent: each is refused cleanly (the first one is a replay, which
        // revokes the family), and then the successor just issued is dead too.
        for token in older.iter().rev() {
            let (status, body) = present(&http, &base, token).await;
            presented += 1;
            assert_eq!(status, 400, "a spent refresh token is refused: {body}");
        }
        if !older.is_empty() {
            let (status, body) = present(&http, &base, &successor).await;
            presented += 1;
            assert_eq!(
                status, 400,
                "after a replay no token of the family works: {body}"
            );
        }
    }
    eprintln!(
        "presented {presented} refresh tokens after the restart in {:?}",
        started.elapsed()
    );
    db.assert_invariants("after every held token was presented")
        .await;
}

/// Presents a refresh token: the status, and the body, which must be a token response or an
/// RFC 6749 §5.2 `invalid_grant` error, never anything else.
async fn present(http: &reqwest::Client, base: &str, token: &str) -> (u16, serde_json::Value) {
    let res = refresh_grant(http, base, token).await.unwrap();
    let status = res.status().as_u16();
    let body = json(res).await;
    match status {
        200 => assert!(body["refresh_token"].is_string(), "{body}"),
        400 => assert_eq!(body["error"], "invalid_grant", "{body}"),
        other => panic!("a refresh after the restart answered {other}: {body}"),
    }
    (status, body)
}

/// Logs in as `user`, then refreshes until the server goes away. Every answer the server
/// gives before the kill must be a success.
async fn refresh_chain(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    count: &AtomicUsize,
) -> Vec<Vec<String>> {
    let mut tokens = Vec::new();
    let Some(first) = answer(password_grant(http, base, user, USER_PASSWORD).await).await else {
        return vec![tokens];
    };
    tokens.push(first);
    loop {
        let current = tokens.last().unwrap().clone();
        match answer(refresh_grant(http, base, &current).await).await {
            Some(next) => {
                tokens.push(next);
                count.fetch_add(1, Ordering::Relaxed);
            }
            None => return vec![tokens],
        }
    }
}

/// Logs in again and again (a new family each time) until the server goes away.
async fn login_loop(
    http: &reqwest::Client,
    base: &str,
    users: &[String],
    offset: usize,
    count: &AtomicUsize,
) -> Vec<Vec<String>> {
    let mut families = Vec::new();
    for i in offset.. {
        let user = &users[i % users.len()];
        match answer(password_grant(http, base, user, USER_PASSWORD).await).await {
            Some(token) => {
                families.push(vec![token]);
                count.fetch_add(1, Ordering::Relaxed);
            }
            None => break,
        }
    }
    families
}

/// Creates users until the server goes away; the names whose creation was acknowledged.
async fn create_loop(http: &reqwest::Client, base: &str, admin: &str) -> Vec<String> {
    let mut created = Vec::new();
    for i in 0.. {
        let name = format!("created-{i}");
        let Ok(res) = create_user(http, base, admin, &name).await else {
            break;
        };
        let status = res.status();
        let Ok(body) = res.text().await else { break };
        assert_eq!(status, 201, "user creation during the storm: {body}");
        created.push(name);
    }
    created
}

/// The refresh token of a token response, or `None` when the server was killed before the
/// answer arrived whole. Any answer that did arrive must be a success.
async fn answer(res: reqwest::Result<reqwest::Response>) -> Option<String> {
    let res = res.ok()?;
    let status = res.status();
    let text = res.text().await.ok()?;
    assert_eq!(status, 200, "during the storm: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(body["refresh_token"].as_str()?.to_owned())
}
