//! `tessera-store`: SQLite and PostgreSQL implementations of `tessera-auth`'s storage traits.
//!
//! One set of SQL statements serves both backends (`$n` placeholders work on both, times are
//! integers, ids are text), instantiated per backend by a macro so each gets concrete,
//! non-boxed code; only transaction start and one lock differ. SQLite (embedded, one
//! file) is the zero-configuration default; PostgreSQL serves several instances sharing one
//! database. There is deliberately no `Any` driver (it cannot decode every type and hides
//! per-backend behaviour).
//!
//! Migrations are embedded and run at start: PostgreSQL takes an advisory lock so
//! concurrent starts are safe; SQLite's file lock serializes them.
//!
//! Logs read by id cursor (revocation events, the audit chain) must never show an id
//! before every smaller id is committed. SQLite has one writer at a time; on PostgreSQL
//! audit appends take an advisory lock, and revocation-event inserts take another from a
//! trigger (migration 0003), always as the transaction's last lock.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Column as _, Connection, FromRow, Row};
use tessera_auth::model::{
    Attempt, AuditEvent, AuditRecord, Client, ClientId, MfaChallenge, RevocationEvent,
    RevocationKind, Role, Session, SessionId, StoredKey, Throttle, TotpState, User, UserId,
    Username,
};
use tessera_auth::security::SecurityPolicy;
use tessera_auth::store::{
    AuditStore, ChainFn, ClientStore, KeyStore, MetaStore, RevocationStore, RotateGuard,
    RotateOutcome, RotateRequest, SecurityStore, SessionStore, Store, StoreError, StoreErrorKind,
    StoreResult, StoredLogin, UserStore,
};

mod rows;

use rows::{AuditRow, ClientRow, KeyRow, RevocationRow, SessionRow, TokenRow, UserRow};

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The one connection every write runs on (why: `Database::sqlite_with`).
    writer: SqliteWriter,
}

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// The one SQLite connection every write transaction runs on, one turn at a time.
///
/// SQLite has one writer at a time: with several connections racing for the lock, the
/// losers sleep in SQLite's busy handler (1, 2, 5, 10… ms) and a refresh storm turns into a
/// sleeping contest (p99 323 ms, measured). So write transactions queue for this connection
/// first, fairly (`tokio::sync::Mutex` is first-in first-out) and without sleeping.
///
/// It is held here, not in a one-connection pool: sqlx-core 0.9 pings every pooled
/// connection when it is released (`Floating::return_to_pool`; no option turns it off),
/// which is a spawned task and a round trip to the connection's thread after every write,
/// and the writer is unavailable until that task has run. What the ping was for is kept:
/// - commands reach the connection's thread in order, so the rollback that a dropped
///   `Transaction` queues runs before the next turn's `BEGIN`;
/// - a turn that did not commit (an error, a dropped request, an early return) leaves the
///   connection unverified, and the next turn pings it first. A connection whose thread has
///   stopped (sqlx stops it when a rollback fails), or that sqlx still counts as inside a
///   transaction SQLite already ended (a full disk), is then replaced.
/// - a raw batch (its own `BEGIN IMMEDIATE` … `COMMIT`, which sqlx does not count) that
///   failed, or whose task stopped half-way, takes the connection with it
///   ([`SqliteTurn::discard`], and `SqliteTurn`'s `Drop`): the ping cannot see its
///   transaction.
#[derive(Debug, Clone)]
struct SqliteWriter {
    slot: Arc<tokio::sync::Mutex<WriterSlot>>,
    opts: Arc<SqliteConnectOptions>,
}

#[derive(Debug)]
enum WriterSlot {
    /// `verified`: the last turn committed, or a ping since has answered.
    Open {
        conn: SqliteConnection,
        verified: bool,
    },
    /// Closed after a failed raw batch (closing rolls its transaction back), or its ping
    /// failed: the next turn connects again.
    Lost,
    /// [`Database::close`] ran.
    Closed,
}

/// How long closing a connection may take before it is abandoned (its thread still
/// finishes the close; nothing waits for it).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteWriter {
    /// Opens the connection and migrates the database on it.
    async fn connect(opts: SqliteConnectOptions) -> StoreResult<Self> {
        let mut conn = SqliteConnection::connect_with(&opts)
            .await
            .map_err(map_err)?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e))?;
        Ok(Self {
            slot: Arc::new(tokio::sync::Mutex::new(WriterSlot::Open {
                conn,
                verified: true,
            })),
            opts: Arc::new(opts),
        })
    }

    /// Waits for the turn to write (bounded like a pool acquire), with a connection that
    /// answers.
    async fn turn(&self) -> StoreResult<SqliteTurn> {
        let mut slot = tokio::time::timeout(ACQUIRE_TIMEOUT, Arc::clone(&self.slot).lock_owned())
            .await
            .map_err(|_| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    "timed out waiting for the database write lock",
                )
            })?;
        if let WriterSlot::Open { conn, verified } = &mut *slot
            && !*verified
        {
            // Answering is not enough: when SQLite ends a transaction by itself (SQLITE_FULL,
            // SQLITE_IOERR and the like roll it back), the rollback sqlx queues for the
            // dropped `Transaction` fails with "no transaction is active", sqlx keeps its
            // depth at 1, and it would refuse every later `BEGIN` on this connection. The
            // ping is queued after that rollback, so the depth read here is settled.
            if conn.ping().await.is_ok() && !conn.is_in_transaction() {
                *verified = true;
            } else if let WriterSlot::Open { conn, .. } =
                std::mem::replace(&mut *slot, WriterSlot::Lost)
            {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close_hard()).await;
            }
        }
        if matches!(*slot, WriterSlot::Lost) {
            let conn = SqliteConnection::connect_with(&self.opts)
                .await
                .map_err(map_err)?;
            *slot = WriterSlot::Open {
                conn,
                verified: true,
            };
        }
        Ok(SqliteTurn { slot, raw: false })
    }

    /// Runs `batch`, a raw batch that opens and commits its own transaction (`BEGIN
    /// IMMEDIATE` … `COMMIT`, out of sqlx's sight), in one command to the connection's
    /// thread, and returns every row its statements gave. It runs in a task of its own, so a
    /// dropped caller cannot stop it between statements; `fetch_all` drains it (a stream
    /// dropped early stops a batch where it is). After an error, or if the task stops
    /// half-way, the connection is closed, which rolls the transaction back, and the next
    /// turn opens another ([`SqliteTurn::raw_conn`]).
    async fn raw_batch(
        &self,
        batch: sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> StoreResult<Vec<sqlx::sqlite::SqliteRow>> {
        let writer = self.clone();
        tokio::spawn(async move {
            let mut turn = writer.turn().await?;
            match batch.fetch_all(turn.raw_conn()?).await {
                Ok(rows) => {
                    turn.committed();
                    Ok(rows)
                }
                Err(e) => {
                    turn.discard().await;
                    Err(map_err(e))
                }
            }
        })
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Other, e))?
    }

    /// Waits for the current turn, then closes the connection for good. A writer lost since
    /// its last turn is opened again to be closed: the last connection to close must be a
    /// read-write one, or the WAL is neither checkpointed nor removed (a read-only
    /// connection can do neither), and a backup that copies only the database file after a
    /// clean shutdown would miss what the WAL holds.
    async fn close(&self) {
        let mut slot = self.slot.lock().await;
        let conn = match std::mem::replace(&mut *slot, WriterSlot::Closed) {
            WriterSlot::Open { conn, .. } => Some(conn),
            WriterSlot::Lost => {
                tokio::time::timeout(CLOSE_TIMEOUT, SqliteConnection::connect_with(&self.opts))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            WriterSlot::Closed => None,
        };
        if let Some(conn) = conn {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
        }
    }
}

/// The turn to write on SQLite: the writer connection, until dropped.
struct SqliteTurn {
    slot: tokio::sync::OwnedMutexGuard<WriterSlot>,
    /// A raw batch ([`Self::raw_conn`]) may have left its own transaction open: set until
    /// [`Self::committed`] or [`Self::discard`].
    raw: bool,
}

impl Drop for SqliteTurn {
    /// A turn dropped while a raw batch's transaction may be open (its task panicked, or was
    /// dropped by a runtime shutting down, between `BEGIN IMMEDIATE` and `COMMIT`) takes
    /// the connection with it: sqlx does not count a `BEGIN` it did not send
    /// (`is_in_transaction`), so the next turn's check would pass, and its writes would go
    /// into that transaction, never to commit, with SQLite's write lock held against every
    /// other process. Dropped, the connection closes on its own thread once what is queued
    /// there has run, which rolls the transaction back; the next turn opens another.
    fn drop(&mut self) {
        if self.raw && matches!(*self.slot, WriterSlot::Open { .. }) {
            *self.slot = WriterSlot::Lost;
        }
    }
}

impl SqliteTurn {
    /// The connection, for a raw batch that opens and commits its own transaction (out of
    /// sqlx's sight): unless the turn then ends with [`Self::committed`] or
    /// [`Self::discard`], dropping it closes the connection (see the `Drop` impl).
    fn raw_conn(&mut self) -> StoreResult<&mut SqliteConnection> {
        self.raw = matches!(*self.slot, WriterSlot::Open { .. });
        self.conn()
    }

    /// The connection, unverified until [`Self::committed`].
    fn conn(&mut self) -> StoreResult<&mut SqliteConnection> {
        match &mut *self.slot {
            WriterSlot::Open { conn, verified } => {
                *verified = false;
                Ok(conn)
            }
            WriterSlot::Lost | WriterSlot::Closed => Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "the database is closed",
            )),
        }
    }

    async fn begin_with(
        &mut self,
        statement: &'static str,
    ) -> StoreResult<sqlx::Transaction<'_, sqlx::Sqlite>> {
        self.conn()?.begin_with(statement).await.map_err(map_err)
    }

    /// Where a single statement writes (it commits on its own): the connection.
    fn writer(&mut self) -> StoreResult<&mut SqliteConnection> {
        self.conn()
    }

    /// The turn's transaction committed: the next turn need not check the connection.
    fn committed(&mut self) {
        self.raw = false;
        if let WriterSlot::Open { verified, .. } = &mut *self.slot {
            *verified = true;
        }
    }

    /// Closes the connection (which rolls back whatever it has open); the next turn opens
    /// another.
    async fn discard(&mut self) {
        if let WriterSlot::Open { conn, .. } = std::mem::replace(&mut *self.slot, WriterSlot::Lost)
        {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
        }
        self.raw = false;
    }
}

/// The turn to write on PostgreSQL: any pooled connection (PostgreSQL runs write
/// transactions concurrently).
struct PgTurn<'a>(&'a PgPool);

impl<'a> PgTurn<'a> {
    async fn begin_with(
        &mut self,
        statement: &'static str,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.0.begin_with(statement).await.map_err(map_err)
    }

    /// Where a single statement writes: the pool.
    fn writer(&mut self) -> StoreResult<&'a PgPool> {
        Ok(self.0)
    }

    fn committed(&mut self) {}
}

