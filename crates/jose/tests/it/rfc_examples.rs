//! Every entry of `tests/data/rfc-examples.json`: RFC 7515 App. A.1–A.5, RFC 7519 §3.1,
//! RFC 8037 App. A.4 and the negatives derived from them.
//!
//! The key is built from `verification_jwk` pinned to `verify_with_alg` (the algorithm comes
//! from the verifier, never the token). Signatures are checked with `verify_jws`; the JWT
//! examples are also run through `verify_jwt` with a clock before their 2011 `exp`, and
//! after it.

use std::collections::BTreeMap;

use serde_json::Value;
use tessera_jose::{
    Algorithm, Error, Limits, NoCustomClaims, SigningKey, Validation, VerifyingKey, base64url,
};

use crate::common::{data, jwk, str_at};

/// `exp` of the RFC 7515 A.1–A.3 claims: 2011-03-22T18:43:00Z.
const RFC_EXP: i64 = 1_300_819_380;
/// A clock an hour before that.
const BEFORE_EXP: i64 = RFC_EXP - 3600;

/// What must happen to each entry, by id. An id missing here fails the test, so a new
/// entry in the data file cannot go unchecked.
#[derive(Debug)]
enum Expect {
    /// Verifies, and the payload equals `payload_decoded`.
    Verifies,
    /// The verifying key cannot be built from the JWK pinned to the algorithm.
    KeyRefused(fn(&Error) -> bool),
    /// The key builds but `verify_jws` refuses the token.
    Refused(fn(&Error) -> bool),
}

fn expectation(id: &str) -> Expect {
    match id {
        "rfc7515-A.1" | "rfc7519-3.1" | "rfc7515-A.2" | "rfc7515-A.3" | "rfc7515-A.4"
        | "rfc8037-A.4" => Expect::Verifies,
        // `none` is not an algorithm here, in any spelling: refused at the header.
        "rfc7515-A.5-none" => {
            Expect::Refused(|e| matches!(e, Error::UnsupportedAlgorithm { alg } if alg == "none"))
        }
        "derived-A.1-bad-mac"
        | "derived-A.3-payload-swapped"
        | "derived-A.3-der-signature"
        | "derived-A.3-psychic-zero-sig" => {
            Expect::Refused(|e| matches!(e, Error::InvalidSignature))
        }
        // An EC JWK cannot become an RS256 key: refused before any token is looked at.
        "derived-A.2-wrong-key" => Expect::KeyRefused(
            |e| matches!(e, Error::KeyAlgorithmMismatch { requested, .. } if requested == "RS256"),
        ),
        // The RSA key is bound to RS256; an HS256 header never reaches the MAC.
        "derived-A.2-alg-confusion-hs256" => Expect::Refused(|e| {
            matches!(
                e,
                Error::AlgorithmMismatch {
                    expected: Algorithm::Rs256,
                    found: Algorithm::Hs256
                }
            )
        }),
        other => panic!("rfc-examples.json has an entry this test does not know: {other}"),
    }
}

fn examples() -> Vec<Value> {
    data("rfc-examples.json")["examples"]
        .as_array()
        .unwrap()
        .clone()
}

fn verifying_key(example: &Value) -> Result<VerifyingKey, Error> {
    let alg: Algorithm = str_at(example, "verify_with_alg").parse().unwrap();
    VerifyingKey::from_jwk(&jwk(&example["verification_jwk"]), Some(alg))
}

#[test]
fn every_rfc_example_has_the_expected_outcome() {
    let examples = examples();
    assert_eq!(
        examples.len(),
        13,
        "rfc-examples.json changed: review this test"
    );
    for example in &examples {
        let id = str_at(example, "id");
        let token = str_at(example, "token");
        let outcome =
            verifying_key(example).and_then(|key| key.verify_jws(token, &Limits::default()));
        match (expectation(id), outcome) {
            (Expect::Verifies, Ok(jws)) => {
                assert!(example["must_verify"].as_bool().unwrap(), "{id}");
                assert_eq!(
                    jws.payload(),
                    str_at(example, "payload_decoded").as_bytes(),
                    "{id}: payload"
                );
                assert_eq!(
                    jws.header().algorithm().as_str(),
                    str_at(example, "alg"),
                    "{id}"
                );
            }
            (Expect::KeyRefused(check), Err(e)) => {
                assert!(!example["must_verify"].as_bool().unwrap(), "{id}");
                assert!(
                    verifying_key(example).is_err(),
                    "{id}: expected the key to be refused"
                );
                assert!(check(&e), "{id}: unexpected error {e:?}");
            }
            (Expect::Refused(check), Err(e)) => {
                assert!(!example["must_verify"].as_bool().unwrap(), "{id}");
                assert!(
                    verifying_key(example).is_ok(),
                    "{id}: the key itself should load"
                );
                assert!(check(&e), "{id}: unexpected error {e:?}");
            }
            (expect, outcome) => panic!("{id}: expected {expect:?}, got {outcome:?}"),
        }
    }
}

