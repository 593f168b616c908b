//! The integration test binary of `tessera-jose` (STYLE §7): one binary, public API only.
//!
//! Module map — where new tests go:
//!
//! - `common`: shared helpers (test-data loading, hex, the fixed clock, one key per
//!   algorithm generated once). No tests.
//! - `rfc_examples`: `tests/data/rfc-examples.json` (RFC 7515 App. A, RFC 7519 §3.1,
//!   RFC 8037 App. A and the negatives derived from them).
//! - `rfc7520`: the RFC 7520 cookbook in `tests/data/rfc7520/` (JWS outputs, the §3 JWKs,
//!   RFC 8037 Ed25519, the RFC 7797 `b64` case).
//! - `wycheproof_jws`: Wycheproof `json_web_signature_test.json` and the JWS part of
//!   `json_web_crypto_test.json`, with the documented upstream errata; and the `private`
//!   JWKs of those files and `json_web_key_test.json`, checked against their public halves.
//! - `wycheproof_jwk`: Wycheproof `json_web_key_test.json` through `KeySet::from_jwks`.
//! - `wycheproof_primitives`: Wycheproof ECDSA (P1363), Ed25519, RSA PKCS#1 v1.5, RSA-PSS
//!   and HMAC files through `VerifyingKey::verify_signature`.
//! - `negative`: the attack corpus, one table line per attack, each asserting the exact
//!   `Error` variant. Regression tests for bugs (fuzz and proptest findings included) go
//!   here too, at the bottom.
//! - `properties`: proptest round trips for every algorithm, tamper detection, and
//!   "parsing never panics".
//! - `differential`: interoperability with the `jsonwebtoken` crate in both directions.
//!
//! New vectors go under `tests/data/` (with their licence) and are read through
//! `common::data`; new attacks are one more line in `negative`'s table.

// Test code: a panic is a test failure with a message, which is what we want here. The
// workspace denies these lints for library code only; clippy.toml's allow-*-in-tests does not
// reach helper functions outside `#[test]` items, hence this crate-wide allow.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod differential;
mod negative;
mod properties;
mod rfc7520;
mod rfc_examples;
mod wycheproof_jwk;
mod wycheproof_jws;
mod wycheproof_primitives;
