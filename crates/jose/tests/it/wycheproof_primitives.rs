//! Wycheproof primitive files, in exactly the byte form JWS uses, through the public API:
//! a `VerifyingKey` from the group's public key, then `verify_signature(msg, sig)`.
//!
//! * ECDSA P-256/384/521 in r‖s (P1363) form, Ed25519, RSA PKCS#1 v1.5, RSA-PSS with the JWA
//!   parameters: key from `publicKeyDer` via `from_public_der`, cross-checked against the
//!   group's JWK where it has one.
//! * HMAC-SHA-256/384/512: `VerifyingKey::from_hmac_secret`. Keys shorter than the hash must
//!   be refused (`WeakKey`, RFC 7518 §3.2); truncated tags must never verify (a JWS MAC is
//!   the full hash output).
//!
//! `acceptable` counts as reject. The expected number of disagreements is zero.
//!
//! Skipped groups: only groups whose parameters are not a JWA algorithm would be skipped
//! (an ECDSA hash that is not the curve's, or RSA-PSS with an MGF hash or salt length other
//! than RFC 7518 §3.5's); none of the files in `tests/data/wycheproof/` has such a group,
//! and the test asserts that. RSA keys under 2048 bits are refused by design; no group here
//! has one, and if one appears the test asserts the refusal.

use serde_json::Value;
use tessera_jose::{Algorithm, Error, VerifyingKey};

use crate::common::{data, hex, jwk, str_at};

/// HMAC files are listed apart: their key is per test, not per group.
const SIGNATURE_FILES: [&str; 19] = [
    "ecdsa_secp256r1_sha256_p1363_test.json",
    "ecdsa_secp384r1_sha384_p1363_test.json",
    "ecdsa_secp521r1_sha512_p1363_test.json",
    "ed25519_test.json",
    "rsa_signature_2048_sha256_test.json",
    "rsa_signature_2048_sha384_test.json",
    "rsa_signature_2048_sha512_test.json",
    "rsa_signature_3072_sha256_test.json",
    "rsa_signature_3072_sha384_test.json",
    "rsa_signature_3072_sha512_test.json",
    "rsa_signature_4096_sha256_test.json",
    "rsa_signature_4096_sha384_test.json",
    "rsa_signature_4096_sha512_test.json",
    "rsa_pss_2048_sha256_mgf1_32_test.json",
    "rsa_pss_2048_sha384_mgf1_48_test.json",
    "rsa_pss_3072_sha256_mgf1_32_test.json",
    "rsa_pss_4096_sha256_mgf1_32_test.json",
    "rsa_pss_4096_sha384_mgf1_48_test.json",
    "rsa_pss_4096_sha512_mgf1_64_test.json",
];

const HMAC_FILES: [(&str, Algorithm); 3] = [
    ("hmac_sha256_test.json", Algorithm::Hs256),
    ("hmac_sha384_test.json", Algorithm::Hs384),
    ("hmac_sha512_test.json", Algorithm::Hs512),
];

#[derive(Default, Debug)]
struct Tally {
    tests: usize,
    agreed: usize,
    /// Tests whose group key we refuse by policy (weak HMAC or RSA key), asserted as such.
    weak_key_refused: usize,
    /// Tests with truncated HMAC tags, asserted never to verify.
    truncated_never_verify: usize,
    skipped_groups: Vec<String>,
    disagreements: Vec<String>,
}

fn hash_of(group: &Value) -> Option<&str> {
    group.get("sha").and_then(Value::as_str)
}

/// The JWA algorithm a signature group stands for, or why it has none.
fn algorithm(file: &str, group: &Value) -> Result<Algorithm, String> {
    let sha = hash_of(group);
    let alg = match group["type"].as_str().unwrap() {
        "EcdsaP1363Verify" => match (str_at(&group["publicKey"], "curve"), sha) {
            ("secp256r1", Some("SHA-256")) => Algorithm::Es256,
            ("secp384r1", Some("SHA-384")) => Algorithm::Es384,
            ("secp521r1", Some("SHA-512")) => Algorithm::Es512,
            other => return Err(format!("ECDSA {other:?} is not a JWA algorithm")),
        },
        "EddsaVerify" => Algorithm::EdDsa,
        "RsassaPkcs1Verify" => match sha {
            Some("SHA-256") => Algorithm::Rs256,
            Some("SHA-384") => Algorithm::Rs384,
            Some("SHA-512") => Algorithm::Rs512,
            other => return Err(format!("PKCS#1 v1.5 with {other:?}")),
        },
        "RsassaPssVerify" => {
            let params = (sha, group["mgfSha"].as_str(), group["sLen"].as_u64());
            match params {
                (Some("SHA-256"), Some("SHA-256"), Some(32)) => Algorithm::Ps256,
                (Some("SHA-384"), Some("SHA-384"), Some(48)) => Algorithm::Ps384,
                (Some("SHA-512"), Some("SHA-512"), Some(64)) => Algorithm::Ps512,
                other => return Err(format!("RSA-PSS {other:?} is not RFC 7518 §3.5")),
            }
        }
        other => panic!("{file}: unexpected group type {other}"),
    };
    Ok(alg)
}

