//! Property tests (proptest): sign→verify round trips for every algorithm, random claims
//! surviving a round trip, any single-byte change breaking a token, and "parsing arbitrary
//! input never panics" for every entry point that takes untrusted text.
//!
//! Keys come from `common::key` (generated once; no key generation per case). Case counts
//! are modest so the module runs in seconds in a debug build.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_jose::{
    Algorithm, Audience, Claims, Jwk, JwkSet, KeySet, Limits, NoCustomClaims, NumericDate,
    SigningKey, Unverified, Validation, VerifyingKey, base64url, decode_unverified,
};

use crate::common::{NOW, key, replace_byte};

fn algorithm() -> impl Strategy<Value = Algorithm> {
    select(Algorithm::ALL.to_vec())
}

/// Custom claims with a few shapes; none shares a name with a registered claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Custom {
    role: String,
    level: u32,
    tags: Vec<String>,
    admin: Option<bool>,
}

fn custom() -> impl Strategy<Value = Custom> {
    (
        any::<String>(),
        any::<u32>(),
        prop::collection::vec(any::<String>(), 0..4),
        any::<Option<bool>>(),
    )
        .prop_map(|(role, level, tags, admin)| Custom {
            role,
            level,
            tags,
            admin,
        })
}

fn audience() -> impl Strategy<Value = Option<Audience<'static>>> {
    prop_oneof![
        Just(None),
        any::<String>().prop_map(|a| Some(Audience::One(a.into()))),
        prop::collection::vec(any::<String>(), 0..4)
            .prop_map(|v| Some(Audience::Many(v.into_iter().map(Into::into).collect()))),
    ]
}

