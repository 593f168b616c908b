//! Bad input is a usage error (exit 2) with a message saying what to do: missing files,
//! malformed keys, bad durations, unknown algorithms, PEM or secret without --alg, short
//! HMAC secrets, misused claims.

use crate::common::{Dir, NOW_ARG, encode, run};

/// A token any test can hand to `verify` when the keys are what is being tested.
fn some_token(dir: &Dir) -> String {
    let key = dir.generate("HS256", "jwk");
    encode(&["--alg", "HS256", "--key", &key, "--exp", "+1h"])
}

#[test]
fn missing_and_unreadable_files() {
    let dir = Dir::new();
    let token = some_token(&dir);
    let missing = dir.path("missing.jwk");
    let missing = missing.to_str().unwrap();
    run(&["token", "verify", "--key", missing, &token]).fails(
        2,
        &format!("cannot read the key file {missing}: No such file or directory"),
    );
    run(&["token", "encode", "--alg", "ES256", "--key", missing])
        .fails(2, "cannot read the key file");
    run(&[
        "token",
        "verify",
        "--alg",
        "HS256",
        "--secret",
        &format!("@{missing}"),
        &token,
    ])
    .fails(2, &format!("cannot read the secret file {missing}"));
    let empty = dir.write("empty", "\n");
    run(&[
        "token",
        "verify",
        "--alg",
        "HS256",
        "--secret",
        &format!("@{empty}"),
        &token,
    ])
    .fails(2, "--secret is empty");
    run(&["token", "verify", &token]).fails(
        2,
        "no verification key: pass --key FILE (a JWK, a JWKS or a PEM key), --secret SPEC or --jwks-url URL",
    );
    run(&["token", "encode", "--alg", "HS256"]).fails(2, "no signing key: pass --key FILE");
}

#[test]
fn malformed_keys() {
    let dir = Dir::new();
    let token = some_token(&dir);
    let cases = [
        (
            "bad-base64.pem",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
            "invalid key: PEM block `PUBLIC KEY` is not valid base64",
        ),
        (
            "unterminated.pem",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n",
            "PEM block `PUBLIC KEY` has no END line",
        ),
        (
            "garbage.der.pem",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "invalid key",
        ),
        (
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "extract its key with `openssl x509 -pubkey -noout`",
        ),
        (
            "broken.jwk",
            r#"{"kty": "EC", "crv": "#,
            "is not valid JSON",
        ),
        (
            "no-kty.jwk",
            r#"{"crv": "P-256"}"#,
            "not a valid JWK: missing field `kty`",
        ),
        (
            "dup.jwk",
            r#"{"kty":"oct","k":"AAAA","k":"BBBB"}"#,
            "not a valid JWK: duplicate field `k`",
        ),
        (
            "short-ec.jwk",
            r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#,
            "EC coordinates must be 32 bytes each for ES256",
        ),
        ("bad.jwks", r#"{"keys": 5}"#, "not a valid JWK Set"),
        (
            "text.key",
            "hello",
            "is neither a JWK, a JWKS nor a PEM key",
        ),
        ("binary.key", "\u{0}\u{1}\u{2}", "is neither a JWK"),
    ];
    for (name, content, needle) in cases {
        let path = dir.write(name, content);
        let out = run(&["token", "verify", "--alg", "ES256", "--key", &path, &token]);
        assert_eq!(out.code, 2, "{name}: {}", out.stderr);
        assert!(
            out.stderr.contains(&path),
            "{name} names the file: {}",
            out.stderr
        );
        out.fails(2, needle);
    }
    let not_utf8 = dir.write("not-utf8.der", [0x30u8, 0x82, 0xff, 0xfe]);
    run(&["token", "verify", "--key", &not_utf8, &token])
        .fails(2, "is not text: expected a JWK, a JWKS or a PEM key");
}

#[test]
fn pem_keys_and_secrets_need_alg() {
    let dir = Dir::new();
    let token = some_token(&dir);
    let pem = dir.generate("RS256", "pem");
    run(&["token", "verify", "--key", &pem, &token]).fails(
        2,
        "is a PEM key, which does not say which algorithm it is for: pass --alg",
    );
    run(&[
        "token",
        "verify",
        "--secret",
        "0123456789abcdef0123456789abcdef",
        &token,
    ])
    .fails(2, "--secret needs --alg (HS256, HS384 or HS512)");
    // An RSA JWK without `alg` fits six algorithms.
    let rsa_jwk = dir.generate("RS256", "jwk");
    let mut jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rsa_jwk).unwrap()).unwrap();
    jwk.as_object_mut().unwrap().remove("alg");
    let no_alg = dir.write("no-alg.jwk", jwk.to_string());
    run(&["token", "verify", "--key", &no_alg, &token]).fails(
        2,
        "is a RSA JWK without `alg`, which fits several algorithms: pass --alg",
    );
    // With --alg it works.
    let signed = encode(&["--alg", "PS384", "--key", &no_alg, "--exp", "+1h"]);
    run(&[
        "token", "verify", "--now", NOW_ARG, "--alg", "PS384", "--key", &no_alg, &signed,
    ])
    .success();
}