impl SqliteStore {
    async fn write_turn(&self) -> StoreResult<SqliteTurn> {
        self.writer.turn().await
    }
}

impl PgStore {
    async fn write_turn(&self) -> StoreResult<PgTurn<'_>> {
        Ok(PgTurn(&self.pool))
    }
}

/// Whichever backend the configuration selected.
#[derive(Debug, Clone)]
pub enum Database {
    /// Embedded SQLite (single instance).
    Sqlite(SqliteStore),
    /// PostgreSQL (many instances).
    Postgres(PgStore),
}

/// How long a query waits for a connection or a lock before reporting "unavailable".
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Database {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    ///
    /// # Errors
    /// [`StoreErrorKind::Unavailable`] if the file cannot be opened; migration failures.
    pub async fn open_sqlite(path: &Path) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(ACQUIRE_TIMEOUT);
        Self::sqlite_with(opts).await
    }

    /// One connection of its own for every write, and a pool of eight read-only connections
    /// for the reads. SQLite writes one transaction at a time anyway (see [`SqliteWriter`]),
    /// and each connection keeps its own page cache, which it drops whenever another
    /// connection has written. Spread over the eight, every write transaction started on a
    /// cold cache and re-read its pages from the file (sqlx hands the idle connections out in
    /// turn); on one connection, the pages it wrote are the ones it finds. Sequential HS256
    /// refresh grants: 397-427 → 350-353 µs of server CPU each, 15.5-16.1 → 13.6-14.0
    /// context switches (AMD guest, docs/BENCHMARKS.md). The pool is opened read-only so that
    /// a write sent to it by mistake fails (and the tests see it) instead of racing the
    /// writer for SQLite's lock in the busy handler.
    async fn sqlite_with(opts: SqliteConnectOptions) -> StoreResult<Self> {
        // First: it creates the file if needed and migrates it.
        let writer = SqliteWriter::connect(opts.clone()).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // No ping on acquire: an embedded database cannot drop a connection, and each
            // ping is a round trip to the connection's thread before every query. (sqlx
            // still pings on release, which flushes a transaction left by a dropped future.)
            .test_before_acquire(false)
            .connect_with(opts.read_only(true))
            .await
            .map_err(map_err)?;
        Ok(Self::Sqlite(SqliteStore { pool, writer }))
    }

    /// Connects to `url`: `postgres://…`/`postgresql://…` or `sqlite:…`, and migrates.
    ///
    /// # Errors
    /// [`StoreErrorKind::Unavailable`] if the database cannot be reached;
    /// [`StoreErrorKind::Other`] for an unsupported URL or a failed migration.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::new(StoreErrorKind::Other, e))?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await
                .map_err(map_err)?;
            sqlx::migrate!("migrations/postgres")
                .run(&pool)
                .await
                .map_err(|e| StoreError::new(StoreErrorKind::Other, e))?;
            Ok(Self::Postgres(PgStore { pool }))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::new(StoreErrorKind::Other, e))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(ACQUIRE_TIMEOUT);
            Self::sqlite_with(opts).await
        } else {
            Err(StoreError::new(
                StoreErrorKind::Other,
                "unsupported database URL: use postgres://... or sqlite:...",
            ))
        }
    }

    /// `sqlite` or `postgres`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Ids of the audit rows after `after`, ascending, at most `limit`. It reads no other
    /// column, so it answers where a row edited outside Tessera (its detail not JSON, its
    /// text not UTF-8, its time text) cannot be decoded, and lets the caller name that row.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn audit_ids(&self, after: i64, limit: u32) -> StoreResult<Vec<i64>> {
        const SQL: &str = "SELECT id FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2";
        match self {
            Self::Sqlite(s) => {
                sqlx::query_scalar(SQL)
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&s.pool)
                    .await
            }
            Self::Postgres(p) => {
                sqlx::query_scalar(SQL)
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&p.pool)
                    .await
            }
        }
        .map_err(map_err)
    }

    /// The PostgreSQL pool, for LISTEN/NOTIFY.
    #[must_use]
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres(p) => Some(&p.pool),
            Self::Sqlite(_) => None,
        }
    }

    /// Closes every connection, waiting for in-flight queries.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => {
                // The writer last: the last connection to close checkpoints the WAL into
                // the database file and removes it, which a read-only one cannot do.
                s.pool.close().await;
                s.writer.close().await;
            }
            Self::Postgres(p) => p.pool.close().await,
        }
    }
}

/// What changed in the shared database, as announced by PostgreSQL `NOTIFY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A revocation event was appended.
    Revocations,
    /// Signing keys changed.
    Keys,
    /// The listening connection was (re)established: notifications sent while it was down
    /// are lost, so re-read everything.
    Reconnected,
}

/// Listens for changes made by other instances (and the CLI) on a shared PostgreSQL
/// database, via `LISTEN`/`NOTIFY` (the triggers are in the migrations).
pub struct ChangeListener {
    pool: PgPool,
    listener: Option<sqlx::postgres::PgListener>,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener")
            .field("connected", &self.listener.is_some())
            .finish()
    }
}

impl ChangeListener {
    /// Waits for the next change. After a connection loss the next call reconnects and
    /// returns [`Change::Reconnected`].
    ///
    /// # Errors
    /// [`StoreErrorKind::Unavailable`] when the database cannot be reached; call again
    /// (after a pause) to retry.
    pub async fn changed(&mut self) -> StoreResult<Change> {
        if self.listener.is_none() {
            let mut l = sqlx::postgres::PgListener::connect_with(&self.pool)
                .await
                .map_err(map_err)?;
            l.listen_all(["tessera_revocations", "tessera_keys"])
                .await
                .map_err(map_err)?;
            self.listener = Some(l);
            return Ok(Change::Reconnected);
        }
        let Some(l) = self.listener.as_mut() else {
            return Ok(Change::Reconnected);
        };
        match l.try_recv().await {
            Ok(Some(n)) if n.channel() == "tessera_keys" => Ok(Change::Keys),
            Ok(Some(_)) => Ok(Change::Revocations),
            // The connection was lost; sqlx reconnects on the next receive.
            Ok(None) => Ok(Change::Reconnected),
            Err(e) => {
                self.listener = None;
                Err(map_err(e))
            }
        }
    }
}

impl Database {
    /// A change listener, for PostgreSQL; `None` for SQLite (a single instance sees its own
    /// writes, and the CLI's are picked up by polling).
    #[must_use]
    pub fn change_listener(&self) -> Option<ChangeListener> {
        self.pg_pool().map(|p| ChangeListener {
            pool: p.clone(),
            listener: None,
        })
    }
}

/// Maps driver errors to the domain's opaque kinds.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    let kind = match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreErrorKind::Conflict,
        // SQLITE_BUSY / SQLITE_LOCKED after the busy timeout; a full disk (SQLITE_FULL,
        // PostgreSQL's 53100: writes work again once space is freed, and reads meanwhile);
        // PostgreSQL connection exceptions (class 08), admin/crash shutdown and "cannot
        // connect now" (57P0x), too many connections (53300), and a database refusing
        // connections (55000).
        sqlx::Error::Database(db)
            if matches!(
                db.code().as_deref(),
                Some(
                    "5" | "6"
                        | "13"
                        | "517"
                        | "53100"
                        | "53300"
                        | "55000"
                        | "57P01"
                        | "57P02"
                        | "57P03"
                )
            ) || db.code().is_some_and(|c| c.starts_with("08")) =>
        {
            StoreErrorKind::Unavailable
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreErrorKind::Unavailable,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => StoreErrorKind::Unavailable,
        sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_) => StoreErrorKind::Corrupt,
        _ => StoreErrorKind::Other,
    };
    StoreError::new(kind, e)
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, format!("stored {what} is invalid"))
}

fn roles_json(roles: &[Role]) -> String {
    serde_json::to_string(roles).unwrap_or_else(|_| "[]".into())
}

/// A list of strings as a JSON array (serializing strings cannot fail).
fn strings_json<S: AsRef<str>>(v: &[S]) -> String {
    let v: Vec<&str> = v.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

/// Sessions that ended this long ago are deleted by `prune`.
const SESSION_RETENTION_SECS: i64 = 7 * 24 * 3600;

/// The columns of a [`UserRow`] (a macro so that `concat!` can use it).
macro_rules! user_columns_sql {
    () => {
        "id, username, password_hash, roles, disabled, created_at, updated_at, password_changed_at, (totp_secret IS NOT NULL) AS totp_enabled"
    };
}
const USER_COLUMNS: &str = user_columns_sql!();

/// Inserts a session and its first refresh token inside the open transaction `$tx`.
macro_rules! insert_session {
    ($tx:ident, $s:ident, $refresh_hash:ident) => {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, client_id, scope, amr, created_at, last_used_at, idle_expires_at,
                                   absolute_expires_at, revoked_at, revoke_reason, ip, user_agent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10, $11)",
        )
        .bind($s.id.to_string())
        .bind($s.user_id.to_string())
        .bind(&$s.client_id)
        .bind(&$s.scope)
        .bind(strings_json(&$s.amr))
        .bind($s.created_at)
        .bind($s.last_used_at)
        .bind($s.idle_expires_at)
        .bind($s.absolute_expires_at)
        .bind(&$s.ip)
        .bind(&$s.user_agent)
        .execute(&mut *$tx)
        .await
        .map_err(map_err)?;
        sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at, used_at, successor_hash) VALUES ($1, $2, $3, NULL, NULL)")
            .bind(&$refresh_hash[..])
            .bind($s.id.to_string())
            .bind($s.created_at)
            .execute(&mut *$tx)
            .await
            .map_err(map_err)?;
    };
}

/// Appends an audit row inside the open transaction `$tx`, chained to the last row's hash
/// (under `$lock` where the backend needs one); evaluates to the new row's id.
macro_rules! append_audit_in {
    ($tx:ident, $e:ident, $chain:ident, $lock:expr) => {{
        if let Some(lock) = $lock {
            sqlx::query(lock).execute(&mut *$tx).await.map_err(map_err)?;
        }
        let prev: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *$tx)
            .await
            .map_err(map_err)?;
        let prev = prev.unwrap_or_else(|| vec![0u8; 32]);
        let hash = $chain(&prev, $e);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, event, outcome, user_id, username, client_id, ip, user_agent, request_id, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind($e.at)
        .bind(&$e.event)
        .bind(&$e.outcome)
        .bind(&$e.user_id)
        .bind(&$e.username)
        .bind(&$e.client_id)
        .bind(&$e.ip)
        .bind(&$e.user_agent)
        .bind(&$e.request_id)
        .bind($e.detail.to_string())
        .bind(&prev)
        .bind(&hash[..])
        .fetch_one(&mut *$tx)
        .await
        .map_err(map_err)?;
        id
    }};
}

