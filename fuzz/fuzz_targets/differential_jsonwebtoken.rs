//! Differential target: tessera-jose and the `jsonwebtoken` crate (11.1, aws-lc-rs backend),
//! given the same key, must agree on accept/reject, for HS256, HS384, HS512, RS256, ES256
//! and EdDSA.
//!
//! Input: the first byte picks the algorithm (`% 6`); the second the mode:
//! * even: the rest is `header JSON 0x00 payload JSON`, which this target encodes and signs
//!   with the algorithm's fixed key, so both libraries see validly signed, hostile JSON;
//! * odd: the rest is the token text itself (mutated tokens, foreign signatures).
//!
//! Both verify against the wall clock (jsonwebtoken reads it itself), with the same leeway,
//! issuer and audience, and the same required claims. Where the two are *meant* to differ,
//! the input is normalised away, but only after asserting that tessera is the stricter one
//! (see `tessera_is_stricter`): tessera never accepts what it documents as refused.
//!
//! Known, intended disagreements (tessera stricter, by design; docs/security.md):
//! 1. `crit` present: tessera implements no extension and refuses any `crit` (RFC 7515
//!    §4.1.11); jsonwebtoken parses it and ignores it.
//! 2. Size caps: tessera refuses tokens over 8 KiB and encoded headers over 2 KiB before
//!    parsing; jsonwebtoken has no caps.
//! 3. NumericDate types: tessera wants `exp`/`nbf`/`iat` to be JSON numbers within ±2^53
//!    (where JSON numbers are exact) and refuses strings, booleans and the rest; jsonwebtoken
//!    parses `exp`/`nbf` as u64 and never reads `iat`. RFC 7519 §2 allows fractional and
//!    negative NumericDates, which tessera rounds (`exp` down, `nbf`/`iat` up) and
//!    jsonwebtoken refuses: for those (jsonwebtoken the stricter) the comparison is
//!    skipped, not asserted.
//! 4. `iat` in the future: tessera refuses it (beyond the leeway); jsonwebtoken never checks
//!    `iat`.
//! 5. Duplicate member names in the header or claims: tessera refuses them (RFC 7515 §5.2
//!    allows refusing; RFC 8725 §3.12 recommends it); serde_json's map keeps the last one.
//! 6. Registered claims of the wrong type (`iss`/`sub`/`jti` not strings, `aud` not a
//!    string or array of strings) and header members of the wrong type (`typ`, `cty`, `kid`
//!    not strings): tessera refuses; jsonwebtoken ignores claims it is not asked to check.
//! 7. Embedded key headers (`jwk`, `jku`, `x5u`, `x5c`, `x5t`, `x5t#S256`): tessera ignores
//!    their content; jsonwebtoken parses them into typed fields and refuses malformed ones.
//!    Neither uses them to verify. Not asserted either way.
//! 8. Header or claims that are not a JSON object, or not UTF-8 / contain lone surrogates
//!    escapes: both must refuse; compared as is.
//! 9. Near a time boundary (±2 s of `exp`/`nbf`/`iat` + leeway) the two clock reads may
//!    straddle it: skipped.

#![no_main]

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm as JwtAlg, DecodingKey, Validation as JwtValidation};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use tessera_jose::{Algorithm, Jwk, Limits, SigningKey, Validation, base64url};

const ISS: &str = "https://issuer.example";
const AUD: &str = "https://api.example";
const LEEWAY: u64 = 30;

/// Fixed keys from the RFCs, so every run and reproduction uses the same ones.
const RSA_JWK: &str = include_str!("../seeds/jwk_parse/rfc7520-3_4.rsa_private_key");
const ES256_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;
const ED_JWK: &str = include_str!("../seeds/jwk_parse/rfc8037-okp");
const HS_SECRET: &[u8; 64] = b"differential-fuzzing-secret-0123456789abcdef-0123456789abcdef-01";

struct Pair {
    alg: Algorithm,
    signer: SigningKey,
    theirs: DecodingKey,
    their_alg: JwtAlg,
}

