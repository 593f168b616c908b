//! `keys generate` → `token encode` → `token verify` for every algorithm, with JWK and PEM
//! keys (private and public halves) and every form of `--secret`.

use serde_json::json;
use tessera_jose::{Algorithm, SigningKey, base64url};

use crate::common::{ALGS, Dir, NOW, NOW_ARG, encode, payload, public_jwk, run};

const CLAIMS: [&str; 14] = [
    "--iss",
    "https://auth.example",
    "--sub",
    "alice",
    "--aud",
    "orders",
    "--exp",
    "+10m",
    "--claim",
    "role=admin",
    "--claim",
    "n=[1,2]",
    "--typ",
    "at+jwt",
];

/// Verifies `token` with `key_args` and checks the printed header and claims.
fn verify_ok(token: &str, key_args: &[&str], alg: &str) {
    let mut args = vec![
        "token",
        "verify",
        "--now",
        NOW_ARG,
        "--iss",
        "https://auth.example",
        "--aud",
        "orders",
        "--typ",
        "at+jwt",
    ];
    args.extend_from_slice(key_args);
    args.push(token);
    let out = run(&args).success();
    assert!(out.stderr.is_empty(), "{alg}: {}", out.stderr);
    let v = out.json();
    assert_eq!(v["verified"], true, "{alg}");
    assert_eq!(v["header"]["alg"], alg);
    assert_eq!(v["header"]["typ"], "at+jwt");
    assert_eq!(
        v["claims"],
        json!({
            "iss": "https://auth.example", "sub": "alice", "aud": "orders",
            "exp": NOW + 600, "iat": NOW, "role": "admin", "n": [1, 2],
        }),
        "{alg}"
    );
    assert_eq!(v["dates"]["exp"], "2023-11-14T22:23:20Z");
    assert_eq!(v["dates"]["iat"], "2023-11-14T22:13:20Z");
}

#[test]
fn every_algorithm_round_trips_with_jwk_keys() {
    let dir = Dir::new();
    for alg in ALGS {
        let key = dir.generate(alg, "jwk");
        let mut args = vec!["--alg", alg, "--key", &key];
        args.extend_from_slice(&CLAIMS);
        let token = encode(&args);
        // The private JWK verifies; the kid is the generated one.
        verify_ok(&token, &["--key", &key], alg);
        let header = run(&["token", "decode", &token]).success().json()["header"].clone();
        let jwk: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
        assert_eq!(header["kid"], jwk["kid"], "{alg}");
        // So does the public half of an asymmetric key.
        if !alg.starts_with("HS") {
            let public = dir.write(&format!("{alg}.public.jwk"), public_jwk(&key));
            verify_ok(&token, &["--key", &public], alg);
        }
    }
}

#[test]
fn every_asymmetric_algorithm_round_trips_with_pem_keys() {
    let dir = Dir::new();
    for alg in ALGS.iter().filter(|a| !a.starts_with("HS")) {
        let key = dir.generate(alg, "pem");
        let mut args = vec!["--alg", alg, "--key", &key];
        args.extend_from_slice(&CLAIMS);
        let token = encode(&args);
        verify_ok(&token, &["--key", &key, "--alg", alg], alg);
        // The public PEM (SPKI), produced by the library from the private one.
        let signer = SigningKey::from_pem(
            alg.parse().unwrap(),
            &std::fs::read_to_string(&key).unwrap(),
        )
        .unwrap();
        let public_pem = signer.verifying_key().to_public_pem().unwrap();
        let public = dir.write(&format!("{alg}.public.pem"), public_pem);
        verify_ok(&token, &["--key", &public, "--alg", alg], alg);
    }
}

#[test]
fn secret_specs_string_file_and_base64_name_the_same_bytes() {
    let dir = Dir::new();
    let text = "correct horse battery staple, 40 bytes!!";
    assert_eq!(text.len(), 40);
    let file = dir.write("secret.txt", format!("{text}\n"));
    let file_crlf = dir.write("secret-crlf.txt", format!("{text}\r\n"));
    let url = base64url::encode(text);
    let standard = format!("{}==", url.replace('-', "+").replace('_', "/"));
    let specs = [
        text.to_owned(),
        format!("@{file}"),
        format!("@{file_crlf}"),
        format!("b64:{url}"),
        format!("b64:{standard}"),
    ];
    for sign in &specs {
        let mut args = vec!["--alg", "HS256", "--secret", sign];
        args.extend_from_slice(&CLAIMS);
        let token = encode(&args);
        for check in &specs {
            verify_ok(&token, &["--alg", "HS256", "--secret", check], "HS256");
        }
    }
}

#[test]
fn binary_secrets_decode_from_both_base64_alphabets() {
    let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0xfb).collect();
    let url = base64url::encode(&bytes);
    assert!(
        url.contains('-') || url.contains('_'),
        "exercises the alphabet difference"
    );
    let standard = url.replace('-', "+").replace('_', "/");
    let token = encode(&[
        "--alg",
        "HS512",
        "--secret",
        &format!("b64:{url}"),
        "--exp",
        "+1m",
    ]);
    let out = run(&[
        "token",
        "verify",
        "--now",
        NOW_ARG,
        "--alg",
        "HS512",
        "--secret",
        &format!("b64:{standard}"),
        &token,
    ])
    .success();
    assert_eq!(out.json()["claims"]["exp"], NOW + 60);
    // And the library agrees the token is signed with exactly these bytes.
    let key = SigningKey::from_hmac_secret(Algorithm::Hs512, &bytes).unwrap();
    assert!(
        key.verifying_key()
            .verify_jws(&token, &tessera_jose::Limits::default())
            .is_ok()
    );
}