#[test]
fn keys_that_do_not_fit_the_algorithm() {
    let dir = Dir::new();
    let token = some_token(&dir);
    let es = dir.generate("ES256", "jwk");
    run(&["token", "verify", "--alg", "RS256", "--key", &es, &token]).fails(
        2,
        "key is bound to ES256 but RS256 was requested; pass the algorithm the key is for",
    );
    run(&["token", "encode", "--alg", "ES384", "--key", &es])
        .fails(2, "key is bound to ES256 but ES384 was requested");
    let pem = dir.generate("ES256", "pem");
    run(&["token", "encode", "--alg", "RS256", "--key", &pem]).fails(2, "RS256");
    run(&["token", "encode", "--alg", "HS256", "--key", &pem])
        .fails(2, "HMAC keys are raw secrets");
    run(&[
        "token",
        "encode",
        "--alg",
        "RS256",
        "--secret",
        "0123456789abcdef0123456789abcdef",
    ])
    .fails(2, "key is bound to an HMAC secret but RS256 was requested");

    // A public key verifies but cannot sign.
    let signer = tessera_jose::SigningKey::from_pem(
        tessera_jose::Algorithm::Es256,
        &std::fs::read_to_string(&pem).unwrap(),
    )
    .unwrap();
    let public = dir.write(
        "public.pem",
        signer.verifying_key().to_public_pem().unwrap(),
    );
    run(&["token", "encode", "--alg", "ES256", "--key", &public]).fails(
        2,
        "this PEM holds a public key, which can verify but not sign",
    );
    let public_jwk = dir.write("public.jwk", crate::common::public_jwk(&es));
    run(&["token", "encode", "--alg", "ES256", "--key", &public_jwk])
        .fails(2, "this JWK has no private part, so it cannot sign");
}

#[test]
fn short_hmac_secrets_are_refused_with_the_minimum() {
    let dir = Dir::new();
    let token = some_token(&dir);
    for (alg, min) in [("HS256", 32), ("HS384", 48), ("HS512", 64)] {
        let needle = format!("{alg} needs a secret of at least {min} bytes, got 5 (RFC 7518 §3.2)");
        run(&["token", "encode", "--alg", alg, "--secret", "hello"]).fails(2, &needle);
        run(&["token", "verify", "--alg", alg, "--secret", "hello", &token]).fails(2, &needle);
    }
    let out = run(&[
        "token",
        "verify",
        "--alg",
        "HS256",
        "--secret",
        "hunter2-hunter2",
        &token,
    ]);
    assert!(
        !out.stderr.contains("hunter2"),
        "the secret is never printed: {}",
        out.stderr
    );
    run(&[
        "token", "verify", "--alg", "HS256", "--secret", "b64:***", &token,
    ])
    .fails(2, "--secret b64:... is not valid base64");
}

#[test]
fn bad_times_are_refused() {
    let dir = Dir::new();
    let key = dir.generate("HS256", "jwk");
    for (flag, value) in [
        ("--exp", "soon"),
        ("--exp", "1.5h"),
        ("--exp", "1h30"),
        ("--exp", "3y"),
        ("--nbf", "+"),
        ("--iat", "yesterday"),
        ("--exp", "99999999999999999999999"),
    ] {
        run(&[
            "token", "encode", "--alg", "HS256", "--key", &key, flag, value,
        ])
        .fails(
            2,
            &format!("{flag} `{value}` is not a time: use a duration from now such as +30m"),
        );
    }
    let out = run(&[
        "token", "encode", "--alg", "HS256", "--key", &key, "--iat", "5", "--no-iat",
    ]);
    assert_eq!(
        out.code, 2,
        "clap refuses conflicting flags: {}",
        out.stderr
    );
}

