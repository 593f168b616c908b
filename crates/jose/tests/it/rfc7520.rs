//! The RFC 7520 JOSE cookbook (`tests/data/rfc7520/`): the JWS examples of §4, the keys of
//! §3, RFC 8037's Ed25519 example and the RFC 7797 unencoded-payload example.
//!
//! The cookbook JWKs have no `alg` (except the HMAC key), so the algorithm is always passed
//! explicitly: the verifier decides, never the token.

use serde_json::Value;
use tessera_jose::{
    Algorithm, Error, JwkSet, KeySet, Limits, NoCustomClaims, SigningKey, Validation, VerifyingKey,
    base64url,
};

use crate::common::{data, jwk, str_at};

const COMPACT_EXAMPLES: [&str; 5] = [
    "jws/4_1.rsa_v15_signature.json",
    "jws/4_2.rsa-pss_signature.json",
    "jws/4_3.ecdsa_signature.json",
    "jws/4_4.hmac-sha2_integrity_protection.json",
    "curve25519/jws.json",
];

fn example(rel: &str) -> Value {
    data(&format!("rfc7520/{rel}"))
}

/// The verifying key of a single-signature example, pinned to its `input.alg`.
fn input_key(ex: &Value) -> VerifyingKey {
    let alg: Algorithm = str_at(&ex["input"], "alg").parse().unwrap();
    VerifyingKey::from_jwk(&jwk(&ex["input"]["key"]), Some(alg)).unwrap()
}

#[test]
fn cookbook_compact_outputs_verify_with_their_input_keys() {
    for rel in COMPACT_EXAMPLES {
        let ex = example(rel);
        let key = input_key(&ex);
        let compact = str_at(&ex["output"], "compact");
        let jws = key
            .verify_jws(compact, &Limits::default())
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(
            jws.payload(),
            str_at(&ex["input"], "payload").as_bytes(),
            "{rel}"
        );
        assert_eq!(jws.header().algorithm(), key.algorithm(), "{rel}");
        assert_eq!(
            jws.header().kid(),
            ex["signing"]["protected"]["kid"].as_str(),
            "{rel}"
        );
        // The same token through a key set, selected by the header's `kid` when it has one.
        let set = KeySet::new([key.clone()]).unwrap();
        assert!(set.verify_jws(compact, &Limits::default()).is_ok(), "{rel}");
        // The payloads are prose, not JWT claims.
        assert!(
            matches!(
                key.verify_jwt::<NoCustomClaims>(compact, &Validation::new(), 0),
                Err(Error::MalformedClaims { .. })
            ),
            "{rel}"
        );
    }
}

#[test]
fn reproducible_cookbook_signatures_are_reproduced_by_signing() {
    let mut reproduced = 0;
    for rel in COMPACT_EXAMPLES {
        let ex = example(rel);
        if ex["reproducible"].as_bool() != Some(true) {
            continue; // PSS and ECDSA are randomised
        }
        let alg: Algorithm = str_at(&ex["input"], "alg").parse().unwrap();
        let signer = SigningKey::from_jwk(&jwk(&ex["input"]["key"]), Some(alg)).unwrap();
        let input = str_at(&ex["signing"], "sig-input");
        assert_eq!(
            base64url::encode(signer.sign(input.as_bytes()).unwrap()),
            str_at(&ex["signing"], "sig"),
            "{rel}"
        );
        reproduced += 1;
    }
    assert_eq!(reproduced, 3, "RS256 (4.1), HS256 (4.4) and EdDSA");
}

/// §4.5 detaches the payload: the compact form has an empty payload segment and a signature
/// over the real content. We do not implement detached content (RFC 7515 App. F), so an empty
/// payload segment means an empty payload: the signature (over the detached content) does not
/// verify. Re-attaching the content makes it verify as a JWS, and a JWT verifier then refuses
/// the prose payload as claims.
#[test]
fn detached_content_is_an_empty_payload_and_is_refused() {
    let ex = example("jws/4_5.signature_with_detached_content.json");
    let key = input_key(&ex);
    let compact = str_at(&ex["output"], "compact");
    assert!(compact.contains(".."), "the payload segment is empty");

    assert_eq!(
        key.verify_jws(compact, &Limits::default()).unwrap_err(),
        Error::InvalidSignature
    );
    assert_eq!(
        key.verify_jwt::<NoCustomClaims>(compact, &Validation::new(), 0)
            .unwrap_err(),
        Error::InvalidSignature
    );

    let payload = str_at(&ex["input"], "payload");
    let attached = compact.replacen("..", &format!(".{}.", base64url::encode(payload)), 1);
    assert_eq!(
        key.verify_jws(&attached, &Limits::default())
            .unwrap()
            .payload(),
        payload.as_bytes()
    );
    assert!(matches!(
        key.verify_jwt::<NoCustomClaims>(&attached, &Validation::new(), 0),
        Err(Error::MalformedClaims { .. })
    ));

    // An empty payload is still a payload: a JWS over it verifies, but it is no JWT.
    let signer = SigningKey::from_jwk(&jwk(&ex["input"]["key"]), None).unwrap();
    let empty = signer.sign_jws(b"", None, None).unwrap();
    assert!(
        key.verify_jws(&empty, &Limits::default())
            .unwrap()
            .payload()
            .is_empty()
    );
    assert!(matches!(
        key.verify_jwt::<NoCustomClaims>(&empty, &Validation::new(), 0),
        Err(Error::MalformedClaims { .. })
    ));
}

