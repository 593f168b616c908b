//! OAuth clients (RFC 6749 §2): authentication with HTTP Basic or form fields (§2.3.1),
//! the client-credentials grant (§4.4), and tokens bound to their client.

use tessera_auth::Actor;
use tessera_testkit::{ADMIN_PASSWORD, TestApp, spawn_app};

use crate::{claims_of, json};

async fn confidential(app: &TestApp, id: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let (_, secret) = app
        .state
        .auth
        .create_client(id, &scopes, true, &Actor::System)
        .await
        .unwrap();
    secret.unwrap().to_string()
}

#[tokio::test]
async fn a_confidential_client_gets_a_service_token_without_a_refresh_token() {
    let app = spawn_app().await;
    let secret = confidential(&app, "orders-service", &["orders:read", "orders:write"]).await;
    let res = app
        .client
        .post(app.url("/token"))
        .basic_auth("orders-service", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for client_credentials (§4.4.3)"
    );
    assert_eq!(body["scope"], "orders:read orders:write");
    let c = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "orders-service");
    assert_eq!(c["client_id"], "orders-service");
    assert!(c.get("sid").is_none() && c.get("preferred_username").is_none());
    // Verifies like any access token, but it is nobody's `/users/me`: on every user
    // endpoint the RFC 6750 §3.1 answer for a token that lacks what is needed.
    let me = app.me(body["access_token"].as_str().unwrap()).await;
    assert_eq!(me.status(), 403);
    let sessions = app
        .client
        .get(app.url("/users/me/sessions"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    for res in [me, sessions] {
        assert_eq!(res.status(), 403);
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=\"insufficient_scope\""),
            "{:?}",
            res.headers()
        );
        assert_eq!(json(res).await["error"], "insufficient_scope");
    }
    // client_secret_post works too, with a narrower scope.
    let res = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "orders-service"),
            ("client_secret", &secret),
            ("scope", "orders:read"),
        ])
        .await;
    assert_eq!(json(res).await["scope"], "orders:read");
    let res = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "orders-service"),
            ("client_secret", &secret),
            ("scope", "admin"),
        ])
        .await;
    assert_eq!(json(res).await["error"], "invalid_scope");
}

#[tokio::test]
async fn wrong_secrets_and_unknown_clients_are_the_same_invalid_client() {
    let app = spawn_app().await;
    confidential(&app, "svc", &["a"]).await;
    let wrong = app
        .client
        .post(app.url("/token"))
        .basic_auth("svc", Some("nope"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.headers()["www-authenticate"],
        "Basic realm=\"tessera\""
    );
    let unknown = app
        .client
        .post(app.url("/token"))
        .basic_auth("ghost", Some("nope"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    assert_eq!(json(wrong).await, json(unknown).await);
    let missing = app
        .post_token(&[("grant_type", "client_credentials"), ("client_id", "svc")])
        .await;
    assert_eq!(json(missing).await["error"], "invalid_client");
    let both = app
        .client
        .post(app.url("/token"))
        .basic_auth("svc", Some("x"))
        .form(&[("grant_type", "client_credentials"), ("client_secret", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(both).await["error"],
        "invalid_request",
        "one authentication method only"
    );
}

#[tokio::test]
async fn public_clients_may_not_use_client_credentials() {
    let app = spawn_app().await;
    let res = app
        .post_token(&[("grant_type", "client_credentials")])
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"], "unauthorized_client");
}

#[tokio::test]
async fn refresh_tokens_are_bound_to_their_client() {
    let app = spawn_app().await;
    app.state
        .auth
        .create_client(
            "mobile-app",
            &["profile".into(), "orders".into()],
            false,
            &Actor::System,
        )
        .await
        .unwrap();
    let t = json(
        app.post_token(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("client_id", "mobile-app"),
        ])
        .await,
    )
    .await;
    assert_eq!(t["scope"], "profile orders");
    assert_eq!(
        claims_of(t["access_token"].as_str().unwrap())["client_id"],
        "mobile-app"
    );
    let rt = t["refresh_token"].as_str().unwrap();
    // Another client (here the built-in one) cannot use it, and that is not reuse...
    let other = app.refresh(rt).await;
    assert_eq!(json(other).await["error"], "invalid_grant");
    // ...so its own client still can.
    let own = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "mobile-app"),
        ])
        .await;
    assert_eq!(own.status(), 200);
}

#[tokio::test]
async fn a_confidential_clients_refresh_needs_its_secret() {
    let app = spawn_app().await;
    let secret = confidential(&app, "web-backend", &["profile"]).await;
    let login = app
        .client
        .post(app.url("/token"))
        .basic_auth("web-backend", Some(&secret))
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    let t = json(login).await;
    let rt = t["refresh_token"].as_str().unwrap();
    let anonymous = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "web-backend"),
        ])
        .await;
    assert_eq!(json(anonymous).await["error"], "invalid_client");
    let authed = app
        .client
        .post(app.url("/token"))
        .basic_auth("web-backend", Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(authed.status(), 200);
}