/// Records a revocation event (`kind` `session` or `user`) in the transaction `$tx`: the
/// statement every revoking transaction ends with.
macro_rules! revocation_event_in {
    ($tx:ident, $kind:literal, $subject:expr, $now:expr, $expires:expr) => {
        sqlx::query(concat!(
            "INSERT INTO revocation_events (kind, subject, created_at, expires_at) VALUES ('",
            $kind,
            "', $1, $2, $3)"
        ))
        .bind($subject)
        .bind($now)
        .bind($expires)
        .execute(&mut *$tx)
        .await
        .map_err(map_err)?
    };
}

/// Ends every pending MFA challenge of a user in the transaction `$tx` (a password change,
/// a disable or a delete ends the logins half done with the old state).
macro_rules! end_challenges_in {
    ($tx:ident, $user_id:expr, $now:expr) => {
        sqlx::query("UPDATE mfa_challenges SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
            .bind($now)
            .bind($user_id)
            .execute(&mut *$tx)
            .await
            .map_err(map_err)?
    };
}

/// Implements every storage trait for a backend. `$begin` starts a write transaction
/// (SQLite takes the write lock up front with `BEGIN IMMEDIATE` so a transaction never has
/// to upgrade a read lock); `$audit_lock` serializes audit-chain appends across
/// connections (PostgreSQL needs an advisory lock; SQLite's write lock already does it).
macro_rules! sql_store {
    ($store:ident, begin = $begin:literal, ping = $ping:literal, audit_lock = $audit_lock:expr, key_lock = $key_lock:expr) => {
        impl UserStore for $store {
            async fn insert_user(&self, u: &User) -> StoreResult<()> {
                let mut turn = self.write_turn().await?;
                sqlx::query(
                    "INSERT INTO users (id, username, password_hash, roles, disabled, created_at, updated_at, password_changed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(u.id.to_string())
                .bind(u.username.as_str())
                .bind(&u.password_hash)
                .bind(roles_json(&u.roles))
                .bind(u.disabled)
                .bind(u.created_at)
                .bind(u.updated_at)
                .bind(u.password_changed_at)
                .execute(turn.writer()?)
                .await
                .map_err(map_err)?;
                turn.committed();
                Ok(())
            }

            async fn find_user_by_username(&self, username: &Username) -> StoreResult<Option<User>> {
                sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1")))
                    .bind(username.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?
                    .map(User::try_from)
                    .transpose()
            }

            async fn find_user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
                sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")))
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?
                    .map(User::try_from)
                    .transpose()
            }

            async fn list_users(&self) -> StoreResult<Vec<User>> {
                sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users ORDER BY username")))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?
                    .into_iter()
                    .map(User::try_from)
                    .collect()
            }

            async fn count_users(&self) -> StoreResult<u64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn update_user_roles(&self, id: UserId, roles: &[Role], now: i64) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("UPDATE users SET roles = $1, updated_at = $2 WHERE id = $3")
                    .bind(roles_json(roles))
                    .bind(now)
                    .bind(id.to_string())
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn update_user_disabled(&self, id: UserId, disabled: bool, now: i64) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
                    .bind(disabled)
                    .bind(now)
                    .bind(id.to_string())
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn update_password_hash(&self, id: UserId, hash: &str, now: i64, password_changed: bool) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = if password_changed {
                    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2, password_changed_at = $2 WHERE id = $3")
                } else {
                    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                }
                .bind(hash)
                .bind(now)
                .bind(id.to_string())
                .execute(turn.writer()?)
                .await
                .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn rehash_password(&self, id: UserId, old_hash: &str, new_hash: &str, now: i64) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND password_hash = $4")
                    .bind(new_hash)
                    .bind(now)
                    .bind(id.to_string())
                    .bind(old_hash)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id.to_string())
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }
        }

        impl SessionStore for $store {
            async fn create_session(&self, s: &Session, refresh_hash: &[u8; 32]) -> StoreResult<()> {
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                insert_session!(tx, s, refresh_hash);
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(())
            }

            async fn create_session_audited(&self, s: &Session, refresh_hash: &[u8; 32], e: &AuditEvent, chain: ChainFn, clear: &[&str]) -> StoreResult<StoredLogin> {
                self.store_login(s, refresh_hash, e, chain, clear).await
            }

            async fn rotate_refresh_token(&self, req: &RotateRequest) -> StoreResult<RotateOutcome> {
                // The common case, the current token of a live session of this client, in one
                // round trip (see `rotate_current`).
                if let Some((session, user)) = self.rotate_current(req).await? {
                    return Ok(RotateOutcome::Rotated { session, user });
                }
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                // Not rotated: find out why, in a transaction of its own. Nothing has
                // changed: the fast path changes nothing unless it rotates.
                let token: Option<TokenRow> = sqlx::query_as(
                    "SELECT session_id, used_at, successor_hash FROM refresh_tokens WHERE hash = $1",
                )
                .bind(&req.parent_hash[..])
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                let Some(token) = token else {
                    return Ok(RotateOutcome::Invalid("refresh token is invalid or expired"));
                };
                let session: Option<SessionRow> = sqlx::query_as("SELECT * FROM sessions WHERE id = $1")
                    .bind(&token.session_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let Some(session) = session.map(Session::try_from).transpose()? else {
                    return Ok(RotateOutcome::Invalid("refresh token is invalid or expired"));
                };
                if session.client_id != req.client_id {
                    // RFC 6749 §6: another client's token. Not reuse: nothing changes.
                    return Ok(RotateOutcome::Invalid("refresh token was issued to another client"));
                }
                if !session.is_live(req.now) {
                    return Ok(RotateOutcome::Invalid("refresh token is invalid or expired"));
                }
                let Some(rotated_at) = token.used_at else {
                    // Unused, live and this client's, yet not claimed: only if something
                    // changed between `rotate_current` and this transaction. Refuse; not reuse.
                    return Ok(RotateOutcome::Invalid("refresh token is invalid or expired"));
                };
                // Already rotated: a retry within the grace window (same successor, still
                // unused), or reuse.
                let in_window = req.grace_secs > 0
                    && req.now.saturating_sub(rotated_at) <= req.grace_secs
                    && token.successor_hash.as_deref() == Some(&req.successor_hash[..]);
                if in_window {
                    let successor_used: Option<Option<i64>> = sqlx::query_scalar("SELECT used_at FROM refresh_tokens WHERE hash = $1")
                        .bind(&req.successor_hash[..])
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    if let Some(used_at) = successor_used {
                        tx.commit().await.map_err(map_err)?;
                        turn.committed();
                        // A successor used in turn (a request that left before the cookie
                        // or storage was updated, racing one sent after) changes nothing:
                        // the caller follows the chain to its current token.
                        return Ok(match used_at {
                            None => RotateOutcome::GraceRetry(session),
                            Some(_) => RotateOutcome::Superseded(session),
                        });
                    }
                }
                // RFC 9700 §4.14.2: reuse of a rotated token revokes the whole family.
                sqlx::query("UPDATE sessions SET revoked_at = $1, revoke_reason = 'refresh_reuse' WHERE id = $2 AND revoked_at IS NULL")
                    .bind(req.now)
                    .bind(&token.session_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                revocation_event_in!(tx, "session", &token.session_id, req.now, req.revocation_expires_at);
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(RotateOutcome::Reused(Session {
                    revoked_at: Some(req.now),
                    revoke_reason: Some("refresh_reuse".into()),
                    ..session
                }))
            }

            async fn find_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
                sqlx::query_as::<_, SessionRow>("SELECT * FROM sessions WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?
                    .map(Session::try_from)
                    .transpose()
            }

            async fn find_refresh_token(&self, hash: &[u8; 32]) -> StoreResult<Option<(Session, Option<i64>)>> {
                let token: Option<TokenRow> =
                    sqlx::query_as("SELECT session_id, used_at, successor_hash FROM refresh_tokens WHERE hash = $1")
                        .bind(&hash[..])
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                let Some(token) = token else { return Ok(None) };
                let session = sqlx::query_as::<_, SessionRow>("SELECT * FROM sessions WHERE id = $1")
                    .bind(&token.session_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?
                    .map(Session::try_from)
                    .transpose()?;
                Ok(session.map(|s| (s, token.used_at)))
            }

            async fn list_live_sessions(&self, user: Option<UserId>, now: i64) -> StoreResult<Vec<Session>> {
                sqlx::query_as::<_, SessionRow>(
                    "SELECT * FROM sessions
                     WHERE revoked_at IS NULL AND idle_expires_at > $1 AND absolute_expires_at > $1
                       AND ($2 IS NULL OR user_id = $2)
                     ORDER BY created_at DESC, id DESC",
                )
                .bind(now)
                .bind(user.map(|u| u.to_string()))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?
                .into_iter()
                .map(Session::try_from)
                .collect()
            }

            async fn count_live_sessions(&self, now: i64) -> StoreResult<u64> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sessions
                     WHERE revoked_at IS NULL AND idle_expires_at > $1 AND absolute_expires_at > $1",
                )
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn revoke_session(&self, id: SessionId, now: i64, reason: &str, event_expires_at: i64) -> StoreResult<Option<Session>> {
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                let changed = sqlx::query("UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(reason)
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                if changed == 0 {
                    return Ok(None);
                }
                revocation_event_in!(tx, "session", id.to_string(), now, event_expires_at);
                let s = sqlx::query_as::<_, SessionRow>("SELECT * FROM sessions WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .map(Session::try_from)
                    .transpose()?;
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(s)
            }

            async fn revoke_user_sessions(
                &self,
                user: UserId,
                keep: Option<SessionId>,
                now: i64,
                reason: &str,
                event_expires_at: i64,
                revoke_user_tokens: bool,
            ) -> StoreResult<u64> {
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                let keep = keep.map(|k| k.to_string());
                // One statement, and all of it before the first revocation event: on
                // PostgreSQL inserting an event takes the revocation-order lock (migration
                // 0003), which must be the last lock a transaction takes. `RETURNING` also
                // yields exactly the sessions this call revoked, even against a concurrent
                // `revoke_session`.
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = $2
                     WHERE user_id = $3 AND revoked_at IS NULL AND ($4 IS NULL OR id <> $4)
                     RETURNING id",
                )
                .bind(now)
                .bind(reason)
                .bind(user.to_string())
                .bind(&keep)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
                for id in &ids {
                    revocation_event_in!(tx, "session", id, now, event_expires_at);
                }
                if revoke_user_tokens {
                    revocation_event_in!(tx, "user", user.to_string(), now, event_expires_at);
                }
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
            }

            async fn disable_user(&self, user: UserId, now: i64, event_expires_at: i64) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                let user_id = user.to_string();
                let changed = sqlx::query("UPDATE users SET disabled = TRUE, updated_at = $1, totp_pending = NULL WHERE id = $2")
                    .bind(now)
                    .bind(&user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected()
                    == 1;
                if !changed {
                    return Ok(false);
                }
                // Revocation events last, as in `revoke_user_sessions`.
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = 'user_disabled'
                     WHERE user_id = $2 AND revoked_at IS NULL
                     RETURNING id",
                )
                .bind(now)
                .bind(&user_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
                end_challenges_in!(tx, &user_id, now);
                for id in &ids {
                    revocation_event_in!(tx, "session", id, now, event_expires_at);
                }
                revocation_event_in!(tx, "user", &user_id, now, event_expires_at);
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(true)
            }

            async fn change_password(
                &self,
                user: UserId,
                hash: &str,
                now: i64,
                keep: Option<SessionId>,
                event_expires_at: i64,
            ) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                let user_id = user.to_string();
                // The pending enrolment goes too: it was started under the old password.
                let changed = sqlx::query(
                    "UPDATE users SET password_hash = $1, updated_at = $2, password_changed_at = $2, totp_pending = NULL
                     WHERE id = $3",
                )
                .bind(hash)
                .bind(now)
                .bind(&user_id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected()
                    == 1;
                if !changed {
                    return Ok(false);
                }
                let keep = keep.map(|k| k.to_string());
                // As in `revoke_user_sessions`: the revocation events come last (on
                // PostgreSQL they take the revocation-order lock, which must be the last
                // lock a transaction takes).
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = 'password_changed'
                     WHERE user_id = $2 AND revoked_at IS NULL AND ($3 IS NULL OR id <> $3)
                     RETURNING id",
                )
                .bind(now)
                .bind(&user_id)
                .bind(&keep)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
                end_challenges_in!(tx, &user_id, now);
                for id in &ids {
                    revocation_event_in!(tx, "session", id, now, event_expires_at);
                }
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(true)
            }
        }

        impl RevocationStore for $store {
            async fn append_revocation(&self, kind: RevocationKind, subject: &str, created_at: i64, expires_at: i64) -> StoreResult<i64> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query_scalar("INSERT INTO revocation_events (kind, subject, created_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING id")
                    .bind(kind.as_str())
                    .bind(subject)
                    .bind(created_at)
                    .bind(expires_at)
                    .fetch_one(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r)
            }

            async fn revocations_since(&self, after: i64, now: i64, limit: u32) -> StoreResult<Vec<RevocationEvent>> {
                sqlx::query_as::<_, RevocationRow>(
                    "SELECT id, kind, subject, created_at, expires_at FROM revocation_events
                     WHERE id > $1 AND expires_at > $2 ORDER BY id LIMIT $3",
                )
                .bind(after)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?
                .into_iter()
                .map(RevocationEvent::try_from)
                .collect()
            }

            async fn prune(&self, now: i64) -> StoreResult<u64> {
                let mut turn = self.write_turn().await?;
                let events = sqlx::query("DELETE FROM revocation_events WHERE expires_at <= $1")
                    .bind(now)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                let challenges = sqlx::query("DELETE FROM mfa_challenges WHERE expires_at <= $1")
                    .bind(now)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                let throttles = sqlx::query("DELETE FROM login_throttle WHERE locked_until <= $1 AND last_failure_at < $2")
                    .bind(now)
                    .bind(now - 86_400)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                // Rows keyed by a username as typed (`user:<name>`), the form before the
                // keyed hash: the migration deleted those there were, but an instance of an
                // earlier version still running during a rolling upgrade writes more (which
                // that instance still reads: docs/security.md); they must not keep the text
                // (often a mistyped password). A range on the key ('user:' up to 'user;', the
                // next character) walks the primary-key index on both databases, where
                // SQLite scanned the whole table for `LIKE 'user:%'`.
                let plain_names = sqlx::query("DELETE FROM login_throttle WHERE key >= 'user:' AND key < 'user;'")
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                let horizon = now - SESSION_RETENTION_SECS;
                let sessions = sqlx::query(
                    "DELETE FROM sessions WHERE absolute_expires_at < $1 OR idle_expires_at < $1 OR revoked_at < $1",
                )
                .bind(horizon)
                .execute(turn.writer()?)
                .await
                .map_err(map_err)?
                .rows_affected();
                turn.committed();
                Ok(events + sessions + challenges + throttles + plain_names)
            }
        }

        impl KeyStore for $store {
            async fn rotate_signing_key(&self, new: &StoredKey, retain_after_retire: i64, guard: RotateGuard) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                if let Some(lock) = $key_lock {
                    sqlx::query(lock).execute(&mut *tx).await.map_err(map_err)?;
                }
                let now = new.created_at;
                let blocking: i64 = match guard {
                    RotateGuard::Always => 0,
                    RotateGuard::NoPendingKey => sqlx::query_scalar(
                        "SELECT COUNT(*) FROM signing_keys
                         WHERE revoked_at IS NULL AND activates_at > $1 AND (retires_at IS NULL OR retires_at > $1)",
                    )
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?,
                    RotateGuard::NoUsableKey => sqlx::query_scalar(
                        "SELECT COUNT(*) FROM signing_keys
                         WHERE revoked_at IS NULL AND (retires_at IS NULL OR retires_at > $1)
                           AND (expires_at IS NULL OR expires_at > $1)",
                    )
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?,
                };
                if blocking > 0 {
                    return Ok(false);
                }
                // Every key that would still sign once the new one activates retires then:
                // the current signer, and keys scheduled by earlier rotations (an immediate
                // rotation supersedes them; they used to keep their schedule and sign again
                // later). A key that would only have activated after the new one never
                // signed anything, so it leaves the JWKS at once.
                sqlx::query(
                    "UPDATE signing_keys
                     SET retires_at = $1, expires_at = CASE WHEN activates_at > $1 THEN $1 ELSE $2 END
                     WHERE (retires_at IS NULL OR retires_at > $1) AND revoked_at IS NULL
                       AND (expires_at IS NULL OR expires_at > $3)",
                )
                .bind(new.activates_at)
                .bind(new.activates_at.saturating_add(retain_after_retire))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, sealed_private_key, public_jwk, created_at, activates_at, retires_at, expires_at, revoked_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&new.kid)
                .bind(&new.alg)
                .bind(&new.sealed_private_key)
                .bind(&new.public_jwk)
                .bind(new.created_at)
                .bind(new.activates_at)
                .bind(new.retires_at)
                .bind(new.expires_at)
                .bind(new.revoked_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(true)
            }

            async fn insert_signing_key(&self, k: &StoredKey) -> StoreResult<()> {
                let mut turn = self.write_turn().await?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, sealed_private_key, public_jwk, created_at, activates_at, retires_at, expires_at, revoked_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.sealed_private_key)
                .bind(&k.public_jwk)
                .bind(k.created_at)
                .bind(k.activates_at)
                .bind(k.retires_at)
                .bind(k.expires_at)
                .bind(k.revoked_at)
                .execute(turn.writer()?)
                .await
                .map_err(map_err)?;
                turn.committed();
                Ok(())
            }

            async fn list_signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
                Ok(sqlx::query_as::<_, KeyRow>("SELECT * FROM signing_keys ORDER BY created_at, activates_at, kid")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?
                    .into_iter()
                    .map(StoredKey::from)
                    .collect())
            }

            async fn update_signing_key(&self, k: &StoredKey) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("UPDATE signing_keys SET activates_at = $1, retires_at = $2, expires_at = $3, revoked_at = $4 WHERE kid = $5")
                    .bind(k.activates_at)
                    .bind(k.retires_at)
                    .bind(k.expires_at)
                    .bind(k.revoked_at)
                    .bind(&k.kid)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(kid)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }
        }

        impl ClientStore for $store {
            async fn insert_client(&self, c: &Client) -> StoreResult<()> {
                let mut turn = self.write_turn().await?;
                sqlx::query(
                    "INSERT INTO clients (id, secret_hash, scopes, confidential, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(c.id.as_str())
                .bind(&c.secret_hash)
                .bind(strings_json(&c.scopes))
                .bind(c.confidential)
                .bind(c.created_at)
                .execute(turn.writer()?)
                .await
                .map_err(map_err)?;
                turn.committed();
                Ok(())
            }

            async fn find_client(&self, id: &ClientId) -> StoreResult<Option<Client>> {
                sqlx::query_as::<_, ClientRow>("SELECT id, secret_hash, scopes, confidential, created_at FROM clients WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?
                    .map(Client::try_from)
                    .transpose()
            }

            async fn list_clients(&self) -> StoreResult<Vec<Client>> {
                sqlx::query_as::<_, ClientRow>("SELECT id, secret_hash, scopes, confidential, created_at FROM clients ORDER BY id")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?
                    .into_iter()
                    .map(Client::try_from)
                    .collect()
            }

            async fn delete_client(&self, id: &ClientId) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("DELETE FROM clients WHERE id = $1")
                    .bind(id.as_str())
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }
        }

        impl SecurityStore for $store {
            async fn find_totp(&self, user: UserId) -> StoreResult<Option<TotpState>> {
                let row: Option<(Option<Vec<u8>>, Option<Vec<u8>>, i64)> =
                    sqlx::query_as("SELECT totp_secret, totp_pending, totp_last_step FROM users WHERE id = $1")
                        .bind(user.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                Ok(row.map(|(secret, pending, last_step)| TotpState { secret, pending, last_step }))
            }

            async fn set_totp_pending(&self, user: UserId, sealed: &[u8]) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("UPDATE users SET totp_pending = $1 WHERE id = $2")
                    .bind(sealed)
                    .bind(user.to_string())
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn activate_totp(&self, user: UserId, sealed: &[u8], step: i64, recovery_hashes: &[[u8; 32]]) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                let r = sqlx::query(
                    "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $1
                     WHERE id = $2 AND totp_pending = $3",
                )
                .bind(step)
                .bind(user.to_string())
                .bind(sealed)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                    .bind(user.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                for h in recovery_hashes {
                    sqlx::query("INSERT INTO recovery_codes (user_id, code_hash, used_at) VALUES ($1, $2, NULL)")
                        .bind(user.to_string())
                        .bind(&h[..])
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(true)
            }

            async fn disable_totp(&self, user: UserId) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                let r = sqlx::query("UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = 0 WHERE id = $1")
                    .bind(user.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                    .bind(user.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn advance_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1 AND totp_secret IS NOT NULL")
                    .bind(step)
                    .bind(user.to_string())
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn use_recovery_code(&self, user: UserId, hash: &[u8; 32], now: i64) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL")
                    .bind(now)
                    .bind(user.to_string())
                    .bind(&hash[..])
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn count_recovery_codes(&self, user: UserId) -> StoreResult<u64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
                    .bind(user.to_string())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn insert_mfa_challenge(&self, hash: &[u8; 32], c: &MfaChallenge) -> StoreResult<()> {
                let mut turn = self.write_turn().await?;
                sqlx::query(
                    "INSERT INTO mfa_challenges (token_hash, user_id, client_id, scope, created_at, expires_at, attempts, used_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
                )
                .bind(&hash[..])
                .bind(c.user_id.to_string())
                .bind(&c.client_id)
                .bind(&c.scope)
                .bind(c.created_at)
                .bind(c.expires_at)
                .bind(c.attempts)
                .execute(turn.writer()?)
                .await
                .map_err(map_err)?;
                turn.committed();
                Ok(())
            }

            async fn find_mfa_challenge(&self, hash: &[u8; 32], now: i64) -> StoreResult<Option<MfaChallenge>> {
                let row: Option<(String, String, String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT user_id, client_id, scope, created_at, expires_at, attempts FROM mfa_challenges
                     WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                )
                .bind(&hash[..])
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
                row.map(|(user_id, client_id, scope, created_at, expires_at, attempts)| {
                    Ok(MfaChallenge {
                        user_id: UserId::parse(&user_id).map_err(|_| corrupt("challenge user id"))?,
                        client_id,
                        scope,
                        created_at,
                        expires_at,
                        attempts,
                    })
                })
                .transpose()
            }

            async fn fail_mfa_challenge(&self, hash: &[u8; 32]) -> StoreResult<i64> {
                let mut turn = self.write_turn().await?;
                let n: Option<i64> = sqlx::query_scalar("UPDATE mfa_challenges SET attempts = attempts + 1 WHERE token_hash = $1 RETURNING attempts")
                    .bind(&hash[..])
                    .fetch_optional(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(n.unwrap_or(i64::MAX))
            }

            async fn consume_mfa_challenge(&self, hash: &[u8; 32], now: i64, max_attempts: i64) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("UPDATE mfa_challenges SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND attempts < $3")
                    .bind(now)
                    .bind(&hash[..])
                    .bind(max_attempts)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }

            async fn find_throttle(&self, key: &str) -> StoreResult<Option<Throttle>> {
                let row: Option<(i64, i64, i64)> = sqlx::query_as("SELECT failures, locked_until, last_failure_at FROM login_throttle WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(row.map(|(failures, locked_until, last_failure_at)| Throttle { failures, locked_until, last_failure_at }))
            }

            async fn reserve_attempt(&self, key: &str, now: i64, policy: &SecurityPolicy) -> StoreResult<Attempt> {
                Ok(self.reserve(key, now, policy, None).await?.0)
            }

            async fn reserve_login(&self, key: &str, now: i64, policy: &SecurityPolicy, username: Option<&Username>) -> StoreResult<(Attempt, Option<User>)> {
                self.reserve(key, now, policy, username).await
            }

            async fn release_attempt(&self, key: &str, lifts_lock: bool) -> StoreResult<()> {
                let mut turn = self.write_turn().await?;
                sqlx::query(
                    "UPDATE login_throttle SET failures = failures - 1,
                         locked_until = CASE WHEN $2 THEN 0 ELSE locked_until END
                     WHERE key = $1 AND failures > 0",
                )
                .bind(key)
                .bind(lifts_lock)
                .execute(turn.writer()?)
                .await
                .map_err(map_err)?;
                turn.committed();
                Ok(())
            }

            async fn clear_throttle(&self, key: &str) -> StoreResult<bool> {
                let mut turn = self.write_turn().await?;
                let r = sqlx::query("DELETE FROM login_throttle WHERE key = $1")
                    .bind(key)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(r.rows_affected() == 1)
            }
        }

        impl MetaStore for $store {
            async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
                sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()> {
                let mut turn = self.write_turn().await?;
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                    .bind(key)
                    .bind(value)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(())
            }

            async fn set_meta_if_absent(&self, key: &str, value: &str) -> StoreResult<String> {
                let mut turn = self.write_turn().await?;
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_one(turn.writer()?)
                    .await
                    .map_err(map_err)?;
                turn.committed();
                Ok(stored)
            }
        }

        impl AuditStore for $store {
            async fn append_audit(&self, e: &AuditEvent, chain: ChainFn) -> StoreResult<i64> {
                let mut turn = self.write_turn().await?;
                let mut tx = turn.begin_with($begin).await?;
                let id = append_audit_in!(tx, e, chain, $audit_lock);
                tx.commit().await.map_err(map_err)?;
                turn.committed();
                Ok(id)
            }

            async fn list_audit(&self, after: i64, user_id: Option<&str>, since: Option<i64>, limit: u32) -> StoreResult<Vec<AuditRecord>> {
                sqlx::query_as::<_, AuditRow>(
                    "SELECT * FROM audit_log
                     WHERE id > $1 AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR at >= $3)
                     ORDER BY id LIMIT $4",
                )
                .bind(after)
                .bind(user_id)
                .bind(since)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?
                .into_iter()
                .map(AuditRecord::try_from)
                .collect()
            }
        }

        impl Store for $store {
            async fn ping(&self) -> StoreResult<()> {
                let mut turn = self.write_turn().await?;
                sqlx::query($ping).execute(turn.writer()?).await.map_err(map_err)?;
                turn.committed();
                Ok(())
            }
        }
    };
}

sql_store!(
    SqliteStore,
    begin = "BEGIN IMMEDIATE",
    // Readiness means "can write": `SELECT 1` never touches the file, and in WAL mode reads
    // go on while another process holds the write lock (a long VACUUM, a backup tool, a
    // stuck `sqlite3` shell) and every login and refresh fails. This statement changes
    // nothing but takes the write lock like any write, so it fails (SQLITE_BUSY after the
    // busy timeout) exactly when writes do. One autocommit statement: nothing is left open
    // if the caller gives up waiting.
    ping = "UPDATE meta SET value = value WHERE 0",
    audit_lock = None::<&'static str>,
    key_lock = None::<&'static str>
);
sql_store!(
    PgStore,
    begin = "BEGIN",
    ping = "SELECT 1",
    audit_lock = Some(PG_AUDIT_LOCK),
    key_lock = Some("SELECT pg_advisory_xact_lock(7411020003)")
);

/// Refresh-token rotation, the common case (RFC 9700 §4.14.2): `req.parent_hash` is the
/// current token of a live session that belongs to `req.client_id` (RFC 6749 §6). Then, and
/// only then, the token is claimed (the compare-and-set `used_at IS NULL` that lets one
/// request rotate it, on any instance), its successor is stored and the session's idle
/// expiry moves (never past the absolute one), atomically; the session comes back. `None`
/// means nothing changed: reuse, a grace-window retry, an unknown, foreign or expired
/// token, which the caller sorts out in a transaction of its own.
///
/// The liveness test is `Session::is_live`'s, in SQL: not revoked, both expiries after now.
/// (A macro, not a `const`, so that `concat!` can build each backend's statement from it.)
macro_rules! rotate_claim_sql {
    () => {
        "UPDATE refresh_tokens SET used_at = $1, successor_hash = $2
         WHERE hash = $3 AND used_at IS NULL
           AND EXISTS (SELECT 1 FROM sessions
                       WHERE sessions.id = refresh_tokens.session_id
                         AND client_id = $4 AND revoked_at IS NULL
                         AND idle_expires_at > $1 AND absolute_expires_at > $1)"
    };
}

/// The session's new idle expiry (`$5` = now + idle lifetime), never past the absolute one.
macro_rules! new_idle_expiry_sql {
    () => {
        "CASE WHEN $5 < absolute_expires_at THEN $5 ELSE absolute_expires_at END"
    };
}

impl SqliteStore {
    /// See [`rotate_claim_sql`]. One command to the connection's thread for the whole write
    /// transaction: every statement is a round trip to that thread, taken while every other
    /// writer waits (one writer at a time), and on a busy machine each round trip costs
    /// 100–200 µs of waiting to be scheduled. Three statements and `BEGIN`/`COMMIT` made
    /// five of them, which capped refreshes near 1,400/s; one is the floor. SQLite has no
    /// data-modifying CTEs, so the statements after the claim run only if the one before
    /// changed exactly one row (`changes()`, which counts the last completed statement).
    ///
    /// The batch opens and commits its own transaction, out of sqlx's sight, so it must never
    /// stop half-way with the transaction open on the writer connection
    /// ([`SqliteWriter::raw_batch`]).
    ///
    /// The batch also reads the session's user, which the grant needs next: a second command
    /// would be a second trip to a connection's thread, and on a connection other than the
    /// writer's it would first re-read the pages the write just changed (each connection
    /// keeps its own page cache and drops it when another one has written).
    async fn rotate_current(
        &self,
        req: &RotateRequest,
    ) -> StoreResult<Option<(Session, Option<User>)>> {
        let sql = concat!(
            "BEGIN IMMEDIATE;\n",
            rotate_claim_sql!(),
            ";\nINSERT INTO refresh_tokens (hash, session_id, created_at, used_at, successor_hash)
             SELECT $2, session_id, $1, NULL, NULL FROM refresh_tokens
             WHERE hash = $3 AND changes() = 1;
             UPDATE sessions SET last_used_at = $1, idle_expires_at = ",
            new_idle_expiry_sql!(),
            " WHERE id = (SELECT session_id FROM refresh_tokens WHERE hash = $3) AND changes() = 1
             RETURNING *;
             SELECT ",
            user_columns_sql!(),
            " FROM users WHERE id = (SELECT user_id FROM sessions
                                     WHERE id = (SELECT session_id FROM refresh_tokens WHERE hash = $3))
               AND changes() = 1;
             COMMIT"
        );
        let rows = self
            .writer
            .raw_batch(
                sqlx::query(sql)
                    .bind(req.now)
                    .bind(&req.successor_hash[..])
                    .bind(&req.parent_hash[..])
                    .bind(req.client_id.clone())
                    .bind(req.now.saturating_add(req.idle_ttl_secs)),
            )
            .await?;
        // The session's row (from RETURNING), then its user's, if both statements ran.
        let mut rows = rows.iter();
        let Some(session) = rows.next() else {
            return Ok(None);
        };
        let session = Session::try_from(SessionRow::from_row(session).map_err(map_err)?)?;
        let user = rows
            .next()
            .map(|r| {
                UserRow::from_row(r)
                    .map_err(map_err)
                    .and_then(User::try_from)
            })
            .transpose()?;
        Ok(Some((session, user)))
    }
}

impl PgStore {
    /// See [`rotate_claim_sql`]: one statement (data-modifying CTEs run together and atomically),
    /// so one round trip to the server and no transaction left to manage.
    /// The session's user is read by a second statement after it: PostgreSQL answers over
    /// the network, not from a thread of this process, and the joined row would need a
    /// second, prefixed copy of every user column.
    async fn rotate_current(
        &self,
        req: &RotateRequest,
    ) -> StoreResult<Option<(Session, Option<User>)>> {
        let sql = concat!(
            "WITH claimed AS (",
            rotate_claim_sql!(),
            " RETURNING session_id),
             successor AS (
                 INSERT INTO refresh_tokens (hash, session_id, created_at, used_at, successor_hash)
                 SELECT $2, session_id, $1, NULL, NULL FROM claimed)
             UPDATE sessions SET last_used_at = $1, idle_expires_at = ",
            new_idle_expiry_sql!(),
            " FROM claimed WHERE sessions.id = claimed.session_id
             RETURNING sessions.*"
        );
        let session = sqlx::query_as::<_, SessionRow>(sql)
            .bind(req.now)
            .bind(&req.successor_hash[..])
            .bind(&req.parent_hash[..])
            .bind(&req.client_id)
            .bind(req.now.saturating_add(req.idle_ttl_secs))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .map(Session::try_from)
            .transpose()?;
        let Some(session) = session else {
            return Ok(None);
        };
        let user = self.find_user_by_id(session.user_id).await?;
        Ok(Some((session, user)))
    }
}

/// The advisory lock that serializes audit-chain appends on PostgreSQL (`sql_store!`).
const PG_AUDIT_LOCK: &str = "SELECT pg_advisory_xact_lock(7411020001)";

/// A login's session, its first refresh token and its audit row, on SQLite: the throttle
/// keys cleared (`$12`, a JSON array), the session and its token inserted, the audit chain's
/// last hash read (32 zero bytes for an empty log) and the user read again, all in the
/// write transaction this batch opens. The audit row follows in [`LOGIN_AUDIT_SQL`], which
/// commits. The statements are `insert_session!` and `append_audit_in!`'s, bound by number.
const LOGIN_SESSION_SQL: &str = concat!(
    "BEGIN IMMEDIATE;
     DELETE FROM login_throttle WHERE key IN (SELECT value FROM json_each($12));
     INSERT INTO sessions (id, user_id, client_id, scope, amr, created_at, last_used_at, idle_expires_at,
                           absolute_expires_at, revoked_at, revoke_reason, ip, user_agent)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10, $11);
     INSERT INTO refresh_tokens (hash, session_id, created_at, used_at, successor_hash) VALUES ($13, $1, $6, NULL, NULL);
     SELECT COALESCE((SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1), zeroblob(32));
     SELECT ",
    user_columns_sql!(),
    " FROM users WHERE id = $2"
);

/// The second half of a SQLite login (see [`LOGIN_SESSION_SQL`]): the audit row, chained
/// to the hash the first half read, then `COMMIT`.
const LOGIN_AUDIT_SQL: &str = "INSERT INTO audit_log (at, event, outcome, user_id, username, client_id, ip, user_agent, request_id, detail, prev_hash, hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id;
     COMMIT";

impl SqliteStore {
    /// [`SessionStore::create_session_audited`] in two commands to the writer connection's
    /// thread where one per statement took eight: `BEGIN`, the throttle clear, the two
    /// inserts, the audit chain's read and its insert, `COMMIT`, and the user read again on a
    /// reader after the commit. Every command wakes that thread and then the waiting task,
    /// and under a login load both cores are hashing passwords: each wake preempts a hash
    /// (docs/BENCHMARKS.md, "Why login misses"). Two, not one: the audit row's hash chains
    /// the last row's, which is read in the first.
    ///
    /// The user is read inside the transaction, where no other write can commit until this
    /// one has (the write lock is taken by `BEGIN IMMEDIATE`, other processes included): a
    /// password change or a disable it does not see commits after the session and ends it.
    /// On the writer, too, it reads pages the write has just had in hand.
    ///
    /// The batches open and commit their own transaction, out of sqlx's sight, under the rules
    /// of [`SqliteWriter::raw_batch`]: they run in a task of their own (a dropped request
    /// cannot stop them half-way), and after any error, or if that task stops between them (a
    /// panic, a runtime shutting down), the connection is closed and replaced (closing rolls
    /// back). Not `raw_batch` itself: the second batch needs the first one's answer.
    async fn store_login(
        &self,
        s: &Session,
        refresh_hash: &[u8; 32],
        e: &AuditEvent,
        chain: ChainFn,
        clear: &[&str],
    ) -> StoreResult<StoredLogin> {
        let writer = self.writer.clone();
        let (s, e, refresh_hash) = (s.clone(), e.clone(), *refresh_hash);
        let clear = strings_json(clear);
        let task = tokio::spawn(async move {
            let mut turn = writer.turn().await?;
            let stored = async {
                let conn = turn.raw_conn()?;
                let rows = sqlx::query(LOGIN_SESSION_SQL)
                    .bind(s.id.to_string())
                    .bind(s.user_id.to_string())
                    .bind(&s.client_id)
                    .bind(&s.scope)
                    .bind(strings_json(&s.amr))
                    .bind(s.created_at)
                    .bind(s.last_used_at)
                    .bind(s.idle_expires_at)
                    .bind(s.absolute_expires_at)
                    .bind(&s.ip)
                    .bind(&s.user_agent)
                    .bind(clear)
                    .bind(&refresh_hash[..])
                    // Drained: a stream dropped early would stop the batch where it is.
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(map_err)?;
                let mut rows = rows.iter();
                let prev: Vec<u8> = rows
                    .next()
                    .ok_or_else(|| {
                        StoreError::new(
                            StoreErrorKind::Other,
                            "the audit chain's last hash was not read",
                        )
                    })?
                    .try_get(0)
                    .map_err(map_err)?;
                let user = rows
                    .next()
                    .map(|r| {
                        UserRow::from_row(r)
                            .map_err(map_err)
                            .and_then(User::try_from)
                    })
                    .transpose()?;
                let hash = chain(&prev, &e);
                let audit_id: i64 = sqlx::query_scalar(LOGIN_AUDIT_SQL)
                    .bind(e.at)
                    .bind(&e.event)
                    .bind(&e.outcome)
                    .bind(&e.user_id)
                    .bind(&e.username)
                    .bind(&e.client_id)
                    .bind(&e.ip)
                    .bind(&e.user_agent)
                    .bind(&e.request_id)
                    .bind(e.detail.to_string())
                    .bind(&prev)
                    .bind(&hash[..])
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(map_err)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        StoreError::new(
                            StoreErrorKind::Other,
                            "the audit row's id was not returned",
                        )
                    })?;
                Ok::<_, StoreError>(StoredLogin {
                    audit_id,
                    user: Ok(user),
                })
            }
            .await;
            match stored {
                Ok(stored) => {
                    turn.committed();
                    Ok(stored)
                }
                Err(e) => {
                    turn.discard().await;
                    Err(e)
                }
            }
        });
        task.await
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e))?
    }
}

