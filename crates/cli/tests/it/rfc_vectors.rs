//! The RFC examples of `crates/jose/tests/data/` through the binary, with the expectations of
//! the JOSE core's `rfc_examples` and `rfc7520` tests: `rfc-examples.json` (RFC 7515 App. A,
//! RFC 7519 §3.1, RFC 8037 App. A.4 and derived negatives) and the RFC 7520 cookbook.
//!
//! Each key is written to a file and passed with `--key FILE --alg ALG` (the verifier picks
//! the algorithm, as in the core tests); signatures are checked with `--jws`, and the JWT
//! examples also with full validation at a time before and after their 2011 `exp`.

use serde_json::Value;

use crate::common::{Dir, Run, assert_payload, jose_data, run, str_at};

/// `exp` of the RFC 7515 A.1–A.3 claims: 2011-03-22T18:43:00Z.
const RFC_EXP: i64 = 1_300_819_380;

/// What must happen to each entry, by id (a new id fails the test until it is listed).
#[derive(Debug)]
enum Expect {
    /// Exit 0 and the payload on stdout.
    Verifies,
    /// Exit 2: the key cannot be built for the algorithm.
    KeyRefused(&'static str),
    /// Exit 1: the token is refused with this message.
    Refused(&'static str),
}

fn expectation(id: &str) -> Expect {
    match id {
        "rfc7515-A.1" | "rfc7519-3.1" | "rfc7515-A.2" | "rfc7515-A.3" | "rfc7515-A.4"
        | "rfc8037-A.4" => Expect::Verifies,
        "rfc7515-A.5-none" => Expect::Refused("algorithm `none` is not supported"),
        "derived-A.1-bad-mac"
        | "derived-A.3-payload-swapped"
        | "derived-A.3-der-signature"
        | "derived-A.3-psychic-zero-sig" => Expect::Refused("signature is invalid"),
        "derived-A.2-wrong-key" => Expect::KeyRefused("but RS256 was requested"),
        "derived-A.2-alg-confusion-hs256" => {
            Expect::Refused("token algorithm HS256 does not match the key's RS256")
        }
        other => panic!("rfc-examples.json has an entry this test does not know: {other}"),
    }
}

fn verify_jws(dir: &Dir, name: &str, jwk: &Value, alg: &str, token: &str) -> Run {
    let key = dir.write(name, jwk.to_string());
    run(&[
        "token", "verify", "--jws", "--key", &key, "--alg", alg, token,
    ])
}

#[test]
fn every_rfc_example_has_the_expected_outcome() {
    let dir = Dir::new();
    let examples = jose_data("rfc-examples.json")["examples"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        examples.len(),
        13,
        "rfc-examples.json changed: review this test"
    );
    let mut jwts = 0;
    for example in &examples {
        let id = str_at(example, "id");
        let token = str_at(example, "token");
        let alg = str_at(example, "verify_with_alg");
        let out = verify_jws(
            &dir,
            &format!("{id}.jwk"),
            &example["verification_jwk"],
            alg,
            token,
        );
        match expectation(id) {
            Expect::Verifies => {
                assert!(example["must_verify"].as_bool().unwrap(), "{id}");
                assert_eq!(out.code, 0, "{id}: {}", out.stderr);
                assert_payload(&out, str_at(example, "payload_decoded").as_bytes(), id);
            }
            Expect::KeyRefused(needle) => {
                out.fails(2, needle);
            }
            Expect::Refused(needle) => {
                out.fails(1, needle);
            }
        }

        // The JWT examples under full validation: valid before their 2011 expiry, refused
        // after it (beyond the 30 s leeway), by how much said precisely.
        if example["must_verify"].as_bool().unwrap()
            && example["payload_is_json_claims_set"].as_bool().unwrap()
        {
            let key = dir.write(
                &format!("{id}.jwt.jwk"),
                example["verification_jwk"].to_string(),
            );
            let at = |now: i64| {
                run(&[
                    "token",
                    "verify",
                    "--key",
                    &key,
                    "--alg",
                    alg,
                    "--iss",
                    "joe",
                    "--now",
                    &now.to_string(),
                    token,
                ])
            };
            let v = at(RFC_EXP - 3600).success().json();
            assert_eq!(v["claims"]["iss"], "joe", "{id}");
            assert_eq!(v["claims"]["http://example.com/is_root"], true, "{id}");
            assert_eq!(v["dates"]["exp"], "2011-03-22T18:43:00Z", "{id}");
            at(RFC_EXP + 30).fails(
                1,
                "token expired 30s ago (exp 1300819380, now 1300819410, leeway 30s)",
            );
            jwts += 1;
        }
    }
    assert_eq!(jwts, 4, "A.1, RFC 7519 §3.1, A.2 and A.3 are JWTs");
}

#[test]
fn rfc_jws_examples_with_non_json_payloads_are_not_jwts() {
    let dir = Dir::new();
    let examples = jose_data("rfc-examples.json")["examples"]
        .as_array()
        .unwrap()
        .clone();
    for id in ["rfc7515-A.4", "rfc8037-A.4"] {
        let example = examples.iter().find(|e| e["id"] == id).unwrap();
        let key = dir.write(
            &format!("{id}.jwk"),
            example["verification_jwk"].to_string(),
        );
        run(&[
            "token",
            "verify",
            "--key",
            &key,
            "--alg",
            str_at(example, "verify_with_alg"),
            str_at(example, "token"),
        ])
        .fails(1, "token claims are malformed");
    }
}

const COOKBOOK: [&str; 5] = [
    "jws/4_1.rsa_v15_signature.json",
    "jws/4_2.rsa-pss_signature.json",
    "jws/4_3.ecdsa_signature.json",
    "jws/4_4.hmac-sha2_integrity_protection.json",
    "curve25519/jws.json",
];

#[test]
fn cookbook_compact_outputs_verify_with_their_input_keys() {
    let dir = Dir::new();
    for (i, rel) in COOKBOOK.iter().enumerate() {
        let ex = jose_data(&format!("rfc7520/{rel}"));
        let alg = str_at(&ex["input"], "alg");
        let compact = str_at(&ex["output"], "compact");
        let out = verify_jws(
            &dir,
            &format!("cookbook-{i}.jwk"),
            &ex["input"]["key"],
            alg,
            compact,
        );
        assert_eq!(out.code, 0, "{rel}: {}", out.stderr);
        assert_payload(&out, str_at(&ex["input"], "payload").as_bytes(), rel);
        // The payloads are prose, not JWT claims.
        let key = dir.path(&format!("cookbook-{i}.jwk"));
        run(&[
            "token",
            "verify",
            "--key",
            key.to_str().unwrap(),
            "--alg",
            alg,
            compact,
        ])
        .fails(1, "token claims are malformed");
    }
}

#[test]
fn cookbook_detached_content_and_unencoded_payloads_are_refused() {
    let dir = Dir::new();
    // §4.5: the empty payload segment is an empty payload, and the signature is over the
    // detached content.
    let ex = jose_data("rfc7520/jws/4_5.signature_with_detached_content.json");
    verify_jws(
        &dir,
        "detached.jwk",
        &ex["input"]["key"],
        str_at(&ex["input"], "alg"),
        str_at(&ex["output"], "compact"),
    )
    .fails(1, "signature is invalid");
    // RFC 7797 `b64: false` is a critical extension this verifier does not implement.
    let ex = jose_data("rfc7520/rfc7797/hmac-sha2_b64_false.json");
    verify_jws(
        &dir,
        "b64.jwk",
        &ex["input"]["key"],
        str_at(&ex["input"], "alg"),
        str_at(&ex["output"], "compact"),
    )
    .fails(1, "header marks `b64` as critical, which is not understood");
}
