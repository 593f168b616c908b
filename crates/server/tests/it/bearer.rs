//! Protected resources and RFC 6750 §3 challenges.

use tessera_jose::{Algorithm, Claims, NumericDate, SigningKey};
use tessera_testkit::spawn_app;

use crate::{claims_of, json};

async fn challenge(res: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = res.status().as_u16();
    let h = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, h, json(res).await)
}

#[tokio::test]
async fn a_missing_token_gets_a_bare_challenge() {
    let app = spawn_app().await;
    let (s, h, b) = challenge(app.client.get(app.url("/users/me")).send().await.unwrap()).await;
    assert_eq!(s, 401);
    assert_eq!(h, "Bearer realm=\"tessera\"");
    assert_eq!(b["detail"], "Could not validate credentials");
    let (s, h, _) = challenge(
        app.client
            .get(app.url("/users/me"))
            .basic_auth("admin", Some("x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, h.as_str()), (401, "Bearer realm=\"tessera\""));
}

#[tokio::test]
async fn invalid_tokens_get_invalid_token() {
    let app = spawn_app().await;
    for token in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
    ] {
        let (s, h, b) = challenge(app.me(token).await).await;
        assert_eq!(s, 401, "{token}");
        assert!(
            h.starts_with("Bearer realm=\"tessera\", error=\"invalid_token\""),
            "{h}"
        );
        assert_eq!(b["error"], "invalid_token");
    }
}

#[tokio::test]
async fn expired_tokens_are_refused_after_the_leeway() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    app.advance(900 + 29).await;
    assert_eq!(
        app.me(&t.access_token).await.status(),
        200,
        "within the 30 s leeway"
    );
    app.advance(1).await;
    assert_eq!(app.me(&t.access_token).await.status(), 401);
}

#[tokio::test]
async fn a_token_signed_by_another_key_with_the_same_kid_is_refused() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let mut header_kid = String::new();
    let h = crate::header_of(&t.access_token);
    header_kid.push_str(h["kid"].as_str().unwrap());
    let forger = SigningKey::generate(Algorithm::Es256)
        .unwrap()
        .with_kid(header_kid);
    let claims: Claims<'_, serde_json::Map<String, serde_json::Value>> = {
        let c = claims_of(&t.access_token);
        let mut custom = c.as_object().unwrap().clone();
        for k in ["iss", "sub", "aud", "exp", "iat", "jti", "nbf"] {
            custom.remove(k);
        }
        let mut claims = Claims::new(custom);
        claims.registered.iss = Some(c["iss"].as_str().unwrap().to_owned().into());
        claims.registered.sub = Some(c["sub"].as_str().unwrap().to_owned().into());
        claims.registered.aud = Some(tessera_jose::Audience::One(
            c["aud"].as_str().unwrap().to_owned().into(),
        ));
        claims.registered.exp = Some(NumericDate(c["exp"].as_i64().unwrap()));
        claims.registered.iat = Some(NumericDate(c["iat"].as_i64().unwrap()));
        claims.registered.jti = Some("forged".into());
        claims
    };
    let forged = forger.sign_jwt(&claims, Some("at+jwt")).unwrap();
    assert_eq!(app.me(&forged).await.status(), 401);
}

