//! The extractors in a real axum app: what each kind of request gets back.

use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tessera_axum::{
    AuthRejection, Authenticated, RequireRole, RequireScope, RevocationFeed, Verifier,
};
use tessera_jose::SigningKey;

use crate::{Issuer, es256, sign, unix_now};

const ISS: &str = "https://issuer.test";
const AUD: &str = "orders-api";

tessera_axum::role!(Admin = "admin");
tessera_axum::scope!(OrdersWrite = "orders:write");

/// The app's own claims, as a service would declare them.
#[derive(Debug, Deserialize)]
struct Profile {
    preferred_username: String,
}

/// An application state with the verifier as a sub-state (axum's `FromRef` pattern).
#[derive(Clone, FromRef)]
struct AppState {
    verifier: Verifier,
    greeting: &'static str,
}

async fn me(user: Authenticated<Profile>) -> String {
    format!("{} ({})", user.preferred_username, user.subject().unwrap())
}

async fn maybe(user: Option<Authenticated>) -> String {
    match user {
        Some(u) => format!("hello {}", u.subject().unwrap()),
        None => "hello anonymous".into(),
    }
}

async fn admin(admin: RequireRole<Admin>) -> String {
    format!("admin {}", admin.subject().unwrap())
}

async fn orders(_: RequireScope<OrdersWrite>) -> &'static str {
    "written"
}

async fn editor(user: Authenticated) -> Result<&'static str, AuthRejection> {
    user.require_role("editor")?;
    Ok("edited")
}

struct Fixture {
    base: String,
    key: SigningKey,
    issuer: Issuer,
    verifier: Verifier,
    http: reqwest::Client,
}

async fn fixture() -> Fixture {
    let key = es256("k1");
    let issuer = Issuer::start(&[]).await;
    let verifier = Verifier::builder()
        .key(key.verifying_key())
        .issuer(ISS)
        .audience(AUD)
        .realm("orders")
        .revocation_feed(
            RevocationFeed::new("svc", "feed-secret")
                .url(format!("{}/revocations", issuer.base))
                .poll_interval(Duration::from_secs(3600)),
        )
        .build()
        .unwrap();
    let state = AppState {
        verifier: verifier.clone(),
        greeting: "hi",
    };
    let _ = state.greeting;
    let app = Router::new()
        .route("/me", get(me))
        .route("/maybe", get(maybe))
        .route("/admin", get(admin))
        .route("/orders", get(orders))
        .route("/editor", get(editor))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fixture {
        base,
        key,
        issuer,
        verifier,
        http: reqwest::Client::new(),
    }
}

fn claims() -> Value {
    let now = unix_now();
    json!({
        "iss": ISS, "aud": AUD, "sub": "user-1", "exp": now + 300, "iat": now,
        "jti": "j-1", "sid": "s-1", "preferred_username": "alice",
        "roles": ["user"], "scope": "profile orders:read",
    })
}

fn with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn b64(bytes: &[u8]) -> String {
    tessera_jose::base64url::encode(bytes)
}

/// `alg: none` with an empty signature.
fn unsigned(claims: &Value) -> String {
    let header = b64(br#"{"alg":"none","typ":"at+jwt"}"#);
    format!("{header}.{}.", b64(claims.to_string().as_bytes()))
}

/// A token with a hand-made header, signed by `key`.
fn with_header(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&sig))
}

/// HS256 "signed" with the verifier's public key (the classic key-confusion attack).
fn confused(key: &SigningKey, claims: &Value) -> String {
    let public = key.verifying_key().to_public_pem().unwrap();
    let hmac = SigningKey::from_hmac_secret(tessera_jose::Algorithm::Hs256, public.as_bytes())
        .unwrap()
        .with_kid("k1");
    sign(&hmac, claims, Some("at+jwt"))
}

impl Fixture {
    fn token(&self, claims: &Value) -> String {
        sign(&self.key, claims, Some("at+jwt"))
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> (u16, Option<String>, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let challenge = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, challenge, body)
    }
}

const INVALID: &str = "Bearer realm=\"orders\", error=\"invalid_token\", error_description=\"the access token is invalid, expired or revoked\"";

