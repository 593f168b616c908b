//! Black-box tests of the HTTP server: the real `run()` on a real socket (port 0) with a
//! fresh SQLite file per test, driven by an HTTP client (tessera-testkit).
//!
//! Module map — where new tests go:
//! - `tutorial`: the seed tutorial's client and resource-server behaviour, unchanged.
//! - `token_endpoint`: `POST /token` requests and every RFC 6749 §5.2 error shape.
//! - `bearer`: protected resources and RFC 6750 challenges.
//! - `postgres`: the server on PostgreSQL, several instances on one database.
//! - `refresh`: rotation, reuse detection, grace window, expiry, concurrency.
//! - `clients`: OAuth clients, client authentication and `client_credentials`.
//! - `revocation`: `/revoke`, `/logout`, disabling users, password resets.
//! - `introspection`: `POST /introspect`.
//! - `feed`: `GET /revocations`, the revocation feed for resource servers.
//! - `discovery`: JWKS and the metadata documents.
//! - `keys`: signing-key rotation.
//! - `account`: MFA, lockout, rate limits, password policy and changes, sessions.
//! - `admin`: the admin API and registration.
//! - `session`: cookie mode (`/session*`), CSRF, cookie + Bearer, CORS.
//! - `robustness`: malformed input never yields a 5xx.
//! - `token_cache`: the verified-token cache (revocation, expiry, key loss, capacity).
//! - `attacks`: the attack regression corpus (`tests/data/attacks.toml`, one line per attack).
//! - `operations`: `/metrics`, request ids, native TLS (reload, HSTS), graceful shutdown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failure should panic with context"
)]

mod account;
mod admin;
mod attacks;
mod bearer;
mod clients;
mod discovery;
mod feed;
mod introspection;
mod keys;
mod operations;
mod postgres;
mod refresh;
mod revocation;
mod robustness;
mod session;
mod token_cache;
mod token_endpoint;
mod tutorial;

/// Decodes a JWT's payload without verification (test inspection only).
pub fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&tessera_jose::base64url::decode(payload).unwrap()).unwrap()
}

/// Decodes a JWT's header without verification.
pub fn header_of(token: &str) -> serde_json::Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&tessera_jose::base64url::decode(h).unwrap()).unwrap()
}

/// The JSON body of a response.
pub async fn json(res: reqwest::Response) -> serde_json::Value {
    let text = res.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}