/// A reservation on SQLite (see [`SqliteStore::reserve`]): `$1` the key, `$2` now, `$3` the
/// start of the failure window, `$4` the lockout threshold, `$5` the lock each count from
/// the threshold on sets (a JSON array of `locked_until` values, `null` for none), `$6` the
/// username to read (NULL for none).
const RESERVE_SQL: &str = concat!(
    "BEGIN IMMEDIATE;
     INSERT INTO login_throttle (key, failures, locked_until, last_failure_at) VALUES ($1, 1, 0, $2)
     ON CONFLICT (key) DO UPDATE SET
         failures = CASE WHEN login_throttle.last_failure_at < $3 THEN 1 ELSE login_throttle.failures + 1 END,
         last_failure_at = $2
     WHERE login_throttle.locked_until <= $2
     RETURNING failures;
     UPDATE login_throttle
     SET locked_until = COALESCE(json_extract($5, '$[' || MIN(failures - $4, 30) || ']'), locked_until)
     WHERE key = $1 AND changes() = 1 AND failures >= $4;
     SELECT locked_until FROM login_throttle WHERE key = $1;
     SELECT ",
    user_columns_sql!(),
    " FROM users WHERE username = $6;
     COMMIT"
);

impl SqliteStore {
    /// [`SecurityStore::reserve_attempt`], and the user named `username` read in the same
    /// transaction, in one command to the writer connection's thread where the steps took
    /// four (the user read on a reader, then `BEGIN`, the count, `COMMIT`): under a login
    /// load every command wakes a thread that preempts a password hash (see
    /// [`Self::store_login`]).
    ///
    /// The count and the lock it sets are one transaction, as on PostgreSQL: the count is
    /// taken only while the key is not locked, and the lock follows from the count in the
    /// same batch. What [`SecurityPolicy::lock_for`] gives each count from the threshold on
    /// is computed here and bound as a list (it stops growing 30 counts past the threshold),
    /// so the batch needs no answer from this side half-way ([`SqliteWriter::raw_batch`]).
    async fn reserve(
        &self,
        key: &str,
        now: i64,
        policy: &SecurityPolicy,
        username: Option<&Username>,
    ) -> StoreResult<(Attempt, Option<User>)> {
        let locks: Vec<Option<i64>> = (0..=30)
            .map(|i| {
                let lock = policy.lock_for(policy.lockout_threshold.saturating_add(i));
                (lock > 0).then(|| now.saturating_add(lock))
            })
            .collect();
        let locks =
            serde_json::to_string(&locks).map_err(|e| StoreError::new(StoreErrorKind::Other, e))?;
        let rows = self
            .writer
            .raw_batch(
                sqlx::query(RESERVE_SQL)
                    .bind(key.to_owned())
                    .bind(now)
                    .bind(now.saturating_sub(policy.failure_window))
                    .bind(policy.lockout_threshold)
                    .bind(locks)
                    .bind(username.map(|u| u.as_str().to_owned())),
            )
            .await?;
        // The rows: the count (`RETURNING`, only if the attempt was counted), the key's
        // `locked_until`, then the user's, if there is one.
        let mut rows = rows.iter().peekable();
        let counted = match rows.peek() {
            Some(row)
                if row
                    .columns()
                    .first()
                    .is_some_and(|c| c.name() == "failures") =>
            {
                let attempts: i64 = row.try_get(0).map_err(map_err)?;
                rows.next();
                Some(attempts)
            }
            _ => None,
        };
        let until: i64 = rows
            .next()
            .ok_or_else(|| StoreError::new(StoreErrorKind::Other, "the throttle row was not read"))?
            .try_get(0)
            .map_err(map_err)?;
        let user = rows
            .next()
            .map(|r| {
                UserRow::from_row(r)
                    .map_err(map_err)
                    .and_then(User::try_from)
            })
            .transpose()?;
        let attempt = match counted {
            Some(attempts) => Attempt::Admitted {
                attempts,
                lock: policy.lock_for(attempts),
            },
            None => Attempt::Refused { until },
        };
        Ok((attempt, user))
    }
}

