//! `tessera token verify`: refusals with exit 1 and the precise `jose` message, `--explain`,
//! `--now`, `-` for stdin, key selection among several keys, and `--jwks-url`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;

use serde_json::json;
use tessera_jose::base64url;

use crate::common::{Dir, NOW, NOW_ARG, encode, header, public_jwk, run, run_stdin};

/// A fresh ES256 key and a token signed with it: iss `me`, aud `api`, typ `at+jwt`,
/// exp NOW+60, iat NOW.
fn fixture() -> (Dir, String, String) {
    let dir = Dir::new();
    let key = dir.generate("ES256", "jwk");
    let token = encode(&[
        "--alg", "ES256", "--key", &key, "--iss", "me", "--aud", "api", "--typ", "at+jwt", "--exp",
        "+60", "--sub", "alice",
    ]);
    (dir, key, token)
}

fn verify(key: &str, extra: &[&str], token: &str) -> crate::common::Run {
    let mut args = vec!["token", "verify", "--key", key];
    args.extend_from_slice(extra);
    args.push(token);
    run(&args)
}

#[test]
fn a_valid_token_prints_its_header_and_claims() {
    let (_dir, key, token) = fixture();
    let v = verify(
        &key,
        &[
            "--now", NOW_ARG, "--iss", "me", "--aud", "api", "--typ", "at+jwt",
        ],
        &token,
    )
    .success()
    .json();
    assert_eq!(v["verified"], true);
    assert_eq!(v["header"]["typ"], "at+jwt");
    assert_eq!(v["claims"]["sub"], "alice");
    assert_eq!(v["claims"]["exp"], NOW + 60);
}

#[test]
fn a_tampered_token_is_refused() {
    let (_dir, key, token) = fixture();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = crate::common::payload(&token);
    claims["sub"] = json!("mallory");
    parts[1] = base64url::encode(claims.to_string());
    let forged = parts.join(".");
    verify(&key, &["--now", NOW_ARG], &forged).fails(1, "error: signature is invalid");

    // A signature from another key of the same algorithm.
    let other = Dir::new();
    let other_key = other.generate("ES256", "jwk");
    verify(&other_key, &["--now", NOW_ARG], &token).fails(1, "signature is invalid");
}

#[test]
fn an_expired_token_is_refused_with_by_how_much() {
    let (_dir, key, token) = fixture();
    // exp NOW+60, leeway 30: valid until NOW+89.
    verify(&key, &["--now", &(NOW + 89).to_string()], &token).success();
    verify(&key, &["--now", &(NOW + 3600).to_string()], &token).fails(
        1,
        "error: token expired 3540s ago (exp 1700000060, now 1700003600, leeway 30s)",
    );
    verify(
        &key,
        &["--now", &(NOW + 60).to_string(), "--leeway", "0"],
        &token,
    )
    .fails(
        1,
        "token expired 0s ago (exp 1700000060, now 1700000060, leeway 0s)",
    );
}

#[test]
fn tokens_from_the_future_are_refused() {
    let (_dir, key, token) = fixture();
    verify(&key, &["--now", &(NOW - 600).to_string()], &token).fails(
        1,
        "token was issued 600s in the future (iat 1700000000, now 1699999400, leeway 30s)",
    );
    let dir = Dir::new();
    let key = dir.generate("HS256", "jwk");
    let token = encode(&[
        "--alg", "HS256", "--key", &key, "--exp", "+1h", "--nbf", "+10m",
    ]);
    verify(&key, &["--now", NOW_ARG], &token).fails(
        1,
        "token is not valid for another 600s (nbf 1700000600, now 1700000000, leeway 30s)",
    );
}

