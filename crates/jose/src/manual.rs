//! # Security manual: the classic JWT pitfalls and how this crate avoids them
//!
//! Each entry names the attack, then the mechanism that stops it and the test that proves
//! it (`tests/it/negative.rs` holds the corpus; vectors live in `tests/data/`).
//!
//! ## `alg: none` (unsecured JWS)
//! RFC 7515 App. A.5 defines an unsigned JWS. Libraries that let the header choose the
//! algorithm accepted `{"alg":"none"}` tokens with an empty signature as valid.
//! **Here:** [`crate::Algorithm`] has no `none` variant; parsing `none` in any spelling is
//! [`crate::Error::UnsupportedAlgorithm`], so such a token fails at the header step.
//!
//! ## Algorithm confusion (RS256 → HS256 with the public key as HMAC secret)
//! A verifier that takes `alg` from the header and "the key" from configuration can be fed
//! an HS256 token MACed with the *public* RSA key bytes (PEM or JWK), which it then checks
//! as an HMAC secret. **Here:** every key is bound to one algorithm at construction; the
//! header's `alg` must equal it ([`crate::Error::AlgorithmMismatch`]). HMAC keys are only
//! ever built from secrets, never from PEM, and a [`crate::KeySet`] refuses to mix secrets
//! with public keys.
//!
//! ## Psychic signatures (CVE-2022-21449) and malleable ECDSA encodings
//! Java 15–18 accepted ECDSA signatures with r = s = 0. **Here:** aws-lc-rs enforces
//! 1 ≤ r, s < n; signatures must be the fixed-size `R || S` form of RFC 7518 §3.4 with the
//! curve's exact length, so DER-encoded or padded signatures are refused before the
//! primitive runs.
//!
//! ## Embedded and remote keys: `jwk`, `jku`, `x5u`, `x5c`, and `kid` injection
//! Some libraries verified a token with the key it carried (`jwk`, `x5c`) or fetched from a
//! URL it named (`jku`, `x5u`), or used `kid` as a file path or SQL fragment. **Here:** those
//! header members are parsed only to note their presence
//! ([`crate::Header::has_embedded_key_reference`]); keys come solely from the caller. A
//! `kid` is compared byte-for-byte against the key set's ids and never interpreted.
//!
//! ## Unknown critical extensions (`crit`)
//! RFC 7515 §4.1.11 requires rejecting a JWS whose `crit` lists an extension the recipient
//! does not understand; most libraries ignore it (e.g. the RFC 7797 `b64: false` switch,
//! which changes what the signature covers). **Here:** this crate implements no extension,
//! so any `crit` is [`crate::Error::UnknownCritical`], checked before the algorithm.
//!
//! ## Weak HMAC keys
//! RFC 7518 §3.2 requires an HMAC key at least as long as the hash output. Short secrets
//! ("secret", the tutorial's "your-very-secret-key") are brute-forced offline from any one
//! token. **Here:** shorter secrets are [`crate::Error::WeakKey`] when the key is built.
//! RSA moduli under 2048 bits, public exponents that are even, 1 or above 2^33, and
//! ROCA-affected moduli are refused too. `e = 3` is accepted: verification compares the
//! whole encoded message, so the small-exponent forgeries against lax PKCS#1 v1.5 parsers
//! do not apply (and Wycheproof's RSA vectors include valid `e = 3` keys).
//!
//! ## Duplicate JSON member names
//! `{"sub":"alice","sub":"admin"}` is read as `alice` by one parser and `admin` by another;
//! an attacker who can influence one copy exploits the disagreement. **Here:** the header,
//! the claims (registered and custom, escaped spellings included) and JWK objects refuse
//! duplicates ([`crate::Error::DuplicateMember`]), and [`crate::SigningKey::sign_jwt`]
//! refuses to produce them.
//!
//! ## Claim type confusion
//! `"exp":"1700000000"` (a string) or `"exp":null` silently became "no expiry" or "expiry
//! zero" in several libraries. **Here:** registered claims are type-checked
//! ([`crate::Error::InvalidClaimType`]); `exp` is required by default; `nbf` and `iat` are
//! checked whenever present; `aud` must be a string or an array of strings.
//!
//! ## Missing issuer or audience checks
//! Configuring an expected audience in jsonwebtoken does not make `aud` mandatory (its
//! issue #493), so a token without `aud` passes. **Here:** a configured issuer or audience
//! makes the claim mandatory ([`crate::Validation`]).
//!
//! ## Token substitution across token types
//! An ID token or a refresh token replayed as an access token. **Here:** callers can require
//! a `typ` ([`crate::Validation::with_required_typ`], e.g. `at+jwt` from RFC 9068, compared
//! as a case-insensitive media type).
//!
//! ## Timing leaks
//! Comparing MACs with `==` leaks how many leading bytes matched. **Here:** HMAC tags are
//! checked by aws-lc-rs' constant-time verify; [`crate::crypto::constant_time_eq`] serves
//! other comparisons, and [`crate::JwkSecret`] compares in constant time.
//!
//! ## Resource exhaustion
//! Megabyte tokens, a hundred thousand dots or deeply nested headers cost parsing time
//! before any check fails. **Here:** the total size (8 KiB) and header size (2 KiB) caps are
//! the first checks; segment counting stops at four; no JSON is parsed before its size is
//! known.
//!
//! ## Secret hygiene
//! Key material in logs or core dumps. **Here:** every key type's `Debug` omits material,
//! secret buffers are zeroized on drop, and aws-lc cleanses its own key objects.
