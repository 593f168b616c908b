//! Throwaway PostgreSQL databases for server-level tests (the store's conformance suite has
//! its own, equivalent fixture). A fresh `tessera_test_<hex>` database per test, dropped on
//! drop — also when the test panics.
//!
//! `TESSERA_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) is an
//! admin URL of a server that may create databases. When it does not answer,
//! [`TestDatabase::create`] prints a loud notice and returns `None` (the caller skips),
//! unless `TESSERA_REQUIRE_POSTGRES=1`, where it panics.

use std::io::Write as _;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

/// Where PostgreSQL is expected when `TESSERA_TEST_DATABASE_URL` is unset.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A PostgreSQL database that exists for the lifetime of this value.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh database, or returns `None` (after a loud notice) when PostgreSQL is
    /// not reachable and not required.
    ///
    /// # Panics
    /// When `TESSERA_REQUIRE_POSTGRES=1` and PostgreSQL is unreachable, or creation fails.
    pub async fn create() -> Option<Self> {
        let admin_url = without_loopback_tls(
            &std::env::var("TESSERA_TEST_DATABASE_URL")
                .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned()),
        );
        let mut admin = match tokio::time::timeout(
            Duration::from_secs(5),
            PgConnection::connect(&admin_url),
        )
        .await
        {
            Ok(Ok(c)) => c,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 5 s".into(),
                };
                assert!(
                    std::env::var("TESSERA_REQUIRE_POSTGRES").map_or(true, |v| v != "1"),
                    "TESSERA_REQUIRE_POSTGRES=1 but PostgreSQL is not reachable: {why}"
                );
                let _ = writeln!(
                    std::io::stderr(),
                    "\n{bar}\nSKIPPED: PostgreSQL not reachable ({why}); this PostgreSQL test passes WITHOUT RUNNING.\n{bar}\n",
                    bar = "!".repeat(78)
                );
                return None;
            }
        };
        let name = format!("tessera_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    /// The URL of the test database.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Terminates every connection to the database (simulating a database restart or a
    /// network cut) and returns how many were killed.
    ///
    /// # Panics
    /// If the admin connection fails.
    pub async fn terminate_connections(&self) -> i64 {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .expect("admin connection");
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_all(&mut admin)
        .await
        .expect("terminate connections");
        let _ = admin.close().await;
        i64::try_from(killed.iter().filter(|k| **k).count()).unwrap_or(0)
    }
}

impl TestDatabase {
    /// Makes the database refuse (false) or accept (true) new connections, terminating the
    /// existing ones when refusing: the database "goes away" for every instance using it.
    ///
    /// # Panics
    /// If the admin connection fails.
    pub async fn set_available(&self, available: bool) {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .expect("admin connection");
        sqlx::query(AssertSqlSafe(format!(
            r#"ALTER DATABASE "{}" ALLOW_CONNECTIONS {available}"#,
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("alter database");
        let _ = admin.close().await;
        if !available {
            self.terminate_connections().await;
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Possibly inside a runtime that is shutting down: use a thread with its own.
        let cleanup = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&url).await {
                        let _ = sqlx::query(AssertSqlSafe(format!(
                            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                        )))
                        .execute(&mut admin)
                        .await;
                        let _ = admin.close().await;
                    }
                });
            }
        });
        let _ = cleanup.join();
    }
}

fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base.get(host_start..).and_then(|r| r.find('/')) {
        Some(slash) => base.get(..host_start + slash).unwrap_or(base),
        None => base,
    };
    format!("{root}/{name}{query}")
}

/// Loopback URLs without an `sslmode` connect without TLS (it protects nothing there and
/// costs ~100 ms per connection in a debug build).
fn without_loopback_tls(url: &str) -> String {
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let authority = url
        .get(host_start..)
        .unwrap_or("")
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let loopback = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|h| host_port == *h || host_port.starts_with(&format!("{h}:")));
    if !loopback || url.contains("sslmode=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=disable")
}

/// A TCP relay in front of a [`TestDatabase`] that can stall: once stalled it passes no
/// more bytes either way but keeps every connection open, which is how a hung database
/// looks to its clients (a stopped server process, a network path that drops packets, a
/// query waiting on a lock). Connections already queued keep their place; `resume` lets
/// the held bytes through.
#[derive(Debug)]
pub struct StallingRelay {
    url: String,
    stalled: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl TestDatabase {
    /// A [`StallingRelay`] to this database; connect to its [`StallingRelay::url`].
    ///
    /// # Panics
    /// If the relay cannot bind 127.0.0.1, or the database URL has no host.
    pub async fn relay(&self) -> StallingRelay {
        let (before, after) = self.url.split_once("://").expect("a URL with a scheme");
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, host)) => (format!("{user}@"), host),
            None => (String::new(), authority),
        };
        // sqlx lets these query parameters override the URL's authority, which would
        // bypass the relay and leave a test of a hung database testing nothing.
        let query = rest.split_once('?').map_or("", |(_, q)| q);
        assert!(
            !query
                .split('&')
                .any(|p| ["host", "hostaddr", "port"].contains(&p.split('=').next().unwrap_or(""))),
            "the relay rewrites the URL's host and port; give them there, not as `?host=`, \
             `?hostaddr=` or `?port=`: {}",
            self.url
        );
        let has_port = match host_port.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => host_port.contains(':'),
        };
        let upstream = if has_port {
            host_port.to_owned()
        } else {
            format!("{host_port}:5432")
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let (stalled, watch) = tokio::sync::watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, watch.clone()));
                tokio::spawn(pass(server_read, client_write, watch.clone()));
            }
        });
        StallingRelay {
            url: format!("{before}://{user}{addr}{rest}"),
            stalled,
            accept,
        }
    }
}

/// Copies `from` to `to`, holding each chunk while the relay is stalled.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // An error: the relay is gone, and the connection closes with it.
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to
            .write_all(buf.get(..n).unwrap_or_default())
            .await
            .is_err()
        {
            return;
        }
    }
}

impl StallingRelay {
    /// The database URL through the relay.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, no byte passes either way (connections stay open).
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Lets bytes pass again, the held ones first.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

impl Drop for StallingRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
