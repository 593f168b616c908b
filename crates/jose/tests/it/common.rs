//! Shared helpers for the integration tests. No tests live here.

use std::path::PathBuf;
use std::sync::LazyLock;

use serde_json::Value;
use tessera_jose::{Algorithm, Jwk, SigningKey};

/// The fixed "current time" of the tests (2023-11-14T22:13:20Z). Never the wall clock.
pub(crate) const NOW: i64 = 1_700_000_000;

/// Path of a file under `tests/data/`.
///
/// `cargo test` sets `CARGO_MANIFEST_DIR` at run time; prefer it to the compile-time value, so
/// a test binary reused from another checkout (same target dir) reads this checkout's data.
pub(crate) fn data_path(rel: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/data")
        .join(rel)
}

/// A JSON file under `tests/data/`.
pub(crate) fn data(rel: &str) -> Value {
    let path = data_path(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Decodes lowercase or uppercase hex.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A JSON value as a JWK (through the crate's own parser).
pub(crate) fn jwk(value: &Value) -> Jwk {
    Jwk::from_json(&value.to_string()).unwrap()
}

/// A string member of a JSON object.
pub(crate) fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {value}"))
}

/// One signing key per algorithm, generated once for the whole binary.
///
/// RSA key generation is the slow part, so a single 2048-bit RSA key serves all six RSA
/// algorithms (each `SigningKey` is still bound to exactly one of them).
static KEYS: LazyLock<Vec<SigningKey>> = LazyLock::new(|| {
    let rsa = SigningKey::generate(Algorithm::Rs256).unwrap();
    let rsa_der = rsa.to_secret_bytes().unwrap();
    Algorithm::ALL
        .into_iter()
        .map(|alg| match alg {
            Algorithm::Rs256 => rsa.clone(),
            Algorithm::Rs384
            | Algorithm::Rs512
            | Algorithm::Ps256
            | Algorithm::Ps384
            | Algorithm::Ps512 => SigningKey::from_der(alg, &rsa_der).unwrap(),
            other => SigningKey::generate(other).unwrap(),
        })
        .collect()
});

/// The shared signing key for `alg`.
pub(crate) fn key(alg: Algorithm) -> &'static SigningKey {
    KEYS.iter().find(|k| k.algorithm() == alg).unwrap()
}

/// Replaces byte `index` of an ASCII token with `with`.
pub(crate) fn replace_byte(token: &str, index: usize, with: u8) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[index] = with;
    String::from_utf8(bytes).unwrap()
}
