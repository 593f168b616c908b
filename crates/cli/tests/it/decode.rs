//! `tessera token decode`: labelled UNVERIFIED (stderr and JSON), dates in RFC 3339, and
//! tokens the library would refuse shown all the same.

use serde_json::json;
use tessera_jose::base64url;

use crate::common::{Dir, NOW, encode, run, run_stdin};

const LABEL: &str = "UNVERIFIED — the signature was not checked";

fn unsigned(header: &str, payload: &str) -> String {
    format!(
        "{}.{}.",
        base64url::encode(header),
        base64url::encode(payload)
    )
}

#[test]
fn decode_is_labelled_unverified_and_shows_dates() {
    let dir = Dir::new();
    let key = dir.generate("ES256", "jwk");
    let token = encode(&[
        "--alg",
        "ES256",
        "--key",
        &key,
        "--exp",
        "+1h",
        "--nbf",
        "-1m",
        "--json",
        r#"{"auth_time": 1699990000}"#,
        "--sub",
        "alice",
    ]);
    let out = run(&["token", "decode", &token]).success();
    assert_eq!(out.stderr.lines().next(), Some(LABEL));
    let v = out.json();
    assert_eq!(v["verified"], false);
    assert_eq!(v["header"]["alg"], "ES256");
    assert_eq!(v["claims"]["sub"], "alice");
    assert_eq!(v["claims"]["exp"], NOW + 3600, "numbers stay as they are");
    assert_eq!(
        v["dates"],
        json!({
            "exp": "2023-11-14T23:13:20Z",
            "nbf": "2023-11-14T22:12:20Z",
            "iat": "2023-11-14T22:13:20Z",
            "auth_time": "2023-11-14T19:26:40Z",
        })
    );
    assert_eq!(v["signature_bytes"], 64);
    // The dates are also on stderr, relative to the real clock.
    assert!(
        out.stderr.contains("\nexp: 2023-11-14T23:13:20Z, "),
        "{}",
        out.stderr
    );
}

#[test]
fn alg_none_tokens_are_decoded_and_flagged() {
    let token = unsigned(r#"{"alg":"none"}"#, r#"{"sub":"x","exp":1700000000.5}"#);
    let out = run(&["token", "decode", &token]).success();
    let mut lines = out.stderr.lines();
    assert_eq!(lines.next(), Some(LABEL));
    assert!(
        out.stderr
            .contains("note: alg `none` is never accepted by `tessera token verify`"),
        "{}",
        out.stderr
    );
    let v = out.json();
    assert_eq!(v["verified"], false);
    assert_eq!(v["header"], json!({"alg": "none"}));
    assert_eq!(v["claims"]["sub"], "x");
    assert_eq!(
        v["dates"]["exp"], "2023-11-14T22:13:20Z",
        "fractions round down"
    );
    assert_eq!(v["signature_bytes"], 0);
    // And verify refuses it whatever the key.
    let dir = Dir::new();
    let key = dir.generate("HS256", "jwk");
    run(&["token", "verify", "--key", &key, &token])
        .fails(1, "error: algorithm `none` is not supported");
}

#[test]
fn non_claims_payloads_are_shown_as_text_or_base64url() {
    let out = run(&[
        "token",
        "decode",
        &unsigned(r#"{"alg":"HS256"}"#, "hello, world"),
    ])
    .success();
    assert_eq!(out.json()["payload"], "hello, world");
    assert!(out.stderr.contains("not JSON"));
    let binary = format!(
        "{}.{}.AAAA",
        base64url::encode(r#"{"alg":"HS256"}"#),
        base64url::encode([0xff, 0xfe, 0x00])
    );
    let out = run(&["token", "decode", &binary]).success();
    assert_eq!(out.json()["payload_base64url"], "__4A");
    assert_eq!(out.json()["signature_bytes"], 3);
}

#[test]
fn decode_reads_stdin_and_refuses_what_is_not_a_token() {
    let token = unsigned(r#"{"alg":"RS256","kid":"k"}"#, r#"{"iat":0}"#);
    let out = run_stdin(&["token", "decode", "-"], &format!("  {token}\n")).success();
    assert_eq!(out.json()["dates"]["iat"], "1970-01-01T00:00:00Z");
    run(&["token", "decode", "not-a-token"]).fails(
        1,
        "cannot decode the token: token has 1 segments where a compact JWS has exactly 3",
    );
    run(&["token", "decode", "e30.e30.e30.e30"]).fails(1, "has 4 segments");
    run(&["token", "decode", "!!.e30."]).fails(1, "token header is not valid unpadded base64url");
}

/// A member named twice (RFC 7515 §5.2, RFC 7519 §4) reads differently in different
/// parsers: JSON output can show only one value, so decode says which member is named twice
/// and that `verify` refuses the token, instead of silently showing the last value.
#[test]
fn decode_names_members_given_twice() {
    let token = unsigned(
        r#"{"alg":"none","\u0061lg":"HS256"}"#,
        r#"{"sub":"alice","exp":1,"sub":"admin"}"#,
    );
    let out = run(&["token", "decode", &token]).success();
    for expected in [
        "note: the header names `alg` more than once",
        "note: the claims name `sub` more than once",
    ] {
        assert!(out.stderr.contains(expected), "{}", out.stderr);
    }
    assert!(
        out.stderr.contains("the JSON below shows the last"),
        "{}",
        out.stderr
    );
    // A token without duplicates gets no such note.
    let plain = unsigned(r#"{"alg":"none"}"#, r#"{"sub":"alice","n":{"a":1}}"#);
    let out = run(&["token", "decode", &plain]).success();
    assert!(!out.stderr.contains("more than once"), "{}", out.stderr);
}
