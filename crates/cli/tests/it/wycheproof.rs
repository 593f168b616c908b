//! Wycheproof `json_web_signature_test.json` (401 cases) and the JWS part of
//! `json_web_crypto_test.json` (49 cases) through `tessera token verify --jws --key FILE`,
//! with the expectations and documented upstream errata of the JOSE core's `wycheproof_jws`.
//!
//! Per group the key is the `public` JWK if present, else `private`, written to a file as
//! is: the JWK's own `alg` (or curve) decides, and a JWK Set goes through `KeySet`. `valid`
//! must exit 0; `invalid` and `acceptable` must be refused: exit 1 when the token is
//! refused, exit 2 when the key itself is (which the core test also counts as a rejection).
//!
//! Every case runs the binary: about 450 processes, spread over the available cores (a few
//! seconds in a debug build).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::{Dir, Run, jose_data, run, str_at};

/// An upstream erratum: why, and what the binary must do instead of the label.
struct Erratum {
    reason: &'static str,
    code: i32,
    message: &'static str,
}

/// The errata of `json_web_signature_test.json`, as in the core test.
fn erratum(file: &str, tc_id: u64) -> Option<Erratum> {
    if file != "json_web_signature_test.json" {
        return None;
    }
    let (reason, code, message) = match tc_id {
        // Labelled invalid but byte-identical to the valid tcId 357 (upstream #236).
        367 | 370 => ("byte-identical to valid tcId 357 (upstream #236)", 0, ""),
        // Labelled valid but a `?` sits inside the header (372) or payload (373) segment.
        372 => (
            "`?` inside the header segment",
            1,
            "token header is not valid unpadded base64url",
        ),
        373 => (
            "`?` inside the payload segment",
            1,
            "token payload is not valid unpadded base64url",
        ),
        // Labelled valid, but the JWK says PS256 and the token is PS384.
        346 | 350 => (
            "JWK alg PS256, token PS384",
            1,
            "token algorithm PS384 does not match the key's PS256",
        ),
        // Labelled valid, but the JWK's `alg` is "ES521", not a JWA name.
        347 | 351 => (
            "JWK alg \"ES521\" is not a JWA algorithm",
            2,
            "algorithm `ES521` is not supported",
        ),
        _ => return None,
    };
    Some(Erratum {
        reason,
        code,
        message,
    })
}

/// One case to run.
struct Case {
    label: String,
    key: String,
    token: String,
    result: String,
    erratum: Option<Erratum>,
}

/// Writes each group's key to a file and lists the cases. JWE groups are out of scope.
fn cases(file: &str, dir: &Dir) -> (Vec<Case>, usize) {
    let doc = jose_data(&format!("wycheproof/{file}"));
    let mut cases = Vec::new();
    let mut skipped = 0;
    for (g, group) in doc["testGroups"].as_array().unwrap().iter().enumerate() {
        let tests = group["tests"].as_array().unwrap();
        if group["comment"]
            .as_str()
            .is_some_and(|c| c.starts_with("jwe_"))
        {
            skipped += tests.len();
            continue;
        }
        let jwk = group
            .get("public")
            .filter(|v| !v.is_null())
            .or_else(|| group.get("private"))
            .unwrap();
        let key = dir.write(&format!("{file}.{g}.json"), jwk.to_string());
        for test in tests {
            let tc_id = test["tcId"].as_u64().unwrap();
            let result = str_at(test, "result").to_owned();
            // JSON-serialized cases are objects: their text goes to the compact parser,
            // which must refuse it like any other malformed token.
            let token = match &test["jws"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            cases.push(Case {
                label: format!(
                    "{file} tcId {tc_id} ({result}, {})",
                    str_at(test, "comment")
                ),
                key: key.clone(),
                token,
                result,
                erratum: erratum(file, tc_id),
            });
        }
    }
    assert_eq!(
        Some((cases.len() + skipped) as u64),
        doc["numberOfTests"].as_u64(),
        "{file}: case count"
    );
    (cases, skipped)
}

/// Runs every case on a few threads; returns the outcome per case, in order.
fn run_all(cases: &[Case]) -> Vec<Run> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let chunk = cases.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|c| run(&["token", "verify", "--jws", "--key", &c.key, &c.token]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
fn wycheproof_jws_vectors_agree_except_documented_errata() {
    let dir = Dir::new();
    let (mut all, _) = cases("json_web_signature_test.json", &dir);
    let signature_cases = all.len();
    let (crypto, jwe) = cases("json_web_crypto_test.json", &dir);
    all.extend(crypto);
    assert_eq!(signature_cases, 401);
    assert_eq!(
        all.len() - signature_cases,
        49,
        "the JWS part of json_web_crypto_test.json"
    );
    assert_eq!(jwe, 34, "JWE cases, out of scope");

    let started = std::time::Instant::now();
    let outcomes = run_all(&all);
    let elapsed = started.elapsed();

    let mut failures = Vec::new();
    let mut exceptions = 0;
    let mut codes = BTreeMap::new();
    for (case, out) in all.iter().zip(&outcomes) {
        *codes.entry(out.code).or_insert(0) += 1;
        let one_line = out.code == 0 || out.stderr.lines().count() == 1;
        if !one_line || !matches!(out.code, 0..=2) {
            failures.push(format!(
                "{}: exit {}, stderr:\n{}",
                case.label, out.code, out.stderr
            ));
            continue;
        }
        if let Some(e) = &case.erratum {
            exceptions += 1;
            if out.code != e.code || !out.stderr.contains(e.message) {
                failures.push(format!(
                    "{}: erratum `{}` no longer holds: exit {}, {}",
                    case.label, e.reason, out.code, out.stderr
                ));
            }
            continue;
        }
        let agrees = match case.result.as_str() {
            "valid" => out.code == 0,
            // "acceptable" is treated as reject, like the core test.
            "invalid" | "acceptable" => out.code != 0,
            other => panic!("{}: unknown result {other}", case.label),
        };
        if !agrees {
            failures.push(format!("{}: exit {}, {}", case.label, out.code, out.stderr));
        }
    }
    eprintln!(
        "wycheproof JWS through the binary: {} cases in {:.1?}, exit codes {codes:?}, {} errata",
        all.len(),
        elapsed,
        exceptions
    );
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(exceptions, 8);
}