#[test]
fn unknown_algorithms() {
    let dir = Dir::new();
    let token = some_token(&dir);
    let key = dir.path("HS256.jwk");
    let key = key.to_str().unwrap();
    run(&["token", "encode", "--alg", "HS257", "--key", key]).fails(
        2,
        "unknown algorithm `HS257`; choose one of HS256, HS384, HS512, RS256",
    );
    run(&["token", "verify", "--alg", "RSA-OAEP", "--key", key, &token])
        .fails(2, "unknown algorithm `RSA-OAEP`");
    run(&["token", "verify", "--alg", "eddsa", "--key", key, &token])
        .fails(2, "did you mean EdDSA?");
    let enc = dir.write("enc.jwk", r#"{"kty":"oct","alg":"A256GCM","k":"AAAA"}"#);
    run(&["token", "verify", "--key", &enc, &token]).fails(
        2,
        "algorithm `A256GCM` is not supported; the key's `alg` must be a JWS algorithm",
    );
}

#[test]
fn claims_must_not_be_set_twice_or_outside_their_flags() {
    let dir = Dir::new();
    let key = dir.generate("HS256", "jwk");
    let encode_with = |extra: &[&str]| {
        let mut args = vec!["token", "encode", "--alg", "HS256", "--key", &key];
        args.extend_from_slice(extra);
        run(&args)
    };
    encode_with(&["--claim", "exp=1"]).fails(
        2,
        "--claim sets `exp`, a registered claim: set it with --exp instead",
    );
    encode_with(&["--json", r#"{"sub":"x"}"#]).fails(
        2,
        "--json sets `sub`, a registered claim: set it with --sub instead",
    );
    encode_with(&["--claim", "iat=1"]).fails(2, "set it with --iat (set to now by default");
    encode_with(&["--claim", "a=1", "--claim", "a=2"])
        .fails(2, "--claim sets `a` a second time; give each claim once");
    encode_with(&["--json", r#"{"a":1}"#, "--claim", "a=2"]).fails(2, "a second time");
    encode_with(&["--claim", "novalue"]).fails(2, "--claim `novalue` is not KEY=VALUE");
    encode_with(&["--claim", "=1"]).fails(2, "a claim name is empty");
    encode_with(&["--json", "[1,2]"]).fails(2, "--json must be one JSON object");
    encode_with(&["--json", "{"]).fails(2, "--json must be one JSON object");
}

#[test]
fn an_empty_token_argument_is_a_usage_error() {
    let dir = Dir::new();
    let key = dir.generate("HS256", "jwk");
    run(&["token", "verify", "--key", &key, ""]).fails(2, "the token argument is empty");
    run(&["token", "decode", ""]).fails(2, "the token argument is empty");
}

#[test]
fn jws_mode_cannot_take_claim_rules() {
    let dir = Dir::new();
    let token = some_token(&dir);
    let key = dir.path("HS256.jwk");
    for flag in [
        ["--iss", "x"],
        ["--aud", "x"],
        ["--typ", "JWT"],
        ["--now", "1"],
    ] {
        let out = run(&[
            "token",
            "verify",
            "--jws",
            "--key",
            key.to_str().unwrap(),
            flag[0],
            flag[1],
            &token,
        ]);
        assert_eq!(out.code, 2, "{flag:?}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("the argument '--jws' cannot be used with"),
            "{flag:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn help_documents_the_defaults() {
    let encode = run(&["token", "encode", "--help"]).success().stdout_text();
    assert!(encode.contains("There is no default `exp`"), "{encode}");
    assert!(
        encode.contains("`iat` is set to now unless --no-iat"),
        "{encode}"
    );
    let verify = run(&["token", "verify", "--help"]).success().stdout_text();
    assert!(verify.contains("Exit 1: the token is refused"), "{verify}");
    let generate = run(&["keys", "generate", "--help"]).success().stdout_text();
    assert!(
        generate.contains("RFC 7638 thumbprint to stderr"),
        "{generate}"
    );
}

/// Another program's variable that is not UTF-8 (a Latin-1 name) is none of ours and must
/// not stop anything; a `TESSERA_*` one that is not UTF-8 is a configuration error naming it.
#[cfg(unix)]
#[test]
fn environment_variables_that_are_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;

    let dir = Dir::new();
    let data = dir.path("data");
    let latin1 = OsStr::from_bytes(b"caf\xe9");
    let out: crate::common::Run = crate::common::tessera()
        .args(["check-config", "--data-dir"])
        .arg(&data)
        .env("LEGACY_NAME", latin1)
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out: crate::common::Run = crate::common::tessera()
        .args(["check-config", "--data-dir"])
        .arg(&data)
        .env("TESSERA_ISSUER", latin1)
        .output()
        .unwrap()
        .into();
    out.fails(2, "environment variable TESSERA_ISSUER is not valid UTF-8");
}

/// A `--data-dir` that is not UTF-8 is refused; it was turned into another directory (its
/// odd bytes replaced by U+FFFD) and used.
#[cfg(unix)]
#[test]
fn a_data_dir_that_is_not_utf8_is_refused() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;

    let dir = Dir::new();
    let mut data = dir.path("d").into_os_string();
    data.push(OsStr::from_bytes(b"\xff"));
    let out: crate::common::Run = crate::common::tessera()
        .args(["users", "list", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap()
        .into();
    out.fails(2, "is not valid UTF-8");
    assert!(!dir.path("d\u{FFFD}").exists());
}

#[test]
fn a_data_dir_that_is_a_file_is_named_as_such() {
    let dir = Dir::new();
    std::fs::write(dir.path("plain"), "not a directory").unwrap();
    let out: crate::common::Run = crate::common::tessera()
        .args(["users", "list", "--data-dir"])
        .arg(dir.path("plain"))
        .output()
        .unwrap()
        .into();
    // A configuration error (exit 2), like a data directory that does not exist.
    out.fails(
        2,
        "is a file, not a directory; point it at a directory (one that does not exist yet is \
         created by `tessera serve`), or move the file away (set by --data-dir)",
    );
}

/// An administration command pointed at a data directory that does not exist (a typo in
/// --data-dir, or the wrong working directory for the default `./tessera-data`) used to
/// create it with a new master key and an empty database, and report success on that:
/// `users add` "created" a user the server never sees. It is refused, naming the
/// directory, and nothing is created.
#[test]
fn administration_commands_refuse_a_data_dir_that_does_not_exist() {
    let dir = Dir::new();
    let missing = dir.path("tesera-data");
    for args in [
        &["users", "list"][..],
        &["users", "add", "alice", "--password-stdin"],
        &["keys", "list"],
        &["keys", "rotate"],
        &["sessions", "list"],
        &["clients", "list"],
        &["audit", "verify"],
    ] {
        let out: crate::common::Run = crate::common::tessera()
            .args(args)
            .arg("--data-dir")
            .arg(&missing)
            .env_remove("TESSERA_DATABASE_URL")
            .write_stdin("a long enough passphrase here\n")
            .output()
            .unwrap()
            .into();
        out.fails(2, "does not exist: point --data-dir (TESSERA_DATA_DIR) at");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    // An existing, empty directory is a new database, as before.
    std::fs::create_dir(&missing).unwrap();
    crate::common::tessera()
        .args(["users", "list", "--data-dir"])
        .arg(&missing)
        .env_remove("TESSERA_DATABASE_URL")
        .assert()
        .success();
}

/// `TESSERA_CONFIG=` (empty, as a unit file or a compose file can leave it) means no file;
/// clap read it as a missing value ("a value is required for '--config <FILE>'"). Set, it
/// is read like `--config`, and `--config` wins over it.
#[test]
fn an_empty_tessera_config_means_no_configuration_file() {
    let dir = Dir::new();
    let data = dir.path("data");
    let check = |config: &str, args: &[&str]| -> crate::common::Run {
        crate::common::tessera()
            .args(["check-config", "--data-dir"])
            .arg(&data)
            .args(args)
            .env("TESSERA_CONFIG", config)
            .output()
            .unwrap()
            .into()
    };
    let out = check("", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let file = dir.path("tessera.toml");
    std::fs::write(&file, "issuer = \"https://from-the-env-file.example\"\n").unwrap();
    let file = file.to_str().unwrap();
    let out = check(file, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout_text().contains("from-the-env-file"),
        "{}",
        out.stdout_text()
    );
    let other = dir.path("other.toml");
    std::fs::write(&other, "issuer = \"https://from-the-flag.example\"\n").unwrap();
    let out = check(file, &["--config", other.to_str().unwrap()]);
    assert!(
        out.stdout_text().contains("from-the-flag"),
        "{}",
        out.stdout_text()
    );
}