static PAIRS: LazyLock<Vec<Pair>> = LazyLock::new(|| {
    let mut v = Vec::new();
    for (alg, their_alg, bytes) in [
        (Algorithm::Hs256, JwtAlg::HS256, &HS_SECRET[..32]),
        (Algorithm::Hs384, JwtAlg::HS384, &HS_SECRET[..48]),
        (Algorithm::Hs512, JwtAlg::HS512, &HS_SECRET[..]),
    ] {
        v.push(Pair {
            alg,
            signer: SigningKey::from_hmac_secret(alg, bytes).expect("fixed secret"),
            theirs: DecodingKey::from_secret(bytes),
            their_alg,
        });
    }
    for (alg, their_alg, jwk) in [
        (Algorithm::Rs256, JwtAlg::RS256, RSA_JWK),
        (Algorithm::Es256, JwtAlg::ES256, ES256_JWK),
        (Algorithm::EdDsa, JwtAlg::EdDSA, ED_JWK),
    ] {
        let signer = SigningKey::from_jwk(&Jwk::from_json(jwk).expect("fixed JWK"), Some(alg))
            .expect("fixed key");
        // Each library imports the public half from the same JWK JSON.
        let public = signer.to_public_jwk().expect("public JWK").to_json();
        let their_jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_str(&public).expect("jsonwebtoken reads our JWK");
        v.push(Pair {
            alg,
            theirs: DecodingKey::from_jwk(&their_jwk).expect("jsonwebtoken key"),
            signer,
            their_alg,
        });
    }
    v
});

fuzz_target!(|data: &[u8]| {
    let [sel, mode, rest @ ..] = data else { return };
    let pair = &PAIRS[usize::from(*sel) % PAIRS.len()];
    let token = if mode % 2 == 0 {
        signed(pair, rest)
    } else {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    };
    compare(pair, &token);
});

/// `header 0x00 payload`, base64url-encoded and signed with the pair's key.
fn signed(pair: &Pair, input: &[u8]) -> String {
    let (header, payload) = match input.iter().position(|&b| b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &b""[..]),
    };
    let mut token = base64url::encode(header);
    token.push('.');
    base64url::encode_into(payload, &mut token);
    let sig = pair.signer.sign(token.as_bytes()).expect("signing never fails");
    token.push('.');
    base64url::encode_into(sig, &mut token);
    token
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    i64::try_from(secs).expect("in range")
}

fn compare(pair: &Pair, token: &str) {
    let now = now();
    let validation = Validation::new()
        .with_issuer(ISS)
        .with_audience(AUD)
        .with_leeway(LEEWAY);
    let ours = pair
        .signer
        .verifying_key()
        .verify_jwt::<Map<String, Value>>(token, &validation, now);

    let mut theirs_v = JwtValidation::new(pair.their_alg);
    theirs_v.leeway = LEEWAY;
    theirs_v.validate_nbf = true;
    theirs_v.set_issuer(&[ISS]);
    theirs_v.set_audience(&[AUD]);
    // tessera requires exp, and iss/aud once configured.
    theirs_v.set_required_spec_claims(&["exp", "iss", "aud"]);
    let theirs = jsonwebtoken::decode::<Map<String, Value>>(token, &pair.theirs, &theirs_v);

    if let Some(reason) = tessera_is_stricter(token, now) {
        assert!(
            ours.is_err(),
            "{:?}: tessera accepted a token it must refuse ({reason}): {token}",
            pair.alg
        );
        return;
    }
    match (ours.is_ok(), theirs.is_ok()) {
        (true, true) | (false, false) => {}
        (o, t) => {
            if near_time_boundary(token, now)
                || has_embedded_key_member(token)
                || has_fractional_or_negative_date(token)
            {
                return;
            }
            panic!(
                "{:?}: tessera {} but jsonwebtoken {}: {token}\n tessera: {:?}\n jsonwebtoken: {:?}",
                pair.alg,
                if o { "accepted" } else { "refused" },
                if t { "accepted" } else { "refused" },
                ours.err(),
                theirs.err(),
            );
        }
    }
}

