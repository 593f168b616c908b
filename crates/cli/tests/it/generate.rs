//! `tessera keys generate`: every algorithm, both formats, file mode, no overwriting, the
//! thumbprint on stderr.

use serde_json::Value;
use tessera_jose::{Jwk, SigningKey};

use crate::common::{ALGS, Dir, arg, run};

#[test]
fn every_algorithm_generates_a_private_jwk_with_alg_use_and_kid() {
    for alg in ALGS {
        let out = run(&["keys", "generate", "--alg", alg]).success();
        let jwk: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(jwk["alg"], alg, "{alg}");
        assert_eq!(jwk["use"], "sig", "{alg}");
        let kid = jwk["kid"].as_str().unwrap();
        // stderr is the RFC 7638 thumbprint, which is also the kid.
        assert_eq!(out.stderr, format!("kid: {kid}\n"), "{alg}");
        let parsed = Jwk::from_json(&jwk.to_string()).unwrap();
        assert_eq!(parsed.thumbprint().unwrap(), kid, "{alg}");
        assert!(parsed.is_private(), "{alg}");
        let key = SigningKey::from_jwk(&parsed, None).unwrap();
        assert_eq!(key.algorithm().as_str(), alg);
    }
}

#[test]
fn asymmetric_algorithms_generate_pkcs8_pem() {
    for alg in ALGS.iter().filter(|a| !a.starts_with("HS")) {
        let out = run(&["keys", "generate", "--alg", alg, "--format", "pem"]).success();
        let pem = out.stdout_text();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{alg}");
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"), "{alg}");
        let key = SigningKey::from_pem(alg.parse().unwrap(), &pem).unwrap();
        assert_eq!(
            out.stderr,
            format!("kid: {}\n", key.verifying_key().thumbprint().unwrap()),
            "{alg}"
        );
    }
}

#[test]
fn hmac_keys_have_no_pem_form() {
    for alg in ["HS256", "HS384", "HS512"] {
        run(&["keys", "generate", "--alg", alg, "--format", "pem"])
            .fails(2, "shared secret, which has no PEM form: use --format jwk");
    }
}

#[test]
fn hmac_secrets_are_as_long_as_the_hash() {
    for (alg, len) in [("HS256", 32), ("HS384", 48), ("HS512", 64)] {
        let jwk: Value =
            serde_json::from_slice(&run(&["keys", "generate", "--alg", alg]).success().stdout)
                .unwrap();
        let k = tessera_jose::base64url::decode(jwk["k"].as_str().unwrap()).unwrap();
        assert_eq!(k.len(), len, "{alg}");
    }
}

#[test]
fn out_writes_an_owner_only_file_and_never_overwrites() {
    let dir = Dir::new();
    let path = dir.path("key.pem");
    let out = run(&[
        "keys",
        "generate",
        "--alg",
        "ES384",
        "--format",
        "pem",
        "--out",
        &arg(&path),
    ])
    .success();
    assert!(out.stdout.is_empty(), "the key goes to the file only");
    assert!(out.stderr.starts_with("kid: "), "{}", out.stderr);
    let first = std::fs::read_to_string(&path).unwrap();
    assert!(first.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    run(&["keys", "generate", "--alg", "ES384", "--out", &arg(&path)])
        .fails(1, "already exists and is never overwritten");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first, "untouched");
}

#[test]
fn unknown_algorithms_are_usage_errors() {
    run(&["keys", "generate", "--alg", "ES257"])
        .fails(2, "unknown algorithm `ES257`; choose one of HS256");
    run(&["keys", "generate", "--alg", "es256"]).fails(2, "did you mean ES256?");
    run(&["keys", "generate", "--alg", "none"]).fails(2, "`none` (an unsigned token) is never");
}

/// `--out` in a directory that does not exist: refused before the key is generated (an
/// RSA key takes a moment), saying which directory and what to do; it was a bare "No such
/// file or directory" after the generation.
#[test]
fn an_out_path_in_a_missing_directory_is_refused_before_generating() {
    let dir = Dir::new();
    let out = dir.path("missing/key.jwk");
    run(&["keys", "generate", "--alg", "ES256", "--out", &arg(&out)])
        .fails(2, "does not exist; create the directory first (`mkdir -p");
    let file = dir.write("file", "");
    run(&[
        "keys",
        "generate",
        "--alg",
        "ES256",
        "--out",
        &format!("{file}/key.jwk"),
    ])
    .fails(2, "is not a directory");
    assert!(!out.exists());
}
