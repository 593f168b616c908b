//! Test helpers (publish = false): start the real server on a real socket with a fresh
//! database, and talk to it like a client would (zero2prod's `spawn_app`, STYLE §7).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a failed setup should fail the test loudly"
)]

pub mod pg;
pub mod process;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use tessera_auth::model::{RequestMeta, User};
use tessera_auth::{Actor, ManualClock};
use tessera_server::AppState;
use tessera_server::config::Config;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

/// The master key test apps sharing a database use (64 hex digits).
pub const TEST_MASTER_KEY: &str =
    "7e55e7a07e55e7a07e55e7a07e55e7a07e55e7a07e55e7a07e55e7a07e55e7a0";

/// The password of the bootstrap `admin` in every test app.
pub const ADMIN_PASSWORD: &str = "tessera bootstrap phrase for tests";

/// A running server.
pub struct TestApp {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client with redirects off and a cookie store.
    pub client: reqwest::Client,
    /// The server's state (for direct access to the service in tests).
    pub state: AppState,
    /// The server's clock: advance it instead of sleeping.
    pub clock: ManualClock,
    /// The data directory (deleted on drop).
    pub dir: tempfile::TempDir,
    /// The PostgreSQL URL, when not on the SQLite file in `dir`.
    database_url: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A successful token response.
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// `bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: i64,
    /// The refresh token.
    pub refresh_token: Option<String>,
    /// Granted scope (empty when the answer has none: a client with no scopes).
    #[serde(default)]
    pub scope: String,
}

/// Starts a server with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after letting `configure` adjust the configuration.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(None, configure).await
}

/// Starts a server on the given database URL (e.g. a [`pg::TestDatabase`]), or on a fresh
/// SQLite file when `None`.
pub async fn spawn_app_on(
    database_url: Option<&str>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.set_public_addr(addr);
    config.bootstrap_admin_password = Some(secrecy::SecretString::from(ADMIN_PASSWORD.to_owned()));
    if let Some(url) = database_url {
        config.database = tessera_server::config::DatabaseConfig::Url(secrecy::SecretString::from(
            url.to_owned(),
        ));
        config.master_key = Some(secrecy::SecretString::from(TEST_MASTER_KEY.to_owned()));
    }
    configure(&mut config);
    let clock = ManualClock::starting_now();
    let prepared = tessera_server::prepare(config, Arc::new(clock.clone()))
        .await
        .expect("server prepares");
    let state = prepared.state;
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(tessera_server::run(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestApp {
        addr,
        base: format!("http://{addr}"),
        client,
        state,
        clock,
        dir,
        database_url: database_url.map(str::to_owned),
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// The server clock's current time (Unix seconds).
    #[must_use]
    pub fn now(&self) -> i64 {
        tessera_auth::Clock::now(&self.clock)
    }

    /// Moves the server clock forward and lets the server catch up on anything scheduled
    /// (key activations, revocation pruning).
    pub async fn advance(&self, secs: i64) {
        self.clock.advance(secs);
        self.state.auth.sync().await.unwrap();
    }

    /// Runs `sql` (one or more statements) on the server's database directly: for tests
    /// that break the schema on purpose (a trigger that makes a write fail, say).
    pub async fn execute_sql(&self, sql: &str) {
        use sqlx::Connection as _;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.database_url {
            Some(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(self.dir.path().join("tessera.db"));
                let mut c = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Runs `sql`, a query of one text column, on the server's database directly, and
    /// returns its rows: for tests of what the database holds (a secret that must not be
    /// stored, say).
    pub async fn query_text(&self, sql: &str) -> Vec<String> {
        use sqlx::Connection as _;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.database_url {
            Some(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
            None => sqlite_query_text(self.dir.path(), sql).await,
        }
    }

    /// The absolute URL of `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /token` with a form.
    pub async fn post_token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.url("/token"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The password grant, exactly as the tutorial's client sends it.
    pub async fn password_grant(&self, username: &str, password: &str) -> reqwest::Response {
        self.post_token(&[("username", username), ("password", password)])
            .await
    }

    /// Logs in and returns the tokens, failing the test on any error.
    pub async fn login(&self, username: &str, password: &str) -> Tokens {
        let res = self.password_grant(username, password).await;
        let status = res.status();
        let body = res.text().await.unwrap();
        assert_eq!(status, 200, "login of {username} failed: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Logs in as the bootstrap admin.
    pub async fn admin_login(&self) -> Tokens {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// The refresh grant.
    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// `GET /users/me` with a bearer token.
    pub async fn me(&self, access_token: &str) -> reqwest::Response {
        self.client
            .get(self.url("/users/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// `POST /logout` with a bearer token (ends that token's session).
    pub async fn logout(&self, access_token: &str) -> reqwest::Response {
        self.client
            .post(self.url("/logout"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// A GET with a bearer token.
    pub async fn get_auth(&self, path: &str, access_token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// Creates a user directly through the service.
    pub async fn create_user(&self, username: &str, password: &str, roles: &[&str]) -> User {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        self.state
            .auth
            .create_user(
                username,
                Zeroizing::new(password.to_owned()),
                &roles,
                &Actor::System,
                &RequestMeta::default(),
            )
            .await
            .unwrap()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs `sql`, a query of one text column, on the SQLite database in the data directory
/// `data_dir` (a server's, running or stopped), and returns its rows.
pub async fn sqlite_query_text(
    data_dir: &std::path::Path,
    sql: impl sqlx::SqlSafeStr,
) -> Vec<String> {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.join("tessera.db"));
    let mut c = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
}
