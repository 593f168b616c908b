//! `tessera-axum`: verify Tessera access tokens (or any issuer's JWTs) in your own axum
//! services, the way the seed tutorial's `Depends(get_current_user)` does in FastAPI, but
//! with the checks that tutorial leaves out.
//!
//! # What it does
//!
//! * **Extractors.** [`Authenticated<C>`] in a handler's arguments requires a valid bearer
//!   token and hands over its claims, with your own claims type `C`;
//!   `Option<Authenticated<C>>` is `None` when no `Authorization` header was sent but still
//!   rejects a bad one; [`RequireRole`] / [`RequireScope`] (declare names with [`role!`] and
//!   [`scope!`]) or [`Authenticated::require_role`] add a permission check in one line.
//!   Rejections are RFC 6750 §3 answers ([`AuthRejection`]).
//! * **Keys.** A static key or HMAC secret, a JWK Set document, or an issuer URL whose
//!   metadata names the `jwks_uri`. Remote keys are cached ([`JwksOptions`]): `Cache-Control:
//!   max-age` (less its `Age`) honoured within bounds, refreshed in the background before
//!   they go stale, kept when a refresh fails but for at most
//!   [`JwksOptions::max_staleness`] (1 day) past their lifetime, replaced by no keys at all
//!   when the issuer publishes an empty set or one with no key this verifier can use
//!   (RFC 7517 §5: the set is the keys it trusts, so no token verifies until it publishes
//!   usable keys again), fetched once for any number of concurrent
//!   requests that need them (each waits for that fetch at most
//!   [`JwksOptions::max_fetch_wait`]), and re-fetched for an unknown `kid` at most once per
//!   cooldown (twice when a runtime shuts down mid-fetch).
//! * **A verified-token cache.** A token seen before skips the signature check. The key is
//!   the SHA-256 of the exact token; expiry and revocation are checked on every use.
//! * **Revocation.** With a [`RevocationFeed`], a background task follows the issuer's
//!   `GET /revocations?since=` log, so a logout or a detected refresh-token theft on the
//!   server is refused here within about a poll interval (1 s by default), without calling
//!   the issuer per request. It fails open unless
//!   [`VerifierBuilder::revocation_feed_max_staleness`] bounds how old it may be. Reads of
//!   the feed go one at a time: the poll and any number of concurrent
//!   [`Verifier::sync_revocations`] share a read, or the next one when they arrive after a
//!   read has sent its request (its answer could predate them).
//!
//! # Design
//!
//! * **Strict by default.** The algorithm is the key's (a token cannot choose it), `exp` is
//!   required, `typ` must be `at+jwt` (RFC 9068; [`VerifierBuilder::accept_any_typ`] for
//!   plain JWTs), `iss` and `aud` are required once configured (keys from a bare JWKS URL
//!   need an issuer, or [`VerifierBuilder::accept_any_issuer`]; with no audience
//!   configured, a token naming one is refused, RFC 7519 §4.1.3), unknown `crit` headers
//!   are refused, and 30 s of clock skew is allowed. Verification itself is
//!   [`tessera_jose`]'s: this crate adds no cryptography and no token parsing of its own.
//! * **Only the issuer is fetched.** Keys come from the configured issuer or JWKS URL,
//!   never from a token (`jku`, `x5u` and embedded keys are ignored); a discovered
//!   `jwks_uri` must share the issuer's origin unless allowed; redirects stay on the same
//!   origin; plain `http` is for loopback hosts only; answers are size- and time-limited.
//! * **Outside, one answer; inside, the reason.** Every bad token gets the same
//!   `invalid_token`; the precise reason (which claim, by how much) goes to
//!   `tracing::debug!` with target `tessera::auth`.
//! * **Light.** The extractor needs `axum-core` and `http`, not the axum framework;
//!   state reaches it through [`axum_core::extract::FromRef`] (axum's "for library
//!   authors" pattern), so a [`Verifier`] can live inside any app state.
//!
//! # What it does not do
//!
//! No token issuance, no login, no per-request introspection (the feed replaces it), no
//! JWE, no DPoP or mTLS-bound tokens, no cookies. The library reads no files or environment
//! variables: read a JWKS file yourself and pass its text to
//! [`VerifierBuilder::jwks_json`]. Without a revocation feed, a verifier accepts a token
//! until it expires, whatever happened on the server.
//!
//! # Example
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use serde::{Deserialize, Serialize};
//! use tessera_axum::{Authenticated, RequireRole, RevocationFeed, Verifier};
//!
//! #[derive(Deserialize, Serialize)]
//! struct User {
//!     preferred_username: String,
//!     role: Option<String>,
//! }
//!
//! tessera_axum::role!(Admin = "admin");
//!
//! async fn me(user: Authenticated<User>) -> Json<User> {
//!     Json(user.into_claims().custom)
//! }
//!
//! async fn admin_only(_admin: RequireRole<Admin>) -> &'static str {
//!     "secret stuff"
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder()
//!     .issuer_url("https://auth.example.com")
//!     .audience("https://auth.example.com")
//!     .revocation_feed(RevocationFeed::new("orders-api", "its client secret"))
//!     .build()?;
//! let app = Router::new()
//!     .route("/users/me", get(me))
//!     .route("/admin", get(admin_only))
//!     .with_state(verifier);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod clock;
pub mod error;
mod extract;
mod fetch;
mod jwks;
mod revocation;
mod task;
mod token_cache;
mod verifier;

pub use clock::{Clock, SystemClock};
pub use error::Error;
pub use extract::{AuthRejection, RequireRole, RequireScope, RoleName, ScopeName};
pub use jwks::{JwksOptions, KeyStatus};
pub use revocation::RevocationFeed;
pub use tessera_jose;
pub use verifier::{ACCESS_TOKEN_TYP, Authenticated, Verifier, VerifierBuilder, VerifierStats};
