//! Fixtures shared by every conformance test: a fresh database per test on each backend,
//! raw SQL access for tampering, builders for domain values, and the `conformance!` macro
//! that instantiates one test body per backend. No store tests here (one self-check of the
//! URL helpers at the bottom).
//!
//! - SQLite: a new file in a `TempDir` opened with `Database::open_sqlite`; always runs.
//! - PostgreSQL: connects to the admin URL in `TESSERA_TEST_DATABASE_URL` (default
//!   [`DEFAULT_ADMIN_URL`]), creates `tessera_test_<random hex>`, runs the test against it
//!   through `Database::connect`, and drops it afterwards, also when the test fails (a
//!   `Drop` guard). The database is created with an ICU linguistic collation (`en-US`)
//!   when the server supports it, because that is what production servers initialised
//!   with an `en_US.UTF-8` locale look like, and anything that sorts text must not depend
//!   on it. Loopback URLs that choose no `sslmode` connect without TLS (see
//!   `without_loopback_tls`). When PostgreSQL does not answer, the postgres variants print a notice to
//!   stderr and pass, unless `TESSERA_REQUIRE_POSTGRES=1` (CI), where they fail.

use std::future::Future;
use std::io::Write as _;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{AssertSqlSafe, Connection as _};
use tessera_auth::model::{
    AuditEvent, Role, Session, SessionId, StoredKey, User, UserId, Username,
};
use tessera_auth::store::{RotateRequest, UserStore as _};
use tessera_store::Database;

/// Where PostgreSQL is expected when `TESSERA_TEST_DATABASE_URL` is unset.
pub(crate) const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fixed "now" (Unix seconds); tests move time by adding to it, never by reading a clock.
pub(crate) const NOW: i64 = 1_700_000_000;
/// Idle lifetime given to sessions and rotations.
pub(crate) const IDLE_TTL: i64 = 3_600;
/// Absolute lifetime given to sessions.
pub(crate) const ABSOLUTE_TTL: i64 = 86_400;
/// Refresh grace window used by `rotate`.
pub(crate) const GRACE: i64 = 30;
/// How long revocation events live in these tests.
pub(crate) const EVENT_TTL: i64 = 900;

/// Generates `sqlite::<name>` and `postgres::<name>` tokio tests for every listed
/// `async fn <name>(db: TestDb)` of the calling module.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::on_sqlite(super::$name).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::on_postgres(super::$name).await;
                }
            )+
        }
    };
}
pub(crate) use conformance;

/// A fresh, migrated database for one test: derefs to [`Database`] (so every store trait
/// method is callable on it) and offers raw SQL on the same database, outside the store.
#[derive(Debug, Clone)]
pub(crate) struct TestDb {
    db: Database,
    raw: Raw,
    /// Where the database is, to open it again.
    location: Location,
}

#[derive(Debug, Clone)]
enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, Clone)]
enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Deref for TestDb {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

impl TestDb {
    /// The store handle itself (to move into spawned tasks).
    pub(crate) fn database(&self) -> Database {
        self.db.clone()
    }

    /// Opens the same database again as a new [`Database`], which runs the migrations not
    /// recorded as applied (as a new version of the server does at its first start).
    pub(crate) async fn reopened(&self) -> Database {
        match &self.location {
            Location::Sqlite(path) => Database::open_sqlite(path).await.unwrap(),
            Location::Postgres(url) => Database::connect(url, 2).await.unwrap(),
        }
    }

    /// Runs a statement directly on the database (as an operator or attacker with SQL
    /// access would) and returns the number of rows it touched.
    pub(crate) async fn execute(&self, sql: &str) -> u64 {
        let sql = AssertSqlSafe(sql.to_owned());
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
            Raw::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
        }
    }

    /// Runs a statement directly and returns the database's error message, which it must
    /// produce.
    pub(crate) async fn execute_err(&self, sql: &str) -> String {
        let sql = AssertSqlSafe(sql.to_owned());
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.unwrap_err(),
            Raw::Postgres(pool) => sqlx::query(sql).execute(pool).await.unwrap_err(),
        }
        .to_string()
    }

    /// Drops the audit log's append-only triggers, as someone with the database owner's
    /// privileges could, so that tests can tamper with rows.
    pub(crate) async fn drop_audit_guards(&self) {
        match &self.raw {
            Raw::Sqlite(_) => {
                self.execute("DROP TRIGGER audit_log_no_update").await;
                self.execute("DROP TRIGGER audit_log_no_delete").await;
            }
            Raw::Postgres(_) => {
                self.execute("DROP TRIGGER audit_log_no_change ON audit_log")
                    .await;
                self.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
                    .await;
            }
        }
    }

    /// Runs a `SELECT COUNT(*) ...` directly on the database.
    pub(crate) async fn count(&self, sql: &str) -> i64 {
        let sql = AssertSqlSafe(sql.to_owned());
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Raw::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }
}

