//! `tessera-auth`: Tessera's domain.
//!
//! Users and passwords, the OAuth token grants, access-token issuance (RFC 9068), refresh
//! rotation with reuse detection (RFC 9700 §4.14), revocation, the signing-key lifecycle
//! and the audit chain.
//!
//! It does **not** know HTTP (no status codes, headers or cookies) or SQL: storage is the
//! set of traits in [`store`], implemented by `tessera-store` for SQLite and PostgreSQL, and
//! the server maps [`AuthError`] to RFC 6749/6750 responses. Time comes from an injected
//! [`Clock`], randomness and hashing from `tessera_jose::crypto`.
//!
//! Why this split: every rule that decides whether someone is authenticated lives here,
//! in one place, testable without a socket, and reused unchanged by the HTTP server and the
//! command line.

pub mod audit;
pub mod clock;
mod context;
pub mod error;
pub mod keys;
pub mod model;
pub mod password;
pub mod revocation;
pub mod security;
pub mod service;
pub mod store;
pub mod token_cache;
pub mod tokens;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::{AuthError, Result};
pub use service::{
    AccessContext, Actor, Auth, AuthConfig, AuthParts, Bootstrapped, ClientPolicy, Introspection,
    PasswordGrant, Profile, SecondFactor, TokenResponse,
};