impl PgStore {
    /// [`SecurityStore::reserve_attempt`], after reading the user named `username` (as
    /// [`UserStore::find_user_by_username`]) if there is one.
    async fn reserve(
        &self,
        key: &str,
        now: i64,
        policy: &SecurityPolicy,
        username: Option<&Username>,
    ) -> StoreResult<(Attempt, Option<User>)> {
        let user = match username {
            Some(name) => self.find_user_by_username(name).await?,
            None => None,
        };
        let mut turn = self.write_turn().await?;
        let mut tx = turn.begin_with("BEGIN").await?;
        // Counted only while the key is not locked (`WHERE`). The upsert locks the row
        // until this transaction ends, whether or not it updates it, so a concurrent
        // reservation waits and then sees the lock set below.
        let counted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO login_throttle (key, failures, locked_until, last_failure_at) VALUES ($1, 1, 0, $2)
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN login_throttle.last_failure_at < $3 THEN 1 ELSE login_throttle.failures + 1 END,
                 last_failure_at = $2
             WHERE login_throttle.locked_until <= $2
             RETURNING failures",
        )
        .bind(key)
        .bind(now)
        .bind(now.saturating_sub(policy.failure_window))
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let outcome = match counted {
            Some(attempts) => {
                let lock = policy.lock_for(attempts);
                if lock > 0 {
                    sqlx::query("UPDATE login_throttle SET locked_until = $1 WHERE key = $2")
                        .bind(now.saturating_add(lock))
                        .bind(key)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                Attempt::Admitted { attempts, lock }
            }
            None => {
                let until: i64 =
                    sqlx::query_scalar("SELECT locked_until FROM login_throttle WHERE key = $1")
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(map_err)?;
                Attempt::Refused { until }
            }
        };
        tx.commit().await.map_err(map_err)?;
        turn.committed();
        Ok((outcome, user))
    }

