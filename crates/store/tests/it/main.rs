//! The integration test binary of `tessera-store` (STYLE §7): the store conformance suite,
//! written once and run against both backends through the public API (`Database` and the
//! `tessera-auth` storage traits), like rustls runs one API suite per crypto provider.
//!
//! Every test is an `async fn <sentence>(db: TestDb)` listed in its module's
//! `conformance!(...)`, which generates `<module>::sqlite::<sentence>` and
//! `<module>::postgres::<sentence>`, each on a fresh database (see `support` for how
//! PostgreSQL is found, and skipped loudly when it is not). Run one backend with
//! `cargo test -p tessera-store --test it -- ::sqlite::` (or `::postgres::`).
//!
//! Module map — where new tests go:
//!
//! - `support`: fixtures (fresh database per test and backend, raw SQL access, the
//!   PostgreSQL drop guard and skip logic), builders for users/sessions/keys/events, and
//!   the `conformance!` macro. No store tests.
//! - `users`: `UserStore` — insert, lookups, uniqueness, listing order, updates, delete
//!   cascade.
//! - `sessions`: `SessionStore` apart from rotation — create/find, live-session listing,
//!   `revoke_session`, `revoke_user_sessions`.
//! - `rotation`: `rotate_refresh_token` — every `RotateOutcome`, grace window, reuse
//!   detection, dead sessions, concurrent rotation of one token.
//! - `revocations`: `RevocationStore` — append, `revocations_since` paging and expiry,
//!   `prune`.
//! - `keys`: `KeyStore`.
//! - `meta`: `MetaStore` and `Store::ping`.
//! - `audit`: `AuditStore` — the hash chain against `tessera_auth::audit::verify_chain`,
//!   filters, tampering by direct SQL, concurrent appends.
//! - `security`: `SecurityStore` — throttle counters and locks, TOTP state and monotonic
//!   step replay protection, recovery codes, MFA challenges (single use under concurrency,
//!   expiry, attempt counting).
//! - `postgres_only`: properties only concurrent PostgreSQL writers can break (visibility
//!   order of revocation ids); plain `#[tokio::test]`s through `support::on_postgres`.
//!
//! Regression tests for store bugs go into the module of the trait they concern, named
//! `issue_<n>_<what>` with a link to the issue.

// Test code: a panic is a test failure with a message, which is what we want here. The
// workspace denies these lints for library code only; clippy.toml's allow-*-in-tests does
// not reach helper functions outside `#[test]` items, hence this crate-wide allow.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

mod audit;
mod keys;
mod meta;
mod postgres_only;
mod revocations;
mod rotation;
mod security;
mod sessions;
mod users;
