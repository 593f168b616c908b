//! `tessera token decode`: show a token's parts without checking anything, labelled as
//! such on stderr and in the JSON (`"verified": false`). Works on tokens that `verify`
//! would refuse, `alg: none` included.

use std::collections::HashSet;

use serde::Deserializer as _;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value, json};
use tessera_jose::{Algorithm, Limits, base64url, decode_unverified};

use super::verify::{is_too_deep, print_json};
use super::{DecodeArgs, input, time};
use crate::exit::Failure;

/// Decoding is for diagnostics, so it takes tokens larger than a verifier would (which
/// refuses anything over 8 KiB before parsing it).
const DECODE_LIMITS: Limits = Limits {
    max_token_len: 1024 * 1024,
    max_header_len: 1024 * 1024,
};

pub(super) fn run(args: &DecodeArgs) -> Result<(), Failure> {
    let token = input::token(&args.token)?;
    let parts = decode_unverified(&token, &DECODE_LIMITS)
        .map_err(|e| Failure::refused(format!("cannot decode the token: {e}")))?;
    crate::output::errln!("UNVERIFIED — the signature was not checked");

    let alg = parts.header.get("alg").and_then(Value::as_str);
    match alg {
        None => crate::output::errln!(
            "note: the header has no string `alg`; no verifier will accept it"
        ),
        Some(name) if name.parse::<Algorithm>().is_err() => crate::output::errln!(
            "note: alg `{}` is never accepted by `tessera token verify`",
            name.chars().take(32).collect::<String>()
        ),
        Some(_) => {}
    }

    // RFC 7515 §5.2 and RFC 7519 §4: a member named twice is read as its first value by
    // some parsers and its last by others; the JSON below can show only one of them.
    let header_bytes = token
        .split('.')
        .next()
        .and_then(base64url::decode)
        .unwrap_or_default();
    for (part, json) in [
        ("header names", &header_bytes),
        ("claims name", &parts.payload),
    ] {
        if let Some(name) = first_duplicate(json) {
            crate::output::errln!(
                "note: the {part} `{}` more than once; the JSON below shows the last \
                 value, other parsers may read the first, and `tessera token verify` \
                 refuses the token",
                name.chars().take(64).collect::<String>()
            );
        }
    }

    let mut out = Map::new();
    out.insert("verified".into(), Value::Bool(false));
    out.insert("header".into(), parts.header.clone());
    match &parts.claims {
        Some(Value::Object(claims)) => {
            let now = time::now();
            for name in time::TIME_CLAIMS {
                if let Some(t) = claims.get(name).and_then(time::numeric_date) {
                    crate::output::errln!(
                        "{name}: {}, {}",
                        time::rfc3339(t).unwrap_or_else(|| "out of range".to_owned()),
                        time::relative(t, now)
                    );
                }
            }
            out.insert("claims".into(), Value::Object(claims.clone()));
            out.insert("dates".into(), Value::Object(time::dates(claims)));
        }
        Some(other) => {
            crate::output::errln!(
                "note: the payload is JSON but not an object, so it holds no JWT claims"
            );
            out.insert("payload".into(), other.clone());
        }
        None => match std::str::from_utf8(&parts.payload) {
            Ok(text) => {
                match serde_json::from_slice::<Value>(&parts.payload) {
                    Err(e) if is_too_deep(&e) => crate::output::errln!(
                        "note: the payload nests more than 128 levels deep, more than this \
                         command parses; shown as text"
                    ),
                    _ => crate::output::errln!(
                        "note: the payload is not JSON, so it holds no JWT claims"
                    ),
                }
                out.insert("payload".into(), json!(text));
            }
            Err(_) => {
                crate::output::errln!("note: the payload is binary; shown as base64url");
                out.insert(
                    "payload_base64url".into(),
                    json!(base64url::encode(&parts.payload)),
                );
            }
        },
    }
    out.insert("signature_bytes".into(), json!(parts.signature.len()));
    print_json(&Value::Object(out))
}

/// The first member name of the top-level JSON object `json` that appears twice (compared
/// after unescaping), if `json` is an object.
fn first_duplicate(json: &[u8]) -> Option<String> {
    struct Names;
    impl<'de> Visitor<'de> for Names {
        type Value = Option<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = HashSet::new();
            while let Some(name) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(name.clone()) {
                    return Ok(Some(name));
                }
            }
            Ok(None)
        }
    }
    serde_json::Deserializer::from_slice(json)
        .deserialize_map(Names)
        .ok()
        .flatten()
}