#[tokio::test]
async fn every_kind_of_bad_token_is_one_opaque_invalid_token() {
    let f = fixture().await;
    let now = unix_now();
    let other_key = es256("k1");
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "Bearer not-a-jwt".into()),
        ("three garbage segments", "Bearer a.b.c".into()),
        (
            "expired",
            format!("Bearer {}", f.token(&with(json!({"exp": now - 31})))),
        ),
        (
            "no exp",
            format!("Bearer {}", f.token(&with(json!({"exp": null})))),
        ),
        (
            "not yet valid",
            format!("Bearer {}", f.token(&with(json!({"nbf": now + 120})))),
        ),
        (
            "wrong audience",
            format!("Bearer {}", f.token(&with(json!({"aud": "billing-api"})))),
        ),
        (
            "no audience",
            format!("Bearer {}", f.token(&with(json!({"aud": null})))),
        ),
        (
            "wrong issuer",
            format!(
                "Bearer {}",
                f.token(&with(json!({"iss": "https://evil.test"})))
            ),
        ),
        (
            "plain JWT typ",
            format!("Bearer {}", sign(&f.key, &claims(), Some("JWT"))),
        ),
        (
            "no typ",
            format!("Bearer {}", sign(&f.key, &claims(), None)),
        ),
        (
            "signed by another key with the same kid",
            format!("Bearer {}", sign(&other_key, &claims(), Some("at+jwt"))),
        ),
        ("alg none", format!("Bearer {}", unsigned(&claims()))),
        (
            "unknown critical header",
            format!(
                "Bearer {}",
                with_header(
                    &f.key,
                    &json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1", "crit": ["exp"], "exp": 1}),
                    &claims()
                )
            ),
        ),
        (
            "HS256 signed with the public key (algorithm confusion)",
            format!("Bearer {}", confused(&f.key, &claims())),
        ),
        (
            "wrong custom claim type",
            format!(
                "Bearer {}",
                f.token(&with(json!({"preferred_username": 42})))
            ),
        ),
    ];
    for (name, auth) in cases {
        let (status, challenge, body) = f.get("/me", Some(&auth)).await;
        assert_eq!(status, 401, "{name}");
        assert_eq!(challenge.as_deref(), Some(INVALID), "{name}");
        assert_eq!(
            body,
            json!({"error": "invalid_token", "error_description": "the access token is invalid, expired or revoked"}),
            "{name}"
        );
    }
    // And the good one passes, with custom claims decoded.
    let (status, _, body) = f
        .get("/me", Some(&format!("Bearer {}", f.token(&claims()))))
        .await;
    assert_eq!((status, body), (200, json!("alice (user-1)")));
}

#[tokio::test]
async fn a_missing_token_gets_a_bare_challenge() {
    let f = fixture().await;
    for auth in [None, Some("Basic dXNlcjpwdw==")] {
        let (status, challenge, body) = f.get("/me", auth).await;
        assert_eq!(status, 401);
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"orders\""));
        assert_eq!(body["error_description"], "missing bearer token");
    }
}

/// No token: the challenge carries no error code (RFC 6750 §3.1), and the JSON body is the
/// one the Tessera server sends for the same request, so a client that reads the body
/// (`error`, `error_description`) handles a service and the server alike.
#[tokio::test]
async fn a_missing_token_is_answered_like_the_tessera_server_answers_it() {
    let f = fixture().await;
    let server = tessera_testkit::spawn_app().await;
    let ours = f.http.get(format!("{}/me", f.base)).send().await.unwrap();
    let theirs = server
        .client
        .get(server.url("/users/me"))
        .send()
        .await
        .unwrap();
    let shape = async |res: reqwest::Response| {
        let status = res.status().as_u16();
        let challenge = res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let no_store = res.headers()["cache-control"] == "no-store";
        let body: Value = res.json().await.unwrap();
        (status, challenge, no_store, body)
    };
    let (ours, theirs) = (shape(ours).await, shape(theirs).await);
    assert_eq!((ours.0, ours.2), (401, true));
    assert_eq!((theirs.0, theirs.2), (401, true));
    assert_eq!(ours.1, "Bearer realm=\"orders\"");
    assert_eq!(theirs.1, "Bearer realm=\"tessera\"");
    for member in ["error", "error_description"] {
        assert_eq!(ours.3[member], theirs.3[member], "{member}");
    }
    assert_eq!(ours.3["error"], "invalid_token");
    assert_eq!(ours.3["error_description"], "missing bearer token");
}