/// Runs `test` against a fresh SQLite database file.
pub(crate) async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let db = Database::open_sqlite(&path).await.unwrap();
    let raw = sqlite_side_pool(&path);
    test(TestDb {
        db: db.clone(),
        raw: Raw::Sqlite(raw.clone()),
        location: Location::Sqlite(path.clone()),
    })
    .await;
    raw.close().await;
    db.close().await;
    drop(dir);
}

/// A second, independent pool on the same SQLite file (the store's pool is private).
fn sqlite_side_pool(path: &Path) -> SqlitePool {
    SqlitePool::connect_lazy_with(
        SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(5)),
    )
}

/// Runs `test` against a fresh PostgreSQL database, or skips it (see the module docs).
pub(crate) async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some((admin_url, mut admin)) = admin_connection().await else {
        return;
    };
    let name = format!("tessera_test_{}", uuid::Uuid::now_v7().simple());
    create_database(&mut admin, &name).await;
    // Armed from here on: a panic anywhere below drops the database on unwind.
    let guard = DropDatabase {
        admin_url: admin_url.clone(),
        name: name.clone(),
        armed: true,
    };
    admin.close().await.ok();

    let url = with_database(&admin_url, &name);
    let db = Database::connect(&url, 5).await.unwrap();
    let raw = db.pg_pool().unwrap().clone();
    test(TestDb {
        db: db.clone(),
        raw: Raw::Postgres(raw),
        location: Location::Postgres(url),
    })
    .await;
    db.close().await;
    guard.now().await;
}

/// Set once PostgreSQL was found unreachable, so later tests skip without waiting again.
static PG_UNREACHABLE: AtomicBool = AtomicBool::new(false);
/// Set once the skip notice was printed.
static PG_NOTICE_PRINTED: AtomicBool = AtomicBool::new(false);

/// Connects to the admin database, or decides to skip (or fail, when required).
async fn admin_connection() -> Option<(String, PgConnection)> {
    let url =
        std::env::var("TESSERA_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
    let url = without_loopback_tls(&url);
    let required = std::env::var("TESSERA_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let error = if PG_UNREACHABLE.load(Ordering::Relaxed) {
        "unreachable (see the first skipped test)".to_owned()
    } else {
        match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await {
            Ok(Ok(conn)) => return Some((url, conn)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5 s".to_owned(),
        }
    };
    PG_UNREACHABLE.store(true, Ordering::Relaxed);
    let shown = redact(&url);
    assert!(
        !required,
        "TESSERA_REQUIRE_POSTGRES=1 but PostgreSQL is not reachable at {shown}: {error}"
    );
    if !PG_NOTICE_PRINTED.swap(true, Ordering::Relaxed) {
        // Straight to the process's stderr: `eprintln!` would be captured by the test
        // harness and never shown for a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "\n{bar}\nSKIPPED: PostgreSQL not reachable at {shown} ({error}).\n\
             Every `postgres::` store conformance test passes WITHOUT RUNNING.\n\
             Set TESSERA_TEST_DATABASE_URL to an admin URL of a server that may create \
             databases,\nor TESSERA_REQUIRE_POSTGRES=1 to make this a failure.\n{bar}\n",
            bar = "!".repeat(78),
        );
    }
    None
}

/// Creates the database, with an ICU linguistic collation when the server can.
async fn create_database(admin: &mut PgConnection, name: &str) {
    let icu = format!(
        r#"CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"#
    );
    if sqlx::query(AssertSqlSafe(icu))
        .execute(&mut *admin)
        .await
        .is_ok()
    {
        return;
    }
    // PostgreSQL < 15 or built without ICU: the server's default collation.
    sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut *admin)
        .await
        .unwrap();
}

/// Drops a test database when dropped, unless [`DropDatabase::now`] already did.
struct DropDatabase {
    admin_url: String,
    name: String,
    armed: bool,
}

impl DropDatabase {
    async fn now(mut self) {
        drop_database(&self.admin_url, &self.name).await;
        self.armed = false;
    }
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Reached while unwinding out of a failed test, inside its runtime: clean up on a
        // thread of our own with its own runtime, and wait for it.
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&url, &name));
            }
        });
        let _ = cleanup.join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    let dropped = async {
        let mut admin = PgConnection::connect(admin_url).await?;
        // The pool's sessions end shortly after it closes. `DROP ... WITH (FORCE)` would
        // terminate them anyway, but then waits in 100 ms steps for them to go; waiting
        // here first keeps each test's cleanup at a few milliseconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let sessions: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(name)
                    .fetch_one(&mut admin)
                    .await?;
            if sessions == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        sqlx::query(AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await
    };
    if let Err(e) = dropped.await {
        let _ = writeln!(
            std::io::stderr(),
            "warning: could not drop test database {name}: {e}"
        );
    }
}

/// `admin_url` with its database name replaced by `name` (query parameters kept).
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[host_start..].find('/') {
        Some(slash) => &base[..host_start + slash],
        None => base,
    };
    format!("{root}/{name}{query}")
}