#[tokio::test]
async fn confidential_clients_may_introspect_and_public_ones_may_not() {
    let app = spawn_app().await;
    let secret = confidential(&app, "gateway", &[]).await;
    let user = app.admin_login().await;
    let res = app
        .client
        .post(app.url("/introspect"))
        .basic_auth("gateway", Some(&secret))
        .form(&[("token", &user.access_token)])
        .send()
        .await
        .unwrap();
    let body = json(res).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["username"], "admin");
    app.state
        .auth
        .create_client("spa", &[], false, &Actor::System)
        .await
        .unwrap();
    let res = app
        .client
        .post(app.url("/introspect"))
        .form(&[("token", user.access_token.as_str()), ("client_id", "spa")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn deleting_a_client_ends_its_access() {
    let app = spawn_app().await;
    let secret = confidential(&app, "batch", &["jobs"]).await;
    app.state
        .auth
        .delete_client("batch", &Actor::Cli)
        .await
        .unwrap();
    let res = app
        .client
        .post(app.url("/token"))
        .basic_auth("batch", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn client_ids_appear_in_the_audit_trail() {
    use tessera_auth::store::AuditStore as _;
    let app = spawn_app().await;
    let secret = confidential(&app, "reporting", &["reports"]).await;
    app.client
        .post(app.url("/token"))
        .basic_auth("reporting", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let rows = app.state.db().list_audit(0, None, None, 100).await.unwrap();
    assert!(rows.iter().any(|r| r.event.event == "client_credentials"
        && r.event.client_id.as_deref() == Some("reporting")));
    assert!(
        rows.iter().any(|r| r.event.event == "client_created"
            && r.event.client_id.as_deref() == Some("reporting"))
    );
}

#[tokio::test]
async fn basic_credentials_are_decoded_as_rfc_6749_section_2_3_1_says() {
    // base64(urlencode(id) ":" urlencode(secret)): split at the first `:`, each part
    // percent-decoded. The decoder used to parse each part as a form (`v=<part>`) and take
    // the last pair's value, so a raw `&` let `junk&v=svc` authenticate as `svc`.
    use base64::Engine as _;
    let app = spawn_app().await;
    let secret = confidential(&app, "svc", &["a"]).await;
    let basic = |text: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    };
    let send = |authorization: String| {
        app.client
            .post(app.url("/token"))
            .header("authorization", authorization)
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    // Every character percent-encoded is the same client and secret.
    let encoded: String = format!("svc:{secret}")
        .split(':')
        .map(|p| p.bytes().map(|b| format!("%{b:02X}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(send(basic(&encoded)).await.unwrap().status(), 200);
    // A raw `&` is part of the value: no such client, no such secret.
    for text in [
        format!("junk&v=svc:{secret}"),
        format!("svc:wrong&v={secret}"),
    ] {
        let res = send(basic(&text)).await.unwrap();
        assert_eq!(res.status(), 401, "{text}");
        assert_eq!(res.headers()["www-authenticate"], "Basic realm=\"tessera\"");
        assert_eq!(json(res).await["error"], "invalid_client", "{text}");
    }
    // What does not decode is refused as malformed, naming why.
    for authorization in [
        basic(&format!("svc%zz:{secret}")),
        basic("svc:%"),
        basic("svc:%00"),
        basic("no colon"),
        "Basic".to_owned(),
        "Basic\tc3ZjOng=".to_owned(),
    ] {
        let res = send(authorization.clone()).await.unwrap();
        assert_eq!(res.status(), 401, "{authorization}");
        assert_eq!(res.headers()["www-authenticate"], "Basic realm=\"tessera\"");
        let body = json(res).await;
        assert_eq!(body["error"], "invalid_client", "{authorization}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("malformed HTTP Basic credentials"),
            "{authorization}: {body}"
        );
    }
    // The revocation feed reads HTTP Basic the same way.
    let feed = |authorization: String| {
        app.client
            .get(app.url("/revocations"))
            .header("authorization", authorization)
            .send()
    };
    assert_eq!(feed(basic(&encoded)).await.unwrap().status(), 200);
    let res = feed(basic(&format!("junk&v=svc:{secret}"))).await.unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_client_with_no_scopes_gets_no_scope_member_not_an_empty_one() {
    // RFC 6749 §3.3: a scope is one or more scope-tokens, so "" is no scope at all; §5.1
    // lets the answer leave out a scope identical to the one requested (none). The token
    // and introspection answers said `"scope": ""`.
    let app = spawn_app().await;
    let secret = confidential(&app, "heartbeat", &[]).await;
    let res = app
        .client
        .post(app.url("/token"))
        .basic_auth("heartbeat", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    assert!(body.get("scope").is_none(), "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert!(claims_of(token).get("scope").is_none());
    let res = app
        .client
        .post(app.url("/introspect"))
        .basic_auth("heartbeat", Some(&secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let r = json(res).await;
    assert_eq!(r["active"], true, "{r}");
    assert!(r.get("scope").is_none(), "{r}");
    // A client with scopes still gets them named.
    let other = confidential(&app, "reports", &["reports:read"]).await;
    let res = app
        .client
        .post(app.url("/token"))
        .basic_auth("reports", Some(&other))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["scope"], "reports:read");
}