#[test]
fn the_algorithm_comes_from_the_key_not_the_token() {
    let dir = Dir::new();
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef";
    let token = encode(&["--alg", "HS256", "--secret", secret, "--exp", "+1h"]);
    run(&[
        "token", "verify", "--now", NOW_ARG, "--alg", "HS384", "--secret", secret, &token,
    ])
    .fails(
        1,
        "error: token algorithm HS256 does not match the key's HS384",
    );

    // An ES256 JWK refuses an RS256 token before any cryptography.
    let es = dir.generate("ES256", "jwk");
    let rs = dir.generate("RS256", "jwk");
    let token = encode(&["--alg", "RS256", "--key", &rs, "--exp", "+1h"]);
    verify(&es, &["--now", NOW_ARG], &token)
        .fails(1, "token algorithm RS256 does not match the key's ES256");
    // --alg with a JWKS: the token must use that algorithm.
    let set = dir.write(
        "set.jwks",
        format!(r#"{{"keys":[{},{}]}}"#, public_jwk(&es), public_jwk(&rs)),
    );
    verify(&set, &["--now", NOW_ARG], &token).success();
    verify(&set, &["--now", NOW_ARG, "--alg", "ES256"], &token)
        .fails(1, "token algorithm RS256 does not match the key's ES256");
}

#[test]
fn issuer_audience_and_type_rules_are_enforced() {
    let (_dir, key, token) = fixture();
    let now = ["--now", NOW_ARG];
    verify(&key, &[&now[..], &["--iss", "other"]].concat(), &token)
        .fails(1, "error: issuer `me` is not the expected `other`");
    verify(
        &key,
        &[&now[..], &["--aud", "x", "--aud", "y"]].concat(),
        &token,
    )
    .fails(
        1,
        r#"error: audience ["api"] does not include any of ["x", "y"]"#,
    );
    verify(
        &key,
        &[&now[..], &["--aud", "x", "--aud", "api"]].concat(),
        &token,
    )
    .success();
    verify(&key, &[&now[..], &["--typ", "dpop+jwt"]].concat(), &token).fails(
        1,
        "error: token type `at+jwt` is not the required `dpop+jwt`",
    );
    verify(
        &key,
        &[&now[..], &["--typ", "application/AT+JWT"]].concat(),
        &token,
    )
    .success();

    let dir = Dir::new();
    let hs = dir.generate("HS256", "jwk");
    let bare = encode(&["--alg", "HS256", "--key", &hs, "--exp", "+1h"]);
    verify(&hs, &[&now[..], &["--iss", "me"]].concat(), &bare)
        .fails(1, "required claim `iss` is missing");
    verify(&hs, &[&now[..], &["--typ", "JWT"]].concat(), &bare)
        .fails(1, "token type (none) is not the required `JWT`");
}

#[test]
fn exp_is_required_unless_only_the_signature_is_checked() {
    let dir = Dir::new();
    let key = dir.generate("EdDSA", "jwk");
    let token = encode(&["--alg", "EdDSA", "--key", &key, "--claim", "x=1"]);
    verify(&key, &["--now", NOW_ARG], &token).fails(
        1,
        "required claim `exp` is missing; Tessera requires exp (to check only the signature, pass --jws)",
    );
    let out = verify(&key, &["--jws"], &token).success();
    assert_eq!(out.json(), json!({"iat": NOW, "x": 1}));
}

#[test]
fn the_token_can_come_from_stdin() {
    let (_dir, key, token) = fixture();
    let out = run_stdin(
        &["token", "verify", "--key", &key, "--now", NOW_ARG, "-"],
        &format!("{token}\n"),
    )
    .success();
    assert_eq!(out.json()["claims"]["sub"], "alice");
    run_stdin(&["token", "verify", "--key", &key, "-"], "\n").fails(2, "stdin held no token");
}

#[test]
fn without_now_the_system_clock_is_used() {
    let (_dir, key, token) = fixture();
    // The fixture expired in 2023.
    verify(&key, &[], &token).fails(1, "token expired");
}

#[test]
fn explain_prints_each_step_and_the_clock_offset() {
    let (_dir, key, token) = fixture();
    let out = verify(
        &key,
        &[
            "--explain",
            "--now",
            &(NOW + 3600).to_string(),
            "--iss",
            "me",
        ],
        &token,
    );
    assert_eq!(out.code, 1);
    let kid = header(&token)["kid"].as_str().unwrap().to_owned();
    for expected in [
        "explain: token: ",
        r#"explain: ok: structure: three segments, header (unverified) {"alg":"ES256""#,
        &format!("explain: key: the one key given, from {key}: ES256, kid `{kid}`"),
        "explain: ok: signature verifies (ES256)",
        "explain: clock: now 1700003600 (2023-11-14T23:13:20Z, from --now), leeway 30s",
        "explain: exp: 1700000060 (2023-11-14T22:14:20Z), 3540s ago (59m)",
        "explain: iat: 1700000000 (2023-11-14T22:13:20Z), 3600s ago (1h)",
        r#"explain: iss: "me" (required "me")"#,
        "explain: FAILED at claims: token expired 3540s ago (exp 1700000060, now 1700003600, leeway 30s)",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing `{expected}` in:\n{}",
            out.stderr
        );
    }
    let last = out.stderr.lines().last().unwrap();
    assert!(last.starts_with("error: token expired 3540s ago"), "{last}");

    // A valid token: every step ok, JSON still on stdout.
    let out = verify(&key, &["--explain", "--now", NOW_ARG], &token).success();
    assert!(
        out.stderr.contains("explain: ok: claims valid"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["verified"], true);

    // A signature failure stops before the claims.
    let other = Dir::new();
    let wrong = other.generate("ES256", "jwk");
    let out = verify(&wrong, &["--explain", "--now", NOW_ARG], &token);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("explain: FAILED at signature: signature is invalid")
    );
    assert!(
        out.stderr
            .contains("differs from the key's; with one key the kid does not choose")
    );
    assert!(!out.stderr.contains("explain: clock"));
}