/// A time that is awkward for arithmetic: the extremes, the ±2^53 JSON limits, or anything.
fn awkward_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
        Just((1 << 53) - 1),
        Just(-(1 << 53) + 1),
        Just(NOW),
        any::<i64>(),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        select(vec![
            "none", "HS256", "RS256", "ES256", "EdDSA", "b64", "exp", "at+jwt"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(member_name(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Member names: the ones the crate reads, and anything else.
fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "alg", "kid", "typ", "cty", "crit", "jwk", "jku", "x5c", "b64", "iss", "sub", "aud",
            "exp", "nbf", "iat", "jti", "kty", "crv", "x", "y", "n", "e", "d", "k", "use",
            "key_ops", "keys",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

/// A JWK-shaped JSON object: plausible members with random contents.
fn jwk_json() -> impl Strategy<Value = String> {
    let b64 = |max: usize| {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..max).prop_map(base64url::encode),
            any::<String>(),
        ]
    };
    (
        select(vec!["RSA", "EC", "OKP", "oct", "AES", ""]),
        prop::option::of(select(vec![
            "P-256",
            "P-384",
            "P-521",
            "Ed25519",
            "X25519",
            "secp256k1",
        ])),
        prop::option::of(select(
            Algorithm::ALL
                .iter()
                .map(|a| a.as_str())
                .chain(["none", "ES521", "A256GCM"])
                .collect::<Vec<_>>(),
        )),
        prop::option::of(select(vec!["sig", "enc", ""])),
        prop::collection::btree_map(
            select(vec![
                "x", "y", "n", "e", "d", "p", "q", "dp", "dq", "qi", "k",
            ]),
            b64(300),
            0..8,
        ),
    )
        .prop_map(|(kty, crv, alg, key_use, members)| {
            let mut obj = serde_json::Map::new();
            obj.insert("kty".into(), kty.into());
            if let Some(c) = crv {
                obj.insert("crv".into(), c.into());
            }
            if let Some(a) = alg {
                obj.insert("alg".into(), a.into());
            }
            if let Some(u) = key_use {
                obj.insert("use".into(), u.into());
            }
            for (k, v) in members {
                obj.insert(k.into(), v.into());
            }
            Value::Object(obj).to_string()
        })
}

/// Exercises a JWK the way a verifier or signer would; must never panic.
fn exercise_jwk(jwk: &Jwk) {
    let _ = jwk.thumbprint();
    let _ = jwk.to_public();
    let _ = jwk.algorithm();
    let _ = Jwk::from_json(&jwk.to_json());
    for alg in [None].into_iter().chain(Algorithm::ALL.map(Some)) {
        if let Err(e) = VerifyingKey::from_jwk(jwk, alg) {
            let _ = e.to_string();
        }
        if let Ok(k) = SigningKey::from_jwk(jwk, alg) {
            let _ = k.sign(b"x");
        }
    }
}

/// Signs exactly these header and payload bytes with the shared HS256 key.
fn hs256_token(header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        base64url::encode(header),
        base64url::encode(payload)
    );
    let sig = key(Algorithm::Hs256).sign(input.as_bytes()).unwrap();
    format!("{input}.{}", base64url::encode(sig))
}

/// Parses and validates a verified payload as claims in several shapes; must never panic.
fn exercise_claims(token: &str, now: i64) {
    let vk = key(Algorithm::Hs256).verifying_key();
    let Ok(jws) = vk.verify_jws(token, &Limits::default()) else {
        return;
    };
    for validation in [
        Validation::new(),
        Validation::new()
            .with_issuer("i")
            .with_audience("a")
            .with_required_typ("at+jwt")
            .with_leeway(u64::MAX),
        Validation::new().danger_allow_missing_exp().with_leeway(0),
    ] {
        if let Err(e) = jws.claims::<NoCustomClaims>(&validation, now) {
            let _ = e.to_string();
        }
        if let Err(e) = jws.claims::<BTreeMap<String, Value>>(&validation, now) {
            let _ = e.to_string();
        }
        if let Err(e) = jws.claims::<Custom>(&validation, now) {
            let _ = e.to_string();
        }
    }
}

#[test]
fn every_algorithm_round_trips_and_refuses_every_other_key() {
    let mut claims = Claims::new(NoCustomClaims);
    claims.registered.sub = Some("alice".into());
    claims.registered.exp = Some(NumericDate(NOW + 60));
    for alg in Algorithm::ALL {
        let signer = key(alg);
        let jws = signer
            .sign_jws(b"payload", Some("JOSE"), Some("text/plain"))
            .unwrap();
        let verified = signer
            .verifying_key()
            .verify_jws(&jws, &Limits::default())
            .unwrap();
        assert_eq!(verified.payload(), b"payload", "{alg}");
        assert_eq!(verified.header().typ(), Some("JOSE"), "{alg}");
        assert_eq!(verified.header().cty(), Some("text/plain"), "{alg}");

        let jwt = signer.sign_jwt(&claims, Some("JWT")).unwrap();
        let verified = signer
            .verifying_key()
            .verify_jwt::<NoCustomClaims>(&jwt, &Validation::new(), NOW)
            .unwrap();
        assert_eq!(verified.claims.registered, claims.registered, "{alg}");

        for other in Algorithm::ALL.into_iter().filter(|o| *o != alg) {
            let err = key(other)
                .verifying_key()
                .verify_jws(&jws, &Limits::default());
            assert!(
                matches!(err, Err(tessera_jose::Error::AlgorithmMismatch { .. })),
                "{alg} token under {other} key: {err:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_payload_round_trips(
        alg in algorithm(),
        payload in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let signer = key(alg);
        let token = signer.sign_jws(&payload, None, None).unwrap();
        let verified = signer.verifying_key().verify_jws(&token, &Limits::default()).unwrap();
        prop_assert_eq!(verified.payload(), payload.as_slice());
        prop_assert_eq!(verified.header().algorithm(), alg);
        prop_assert_eq!(verified.header().kid(), signer.kid());
    }

    #[test]
    fn random_claims_survive_the_round_trip(
        alg in algorithm(),
        iss in any::<Option<String>>(),
        sub in any::<Option<String>>(),
        jti in any::<Option<String>>(),
        aud in audience(),
        exp in 1..100_000_000i64,
        nbf in prop::option::of(-100_000_000..=0i64),
        iat in prop::option::of(-100_000_000..=0i64),
        custom in custom(),
    ) {
        let mut claims = Claims::new(custom);
        claims.registered.iss = iss.map(Into::into);
        claims.registered.sub = sub.map(Into::into);
        claims.registered.jti = jti.map(Into::into);
        claims.registered.aud = aud;
        claims.registered.exp = Some(NumericDate(NOW + exp));
        claims.registered.nbf = nbf.map(|d| NumericDate(NOW + d));
        claims.registered.iat = iat.map(|d| NumericDate(NOW + d));

        let signer = key(alg);
        let token = signer.sign_jwt(&claims, Some("at+jwt")).unwrap();
        let jwt = signer
            .verifying_key()
            .verify_jwt::<Custom>(&token, &Validation::new().with_required_typ("at+jwt"), NOW)
            .unwrap();
        prop_assert_eq!(&jwt.claims.registered, &claims.registered);
        prop_assert_eq!(&jwt.claims.custom, &claims.custom);
        // A key set holding the key finds it by the token's kid.
        let set = KeySet::new([signer.verifying_key()]).unwrap();
        prop_assert!(set.verify_jwt::<Custom>(&token, &Validation::new(), NOW).is_ok());
    }

    #[test]
    fn any_single_byte_change_breaks_the_token(
        alg in algorithm(),
        index in any::<prop::sample::Index>(),
        replacement in 0u8..128,
    ) {
        let signer = key(alg);
        let token = signer.sign_jws(b"{\"sub\":\"alice\"}", Some("JWT"), None).unwrap();
        let i = index.index(token.len());
        prop_assume!(token.as_bytes()[i] != replacement);
        let tampered = replace_byte(&token, i, replacement);
        let result = signer.verifying_key().verify_jws(&tampered, &Limits::default());
        prop_assert!(
            result.is_err(),
            "byte {} -> {:?} accepted: {}",
            i,
            replacement as char,
            tampered
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsing_arbitrary_text_never_panics(s in any::<String>()) {
        let limits = Limits::default();
        if let Err(e) = Unverified::parse(&s, &limits) {
            let _ = e.to_string();
        }
        let _ = decode_unverified(&s, &limits);
        let _ = Jwk::from_json(&s);
        let _ = JwkSet::from_json(&s);
        let _ = JwkSet::from_json_lenient(&s);
        let _ = key(Algorithm::Es256).verifying_key().verify_jws(&s, &limits);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let s = String::from_utf8_lossy(&bytes);
        let limits = Limits { max_token_len: 1 << 16, max_header_len: 1 << 14 };
        let _ = Unverified::parse(&s, &limits);
        let _ = decode_unverified(&s, &limits);
        let _ = Jwk::from_json(&s);
        let _ = JwkSet::from_json(&s);
        let _ = JwkSet::from_json_lenient(&s);
        // The same bytes as every segment of a token, validly encoded.
        let b = base64url::encode(&bytes);
        let token = format!("{b}.{b}.{b}");
        let _ = Unverified::parse(&token, &limits);
        let _ = decode_unverified(&token, &limits);
        exercise_claims(&hs256_token(&bytes, &bytes), NOW);
    }

    #[test]
    fn compact_shaped_tokens_never_panic(
        header in prop::collection::btree_map(member_name(), json_value(), 0..6),
        payload in json_value(),
        signature in prop::collection::vec(any::<u8>(), 0..140),
        alg in algorithm(),
    ) {
        let header = Value::Object(header.into_iter().collect()).to_string();
        let payload = payload.to_string();
        let token = format!(
            "{}.{}.{}",
            base64url::encode(&header),
            base64url::encode(&payload),
            base64url::encode(&signature)
        );
        if let Ok(u) = Unverified::parse(&token, &Limits::default()) {
            let _ = u.header().kid();
            let _ = u.verify(&key(alg).verifying_key());
        }
        let _ = decode_unverified(&token, &Limits::default());
        // Signed for real, so the claims parser sees the payload.
        exercise_claims(&hs256_token(header.as_bytes(), payload.as_bytes()), NOW);
        exercise_claims(&hs256_token(br#"{"alg":"HS256"}"#, payload.as_bytes()), NOW);
    }

    #[test]
    fn claim_validation_and_error_messages_never_panic(
        exp in prop::option::of(awkward_time()),
        nbf in prop::option::of(awkward_time()),
        iat in prop::option::of(awkward_time()),
        float_exp in any::<f64>(),
        now in awkward_time(),
    ) {
        // Registered times as JSON numbers at the edges of what the parser accepts.
        let mut claims = serde_json::Map::new();
        for (name, value) in [("exp", exp), ("nbf", nbf), ("iat", iat)] {
            if let Some(v) = value {
                claims.insert(name.into(), v.into());
            }
        }
        let header = br#"{"alg":"HS256"}"#;
        let json = Value::Object(claims.clone()).to_string();
        exercise_claims(&hs256_token(header, json.as_bytes()), now);
        claims.insert("exp".into(), float_exp.into());
        let json = Value::Object(claims).to_string();
        exercise_claims(&hs256_token(header, json.as_bytes()), now);
    }

    #[test]
    fn jwk_parsing_and_key_building_never_panic(json in jwk_json()) {
        if let Ok(jwk) = Jwk::from_json(&json) {
            exercise_jwk(&jwk);
        }
        let set = format!(r#"{{"keys":[{json},{json}]}}"#);
        if let Ok(set) = JwkSet::from_json(&set) {
            let _ = KeySet::from_jwks(&set);
            let _ = KeySet::from_jwks_lenient(&set);
            let _ = set.to_public();
        }
    }
}
