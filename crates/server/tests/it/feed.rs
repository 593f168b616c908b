//! `GET /revocations`: the revocation log as a feed for resource servers (tessera-axum).

use tessera_auth::Actor;
use tessera_testkit::{TestApp, spawn_app};

use crate::{claims_of, json};

async fn confidential(app: &TestApp, id: &str) -> String {
    let (_, secret) = app
        .state
        .auth
        .create_client(id, &["feed".to_owned()], true, &Actor::System)
        .await
        .unwrap();
    secret.unwrap().to_string()
}

async fn feed(app: &TestApp, query: &str, id: &str, secret: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/revocations{query}")))
        .basic_auth(id, Some(secret))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_logout_appears_on_the_feed_and_the_cursor_moves_past_it() {
    let app = spawn_app().await;
    let secret = confidential(&app, "orders-api").await;
    let empty = feed(&app, "", "orders-api", &secret).await;
    assert_eq!(empty.status(), 200);
    assert_eq!(empty.headers()["cache-control"], "no-store");
    let empty = json(empty).await;
    assert_eq!(empty["events"], serde_json::json!([]));
    assert_eq!(empty["cursor"], 0);

    app.create_user("alice", "a long enough password", &["user"])
        .await;
    let tokens = app.login("alice", "a long enough password").await;
    let sid = claims_of(&tokens.access_token)["sid"].clone();
    let res = app.logout(&tokens.access_token).await;
    assert_eq!(res.status(), 200);

    let page = json(feed(&app, "?since=0", "orders-api", &secret).await).await;
    let events = page["events"].as_array().unwrap();
    let session = events
        .iter()
        .find(|e| e["kind"] == "session")
        .expect("the logout revoked the session");
    assert_eq!(session["subject"], sid);
    assert!(session["expires_at"].as_i64().unwrap() > session["created_at"].as_i64().unwrap());
    let cursor = page["cursor"].as_i64().unwrap();
    assert_eq!(cursor, events.last().unwrap()["id"].as_i64().unwrap());

    // Nothing new after the cursor; the cursor stays.
    let next = json(feed(&app, &format!("?since={cursor}"), "orders-api", &secret).await).await;
    assert_eq!(next["events"], serde_json::json!([]));
    assert_eq!(next["cursor"], cursor);
}

#[tokio::test]
async fn pages_follow_the_limit_in_id_order() {
    let app = spawn_app().await;
    let secret = confidential(&app, "svc").await;
    for i in 0..3 {
        let name = format!("user{i}");
        app.create_user(&name, "a long enough password", &["user"])
            .await;
        let t = app.login(&name, "a long enough password").await;
        let res = app.logout(&t.access_token).await;
        assert_eq!(res.status(), 200);
    }
    let first = json(feed(&app, "?limit=2", "svc", &secret).await).await;
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    let cursor = first["cursor"].as_i64().unwrap();
    let rest = json(feed(&app, &format!("?since={cursor}&limit=2"), "svc", &secret).await).await;
    let rest = rest["events"].as_array().unwrap();
    assert!(!rest.is_empty());
    assert!(rest.iter().all(|e| e["id"].as_i64().unwrap() > cursor));
}

#[tokio::test]
async fn only_confidential_clients_and_admins_may_read_the_feed() {
    let app = spawn_app().await;
    let secret = confidential(&app, "svc").await;

    let anonymous = app
        .client
        .get(app.url("/revocations"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"tessera\""
    );

    let wrong = feed(&app, "", "svc", "not the secret").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(json(wrong).await["error"], "invalid_client");

    // The built-in public client has no secret to prove anything with.
    let public = app
        .client
        .get(app.url("/revocations"))
        .basic_auth("tessera", Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 403);

    app.create_user("bob", "a long enough password", &["user"])
        .await;
    let user = app.login("bob", "a long enough password").await;
    let res = app.get_auth("/revocations", &user.access_token).await;
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "insufficient_scope");

    let admin = app.admin_login().await;
    let res = app.get_auth("/revocations", &admin.access_token).await;
    assert_eq!(res.status(), 200);
    // The feed takes no body: client credentials travel in HTTP Basic only.
    let res = app
        .client
        .get(app.url("/revocations"))
        .bearer_auth(&admin.access_token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("client_id=svc&client_secret={secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"], "invalid_request");

    let res = app.get_auth("/revocations", "not.a.token").await;
    assert_eq!(res.status(), 401);
    assert_eq!(json(res).await["error"], "invalid_token");

    // client_secret_post style (credentials in a form body) is for POST requests; a GET
    // with a body is refused, not guessed at.
    let form = app
        .client
        .get(app.url("/revocations"))
        .form(&[("client_id", "svc"), ("client_secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400);
    assert_eq!(json(form).await["error"], "invalid_request");
}

#[tokio::test]
async fn the_feed_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc = json(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let op = &doc["paths"]["/revocations"]["get"];
    assert!(op.is_object(), "GET /revocations is documented");
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["since", "limit"]);
}

#[tokio::test]
async fn bad_cursors_and_limits_are_invalid_requests() {
    let app = spawn_app().await;
    let secret = confidential(&app, "svc").await;
    for query in ["?since=-1", "?limit=0", "?limit=1001", "?since=abc"] {
        let res = feed(&app, query, "svc", &secret).await;
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(json(res).await["error"], "invalid_request", "{query}");
    }
}