fn segment_json(token: &str, i: usize) -> Option<(Vec<u8>, Value)> {
    let seg = token.split('.').nth(i)?;
    let bytes = base64url::decode(seg)?;
    let v = serde_json::from_slice(&bytes).ok()?;
    Some((bytes, v))
}

/// The documented cases (1–6 above) where tessera must refuse whatever jsonwebtoken does.
fn tessera_is_stricter(token: &str, now: i64) -> Option<&'static str> {
    let limits = Limits::default();
    if token.len() > limits.max_token_len {
        return Some("token over the size cap");
    }
    let header_seg = token.split('.').next().unwrap_or_default();
    if header_seg.len() > limits.max_header_len {
        return Some("header over the size cap");
    }
    if token.split('.').count() != 3 {
        return None;
    }
    if let Some((bytes, header)) = segment_json(token, 0) {
        if header.get("crit").is_some() {
            return Some("crit present");
        }
        if has_duplicate_members(&bytes) {
            return Some("duplicate header members");
        }
        for m in ["typ", "cty", "kid"] {
            if header.get(m).is_some_and(|v| !v.is_string()) {
                return Some("header member of the wrong type");
            }
        }
    }
    if let Some((bytes, claims)) = segment_json(token, 1) {
        if has_duplicate_members(&bytes) {
            return Some("duplicate claims");
        }
        const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
        for c in ["exp", "nbf", "iat"] {
            if claims
                .get(c)
                .is_some_and(|v| v.as_f64().is_none_or(|f| f.floor().abs() > MAX_SAFE))
            {
                return Some("a NumericDate that is not a number within 2^53");
            }
        }
        if claims
            .get("iat")
            .and_then(Value::as_i64)
            .is_some_and(|iat| iat > now.saturating_add(LEEWAY as i64))
        {
            return Some("iat in the future");
        }
        for c in ["iss", "sub", "jti"] {
            if claims.get(c).is_some_and(|v| !v.is_string()) {
                return Some("a string claim of the wrong type");
            }
        }
        if let Some(aud) = claims.get("aud") {
            let ok = aud.is_string()
                || aud
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string));
            if !ok {
                return Some("aud of the wrong type");
            }
        }
    }
    None
}

fn near_time_boundary(token: &str, now: i64) -> bool {
    let Some((_, claims)) = segment_json(token, 1) else {
        return false;
    };
    let leeway = LEEWAY as i64;
    ["exp", "nbf", "iat"].iter().any(|c| {
        claims.get(*c).and_then(Value::as_i64).is_some_and(|t| {
            let d1 = t.saturating_add(leeway).saturating_sub(now);
            let d2 = t.saturating_sub(leeway).saturating_sub(now);
            d1.abs() <= 2 || d2.abs() <= 2
        })
    })
}

/// Case 3, jsonwebtoken the stricter: `exp`/`nbf` that are numbers but not u64.
fn has_fractional_or_negative_date(token: &str) -> bool {
    segment_json(token, 1).is_some_and(|(_, c)| {
        ["exp", "nbf"]
            .iter()
            .any(|m| c.get(*m).is_some_and(|v| v.is_number() && !v.is_u64()))
    })
}

fn has_embedded_key_member(token: &str) -> bool {
    segment_json(token, 0).is_some_and(|(_, h)| {
        ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"]
            .iter()
            .any(|m| h.get(*m).is_some())
    })
}

/// True if any JSON object in `json` repeats a member name (a streaming pass, since
/// `serde_json::Value` would silently keep the last one).
fn has_duplicate_members(json: &[u8]) -> bool {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct Dup;
    impl<'de> Visitor<'de> for Dup {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut seen = BTreeSet::new();
            let mut dup = false;
            while let Some(k) = map.next_key::<String>()? {
                dup |= !seen.insert(k);
                dup |= map.next_value::<Nested>()?.0;
            }
            Ok(dup)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut dup = false;
            while let Some(n) = seq.next_element::<Nested>()? {
                dup |= n.0;
            }
            Ok(dup)
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    struct Nested(bool);
    impl<'de> serde::Deserialize<'de> for Nested {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Dup).map(Nested)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    serde::Deserializer::deserialize_any(&mut de, Dup).unwrap_or(false)
}
