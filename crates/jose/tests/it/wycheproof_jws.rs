//! Wycheproof `json_web_signature_test.json` (401 cases) and the JWS part of
//! `json_web_crypto_test.json` (49 cases).
//!
//! Per group the key is the `public` JWK if present, else `private`, built with
//! `VerifyingKey::from_jwk(jwk, None)`: the JWK's own `alg` (or its curve) decides. A key the
//! crate refuses counts as a rejection. Groups whose key is a JWK Set go through
//! `KeySet::from_jwks`. Tokens are verified with `verify_jws` (the payloads are not JWT
//! claims). `valid` must verify; `invalid` and `acceptable` must not.
//!
//! Upstream errata are listed in [`exception`] with the reason; the test asserts our actual
//! behaviour for them instead of the label, and does not count them as failures.

use serde_json::Value;
use tessera_jose::{
    Algorithm, Error, Jwk, JwkSet, KeySet, Limits, Segment, SigningKey, VerifyingKey,
};

use crate::common::{data, str_at};

/// What happened to one case.
#[derive(Debug)]
enum Outcome {
    /// The key (or key set) was refused.
    KeyRefused(Error),
    /// The token was refused.
    Refused(Error),
    /// The token verified.
    Verified,
}

impl Outcome {
    fn verified(&self) -> bool {
        matches!(self, Self::Verified)
    }
}

/// Asserts the outcome of one case.
type Check = fn(&Outcome) -> bool;

/// Documented upstream errata: the reason, and the outcome we assert instead of the label.
fn exception(file: &str, tc_id: u64) -> Option<(&'static str, Check)> {
    if file != "json_web_signature_test.json" {
        return None;
    }
    Some(match tc_id {
        // Labelled invalid ("invalid base64 padding") but byte-identical to the valid tcId 357
        // (upstream issue #236): the padding the case meant to add is not there. It verifies,
        // exactly like 357.
        367 | 370 => ("byte-identical to valid tcId 357 (upstream #236)", |o| {
            o.verified()
        }),
        // Labelled valid but a `?` sits inside the header (372) or payload (373) segment:
        // not base64url. Strict decoding (RFC 7515 §2) refuses them.
        372 => ("`?` inside the header segment", |o| {
            matches!(
                o,
                Outcome::Refused(Error::Base64 {
                    segment: Segment::Header
                })
            )
        }),
        373 => ("`?` inside the payload segment", |o| {
            matches!(
                o,
                Outcome::Refused(Error::Base64 {
                    segment: Segment::Payload
                })
            )
        }),
        // Labelled valid, but the JWK says `alg: PS256` and the token is PS384. The JWK's
        // `alg` binds the key (RFC 7517 §4.4), so the PS384 header is a mismatch.
        346 | 350 => ("JWK alg PS256, token PS384", |o| {
            matches!(
                o,
                Outcome::Refused(Error::AlgorithmMismatch {
                    expected: Algorithm::Ps256,
                    found: Algorithm::Ps384
                })
            )
        }),
        // Labelled valid, but the JWK says `alg: "ES521"`, which is not a JWA name (ES512 was
        // meant). A key with an unknown `alg` is refused.
        347 | 351 => ("JWK alg \"ES521\" is not a JWA algorithm", |o| {
            matches!(o, Outcome::KeyRefused(Error::UnsupportedAlgorithm { alg })
                    if alg == "ES521")
        }),
        _ => return None,
    })
}

/// The verifier of a group: a single key or a key set, or the reason it was refused.
enum Verifier {
    Key(VerifyingKey),
    Set(KeySet),
    Refused(Error),
}

impl Verifier {
    fn for_group(group: &Value) -> Self {
        let jwk = group
            .get("public")
            .filter(|v| !v.is_null())
            .or_else(|| group.get("private"))
            .unwrap();
        let text = jwk.to_string();
        let built = if jwk.get("keys").is_some() {
            JwkSet::from_json(&text)
                .and_then(|set| KeySet::from_jwks(&set))
                .map(Self::Set)
        } else {
            Jwk::from_json(&text)
                .and_then(|k| VerifyingKey::from_jwk(&k, None))
                .map(Self::Key)
        };
        built.unwrap_or_else(Self::Refused)
    }

