//! `tessera-jose`: the strict JWS/JWT/JWK core of Tessera.
//!
//! # What it is for
//!
//! Signing and verifying JSON Web Tokens (RFC 7519) in the JWS Compact Serialization
//! (RFC 7515), with keys from PEM, DER, JWK (RFC 7517, RFC 7518 §6, RFC 8037) or raw
//! secrets, and the RFC 7638 thumbprints used as key ids. Algorithms: HS256/384/512,
//! RS256/384/512, PS256/384/512, ES256/384/512 and EdDSA (Ed25519).
//!
//! # What it does not do
//!
//! No I/O, no async, no clock and no logging: the current time is an argument, keys arrive
//! as bytes, and errors carry enough detail for the caller to log. No JWE, no JSON
//! serialization of JWS, no unencoded payloads (RFC 7797). No `none` algorithm, at all.
//!
//! # Design
//!
//! * **The key decides the algorithm.** A [`SigningKey`] or [`VerifyingKey`] is bound to
//!   exactly one [`Algorithm`] when it is built; a token's `alg` must equal it or the token
//!   is refused before any cryptography runs. A [`KeySet`] selects by `kid`, then applies the
//!   same rule.
//! * **Parse once, verify often.** Keys are parsed and validated at construction (RSA size,
//!   exponent and ROCA checks, curve membership, HMAC length); verification does no key
//!   parsing and no allocation of key objects.
//! * **Cheap checks first.** Verification runs: total size cap → exactly three segments →
//!   header size cap → strict base64url header → header JSON (duplicates refused) → unknown
//!   `crit` refused → strict base64url payload and signature → algorithm and `kid` match →
//!   signature → claims JSON → claim validation ([`Unverified`] → [`VerifiedJws`] →
//!   [`Claims`]).
//! * **Typed claims, one parse.** Registered claims are parsed into typed fields
//!   ([`RegisteredClaims`]; a string `exp` is an error, not a zero) in the same pass that
//!   hands the rest to the caller's serde type, borrowing strings from the payload.
//! * **Strict defaults.** [`Validation::new`] requires `exp`, checks `nbf`/`iat`, allows 30 s
//!   of leeway; an issuer or audience, once configured, is mandatory.
//! * **One crypto boundary.** Only [`crypto`] names aws-lc-rs, the audited primitive library
//!   shared with rustls; nothing here is hand-rolled cryptography.
//!
//! The classic ways JWT libraries fail, and how each is prevented here, are in [`manual`].
//!
//! # Example
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tessera_jose::{Algorithm, Claims, NumericDate, SigningKey, Validation};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Custom {
//!     role: String,
//! }
//!
//! let key = SigningKey::generate(Algorithm::Es256)?;
//! let mut claims = Claims::new(Custom { role: "admin".into() });
//! claims.registered.sub = Some("alice".into());
//! claims.registered.iss = Some("https://auth.example".into());
//! claims.registered.exp = Some(NumericDate(1_700_000_900));
//! let token = key.sign_jwt(&claims, Some("at+jwt"))?;
//!
//! let validation = Validation::new()
//!     .with_issuer("https://auth.example")
//!     .with_required_typ("at+jwt");
//! let jwt = key.verifying_key().verify_jwt::<Custom>(&token, &validation, 1_700_000_000)?;
//! assert_eq!(jwt.claims.custom.role, "admin");
//! # Ok::<(), tessera_jose::Error>(())
//! ```

pub mod algorithm;
pub mod base64url;
pub mod claims;
pub mod crypto;
pub mod error;
pub mod header;
pub mod jwk;
pub mod jws;
pub mod key;
pub mod keyset;
pub mod manual;
mod pem;
pub mod validation;

pub use algorithm::{Algorithm, KeyKind};
pub use claims::{Audience, Claims, NoCustomClaims, NumericDate, RegisteredClaims};
pub use error::{Error, Part, Result, Segment};
pub use header::Header;
pub use jwk::{Jwk, JwkSecret, JwkSet, UnreadEntries};
pub use jws::{Unverified, UnverifiedParts, VerifiedJws, VerifiedJwt, decode_unverified};
pub use key::{SigningKey, VerifyingKey};
pub use keyset::{KeySet, SkippedKeys};
pub use validation::{Limits, RequiredClaim, Validation};
