//! Differential tests against the `jsonwebtoken` crate (11.x, aws-lc-rs backend), for every
//! algorithm both implement: HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384 and
//! EdDSA (jsonwebtoken has no ES512).
//!
//! The keys are ours, handed to jsonwebtoken as PKCS#8 / SPKI PEM and as JWK JSON. Tokens
//! signed by either side must verify under the other, with the same claims; a tampered token
//! must be refused by both.
//!
//! jsonwebtoken validates `exp` against the wall clock; the tests turn that off on its side
//! (our side runs at the fixed `NOW`), so the outcome never depends on the date.

use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tessera_jose::{Algorithm, Error, KeySet, SigningKey, Validation, base64url};

use crate::common::{NOW, key};

const ISS: &str = "https://issuer.example";
const AUD: &str = "orders-api";

const SHARED: [(Algorithm, jsonwebtoken::Algorithm); 12] = [
    (Algorithm::Hs256, jsonwebtoken::Algorithm::HS256),
    (Algorithm::Hs384, jsonwebtoken::Algorithm::HS384),
    (Algorithm::Hs512, jsonwebtoken::Algorithm::HS512),
    (Algorithm::Rs256, jsonwebtoken::Algorithm::RS256),
    (Algorithm::Rs384, jsonwebtoken::Algorithm::RS384),
    (Algorithm::Rs512, jsonwebtoken::Algorithm::RS512),
    (Algorithm::Ps256, jsonwebtoken::Algorithm::PS256),
    (Algorithm::Ps384, jsonwebtoken::Algorithm::PS384),
    (Algorithm::Ps512, jsonwebtoken::Algorithm::PS512),
    (Algorithm::Es256, jsonwebtoken::Algorithm::ES256),
    (Algorithm::Es384, jsonwebtoken::Algorithm::ES384),
    (Algorithm::EdDsa, jsonwebtoken::Algorithm::EdDSA),
];

/// The claims both sides sign and read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Token {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    role: String,
}

/// The custom part as tessera-jose hands it back (registered claims are typed separately).
#[derive(Debug, PartialEq, Deserialize)]
struct Role {
    role: String,
}

fn claims(sub: &str) -> Token {
    Token {
        iss: ISS.into(),
        sub: sub.into(),
        aud: AUD.into(),
        exp: NOW + 600,
        iat: NOW,
        role: "reader".into(),
    }
}

fn our_validation() -> Validation {
    Validation::new().with_issuer(ISS).with_audience(AUD)
}

fn their_validation(alg: jsonwebtoken::Algorithm) -> jsonwebtoken::Validation {
    let mut v = jsonwebtoken::Validation::new(alg);
    v.validate_exp = false;
    v.set_issuer(&[ISS]);
    v.set_audience(&[AUD]);
    v
}

/// Our key as a jsonwebtoken signing key (via PKCS#8 PEM, or the raw HMAC secret).
fn their_encoding_key(key: &SigningKey) -> EncodingKey {
    let pem = || key.to_pkcs8_pem().unwrap();
    match key.algorithm() {
        a if a.is_symmetric() => EncodingKey::from_secret(key.hmac_secret().unwrap()),
        Algorithm::Es256 | Algorithm::Es384 => EncodingKey::from_ec_pem(pem().as_bytes()).unwrap(),
        Algorithm::EdDsa => EncodingKey::from_ed_pem(pem().as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem().as_bytes()).unwrap(),
    }
}

/// Our key as jsonwebtoken verifying keys: one from PEM (or the secret), one from our JWK.
fn their_decoding_keys(key: &SigningKey) -> Vec<(&'static str, DecodingKey)> {
    let jwk_json = if key.algorithm().is_symmetric() {
        key.to_private_jwk().unwrap().to_json()
    } else {
        key.to_public_jwk().unwrap().to_json()
    };
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&jwk_json).unwrap();
    let from_jwk = DecodingKey::from_jwk(&jwk).unwrap();
    let pem = || key.verifying_key().to_public_pem().unwrap();
    let direct = match key.algorithm() {
        a if a.is_symmetric() => DecodingKey::from_secret(key.hmac_secret().unwrap()),
        Algorithm::Es256 | Algorithm::Es384 => DecodingKey::from_ec_pem(pem().as_bytes()).unwrap(),
        Algorithm::EdDsa => DecodingKey::from_ed_pem(pem().as_bytes()).unwrap(),
        _ => DecodingKey::from_rsa_pem(pem().as_bytes()).unwrap(),
    };
    vec![("PEM or secret", direct), ("JWK", from_jwk)]
}

