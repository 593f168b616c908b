//! Malformed requests get clear 4xx errors, never a 5xx.

use tessera_testkit::spawn_app;

use crate::json;

#[tokio::test]
async fn malformed_requests_never_cause_server_errors() {
    let app = spawn_app().await;
    let admin = app.admin_login().await.access_token;
    let c = &app.client;
    let cases: Vec<reqwest::RequestBuilder> = vec![
        c.post(app.url("/token")).header("content-type", "application/x-www-form-urlencoded").body(vec![0xff, 0xfe, 0x00]),
        c.post(app.url("/token")).header("content-type", "application/x-www-form-urlencoded").body("a".repeat(100_000)),
        c.post(app.url("/token")).header("content-type", "text/plain").body("username=a"),
        c.post(app.url("/token")),
        c.post(app.url("/admin/users")).bearer_auth(&admin).header("content-type", "application/json").body("{not json"),
        c.post(app.url("/admin/users")).bearer_auth(&admin).json(&serde_json::json!({"username": 5})),
        c.post(app.url("/admin/users")).bearer_auth(&admin).json(&serde_json::json!({"username": "x", "password": "a long enough password", "roles": ["BAD ROLE"]})),
        c.put(app.url("/admin/users/nobody/roles")).bearer_auth(&admin).json(&serde_json::json!({"roles": []})),
        c.delete(app.url("/admin/sessions/not-a-uuid")).bearer_auth(&admin),
        c.get(app.url("/admin/users/..%2F..%2Fetc%2Fpasswd")).bearer_auth(&admin),
        c.get(app.url("/users/me")).header("authorization", format!("Bearer {}", "a".repeat(64 * 1024))),
        c.get(app.url("/users/me")).header("authorization", format!("Bearer {}", ".".repeat(100_000))),
        c.get(app.url("/users/me")).header("authorization", reqwest::header::HeaderValue::from_bytes(b"Bearer \xe9\xff").unwrap()),
        c.post(app.url("/logout?all=maybe")).bearer_auth(&admin),
        c.post(app.url("/introspect")).bearer_auth(&admin),
        c.get(app.url("/nope")),
        c.delete(app.url("/token")),
    ];
    for (i, req) in cases.into_iter().enumerate() {
        let res = req.send().await.unwrap();
        let status = res.status();
        assert!(status.is_client_error(), "case {i}: {status}");
        let body = res.text().await.unwrap();
        if !body.is_empty() {
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("case {i}: not JSON: {body}"));
            assert!(v["error"].is_string(), "case {i}: {body}");
        }
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(json(res).await["error"], "not_found");
    let res = app.client.get(app.url("/token")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(json(res).await["error"], "method_not_allowed");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_callers() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_in_json_everywhere() {
    // RFC 9110 §15.5.14: too large is 413, not "malformed" (400); and the JSON error shape
    // of docs/api.md, not axum's plain text (the cookie-mode endpoints answered that).
    let app = spawn_app().await;
    let admin = app.admin_login().await.access_token;
    let c = &app.client;
    let big = "a=".to_owned() + &"b".repeat(64 * 1024);
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "/token",
            c.post(app.url("/token"))
                .header("content-type", form)
                .body(big.clone()),
        ),
        (
            "/revoke",
            c.post(app.url("/revoke"))
                .header("content-type", form)
                .body(big.clone()),
        ),
        (
            "/session",
            c.post(app.url("/session"))
                .header("content-type", form)
                .body(big.clone()),
        ),
        (
            "/session/refresh",
            c.post(app.url("/session/refresh"))
                .header("content-type", form)
                .body(big.clone()),
        ),
        (
            "/session/logout",
            c.post(app.url("/session/logout"))
                .header("content-type", form)
                .body(big.clone()),
        ),
        (
            "/admin/users",
            c.post(app.url("/admin/users"))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body(format!("{{\"username\":\"{}\"}}", "x".repeat(64 * 1024))),
        ),
    ];
    for (path, req) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 413, "{path}");
        let body = res.text().await.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
        assert_eq!(v["error"], "invalid_request", "{path}: {body}");
    }
}