#[tokio::test]
async fn a_leeway_of_thirty_seconds_is_allowed() {
    let f = fixture().await;
    let t = f.token(&with(json!({"exp": unix_now() - 20})));
    let (status, _, _) = f.get("/me", Some(&format!("Bearer {t}"))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_optional_user_is_none_only_without_a_header() {
    let f = fixture().await;
    assert_eq!(f.get("/maybe", None).await.2, json!("hello anonymous"));
    let good = format!("Bearer {}", f.token(&claims()));
    assert_eq!(f.get("/maybe", Some(&good)).await.2, json!("hello user-1"));
    let (status, challenge, _) = f.get("/maybe", Some("Bearer a.b.c")).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some(INVALID));
    let expired = format!(
        "Bearer {}",
        f.token(&with(json!({"exp": unix_now() - 100})))
    );
    assert_eq!(f.get("/maybe", Some(&expired)).await.0, 401);
}

#[tokio::test]
async fn roles_and_scopes_are_checked_after_the_token() {
    let f = fixture().await;
    let user = format!("Bearer {}", f.token(&claims()));
    let (status, challenge, body) = f.get("/admin", Some(&user)).await;
    assert_eq!(status, 403);
    assert!(
        challenge
            .unwrap()
            .starts_with("Bearer realm=\"orders\", error=\"insufficient_scope\"")
    );
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(body["error_description"], "the `admin` role is required");

    let (status, challenge, _) = f.get("/orders", Some(&user)).await;
    assert_eq!(status, 403);
    assert!(challenge.unwrap().ends_with("scope=\"orders:write\""));
    let (status, _, _) = f.get("/editor", Some(&user)).await;
    assert_eq!(status, 403);

    // The tutorial's single `role` claim counts, as do `roles` and `scope`.
    let admin = format!(
        "Bearer {}",
        f.token(&with(json!({"role": "admin", "roles": null})))
    );
    assert_eq!(f.get("/admin", Some(&admin)).await.2, json!("admin user-1"));
    let writer = format!(
        "Bearer {}",
        f.token(&with(json!({"scope": "orders:write"})))
    );
    assert_eq!(f.get("/orders", Some(&writer)).await.0, 200);
    let editor = format!(
        "Bearer {}",
        f.token(&with(json!({"roles": ["user", "editor"]})))
    );
    assert_eq!(f.get("/editor", Some(&editor)).await.0, 200);

    // No token at all is still a 401, not a 403.
    assert_eq!(f.get("/admin", None).await.0, 401);
}

#[tokio::test]
async fn revoked_tokens_sessions_and_users_are_refused() {
    let f = fixture().await;
    let now = unix_now();
    let token = |c: Value| format!("Bearer {}", f.token(&c));
    let by_jti = token(with(json!({"jti": "j-revoked"})));
    let by_session = token(with(json!({"jti": "j-2", "sid": "s-revoked"})));
    let by_user = token(with(
        json!({"jti": "j-3", "sid": "s-3", "sub": "user-9", "iat": now - 10}),
    ));
    let after_user_cut = token(with(
        json!({"jti": "j-4", "sid": "s-4", "sub": "user-9", "iat": now + 5}),
    ));
    for t in [&by_jti, &by_session, &by_user, &after_user_cut] {
        assert_eq!(f.get("/me", Some(t)).await.0, 200);
    }
    f.issuer.revoke("jti", "j-revoked", now);
    f.issuer.revoke("session", "s-revoked", now);
    f.issuer.revoke("user", "user-9", now);
    assert_eq!(f.verifier.sync_revocations().await.unwrap(), 3);
    for t in [&by_jti, &by_session, &by_user] {
        let (status, challenge, _) = f.get("/me", Some(t)).await;
        assert_eq!(status, 401);
        assert_eq!(challenge.as_deref(), Some(INVALID));
    }
    // A token issued after the user-wide revocation is fine.
    assert_eq!(f.get("/me", Some(&after_user_cut)).await.0, 200);
    assert_eq!(f.verifier.stats().feed_cursor, 3);
}

/// A user-wide revocation at second T revokes the tokens issued at or before T. A token
/// whose `iat` is a fraction of a second into T (RFC 7519 §2 allows fractional dates) was
/// issued during T, maybe before the revocation, so it is revoked too. tessera-jose rounded
/// a fractional `iat` up for a while, reading T.5 as T + 1, past the cut-off: the token
/// stayed valid.
#[tokio::test]
async fn a_user_revocation_covers_a_token_issued_a_fraction_into_its_second() {
    let f = fixture().await;
    let now = unix_now();
    #[allow(clippy::cast_precision_loss, reason = "a Unix time is far below 2^53")]
    let iat = now as f64 + 0.5;
    let during = format!(
        "Bearer {}",
        f.token(&with(
            json!({"jti": "j-5", "sid": "s-5", "sub": "user-10", "iat": iat})
        ))
    );
    assert_eq!(f.get("/me", Some(&during)).await.0, 200);
    f.issuer.revoke("user", "user-10", now);
    assert_eq!(f.verifier.sync_revocations().await.unwrap(), 1);
    let (status, challenge, _) = f.get("/me", Some(&during)).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some(INVALID));
}

