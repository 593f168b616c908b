//! `tessera token decode`: show a token's parts without checking anything, labelled as
//! such on stderr and in the JSON (`"verified": false`). Works on tokens that `verify`
//! would refuse, `alg: none` included.

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
    eprintln!("UNVERIFIED — the signature was not checked");

    let alg = parts.header.get("alg").and_then(Value::as_str);
    match alg {
        None => eprintln!("note: the header has no string `alg`; no verifier will accept it"),
        Some(name) if name.parse::<Algorithm>().is_err() => eprintln!(
            "note: alg `{}` is never accepted by `tessera token verify`",
            name.chars().take(32).collect::<String>()
        ),
        Some(_) => {}
    }

    let mut out = Map::new();
    out.insert("verified".into(), Value::Bool(false));
    out.insert("header".into(), parts.header.clone());
    match &parts.claims {
        Some(Value::Object(claims)) => {
            let now = time::now();
            for name in time::TIME_CLAIMS {
                if let Some(t) = claims.get(name).and_then(time::numeric_date) {
                    eprintln!(
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
            eprintln!("note: the payload is JSON but not an object, so it holds no JWT claims");
            out.insert("payload".into(), other.clone());
        }
        None => match std::str::from_utf8(&parts.payload) {
            Ok(text) => {
                match serde_json::from_slice::<Value>(&parts.payload) {
                    Err(e) if is_too_deep(&e) => eprintln!(
                        "note: the payload nests more than 128 levels deep, more than this \
                         command parses; shown as text"
                    ),
                    _ => eprintln!("note: the payload is not JSON, so it holds no JWT claims"),
                }
                out.insert("payload".into(), json!(text));
            }
            Err(_) => {
                eprintln!("note: the payload is binary; shown as base64url");
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