fn their_token(ours: Algorithm, theirs: jsonwebtoken::Algorithm, sub: &str) -> String {
    let mut header = Header::new(theirs);
    header.kid = key(ours).kid().map(str::to_owned);
    jsonwebtoken::encode(&header, &claims(sub), &their_encoding_key(key(ours))).unwrap()
}

/// The same token with one bit of its signature flipped.
fn tamper_signature(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = base64url::decode(sig).unwrap();
    let middle = sig.len() / 2;
    sig[middle] ^= 0x01;
    format!("{input}.{}", base64url::encode(sig))
}

/// The same token with its claims replaced (header and signature kept).
fn tamper_payload(token: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    let payload = base64url::encode(serde_json::to_vec(&claims("admin")).unwrap());
    parts[1] = &payload;
    parts.join(".")
}

#[test]
fn our_tokens_verify_under_jsonwebtoken() {
    for (ours, theirs) in SHARED {
        let token = key(ours).sign_jwt(&claims("alice"), Some("JWT")).unwrap();
        for (how, dk) in their_decoding_keys(key(ours)) {
            let data = jsonwebtoken::decode::<Token>(&token, &dk, &their_validation(theirs))
                .unwrap_or_else(|e| panic!("{ours} ({how}): {e:?}"));
            assert_eq!(data.claims, claims("alice"), "{ours} ({how})");
            assert_eq!(data.header.alg, theirs);
            assert_eq!(data.header.kid.as_deref(), key(ours).kid());
        }
    }
}

#[test]
fn jsonwebtoken_tokens_verify_under_ours() {
    for (ours, theirs) in SHARED {
        let token = their_token(ours, theirs, "alice");
        let signer = key(ours);
        // The verifying key three ways: ours, rebuilt from the public PEM, from the JWK.
        let mut verifiers = vec![signer.verifying_key()];
        if !ours.is_symmetric() {
            let pem = signer.verifying_key().to_public_pem().unwrap();
            verifiers.push(tessera_jose::VerifyingKey::from_pem(ours, &pem).unwrap());
            verifiers.push(
                tessera_jose::VerifyingKey::from_jwk(&signer.to_public_jwk().unwrap(), None)
                    .unwrap(),
            );
        }
        for vk in verifiers {
            let jwt = vk
                .verify_jwt::<Role>(&token, &our_validation(), NOW)
                .unwrap_or_else(|e| panic!("{ours}: {e}"));
            assert_eq!(
                jwt.claims.registered.sub.as_deref(),
                Some("alice"),
                "{ours}"
            );
            assert_eq!(jwt.claims.registered.exp.map(|d| d.0), Some(NOW + 600));
            assert_eq!(
                jwt.claims.custom,
                Role {
                    role: "reader".into()
                }
            );
            assert_eq!(jwt.header.typ(), Some("JWT"));
        }
        // Selected by the kid jsonwebtoken wrote.
        let set = KeySet::new([signer.verifying_key()]).unwrap();
        assert!(
            set.verify_jwt::<Role>(&token, &our_validation(), NOW)
                .is_ok(),
            "{ours}"
        );
    }
}

#[test]
fn tampered_tokens_are_refused_by_both() {
    for (ours, theirs) in SHARED {
        let vk = key(ours).verifying_key();
        for token in [
            key(ours).sign_jwt(&claims("alice"), Some("JWT")).unwrap(),
            their_token(ours, theirs, "alice"),
        ] {
            for (what, bad) in [
                ("signature", tamper_signature(&token)),
                ("payload", tamper_payload(&token)),
            ] {
                assert_eq!(
                    vk.verify_jwt::<Role>(&bad, &our_validation(), NOW)
                        .unwrap_err(),
                    Error::InvalidSignature,
                    "{ours}: tampered {what}"
                );
                for (how, dk) in their_decoding_keys(key(ours)) {
                    assert!(
                        jsonwebtoken::decode::<Token>(&bad, &dk, &their_validation(theirs))
                            .is_err(),
                        "{ours} ({how}): jsonwebtoken accepted a tampered {what}"
                    );
                }
            }
        }
    }
}

#[test]
fn neither_accepts_the_other_algorithm_family_for_a_key() {
    // An HS256 token MACed with the RSA public PEM: both verifiers hold the RSA key.
    let pem = key(Algorithm::Rs256)
        .verifying_key()
        .to_public_pem()
        .unwrap();
    let forged = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("mallory"),
        &EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        key(Algorithm::Rs256)
            .verifying_key()
            .verify_jwt::<Role>(&forged, &our_validation(), NOW),
        Err(Error::AlgorithmMismatch { .. })
    ));
    let dk = DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    assert!(
        jsonwebtoken::decode::<Token>(
            &forged,
            &dk,
            &their_validation(jsonwebtoken::Algorithm::RS256)
        )
        .is_err()
    );
}