    /// [`SessionStore::create_session_audited`]: one transaction, then the user read again
    /// after its commit. PostgreSQL's writers do not wait for each other the way SQLite's
    /// do: a password change committing while this transaction is open would not see its
    /// session, so the read must follow the commit (see [`StoredLogin::user`]).
    async fn store_login(
        &self,
        s: &Session,
        refresh_hash: &[u8; 32],
        e: &AuditEvent,
        chain: ChainFn,
        clear: &[&str],
    ) -> StoreResult<StoredLogin> {
        let mut turn = self.write_turn().await?;
        let mut tx = turn.begin_with("BEGIN").await?;
        // First: the audit lock must be the last lock taken, and a throttle row is otherwise
        // only locked by `reserve_attempt`'s transaction, which takes no other lock.
        for key in clear {
            sqlx::query("DELETE FROM login_throttle WHERE key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        insert_session!(tx, s, refresh_hash);
        let audit_id = append_audit_in!(tx, e, chain, Some(PG_AUDIT_LOCK));
        tx.commit().await.map_err(map_err)?;
        turn.committed();
        // Committed: a failed read is the caller's to report, with the login stored.
        let user = self.find_user_by_id(s.user_id).await;
        Ok(StoredLogin { audit_id, user })
    }
}

/// Forwards every trait method to the selected backend.
macro_rules! delegate {
    ($($trait:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* })*) => {
        $(impl $trait for Database {
            $(async fn $name(&self $(, $arg: $ty)*) -> $ret {
                match self {
                    Self::Sqlite(s) => s.$name($($arg),*).await,
                    Self::Postgres(p) => p.$name($($arg),*).await,
                }
            })*
        })*
    };
}

delegate! {
    UserStore {
        fn insert_user(&self, user: &User) -> StoreResult<()>;
        fn find_user_by_username(&self, username: &Username) -> StoreResult<Option<User>>;
        fn find_user_by_id(&self, id: UserId) -> StoreResult<Option<User>>;
        fn list_users(&self) -> StoreResult<Vec<User>>;
        fn count_users(&self) -> StoreResult<u64>;
        fn update_user_roles(&self, id: UserId, roles: &[Role], now: i64) -> StoreResult<bool>;
        fn update_user_disabled(&self, id: UserId, disabled: bool, now: i64) -> StoreResult<bool>;
        fn update_password_hash(&self, id: UserId, hash: &str, now: i64, password_changed: bool) -> StoreResult<bool>;
        fn rehash_password(&self, id: UserId, old_hash: &str, new_hash: &str, now: i64) -> StoreResult<bool>;
        fn delete_user(&self, id: UserId) -> StoreResult<bool>;
    }
    SessionStore {
        fn create_session(&self, session: &Session, refresh_hash: &[u8; 32]) -> StoreResult<()>;
        fn create_session_audited(&self, session: &Session, refresh_hash: &[u8; 32], event: &AuditEvent, chain: ChainFn, clear: &[&str]) -> StoreResult<StoredLogin>;
        fn rotate_refresh_token(&self, req: &RotateRequest) -> StoreResult<RotateOutcome>;
        fn find_session(&self, id: SessionId) -> StoreResult<Option<Session>>;
        fn find_refresh_token(&self, hash: &[u8; 32]) -> StoreResult<Option<(Session, Option<i64>)>>;
        fn list_live_sessions(&self, user: Option<UserId>, now: i64) -> StoreResult<Vec<Session>>;
        fn count_live_sessions(&self, now: i64) -> StoreResult<u64>;
        fn revoke_session(&self, id: SessionId, now: i64, reason: &str, event_expires_at: i64) -> StoreResult<Option<Session>>;
        fn revoke_user_sessions(&self, user: UserId, keep: Option<SessionId>, now: i64, reason: &str, event_expires_at: i64, revoke_user_tokens: bool) -> StoreResult<u64>;
        fn change_password(&self, user: UserId, hash: &str, now: i64, keep: Option<SessionId>, event_expires_at: i64) -> StoreResult<bool>;
        fn disable_user(&self, user: UserId, now: i64, event_expires_at: i64) -> StoreResult<bool>;
    }
    RevocationStore {
        fn append_revocation(&self, kind: RevocationKind, subject: &str, created_at: i64, expires_at: i64) -> StoreResult<i64>;
        fn revocations_since(&self, after: i64, now: i64, limit: u32) -> StoreResult<Vec<RevocationEvent>>;
        fn prune(&self, now: i64) -> StoreResult<u64>;
    }
    KeyStore {
        fn rotate_signing_key(&self, new: &StoredKey, retain_after_retire: i64, guard: RotateGuard) -> StoreResult<bool>;
        fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()>;
        fn list_signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
        fn update_signing_key(&self, key: &StoredKey) -> StoreResult<bool>;
        fn delete_signing_key(&self, kid: &str) -> StoreResult<bool>;
    }
    ClientStore {
        fn insert_client(&self, client: &Client) -> StoreResult<()>;
        fn find_client(&self, id: &ClientId) -> StoreResult<Option<Client>>;
        fn list_clients(&self) -> StoreResult<Vec<Client>>;
        fn delete_client(&self, id: &ClientId) -> StoreResult<bool>;
    }
    SecurityStore {
        fn find_totp(&self, user: UserId) -> StoreResult<Option<TotpState>>;
        fn set_totp_pending(&self, user: UserId, sealed: &[u8]) -> StoreResult<bool>;
        fn activate_totp(&self, user: UserId, sealed: &[u8], step: i64, recovery_hashes: &[[u8; 32]]) -> StoreResult<bool>;
        fn disable_totp(&self, user: UserId) -> StoreResult<bool>;
        fn advance_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool>;
        fn use_recovery_code(&self, user: UserId, hash: &[u8; 32], now: i64) -> StoreResult<bool>;
        fn count_recovery_codes(&self, user: UserId) -> StoreResult<u64>;
        fn insert_mfa_challenge(&self, hash: &[u8; 32], challenge: &MfaChallenge) -> StoreResult<()>;
        fn find_mfa_challenge(&self, hash: &[u8; 32], now: i64) -> StoreResult<Option<MfaChallenge>>;
        fn fail_mfa_challenge(&self, hash: &[u8; 32]) -> StoreResult<i64>;
        fn consume_mfa_challenge(&self, hash: &[u8; 32], now: i64, max_attempts: i64) -> StoreResult<bool>;
        fn find_throttle(&self, key: &str) -> StoreResult<Option<Throttle>>;
        fn reserve_attempt(&self, key: &str, now: i64, policy: &SecurityPolicy) -> StoreResult<Attempt>;
        fn reserve_login(&self, key: &str, now: i64, policy: &SecurityPolicy, username: Option<&Username>) -> StoreResult<(Attempt, Option<User>)>;
        fn clear_throttle(&self, key: &str) -> StoreResult<bool>;
        fn release_attempt(&self, key: &str, lifts_lock: bool) -> StoreResult<()>;
    }
    MetaStore {
        fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
        fn set_meta(&self, key: &str, value: &str) -> StoreResult<()>;
        fn set_meta_if_absent(&self, key: &str, value: &str) -> StoreResult<String>;
    }
    AuditStore {
        fn append_audit(&self, event: &AuditEvent, chain: ChainFn) -> StoreResult<i64>;
        fn list_audit(&self, after: i64, user_id: Option<&str>, since: Option<i64>, limit: u32) -> StoreResult<Vec<AuditRecord>>;
    }
    Store {
        fn ping(&self) -> StoreResult<()>;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite(dir: &tempfile::TempDir) -> SqliteStore {
        let Database::Sqlite(store) = Database::open_sqlite(&dir.path().join("t.db"))
            .await
            .unwrap()
        else {
            unreachable!("open_sqlite opens SQLite");
        };
        store
    }

    async fn meta_rows(store: &SqliteStore, key: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    async fn writer_verified(store: &SqliteStore) -> Option<bool> {
        match &*store.writer.slot.lock().await {
            WriterSlot::Open { verified, .. } => Some(*verified),
            WriterSlot::Lost | WriterSlot::Closed => None,
        }
    }

    /// A write that appends a revocation event, on the writer connection.
    async fn revoke_all(store: &SqliteStore) -> StoreResult<u64> {
        store
            .revoke_user_sessions(UserId::new(), None, 1, "test", i64::MAX, true)
            .await
    }

    /// Without the release ping of a pool, what a turn left open must still be gone before
    /// the next turn begins: the dropped `Transaction` queues its rollback on the
    /// connection's thread, ahead of the next turn's commands.
    #[tokio::test]
    async fn a_turn_that_did_not_commit_is_rolled_back_before_the_next_begins() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        {
            let mut turn = store.write_turn().await.unwrap();
            let mut tx = turn.begin_with("BEGIN IMMEDIATE").await.unwrap();
            sqlx::query("INSERT INTO meta (key, value) VALUES ('left', 'open')")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        assert_eq!(writer_verified(&store).await, Some(false));
        let mut turn = store.write_turn().await.unwrap();
        let mut tx = turn.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meta WHERE key = 'left'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 0, "the first turn's insert was rolled back");
        tx.commit().await.unwrap();
        turn.committed();
        drop(turn);
        assert_eq!(writer_verified(&store).await, Some(true));
    }

    /// A raw batch that fails half-way leaves its own `BEGIN` open, out of sqlx's sight:
    /// the connection is closed (rolling it back) and the next turn opens another.
    #[tokio::test]
    async fn a_failed_batch_replaces_the_writer_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        {
            let mut turn = store.write_turn().await.unwrap();
            let batch = "BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('half', 'way'); \
                         SELECT * FROM no_such_table; COMMIT";
            assert!(
                sqlx::query(batch)
                    .fetch_all(turn.conn().unwrap())
                    .await
                    .is_err()
            );
            turn.discard().await;
        }
        assert_eq!(
            writer_verified(&store).await,
            None,
            "closed, to be replaced"
        );
        assert_eq!(meta_rows(&store, "half").await, 0, "rolled back");
        assert_eq!(revoke_all(&store).await.unwrap(), 0);
        assert_eq!(writer_verified(&store).await, Some(true));
        let events = store.revocations_since(0, 1, 10).await.unwrap();
        assert_eq!(events.len(), 1, "the write after the failure committed");
    }

    /// A write dropped while SQLite makes it wait for the lock (here another connection holds
    /// it): its `BEGIN` still completes on the connection's thread after the caller has
    /// gone, and sqlx rolls it back there. The writer must not be left inside it.
    #[tokio::test]
    async fn a_write_dropped_while_it_waits_for_the_lock_leaves_the_writer_usable() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        let mut other = SqliteConnection::connect_with(
            &SqliteConnectOptions::new().filename(dir.path().join("t.db")),
        )
        .await
        .unwrap();
        // Raw on purpose: the lock stays held across the statements below.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), revoke_all(&store)).await;
        assert!(waited.is_err(), "the write waits for the lock: {waited:?}");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(4), revoke_all(&store))
            .await
            .expect("the next write must not wait for a lock the dropped one left");
        assert_eq!(next.unwrap(), 0);
        let events = store.revocations_since(0, 1, 10).await.unwrap();
        assert_eq!(events.len(), 1, "only the second write committed");
        other.close().await.unwrap();
    }

    /// A login's two batches leave their transaction open between them, out of sqlx's
    /// sight (`is_in_transaction` counts only sqlx's own `BEGIN`s). A task that stops there
    /// (here the audit chain's function panics; a runtime shutting down drops it the same
    /// way) dropped its turn with `BEGIN IMMEDIATE` open, the next turn's ping found nothing
    /// wrong, and every later write went into that transaction and was never committed, or
    /// failed to begin; the write lock stayed held against every other process.
    #[tokio::test]
    async fn a_login_batch_stopped_half_way_leaves_no_transaction_open() {
        fn panicking_chain(_: &[u8], _: &AuditEvent) -> [u8; 32] {
            panic!("the chain function failed")
        }
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        let user = User {
            id: UserId::new(),
            username: Username::parse("alice").unwrap(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$hash".into(),
            roles: Role::parse_all(["user"]).unwrap(),
            disabled: false,
            created_at: 1,
            updated_at: 1,
            password_changed_at: 1,
            totp_enabled: false,
        };
        store.insert_user(&user).await.unwrap();
        let session = Session {
            id: SessionId::new(),
            user_id: user.id,
            client_id: "tessera-web".into(),
            scope: "openid".into(),
            amr: vec!["pwd".into()],
            created_at: 1,
            last_used_at: 1,
            idle_expires_at: 100,
            absolute_expires_at: 200,
            revoked_at: None,
            revoke_reason: None,
            ip: None,
            user_agent: None,
        };
        let event = AuditEvent {
            at: 1,
            event: "login".into(),
            outcome: "success".into(),
            user_id: Some(user.id.to_string()),
            username: Some("alice".into()),
            client_id: Some("tessera-web".into()),
            ip: None,
            user_agent: None,
            request_id: None,
            detail: serde_json::json!({}),
        };
        assert!(
            store
                .create_session_audited(&session, &[7; 32], &event, panicking_chain, &[])
                .await
                .is_err()
        );
        assert_eq!(store.find_session(session.id).await.unwrap(), None);
        // The next write commits, and nothing of the stopped login came with it.
        assert_eq!(revoke_all(&store).await.unwrap(), 0);
        let events = store.revocations_since(0, 1, 10).await.unwrap();
        assert_eq!(
            events.len(),
            1,
            "the write after the stopped login committed"
        );
        assert_eq!(store.find_session(session.id).await.unwrap(), None);
        assert_eq!(writer_verified(&store).await, Some(true));
    }

    /// Any raw batch's turn dropped before it committed or discarded (the batches of
    /// `reserve`, `rotate_current` and `store_login` alike): the connection goes with it.
    #[tokio::test]
    async fn a_raw_turn_dropped_with_its_transaction_open_replaces_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        {
            let mut turn = store.write_turn().await.unwrap();
            sqlx::raw_sql("BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('raw', 'open')")
                .execute(turn.raw_conn().unwrap())
                .await
                .unwrap();
        }
        assert_eq!(
            writer_verified(&store).await,
            None,
            "closed, to be replaced"
        );
        assert_eq!(revoke_all(&store).await.unwrap(), 0);
        assert_eq!(store.revocations_since(0, 1, 10).await.unwrap().len(), 1);
        assert_eq!(meta_rows(&store, "raw").await, 0, "rolled back");
        // A raw turn that committed keeps its connection.
        {
            let mut turn = store.write_turn().await.unwrap();
            sqlx::raw_sql(
                "BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('raw', 'done'); COMMIT",
            )
            .execute(turn.raw_conn().unwrap())
            .await
            .unwrap();
            turn.committed();
        }
        assert_eq!(writer_verified(&store).await, Some(true));
        assert_eq!(meta_rows(&store, "raw").await, 1);
    }

    /// Every write goes to the writer; the read pool refuses one, so a write left on it
    /// fails in the tests instead of racing the writer for SQLite's lock.
    #[tokio::test]
    async fn the_read_pool_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        let err = sqlx::query("INSERT INTO meta (key, value) VALUES ('via', 'pool')")
            .execute(&store.pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        store.set_meta("via", "writer").await.unwrap();
        assert_eq!(meta_rows(&store, "via").await, 1);
    }

    /// Writes a row, loses the writer first if asked (a failed raw batch), closes the
    /// database and checks that it is left as one file holding the row.
    async fn close_and_check_no_wal(lose_writer: bool) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(&dir.path().join("t.db"))
            .await
            .unwrap();
        let Database::Sqlite(store) = &db else {
            unreachable!("open_sqlite opens SQLite");
        };
        store.set_meta("k", "v").await.unwrap();
        assert_eq!(meta_rows(store, "k").await, 1);
        if lose_writer {
            let mut turn = store.write_turn().await.unwrap();
            let failed = sqlx::raw_sql("BEGIN IMMEDIATE; SELECT * FROM no_such_table; COMMIT")
                .execute(turn.conn().unwrap())
                .await;
            assert!(failed.is_err());
            turn.discard().await;
            drop(turn);
            assert_eq!(writer_verified(store).await, None, "the writer is lost");
        }
        assert!(dir.path().join("t.db-wal").exists());
        db.close().await;
        assert!(!dir.path().join("t.db-wal").exists(), "the WAL is gone");
        let store = sqlite(&dir).await;
        assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v"));
    }

    /// Closed writer last, the database is left as one file: the WAL checkpointed into it
    /// and removed (a read-only connection closing last could not do either).
    #[tokio::test]
    async fn closing_leaves_no_wal_behind() {
        close_and_check_no_wal(false).await;
    }

    /// A writer lost since its last turn is opened again to be closed, so the WAL is still
    /// checkpointed and removed at shutdown.
    #[tokio::test]
    async fn closing_after_the_writer_was_lost_leaves_no_wal_behind() {
        close_and_check_no_wal(true).await;
    }

    /// SQLITE_FULL inside a write transaction (a full disk; here `max_page_count`) makes
    /// SQLite roll the transaction back by itself, so the rollback sqlx then queues fails and
    /// sqlx still counts the connection as in a transaction. The ping after that turn
    /// answers; the writer must be replaced anyway, or every later `BEGIN` on it is refused
    /// until the server restarts.
    #[tokio::test]
    async fn a_transaction_ended_by_sqlite_itself_does_not_wedge_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        revoke_all(&store).await.unwrap();
        {
            // Per connection: the writer may not grow the file any further.
            let mut turn = store.write_turn().await.unwrap();
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(turn.writer().unwrap())
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA max_page_count = {pages}"
            )))
            .execute(turn.writer().unwrap())
            .await
            .unwrap();
            turn.committed();
        }
        let big = "x".repeat(3000);
        let mut full = None;
        for _ in 0..200 {
            let mut turn = store.write_turn().await.unwrap();
            let written = async {
                let mut tx = turn.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(
                    "INSERT INTO revocation_events (kind, subject, created_at, expires_at) \
                     VALUES ('user', $1, 1, 9)",
                )
                .bind(&big)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)
            }
            .await;
            match written {
                Ok(()) => turn.committed(),
                Err(e) => {
                    full = Some(e);
                    break;
                }
            }
        }
        let full = full.expect("the file reached max_page_count");
        assert!(format!("{full:?}").contains("full"), "{full:?}");
        // Answered as 503 `temporarily_unavailable`: retrying after space is freed works.
        assert_eq!(full.kind(), StoreErrorKind::Unavailable, "{full:?}");
        // The replaced writer is a new connection, without the page limit.
        for i in 0..3 {
            let written = revoke_all(&store).await;
            assert!(written.is_ok(), "write {i} after SQLITE_FULL: {written:?}");
        }
    }

    /// A write dropped after any number of polls (a client that hangs up, a timeout) leaves
    /// the writer usable and outside any transaction, and the next write is committed.
    #[tokio::test]
    async fn a_write_dropped_at_any_await_leaves_the_writer_clean() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        for polls in 0..12 {
            {
                let mut write = std::pin::pin!(revoke_all(&store));
                for _ in 0..polls {
                    let done = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(write.as_mut().poll(cx).is_ready())
                    })
                    .await;
                    if done {
                        break;
                    }
                    // Lets the connection's thread get on with what it was sent.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            let key = format!("after {polls} polls");
            tokio::time::timeout(Duration::from_secs(3), store.set_meta(&key, "v"))
                .await
                .expect("the next write does not hang")
                .unwrap();
            assert_eq!(meta_rows(&store, &key).await, 1, "{key}: committed");
            let mut turn = store.write_turn().await.unwrap();
            let conn = turn.conn().unwrap();
            assert!(!conn.is_in_transaction(), "{key}: outside a transaction");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{key}: a new transaction begins: {e}"));
            sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
            turn.committed();
        }
    }

    /// The claim must find the session by its key, not scan every live session: with the
    /// session test written as `session_id IN (SELECT id FROM sessions WHERE …)` SQLite
    /// walked all live sessions (by expiry) on every refresh, so rotation slowed down as
    /// sessions accumulated (996/s instead of 2,000+/s after a thousand logins).
    #[tokio::test]
    async fn the_rotation_claim_looks_sessions_up_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        // The plan's text is the fourth column (id, parent, unused, detail).
        let plan: Vec<String> = sqlx::query(concat!("EXPLAIN QUERY PLAN ", rotate_claim_sql!()))
            .bind(1_i64)
            .bind(vec![0_u8])
            .bind(vec![1_u8])
            .bind("client")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| Row::get::<String, _>(row, 3))
            .collect();
        let sessions: Vec<&String> = plan.iter().filter(|l| l.contains("sessions")).collect();
        assert!(!sessions.is_empty(), "{plan:?}");
        for line in sessions {
            assert!(
                line.starts_with("SEARCH sessions USING") && line.contains("(id=?)"),
                "sessions must be looked up by id: {plan:?}"
            );
        }
    }
}