/// Adds `sslmode=disable` to a URL for this machine that does not choose a mode: TLS over
/// loopback protects nothing, and an unoptimized TLS handshake costs ~100 ms per connection,
/// several times per test. Any other URL is left alone.
fn without_loopback_tls(url: &str) -> String {
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let authority = url[host_start..].split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let loopback = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|h| host_port == *h || host_port.starts_with(&format!("{h}:")));
    if !loopback || url.contains("sslmode=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}sslmode=disable")
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some(host_start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[host_start..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!(
                "{}{}:***{}",
                &url[..host_start],
                &rest[..colon],
                &rest[at..]
            )
        }
        _ => url.to_owned(),
    }
}

// ---- builders -------------------------------------------------------------------------

/// A user named `name` with role `user`, created at [`NOW`].
pub(crate) fn user(name: &str) -> User {
    User {
        id: UserId::new(),
        username: Username::parse(name).unwrap(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$hash-of-{name}"),
        roles: Role::parse_all(["user"]).unwrap(),
        disabled: false,
        totp_enabled: false,
        created_at: NOW,
        updated_at: NOW,
        password_changed_at: NOW,
    }
}

/// Inserts [`user`]`(name)` and returns it.
pub(crate) async fn insert_user(db: &Database, name: &str) -> User {
    let u = user(name);
    db.insert_user(&u).await.unwrap();
    u
}

/// A session of `user` created at `created_at` with the standard lifetimes.
pub(crate) fn session(user: UserId, created_at: i64) -> Session {
    session_with(
        user,
        created_at,
        created_at + IDLE_TTL,
        created_at + ABSOLUTE_TTL,
    )
}

/// A session with explicit expiries.
pub(crate) fn session_with(
    user: UserId,
    created_at: i64,
    idle_expires_at: i64,
    absolute_expires_at: i64,
) -> Session {
    Session {
        id: SessionId::new(),
        user_id: user,
        client_id: "tessera-web".into(),
        scope: "openid profile".into(),
        amr: vec!["pwd".into(), "otp".into()],
        created_at,
        last_used_at: created_at,
        idle_expires_at,
        absolute_expires_at,
        revoked_at: None,
        revoke_reason: None,
        ip: Some("2001:db8::7".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) — «test»".into()),
    }
}

/// A distinct refresh-token hash per `n`.
pub(crate) fn token(n: u8) -> [u8; 32] {
    let mut h = [n; 32];
    h[0] = 0xA5;
    h
}

/// A rotation of `parent` into `successor` at `now` with the standard grace and TTLs.
pub(crate) fn rotate(parent: [u8; 32], successor: [u8; 32], now: i64) -> RotateRequest {
    RotateRequest {
        parent_hash: parent,
        successor_hash: successor,
        now,
        grace_secs: GRACE,
        idle_ttl_secs: IDLE_TTL,
        revocation_expires_at: now + EVENT_TTL,
        client_id: "tessera-web".into(),
    }
}

/// An audit event.
pub(crate) fn audit_event(at: i64, event: &str, user_id: Option<&str>) -> AuditEvent {
    AuditEvent {
        at,
        event: event.into(),
        outcome: "success".into(),
        user_id: user_id.map(Into::into),
        username: user_id.map(|u| format!("name-of-{u}")),
        client_id: Some("tessera-web".into()),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("curl/8.5.0".into()),
        request_id: Some(format!("req-{at}-{event}")),
        detail: serde_json::json!({ "reason": "test", "n": at }),
    }
}

/// A signing key created at `created_at`.
pub(crate) fn key(kid: &str, created_at: i64) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        alg: "ES256".into(),
        sealed_private_key: vec![0, 1, 2, 254, 255, 0, 42],
        public_jwk: format!(r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"AA","y":"BB"}}"#),
        created_at,
        activates_at: created_at + 60,
        retires_at: None,
        expires_at: None,
        revoked_at: None,
    }
}

#[test]
fn admin_url_is_rewritten_to_the_test_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/db?sslmode=disable", "t1"),
        "postgresql://u:p@h/t1?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "t1"),
        "postgres://h:5432/t1"
    );
    assert_eq!(
        without_loopback_tls("postgres://postgres@127.0.0.1:5432/postgres"),
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    );
    assert_eq!(
        without_loopback_tls("postgres://u:p@localhost/db?application_name=x"),
        "postgres://u:p@localhost/db?application_name=x&sslmode=disable"
    );
    assert_eq!(
        without_loopback_tls("postgres://u@127.0.0.1/db?sslmode=require"),
        "postgres://u@127.0.0.1/db?sslmode=require"
    );
    assert_eq!(
        without_loopback_tls("postgres://u@db.internal/x"),
        "postgres://u@db.internal/x"
    );
    assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("postgres://u@h:5432/db"), "postgres://u@h:5432/db");
}
