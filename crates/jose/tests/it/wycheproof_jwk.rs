//! Wycheproof `json_web_key_test.json`: key-set validation through `KeySet::from_jwks`.
//!
//! Per group the set is `public` if present, else `private`. A `valid` case must verify; an
//! `invalid` one must fail at set construction (mixed or duplicate kids, 1024-bit RSA, e = 1,
//! ROCA, short HMAC keys, bad curves, AES keys...) or at verification.

use tessera_jose::{Error, JwkSet, KeySet, Limits};

use crate::common::{data, str_at};

#[test]
fn wycheproof_jwk_sets_are_validated() {
    let doc = data("wycheproof/json_web_key_test.json");
    let (mut total, mut at_construction, mut at_verification, mut valid) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let keys = group
            .get("public")
            .filter(|v| !v.is_null())
            .or_else(|| group.get("private"))
            .unwrap();
        let set: Result<KeySet, Error> =
            JwkSet::from_json(&keys.to_string()).and_then(|s| KeySet::from_jwks(&s));
        for test in group["tests"].as_array().unwrap() {
            total += 1;
            let label = format!(
                "tcId {} ({}, {}: {})",
                test["tcId"],
                str_at(test, "result"),
                group["comment"],
                str_at(test, "comment")
            );
            let outcome = set
                .as_ref()
                .map_err(Clone::clone)
                .map(|s| s.verify_jws(str_at(test, "jws"), &Limits::default()));
            match (str_at(test, "result"), outcome) {
                ("valid", Ok(Ok(_))) => valid += 1,
                ("invalid" | "acceptable", Err(e)) => {
                    at_construction += 1;
                    eprintln!("  {label}: set refused: {e}");
                }
                ("invalid" | "acceptable", Ok(Err(e))) => {
                    at_verification += 1;
                    eprintln!("  {label}: token refused: {e}");
                }
                (_, outcome) => failures.push(format!("{label}: {outcome:?}")),
            }
        }
    }
    eprintln!(
        "wycheproof JWK: {total} cases, {valid} valid verified, {at_construction} invalid \
         refused at set construction, {at_verification} at verification"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(Some(total), doc["numberOfTests"].as_u64());
}