/// §4.6–4.8 exist only in the JSON serialization, which this crate does not implement. None
/// of them has a compact output. Rebuilding `protected.payload.signature` from a signature
/// shows why the unprotected header cannot travel in compact form: what is signed still
/// verifies but the unprotected `kid` is gone, and a signature with no protected header at
/// all has an empty (non-JSON) header segment, which is refused.
#[test]
fn json_only_examples_have_no_compact_form() {
    let cases: [(&str, &[Option<&str>]); 3] = [
        // Per signature: the `kid` the rebuilt compact token carries, or None when it must
        // be refused for its empty protected header.
        (
            "jws/4_6.protecting_specific_header_fields.json",
            &[Some("")],
        ),
        ("jws/4_7.protecting_content_only.json", &[None]),
        (
            "jws/4_8.multiple_signatures.json",
            &[Some(""), None, Some("018c0ae5-4d9b-471b-bfd6-eef314bc7037")],
        ),
    ];
    for (rel, expected) in cases {
        let ex = example(rel);
        assert!(ex["output"].get("compact").is_none(), "{rel}");
        let keys = input_keys(&ex);
        let json = &ex["output"]["json"];
        let signatures = json["signatures"].as_array().unwrap();
        assert_eq!(signatures.len(), expected.len(), "{rel}");
        for ((sig, key), expected_kid) in signatures.iter().zip(&keys).zip(expected) {
            let rebuilt = format!(
                "{}.{}.{}",
                sig["protected"].as_str().unwrap_or(""),
                str_at(json, "payload"),
                str_at(sig, "signature")
            );
            let outcome = key.verify_jws(&rebuilt, &Limits::default());
            match expected_kid {
                Some(kid) => {
                    let jws = outcome.unwrap_or_else(|e| panic!("{rel}: {e}"));
                    assert_eq!(jws.header().kid().unwrap_or(""), *kid, "{rel}");
                }
                None => assert!(
                    matches!(outcome, Err(Error::MalformedHeader { .. })),
                    "{rel}: {outcome:?}"
                ),
            }
        }
        // Nothing else in these files passes for a compact token.
        for s in strings(&ex) {
            for key in &keys {
                assert!(key.verify_jws(s, &Limits::default()).is_err(), "{rel}: {s}");
            }
        }
    }
}

/// RFC 7797 `b64: false` changes what the signature covers and is marked critical; a verifier
/// that does not implement it must refuse the token (RFC 7515 §4.1.11), and does so at the
/// header, before it looks at the (unencoded, so not base64url) payload.
#[test]
fn rfc7797_unencoded_payload_is_refused_as_unknown_critical() {
    let ex = example("rfc7797/hmac-sha2_b64_false.json");
    let key = input_key(&ex);
    let compact = str_at(&ex["output"], "compact");
    assert_eq!(
        key.verify_jws(compact, &Limits::default()).unwrap_err(),
        Error::UnknownCritical { name: "b64".into() }
    );
    // The JSON-only variant has no compact form at all.
    let json_only = example("rfc7797/4.2.hmac-sha2_b64_false.json");
    assert!(json_only["output"].get("compact").is_none());
}

#[test]
fn cookbook_ec_p521_keys_load_and_share_a_stable_thumbprint() {
    let public = jwk(&example("jwk/3_1.ec_public_key.json"));
    let private = jwk(&example("jwk/3_2.ec_private_key.json"));
    // The curve decides the algorithm: no `alg` needed for EC keys.
    let vk = VerifyingKey::from_jwk(&public, None).unwrap();
    assert_eq!(vk.algorithm(), Algorithm::Es512);
    assert_eq!(vk.kid(), Some("bilbo.baggins@hobbiton.example"));
    let sk = SigningKey::from_jwk(&private, None).unwrap();
    assert_eq!(sk.algorithm(), Algorithm::Es512);
    assert!(matches!(
        SigningKey::from_jwk(&public, None),
        Err(Error::KeyUsage { .. })
    ));

    let thumbprint = public.thumbprint().unwrap();
    assert_eq!(private.thumbprint().unwrap(), thumbprint);
    assert_eq!(vk.thumbprint().unwrap(), thumbprint);
    assert_eq!(sk.verifying_key().thumbprint().unwrap(), thumbprint);
    assert_eq!(
        sk.to_public_jwk().unwrap().thumbprint().unwrap(),
        thumbprint
    );
    assert_eq!(
        public.thumbprint().unwrap(),
        thumbprint,
        "stable across calls"
    );

    let token = sk.sign_jws(b"p-521", None, None).unwrap();
    assert!(vk.verify_jws(&token, &Limits::default()).is_ok());
    let cookbook = str_at(
        &example("jws/4_3.ecdsa_signature.json")["output"],
        "compact",
    )
    .to_owned();
    assert!(vk.verify_jws(&cookbook, &Limits::default()).is_ok());
}