    fn verify(&self, token: &str) -> Outcome {
        let limits = Limits::default();
        let result = match self {
            Self::Key(k) => k.verify_jws(token, &limits),
            Self::Set(s) => s.verify_jws(token, &limits),
            Self::Refused(e) => return Outcome::KeyRefused(e.clone()),
        };
        match result {
            Ok(_) => Outcome::Verified,
            Err(e) => Outcome::Refused(e),
        }
    }
}

#[derive(Default)]
struct Tally {
    total: usize,
    passed: usize,
    exceptions: Vec<String>,
    out_of_scope: usize,
    failures: Vec<String>,
}

fn run(file: &str, tally: &mut Tally) {
    let doc = data(&format!("wycheproof/{file}"));
    let mut cases = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let tests = group["tests"].as_array().unwrap();
        // json_web_crypto_test.json also holds JWE groups; this crate does no JWE.
        if group["comment"]
            .as_str()
            .is_some_and(|c| c.starts_with("jwe_"))
        {
            tally.out_of_scope += tests.len();
            cases += tests.len();
            continue;
        }
        let verifier = Verifier::for_group(group);
        for test in tests {
            cases += 1;
            tally.total += 1;
            let tc_id = test["tcId"].as_u64().unwrap();
            let result = str_at(test, "result");
            // JSON-serialized cases are objects: hand their text to the compact parser, which
            // must refuse it like any other malformed token.
            let token = match &test["jws"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let outcome = verifier.verify(&token);
            let label = format!(
                "{file} tcId {tc_id} ({result}, {})",
                str_at(test, "comment")
            );
            if let Some((reason, check)) = exception(file, tc_id) {
                if check(&outcome) {
                    tally.exceptions.push(format!("{label}: {reason}"));
                } else {
                    tally.failures.push(format!(
                        "{label}: exception `{reason}` no longer holds: {outcome:?}"
                    ));
                }
                continue;
            }
            let agrees = match result {
                "valid" => outcome.verified(),
                // "acceptable" is treated as reject.
                "invalid" | "acceptable" => !outcome.verified(),
                other => panic!("{label}: unknown result {other}"),
            };
            if agrees {
                tally.passed += 1;
            } else {
                tally.failures.push(format!("{label}: {outcome:?}"));
            }
        }
    }
    assert_eq!(
        Some(cases as u64),
        doc["numberOfTests"].as_u64(),
        "{file}: case count"
    );
}

