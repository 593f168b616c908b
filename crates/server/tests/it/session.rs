//! Cookie mode (`/session`, `/session/refresh`, `/session/logout`): cookie attributes, CSRF
//! (Fetch-Metadata/Origin and the double-submit token), cookie + Bearer coexistence, logout,
//! refresh rotation and reuse detection through cookies, MFA sign-in, CORS.

use std::collections::BTreeMap;

use reqwest::header::{COOKIE, HeaderMap, HeaderValue, ORIGIN, SET_COOKIE};
use tessera_testkit::{TestApp, spawn_app, spawn_app_with};

use crate::json;

const PW: &str = "amber lighthouse quartet";

/// One `Set-Cookie` header, parsed: name, value and attributes (names lowercased).
#[derive(Debug)]
struct SetCookie {
    name: String,
    value: String,
    attrs: BTreeMap<String, Option<String>>,
}

impl SetCookie {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).and_then(|v| v.as_deref())
    }
    fn flag(&self, name: &str) -> bool {
        matches!(self.attrs.get(name), Some(None))
    }
}

fn set_cookies(headers: &HeaderMap) -> BTreeMap<String, SetCookie> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| {
            let text = v.to_str().unwrap();
            let mut parts = text.split(';').map(str::trim);
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let attrs = parts
                .map(|a| match a.split_once('=') {
                    Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_owned())),
                    None => (a.to_ascii_lowercase(), None),
                })
                .collect();
            let c = SetCookie {
                name: name.to_owned(),
                value: value.to_owned(),
                attrs,
            };
            (c.name.clone(), c)
        })
        .collect()
}

/// A signed-in browser: its cookie values.
#[derive(Debug, Clone)]
struct Browser {
    at: String,
    rt: String,
    csrf: String,
}

impl Browser {
    /// The browser after an answer that renewed its session: the access and refresh cookies
    /// it set, and the CSRF cookie too if it set one (a refresh keeps it).
    fn renewed(&self, headers: &HeaderMap) -> Self {
        let c = set_cookies(headers);
        Self {
            at: c["__Host-tessera_at"].value.clone(),
            rt: c["__Secure-tessera_rt"].value.clone(),
            csrf: c
                .get("__Host-tessera_csrf")
                .map_or_else(|| self.csrf.clone(), |v| v.value.clone()),
        }
    }

    fn cookie_header(&self) -> String {
        format!(
            "__Host-tessera_at={}; __Secure-tessera_rt={}; __Host-tessera_csrf={}",
            self.at, self.rt, self.csrf
        )
    }
}

