//! The attack regression corpus: every case in `tests/data/attacks.toml` (one line each; the
//! file's header documents the DSL) is built into a token and sent to real servers on real
//! sockets: one signing with RS256, one with ES256 (both with keys generated and stored by
//! the server) and one with HS256 and a secret the test knows.
//!
//! Every case asserts its status and `error` (RFC 6749 §5.2, RFC 6750 §3.1 with the
//! `WWW-Authenticate` challenge for 401), never a 200 unless it is a sanity case and never a
//! 5xx; bearer cases are also introspected (RFC 7662 §2.2: `active` is false for all of
//! them). A local listener stands in for any `jku`/`x5u` URL and must see zero connections.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tessera_jose::{Algorithm, SigningKey, base64url};
use tessera_testkit::{TestApp, spawn_app_with};

use crate::{claims_of, header_of};

/// The corpus, compiled in so that a missing file fails the build, not silently the run.
const CORPUS: &str = include_str!("../data/attacks.toml");

/// The secret of the HS256 server (known to the attacker in the "signed with the known
/// secret" cases: they test claim validation, not the signature).
const KNOWN_SECRET: &str = "attack-corpus-known-hs256-secret-0123456789";

const PASSWORD: &str = "correct horse battery staple 42";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ServerSel {
    #[default]
    Any,
    Asym,
    Rs256,
    Es256,
    Hs256,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Base {
    #[default]
    Access,
    Refresh,
    OtherUser,
    Revoked,
    LoggedOut,
    DeletedUser,
    DisabledUser,
    SpareRefresh,
    Literal,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Sign {
    #[default]
    Keep,
    Server,
    Attacker,
    HmacPem,
    HmacJwk,
    Zero,
    Empty,
    Swap,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum SigMutation {
    Truncate,
    Bitflip,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Shape {
    TwoSegments,
    FourSegments,
    PadHeader,
    PadSignature,
    NoncanonicalSignature,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Endpoint {
    #[default]
    Me,
    Refresh,
    SessionRefresh,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    server: ServerSel,
    #[serde(default)]
    base: Base,
    literal: Option<String>,
    repeat: Option<(String, usize)>,
    header: Option<Map<String, Value>>,
    claims: Option<Map<String, Value>>,
    header_raw: Option<String>,
    claims_raw: Option<String>,
    header_append: Option<String>,
    claims_append: Option<String>,
    #[serde(default)]
    sign: Sign,
    sig: Option<SigMutation>,
    shape: Option<Shape>,
    #[serde(default)]
    endpoint: Endpoint,
    expect: u16,
    error: Option<String>,
    /// The answer to the token in the `Authorization` header when it differs from the
    /// cookie's and introspection's (a token that is no b64token, RFC 6750 §2.1).
    bearer_expect: Option<u16>,
    bearer_error: Option<String>,
}

impl Case {
    fn runs_on(&self, mode: Mode) -> bool {
        match self.server {
            ServerSel::Any => true,
            ServerSel::Asym => mode != Mode::Hs256,
            ServerSel::Rs256 => mode == Mode::Rs256,
            ServerSel::Es256 => mode == Mode::Es256,
            ServerSel::Hs256 => mode == Mode::Hs256,
        }
    }
}

fn corpus() -> Vec<Case> {
    let corpus: Corpus = toml::from_str(CORPUS).expect("attacks.toml parses");
    corpus.cases
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Rs256,
    Es256,
    Hs256,
}

/// Counts TCP connections to a local port that `jku`/`x5u` headers point at.
struct Listener {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn listener() -> Listener {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", socket.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    Listener { url, hits }
}

/// One server with its users and base tokens.
struct Target {
    mode: Mode,
    app: TestApp,
    admin: String,
    access: String,
    refresh: String,
    other_user: String,
    revoked: String,
    logged_out: String,
    deleted_user: String,
    disabled_user: String,
    spare_refresh: String,
    other_sub: String,
    deleted_sub: String,
    /// The server's own signing key (for "server" re-signing).
    signer: SigningKey,
    attacker: SigningKey,
    public_pem: Option<String>,
    public_jwk: Option<String>,
    attacker_jwk: Value,
    attacker_x5c: Value,
    listener_url: String,
}

async fn target(mode: Mode, listener_url: &str) -> Target {
    let app = spawn_app_with(|c| match mode {
        Mode::Rs256 => {
            c.signing = tessera_server::config::SigningConfig::Stored {
                alg: Algorithm::Rs256,
                rsa_bits: 2048,
            };
        }
        Mode::Es256 => {}
        Mode::Hs256 => {
            let key =
                SigningKey::from_hmac_secret(Algorithm::Hs256, KNOWN_SECRET.as_bytes()).unwrap();
            let kid = key.verifying_key().thumbprint().unwrap();
            c.signing = tessera_server::config::SigningConfig::Hmac(key.with_kid(kid));
        }
    })
    .await;
    let alg = match mode {
        Mode::Rs256 => Algorithm::Rs256,
        Mode::Es256 => Algorithm::Es256,
        Mode::Hs256 => Algorithm::Hs256,
    };
    let alice = app.create_user("alice", PASSWORD, &["user"]).await;
    let bob = app.create_user("bob", PASSWORD, &["user"]).await;
    let carol = app.create_user("carol", PASSWORD, &["user"]).await;
    let dave = app.create_user("dave", PASSWORD, &["user"]).await;
    let admin = app.admin_login().await.access_token;
    let main = app.login("alice", PASSWORD).await;
    assert_eq!(claims_of(&main.access_token)["sub"], alice.id.to_string());
    let other_user = app.login("bob", PASSWORD).await.access_token;

    let revoked = app.login("alice", PASSWORD).await.access_token;
    let res = app
        .client
        .post(app.url("/revoke"))
        .form(&[("token", revoked.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "setup: revoke");

    let logged_out = app.login("alice", PASSWORD).await.access_token;
    let res = app.logout(&logged_out).await;
    assert_eq!(res.status(), 200, "setup: logout");

    let deleted_user = app.login("carol", PASSWORD).await.access_token;
    let res = app
        .client
        .delete(app.url(&format!("/admin/users/{}", carol.id)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "setup: delete carol");

    let disabled_user = app.login("dave", PASSWORD).await.access_token;
    let res = app
        .client
        .post(app.url(&format!("/admin/users/{}/disable", dave.id)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "setup: disable dave");

    let spare_refresh = app
        .login("alice", PASSWORD)
        .await
        .refresh_token
        .expect("a refresh token");

    let signer = app.state.auth.key_ring().signer.clone();
    assert_eq!(signer.algorithm(), alg);
    let (public_pem, public_jwk) = if mode == Mode::Hs256 {
        (None, None)
    } else {
        let public = signer.verifying_key();
        (
            Some(public.to_public_pem().unwrap()),
            Some(public.to_jwk().unwrap().to_json()),
        )
    };
    let kid = signer.kid().unwrap_or_default().to_owned();
    let attacker = SigningKey::generate(alg).unwrap().with_kid(kid);
    let (attacker_jwk, attacker_x5c) = if mode == Mode::Hs256 {
        // An attacker's own ES256 key stands in: HMAC secrets are never published.
        let k = SigningKey::generate(Algorithm::Es256).unwrap();
        let public = k.verifying_key();
        (
            serde_json::from_str(&public.to_jwk().unwrap().to_json()).unwrap(),
            x5c_of(&public.to_public_pem().unwrap()),
        )
    } else {
        let public = attacker.verifying_key();
        (
            serde_json::from_str(&public.to_jwk().unwrap().to_json()).unwrap(),
            x5c_of(&public.to_public_pem().unwrap()),
        )
    };
    Target {
        mode,
        admin,
        access: main.access_token,
        refresh: main.refresh_token.expect("a refresh token"),
        other_user,
        revoked,
        logged_out,
        deleted_user,
        disabled_user,
        spare_refresh,
        other_sub: bob.id.to_string(),
        deleted_sub: carol.id.to_string(),
        signer,
        attacker,
        public_pem,
        public_jwk,
        attacker_jwk,
        attacker_x5c,
        listener_url: listener_url.to_owned(),
        app,
    }
}

/// An `x5c` array (RFC 7515 §4.1.6: standard base64 DER) carrying the attacker's public key.
fn x5c_of(pem: &str) -> Value {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap();
    json!([base64::engine::general_purpose::STANDARD.encode(der)])
}

/// Replaces `{...}` placeholders in raw text.
fn fill(t: &Target, text: &str, access_claims: &Value, access_header: &Value) -> String {
    let now = t.app.now();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    text.replace("{iss}", &s(&access_claims["iss"]))
        .replace("{aud}", &s(&access_claims["aud"]))
        .replace("{sub}", &s(&access_claims["sub"]))
        .replace("{sid}", &s(&access_claims["sid"]))
        .replace("{jti}", &s(&access_claims["jti"]))
        .replace("{kid}", &s(&access_header["kid"]))
        .replace("{alg}", t.signer.algorithm().as_str())
        .replace("{other_sub}", &t.other_sub)
        .replace("{deleted_sub}", &t.deleted_sub)
        .replace("{now}", &now.to_string())
        .replace("{exp}", &(now + 600).to_string())
        .replace("{listener}", &t.listener_url)
}

/// Resolves the special `@...` values of header/claims overrides.
fn special(t: &Target, v: &Value) -> Option<Value> {
    let Some(s) = v.as_str() else {
        return Some(v.clone());
    };
    let Some(rest) = s.strip_prefix('@') else {
        return Some(v.clone());
    };
    let now = t.app.now();
    Some(match rest {
        "remove" => return None,
        "now" => json!(now),
        "listener" => json!(t.listener_url),
        "attacker_jwk" => t.attacker_jwk.clone(),
        "attacker_x5c" => t.attacker_x5c.clone(),
        "other_sub" => json!(t.other_sub),
        "deleted_sub" => json!(t.deleted_sub),
        _ => {
            if let Some(n) = rest.strip_prefix("now+") {
                json!(now + n.parse::<i64>().unwrap())
            } else if let Some(n) = rest.strip_prefix("now-") {
                json!(now - n.parse::<i64>().unwrap())
            } else if let Some(n) = rest.strip_prefix("fill:") {
                json!("A".repeat(n.parse().unwrap()))
            } else {
                panic!("unknown special value {s}")
            }
        }
    })
}

fn merged(t: &Target, base: &Value, overrides: Option<&Map<String, Value>>) -> String {
    let mut obj = base.as_object().cloned().unwrap_or_default();
    for (k, v) in overrides.into_iter().flatten() {
        match special(t, v) {
            Some(v) => obj.insert(k.clone(), v),
            None => obj.remove(k),
        };
    }
    Value::Object(obj).to_string()
}

fn append(json_text: String, members: Option<&str>) -> String {
    match members {
        None => json_text,
        Some(m) => {
            let body = json_text.strip_suffix('}').expect("an object");
            let sep = if body.ends_with('{') { "" } else { "," };
            format!("{body}{sep}{m}}}")
        }
    }
}

/// HMAC with the hash named by `alg`, keyed with arbitrary bytes (the attacker's view of
/// "the key").
fn hmac(alg: &str, key: &[u8], message: &[u8]) -> Vec<u8> {
    let alg: Algorithm = alg.parse().expect("an HMAC alg in the header");
    SigningKey::from_hmac_secret(alg, key)
        .unwrap()
        .sign(message)
        .unwrap()
}

/// Builds the case's token for one server.
fn build(case: &Case, t: &Target) -> String {
    let base = match case.base {
        Base::Access => &t.access,
        Base::Refresh => &t.refresh,
        Base::OtherUser => &t.other_user,
        Base::Revoked => &t.revoked,
        Base::LoggedOut => &t.logged_out,
        Base::DeletedUser => &t.deleted_user,
        Base::DisabledUser => &t.disabled_user,
        Base::SpareRefresh => &t.spare_refresh,
        Base::Literal => {
            if let Some((text, n)) = &case.repeat {
                return text.repeat(*n);
            }
            let lit = case.literal.as_deref().expect("literal needs `literal`");
            return fill(t, lit, &claims_of(&t.access), &header_of(&t.access));
        }
    };
    let segments: Vec<&str> = base.split('.').collect();
    let untouched = case.header.is_none()
        && case.claims.is_none()
        && case.header_raw.is_none()
        && case.claims_raw.is_none()
        && case.header_append.is_none()
        && case.claims_append.is_none();
    if untouched && case.sign == Sign::Keep && case.sig.is_none() && case.shape.is_none() {
        // As issued (refresh tokens are not JWTs).
        return base.clone();
    }
    let (header_b64, claims_b64, signing_input) = if segments.len() == 3 && untouched {
        (
            segments[0].to_owned(),
            segments[1].to_owned(),
            format!("{}.{}", segments[0], segments[1]),
        )
    } else {
        assert_eq!(segments.len(), 3, "{}: base is not a JWT", case.name);
        let header = header_of(base);
        let claims = claims_of(base);
        let header_text = match &case.header_raw {
            Some(raw) => fill(t, raw, &claims, &header),
            None => merged(t, &header, case.header.as_ref()),
        };
        let header_text = append(
            header_text,
            case.header_append
                .as_deref()
                .map(|m| fill(t, m, &claims, &header))
                .as_deref(),
        );
        let claims_text = match &case.claims_raw {
            Some(raw) => fill(t, raw, &claims, &header),
            None => merged(t, &claims, case.claims.as_ref()),
        };
        let claims_text = if case.claims_raw.is_some() && case.claims_append.is_none() {
            claims_text
        } else {
            append(
                claims_text,
                case.claims_append
                    .as_deref()
                    .map(|m| fill(t, m, &claims, &header))
                    .as_deref(),
            )
        };
        let h = base64url::encode(header_text.as_bytes());
        let c = base64url::encode(claims_text.as_bytes());
        let input = format!("{h}.{c}");
        (h, c, input)
    };
    let header_alg = || {
        let h = base64url::decode(&header_b64).expect("header is base64");
        let h: Value = serde_json::from_slice(&h).expect("header is JSON");
        h["alg"].as_str().expect("header alg").to_owned()
    };
    let mut sig: Vec<u8> = match case.sign {
        Sign::Keep => base64url::decode(segments.get(2).copied().unwrap_or_default())
            .expect("signature is base64"),
        Sign::Server => t.signer.sign(signing_input.as_bytes()).unwrap(),
        Sign::Attacker => t.attacker.sign(signing_input.as_bytes()).unwrap(),
        Sign::HmacPem => hmac(
            &header_alg(),
            t.public_pem
                .as_deref()
                .expect("asymmetric server")
                .as_bytes(),
            signing_input.as_bytes(),
        ),
        Sign::HmacJwk => hmac(
            &header_alg(),
            t.public_jwk
                .as_deref()
                .expect("asymmetric server")
                .as_bytes(),
            signing_input.as_bytes(),
        ),
        Sign::Zero => {
            let len = match header_alg().as_str() {
                "ES256" => 64,
                "ES384" => 96,
                "ES512" => 132,
                "HS384" => 48,
                "HS512" => 64,
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => 256,
                _ => 32,
            };
            vec![0; len]
        }
        Sign::Empty => Vec::new(),
        Sign::Swap => {
            base64url::decode(t.other_user.split('.').nth(2).unwrap()).expect("base64 sig")
        }
    };
    match case.sig {
        None => {}
        Some(SigMutation::Truncate) => {
            let keep = sig.len().saturating_sub(3);
            sig.truncate(keep);
        }
        Some(SigMutation::Bitflip) => {
            let last = sig.len() - 1;
            sig[last] ^= 0x01;
        }
    }
    let sig_b64 = base64url::encode(&sig);
    match case.shape {
        None => format!("{signing_input}.{sig_b64}"),
        Some(Shape::TwoSegments) => signing_input,
        Some(Shape::FourSegments) => format!("{signing_input}.{sig_b64}.{sig_b64}"),
        Some(Shape::PadHeader) => {
            let pad = "=".repeat((4 - header_b64.len() % 4) % 4);
            assert!(!pad.is_empty(), "{}: header needs no padding", case.name);
            format!("{header_b64}{pad}.{claims_b64}.{sig_b64}")
        }
        Some(Shape::PadSignature) => {
            let pad = "=".repeat((4 - sig_b64.len() % 4) % 4);
            assert!(!pad.is_empty(), "{}: signature needs no padding", case.name);
            format!("{signing_input}.{sig_b64}{pad}")
        }
        Some(Shape::NoncanonicalSignature) => {
            // The last character of an unpadded base64 segment whose length is not a
            // multiple of 4 carries unused low bits (RFC 4648 §3.5); set one of them. A
            // lenient decoder would yield the very same (valid) signature bytes.
            assert_ne!(sig_b64.len() % 4, 0, "{}: no unused bits", case.name);
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut bytes = sig_b64.into_bytes();
            let last = bytes.len() - 1;
            let v = ALPHABET.iter().position(|&c| c == bytes[last]).unwrap();
            bytes[last] = ALPHABET[v | 1];
            assert_ne!(
                ALPHABET[v], bytes[last],
                "{}: already non-canonical",
                case.name
            );
            let sig_b64 = String::from_utf8(bytes).unwrap();
            format!("{signing_input}.{sig_b64}")
        }
    }
}

/// Sends one case to one server; returns a description of every violated expectation.
async fn run_case(case: &Case, t: &Target) -> Vec<String> {
    let token = build(case, t);
    let mut failures = Vec::new();
    let mut fail = |what: String| {
        failures.push(format!("[{:?}] {}: {what}", t.mode, case.name));
    };
    let res = match case.endpoint {
        Endpoint::Me => t
            .app
            .client
            .get(t.app.url("/users/me"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap(),
        Endpoint::Refresh => {
            t.app
                .post_token(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
                .await
        }
        // Cookie mode: the token as the refresh cookie, with a matching double-submit CSRF
        // cookie and header naming the token's session (as sign-in mints it), so that only
        // the token decides.
        Endpoint::SessionRefresh => {
            let sid = t
                .app
                .state
                .auth
                .refresh_token_session(&token)
                .await
                .unwrap()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let csrf = format!("attack-csrf.{sid}");
            t.app
                .client
                .post(t.app.url("/session/refresh"))
                .header(
                    "cookie",
                    format!("__Secure-tessera_rt={token}; __Host-tessera_csrf={csrf}"),
                )
                .header("x-csrf-token", &csrf)
                .send()
                .await
                .unwrap()
        }
    };
    // The `Authorization` header's own answer, where the case sets one.
    let (expect, expect_error) = match case.endpoint {
        Endpoint::Me => (
            case.bearer_expect.unwrap_or(case.expect),
            case.bearer_error.as_ref().or(case.error.as_ref()),
        ),
        _ => (case.expect, case.error.as_ref()),
    };
    let status = res.status().as_u16();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.text().await.unwrap_or_default();
    if status >= 500 {
        fail(format!("5xx: {status} {body}"));
    }
    if status == 200 && expect != 200 {
        fail(format!("ACCEPTED (200): {body}"));
    }
    if status != expect {
        fail(format!("status {status}, expected {expect}: {body}"));
    }
    if let Some(error) = expect_error {
        let got: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if got["error"] != error.as_str() {
            fail(format!("error {}, expected {error}: {body}", got["error"]));
        }
    }
    if status == 401 {
        // RFC 6750 §3: a 401 challenges with the Bearer scheme; §3.1: a token that was
        // presented and refused is `invalid_token`.
        match &challenge {
            Some(h) if h.starts_with("Bearer ") && h.contains("error=\"invalid_token\"") => {}
            _ => fail(format!(
                "401 without an invalid_token challenge: {challenge:?}"
            )),
        }
    }
    if status == 400 && case.endpoint == Endpoint::Me {
        // RFC 6750 §3.1: a malformed request challenges with `invalid_request`.
        match &challenge {
            Some(h) if h.starts_with("Bearer ") && h.contains("error=\"invalid_request\"") => {}
            _ => fail(format!(
                "400 without an invalid_request challenge: {challenge:?}"
            )),
        }
    }
    // Cookie mode: /users/me also takes the access token from the `__Host-tessera_at` cookie,
    // and must judge it exactly as the bearer token. Tokens that cannot be a cookie value
    // (RFC 6265 §4.1.1: no whitespace, `;` or `,`) are left out.
    let cookie_safe = !token.is_empty()
        && !token.contains(|c: char| c.is_whitespace() || c == ';' || c == ',' || c == '"');
    if case.endpoint == Endpoint::Me && cookie_safe {
        let res = t
            .app
            .client
            .get(t.app.url("/users/me"))
            .header("cookie", format!("__Host-tessera_at={token}"))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        let got: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status != case.expect {
            fail(format!(
                "as the access cookie: status {status}, expected {}: {body}",
                case.expect
            ));
        }
        if let Some(error) = &case.error
            && got["error"] != error.as_str()
        {
            fail(format!(
                "as the access cookie: error {}: {body}",
                got["error"]
            ));
        }
    }
    // RFC 7662 §2.2: whatever the token, introspection says active=false (or true for the
    // sanity cases) and never fails. Only tokens within the body limit are sent.
    if case.endpoint == Endpoint::Me && token.len() <= 8 * 1024 {
        let res = t
            .app
            .client
            .post(t.app.url("/introspect"))
            .bearer_auth(&t.admin)
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        let got: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let want_active = case.expect == 200;
        if status != 200 || got["active"] != want_active {
            fail(format!(
                "introspect: {status} {body}, expected active={want_active}"
            ));
        }
    }
    failures
}

/// Runs every applicable case against one server.
async fn run_all(cases: &[Case], t: &Target) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failures = Vec::new();
    for case in cases.iter().filter(|c| c.runs_on(t.mode)) {
        ran += 1;
        failures.extend(run_case(case, t).await);
    }
    (ran, failures)
}

#[tokio::test]
async fn every_attack_in_the_corpus_is_refused_by_every_server() {
    let cases = corpus();
    let listener = listener().await;
    let mut report = Vec::new();
    let mut total = 0;
    for mode in [Mode::Rs256, Mode::Es256, Mode::Hs256] {
        let t = target(mode, &listener.url).await;
        let (ran, failures) = run_all(&cases, &t).await;
        total += ran;
        report.extend(failures);
        // The sanity cases' refresh grant rotated alice's refresh token; nothing else ran on
        // this server after it, and the next mode gets a fresh server.
    }
    assert_eq!(
        listener.hits.load(Ordering::SeqCst),
        0,
        "a jku/x5u URL from a token header was fetched"
    );
    assert!(
        report.is_empty(),
        "{} of {total} attack runs failed:\n{}",
        report.len(),
        report.join("\n")
    );
    assert!(total >= cases.len(), "every case ran at least once");
}

#[test]
fn the_corpus_is_well_formed() {
    let cases = corpus();
    let mut names = BTreeSet::new();
    for c in &cases {
        assert!(names.insert(c.name.as_str()), "duplicate case {}", c.name);
        assert!(
            c.expect == 200 || (400..500).contains(&c.expect),
            "{}: expect a 4xx (or 200 for a sanity case)",
            c.name
        );
        if c.expect == 200 {
            assert!(
                c.name.starts_with("sanity_") || c.sign == Sign::Server,
                "{}: only sanity cases and server-signed controls may expect 200",
                c.name
            );
        }
        if let Some(bearer) = c.bearer_expect {
            assert!(
                c.endpoint == Endpoint::Me && bearer == 400 && c.bearer_error.is_some(),
                "{}: bearer_expect (with bearer_error) is the header's 400 on /users/me",
                c.name
            );
        }
        assert_eq!(
            c.base == Base::Literal,
            c.literal.is_some() || c.repeat.is_some(),
            "{}: `literal`/`repeat` go with base = \"literal\"",
            c.name
        );
    }
    assert!(
        cases.iter().any(|c| c.expect == 200),
        "a sanity case proves the harness can see success"
    );
    assert!(cases.len() >= 80, "the corpus lost cases: {}", cases.len());
}

/// The harness can fail: the untouched token, expected to be refused, is reported as
/// accepted; and a real attack expected to succeed is reported too.
#[tokio::test]
async fn the_harness_reports_an_accepted_token_and_a_wrong_expectation() {
    let listener = listener().await;
    let t = target(Mode::Es256, &listener.url).await;
    let mut cases = corpus();
    let sanity = cases
        .iter_mut()
        .find(|c| c.name == "sanity_untouched_access_token")
        .unwrap();
    sanity.expect = 401;
    sanity.error = Some("invalid_token".into());
    let failures = run_case(sanity, &t).await;
    assert!(
        failures.iter().any(|f| f.contains("ACCEPTED (200)")),
        "{failures:?}"
    );
    let mut none = cases
        .iter()
        .find(|c| c.name == "alg_none_no_signature")
        .unwrap()
        .clone();
    none.expect = 200;
    let failures = run_case(&none, &t).await;
    assert!(
        failures
            .iter()
            .any(|f| f.contains("status 401, expected 200")),
        "{failures:?}"
    );
}