/// RFC 7519 §4.1.3: a token that names audiences must be refused by a principal that does
/// not identify itself with one of them. A verifier configured with no audience identifies
/// itself with none, so a token for another API (`aud` present) is refused; a token without
/// `aud` (the tutorial profile) still verifies, and `accept_any_audience` opts out.
#[tokio::test]
async fn a_verifier_without_an_audience_refuses_tokens_that_name_one() {
    let key = es256("k1");
    let build = |any: bool| {
        let b = Verifier::builder()
            .key(key.verifying_key())
            .issuer(ISS)
            .token_cache_capacity(0);
        if any { b.accept_any_audience() } else { b }
            .build()
            .unwrap()
    };
    let strict = build(false);
    for aud in [json!("billing-api"), json!(["billing-api", "x"]), json!([])] {
        let token = sign(&key, &with(json!({ "aud": aud })), Some("at+jwt"));
        let err = strict
            .verify::<tessera_jose::NoCustomClaims>(&token)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                tessera_axum::Error::Token(tessera_jose::Error::AudienceMismatch { .. })
            ),
            "{aud}: {err}"
        );
    }
    let no_aud = sign(&key, &with(json!({ "aud": null })), Some("at+jwt"));
    strict
        .verify::<tessera_jose::NoCustomClaims>(&no_aud)
        .await
        .unwrap();
    let lax = build(true);
    let billing = sign(&key, &with(json!({ "aud": "billing-api" })), Some("at+jwt"));
    lax.verify::<tessera_jose::NoCustomClaims>(&billing)
        .await
        .unwrap();
}

/// RFC 6750 §3.1: a malformed request (two `Authorization` headers, a credential that is
/// not a b64token) is `invalid_request` with 400, not a bad token.
#[tokio::test]
async fn a_malformed_authorization_header_is_a_bad_request() {
    let f = fixture().await;
    let (status, challenge, body) = f.get("/me", Some("Bearer a b")).await;
    assert_eq!(status, 400);
    let challenge = challenge.unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"orders\", error=\"invalid_request\""),
        "{challenge}"
    );
    assert_eq!(body["error"], "invalid_request");
    let good = format!("Bearer {}", f.token(&claims()));
    let res = reqwest::Client::new()
        .get(format!("{}/me", f.base))
        .header("authorization", &good)
        .header("authorization", &good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "two Authorization headers");
}

/// RFC 6750 §2.1 (`Bearer` 1*SP b64token) and RFC 9110 §5.5 (whitespace around the field
/// value is not part of it), read the same way here and by the Tessera server: a client
/// gets one answer from both. tessera-axum used to take `Bearer<TAB>token` for no token
/// (401) where the server answers 400.
#[tokio::test]
async fn a_bearer_header_gets_the_answer_the_tessera_server_gives() {
    let f = fixture().await;
    let server = tessera_testkit::spawn_app().await;
    let answer = async |res: reqwest::Response| {
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        (status, body["error"].clone())
    };
    for (value, want) in [
        ("Bearer\tabc.def.ghi", 400),
        ("Bearer \tabc.def.ghi", 400),
        ("Bearer abc.def.ghi\tx", 400),
        ("Bearer abc.def.ghi abc", 400),
        ("Bearer a=b.def.ghi", 400),
        ("Bearer", 400),
        ("Bearer,abc.def.ghi", 400),
        ("Bearer abc.def.ghi", 401),
        ("bEaReR   abc.def.ghi", 401),
        ("Basic dXNlcjpwdw==", 401),
        ("Bearerabc.def.ghi", 401),
    ] {
        let ours = f
            .http
            .get(format!("{}/me", f.base))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        let theirs = server
            .client
            .get(server.url("/users/me"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        let (ours, theirs) = (answer(ours).await, answer(theirs).await);
        assert_eq!(ours, theirs, "{value:?}");
        assert_eq!(ours.0, want, "{value:?}");
    }
}

/// RFC 6749 §5.2 and RFC 6750 §3: `error_description` holds only `%x20-21 / %x23-5B /
/// %x5D-7E`. A malformed header's body said `(RFC 6750 §2.1)`, while its challenge dropped
/// the `§` (`RFC 6750 2.1`); the Tessera server spells it out in both.
#[tokio::test]
async fn a_malformed_header_is_described_in_the_characters_rfc_6749_allows() {
    let f = fixture().await;
    let (status, challenge, body) = f.get("/me", Some("Bearer a b")).await;
    assert_eq!(status, 400);
    let challenge = challenge.unwrap();
    let description = body["error_description"].as_str().unwrap();
    let allowed = |c: char| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e');
    assert!(description.chars().all(allowed), "{description}");
    assert!(
        description.contains("(RFC 6750 section 2.1)"),
        "{description}"
    );
    assert!(
        challenge.ends_with(&format!("error_description=\"{description}\"")),
        "{challenge} / {description}"
    );
}