async fn sign_in(app: &TestApp, user: &str) -> Browser {
    let res = app
        .client
        .post(app.url("/session"))
        .form(&[("username", user), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let c = set_cookies(res.headers());
    Browser {
        at: c["__Host-tessera_at"].value.clone(),
        rt: c["__Secure-tessera_rt"].value.clone(),
        csrf: c["__Host-tessera_csrf"].value.clone(),
    }
}

/// The status of `GET /users/me` with the browser's cookies.
async fn users_me(app: &TestApp, b: &Browser) -> u16 {
    app.client
        .get(app.url("/users/me"))
        .header(COOKIE, b.cookie_header())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A same-origin browser POST with the session cookies and the CSRF header.
fn browser_post(app: &TestApp, b: &Browser, path: &str) -> reqwest::RequestBuilder {
    app.client
        .post(app.url(path))
        .header(COOKIE, b.cookie_header())
        .header(ORIGIN, &app.base)
        .header("sec-fetch-site", "same-origin")
        .header("x-csrf-token", &b.csrf)
}

#[tokio::test]
async fn session_cookies_have_exactly_the_required_attributes() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let res = app
        .client
        .post(app.url("/session"))
        .form(&[("username", "ada"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let c = set_cookies(res.headers());
    assert_eq!(c.len(), 3, "{c:?}");

    let at = &c["__Host-tessera_at"];
    assert_eq!(at.attr("path"), Some("/"));
    assert_eq!(
        at.attr("max-age"),
        Some(app.state.config.access_token_ttl.to_string().as_str())
    );
    assert!(at.flag("secure") && at.flag("httponly"));
    assert_eq!(at.attr("samesite"), Some("Strict"));
    assert!(!at.attrs.contains_key("domain"), "__Host- forbids Domain");
    assert_eq!(at.value.split('.').count(), 3, "a JWS");

    let rt = &c["__Secure-tessera_rt"];
    assert_eq!(rt.attr("path"), Some("/session"));
    assert!(rt.flag("secure") && rt.flag("httponly"));
    assert_eq!(rt.attr("samesite"), Some("Strict"));
    assert!(!rt.attrs.contains_key("domain"));

    let csrf = &c["__Host-tessera_csrf"];
    assert_eq!(csrf.attr("path"), Some("/"));
    assert!(csrf.flag("secure"));
    assert!(!csrf.flag("httponly"), "page scripts echo the CSRF token");
    assert_eq!(csrf.attr("samesite"), Some("Strict"));

    let body = json(res).await;
    assert_eq!(body["csrf_token"], csrf.value.as_str());
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    assert_eq!(body["expires_in"], app.state.config.access_token_ttl);
}

#[tokio::test]
async fn the_access_cookie_authenticates_and_a_bearer_header_wins() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    app.create_user("bob", PW, &["user"]).await;
    let ada = sign_in(&app, "ada").await;
    let bob = app.login("bob", PW).await;

    let me = |cookie: Option<String>, bearer: Option<&str>| {
        let mut r = app.client.get(app.url("/users/me"));
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send()
    };
    let res = me(Some(ada.cookie_header()), None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["username"], "ada");
    // Both: the header decides.
    let res = me(Some(ada.cookie_header()), Some(&bob.access_token))
        .await
        .unwrap();
    assert_eq!(json(res).await["username"], "bob");
    // A bad header is not rescued by a good cookie.
    let res = me(Some(ada.cookie_header()), Some("not-a-token"))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The refresh cookie is no access credential.
    let res = me(Some(format!("__Secure-tessera_rt={}", ada.rt)), None)
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The account endpoints take the cookie too.
    let res = app
        .client
        .get(app.url("/users/me/sessions"))
        .header(COOKIE, ada.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The admin API does not (Bearer only).
    let admin = app.admin_login().await;
    let res = app
        .client
        .get(app.url("/admin/users"))
        .header(COOKIE, format!("__Host-tessera_at={}", admin.access_token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn cookie_authenticated_writes_need_the_csrf_checks() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let path = "/users/me/mfa/totp";
    let expect_csrf_failure = |res: reqwest::Response, why: &'static str| async move {
        assert_eq!(res.status(), 403, "{why}");
        assert_eq!(json(res).await["error"], "csrf_failed", "{why}");
    };

    // Missing token.
    let res = app
        .client
        .post(app.url(path))
        .json(&serde_json::json!({"password": PW}))
        .header(COOKIE, b.cookie_header())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    expect_csrf_failure(res, "missing token").await;
    // Wrong token.
    let res = app
        .client
        .post(app.url(path))
        .json(&serde_json::json!({"password": PW}))
        .header(COOKIE, b.cookie_header())
        .header("sec-fetch-site", "same-origin")
        .header("x-csrf-token", format!("{}x", b.csrf))
        .send()
        .await
        .unwrap();
    expect_csrf_failure(res, "wrong token").await;
    // Token without the CSRF cookie.
    let res = app
        .client
        .post(app.url(path))
        .json(&serde_json::json!({"password": PW}))
        .header(COOKIE, format!("__Host-tessera_at={}", b.at))
        .header("x-csrf-token", &b.csrf)
        .send()
        .await
        .unwrap();
    expect_csrf_failure(res, "no csrf cookie").await;
    // Right token, wrong origin.
    let res = app
        .client
        .post(app.url(path))
        .json(&serde_json::json!({"password": PW}))
        .header(COOKIE, b.cookie_header())
        .header(ORIGIN, "https://evil.example")
        .header("x-csrf-token", &b.csrf)
        .send()
        .await
        .unwrap();
    expect_csrf_failure(res, "wrong origin").await;
    // Right token, cross-site fetch metadata.
    let res = app
        .client
        .post(app.url(path))
        .json(&serde_json::json!({"password": PW}))
        .header(COOKIE, b.cookie_header())
        .header("sec-fetch-site", "cross-site")
        .header("x-csrf-token", &b.csrf)
        .send()
        .await
        .unwrap();
    expect_csrf_failure(res, "cross-site").await;
    // Everything right.
    let res = app
        .client
        .post(app.url(path))
        .json(&serde_json::json!({"password": PW}))
        .header(COOKIE, b.cookie_header())
        .header(ORIGIN, &app.base)
        .header("sec-fetch-site", "same-origin")
        .header("x-csrf-token", &b.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(json(res).await["secret"].is_string());
}

#[tokio::test]
async fn bearer_requests_are_exempt_from_csrf() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let t = app.login("ada", PW).await;
    let res = app
        .client
        .post(app.url("/users/me/mfa/totp"))
        .json(&serde_json::json!({"password": PW}))
        .bearer_auth(&t.access_token)
        .header("sec-fetch-site", "cross-site")
        .header(ORIGIN, "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn signing_in_cross_site_is_refused() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let res = app
        .client
        .post(app.url("/session"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("username", "ada"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get(SET_COOKIE).is_none());
    assert_eq!(json(res).await["error"], "csrf_failed");
}

#[tokio::test]
async fn wrong_credentials_look_the_same_for_unknown_users() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let attempt = |u: &'static str| {
        app.client
            .post(app.url("/session"))
            .form(&[("username", u), ("password", "not the password at all")])
            .send()
    };
    let a = attempt("ada").await.unwrap();
    let b = attempt("nobody").await.unwrap();
    assert_eq!(a.status(), 400);
    assert_eq!(b.status(), 400);
    assert!(a.headers().get(SET_COOKIE).is_none());
    assert_eq!(json(a).await, json(b).await);
}

#[tokio::test]
async fn logout_clears_the_cookies_and_revokes_the_session() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let res = browser_post(&app, &b, "/session/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let c = set_cookies(res.headers());
    for (name, path) in [
        ("__Host-tessera_at", "/"),
        ("__Secure-tessera_rt", "/session"),
        ("__Host-tessera_csrf", "/"),
    ] {
        let cookie = &c[name];
        assert_eq!(cookie.value, "", "{name}");
        assert_eq!(cookie.attr("max-age"), Some("0"), "{name}");
        assert_eq!(cookie.attr("path"), Some(path), "{name}");
    }
    // The old cookies no longer work, even if a copy survived.
    assert_eq!(users_me(&app, &b).await, 401);
    let res = browser_post(&app, &b, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(app.state.auth.list_sessions(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn logout_after_the_access_cookie_expired_still_ends_the_session() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = browser_post(&app, &b, "/session/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(app.state.auth.list_sessions(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn logout_needs_the_csrf_token_and_the_csrf_field_works_too() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let res = app
        .client
        .post(app.url("/session/logout"))
        .header(COOKIE, b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(app.state.auth.list_sessions(None).await.unwrap().len(), 1);
    let res = app
        .client
        .post(app.url("/session/logout"))
        .header(COOKIE, b.cookie_header())
        .form(&[("csrf_token", b.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(app.state.auth.list_sessions(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn refresh_rotates_the_cookies_and_a_replayed_refresh_cookie_revokes_the_session() {
    let app = spawn_app_with(|c| c.refresh_grace_period = 0).await;
    app.create_user("ada", PW, &["user"]).await;
    let first = sign_in(&app, "ada").await;
    app.advance(5).await;
    let res = browser_post(&app, &first, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let c = set_cookies(res.headers());
    assert!(
        c.contains_key("__Host-tessera_csrf"),
        "the CSRF cookie is set again"
    );
    let second = first.renewed(res.headers());
    assert_ne!(second.rt, first.rt, "rotated");
    assert_ne!(second.at, first.at);
    assert_eq!(second.csrf, first.csrf, "the CSRF token is kept on refresh");
    assert_eq!(c["__Secure-tessera_rt"].attr("path"), Some("/session"));
    assert_eq!(users_me(&app, &second).await, 200);

    // Replaying the first refresh cookie is reuse: the whole session dies (RFC 9700 §4.14.2).
    let res = browser_post(&app, &first, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let cleared = set_cookies(res.headers());
    assert_eq!(cleared["__Secure-tessera_rt"].attr("max-age"), Some("0"));
    assert_eq!(json(res).await["error"], "invalid_grant");
    let res = browser_post(&app, &second, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "the successor died with the session");
    assert_eq!(users_me(&app, &second).await, 401);
}

/// A refresh cookie whose chain moved on further than a refresh follows it within the grace
/// window (many parallel refreshes of one browser) is refused, but the response must not
/// clear the cookies: the browser's jar already holds the newer token another of its
/// requests received, and clearing it signed the user out.
#[tokio::test]
async fn a_refresh_too_far_behind_its_chain_keeps_the_browsers_cookies() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let first = sign_in(&app, "ada").await;
    let mut newest = first.clone();
    for _ in 0..10 {
        let res = browser_post(&app, &newest, "/session/refresh")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        newest.rt = set_cookies(res.headers())["__Secure-tessera_rt"]
            .value
            .clone();
    }
    let res = browser_post(&app, &first, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        res.headers().get(SET_COOKIE).is_none(),
        "no cookie is cleared: {:?}",
        res.headers()
    );
    assert_eq!(json(res).await["error"], "invalid_grant");
    let res = browser_post(&app, &newest, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the session lives on");
}

/// The pages' way back in (`GET /session/resume`) with a refresh cookie its browser's other
/// requests have rotated too far past: the session lives and the jar holds newer cookies,
/// so the browser goes back to the account page with its cookies kept. It got a JSON 400
/// for a page navigation.
#[tokio::test]
async fn resuming_a_page_session_with_a_superseded_refresh_cookie_keeps_the_cookies() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let first = sign_in(&app, "ada").await;
    let mut newest = first.clone();
    for _ in 0..10 {
        let res = browser_post(&app, &newest, "/session/refresh")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let c = set_cookies(res.headers());
        newest.rt = c["__Secure-tessera_rt"].value.clone();
        newest.at = c["__Host-tessera_at"].value.clone();
    }
    let res = browser_get(&app, &first, "/session/resume").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account?resumed=1");
    assert!(
        res.headers().get(SET_COOKIE).is_none(),
        "no cookie is cleared: {:?}",
        res.headers()
    );
    // With the jar's newer cookies the account page lets the browser in (and drops its
    // loop guard from the address bar).
    let res = browser_get(&app, &newest, "/account?resumed=1").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account");
    let res = browser_get(&app, &newest, "/account").await;
    assert_eq!(res.status(), 200);
}

/// `__Secure-` allows `Domain`: a sibling subdomain can plant its own refresh cookie for the
/// parent domain with a longer `Path`, which the browser sends before ours (reproduced in
/// Chromium with `evil.app.localhost` and `auth.app.localhost`). Refreshing with it signed
/// the browser into the planter's account, and logout revoked the planted token instead of
/// ours.
#[tokio::test]
async fn a_refresh_cookie_planted_by_a_sibling_subdomain_is_never_used() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    app.create_user("mallory", PW, &["user"]).await;
    let ada = sign_in(&app, "ada").await;
    let mallory = sign_in(&app, "mallory").await;
    let both = format!(
        "__Secure-tessera_rt={}; {}",
        mallory.rt,
        ada.cookie_header()
    );
    let post = |path: &str| {
        app.client
            .post(app.url(path))
            .header(COOKIE, &both)
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .header("x-csrf-token", &ada.csrf)
    };
    let res = post("/session/refresh").send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        res.headers().get(SET_COOKIE).is_none(),
        "no cookies of the planter's session, and ours are not deleted"
    );
    assert_eq!(json(res).await["error"], "invalid_grant");
    // Ada's own refresh cookie still works once the planted one is gone.
    let res = browser_post(&app, &ada, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let c = set_cookies(res.headers());
    let ada = Browser {
        at: c["__Host-tessera_at"].value.clone(),
        rt: c["__Secure-tessera_rt"].value.clone(),
        csrf: c["__Host-tessera_csrf"].value.clone(),
    };
    // Logout with an expired access cookie and a planted refresh cookie ends Ada's session.
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = app
        .client
        .post(app.url("/session/logout"))
        .header(
            COOKIE,
            format!(
                "__Secure-tessera_rt={}; {}",
                mallory.rt,
                ada.cookie_header()
            ),
        )
        .header(ORIGIN, &app.base)
        .header("sec-fetch-site", "same-origin")
        .header("x-csrf-token", &ada.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = browser_post(&app, &ada, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "Ada's session ended");
}

#[tokio::test]
async fn refresh_without_a_csrf_token_is_refused() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let res = app
        .client
        .post(app.url("/session/refresh"))
        .header(COOKIE, b.cookie_header())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get(SET_COOKIE).is_none());
}

/// The code an authenticator app shows for `secret` (base32) at `time`.
fn code_at(secret: &str, time: i64) -> String {
    let t = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap();
    t.generate(u64::try_from(time).unwrap()).to_string()
}

#[tokio::test]
async fn mfa_users_sign_in_in_two_steps_or_one() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let t = app.login("ada", PW).await;
    let res = app
        .client
        .post(app.url("/users/me/mfa/totp"))
        .json(&serde_json::json!({"password": PW}))
        .bearer_auth(&t.access_token)
        .send()
        .await
        .unwrap();
    let secret = json(res).await["secret"].as_str().unwrap().to_owned();
    let res = app
        .client
        .post(app.url("/users/me/mfa/totp/confirm"))
        .bearer_auth(&t.access_token)
        .json(&serde_json::json!({"code": code_at(&secret, app.now())}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let res = app
        .client
        .post(app.url("/session"))
        .form(&[("username", "ada"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get(SET_COOKIE).is_none());
    let body = json(res).await;
    assert_eq!(body["error"], "mfa_required");
    let mfa_token = body["mfa_token"].as_str().unwrap().to_owned();

    app.advance(30).await; // a fresh time step: codes are single-use
    let res = app
        .client
        .post(app.url("/session"))
        .form(&[
            ("mfa_token", mfa_token.as_str()),
            ("otp", &code_at(&secret, app.now())),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let c = set_cookies(res.headers());
    let claims = crate::claims_of(&c["__Host-tessera_at"].value);
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));

    app.advance(30).await;
    let res = app
        .client
        .post(app.url("/session"))
        .form(&[
            ("username", "ada"),
            ("password", PW),
            ("otp", &code_at(&secret, app.now())),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "one step");
}

#[tokio::test]
async fn cors_answers_only_configured_origins_with_credentials() {
    let app = spawn_app_with(|c| {
        c.cors_allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/users/me"))
            .header(ORIGIN, origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let res = preflight("https://app.example").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    let res = preflight("https://evil.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());

    let plain = spawn_app().await;
    let res = plain
        .client
        .get(plain.url("/healthz"))
        .header(ORIGIN, "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[tokio::test]
async fn pages_carry_the_security_headers_and_hsts_only_behind_https() {
    let app = spawn_app().await;
    for path in ["/login", "/assets/tessera.css"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert!(h.get("strict-transport-security").is_none());
    }
    let res = app.client.get(app.url("/login")).send().await.unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let css = app
        .client
        .get(app.url("/assets/tessera.css"))
        .send()
        .await
        .unwrap();
    assert!(
        css.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    // Signed out, the account page sends to the login page.
    let res = app.client.get(app.url("/account")).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login");

    let tls = spawn_app_with(|c| c.public_url = "https://auth.example".into()).await;
    let res = tls.client.get(tls.url("/login")).send().await.unwrap();
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000"
    );
}

#[tokio::test]
async fn the_login_form_works_without_javascript_and_checks_its_csrf_token() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let res = app.client.get(app.url("/login")).send().await.unwrap();
    let csrf = set_cookies(res.headers())["__Host-tessera_csrf"]
        .value
        .clone();
    let html = res.text().await.unwrap();
    assert!(html.contains(&format!("name=\"csrf_token\" value=\"{csrf}\"")));
    assert!(html.contains("autocomplete=\"current-password\""));
    assert!(!html.contains("<script"));

    let post = |token: &str, password: &str| {
        app.client
            .post(app.url("/login"))
            .header(COOKIE, format!("__Host-tessera_csrf={csrf}"))
            .header(ORIGIN, &app.base)
            .form(&[
                ("username", "ada"),
                ("password", password),
                ("csrf_token", token),
            ])
            .send()
    };
    // A forged form (no matching token) is refused before the password is even checked.
    let res = post("forged", PW).await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get(SET_COOKIE).is_none());
    // A wrong password is said in the page.
    let res = post(&csrf, "not the password at all").await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Incorrect username or password")
    );
    // The right one signs in and goes to the account page.
    let res = post(&csrf, PW).await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/account");
    let c = set_cookies(res.headers());
    assert_ne!(
        c["__Host-tessera_csrf"].value, csrf,
        "a new CSRF token per session"
    );
    let b = Browser {
        at: c["__Host-tessera_at"].value.clone(),
        rt: c["__Secure-tessera_rt"].value.clone(),
        csrf: c["__Host-tessera_csrf"].value.clone(),
    };
    let res = app
        .client
        .get(app.url("/account"))
        .header(COOKIE, b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("ada") && html.contains("Sign out everywhere"));
    // A weak new password is explained in the page.
    let res = app
        .client
        .post(app.url("/account/password"))
        .header(COOKIE, b.cookie_header())
        .header(ORIGIN, &app.base)
        .form(&[
            ("csrf_token", b.csrf.as_str()),
            ("current_password", PW),
            ("new_password", "password"),
            ("confirm_password", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("role=\"alert\""));
}

/// The MFA rate limit on the account page's forms answered the browser with the API's JSON
/// (`{"error":"rate_limited",...}`) instead of a page.
#[tokio::test]
async fn rate_limited_page_forms_answer_with_a_page() {
    let app = spawn_app_with(|c| c.rate_mfa_per_minute = 1).await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let post = |path: &str, form: &[(&str, &str)]| {
        let mut fields = vec![("csrf_token", b.csrf.as_str())];
        fields.extend_from_slice(form);
        app.client
            .post(app.url(path))
            .header(COOKIE, b.cookie_header())
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .form(&fields)
            .send()
    };
    let disable = [("password", "wrong password"), ("code", "123456")];
    let res = post("/account/totp/disable", &disable).await.unwrap();
    assert_eq!(res.status(), 400);
    let res = post("/account/totp/disable", &disable).await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = res.text().await.unwrap();
    assert!(
        html.contains("role=\"alert\"") && html.contains("Too many requests"),
        "{html}"
    );

    let confirm = [
        ("code", "123456"),
        ("secret", "JBSWY3DPEHPK3PXP"),
        (
            "otpauth_uri",
            "otpauth://totp/Tessera:ada?secret=JBSWY3DPEHPK3PXP",
        ),
    ];
    let res = post("/account/totp/confirm", &confirm).await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let html = res.text().await.unwrap();
    assert!(
        html.contains("role=\"alert\"") && html.contains("Too many requests"),
        "{html}"
    );
    let res = post("/account/totp", &[("password", PW)]).await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.text().await.unwrap().contains("Too many requests"));
}

/// Setting up an authenticator app from the account page asks for the password: a cookie
/// session alone cannot turn on a second factor.
#[tokio::test]
async fn the_account_pages_totp_setup_needs_the_password() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let post = |password: &str| {
        app.client
            .post(app.url("/account/totp"))
            .header(COOKIE, b.cookie_header())
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .form(&[("csrf_token", b.csrf.as_str()), ("password", password)])
            .send()
    };
    let res = post("not her password").await.unwrap();
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("The password is wrong."), "{html}");
    assert!(!html.contains("otpauth://"), "{html}");
    let res = post(PW).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("otpauth://"));
}

/// Over plain HTTP on a host other than loopback, browsers refuse the `Secure` cookies, so
/// the login form came back without its CSRF cookie and the page said "reload the page and
/// try again" for ever (reproduced in Chromium at `http://auth.test:PORT/login`). It now
/// says what is needed.
#[tokio::test]
async fn a_form_whose_cookie_never_came_back_says_cookies_and_https_are_needed() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let res = app.client.get(app.url("/login")).send().await.unwrap();
    let csrf = set_cookies(res.headers())["__Host-tessera_csrf"]
        .value
        .clone();
    // The browser dropped the cookie: the form's token comes alone.
    let res = app
        .client
        .post(app.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("username", "ada"),
            ("password", PW),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("allow cookies") && html.contains("HTTPS"),
        "{html}"
    );
    // A token that does not match a cookie that is there is still a plain expired form.
    let res = app
        .client
        .post(app.url("/login"))
        .header(COOKIE, format!("__Host-tessera_csrf={csrf}"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "ada"), ("password", PW), ("csrf_token", "old")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("This form has expired"));
}

/// The JSON API's cookie-authenticated writes read the token from `X-CSRF-Token` only; their
/// refusal told the caller to "send the X-CSRF-Token header or csrf_token field", and the
/// docs said the form field worked there too, but a `csrf_token` field is never read.
#[tokio::test]
async fn the_json_api_asks_for_the_csrf_header_it_reads() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    for path in ["/logout", "/users/me/mfa/totp"] {
        let res = app
            .client
            .post(app.url(path))
            .header(COOKIE, b.cookie_header())
            .header("sec-fetch-site", "same-origin")
            .form(&[("csrf_token", b.csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        let body = json(res).await;
        assert_eq!(body["error"], "csrf_failed");
        assert_eq!(
            body["error_description"], "missing CSRF token: send the X-CSRF-Token header",
            "{path}"
        );
    }
    // Where the field is read, the message names it.
    let res = app
        .client
        .post(app.url("/session/logout"))
        .header(COOKIE, b.cookie_header())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(res).await["error_description"],
        "missing CSRF token: send the X-CSRF-Token header or csrf_token field"
    );
}

/// A page form's URL stays in the address bar after its POST (a wrong password at
/// `/account/password`, a wrong code at `/login/mfa`); opening it again is a GET, which
/// answered the browser with the API's JSON 405. It now goes back to the page.
#[tokio::test]
async fn opening_a_page_forms_url_goes_back_to_its_page() {
    let app = spawn_app().await;
    for (path, to) in [
        ("/login/mfa", "/login"),
        ("/session/login", "/login"),
        ("/session/login/mfa", "/login"),
        ("/session/end", "/account"),
        ("/account/logout", "/account"),
        ("/account/password", "/account"),
        ("/account/sessions/revoke-all", "/account"),
        (
            "/account/sessions/0190b4f2-0000-7000-8000-000000000000/revoke",
            "/account",
        ),
        ("/account/totp", "/account"),
        ("/account/totp/confirm", "/account"),
        ("/account/totp/disable", "/account"),
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 303, "{path}");
        assert_eq!(res.headers()["location"], to, "{path}");
        assert_eq!(res.headers()["x-frame-options"], "DENY", "{path}");
    }
}

/// A GET of `path` as the browser `b` would send it: its cookies for that path (the refresh
/// cookie only under `/session`).
async fn browser_get(app: &TestApp, b: &Browser, path: &str) -> reqwest::Response {
    let cookies = if path.starts_with("/session/") {
        b.cookie_header()
    } else {
        format!("__Host-tessera_at={}; __Host-tessera_csrf={}", b.at, b.csrf)
    };
    app.client
        .get(app.url(path))
        .header(COOKIE, cookies)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap()
}

fn location(res: &reqwest::Response) -> &str {
    res.headers()["location"].to_str().unwrap()
}

/// The access cookie lasts 15 minutes, the session as long as its refresh cookie: the
/// account page renews the session instead of sending its user to sign in again.
#[tokio::test]
async fn the_account_page_renews_a_session_whose_access_cookie_expired() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let mut b = sign_in(&app, "ada").await;
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = browser_get(&app, &b, "/account").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/session/resume");

    let res = browser_get(&app, &b, "/session/resume").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account?resumed=1");
    let c = set_cookies(res.headers());
    assert_eq!(
        c["__Host-tessera_csrf"].value, b.csrf,
        "the CSRF token is kept"
    );
    assert_ne!(c["__Secure-tessera_rt"].value, b.rt, "rotated");
    let old_rt = std::mem::replace(&mut b.rt, c["__Secure-tessera_rt"].value.clone());
    b.at = c["__Host-tessera_at"].value.clone();
    let res = browser_get(&app, &b, "/account?resumed=1").await;
    assert_eq!(location(&res), "/account");
    let res = browser_get(&app, &b, "/account").await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("ada"));

    // A form sent with the expired cookie is asked for again once renewed.
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = browser_post(&app, &b, "/account/password")
        .form(&[("csrf_token", b.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/session/resume?notice=renewed");
    let res = browser_get(&app, &b, "/session/resume?notice=renewed").await;
    assert_eq!(location(&res), "/account?resumed=1&notice=renewed");

    // Sent from another site, or with a token already rotated long ago: no renewal.
    let res = app
        .client
        .get(app.url("/session/resume"))
        .header(COOKIE, b.cookie_header())
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/login");
    assert!(res.headers().get(SET_COOKIE).is_none());
    b.rt = old_rt;
    let res = browser_get(&app, &b, "/session/resume").await;
    assert_eq!(location(&res), "/login?notice=session_ended");
    assert_eq!(
        set_cookies(res.headers())["__Secure-tessera_rt"].attr("max-age"),
        Some("0")
    );
    // That was reuse: the session is gone, and the page does not loop.
    assert!(app.state.auth.list_sessions(None).await.unwrap().is_empty());
    let res = browser_get(&app, &b, "/account?resumed=1").await;
    assert_eq!(location(&res), "/login?notice=session_ended");
    // Without a session's cookies at all: straight to sign-in.
    let res = app.client.get(app.url("/account")).send().await.unwrap();
    assert_eq!(location(&res), "/login");
}

/// The loop guard `resumed=1` must not stay in the address bar: a reload of that URL once
/// the renewed access cookie has expired in turn would otherwise go to sign-in although
/// the session lives on.
#[tokio::test]
async fn a_resumed_account_page_drops_its_loop_guard_from_the_address_bar() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let mut b = sign_in(&app, "ada").await;
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = browser_get(&app, &b, "/session/resume?notice=renewed").await;
    assert_eq!(res.status(), 303);
    let back = location(&res).to_owned();
    let c = set_cookies(res.headers());
    b.rt = c["__Secure-tessera_rt"].value.clone();
    b.at = c["__Host-tessera_at"].value.clone();
    // The renewed page answers with a URL without the guard (keeping a known notice).
    let res = browser_get(&app, &b, &back).await;
    assert_eq!(res.status(), 303, "{back}");
    assert_eq!(location(&res), "/account?notice=renewed");
    let res = browser_get(&app, &b, "/account?resumed=1").await;
    assert_eq!(location(&res), "/account");
    let res = browser_get(&app, &b, "/account?notice=renewed").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Please submit the form again")
    );
    // Reloaded after the renewed access cookie expired too: renewed again, not sign-in.
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = browser_get(&app, &b, "/account").await;
    assert_eq!(location(&res), "/session/resume");
}

/// A sibling subdomain can plant its own `__Secure-tessera_rt` for the parent domain. In a
/// browser with no refresh cookie of its own (never signed in, or signed out) it is the
/// only one sent, so the ambiguity check cannot see it: the CSRF cookie, which only this
/// origin can set and which names the session the browser signed into, refuses it.
#[tokio::test]
async fn a_planted_refresh_cookie_alone_signs_no_one_in() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    app.create_user("mallory", PW, &["user"]).await;
    let mallory = sign_in(&app, "mallory").await;
    // The victim only opened the sign-in page: an anonymous CSRF cookie.
    let res = app.client.get(app.url("/login")).send().await.unwrap();
    let anonymous = set_cookies(res.headers())["__Host-tessera_csrf"]
        .value
        .clone();
    let victim = Browser {
        at: String::new(),
        rt: mallory.rt.clone(),
        csrf: anonymous,
    };
    let res = browser_get(&app, &victim, "/account").await;
    assert_eq!(location(&res), "/session/resume");
    let res = browser_get(&app, &victim, "/session/resume").await;
    assert_eq!(location(&res), "/login");
    assert!(res.headers().get(SET_COOKIE).is_none(), "not signed in");
    let res = browser_post(&app, &victim, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get(SET_COOKIE).is_none(), "not signed in");
    // Signed in as ada, then signed out: ada's own CSRF cookie names her session, not
    // mallory's.
    let ada = sign_in(&app, "ada").await;
    let victim = Browser {
        rt: mallory.rt.clone(),
        ..ada
    };
    let res = browser_post(&app, &victim, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        json(res).await["error_description"]
            .as_str()
            .unwrap()
            .contains("does not belong")
    );
    // Mallory's own browser still refreshes: the planted token was never used.
    let res = browser_post(&app, &mallory, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Two tabs of the account page start TOTP setup: the second replaces the pending secret.
/// The first tab's confirmation, with a right code for the secret it shows, used to get
/// "That code did not work" (checked against the other secret); it now says the setup is
/// out of date and to reload, and the second tab's confirmation works.
#[tokio::test]
async fn confirming_a_totp_setup_replaced_in_another_tab_says_to_reload() {
    let app = spawn_app_with(|c| c.rate_mfa_per_minute = 0).await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let post = |path: &str, form: &[(&str, &str)]| {
        let mut fields = vec![("csrf_token", b.csrf.as_str())];
        fields.extend_from_slice(form);
        app.client
            .post(app.url(path))
            .header(COOKIE, b.cookie_header())
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .form(&fields)
            .send()
    };
    let shown_secret = |html: &str| {
        let start = html.find(r#"name="secret" value=""#).unwrap() + 21;
        html[start..start + html[start..].find('"').unwrap()].to_owned()
    };
    let code = |secret: &str| {
        totp_rs::Builder::new()
            .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
            .build()
            .unwrap()
            .generate(u64::try_from(app.now()).unwrap())
            .to_string()
    };
    let first = post("/account/totp", &[("password", PW)]).await.unwrap();
    assert_eq!(first.status(), 200);
    let first = shown_secret(&first.text().await.unwrap());
    let second = post("/account/totp", &[("password", PW)]).await.unwrap();
    assert_eq!(second.status(), 200);
    let second = shown_secret(&second.text().await.unwrap());
    assert_ne!(first, second);
    let uri = |s: &str| format!("otpauth://totp/Tessera:ada?secret={s}");
    let (first_code, first_uri) = (code(&first), uri(&first));
    let res = post(
        "/account/totp/confirm",
        &[
            ("code", first_code.as_str()),
            ("secret", first.as_str()),
            ("otpauth_uri", first_uri.as_str()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("replaced by a newer one") && html.contains("reload"),
        "{html}"
    );
    assert!(
        !html.contains(&first),
        "the stale QR code is not shown again"
    );
    let (second_code, second_uri) = (code(&second), uri(&second));
    let res = post(
        "/account/totp/confirm",
        &[
            ("code", second_code.as_str()),
            ("secret", second.as_str()),
            ("otpauth_uri", second_uri.as_str()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let user = app.state.auth.find_user("ada").await.unwrap();
    assert!(user.totp_enabled);
}

/// A form POST of `path` as the browser `b` would send it: the cookies its jar holds for
/// that path (the refresh cookie only under `/session`, the access cookie only while it
/// has not expired: pass `at` empty for one past its `Max-Age`), same-origin, following a
/// 307/308 as browsers do (same method, same form).
async fn browser_form_post(
    app: &TestApp,
    b: &Browser,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut path = path.to_owned();
    loop {
        let mut cookies = vec![format!("__Host-tessera_csrf={}", b.csrf)];
        if !b.at.is_empty() {
            cookies.push(format!("__Host-tessera_at={}", b.at));
        }
        if path.starts_with("/session/") {
            cookies.push(format!("__Secure-tessera_rt={}", b.rt));
        }
        let res = app
            .client
            .post(app.url(&path))
            .header(COOKIE, cookies.join("; "))
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .form(form)
            .send()
            .await
            .unwrap();
        if !matches!(res.status().as_u16(), 307 | 308) {
            return res;
        }
        path = location(&res).to_owned();
    }
}

/// The `action` of the account page's "Sign out" form (the one in the top bar).
fn sign_out_action(html: &str) -> String {
    let form = html.find(r#"class="nav-form""#).unwrap();
    let start = html[..form].rfind(r#"action=""#).unwrap() + 8;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// The account page's "Sign out" posted to `/account/logout`, where the refresh cookie
/// (`Path=/session`) never goes. Once the access cookie had expired (the page left open
/// past `access_token_ttl`), signing out deleted the cookies and said "You have been signed
/// out" while the session lived on, its refresh token still good and the session still
/// listed on the user's other devices. The form now posts under `/session`, and the old URL
/// (a page opened before the upgrade) forwards there with a 307.
#[tokio::test]
async fn signing_out_from_the_account_page_ends_the_session_after_the_access_cookie_expired() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    for old_form in [false, true] {
        let b = sign_in(&app, "ada").await;
        let res = browser_get(&app, &b, "/account").await;
        assert_eq!(res.status(), 200);
        let action = sign_out_action(&res.text().await.unwrap());
        let action = if old_form {
            "/account/logout".to_owned()
        } else {
            action
        };
        app.advance(app.state.config.access_token_ttl + 120).await;
        // The browser dropped the access cookie at its Max-Age.
        let expired = Browser {
            at: String::new(),
            ..b.clone()
        };
        let res =
            browser_form_post(&app, &expired, &action, &[("csrf_token", b.csrf.as_str())]).await;
        assert_eq!(res.status(), 303, "{action}");
        assert_eq!(location(&res), "/login?notice=signed_out", "{action}");
        assert_eq!(
            set_cookies(res.headers())["__Secure-tessera_rt"].attr("max-age"),
            Some("0")
        );
        assert!(
            app.state.auth.list_sessions(None).await.unwrap().is_empty(),
            "{action}: the session must end, not only its cookies"
        );
        let res = browser_post(&app, &b, "/session/refresh")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{action}: the refresh token is dead");
    }
}

/// A sibling subdomain can plant a `__Secure-tessera_rt` holding a refresh token of
/// another client (one of its own sessions, through any public client). Logout revokes
/// every refresh cookie sent, and revoking one issued to another client is refused (RFC
/// 7009 §2.1): the whole sign-out failed with 403 `forbidden`, the cookies stayed, and
/// with the access cookie expired the browser's own session was never ended.
#[tokio::test]
async fn a_planted_refresh_cookie_of_another_client_does_not_stop_logout() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    app.create_user("mallory", PW, &["user"]).await;
    app.state
        .auth
        .create_client(
            "mobile-app",
            &["profile".into()],
            false,
            &tessera_auth::Actor::System,
        )
        .await
        .unwrap();
    let res = app
        .post_token(&[
            ("username", "mallory"),
            ("password", PW),
            ("client_id", "mobile-app"),
        ])
        .await;
    assert_eq!(res.status(), 200);
    let planted = json(res).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Two browsers of ada's: one signs out through the API, one through the account page.
    let api = sign_in(&app, "ada").await;
    let page = sign_in(&app, "ada").await;
    let ada = app.state.auth.find_user("ada").await.unwrap();
    app.advance(app.state.config.access_token_ttl + 120).await;
    for (path, b) in [("/session/logout", &api), ("/session/end", &page)] {
        // The planted cookie has the longer `Path`, so the browser sends it first; the
        // access cookie has expired and is not sent.
        let res = app
            .client
            .post(app.url(path))
            .header(
                COOKIE,
                format!(
                    "__Secure-tessera_rt={planted}; __Secure-tessera_rt={}; __Host-tessera_csrf={}",
                    b.rt, b.csrf
                ),
            )
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .form(&[("csrf_token", b.csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert!(
            matches!(res.status().as_u16(), 204 | 303),
            "{path}: {}",
            res.status()
        );
        assert_eq!(
            set_cookies(res.headers())["__Secure-tessera_rt"].attr("max-age"),
            Some("0"),
            "{path}"
        );
    }
    let left = app.state.auth.list_sessions(Some(&ada)).await.unwrap();
    assert!(left.is_empty(), "ada's sessions must end: {left:?}");
}

/// Signed out in one tab, the user clicks "Sign out" in another: the browser has no cookies
/// left, so the CSRF check failed and the answer was a 403 page saying the browser did not
/// send back the site's cookie, to allow cookies and use HTTPS: a sign-out that seemed to
/// fail, with the wrong advice. With no session cookie there is nothing to end (and so
/// nothing to forge): it goes to the sign-in page saying so.
#[tokio::test]
async fn signing_out_again_from_a_tab_left_open_says_signed_out() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let res = browser_form_post(&app, &b, "/session/end", &[("csrf_token", b.csrf.as_str())]).await;
    assert_eq!(location(&res), "/login?notice=signed_out");
    // The other tab: same form, and the jar now empty.
    for path in ["/session/end", "/account/logout"] {
        let mut res = app
            .client
            .post(app.url(path))
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .form(&[("csrf_token", b.csrf.as_str())])
            .send()
            .await
            .unwrap();
        if res.status() == 307 {
            res = app
                .client
                .post(app.url(location(&res)))
                .header(ORIGIN, &app.base)
                .header("sec-fetch-site", "same-origin")
                .form(&[("csrf_token", b.csrf.as_str())])
                .send()
                .await
                .unwrap();
        }
        assert_eq!(res.status(), 303, "{path}");
        assert_eq!(location(&res), "/login?notice=signed_out", "{path}");
    }
    // With a session's cookies the CSRF check still applies.
    let b = sign_in(&app, "ada").await;
    let res = browser_form_post(&app, &b, "/session/end", &[("csrf_token", "forged")]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.state.auth.list_sessions(None).await.unwrap().len(), 1);
}

/// Refreshing by cookie is the refresh grant: it counts against the same per-IP limit as
/// `POST /token` (a database lookup per attempt), answered as JSON at `/session/refresh`
/// and as a page at `/session/resume`, and the cookies stay for the next try.
#[tokio::test]
async fn cookie_refreshes_count_against_the_token_rate_limit() {
    let app = spawn_app_with(|c| c.rate_token_per_minute = 3).await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let res = browser_post(&app, &b, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b = b.renewed(res.headers());
    let res = browser_get(&app, &b, "/session/resume").await;
    assert_eq!(res.status(), 303);
    let b = b.renewed(res.headers());

    // Three requests in the minute (sign-in, refresh, resume): the fourth is over.
    let res = browser_post(&app, &b, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(!res.headers().contains_key("set-cookie"), "cookies kept");
    assert_eq!(json(res).await["error"], "rate_limited");
    let res = browser_get(&app, &b, "/session/resume").await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(!res.headers().contains_key("set-cookie"), "cookies kept");
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(res.text().await.unwrap().contains("Too many requests"));

    // Not a sign-out: the session and its newest cookies still work.
    assert_eq!(users_me(&app, &b).await, 200);
}

/// Signed out in one tab, the browser follows the answer to the sign-in page, and that page
/// gives it a signed-out visitor's CSRF cookie (for its own form). "Sign out" in another tab
/// left open then came with that cookie and the old page's token: not "no session cookie",
/// so the CSRF check ran, the tokens differed, and the answer was 403 "This form has
/// expired", a sign-out that seemed to fail. Without an access or a refresh cookie there is
/// nothing to end, whatever CSRF cookie comes along: it goes to the sign-in page.
#[tokio::test]
async fn signing_out_again_after_the_sign_in_page_loaded_says_signed_out() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let res = browser_form_post(&app, &b, "/session/end", &[("csrf_token", b.csrf.as_str())]).await;
    assert_eq!(location(&res), "/login?notice=signed_out");
    // The tab follows the redirect; the sign-in page sets a visitor's CSRF cookie.
    let res = app
        .client
        .get(app.url(location(&res)))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let visitor = set_cookies(res.headers())["__Host-tessera_csrf"]
        .value
        .clone();
    assert_ne!(visitor, b.csrf);
    // The other tab: its form, and the jar holding only the visitor's CSRF cookie.
    for path in ["/session/end", "/account/logout"] {
        let mut path = path.to_owned();
        let res = loop {
            let res = app
                .client
                .post(app.url(&path))
                .header(COOKIE, format!("__Host-tessera_csrf={visitor}"))
                .header(ORIGIN, &app.base)
                .header("sec-fetch-site", "same-origin")
                .form(&[("csrf_token", b.csrf.as_str())])
                .send()
                .await
                .unwrap();
            if res.status() != 307 {
                break res;
            }
            path = location(&res).to_owned();
        };
        assert_eq!(res.status(), 303, "{path}");
        assert_eq!(location(&res), "/login?notice=signed_out", "{path}");
        assert!(
            !res.headers().contains_key(SET_COOKIE),
            "{path}: the visitor's CSRF cookie stays for the sign-in form"
        );
    }
}

/// The OpenAPI document says what the cookie-mode endpoints take and answer. It required a
/// body on `POST /session/refresh` and `POST /session/logout`, whose CSRF token may come
/// in the `X-CSRF-Token` header with no body at all (schemathesis, once it sent the session
/// cookies, reported those requests as schema-violating yet accepted), and it did not list
/// the 401 of `POST /session/logout?all=true` without a valid access cookie.
#[tokio::test]
async fn the_openapi_document_has_the_cookie_endpoints_optional_body_and_their_401() {
    let app = spawn_app().await;
    let doc = json(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for path in ["/session/refresh", "/session/logout"] {
        let body = &doc["paths"][path]["post"]["requestBody"];
        assert!(body["content"].is_object(), "{path}: {body}");
        assert_ne!(body["required"], true, "{path}: {body}");
    }
    let logout = &doc["paths"]["/session/logout"]["post"]["responses"];
    assert!(logout["401"].is_object(), "{logout}");

    // What the server does: no body, the token in the header.
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let res = browser_post(&app, &b, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // `all=true` with an access cookie that is not a valid token: whose sessions to end
    // is unknown.
    let stale = Browser {
        at: "not-a-token".to_owned(),
        ..b.clone()
    };
    let res = browser_post(&app, &stale, "/session/logout?all=true")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(json(res).await["error"], "invalid_token");
    let res = browser_post(&app, &stale, "/session/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}

/// Each refresh set the refresh cookie's `Max-Age` to `refresh_token_ttl` afresh (at most
/// `session_max_age`), so near the session's absolute expiry the cookie (and the CSRF
/// cookie with it) outlived the session. It now lasts as long as the refresh token: never
/// past the absolute expiry.
#[tokio::test]
async fn the_refresh_cookie_never_outlives_the_session() {
    const HOUR: i64 = 3600;
    let app = spawn_app_with(|c| {
        c.refresh_token_ttl = 24 * HOUR;
        c.session_max_age = 48 * HOUR;
    })
    .await;
    app.create_user("ada", PW, &["user"]).await;
    let mut b = sign_in(&app, "ada").await;
    let max_ages = |res: &reqwest::Response| {
        let c = set_cookies(res.headers());
        (
            c["__Secure-tessera_rt"].attr("max-age").unwrap().to_owned(),
            c["__Host-tessera_csrf"].attr("max-age").unwrap().to_owned(),
        )
    };
    // 20 hours in: 28 hours of the session are left, more than a refresh token's 24.
    app.advance(20 * HOUR).await;
    let res = browser_post(&app, &b, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let day = (24 * HOUR).to_string();
    assert_eq!(max_ages(&res), (day.clone(), day));
    b = b.renewed(res.headers());
    // 40 hours in: 8 hours are left, and the refresh token expires with the session.
    app.advance(20 * HOUR).await;
    let res = browser_post(&app, &b, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let left = (8 * HOUR).to_string();
    assert_eq!(max_ages(&res), (left.clone(), left));
    // The pages' renewal sets the same.
    b = b.renewed(res.headers());
    app.advance(4 * HOUR).await;
    let res = browser_get(&app, &b, "/session/resume").await;
    assert_eq!(res.status(), 303);
    let left = (4 * HOUR).to_string();
    assert_eq!(max_ages(&res), (left.clone(), left));
}

/// `POST /session/refresh` without a refresh cookie answered 400 and left the browser's
/// other session cookies, of no use without it, and the session its access cookie named.
/// They are now deleted and the session ends; a signed-out visitor's CSRF cookie, which
/// the sign-in form needs, stays.
#[tokio::test]
async fn a_refresh_without_a_refresh_cookie_clears_the_session_cookies() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let res = app
        .client
        .post(app.url("/session/refresh"))
        .header(
            COOKIE,
            format!("__Host-tessera_at={}; __Host-tessera_csrf={}", b.at, b.csrf),
        )
        .header(ORIGIN, &app.base)
        .header("sec-fetch-site", "same-origin")
        .header("x-csrf-token", &b.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let c = set_cookies(res.headers());
    for name in [
        "__Host-tessera_at",
        "__Secure-tessera_rt",
        "__Host-tessera_csrf",
    ] {
        assert_eq!(c[name].attr("max-age"), Some("0"), "{name}");
    }
    assert_eq!(json(res).await["error"], "invalid_grant");
    assert!(app.state.auth.list_sessions(None).await.unwrap().is_empty());
    assert_eq!(users_me(&app, &b).await, 401);

    // A signed-out visitor's CSRF cookie is the sign-in form's: kept.
    let res = app.client.get(app.url("/login")).send().await.unwrap();
    let anonymous = set_cookies(res.headers())["__Host-tessera_csrf"]
        .value
        .clone();
    let res = app
        .client
        .post(app.url("/session/refresh"))
        .header(COOKIE, format!("__Host-tessera_csrf={anonymous}"))
        .header("sec-fetch-site", "same-origin")
        .header("x-csrf-token", &anonymous)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let c = set_cookies(res.headers());
    assert_eq!(c["__Host-tessera_at"].attr("max-age"), Some("0"));
    assert!(!c.contains_key("__Host-tessera_csrf"), "{c:?}");
}

/// A cookie whose value is not visible ASCII (`junk=\xe9`), which a sibling subdomain or a
/// script can plant, hid every cookie sent in the same `Cookie` header (the one header an
/// HTTP/1.1 browser sends): the server saw no cookies at all, so the browser was signed out
/// of every page and could not refresh. A malformed pair now hides only itself (RFC 6265
/// §5.2, §5.4). In a header of its own (as HTTP/2 allows, RFC 9113 §8.2.3) it hid only
/// that header before too; both layouts are checked.
#[tokio::test]
async fn a_planted_cookie_that_is_not_ascii_hides_none_of_the_session_cookies() {
    /// The browser's cookies for `path` (the refresh cookie only under `/session`) and a
    /// planted one, as one header or two.
    fn planted(b: &Browser, path: &str, own_header: bool) -> Vec<HeaderValue> {
        let ours = if path.starts_with("/session/") {
            b.cookie_header()
        } else {
            format!("__Host-tessera_at={}; __Host-tessera_csrf={}", b.at, b.csrf)
        };
        if own_header {
            vec![
                HeaderValue::from_bytes(b"junk=\xe9\xff").unwrap(),
                HeaderValue::from_str(&ours).unwrap(),
            ]
        } else {
            let mut v = b"junk=\xe9; ".to_vec();
            v.extend_from_slice(ours.as_bytes());
            v.extend_from_slice(b"; tail=caf\xc3\xa9");
            vec![HeaderValue::from_bytes(&v).unwrap()]
        }
    }
    fn request(
        app: &TestApp,
        method: reqwest::Method,
        b: &Browser,
        path: &str,
        own_header: bool,
    ) -> reqwest::RequestBuilder {
        let mut req = app
            .client
            .request(method, app.url(path))
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .header("x-csrf-token", &b.csrf);
        for v in planted(b, path, own_header) {
            req = req.header(COOKIE, v);
        }
        req
    }

    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    for own_header in [false, true] {
        let mut b = sign_in(&app, "ada").await;
        let get = reqwest::Method::GET;
        let post = reqwest::Method::POST;

        let res = request(&app, get.clone(), &b, "/users/me", own_header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "own header: {own_header}");
        assert_eq!(json(res).await["username"], "ada");
        let res = request(&app, get.clone(), &b, "/account", own_header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "own header: {own_header}");
        assert!(res.text().await.unwrap().contains("ada"));

        // The refresh cookie and the double-submit CSRF cookie are read too.
        let res = request(&app, post.clone(), &b, "/session/refresh", own_header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "own header: {own_header}");
        b = b.renewed(res.headers());
        assert_eq!(users_me(&app, &b).await, 200);

        // The pages' way back in once the access cookie has expired.
        app.advance(app.state.config.access_token_ttl + 120).await;
        let res = request(&app, get.clone(), &b, "/account", own_header)
            .send()
            .await
            .unwrap();
        assert_eq!(
            location(&res),
            "/session/resume",
            "own header: {own_header}"
        );
        let res = request(&app, get.clone(), &b, "/session/resume", own_header)
            .send()
            .await
            .unwrap();
        assert_eq!(
            location(&res),
            "/account?resumed=1",
            "own header: {own_header}"
        );
        b = b.renewed(res.headers());

        // And the CSRF-checked sign-out ends the session.
        let res = request(&app, post, &b, "/session/logout", own_header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "own header: {own_header}");
        assert!(app.state.auth.list_sessions(None).await.unwrap().is_empty());
        assert_eq!(users_me(&app, &b).await, 401);
    }
}

/// Our cookies' values are still strictly RFC 6265 §4.1.1 `cookie-value`s: an access
/// cookie with a byte outside them is no credential, and a well-formed one after it is.
#[tokio::test]
async fn a_session_cookie_value_that_is_not_a_cookie_value_is_ignored() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let me = |raw: Vec<u8>| {
        app.client
            .get(app.url("/users/me"))
            .header(COOKIE, HeaderValue::from_bytes(&raw).unwrap())
            .send()
    };
    let bad = [b"__Host-tessera_at=".as_slice(), b.at.as_bytes(), b"\xe9"].concat();
    assert_eq!(me(bad.clone()).await.unwrap().status(), 401);
    let quoted = [b"__Host-tessera_at=\"".as_slice(), b.at.as_bytes()].concat();
    assert_eq!(me(quoted).await.unwrap().status(), 401);
    let then_good = [&bad, b"; __Host-tessera_at=".as_slice(), b.at.as_bytes()].concat();
    assert_eq!(me(then_good).await.unwrap().status(), 200);
}

/// `GET /session/resume` without a refresh cookie goes to sign-in and, unlike
/// `POST /session/refresh`, clears nothing and ends nothing (docs/api.md): it is a GET with
/// no double-submit check, reached from `/account` only once the access cookie no longer
/// works, so no live session is named by it, and the stale cookies lapse with their
/// `Max-Age`.
#[tokio::test]
async fn resuming_without_a_refresh_cookie_goes_to_sign_in_and_leaves_the_cookies() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = app
        .client
        .get(app.url("/session/resume"))
        .header(
            COOKIE,
            format!("__Host-tessera_at={}; __Host-tessera_csrf={}", b.at, b.csrf),
        )
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login");
    assert!(res.headers().get(SET_COOKIE).is_none());
    assert_eq!(app.state.auth.list_sessions(None).await.unwrap().len(), 1);
}

/// A page's query string that does not parse (a notice repeated) got axum's plain-text
/// 400; a page's path parameter that is not UTF-8 too. Pages now answer with the error
/// page (and its security headers), as the JSON endpoints answer with the RFC 6749 shape.
#[tokio::test]
async fn malformed_page_addresses_get_the_error_page() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    for path in [
        "/login?notice=signed_out&notice=renewed",
        "/account?notice=a&notice=b",
        "/account?resumed=1&resumed=1",
        "/session/resume?notice=a&notice=b",
    ] {
        let res = browser_get(&app, &b, path).await;
        assert_eq!(res.status(), 400, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert_eq!(res.headers()["x-frame-options"], "DENY", "{path}");
        let html = res.text().await.unwrap();
        assert!(html.contains("This address is not valid"), "{path}: {html}");
        assert!(!html.contains("duplicate field"), "{path}");
    }
    let res = browser_form_post(
        &app,
        &b,
        "/account/sessions/%ff/revoke",
        &[("csrf_token", b.csrf.as_str())],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("This address is not valid")
    );
    // The JSON endpoints: the RFC 6749 error shape.
    let res = browser_post(&app, &b, "/session/logout?all=true&all=false")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"], "invalid_request");
    assert_eq!(users_me(&app, &b).await, 200, "nothing ended");
}

/// A second sign-in in a browser that still held a live session replaced its cookies and
/// left the session alive server-side (its refresh token still good, the session listed)
/// until it timed out. `POST /session` receives the refresh cookie (`Path=/session`), so
/// the session it held ends, through the access cookie while it is valid and through the
/// refresh cookie once it is not; one the browser cannot prove it holds (a refresh cookie
/// of another session than its CSRF cookie names) is left alone, and so is every session
/// when the sign-in fails.
#[tokio::test]
async fn a_second_sign_in_ends_the_session_the_browser_held() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    app.create_user("bob", PW, &["user"]).await;
    app.create_user("mallory", PW, &["user"]).await;
    let sign_in_over = |b: &Browser, user: &str, password: &str| {
        app.client
            .post(app.url("/session"))
            .header(COOKIE, b.cookie_header())
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .form(&[("username", user), ("password", password)])
    };
    let live = || async { app.state.auth.list_sessions(None).await.unwrap().len() };

    // With a valid access cookie, as another user.
    let first = sign_in(&app, "ada").await;
    let res = sign_in_over(&first, "bob", PW).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let second = first.renewed(res.headers());
    assert_eq!(users_me(&app, &first).await, 401, "the first session ended");
    let res = browser_post(&app, &first, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "its refresh token is dead");
    assert_eq!(live().await, 1);
    assert_eq!(users_me(&app, &second).await, 200);

    // A failed sign-in ends nothing.
    let res = sign_in_over(&second, "ada", "not the password at all")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(users_me(&app, &second).await, 200);
    assert_eq!(live().await, 1);

    // Once the access cookie has expired, through the refresh cookie.
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = sign_in_over(&second, "ada", PW).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let third = second.renewed(res.headers());
    let res = browser_post(&app, &second, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "the second session ended");
    assert_eq!(live().await, 1);

    // A refresh cookie of a session the CSRF cookie does not name (planted by a sibling
    // subdomain) is not this browser's to end.
    let mallory = sign_in(&app, "mallory").await;
    let planted = Browser {
        rt: mallory.rt.clone(),
        ..third.clone()
    };
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = sign_in_over(&planted, "ada", PW).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = browser_post(&app, &mallory, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "mallory's session lives");
}

/// The hosted sign-in page ends the session the browser held too. Its forms post under
/// `/session`, so that the refresh cookie comes along: the session ends once the access
/// cookie has expired as well (the usual case, as `/login` sends a browser with a working
/// one to `/account`). At `POST /login`, where they posted before, the access cookie alone
/// can end it.
#[tokio::test]
async fn signing_in_again_on_the_sign_in_page_ends_the_session_the_browser_held() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let first = sign_in(&app, "ada").await;
    async fn post(app: &TestApp, b: &Browser, path: &str) -> reqwest::Response {
        let form = [
            ("csrf_token", b.csrf.as_str()),
            ("username", "ada"),
            ("password", PW),
        ];
        browser_form_post(app, b, path, &form).await
    }

    // The access cookie expired: the page shows the form, posting under `/session`.
    app.advance(app.state.config.access_token_ttl + 120).await;
    let res = browser_get(&app, &first, "/login").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"action="/session/login""#), "{html}");
    assert!(html.contains(&format!(r#"value="{}""#, first.csrf)));
    let res = post(&app, &first, "/session/login").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account");
    let second = first.renewed(res.headers());
    let res = browser_post(&app, &first, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "the first session ended");
    assert_eq!(app.state.auth.list_sessions(None).await.unwrap().len(), 1);
    assert_eq!(users_me(&app, &second).await, 200);

    // The former URL, with a valid access cookie.
    let res = post(&app, &second, "/login").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account");
    let third = second.renewed(res.headers());
    assert_eq!(
        users_me(&app, &second).await,
        401,
        "the second session ended"
    );
    let res = browser_post(&app, &second, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(app.state.auth.list_sessions(None).await.unwrap().len(), 1);
    assert_eq!(users_me(&app, &third).await, 200);
}

/// The login page's form (and the other pages' and `/session/refresh`'s) was decoded with
/// bytes that are not UTF-8 replaced by U+FFFD, as `POST /token`'s no longer is: a password
/// sent as Latin-1 was checked as another password, and the failure counted towards the
/// name's lockout. It is now refused as at `POST /token`, before anything is checked.
#[tokio::test]
async fn the_login_page_refuses_a_form_that_is_not_utf_8_as_the_token_endpoint_does() {
    use tessera_auth::store::AuditStore as _;
    let app = spawn_app().await;
    app.create_user("chef", "violet gramophone caf\u{e9} harbour", &["user"])
        .await;
    let res = app.client.get(app.url("/login")).send().await.unwrap();
    let csrf = set_cookies(res.headers())["__Host-tessera_csrf"]
        .value
        .clone();
    let post = |body: String| {
        app.client
            .post(app.url("/login"))
            .header(COOKIE, format!("__Host-tessera_csrf={csrf}"))
            .header(ORIGIN, &app.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let res = post(format!(
        "username=chef&password=violet+gramophone+caf%E9+harbour&csrf_token={csrf}"
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("UTF-8"), "{html}");
    let rows = app.state.db().list_audit(0, None, None, 100).await.unwrap();
    assert!(
        !rows
            .iter()
            .any(|r| r.event.event == "login" && r.event.outcome == "failure"),
        "{:?}",
        rows.iter().map(|r| &r.event).collect::<Vec<_>>()
    );
    // The same password in UTF-8 signs in.
    let res = post(format!(
        "username=chef&password=violet+gramophone+caf%C3%A9+harbour&csrf_token={csrf}"
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 303);
}

/// `POST /token` leaves `scope` out when none is granted (RFC 6749 §3.3 has no empty scope
/// list); cookie mode's answers said `"scope": ""` for the same sign-in.
#[tokio::test]
async fn cookie_mode_answers_leave_out_an_empty_scope_as_the_token_answer_does() {
    let app = spawn_app_with(|c| c.default_scopes = Vec::new()).await;
    app.create_user("ada", PW, &["user"]).await;
    let token = app
        .client
        .post(app.url("/token"))
        .form(&[("username", "ada"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let token = json(token).await;
    assert_eq!(token.get("scope"), None, "{token}");
    let res = app
        .client
        .post(app.url("/session"))
        .form(&[("username", "ada"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b = Browser {
        at: set_cookies(res.headers())["__Host-tessera_at"]
            .value
            .clone(),
        rt: set_cookies(res.headers())["__Secure-tessera_rt"]
            .value
            .clone(),
        csrf: set_cookies(res.headers())["__Host-tessera_csrf"]
            .value
            .clone(),
    };
    let started = json(res).await;
    assert_eq!(started.get("scope"), None, "{started}");
    assert!(started["csrf_token"].is_string(), "{started}");
    let res = browser_post(&app, &b, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let renewed = json(res).await;
    assert_eq!(renewed.get("scope"), None, "{renewed}");
    // With default scopes, both still name them.
    let app = spawn_app_with(|c| c.default_scopes = vec!["profile".into()]).await;
    app.create_user("ada", PW, &["user"]).await;
    let res = app
        .client
        .post(app.url("/session"))
        .form(&[("username", "ada"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["scope"], "profile");
}

/// A browser's cookie jar that honours `Max-Age` on the test's clock (seconds since the
/// test began), which the client's own jar cannot: it reads the wall clock.
#[derive(Debug, Default)]
struct ClockedJar(BTreeMap<String, (String, i64)>);

impl ClockedJar {
    /// Takes in an answer's `Set-Cookie` headers, received at `now`.
    fn receive(&mut self, now: i64, headers: &HeaderMap) {
        for (name, c) in set_cookies(headers) {
            let max_age: i64 = c.attr("max-age").unwrap().parse().unwrap();
            if max_age <= 0 {
                self.0.remove(&name);
            } else {
                self.0.insert(name, (c.value, now + max_age));
            }
        }
    }

    /// The value of cookie `name` if the browser still holds it at `now`.
    fn value(&self, now: i64, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| v.as_str())
    }

    /// The `Cookie` header the browser sends to a `/session` path at `now`.
    fn cookie_header(&self, now: i64) -> String {
        self.0
            .keys()
            .filter_map(|name| Some(format!("{name}={}", self.value(now, name)?)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A same-origin POST at `now`, echoing the CSRF cookie (if still held) as a page
    /// script does.
    fn post(&self, app: &TestApp, now: i64, path: &str) -> reqwest::RequestBuilder {
        app.client
            .post(app.url(path))
            .header(COOKIE, self.cookie_header(now))
            .header(ORIGIN, &app.base)
            .header("sec-fetch-site", "same-origin")
            .header(
                "x-csrf-token",
                self.value(now, "__Host-tessera_csrf").unwrap_or_default(),
            )
    }
}

/// The CSRF cookie's `Max-Age` was the refresh cookie's. With a refresh token that expires
/// before the access token (`refresh_token_ttl` below `access_token_ttl`, or a session's
/// idle or absolute expiry nearer than the access token's end), the browser dropped the
/// CSRF cookie while its access cookie still signed it in: the page looked signed in, yet
/// every CSRF-checked request (sign-out first) was refused with 403 `csrf_failed`. The CSRF
/// cookie now lives as long as the longer-lived of the cookies it guards.
#[tokio::test]
async fn the_csrf_cookie_lives_as_long_as_the_access_cookie_it_guards() {
    const HOUR: i64 = 3600;
    let app = spawn_app_with(|c| {
        c.access_token_ttl = HOUR;
        c.refresh_token_ttl = 10 * 60;
    })
    .await;
    app.create_user("ada", PW, &["user"]).await;
    let max_ages = |res: &reqwest::Response| {
        let c = set_cookies(res.headers());
        [
            "__Host-tessera_at",
            "__Secure-tessera_rt",
            "__Host-tessera_csrf",
        ]
        .map(|n| c[n].attr("max-age").unwrap().parse::<i64>().unwrap())
    };
    let mut jar = ClockedJar::default();
    let res = app
        .client
        .post(app.url("/session"))
        .form(&[("username", "ada"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(max_ages(&res), [HOUR, 600, HOUR]);
    jar.receive(0, res.headers());

    // A refresh 5 minutes in: the refresh cookie gets the idle timeout, the CSRF cookie the
    // new access cookie's lifetime.
    app.advance(300).await;
    let res = jar
        .post(&app, 300, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(max_ages(&res), [HOUR, 600, HOUR]);
    jar.receive(300, res.headers());

    // 20 minutes in: the refresh cookie is gone (idle), the access cookie still signs the
    // browser in, and it can sign out.
    let now = 20 * 60;
    app.advance(now - 300).await;
    assert_eq!(jar.value(now, "__Secure-tessera_rt"), None);
    let me = app
        .client
        .get(app.url("/users/me"))
        .header(COOKIE, jar.cookie_header(now))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let res = jar.post(&app, now, "/session/logout").send().await.unwrap();
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert!(app.state.auth.list_sessions(None).await.unwrap().is_empty());

    // Near the session's absolute expiry, every cookie ends with the session (the access
    // token does too): the CSRF cookie is not made to outlive it.
    let app = spawn_app_with(|c| {
        c.access_token_ttl = HOUR;
        c.refresh_token_ttl = 24 * HOUR;
        c.session_max_age = 2 * HOUR;
    })
    .await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    app.advance(HOUR + 30 * 60).await;
    let res = browser_post(&app, &b, "/session/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(max_ages(&res), [30 * 60, 30 * 60, 30 * 60]);
}

/// `POST /session/logout` and `/session/refresh` parsed their optional form body before
/// anything else, so a body that is not UTF-8 (`0xFF` labelled as a form) was refused with
/// 400 even when the CSRF token came in the `X-CSRF-Token` header and nothing in the body
/// was needed: the browser could not sign out. With the header, the body is now not read;
/// a token that must come from such a form is still refused, saying why.
#[tokio::test]
async fn with_the_csrf_header_a_body_that_is_not_utf8_does_not_stop_logout_or_refresh() {
    let app = spawn_app().await;
    app.create_user("ada", PW, &["user"]).await;
    let b = sign_in(&app, "ada").await;
    let not_utf8 = |req: reqwest::RequestBuilder, body: &[u8]| {
        req.header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_vec())
            .send()
    };

    let res = not_utf8(browser_post(&app, &b, "/session/refresh"), b"\xff\xfe")
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b = b.renewed(res.headers());

    // The token in a form that is not UTF-8: refused, and the session lives.
    let form_only = app
        .client
        .post(app.url("/session/logout"))
        .header(COOKIE, b.cookie_header())
        .header(ORIGIN, &app.base)
        .header("sec-fetch-site", "same-origin");
    let mut body = format!("csrf_token={}&x=", b.csrf).into_bytes();
    body.push(0xff);
    let res = not_utf8(form_only, &body).await.unwrap();
    assert_eq!(res.status(), 400);
    let err = json(res).await;
    assert_eq!(err["error"], "invalid_request");
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .contains("not UTF-8"),
        "{err}"
    );
    assert_eq!(app.state.auth.list_sessions(None).await.unwrap().len(), 1);

    let res = not_utf8(browser_post(&app, &b, "/session/logout"), b"\xff")
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(app.state.auth.list_sessions(None).await.unwrap().is_empty());
    assert_eq!(users_me(&app, &b).await, 401);
}