#[tokio::test]
async fn users_me_answers_from_the_token_with_the_session() {
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let me = json(app.me(&t.access_token).await).await;
    assert_eq!(me["client_id"], "tessera");
    assert_eq!(me["amr"], serde_json::json!(["pwd"]));
    assert_eq!(me["session_id"], claims_of(&t.access_token)["sid"]);
    let res = app.me(&t.access_token).await;
    assert_eq!(res.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn two_authorization_headers_are_refused_on_every_endpoint_that_reads_one() {
    // RFC 6750 §3.1 / RFC 6749 §5.2 `invalid_request`: the field holds one credential,
    // and a proxy that read the other one would disagree about who is calling.
    let app = spawn_app().await;
    let t = app.login("admin", tessera_testkit::ADMIN_PASSWORD).await;
    let bearer = format!("Bearer {}", t.access_token);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("authorization", bearer.parse().unwrap());
    headers.append("authorization", "Bearer x".parse().unwrap());
    for res in [
        app.client
            .get(app.url("/users/me"))
            .headers(headers.clone())
            .send(),
        app.client
            .get(app.url("/admin/users"))
            .headers(headers.clone())
            .send(),
        app.client
            .post(app.url("/introspect"))
            .headers(headers.clone())
            .form(&[("token", t.access_token.as_str())])
            .send(),
        app.client
            .post(app.url("/token"))
            .headers(headers.clone())
            .form(&[
                ("username", "admin"),
                ("password", tessera_testkit::ADMIN_PASSWORD),
            ])
            .send(),
    ] {
        let res = res.await.unwrap();
        let url = res.url().clone();
        assert_eq!(res.status(), 400, "{url}");
        assert_eq!(json(res).await["error"], "invalid_request", "{url}");
    }
    // One of them alone is fine.
    let res = app
        .client
        .get(app.url("/users/me"))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn basic_credentials_that_are_not_text_are_an_invalid_client_not_the_public_client() {
    // RFC 6749 §5.2: a client that tried to authenticate with the Authorization header
    // gets 401 invalid_client; these bytes used to be dropped, and the password grant ran
    // as the built-in public client.
    // The scheme is read as for text credentials: `Basic` then a tab, or right before the
    // bytes, was taken for another scheme and the login served as the public client.
    let app = spawn_app().await;
    for value in [&b"Basic \xff\xfe"[..], b"Basic\t\xff\xfe", b"basic\xff"] {
        let res = app
            .client
            .post(app.url("/token"))
            .header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            )
            .form(&[
                ("username", "admin"),
                ("password", tessera_testkit::ADMIN_PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        let what = String::from_utf8_lossy(value);
        assert_eq!(res.status(), 401, "{what}");
        assert_eq!(res.headers()["www-authenticate"], "Basic realm=\"tessera\"");
        assert_eq!(json(res).await["error"], "invalid_client", "{what}");
    }
}

#[tokio::test]
async fn bearer_credentials_outside_the_rfc_6750_grammar_are_invalid_request() {
    // RFC 6750 §2.1: `Bearer` 1*SP b64token; §3.1: a malformed request is 400
    // `invalid_request`. The server used to strip tabs and spaces around the token (and
    // answered an empty `Bearer ` as if no header was sent), where tessera-axum refuses.
    let app = spawn_app().await;
    let t = app.admin_login().await;
    let token = &t.access_token;
    for value in [
        format!("Bearer \t{token}"),
        format!("Bearer\t{token}"),
        format!("Bearer {token}\tx"),
        format!("Bearer {token} {token}"),
        format!("Bearer {}", token.replacen('.', "=.", 1)),
        "Bearer ".to_owned(),
        "Bearer".to_owned(),
    ] {
        for path in ["/users/me", "/admin/users", "/revocations"] {
            let res = app
                .client
                .get(app.url(path))
                .header("authorization", &value)
                .send()
                .await
                .unwrap();
            let (s, h, b) = challenge(res).await;
            assert_eq!(s, 400, "{path} {value:?}");
            assert!(
                h.starts_with("Bearer realm=\"tessera\", error=\"invalid_request\""),
                "{path} {value:?}: {h}"
            );
            assert_eq!(b["error"], "invalid_request", "{path} {value:?}");
        }
        let res = app
            .client
            .post(app.url("/introspect"))
            .header("authorization", &value)
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "/introspect {value:?}");
    }
    // What the tutorial's client sends (and the scheme in any case, and more than one
    // space, which 1*SP allows) is still a bearer token.
    for value in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER  {token}"),
    ] {
        let res = app
            .client
            .get(app.url("/users/me"))
            .header("authorization", &value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{value:?}");
    }
}