fn run_signature_file(file: &str, tally: &mut Tally) {
    let doc = data(&format!("wycheproof/{file}"));
    let mut cases = 0;
    for (index, group) in doc["testGroups"].as_array().unwrap().iter().enumerate() {
        let tests = group["tests"].as_array().unwrap();
        cases += tests.len();
        let alg = match algorithm(file, group) {
            Ok(alg) => alg,
            Err(reason) => {
                tally.skipped_groups.push(format!(
                    "{file} group {index} ({} tests): {reason}",
                    tests.len()
                ));
                continue;
            }
        };
        let der = hex(str_at(group, "publicKeyDer"));
        let key = match VerifyingKey::from_public_der(alg, &der) {
            Ok(key) => key,
            Err(e) => {
                // Our policy refuses RSA under 2048 bits; anything else is a disagreement.
                let bits = group["keySize"].as_u64().unwrap_or(0);
                if alg.key_kind() == tessera_jose::KeyKind::Rsa
                    && bits < 2048
                    && matches!(e, Error::WeakKey { .. })
                {
                    tally.tests += tests.len();
                    tally.weak_key_refused += tests.len();
                } else {
                    tally.tests += tests.len();
                    tally
                        .disagreements
                        .push(format!("{file} group {index}: key refused: {e}"));
                }
                continue;
            }
        };
        // The same key as a JWK must be the same key.
        if let Some(j) = group.get("publicKeyJwk").or_else(|| group.get("keyJwk")) {
            let from_jwk = VerifyingKey::from_jwk(&jwk(j), Some(alg))
                .unwrap_or_else(|e| panic!("{file} group {index}: JWK refused: {e}"));
            assert_eq!(
                from_jwk.thumbprint().unwrap(),
                key.thumbprint().unwrap(),
                "{file} group {index}: DER and JWK differ"
            );
        }
        for test in tests {
            tally.tests += 1;
            let verified =
                key.verify_signature(&hex(str_at(test, "msg")), &hex(str_at(test, "sig")));
            let result = str_at(test, "result");
            if verified == (result == "valid") {
                tally.agreed += 1;
            } else {
                tally.disagreements.push(format!(
                    "{file} tcId {} ({result}, {}): verified = {verified}",
                    test["tcId"],
                    str_at(test, "comment")
                ));
            }
        }
    }
    assert_eq!(Some(cases as u64), doc["numberOfTests"].as_u64(), "{file}");
}

fn run_hmac_file(file: &str, alg: Algorithm, tally: &mut Tally) {
    let doc = data(&format!("wycheproof/{file}"));
    let hash_bits = alg.min_hmac_key_len().unwrap() as u64 * 8;
    let mut cases = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let key_bits = group["keySize"].as_u64().unwrap();
        let tag_bits = group["tagSize"].as_u64().unwrap();
        for test in group["tests"].as_array().unwrap() {
            cases += 1;
            tally.tests += 1;
            let label = format!(
                "{file} tcId {} (key {key_bits} bits, tag {tag_bits} bits, {})",
                test["tcId"],
                str_at(test, "result")
            );
            let key = VerifyingKey::from_hmac_secret(alg, &hex(str_at(test, "key")));
            if key_bits < hash_bits {
                // RFC 7518 §3.2: a key shorter than the hash output MUST NOT be used.
                if matches!(key, Err(Error::WeakKey { .. })) {
                    tally.weak_key_refused += 1;
                } else {
                    tally
                        .disagreements
                        .push(format!("{label}: short key not refused: {key:?}"));
                }
                continue;
            }
            let key = key.unwrap_or_else(|e| panic!("{label}: {e}"));
            let verified =
                key.verify_signature(&hex(str_at(test, "msg")), &hex(str_at(test, "tag")));
            if tag_bits < hash_bits {
                // A JWS MAC is the full hash output: a truncated tag is never a signature.
                if verified {
                    tally
                        .disagreements
                        .push(format!("{label}: truncated tag verified"));
                } else {
                    tally.truncated_never_verify += 1;
                }
                continue;
            }
            if verified == (str_at(test, "result") == "valid") {
                tally.agreed += 1;
            } else {
                tally
                    .disagreements
                    .push(format!("{label}: verified = {verified}"));
            }
        }
    }
    assert_eq!(Some(cases), doc["numberOfTests"].as_u64(), "{file}");
}

#[test]
fn wycheproof_primitives_have_zero_disagreements() {
    let mut tally = Tally::default();
    for file in SIGNATURE_FILES {
        run_signature_file(file, &mut tally);
    }
    for (file, alg) in HMAC_FILES {
        run_hmac_file(file, alg, &mut tally);
    }
    eprintln!(
        "wycheproof primitives: {} tests, {} agreed with the label, {} refused for a weak key \
         (asserted), {} truncated HMAC tags never verified (asserted), {} groups skipped, {} \
         disagreements",
        tally.tests,
        tally.agreed,
        tally.weak_key_refused,
        tally.truncated_never_verify,
        tally.skipped_groups.len(),
        tally.disagreements.len()
    );
    for s in &tally.skipped_groups {
        eprintln!("  skipped: {s}");
    }
    assert!(
        tally.disagreements.is_empty(),
        "{} disagreements:\n{}",
        tally.disagreements.len(),
        tally.disagreements.join("\n")
    );
    assert!(
        tally.skipped_groups.is_empty(),
        "every group here is a JWA algorithm"
    );
    assert_eq!(
        tally.agreed + tally.weak_key_refused + tally.truncated_never_verify,
        tally.tests
    );
}