#[test]
fn cookbook_rsa_keys_need_an_explicit_algorithm_then_load() {
    let public = jwk(&example("jwk/3_3.rsa_public_key.json"));
    let private = jwk(&example("jwk/3_4.rsa_private_key.json"));
    // An RSA key fits six algorithms: without `alg` the caller must choose.
    assert!(matches!(
        VerifyingKey::from_jwk(&public, None),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        SigningKey::from_jwk(&private, None),
        Err(Error::InvalidKey { .. })
    ));

    let rs256 = VerifyingKey::from_jwk(&public, Some(Algorithm::Rs256)).unwrap();
    let ps384 = VerifyingKey::from_jwk(&public, Some(Algorithm::Ps384)).unwrap();
    let signer = SigningKey::from_jwk(&private, Some(Algorithm::Rs256)).unwrap();
    let compact = |rel: &str| str_at(&example(rel)["output"], "compact").to_owned();
    assert!(
        rs256
            .verify_jws(
                &compact("jws/4_1.rsa_v15_signature.json"),
                &Limits::default()
            )
            .is_ok()
    );
    assert!(
        ps384
            .verify_jws(
                &compact("jws/4_2.rsa-pss_signature.json"),
                &Limits::default()
            )
            .is_ok()
    );
    // Bound to RS256, the key refuses the PS384 token before any RSA operation.
    assert!(matches!(
        rs256.verify_jws(
            &compact("jws/4_2.rsa-pss_signature.json"),
            &Limits::default()
        ),
        Err(Error::AlgorithmMismatch { .. })
    ));

    let thumbprint = public.thumbprint().unwrap();
    assert_eq!(private.thumbprint().unwrap(), thumbprint);
    assert_eq!(rs256.thumbprint().unwrap(), thumbprint);
    assert_eq!(ps384.thumbprint().unwrap(), thumbprint);
    assert_eq!(signer.verifying_key().thumbprint().unwrap(), thumbprint);
}

#[test]
fn cookbook_symmetric_keys_sign_only_when_meant_for_signing() {
    let mac = jwk(&example("jwk/3_5.symmetric_key_mac_computation.json"));
    let vk = VerifyingKey::from_jwk(&mac, None).unwrap();
    assert_eq!(vk.algorithm(), Algorithm::Hs256);
    let compact = str_at(
        &example("jws/4_4.hmac-sha2_integrity_protection.json")["output"],
        "compact",
    )
    .to_owned();
    assert!(vk.verify_jws(&compact, &Limits::default()).is_ok());
    assert!(SigningKey::from_jwk(&mac, None).is_ok());

    // §3.6 is an AES-256-GCM key marked `use: enc`: never a signing or verifying key.
    let enc = jwk(&example("jwk/3_6.symmetric_key_encryption.json"));
    assert!(matches!(
        SigningKey::from_jwk(&enc, None),
        Err(Error::KeyUsage { .. })
    ));
    assert!(matches!(
        SigningKey::from_jwk(&enc, Some(Algorithm::Hs256)),
        Err(Error::KeyUsage { .. })
    ));
    assert!(matches!(
        VerifyingKey::from_jwk(&enc, None),
        Err(Error::KeyUsage { .. })
    ));
    // Without its `use`, the `alg` still rules it out.
    let mut unmarked = enc.clone();
    unmarked.key_use = None;
    assert!(matches!(
        SigningKey::from_jwk(&unmarked, None),
        Err(Error::UnsupportedAlgorithm { alg }) if alg == "A256GCM"
    ));
    // A strict key set skips `use: enc` keys rather than failing on them.
    let set = KeySet::from_jwks(&JwkSet {
        keys: vec![mac, enc],
    })
    .unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.verify_jws(&compact, &Limits::default()).is_ok());
}

/// The verifying keys of an example, one per signature for §4.8.
fn input_keys(ex: &Value) -> Vec<VerifyingKey> {
    match (&ex["input"]["key"], &ex["input"]["alg"]) {
        (Value::Array(keys), Value::Array(algs)) => keys
            .iter()
            .zip(algs)
            .map(|(k, a)| {
                VerifyingKey::from_jwk(&jwk(k), Some(a.as_str().unwrap().parse().unwrap())).unwrap()
            })
            .collect(),
        _ => vec![input_key(ex)],
    }
}

/// Every string in a JSON document.
fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::Object(o) => o.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}