#[test]
fn rfc_jwt_examples_validate_before_their_2011_expiry_and_not_after() {
    type Custom = BTreeMap<String, Value>;
    let validation = Validation::new().with_issuer("joe");
    let mut checked = 0;
    for example in examples() {
        let id = str_at(&example, "id");
        if !(example["must_verify"].as_bool().unwrap()
            && example["payload_is_json_claims_set"].as_bool().unwrap())
        {
            continue;
        }
        let key = verifying_key(&example).unwrap();
        let token = str_at(&example, "token");

        let jwt = key
            .verify_jwt::<Custom>(token, &validation, BEFORE_EXP)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(jwt.claims.registered.iss.as_deref(), Some("joe"), "{id}");
        assert_eq!(
            jwt.claims.registered.exp.map(|d| d.0),
            Some(RFC_EXP),
            "{id}"
        );
        assert_eq!(
            jwt.claims.custom.get("http://example.com/is_root"),
            Some(&Value::Bool(true)),
            "{id}"
        );
        if let Some(expected) = example.get("claims") {
            // RFC 7519 §3.1 lists the decoded claims: compare all of them.
            let mut all = jwt.claims.custom.clone();
            all.insert("iss".into(), "joe".into());
            all.insert("exp".into(), RFC_EXP.into());
            assert_eq!(&Value::Object(all.into_iter().collect()), expected, "{id}");
        }

        // RFC 7519 §4.1.4: at or after exp (beyond the leeway) the JWT is refused, while its
        // signature still verifies.
        let late = RFC_EXP + i64::try_from(validation.leeway).unwrap();
        assert!(
            matches!(
                key.verify_jwt::<Custom>(token, &validation, late),
                Err(Error::Expired { exp: RFC_EXP, .. })
            ),
            "{id}"
        );
        assert!(key.verify_jws(token, &Limits::default()).is_ok(), "{id}");
        checked += 1;
    }
    assert_eq!(checked, 4, "A.1, RFC 7519 §3.1, A.2 and A.3 are JWTs");
}

#[test]
fn rfc_jws_examples_with_non_json_payloads_are_not_jwts() {
    for id in ["rfc7515-A.4", "rfc8037-A.4"] {
        let example = examples().into_iter().find(|e| e["id"] == id).unwrap();
        assert!(!example["payload_is_json_claims_set"].as_bool().unwrap());
        let key = verifying_key(&example).unwrap();
        let err = key
            .verify_jwt::<NoCustomClaims>(str_at(&example, "token"), &Validation::new(), 0)
            .unwrap_err();
        assert!(
            matches!(err, Error::MalformedClaims { .. }),
            "{id}: {err:?}"
        );
    }
}

#[test]
fn deterministic_rfc_signatures_are_reproduced_by_signing() {
    let mut reproduced = 0;
    for example in examples() {
        if example["resign_reproduces_signature"].as_bool() != Some(true) {
            continue;
        }
        let id = str_at(&example, "id");
        let alg: Algorithm = str_at(&example, "alg").parse().unwrap();
        let signer = SigningKey::from_jwk(&jwk(&example["jwk"]), Some(alg)).unwrap();
        let token = str_at(&example, "token");
        let (input, signature) = token.rsplit_once('.').unwrap();
        assert_eq!(
            base64url::encode(signer.sign(input.as_bytes()).unwrap()),
            signature,
            "{id}"
        );
        reproduced += 1;
    }
    // HS256 (A.1 and RFC 7519 §3.1), RS256 (A.2) and EdDSA (RFC 8037 A.4).
    assert_eq!(reproduced, 4);
}

#[test]
fn rfc8037_thumbprint_matches() {
    let example = examples()
        .into_iter()
        .find(|e| e["id"] == "rfc8037-A.4")
        .unwrap();
    let expected = str_at(&example, "jwk_thumbprint_sha256");
    assert_eq!(jwk(&example["jwk"]).thumbprint().unwrap(), expected);
    assert_eq!(
        jwk(&example["verification_jwk"]).thumbprint().unwrap(),
        expected
    );
    // With no `kid` in the JWK, the key id defaults to the thumbprint.
    assert_eq!(verifying_key(&example).unwrap().kid(), Some(expected));
}
