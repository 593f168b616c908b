//! Crash and outage tests against the real `tessera` binary: what a client sees, and what is
//! left in the database, when the process is killed with SIGKILL in the middle of a storm of
//! logins and refreshes, or when the database stops answering.
//!
//! Module map (where new tests go):
//! - `crash`: `kill -9` during concurrent logins, refreshes and user creation, then a restart
//!   on the same database (SQLite; PostgreSQL when it answers): database invariants and every
//!   refresh token the clients hold.
//! - `outage`: the SQLite database refusing writes (another process holds the write lock)
//!   while the server runs: verification from memory, 503 `temporarily_unavailable` with
//!   `Retry-After`, `/readyz` not ready, recovery without a restart. (PostgreSQL going away
//!   is covered in-process by `crates/server/tests/it/postgres.rs` and across real processes
//!   by `tests/instances`.)
//! - `full_disk`: the file system under the SQLite database full (a small tmpfs and a filler
//!   file; needs root to mount, and fails under `CI=true` without it): 503 with
//!   `Retry-After`, verification from memory, recovery once space is freed, a clean shutdown.
//!
//! Each test is bounded in seconds: loops stop on a count or a deadline, never on luck.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failure should panic with context"
)]

mod crash;
mod full_disk;
mod outage;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_testkit::process::ServeProcess;

/// The bootstrap admin's password in every test here.
const ADMIN_PASSWORD: &str = "chaos tests bootstrap phrase";
/// The password of every user the tests create.
const USER_PASSWORD: &str = "storm users share this passphrase";
const MASTER_KEY: &str = "c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a0";

/// Starts `tessera serve` on `data_dir` (and `database_url` when given) with limits that let
/// one test client hammer it: no per-IP rate limit, ES256 (cheap signatures).
fn serve(data_dir: &Path, database_url: Option<&str>) -> ServeProcess {
    // A retry of a refresh whose answer was lost in the crash gets the same successor
    // within this window (the default is 10 s; a slow CI restart must not outlast it).
    serve_with_grace(data_dir, database_url, "2m")
}

/// [`serve`] with another `refresh_grace_period`.
fn serve_with_grace(data_dir: &Path, database_url: Option<&str>, grace: &str) -> ServeProcess {
    let mut envs = vec![
        ("TESSERA_MASTER_KEY", MASTER_KEY),
        ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("TESSERA_SIGNING__ALG", "ES256"),
        ("TESSERA_KEYS__PUBLISH_AHEAD", "0"),
        ("TESSERA_RATE_LIMITS__TOKEN_PER_MINUTE", "0"),
        ("TESSERA_REFRESH_GRACE_PERIOD", grace),
    ];
    if let Some(url) = database_url {
        envs.push(("TESSERA_DATABASE_URL", url));
    }
    ServeProcess::start(Path::new(env!("CARGO_BIN_EXE_tessera")), data_dir, &envs)
}

/// A client with short timeouts: a killed server must not hang a test.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn json(res: reqwest::Response) -> serde_json::Value {
    let text = res.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// `POST /token` with the password grant.
async fn password_grant(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{base}/token"))
        .form(&[("username", username), ("password", password)])
        .send()
        .await
}

/// `POST /token` with the refresh grant.
async fn refresh_grant(
    http: &reqwest::Client,
    base: &str,
    refresh_token: &str,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{base}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
}

/// The admin's access token.
async fn admin_token(http: &reqwest::Client, base: &str) -> String {
    let res = password_grant(http, base, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    json(res).await["access_token"].as_str().unwrap().to_owned()
}

/// `POST /admin/users`.
async fn create_user(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    username: &str,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{base}/admin/users"))
        .bearer_auth(admin)
        .json(&serde_json::json!({
            "username": username,
            "password": USER_PASSWORD,
            "roles": ["user"],
        }))
        .send()
        .await
}

/// Asserts a 503 in the RFC 6749 §5.2 shape with `Retry-After`.
async fn assert_unavailable(what: &str, res: reqwest::Response) {
    assert_eq!(res.status(), 503, "{what}");
    let retry_after = res
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: Retry-After"))
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(retry_after >= 1, "{what}: Retry-After {retry_after}");
    let body = json(res).await;
    assert_eq!(body["error"], "temporarily_unavailable", "{what}: {body}");
}

/// Polls until `f` holds, returning how long it took, or panics after `limit`.
async fn within<F, Fut>(limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