#[test]
fn encode_sets_iat_by_default_and_honours_time_flags() {
    let dir = Dir::new();
    let key = dir.generate("EdDSA", "jwk");
    let claims = payload(&encode(&[
        "--alg", "EdDSA", "--key", &key, "--exp", "1h30m",
    ]));
    assert_eq!(claims, json!({"iat": NOW, "exp": NOW + 5400}));

    let claims = payload(&encode(&[
        "--alg",
        "EdDSA",
        "--key",
        &key,
        "--exp",
        "1800000000",
        "--nbf",
        "-5m",
        "--iat",
        "+2",
        "--jti",
        "j1",
        "--aud",
        "a",
        "--aud",
        "b",
    ]));
    assert_eq!(
        claims,
        json!({"exp": 1_800_000_000, "nbf": NOW - 300, "iat": NOW + 2, "jti": "j1", "aud": ["a", "b"]})
    );

    let out = run(&[
        "token",
        "encode",
        "--alg",
        "EdDSA",
        "--key",
        &key,
        "--no-iat",
        "--json",
        r#"{"scope":"read write","nested":{"x":true}}"#,
        "--claim",
        "flag=true",
        "--claim",
        "text=not json",
        "--claim",
        r#"quoted="7""#,
        "--claim",
        "empty=",
    ])
    .success();
    assert!(
        out.stderr
            .contains("warning: no --exp, so this token never expires"),
        "{}",
        out.stderr
    );
    assert_eq!(
        payload(out.stdout_text().trim_end()),
        json!({
            "scope": "read write", "nested": {"x": true}, "flag": true, "text": "not json",
            "quoted": "7", "empty": "",
        })
    );
}

#[test]
fn encode_kid_overrides_and_selects_from_a_jwks() {
    let dir = Dir::new();
    let es = dir.generate("ES256", "jwk");
    let token = encode(&[
        "--alg", "ES256", "--key", &es, "--kid", "my-key", "--exp", "+1m",
    ]);
    let header = run(&["token", "decode", &token]).success().json()["header"].clone();
    assert_eq!(header["kid"], "my-key");

    // A JWKS holding two private keys: --kid picks one.
    let rs = dir.generate("RS256", "jwk");
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (es_jwk, rs_jwk) = (read(&es), read(&rs));
    let set = dir.write(
        "private.jwks",
        json!({"keys": [es_jwk, rs_jwk]}).to_string(),
    );
    let rs_kid = rs_jwk["kid"].as_str().unwrap();
    let token = encode(&[
        "--alg", "RS256", "--key", &set, "--kid", rs_kid, "--exp", "+1m",
    ]);
    run(&["token", "verify", "--now", NOW_ARG, "--key", &set, &token]).success();
    run(&["token", "encode", "--alg", "RS256", "--key", &set])
        .fails(2, "is a JWK Set with 2 keys: choose one with --kid");
    run(&[
        "token", "encode", "--alg", "RS256", "--key", &set, "--kid", "nope",
    ])
    .fails(2, "has no key with kid `nope`; check --kid");
}

/// Thumbprints are base64url and may start with `-`; so may subjects, secrets and times.
/// Found by a test whose random kid began with `-` and was taken for a flag.
#[test]
fn values_starting_with_a_hyphen_are_values_not_flags() {
    let dir = Dir::new();
    let es = dir.generate("ES256", "jwk");
    let mut jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&es).unwrap()).unwrap();
    jwk["kid"] = json!("-kid");
    let set = dir.write("set.jwks", json!({"keys": [jwk]}).to_string());
    let token = encode(&[
        "--alg", "ES256", "--key", &set, "--kid", "-kid", "--sub", "-me", "--iss", "-iss", "--aud",
        "-aud", "--jti", "-j", "--claim", "-x=-1", "--exp", "-1",
    ]);
    let out = run(&[
        "token", "verify", "--key", &set, "--now", NOW_ARG, "--iss", "-iss", "--aud", "-aud",
        &token,
    ])
    .success();
    assert_eq!(out.json()["header"]["kid"], "-kid");
    assert_eq!(
        out.json()["claims"],
        json!({"sub": "-me", "iss": "-iss", "aud": "-aud", "jti": "-j", "-x": -1,
               "exp": NOW - 1, "iat": NOW})
    );
    run(&["token", "verify", "--key", &set, "--now", "-100", &token])
        .fails(1, "(iat 1700000000, now -100, leeway 30s)");
    let secret = "-0123456789abcdef0123456789abcdef";
    let token = encode(&["--alg", "HS256", "--secret", secret, "--exp", "+1m"]);
    run(&[
        "token", "verify", "--now", NOW_ARG, "--alg", "HS256", "--secret", secret, &token,
    ])
    .success();
}