#[test]
fn explain_says_when_a_date_is_past_what_it_can_show() {
    let dir = Dir::new();
    let key = dir.generate("ES256", "jwk");
    // 10000-01-01T00:00:00Z: a NumericDate, but past what RFC 3339 can write.
    let token = encode(&["--alg", "ES256", "--key", &key, "--exp", "253402300800"]);
    let out = verify(&key, &["--explain", "--now", NOW_ARG], &token).success();
    assert!(
        out.stderr
            .contains("explain: exp: 253402300800 (out of range), "),
        "{}",
        out.stderr
    );
}

#[test]
fn several_keys_are_chosen_between_by_kid() {
    let dir = Dir::new();
    let es = dir.generate("ES256", "jwk");
    let ps = dir.generate("PS256", "jwk");
    let ed = dir.generate("EdDSA", "jwk");
    let token = encode(&["--alg", "PS256", "--key", &ps, "--exp", "+1h"]);

    // Several --key files, each JWK with its own algorithm.
    let out = run(&[
        "token",
        "verify",
        "--explain",
        "--now",
        NOW_ARG,
        "--key",
        &es,
        "--key",
        &ps,
        "--key",
        &ed,
        &token,
    ])
    .success();
    assert!(
        out.stderr.contains("explain: keys: 3 candidates"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(") from {ps}")),
        "names the selected key's file: {}",
        out.stderr
    );
    // --alg names the algorithm of every key given one by one: a JWK bound to another is
    // refused rather than silently left out.
    run(&[
        "token", "verify", "--now", NOW_ARG, "--key", &es, "--key", &ps, "--alg", "PS256", &token,
    ])
    .fails(
        2,
        "ES256.jwk: key is bound to ES256 but PS256 was requested",
    );

    // Several PEM keys of one algorithm: their kids are their thumbprints, as `encode` sets.
    let first = dir.generate("ES384", "pem");
    let second = Dir::new();
    let second = second.generate("ES384", "pem");
    let token = encode(&["--alg", "ES384", "--key", &second, "--exp", "+1h"]);
    let out = run(&[
        "token",
        "verify",
        "--explain",
        "--now",
        NOW_ARG,
        "--alg",
        "ES384",
        "--key",
        &first,
        "--key",
        &second,
        &token,
    ])
    .success();
    assert!(
        out.stderr.contains(&format!(") from {second}")),
        "{}",
        out.stderr
    );

    // A JWKS of public keys.
    let set = dir.write(
        "public.jwks",
        format!(r#"{{"keys":[{},{}]}}"#, public_jwk(&es), public_jwk(&ps)),
    );
    let es_token = encode(&["--alg", "ES256", "--key", &es, "--exp", "+1h"]);
    run(&[
        "token", "verify", "--now", NOW_ARG, "--key", &set, &es_token,
    ])
    .success();

    // A kid the set does not have.
    let unknown = encode(&[
        "--alg", "ES256", "--key", &es, "--kid", "unknown", "--exp", "+1h",
    ]);
    run(&["token", "verify", "--now", NOW_ARG, "--key", &set, &unknown]).fails(
        1,
        "error: no verification key for kid `unknown` (the keys have kids `",
    );
    // With a single key the kid chooses nothing: the key the user gave is used.
    run(&["token", "verify", "--now", NOW_ARG, "--key", &es, &unknown]).success();
}

#[test]
fn keys_that_cannot_share_a_set_are_a_usage_error() {
    let dir = Dir::new();
    let es = dir.generate("ES256", "jwk");
    let hs = dir.generate("HS256", "jwk");
    let token = encode(&["--alg", "ES256", "--key", &es, "--exp", "+1h"]);
    run(&["token", "verify", "--key", &es, "--key", &hs, &token]).fails(
        2,
        "these keys cannot be used together: key set refused: shared secrets and public keys must not share a key set",
    );
    run(&["token", "verify", "--key", &es, "--key", &es, &token]).fails(2, "appears twice");
}

// ------------------------------------------------------------------ --jwks-url

/// Serves the responses `make` returns (given the port) to successive connections on
/// 127.0.0.1, one each, then stops.
fn serve(make: impl FnOnce(u16) -> Vec<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let responses = make(port);
    std::thread::spawn(move || {
        for response in responses {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = stream.write_all(&response);
        }
    });
    port
}

fn http(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// `tessera token verify --jwks-url URL --now NOW TOKEN`.
fn verify_from(url: &str, token: &str) -> crate::common::Run {
    run(&[
        "token",
        "verify",
        "--jwks-url",
        url,
        "--now",
        NOW_ARG,
        token,
    ])
}

#[test]
fn jwks_url_fetches_the_keys_and_skips_unusable_ones() {
    let (_dir, key, token) = fixture();
    let jwks = format!(
        r#"{{"keys":[{},{{"kty":"weird","kid":"odd"}},{{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}}]}}"#,
        public_jwk(&key)
    );
    let port = serve(|_| {
        vec![http(
            "200 OK",
            "content-type: application/json\r\n",
            jwks.as_bytes(),
        )]
    });
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let out = run(&[
        "token",
        "verify",
        "--jwks-url",
        &url,
        "--now",
        NOW_ARG,
        "--explain",
        &token,
    ])
    .success();
    assert_eq!(out.json()["claims"]["sub"], "alice");
    for expected in [
        &format!("explain: fetching the JWKS from {url}")[..],
        "explain: received ",
        "explain: skipped the key `odd` of ",
        "explain: skipped the key `enc` of ",
        "explain: ok: selected kid",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing `{expected}`:\n{}",
            out.stderr
        );
    }
}

#[test]
fn jwks_url_refuses_redirects_to_other_hosts_errors_and_huge_bodies() {
    let (_dir, _key, token) = fixture();
    let verify_url = |url: &str| run(&["token", "verify", "--jwks-url", url, &token]);

    // 127.0.0.1 redirecting to localhost is another host.
    let port = serve(|_| {
        vec![http(
            "302 Found",
            "location: http://localhost:9/jwks\r\n",
            b"",
        )]
    });
    verify_url(&format!("http://127.0.0.1:{port}/jwks")).fails(
        2,
        "redirects to http://localhost:9/jwks, another host or scheme, which is not followed",
    );

    let port = serve(|_| vec![http("404 Not Found", "", b"nope")]);
    verify_url(&format!("http://127.0.0.1:{port}/jwks"))
        .fails(2, "returned HTTP 404 Not Found; check the URL");

    let big = vec![b' '; 2 * 1024 * 1024];
    let port = serve(|_| vec![http("200 OK", "", &big)]);
    verify_url(&format!("http://127.0.0.1:{port}/jwks")).fails(2, "returned more than 1 MiB");

    let port = serve(|_| vec![http("200 OK", "", b"<html>hello</html>")]);
    verify_url(&format!("http://127.0.0.1:{port}/jwks")).fails(2, "did not return a JWK Set");

    let port = serve(|_| vec![http("200 OK", "", br#"{"keys":[{"kty":"weird"}]}"#)]);
    verify_url(&format!("http://127.0.0.1:{port}/jwks"))
        .fails(2, "holds no usable signature verification key: 1 skipped");

    verify_url("ftp://127.0.0.1/jwks").fails(2, "must be an http:// or https:// URL");
    verify_url("not a url").fails(2, "is not a URL");

    // A password in the URL is never repeated: not by our messages, not by reqwest's.
    let port = serve(|_| vec![http("404 Not Found", "", b"nope")]);
    let out = verify_url(&format!("http://user:s3cretpw@127.0.0.1:{port}/jwks"));
    assert!(!out.stderr.contains("s3cretpw"), "{}", out.stderr);
    out.fails(2, "user:***@127.0.0.1");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = verify_url(&format!("http://user:s3cretpw@127.0.0.1:{port}/jwks"));
    assert!(!out.stderr.contains("s3cretpw"), "{}", out.stderr);
    out.fails(2, "cannot fetch http://user:***@127.0.0.1");
    let out = verify_url("http://user:s3cretpw@[::zz]/jwks");
    assert!(!out.stderr.contains("s3cretpw"), "{}", out.stderr);
    out.fails(2, "is not a URL");
}

#[test]
fn jwks_url_follows_a_redirect_on_the_same_host() {
    let (_dir, key, token) = fixture();
    let jwks = format!(r#"{{"keys":[{}]}}"#, public_jwk(&key));
    let port = serve(|port| {
        vec![
            http(
                "301 Moved Permanently",
                &format!("location: http://127.0.0.1:{port}/v2/jwks\r\n"),
                b"",
            ),
            http("200 OK", "", jwks.as_bytes()),
        ]
    });
    let url = format!("http://127.0.0.1:{port}/jwks");
    verify_from(&url, &token).success();
}

/// A JWK Set is published: a shared secret in it is known to everyone, so it is never used
/// (as tessera-axum's `jwks_uri` drops it), and it does not stop the set's public keys from
/// verifying (a secret next to public keys made the whole set unusable).
#[test]
fn jwks_url_never_verifies_with_a_published_secret() {
    let secret = "a secret of thirty-two bytes, ok";
    let k = base64url::encode(secret);
    let forged = encode(&[
        "--alg", "HS256", "--secret", secret, "--kid", "h", "--exp", "+60", "--sub", "mallory",
    ]);
    let only_secret = format!(r#"{{"keys":[{{"kty":"oct","kid":"h","alg":"HS256","k":"{k}"}}]}}"#);
    let port = serve(|_| vec![http("200 OK", "", only_secret.as_bytes())]);
    let url = format!("http://127.0.0.1:{port}/jwks");
    let out = verify_from(&url, &forged);
    assert_eq!(out.code, 2, "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("publishes a shared secret") && out.stderr.contains("no usable"),
        "{}",
        out.stderr
    );

    let (_dir, key, token) = fixture();
    let mixed = format!(
        r#"{{"keys":[{},{{"kty":"oct","kid":"h","alg":"HS256","k":"{k}"}}]}}"#,
        public_jwk(&key)
    );
    let port = serve(|_| {
        vec![
            http("200 OK", "", mixed.as_bytes()),
            http("200 OK", "", mixed.as_bytes()),
        ]
    });
    let url = format!("http://127.0.0.1:{port}/jwks");
    let out = verify_from(&url, &token).success();
    assert_eq!(out.json()["claims"]["sub"], "alice");
    let out = verify_from(&url, &forged);
    assert_eq!(out.code, 1, "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("no verification key for kid `h`"),
        "{}",
        out.stderr
    );
}

/// A private key published in a JWK Set (`d`) is known to whoever can read the set: it is
/// never used, as tessera-axum never uses it, and the set's public keys still verify.
#[test]
fn jwks_url_never_verifies_with_a_published_private_key() {
    let (_dir, key, token) = fixture();
    let other = Dir::new();
    let leaked = other.generate("ES256", "jwk");
    let leaked_jwk = std::fs::read_to_string(&leaked).unwrap();
    let forged = encode(&[
        "--alg", "ES256", "--key", &leaked, "--exp", "+60", "--sub", "mallory",
    ]);
    let jwks = format!(r#"{{"keys":[{},{}]}}"#, public_jwk(&key), leaked_jwk.trim());
    let port = serve(|_| {
        vec![
            http("200 OK", "", jwks.as_bytes()),
            http("200 OK", "", jwks.as_bytes()),
        ]
    });
    let url = format!("http://127.0.0.1:{port}/jwks");
    let out = verify_from(&url, &forged);
    assert_eq!(out.code, 1, "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("publishes a private key")
            && out.stderr.contains("no verification key for kid"),
        "{}",
        out.stderr
    );
    let out = verify_from(&url, &token).success();
    assert_eq!(out.json()["claims"]["sub"], "alice");
}

/// RFC 7517 §5: entries of a fetched JWK Set that are not JWKs (a member of the wrong JSON
/// type, no `kty`, a member named twice) are skipped, as tessera-axum skips them, with a
/// warning that counts them and gives each one's index and reason, never a value; the other
/// keys still verify. One such entry made the whole set "not a JWK Set" (exit 2), and the
/// message quoted the refused value.
#[test]
fn jwks_url_lists_the_first_sixteen_skipped_entries_then_counts_the_rest() {
    let (_dir, key, token) = fixture();
    let junk = vec!["{}"; 20].join(",");
    let jwks = format!(r#"{{"keys":[{junk},{}]}}"#, public_jwk(&key));
    let port = serve(|_| vec![http("200 OK", "", jwks.as_bytes())]);
    let url = format!("http://127.0.0.1:{port}/jwks");
    let out = verify_from(&url, &token);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "warning: {url}: skipped 20 entries of the JWK Set that are not a JWK"
        )),
        "{}",
        out.stderr
    );
    for i in 0..16 {
        assert!(
            out.stderr
                .contains(&format!("warning: {url}: skipped entry {i}: ")),
            "entry {i}:\n{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("skipped entry 16:"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "warning: {url}: and 4 more entries skipped, not listed"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 18, "{}", out.stderr);
}

#[test]
fn jwks_url_skips_entries_that_are_not_jwks_and_says_which_and_why() {
    let (_dir, key, token) = fixture();
    let jwks = format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"r","alg":"RS256","n":987654321,"e":"AQAB"}},{},{{"kty":"EC","kid":"ops","crv":"P-256","key_ops":"c2VjcmV0LW9wcw"}},{{"kid":"no-kty"}},{{"kty":"EC","kid":"a","kid":"b"}}]}}"#,
        public_jwk(&key)
    );
    let only_unread = r#"{"keys":[{"kty":"EC","kid":"ops","key_ops":"c2VjcmV0LW9wcw"}]}"#;
    let port = serve(|_| {
        vec![
            http("200 OK", "", jwks.as_bytes()),
            http("200 OK", "", only_unread.as_bytes()),
            http("200 OK", "", b"[[]]"),
        ]
    });
    let url = format!("http://127.0.0.1:{port}/jwks");
    let out = verify_from(&url, &token);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert_eq!(out.json()["claims"]["sub"], "alice");
    for expected in [
        format!("warning: {url}: skipped 4 entries of the JWK Set that are not a JWK"),
        format!("warning: {url}: skipped entry 0: invalid key: not a valid JWK: "),
        format!("warning: {url}: skipped entry 2: "),
        format!(
            "warning: {url}: skipped entry 3: invalid key: not a valid JWK: missing field `kty`"
        ),
        format!(
            "warning: {url}: skipped entry 4: invalid key: not a valid JWK: duplicate field `kid`"
        ),
    ] {
        assert!(
            out.stderr.contains(&expected),
            "missing `{expected}`:\n{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("entry 1"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 5, "{}", out.stderr);
    for value in ["987654321", "c2VjcmV0"] {
        assert!(
            !out.stderr.contains(value),
            "{value} quoted:\n{}",
            out.stderr
        );
    }

    let out = verify_from(&url, &token);
    assert_eq!(out.code, 2, "stderr:\n{}", out.stderr);
    assert!(
        out.stderr
            .contains("skipped 1 entry of the JWK Set that is not a JWK")
            && out.stderr.contains(
                "holds no usable signature verification key: 1 skipped (first skipped: entry 0: "
            )
            && !out.stderr.contains("c2VjcmV0"),
        "{}",
        out.stderr
    );
    // Not a JWK Set at all (serde reads a JSON array as the set's struct).
    verify_from(&url, &token).fails(2, "not a valid JWK Set: not a JSON object");
}

/// Keys that share a `kid` in a fetched JWK Set are ambiguous: they are dropped, as
/// tessera-axum drops them, and the set's other keys still verify (the whole set was
/// refused, so a token tessera-axum accepts was a usage error here).
#[test]
fn jwks_url_drops_keys_with_a_duplicated_kid_and_keeps_the_others() {
    let (_dir, key, token) = fixture();
    let other = Dir::new();
    let (a, b) = (
        other.generate("ES256", "jwk"),
        other.generate("ES384", "jwk"),
    );
    let twin = |path: &str| {
        let mut jwk: serde_json::Value = serde_json::from_str(&public_jwk(path)).unwrap();
        jwk["kid"] = json!("twin");
        jwk
    };
    let jwks = json!({"keys": [serde_json::from_str::<serde_json::Value>(&public_jwk(&key)).unwrap(), twin(&a), twin(&b)]})
        .to_string();
    let twin_token = encode(&[
        "--alg", "ES256", "--key", &a, "--kid", "twin", "--exp", "+60",
    ]);
    let port = serve(|_| {
        vec![
            http("200 OK", "", jwks.as_bytes()),
            http("200 OK", "", jwks.as_bytes()),
        ]
    });
    let url = format!("http://127.0.0.1:{port}/jwks");
    let out = verify_from(&url, &token);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert_eq!(out.json()["claims"]["sub"], "alice");
    assert!(
        out.stderr.contains("several keys with the kid `twin`"),
        "{}",
        out.stderr
    );
    let out = verify_from(&url, &twin_token);
    assert_eq!(out.code, 1, "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("no verification key for kid `twin`"),
        "{}",
        out.stderr
    );
}

/// Claims nested deeper than serde_json's 128 levels pass the claim rules (they read only
/// the claims they check), but cannot be printed: `verify` refuses (it printed
/// `"claims": {}` as verified) and `decode` says why it shows them as text (it said "not
/// JSON").
#[test]
fn claims_too_deep_to_print_are_never_shown_empty_as_verified() {
    let secret = "a secret of thirty-two bytes, ok";
    let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
    let payload = format!(r#"{{"sub":"deep","exp":{},"n":{deep}}}"#, NOW + 3600);
    let input = format!(
        "{}.{}",
        base64url::encode(br#"{"alg":"HS256"}"#),
        base64url::encode(payload.as_bytes())
    );
    let key = tessera_jose::SigningKey::from_hmac_secret(
        tessera_jose::Algorithm::Hs256,
        secret.as_bytes(),
    )
    .unwrap();
    let token = format!(
        "{input}.{}",
        base64url::encode(key.sign(input.as_bytes()).unwrap())
    );
    run(&[
        "token", "verify", "--alg", "HS256", "--secret", secret, "--now", NOW_ARG, &token,
    ])
    .fails(1, "the claims cannot be printed");

    let out = run(&["token", "decode", &token]).success();
    assert!(
        out.stderr.contains("nests more than 128 levels deep"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["payload"], payload);
}
