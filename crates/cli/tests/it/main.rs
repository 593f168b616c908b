//! The integration test binary of `tessera-cli` (STYLE §7): one binary that drives the
//! built `tessera` executable through `assert_cmd`, as a user would.
//!
//! Module map — where new tests go:
//!
//! - `common`: shared helpers (running the binary, temp dirs, key generation, the fixed
//!   `--now`, reading `crates/jose/tests/data`). No tests.
//! - `generate`: `tessera keys generate` (every algorithm, JWK and PEM, file mode,
//!   no overwriting, the thumbprint on stderr).
//! - `round_trip`: generate → `token encode` → `token verify` for every algorithm, with
//!   JWK/PEM keys (private and public) and every `--secret` form; encode's claim flags.
//! - `verify`: refusals (exit 1, one precise line), `--explain`, `--now`, stdin, several
//!   keys and `kid` selection, `--jwks-url` against a local HTTP server.
//! - `decode`: the UNVERIFIED label, RFC 3339 dates, `alg: none` and non-claims payloads.
//! - `usage`: bad input and configuration (exit 2): missing files, malformed keys, bad
//!   times, unknown algorithms, missing `--alg`, short secrets, misused claims.
//! - `rfc_vectors`: the RFC 7515/7519/8037 examples and the RFC 7520 cookbook through
//!   `token verify` (`--jws` and full JWT validation).
//! - `wycheproof`: Wycheproof JWS vectors through `token verify --jws`, with the JOSE
//!   core's documented errata.
//! - `completions`: `tessera completions bash|zsh|fish`.
//! - `config`: `check-config`: the precedence of file, environment and flags, and bad values.
//! - `operations`: the server binary's JSON logs (no secrets, request ids), TLS files
//!   checked at start and reloaded on SIGHUP, graceful shutdown on SIGTERM.
//! - `admin`: users (add, list, show, roles, disable, passwd, delete, import, unlock,
//!   reset-mfa), keys, sessions, clients and the audit log on a real data directory, with
//!   a real `tessera serve` beside it where the effect shows only at login.

// Test code: a panic is a test failure with a message, which is what we want here. The
// workspace denies these lints for library code only; clippy.toml's allow-*-in-tests does not
// reach helper functions outside `#[test]` items, hence this crate-wide allow.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod admin;
mod common;
mod completions;
mod config;
mod decode;
mod generate;
mod operations;
mod rfc_vectors;
mod round_trip;
mod usage;
mod verify;
mod wycheproof;