#[test]
fn wycheproof_jws_vectors_agree_except_documented_errata() {
    let mut tally = Tally::default();
    run("json_web_signature_test.json", &mut tally);
    let signature_cases = tally.total;
    run("json_web_crypto_test.json", &mut tally);

    eprintln!(
        "wycheproof JWS: {} cases ({} signature + {} crypto-JWS), {} passed, {} documented \
         exceptions, {} JWE cases out of scope",
        tally.total,
        signature_cases,
        tally.total - signature_cases,
        tally.passed,
        tally.exceptions.len(),
        tally.out_of_scope
    );
    for e in &tally.exceptions {
        eprintln!("  exception: {e}");
    }
    assert!(
        tally.failures.is_empty(),
        "{} disagreements:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    assert_eq!(signature_cases, 401);
    assert_eq!(
        tally.total - signature_cases,
        49,
        "the JWS part of json_web_crypto_test.json"
    );
    assert_eq!(tally.exceptions.len(), 8);
    assert_eq!(tally.passed + tally.exceptions.len(), tally.total);
}

/// The `private` JWK of each group that also has a `public` one (all three JWS files), which
/// the tests above never load: it must be the same key as its public half. Where the public
/// key is refused the private one is too (a private key never slips past a check its public
/// half fails: ROCA, 1024 bits, e = 1, off-curve point, wrong curve or `kty`); where both
/// load, they have the same `kid` and give the same verdict on every token of the group; and
/// a private JWK that may sign produces tokens the public key verifies.
///
/// One documented exception: `json_web_signature_test.json` group 13 writes the private
/// key's `key_ops` as the single string `"sign, verify"`, which names no operation, so that
/// private JWK may neither sign nor verify (RFC 7517 §4.3).
#[test]
fn wycheproof_private_jwks_are_the_same_keys_as_their_public_halves() {
    let limits = Limits::default();
    let (mut groups, mut tokens, mut signed) = (0, 0, 0);
    let mut failures = Vec::new();
    for file in [
        "json_web_signature_test.json",
        "json_web_key_test.json",
        "json_web_crypto_test.json",
    ] {
        let doc = data(&format!("wycheproof/{file}"));
        for (index, group) in doc["testGroups"].as_array().unwrap().iter().enumerate() {
            let (Some(public), Some(private)) = (
                group.get("public").filter(|v| !v.is_null()),
                group.get("private").filter(|v| !v.is_null()),
            ) else {
                continue;
            };
            groups += 1;
            let label = format!("{file} group {index} ({})", group["comment"]);
            // Single JWKs and one-key sets alike: the JWKs, and a verifier for each side.
            let jwks = |v: &Value| -> Vec<Value> {
                v.get("keys")
                    .map_or_else(|| vec![v.clone()], |k| k.as_array().unwrap().clone())
            };
            let build = |v: &Value| -> Result<KeySet, Error> {
                let set = JwkSet {
                    keys: jwks(v)
                        .iter()
                        .map(|k| Jwk::from_json(&k.to_string()).unwrap())
                        .collect(),
                };
                KeySet::from_jwks(&set)
            };
            let (from_public, from_private) = (build(public), build(private));
            let typo = file == "json_web_signature_test.json" && index == 13;
            match (&from_public, &from_private) {
                (Err(_), Err(_)) => continue,
                (Err(e), Ok(_)) => {
                    failures.push(format!(
                        "{label}: public refused ({e}) but private accepted"
                    ));
                    continue;
                }
                (Ok(_), Err(Error::KeyUsage { .. })) if typo => continue,
                (Ok(_), Err(e)) => {
                    failures.push(format!("{label}: public accepted but private refused: {e}"));
                    continue;
                }
                (Ok(p), Ok(s)) => {
                    let kids = |set: &KeySet| {
                        set.iter()
                            .map(|k| (k.kid().map(str::to_owned), k.thumbprint().unwrap()))
                            .collect::<Vec<_>>()
                    };
                    if kids(p) != kids(s) {
                        failures.push(format!("{label}: kids or thumbprints differ"));
                    }
                    for test in group["tests"].as_array().unwrap() {
                        let Value::String(token) = &test["jws"] else {
                            continue;
                        };
                        tokens += 1;
                        let (a, b) = (p.verify_jws(token, &limits), s.verify_jws(token, &limits));
                        if a.is_ok() != b.is_ok() {
                            failures.push(format!(
                                "{label} tcId {}: public {a:?}, private {b:?}",
                                test["tcId"]
                            ));
                        }
                    }
                }
            }
            // Keys marked for encryption are skipped by `from_jwks`: nothing to sign with.
            let verifier = from_public.unwrap();
            if verifier.is_empty() {
                continue;
            }
            for key in jwks(private) {
                let jwk = Jwk::from_json(&key.to_string()).unwrap();
                let Ok(signer) = SigningKey::from_jwk(&jwk, None) else {
                    failures.push(format!("{label}: private JWK cannot sign"));
                    continue;
                };
                signed += 1;
                let token = signer.sign_jws(b"wycheproof", None, None).unwrap();
                if let Err(e) = verifier.verify_jws(&token, &limits) {
                    failures.push(format!("{label}: own token refused by the public key: {e}"));
                }
            }
        }
    }
    eprintln!(
        "wycheproof private JWKs: {groups} groups with both halves, {tokens} tokens compared, \
         {signed} private keys signed a token their public half verified"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!((groups, tokens, signed), (33, 389, 15));
}
